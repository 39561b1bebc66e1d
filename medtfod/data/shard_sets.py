"""`convert --shard-by`: which TFRecord files a split's images are written to.

    --shard-by split    (the default) one set of shards per split:
                        tfrecords/<split>.record-00000-of-00004 ...
    --shard-by finding  two sets per split, images with findings and images without:
                        tfrecords/<split>.record-positive-00000-of-00001 ...
                        tfrecords/<split>.record-negative-00000-of-00003 ...

Either way `tfrecords/<split>.record-*` matches every shard of a split (split names hold no
'.'), so readers of a whole split need not know how it was sharded; `medtfod config
--positive-fraction` reads the two sets as two inputs and samples them with the OD API's
`sample_from_datasets_weights`. Each set has ceil(images / --shard-size) shards, at least one
(an empty set still has a shard file); image i of a set goes to its shard i mod n.
"""
from __future__ import annotations

from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

SHARD_BY = ("split", "finding")
POSITIVE, NEGATIVE = "positive", "negative"   # the parts of a split sharded by finding


class ShardSet(NamedTuple):
    """One set of TFRecord shards of a split.

    Attributes:
      split: the split the images are in.
      part: None (every image of the split), 'positive' (images with at least one box) or
        'negative' (images without findings).
      images: the set's image names, in the split's (sorted) order.
      count: its number of shards.
    """

    split: str
    part: Optional[str]
    images: List[str]
    count: int

    @property
    def prefix(self) -> str:
        """The shards' common name: '<split>.record' or '<split>.record-<part>'."""
        return f"{self.split}.record" + (f"-{self.part}" if self.part else "")

    @property
    def files(self) -> List[str]:
        """The shards' file names (no folder), the OD API's sharded naming."""
        return [f"{self.prefix}-{i:05d}-of-{self.count:05d}" for i in range(self.count)]

    @property
    def pattern(self) -> str:
        """The glob a pipeline config's input_path uses for these shards."""
        return f"{self.prefix}-?????-of-{self.count:05d}"

    def shards(self) -> List[List[str]]:
        """The set's images by shard: image i goes to shard i mod `count`."""
        return [self.images[j::self.count] for j in range(self.count)]


def shard_sets(split: str, images: Sequence[str], has_findings: Callable[[str], bool], shard_by: str,
               shard_size: int) -> List[ShardSet]:
    """The shard sets of `split` (see the module docstring).

    Args:
      images: the split's image names, sorted.
      has_findings: image name -> whether the table gives it at least one box (an image with
        a bad row is dropped whole later, so this is also true of what is written).
      shard_by: 'split' or 'finding'.
      shard_size: images per shard (--shard-size).
    """
    if shard_by == "split":
        groups = [(None, list(images))]
    else:
        groups = [(POSITIVE, [i for i in images if has_findings(i)]),
                  (NEGATIVE, [i for i in images if not has_findings(i)])]
    return [ShardSet(split, part, names, max(1, -(-len(names) // shard_size))) for part, names in groups]


def report_fields(sets: List[ShardSet]) -> Dict[str, object]:
    """The split's TFRecord entries of report.json: 'tfrecords', the glob of all its shards;
    with --shard-by finding also 'tfrecords_by_finding': {'positive': glob, 'negative': glob}."""
    if len(sets) == 1:
        return {"tfrecords": sets[0].pattern}
    return {"tfrecords": f"{sets[0].split}.record-*",
            "tfrecords_by_finding": {s.part: s.pattern for s in sets}}
