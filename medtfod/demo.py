"""`medtfod demo`: synthetic data -> convert -> config -> train -> eval -> export -> detect,
in a workspace laid out like the TF OD API tutorial:

    workspace/demo/
      annotations/source/      the generated NIH-format tables and label map
      annotations/dataset/     `medtfod convert` output (TFRecords, VOC, splits, report)
      images/all/              the generated PNGs;  images/val/  the held-out ones
      models/ssd_mobilenet_v2_fpnlite/      pipeline.config, checkpoints, TensorBoard logs
      pre-trained-models/      (empty: the demo trains from scratch)
      exported-models/ssd_mobilenet_v2_fpnlite/   SavedModel + label map
      detections/              drawn held-out images + detections.csv
      report.html              the review page (metrics, plots, history, gallery)

Training resumes from the workspace's checkpoints, so a second run skips finished steps.
"""
from __future__ import annotations

import os
import shutil
import time

from .training.selection import format_metrics

MODEL = "ssd_mobilenet_v2_fpnlite_320"
MODEL_DIR_NAME = "ssd_mobilenet_v2_fpnlite"

# Measured on 2 CPU cores (README): from scratch, these reach COCO mAP@0.5 ~0.99 on the
# held-out synthetic images after ~3 minutes of training. The zoo's batch-norm decay (0.997)
# is meant for 50k-step runs: after 600 steps its moving averages still carry ~17% of their
# initial values and the model detects nothing at inference (mAP 0.0 measured); 0.99 fixes it.
DEMO_TRAINING = dict(batch_size=8, image_size=192, learning_rate=0.04, warmup_fraction=0.25)
DEMO_SELECT_BY = "ap50"
DEMO_MIN_SCORE = 0.3  # after 600 steps nodules score 0.3-0.8, masses 0.9+ (measured)
DEMO_OVERRIDES = {
    "model.ssd.feature_extractor.conv_hyperparams.batch_norm.decay": "0.99",
    "model.ssd.box_predictor.weight_shared_convolutional_box_predictor.conv_hyperparams.batch_norm.decay": "0.99",
}


def _stage(name: str):
    print(f"\n== {name} ==", flush=True)
    return time.time()


def run_demo(workspace: str, num_images: int = 300, steps: int = 600, image_px: int = 256,
             quiet: bool = False, seed: int = 0, verbose: bool = False) -> dict:
    """Run every stage; returns {'metrics': ..., 'detections': dir, 'timings': {...}}."""
    from .training import config as config_mod
    from .data import demo_data
    from .data.convert import ConvertOptions, summary
    from .inference.detect import DetectOutputs, detect
    from .inference.predictor import PredictOptions
    from .odapi.evaluate import evaluate
    from .odapi.export import export
    from .evaluation.medical import medical_metrics
    from .training.trainer import TrainOptions, train
    from .training.selection import read_best, read_history

    ws = os.path.abspath(workspace)
    for sub in ("annotations", "images", "models", "pre-trained-models", "exported-models"):
        os.makedirs(os.path.join(ws, sub), exist_ok=True)
    timings = {}

    t = _stage("1/7 synthetic data")
    source = os.path.join(ws, "annotations", "source")
    generated = demo_data.generate(source, num_images=num_images, size=image_px, seed=seed)
    images_all = os.path.join(ws, "images", "all")
    if os.path.isdir(images_all):
        shutil.rmtree(images_all)
    os.replace(generated["images"], images_all)
    print(f"{num_images} images, {generated['boxes']} boxes -> {images_all}")
    timings["data"] = time.time() - t

    t = _stage("2/7 convert")
    dataset = os.path.join(ws, "annotations", "dataset")
    from .data.sources import convert
    report = convert("nih", images_all, dataset, label_map=generated["label_map"],
                     opts=ConvertOptions(seed=seed), quiet=quiet,
                     bbox_csv=generated["bbox_csv"], data_entry=generated["data_entry"])
    print(summary(report, dataset))
    val_images = os.path.join(ws, "images", "val")
    if os.path.isdir(val_images):
        shutil.rmtree(val_images)
    os.makedirs(val_images)
    with open(os.path.join(dataset, "splits", "val.txt"), encoding="utf-8") as f:
        for name in f.read().split():
            shutil.copyfile(os.path.join(images_all, name), os.path.join(val_images, name))
    timings["convert"] = time.time() - t

    t = _stage("3/7 config + train")
    model_dir = os.path.join(ws, "models", MODEL_DIR_NAME)
    pipeline = os.path.join(model_dir, "pipeline.config")
    cfg = config_mod.render(MODEL, dataset, options=config_mod.RenderOptions(
        batch_size=DEMO_TRAINING["batch_size"], steps=steps, image_size=DEMO_TRAINING["image_size"],
        learning_rate=DEMO_TRAINING["learning_rate"],
        warmup_steps=max(1, int(steps * DEMO_TRAINING["warmup_fraction"])),
        augment=["random_horizontal_flip"], overrides=DEMO_OVERRIDES))
    config_mod.write_config(cfg, pipeline)
    print(f"config: {pipeline}")
    # Evaluated on the held-out split every third of the run, keeping the best by AP@0.5 (best/).
    eval_every = max(100, round(steps / 3 / 100) * 100)
    print(f"training {steps} steps, evaluating every {eval_every} on the held-out split; best kept by {DEMO_SELECT_BY}")
    results = train(pipeline, model_dir, options=TrainOptions(checkpoint_every_n=eval_every, verbose=verbose,
                                                              quiet=quiet, eval_every=eval_every,
                                                              select_by=DEMO_SELECT_BY))
    timings["train"] = time.time() - t

    t = _stage("4/7 evaluate (held-out split)")
    # the run's last evaluation is the final step's; a rerun with nothing left to train evaluates again
    result = results[-1] if results else evaluate(pipeline, model_dir, verbose=verbose, score=medical_metrics)
    best = read_best(model_dir)
    if best:
        print(f"best checkpoint: step {best['step']}, {best['metric']} {best['value']:.4f} "
              f"(of {len(read_history(model_dir))} evaluations; {os.path.join(model_dir, 'best')})")
    timings["eval"] = time.time() - t

    t = _stage("5/7 export")
    exported = os.path.join(ws, "exported-models", MODEL_DIR_NAME)
    export(pipeline, model_dir, exported, verbose=verbose)
    timings["export"] = time.time() - t

    t = _stage("6/7 detect")
    detections = os.path.join(ws, "detections")
    found = detect(exported, detections, images=val_images,
                   options=PredictOptions(min_score=DEMO_MIN_SCORE),
                   outputs=DetectOutputs(quiet=quiet))
    timings["detect"] = time.time() - t

    t = _stage("7/7 report")
    from .evaluation.report import ReportOptions, build_report
    report_path = os.path.join(ws, "report.html")
    built = build_report(exported, dataset, "val", report_path,
                         ReportOptions(model_dir=model_dir, quiet=quiet, min_score=DEMO_MIN_SCORE))
    print(f"report built in {built['seconds']:.1f} s (detect not included; the detect stage took "
          f"{timings['detect']:.1f} s): {report_path}")
    timings["report"] = time.time() - t

    print("\n== demo finished ==")
    print(format_metrics(result))
    print("stage times: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    print(f"{found['detections']} detections at score >= {DEMO_MIN_SCORE} on {found['images']} held-out images")
    print(f"drawn images:    {detections}")
    print(f"detections.csv:  {os.path.join(detections, 'detections.csv')}")
    print(f"metrics.json:    {os.path.join(model_dir, 'metrics.json')}")
    print(f"TensorBoard:     medtfod tensorboard --model-dir {model_dir}")
    print(f"TensorFlow log:  {os.path.join(ws, 'medtfod.log')}")
    print(f"report:          {report_path}")
    return {"metrics": result["metrics"], "detections": detections, "timings": timings}
