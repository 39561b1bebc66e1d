"""Detection speed: `medtfod detect` against the bare model and against the tutorial loop.

    .venv/bin/python benchmarks/detect_speed.py [--images 200] [--size 256]

Trains (once, cached in .medtfod-bench/) a tiny SSD for 100 steps and exports it, then on
the same images and SavedModel, in one run:

  bare model   the SavedModel called on images decoded beforehand (the limit), for each
               export: `image_tensor` (the default; one image per call) and
               `float_image_tensor` (batches of --batch images)
  tutorial     load one image, run it, draw it with the OD API's visualization_utils,
               save it, next image (what the TF OD API tutorials do; image_tensor export)
  medtfod      `medtfod detect`: threads decode ahead and draw behind the model, writes
               drawn copies, detections.csv/.json, coco_results.json and images.csv
               (given the loaded model like the others: loading it, ~3 s, is a fixed cost),
               on each export, and on the batched one with --no-draw (tables only)

and prints images/s and the ratios: each detect row against the bare model of the same
export, and against the tutorial (goal on CPU: detect >= 0.8x bare, >= 3x tutorial). Then
fusion alone, on the batched model's real outputs for the images and their mirror images (the
TTA views): medtfod's batch fusion and ensemble-boxes per image (what detect ran before), for
each --fuse method, in ms per image beside the bare model's.

ONNX Runtime rows (`onnx_methods`, on the float export's model.onnx, written once by `to_onnx`):
the bare model.onnx (batch 1 and --batch) and `medtfod detect --runtime onnx` (batch 1 and
--batch, drawn, and --batch with --no-draw), each against the bare ONNX model of the same batch.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
BENCH = os.path.join(ROOT, ".medtfod-bench")


def model_and_images(count: int, size: int) -> tuple:
    from medtfod.data import demo_data
    from medtfod.cli import main
    from medtfod.demo import DEMO_OVERRIDES
    root = os.path.join(BENCH, f"detect_{count}_{size}")
    exported = os.path.join(root, "exported")
    if not os.path.isfile(os.path.join(exported, "saved_model", "saved_model.pb")):
        print("training and exporting a tiny model (once) ...", flush=True)
        data = demo_data.generate(os.path.join(root, "source"), num_images=count, size=size, seed=1)
        overrides = [a for k, v in DEMO_OVERRIDES.items() for a in ("--set", f"{k}={v}")]
        steps = [["convert", "nih", "--bbox-csv", data["bbox_csv"], "--images", data["images"],
                  "--data-entry", data["data_entry"], "--label-map", data["label_map"],
                  "--out", os.path.join(root, "data"), "-q"],
                 ["config", "--model", "ssd_mobilenet_v2_fpnlite_320", "--data", os.path.join(root, "data"),
                  "--out", os.path.join(root, "pipeline.config"), "--steps", "100", "--batch-size", "4",
                  "--image-size", "128", *overrides],
                 ["train", "--config", os.path.join(root, "pipeline.config"), "--model-dir",
                  os.path.join(root, "model"), "-q"],
                 ["export", "--config", os.path.join(root, "pipeline.config"), "--model-dir",
                  os.path.join(root, "model"), "--out", exported, "-q"]]
        for args in steps:
            assert main(args) == 0, args
    batched = os.path.join(root, "exported_float")
    if not os.path.isfile(os.path.join(batched, "saved_model", "saved_model.pb")):
        assert main(["export", "--config", os.path.join(root, "pipeline.config"), "--model-dir",
                     os.path.join(root, "model"), "--out", batched, "--input-type", "float_image_tensor", "-q"]) == 0
    return exported, batched, os.path.join(root, "source", "images")


def bare(detect_fn, tf, arrays, batch: int = 1) -> None:
    import numpy as np
    for i in range(0, len(arrays), batch):
        pixels = np.stack(arrays[i:i + batch])
        detect_fn(tf.constant(pixels if batch == 1 else pixels.astype(np.float32)))


def tutorial(detect_fn, tf, images, names, out) -> None:
    import numpy as np
    from PIL import Image
    from object_detection.utils import visualization_utils as viz
    category_index = {1: {"id": 1, "name": "Mass"}, 2: {"id": 2, "name": "Nodule"}}
    for name in names:
        image_np = np.array(Image.open(os.path.join(images, name)).convert("RGB"))
        detections = detect_fn(tf.convert_to_tensor(image_np)[tf.newaxis, ...])
        n = int(detections.pop("num_detections")[0])
        detections = {k: v[0, :n].numpy() for k, v in detections.items()}
        viz.visualize_boxes_and_labels_on_image_array(
            image_np, detections["detection_boxes"], detections["detection_classes"].astype(np.int64),
            detections["detection_scores"], category_index, use_normalized_coordinates=True,
            max_boxes_to_draw=100, min_score_thresh=0.3, agnostic_mode=False)
        Image.fromarray(image_np).save(os.path.join(out, name))


def fusion_times(batch_fn, tf, arrays, batch: int, rounds: int) -> dict:
    """{method: (medtfod s, ensemble-boxes s)} to fuse every batch's two TTA views, best of `rounds`."""
    import warnings
    import numpy as np
    from ensemble_boxes import nms, non_maximum_weighted, weighted_boxes_fusion
    from medtfod.inference import ensemble
    views = []
    for i in range(0, len(arrays), batch):
        pixels = np.stack(arrays[i:i + batch]).astype(np.float32)
        plain = {k: v.numpy() for k, v in batch_fn(tf.constant(pixels)).items()}
        mirrored = {k: v.numpy() for k, v in batch_fn(tf.constant(np.ascontiguousarray(pixels[:, :, ::-1]))).items()}
        views.append([plain, ensemble.hflip_back(mirrored)])
    reference = {"wbf": lambda b, s, l: weighted_boxes_fusion(b, s, l, iou_thr=0.55, skip_box_thr=0.0, conf_type="avg"),
                 "nms": lambda b, s, l: nms(b, s, l, iou_thr=0.55),
                 "mean": lambda b, s, l: non_maximum_weighted(b, s, l, iou_thr=0.55, skip_box_thr=0.0)}

    def per_image(method):  # ensemble-boxes' call per image, as ensemble.fuse made it
        for pair in views:
            for j in range(len(pair[0]["num_detections"])):
                n = [int(r["num_detections"][j]) for r in pair]
                reference[method]([np.clip(r["detection_boxes"][j][:k][:, [1, 0, 3, 2]].astype(np.float64), 0, 1)
                                   for r, k in zip(pair, n)],
                                  [r["detection_scores"][j][:k].astype(np.float64) for r, k in zip(pair, n)],
                                  [r["detection_classes"][j][:k].astype(np.float64) for r, k in zip(pair, n)])

    best = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in ensemble.METHODS:
            ensemble.fuse(views[0], method, 0.55)  # compiled (or loaded from its cache) before timing
            if method == "nms":
                per_image(method)  # ensemble-boxes' nms compiles its loop on its first call
            times = [float("inf"), float("inf")]
            for _ in range(rounds):
                t = time.perf_counter()
                for pair in views:
                    ensemble.fuse(pair, method, 0.55)
                times[0] = min(times[0], time.perf_counter() - t)
                t = time.perf_counter()
                per_image(method)
                times[1] = min(times[1], time.perf_counter() - t)
            best[method] = tuple(times)
    return best


def view_calls(batch_fn, tf, arrays, batch: int, rounds: int) -> dict:
    """{way: seconds} to run the model for two views of every batch, best of `rounds`: the one view
    alone, two calls one after the other (detect before), one call of 2 x batch (what `--tta hflip`
    did on a float export for a while), and two calls side by side in threads (`--tta hflip` and
    ensembles now; the same model twice, as in the TTA and 2-model rows)."""
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor
    xs = [tf.constant(np.stack(arrays[i:i + batch]).astype(np.float32)) for i in range(0, len(arrays), batch)]
    ms = [tf.reverse(x, axis=[2]) for x in xs]
    pool = ThreadPoolExecutor(1)

    def out(fn, x):
        return {k: v.numpy() for k, v in fn(x).items()}

    ways = {"one view": lambda: [out(batch_fn, x) for x in xs],
            "two calls": lambda: [(out(batch_fn, x), out(batch_fn, m)) for x, m in zip(xs, ms)],
            "one call of 2B": lambda: [out(batch_fn, tf.concat([x, m], 0)) for x, m in zip(xs, ms)],
            "two calls in threads": lambda: [(pool.submit(out, batch_fn, m), out(batch_fn, x))[0].result()
                                          for x, m in zip(xs, ms)]}
    for run in ways.values():
        run()  # traces the 2B shape
    best = {name: float("inf") for name in ways}
    for _ in range(max(rounds, 3)):
        for name, run in ways.items():
            t = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t)
    pool.shutdown()
    return best


def onnx_methods(batched: str, images: str, arrays: list, b: int) -> tuple:
    """The ONNX Runtime rows and the bare row each detect row is compared with: model.onnx of the
    float export (converted once by `ExportedModel.to_onnx`, cached with the export)."""
    import numpy as np
    from medtfod.inference.detect import DetectOutputs, detect
    from medtfod.inference.model import ExportedModel
    from medtfod.inference.predictor import PredictOptions
    if not os.path.isfile(os.path.join(batched, "model.onnx")):
        ExportedModel(batched).to_onnx()
    onnx_fn = ExportedModel(batched, runtime="onnx").load()

    def bare_onnx(batch):
        for i in range(0, len(arrays), batch):
            onnx_fn(np.stack(arrays[i:i + batch]).astype(np.float32))

    def run(batch, **outputs):
        return lambda out: detect(batched, out, images=images,
                                  options=PredictOptions(min_score=0.3, batch_size=batch, runtime="onnx"),
                                  outputs=DetectOutputs(quiet=True, **outputs), detect_fns=[onnx_fn])
    bare_onnx(b)  # first calls allocate
    methods = {"bare onnx, batch 1": lambda out: bare_onnx(1), f"bare onnx, batch {b}": lambda out: bare_onnx(b),
               "detect onnx, batch 1": run(1), f"detect onnx, batch {b}": run(b),
               f"detect onnx, {b}, no-draw": run(b, draw=False)}
    limit = {"detect onnx, batch 1": "bare onnx, batch 1", f"detect onnx, batch {b}": f"bare onnx, batch {b}",
             f"detect onnx, {b}, no-draw": f"bare onnx, batch {b}"}
    return methods, limit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best time counts")
    parser.add_argument("--batch", type=int, default=8, help="images per call for the float_image_tensor export")
    args = parser.parse_args()
    exported, batched, images = model_and_images(args.images, args.size)
    import numpy as np
    from PIL import Image
    from medtfod.inference.detect import DetectOutputs, detect
    from medtfod.inference.inputs import list_images
    from medtfod.inference.predictor import PredictOptions
    from medtfod.odapi.runtime import import_tensorflow
    tf = import_tensorflow(verbose=False)
    names = list_images(images)
    detect_fn = tf.saved_model.load(os.path.join(exported, "saved_model"))
    batch_fn = tf.saved_model.load(os.path.join(batched, "saved_model"))
    arrays = [np.asarray(Image.open(os.path.join(images, n)).convert("RGB")) for n in names]
    bare(detect_fn, tf, arrays[:5])  # trace the functions before timing
    bare(batch_fn, tf, arrays[:args.batch], args.batch)
    b = args.batch
    methods = {
        "bare image_tensor": lambda out: bare(detect_fn, tf, arrays),
        f"bare float, batch {b}": lambda out: bare(batch_fn, tf, arrays, b),
        "tutorial loop": lambda out: tutorial(detect_fn, tf, images, names, out),
        "detect image_tensor": lambda out: detect(exported, out, images=images,
                                                  options=PredictOptions(min_score=0.3),
                                                  outputs=DetectOutputs(quiet=True),
                                                  detect_fns=[detect_fn]),
        f"detect float, batch {b}": lambda out: detect(batched, out, images=images,
                                                       options=PredictOptions(min_score=0.3, batch_size=b),
                                                       outputs=DetectOutputs(quiet=True),
                                                       detect_fns=[batch_fn]),
        f"detect float, {b}, no-draw": lambda out: detect(batched, out, images=images,
                                                          options=PredictOptions(min_score=0.3, batch_size=b),
                                                          outputs=DetectOutputs(quiet=True, draw=False),
                                                          detect_fns=[batch_fn]),
        f"detect float, {b}, jpg": lambda out: detect(batched, out, images=images,
                                                      options=PredictOptions(min_score=0.3, batch_size=b),
                                                      outputs=DetectOutputs(quiet=True, draw_format="jpg"),
                                                      detect_fns=[batch_fn]),
        f"detect float, {b}, jpg, hflip TTA": lambda out: detect(batched, out, images=images,
                                                                 options=PredictOptions(min_score=0.3, batch_size=b, tta=["hflip"]),
                                                                 outputs=DetectOutputs(quiet=True, draw_format="jpg"),
                                                                 detect_fns=[batch_fn]),
        f"detect float, {b}, jpg, 2 models": lambda out: detect([batched, batched], out, images=images,
                                                                options=PredictOptions(min_score=0.3, batch_size=b),
                                                                outputs=DetectOutputs(quiet=True, draw_format="jpg"),
                                                                detect_fns=[batch_fn, batch_fn]),
    }
    limit = {"detect image_tensor": "bare image_tensor", f"detect float, batch {b}": f"bare float, batch {b}",
             f"detect float, {b}, no-draw": f"bare float, batch {b}", f"detect float, {b}, jpg": f"bare float, batch {b}",
             f"detect float, {b}, jpg, hflip TTA": f"bare float, batch {b}",
             f"detect float, {b}, jpg, 2 models": f"bare float, batch {b}"}
    extra_methods, extra_limit = onnx_methods(batched, images, arrays, b)  # ONNX Runtime rows (issue 24)
    methods.update(extra_methods)
    limit.update(extra_limit)
    best = {name: float("inf") for name in methods}
    for _ in range(args.rounds):
        for name, run in methods.items():
            with tempfile.TemporaryDirectory(dir=BENCH) as out:
                t = time.perf_counter()
                run(out)
                best[name] = min(best[name], time.perf_counter() - t)
    rates = {name: len(names) / s for name, s in best.items()}
    tut = rates["tutorial loop"]
    print(f"\n{len(names)} images of {args.size}x{args.size}, {os.cpu_count()} cores, best of {args.rounds} rounds")
    print(f"{'method':<26} {'images/s':>9} {'vs its bare model':>18} {'vs tutorial':>12}")
    for name, rate in rates.items():
        vs_bare = f"{rate / rates[limit[name]]:.2f}x" if name in limit else ""
        print(f"{name:<26} {rate:>9.1f} {vs_bare:>18} {rate / tut:>11.2f}x")
    fused = fusion_times(batch_fn, tf, arrays, b, args.rounds)
    bare_ms = 1000 / rates[f"bare float, batch {b}"]
    print(f"\nfusing the 2 TTA views of the same {len(names)} images (model outputs, batches of {b}), ms per image; "
          f"the bare model (float, batch {b}): {bare_ms:.2f} ms per image")
    print(f"{'--fuse':<8} {'medtfod':>9} {'ensemble-boxes':>15} {'speed-up':>9} {'medtfod vs model':>17}")
    for method, (ours, theirs) in fused.items():
        ours_ms, theirs_ms = 1000 * ours / len(names), 1000 * theirs / len(names)
        print(f"{method:<8} {ours_ms:>9.3f} {theirs_ms:>15.3f} {theirs / ours:>8.0f}x {ours_ms / bare_ms:>16.3f}x")
    calls = view_calls(batch_fn, tf, arrays, b, args.rounds)
    print(f"\nmodel calls for two views of every batch of {b} (float export), best of {max(args.rounds, 3)} rounds")
    print(f"{'way':<20} {'ms per image':>13} {'vs one view':>12}")
    for name, seconds in calls.items():
        print(f"{name:<20} {1000 * seconds / len(names):>13.2f} {calls['one view'] / seconds:>11.2f}x")
    print("goal on CPU: detect >= 0.8x its bare model and >= 3x the tutorial loop (TTA and 2 models call the model "
          "twice per image: their bound is 0.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
