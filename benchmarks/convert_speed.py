"""Conversion speed: `medtfod convert` against reading the bytes and against the tutorial way.

    .venv/bin/python benchmarks/convert_speed.py [--images 2000] [--size 1024] [--workers N]

Generates (once, cached in .medtfod-bench/) N synthetic chest-X-ray-like PNGs of size x size
with an NIH-format box table, then, in one run on the same files:

  read bytes   open + read every file (the I/O floor), measured with the page cache warm
               (files in memory) and cold (dropped before each method: read from disk, as
               on a first pass over a data set too big for memory)
  tutorial     what the popular generate_tfrecord.py tutorials do: pandas group-by on the
               table, PIL open per image for its size, tf.train.Example, one TFRecordWriter,
               one process
  medtfod      `convert_table` with all cores: header-only size, PNG CRC/IEND verification,
               TFRecord + VOC + COCO + report, written aside and moved into place
  Beam direct  the same conversion with `--runner direct` (Beam's in-process FnApiRunner,
               direct_num_workers = --workers); only when apache_beam imports (the beam.txt
               environment: bootstrap.py install --beam); its ~1 s import is timed outside

and prints images/s (best of --rounds interleaved rounds, each output deleted before the next)
and the ratios (goal: medtfod >= 0.8x read bytes, >= 1.5x tutorial).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _make(job):
    folder, index, size, seed = job
    import numpy as np
    from PIL import Image
    from medtfod.data import demo_data
    rng = np.random.default_rng(seed + index)
    small, lesions = demo_data.render_image(256, rng, int(rng.integers(0, 3)))  # rendered small ...
    image = Image.fromarray(small, mode="L").resize((size, size), Image.BICUBIC)  # ... then enlarged
    grain = rng.integers(-6, 7, (size, size), dtype=np.int16)                     # with full-size grain
    pixels = np.clip(np.asarray(image, np.int16) + grain, 0, 255).astype(np.uint8)
    name = f"{index // 3 + 1:08d}_{index % 3:03d}.png"
    Image.fromarray(pixels, mode="L").save(os.path.join(folder, "images", name))
    scale = size / 256
    return [f"{name},{l.label},{l.box.xmin * scale!r},{l.box.ymin * scale!r},{l.box.width * scale!r},"
            f"{l.box.height * scale!r}\n" for l in lesions]


def dataset(count: int, size: int, workers: int) -> str:
    folder = os.path.join(ROOT, ".medtfod-bench", f"nih_{count}_{size}")
    table = os.path.join(folder, "BBox_List_2017.csv")
    if os.path.isfile(table):
        return folder
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    print(f"generating {count} images of {size}x{size} in {folder} (once) ...", flush=True)
    with ProcessPoolExecutor(workers) as pool:
        rows = [r for rs in pool.map(_make, [(folder, i, size, 7) for i in range(count)], chunksize=16) for r in rs]
    with open(table + ".tmp", "w") as f:
        f.write("Image Index,Finding Label,Bbox [x,y,w,h],,,\n" + "".join(rows))
    os.replace(table + ".tmp", table)
    return folder


def table_images(folder: str) -> list:
    """The images the box table names (images without boxes are not in it)."""
    with open(os.path.join(folder, "BBox_List_2017.csv")) as f:
        return sorted({line.split(",")[0] for line in f.read().splitlines()[1:] if line})


def drop_page_cache() -> bool:
    """Empty Linux's page cache (needs root), so files are read from disk as on a first run."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def read_bytes(folder: str) -> int:
    images = os.path.join(folder, "images")
    total = 0
    for name in table_images(folder):
        with open(os.path.join(images, name), "rb") as f:
            total += len(f.read())
    return total


def tutorial(folder: str, out: str) -> None:
    """The generate_tfrecord.py recipe of the TF OD API tutorials, kept as they write it."""
    import pandas as pd
    import tensorflow as tf
    from PIL import Image

    table = pd.read_csv(os.path.join(folder, "BBox_List_2017.csv"), usecols=range(6))
    table.columns = ["filename", "class", "x", "y", "w", "h"]
    classes = {"Mass": 1, "Nodule": 2}
    writer = tf.io.TFRecordWriter(out)
    images = os.path.join(folder, "images")
    for filename, group in table.groupby("filename"):
        with tf.io.gfile.GFile(os.path.join(images, filename), "rb") as fid:
            encoded = fid.read()
        width, height = Image.open(io.BytesIO(encoded)).size
        feature = {
            "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[height])),
            "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[width])),
            "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[filename.encode()])),
            "image/source_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[filename.encode()])),
            "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
            "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"png"])),
            "image/object/bbox/xmin": tf.train.Feature(float_list=tf.train.FloatList(value=list(group.x / width))),
            "image/object/bbox/xmax": tf.train.Feature(float_list=tf.train.FloatList(value=list((group.x + group.w) / width))),
            "image/object/bbox/ymin": tf.train.Feature(float_list=tf.train.FloatList(value=list(group.y / height))),
            "image/object/bbox/ymax": tf.train.Feature(float_list=tf.train.FloatList(value=list((group.y + group.h) / height))),
            "image/object/class/text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[c.encode() for c in group["class"]])),
            "image/object/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[classes[c] for c in group["class"]])),
        }
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    writer.close()


def medtfod_convert(folder: str, out: str, workers: int) -> dict:
    from medtfod.data.convert import ConvertOptions
    from medtfod.core.labelmap import LabelMap
    from medtfod.data.sources import SOURCES
    from medtfod.data.convert import convert_table
    from medtfod.core.problems import Problems
    problems = Problems()
    images = os.path.join(folder, "images")
    table = SOURCES["nih"].read(problems, images, bbox_csv=os.path.join(folder, "BBox_List_2017.csv"))
    return convert_table(table, images, out, LabelMap.from_names(["Mass", "Nodule"]),
                         ConvertOptions(workers=workers), problems, quiet=True)


def beam_convert(folder: str, out: str, workers: int) -> dict:
    from medtfod.data.beam.convert import BeamRun, convert_table_beam
    from medtfod.data.convert import ConvertOptions
    from medtfod.core.labelmap import LabelMap
    from medtfod.core.problems import Problems
    from medtfod.data.sources import SOURCES
    problems = Problems()
    images = os.path.join(folder, "images")
    table = SOURCES["nih"].read(problems, images, bbox_csv=os.path.join(folder, "BBox_List_2017.csv"))
    options = {"direct_num_workers": str(workers), "direct_running_mode": "multi_processing"} if workers > 1 else {}
    return convert_table_beam(table, images, out, LabelMap.from_names(["Mass", "Nodule"]),
                              ConvertOptions(workers=workers), problems, BeamRun("direct", options))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                        help="where the outputs go (default: /dev/shm, so disk write-back does not "
                             "dominate the comparison)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best time counts")
    parser.add_argument("--cache", choices=("warm", "cold", "both"), default="both",
                        help="files in the page cache, or read from disk (cold needs root; default both)")
    args = parser.parse_args()
    folder = dataset(args.images, args.size, args.workers)
    from medtfod.odapi.runtime import import_tensorflow
    import_tensorflow(verbose=False)  # imported before timing, for the tutorial's sake
    n = len(table_images(folder))
    methods = {
        "read bytes": lambda out: read_bytes(folder),
        "tutorial (1 process)": lambda out: tutorial(folder, os.path.join(out, "tutorial.record")),
        f"medtfod convert ({args.workers} workers)": lambda out: medtfod_convert(folder, os.path.join(out, "m"), args.workers),
    }
    try:
        import apache_beam  # noqa: F401 (imported before timing, like TensorFlow)
        methods[f"Beam direct ({args.workers} workers)"] = lambda out: beam_convert(
            folder, os.path.join(out, "b"), args.workers)
    except ImportError:
        print("apache_beam is not installed here: no Beam row (run in the beam.txt environment)")
    megabytes = read_bytes(folder) / 1e6
    caches = ["warm", "cold"] if args.cache == "both" else [args.cache]
    if "cold" in caches and not drop_page_cache():
        print("cannot drop the page cache here (needs root on Linux); measuring warm only")
        caches = ["warm"]
    print(f"\n{n} PNGs of {args.size}x{args.size}, {megabytes:.0f} MB, {os.cpu_count()} cores, "
          f"best of {args.rounds} interleaved rounds")
    for cache in caches:
        best = {name: float("inf") for name in methods}
        for _ in range(args.rounds):  # interleaved rounds, best of each: less noise from other load
            for name, run in methods.items():
                with tempfile.TemporaryDirectory(dir=args.out_dir or os.path.join(ROOT, ".medtfod-bench")) as tmp:
                    if cache == "cold":
                        drop_page_cache()
                    else:
                        read_bytes(folder)
                    t = time.perf_counter()
                    result = run(tmp)
                    best[name] = min(best[name], time.perf_counter() - t)
                if isinstance(result, dict):
                    assert result["images"] == n, result["problems"]
        rates = {name: n / seconds for name, seconds in best.items()}
        base_read, base_tut = rates["read bytes"], rates["tutorial (1 process)"]
        print(f"\npage cache {cache}: {'images/s':>17} {'vs read':>9} {'vs tutorial':>12}")
        for name, rate in rates.items():
            print(f"{name:<30} {rate:>10.1f} {rate / base_read:>8.2f}x {rate / base_tut:>11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
