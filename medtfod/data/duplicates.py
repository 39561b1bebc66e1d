"""Identical and near-identical images: found from the decoded pixels, grouped, and the groups'
patients merged into one unit of the split.

Two hashes per image, both of the decoded pixels (so a PNG and a JPEG of one picture, or two
files of different bytes, compare by what they show):

  exact  sha256 of the Pillow mode, the size and the raw pixel bytes: equal only when every
         pixel is equal.
  phash  a 64-bit DCT perceptual hash (the `imagehash.phash` algorithm): grey levels, resized to
         32x32 (Lanczos), 2-D DCT-II, the top-left 8x8 low frequencies, each bit set when its
         coefficient is above their median. Re-encoding, a little noise, a brightness change or a
         rescale move a few bits; different pictures differ in more (half of the 64 for unrelated
         photographs; ultrasound frames, which share their layout, from 6 up on DDTI).

Images whose pHashes differ in at most `max_distance` bits (Hamming distance; DEFAULT_DISTANCE)
are near-identical. Groups are the connected components of "identical or near-identical" (so a
chain of near copies is one group). `patient_units` then joins every patient of a group into one
unit, which `plan` assigns to a split as a whole: copies never straddle splits.

The pHash is computed here with numpy and Pillow rather than by the `imagehash` package: it is
the same ten lines of arithmetic, and `imagehash` would add itself and PyWavelets to every install.
imagehash 4.3.2 is pinned in the test lock as the reference: tests/test_duplicates.py checks that
both give the same 64 bits.
"""
from __future__ import annotations

import hashlib
import io
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple

import numpy as np

from ..core.deep_images import to_8bit

# Hamming distance (of 64 bits) at or below which two pHashes count as the same picture. On the
# 480 real DDTI images: 15 pairs of copies at 0, one near copy at 2 (294_2/294_3: one scan, a caption
# added), and the closest different pictures at 6 (4 pairs, checked by eye), then 8 (46 pairs).
# Distances are even: half of the 64 coefficients lie above their median in every hash.
DEFAULT_DISTANCE = 4

# Images below which hashing stays in this process: a pool's start-up costs more than it saves
# (DDTI's 480 JPEGs hash in ~2 s on one core, ~4.6 ms each: decode, sha256, resize).
POOL_MIN = 2000

_SIZE = 32   # side the image is resized to before the DCT
_LOW = 8     # side of the low-frequency block kept: 8x8 = 64 bits


class ImageHash(NamedTuple):
    """The two hashes of one decoded image: `exact` (hex sha256 of mode, size and pixels) and
    `phash` (64-bit DCT perceptual hash, as an int)."""

    exact: str
    phash: int


def _dct_matrix(n: int) -> np.ndarray:
    """Unnormalised DCT-II as a matrix: row k is cos(pi (2i + 1) k / 2n) (scaling does not change
    which coefficients lie above the median)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return np.cos(np.pi * (2 * i + 1) * k / (2 * n))


_DCT = _dct_matrix(_SIZE)


def hash_pixels(image) -> ImageHash:
    """`ImageHash` of a Pillow image (already decoded); a 16-bit grey one is hashed on its high
    byte (what TensorFlow's decode_png gives; Pillow's convert('L') would clip it to white)."""
    from PIL import Image

    exact = hashlib.sha256(f"{image.mode} {image.size[0]}x{image.size[1]}\n".encode("ascii"))
    exact.update(image.tobytes())
    image = to_8bit(image)  # 16-bit grey: its high byte, as TensorFlow decodes
    grey = image.convert("L").resize((_SIZE, _SIZE), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    low = (_DCT @ pixels @ _DCT.T)[:_LOW, :_LOW]
    bits = (low > np.median(low)).ravel()
    return ImageHash(exact.hexdigest(), int("".join("1" if b else "0" for b in bits), 2))


def hash_bytes(data: bytes) -> ImageHash:
    """`ImageHash` of encoded PNG or JPEG bytes. Raises OSError (Pillow's) when they do not decode."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return hash_pixels(image)


def _hash_one(job) -> Tuple[str, Optional[ImageHash]]:
    """Worker: (name, path, read) -> (name, its hash or None when it cannot be read or decoded;
    the per-image step of convert reports such an image)."""
    name, path, read = job
    try:
        data, _ = read(path)
        return name, hash_bytes(data)
    except Exception:  # noqa: BLE001 - any unreadable image is convert's per-image step to report
        return name, None


def hash_files(paths: Mapping[str, str], read: Callable, workers: int = 1) -> Dict[str, ImageHash]:
    """{image name: ImageHash} for `paths` {name: path}, each read with `read(path) -> (bytes, info)`
    (`images.read_and_probe`, which turns DICOM into PNG). Unreadable images are left out.
    With `workers` > 1 and enough images, a process pool decodes them."""
    jobs = [(name, path, read) for name, path in sorted(paths.items())]
    if workers > 1 and len(jobs) >= POOL_MIN:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_hash_one, jobs, chunksize=32))
    else:
        results = [_hash_one(job) for job in jobs]
    return {name: h for name, h in results if h is not None}


def distance(a: int, b: int) -> int:
    """Hamming distance of two 64-bit pHashes."""
    return bin(a ^ b).count("1")


class _Sets:
    """Union-find over hashable keys (path halving; the smaller key becomes the root)."""

    def __init__(self):
        self.parent: Dict = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


class DuplicateGroup(NamedTuple):
    """Images that are identical or near-identical with each other.

    Attributes:
      images: the image names, sorted.
      exact: every image has the same pixels.
      distance: the largest pHash distance of a pair joined directly (0 when exact).
    """

    images: List[str]
    exact: bool
    distance: int


def _near_pairs(names: List[str], hashes: Mapping[str, ImageHash], max_distance: int):
    """(i, j, distance) of every pair i < j of `names` within `max_distance`, by a vectorised
    XOR-popcount of each hash against the ones after it (n^2/2 comparisons in numpy)."""
    values = np.array([hashes[n].phash for n in names], dtype=np.uint64)
    for i in range(len(values) - 1):
        dist = np.bitwise_count(values[i + 1:] ^ values[i])
        for j in np.nonzero(dist <= max_distance)[0]:
            yield i, i + 1 + int(j), int(dist[j])


def find_groups(hashes: Mapping[str, ImageHash], max_distance: int = DEFAULT_DISTANCE) -> List[DuplicateGroup]:
    """Groups (of two or more) of images identical in pixels or within `max_distance` pHash bits
    (a negative `max_distance`: identical pixels only), sorted by their first image."""
    names = sorted(hashes)
    sets = _Sets()
    by_exact: Dict[str, str] = {}
    for name in names:
        first = by_exact.setdefault(hashes[name].exact, name)
        sets.union(first, name)
    widest: Dict[Tuple[str, str], int] = {}
    if max_distance >= 0:
        for i, j, d in _near_pairs(names, hashes, max_distance):
            sets.union(names[i], names[j])
            widest[(names[i], names[j])] = d
    members: Dict[str, List[str]] = {}
    for name in names:
        members.setdefault(sets.find(name), []).append(name)
    far: Dict[str, int] = {}
    for (a, _), d in widest.items():
        root = sets.find(a)
        far[root] = max(far.get(root, 0), d)
    groups = []
    for root, images in members.items():
        if len(images) > 1:
            exact = len({hashes[n].exact for n in images}) == 1
            groups.append(DuplicateGroup(images, exact, 0 if exact else far.get(root, 0)))
    return sorted(groups, key=lambda g: g.images[0])


def patient_units(patients: Mapping[str, str], groups: Iterable[DuplicateGroup]) -> Dict[str, str]:
    """{patient: its split unit}: a patient's own id, or for the patients of one duplicate group
    (and of groups sharing a patient with it), the smallest of their ids. `patients` maps image
    names to patient ids; images not in it are ignored."""
    sets = _Sets()
    for p in patients.values():
        sets.find(p)
    for group in groups:
        ids = [patients[i] for i in group.images if i in patients]
        for p in ids[1:]:
            sets.union(ids[0], p)
    return {p: sets.find(p) for p in set(patients.values())}


def groups_report(groups: Iterable[DuplicateGroup], patients: Mapping[str, str], split_of: Mapping[str, str],
                  max_distance: int, allowed: bool) -> dict:
    """report.json's 'duplicates': the distance used, whether copies may straddle splits
    (--allow-duplicates-across-splits), and each group with its patients and split(s).

    Args:
      patients: image name -> patient id; split_of: image name -> split (images in no split,
        e.g. listed but not found, are left out of 'splits').
    """
    out = []
    for g in groups:
        out.append({"images": list(g.images), "patients": sorted({patients[i] for i in g.images if i in patients}),
                    "splits": sorted({split_of[i] for i in g.images if i in split_of}),
                    "exact": g.exact, "distance": g.distance})
    return {"max_distance": max_distance, "allowed_across_splits": allowed, "groups": out}


def groups_summary(report: dict, most: int = 10) -> List[str]:
    """Convert's summary lines for `groups_report`: a count, then one line per group (the first `most`)."""
    groups = report["groups"]
    if report["allowed_across_splits"]:
        return ["  duplicates: not searched (--allow-duplicates-across-splits): copies may be in two splits"]
    if not groups:
        return [f"  duplicates: no identical or near-identical images (pHash distance <= {report['max_distance']})"]
    joined = sum(1 for g in groups if len(g["patients"]) > 1)
    lines = [f"  duplicates: {len(groups)} groups of identical or near-identical images (pHash distance <= "
             f"{report['max_distance']}), each kept in one split; {joined} joined two or more patients"]
    for g in groups[:most]:
        kind = "identical" if g["exact"] else f"near, distance {g['distance']}"
        lines.append(f"    {', '.join(g['images'])} (patients {', '.join(g['patients'])}; {kind}) -> "
                     f"{', '.join(g['splits']) or '-'}")
    if len(groups) > most:
        lines.append(f"    ... {len(groups) - most} more groups (all in report.json)")
    return lines
