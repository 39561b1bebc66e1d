"""Tiled detection (`detect --tile`, `PredictOptions(tile=...)`): windows at native resolution,
boxes mapped back into the whole image and merged."""
import os

import numpy as np
import pytest
from PIL import Image

from medtfod.cli import main
from medtfod.core.errors import UserError
from medtfod.inference import tiling
from medtfod.inference.model import ExportedModel
from medtfod.inference.predictor import PredictOptions


def test_windows_cover_the_image_with_the_last_flush_with_its_edge():
    assert tiling.origins(1000, 400, 0.2) == [0, 320, 600]
    assert tiling.origins(800, 400, 0.0) == [0, 400]
    assert tiling.origins(300, 400, 0.5) == [0]
    windows = tiling.tile_windows(1000, 300, 400, 0.2)
    assert [(w.x, w.y) for w in windows] == [(0, 0), (320, 0), (600, 0)]
    assert {(w.width, w.height) for w in windows} == {(400, 300)}  # one shape: a smaller side is whole
    for size, overlap in ((0, 0.2), (64, 0.9), (64, -0.1), (64, "0.2")):
        with pytest.raises(UserError, match="tile"):
            tiling.check_tiling(size, overlap, "nms")
    with pytest.raises(UserError, match="choose one of nms, wbf, none"):
        PredictOptions(tile=64, tile_merge="max")
    with pytest.raises(UserError, match="go with tile=PX"):  # the CLI refuses --tile-overlap alone too
        PredictOptions(tile_overlap=0.5)


@pytest.fixture(scope="module")
def blob_export(tmp_path_factory):
    """A stand-in export: one box (score 0.9) around the bright pixels of what it is given."""
    from medtfod.odapi.runtime import import_tensorflow
    from support.inference import blob_finder
    tf = import_tensorflow(verbose=False)
    root = tmp_path_factory.mktemp("tiling")
    module = blob_finder(tf)
    tf.saved_model.save(module, str(root / "export" / "saved_model"), signatures=module.__call__.get_concrete_function())
    (root / "export" / "label_map.pbtxt").write_text('item { id: 1 name: "Nodule" }\n')
    return str(root / "export")


def _blobs(size, spots):
    pixels = np.zeros((size, size, 3), np.uint8)
    for y0, x0, side in spots:
        pixels[y0:y0 + side, x0:x0 + side] = 255
    return pixels


@pytest.mark.tf
def test_a_2x2_mosaic_tiled_equals_each_quadrant_offset(blob_export):
    quadrants = [_blobs(96, [(10 + 7 * i, 20 + 9 * i, 8 + 3 * i)]) for i in range(4)]
    mosaic = np.vstack([np.hstack(quadrants[:2]), np.hstack(quadrants[2:])])
    model = ExportedModel(blob_export)
    alone = model.predict(quadrants, min_score=0.5)
    tiled = model.predict(mosaic, min_score=0.5, options=PredictOptions(tile=96, tile_overlap=0.0, tile_merge="none"))
    expected = [[b[0] + x, b[1] + y, b[2] + x, b[3] + y]
                for p, (x, y) in zip(alone, [(0, 0), (96, 0), (0, 96), (96, 96)]) for b in p.boxes]
    assert len(tiled[0].detections) == len(expected) == 4
    np.testing.assert_allclose(sorted(tiled[0].boxes.tolist()), sorted(expected), atol=1.0)
    plain = model.predict(mosaic, min_score=0.5)  # untiled: one box around all four blobs
    assert len(plain[0].detections) == 1


@pytest.mark.tf
def test_a_lesion_seen_by_two_overlapping_windows_is_merged_once(blob_export):
    image = _blobs(200, [(40, 95, 10)])  # inside both windows (0-128 and 72-200) along x
    model = ExportedModel(blob_export)
    kept = {merge: model.predict(image, min_score=0.5, options=PredictOptions(tile=128, tile_overlap=0.44,
                                                                              tile_merge=merge))[0]
            for merge in ("none", "nms", "wbf")}
    assert len(kept["none"].detections) == 2  # of the 2 x 2 windows, both of the top row hold it
    for merge in ("nms", "wbf"):
        assert len(kept[merge].detections) == 1
        np.testing.assert_allclose(kept[merge].boxes[0], [95, 40, 105, 50], atol=1.0)
        assert kept[merge].scores[0] == pytest.approx(0.9)
    full = model.predict(image, min_score=0.5, options=PredictOptions(tile=128, tile_overlap=0.44, tile_merge="none",
                                                                     tile_full=True))[0]
    assert len(full.detections) == 3


@pytest.mark.tf
def test_one_window_is_the_model_itself(blob_export):
    """A window as large as the image: no merge runs, so tiling changes nothing."""
    image = _blobs(96, [(10, 20, 8)])
    model = ExportedModel(blob_export)
    plain = model.predict(image, min_score=0.0)[0]
    tiled = model.predict(image, min_score=0.0, options=PredictOptions(tile=4096, tile_merge="wbf"))[0]
    assert tiled.detections == plain.detections


@pytest.mark.tf
def test_cli_tiling_usage_errors(blob_export, tiny_dataset, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(_blobs(200, [(40, 95, 10)])).save(images / "a.png")
    out = tmp_path / "out"
    assert main(["detect", "--model", blob_export, "--images", str(images), "--out", str(out), "--tile", "128",
                 "--tile-overlap", "0.9", "-q"]) == 1
    assert "tile overlap 0.9 (--tile-overlap" in capsys.readouterr().err and not out.exists()
    assert main(["detect", "--model", blob_export, "--images", str(images), "--out", str(out), "--tile-full"]) == 1
    assert "go with --tile PX" in capsys.readouterr().err
    # an export whose pipeline.config says 128 px input refuses 100 px windows
    import shutil
    export = tmp_path / "export"
    shutil.copytree(blob_export, export)
    assert main(["config", "--model", "ssd_mobilenet_v2_fpnlite_320", "--data", tiny_dataset, "--out",
                 str(export / "pipeline.config"), "--image-size", "128"]) == 0
    assert main(["detect", "--model", str(export), "--images", str(images), "--out", str(out), "--tile", "100"]) == 1
    said = capsys.readouterr()
    assert "--tile 100 is smaller than the 128 px input" in said.err and "tiling:" not in said.out  # refused first
    assert main(["detect", "--model", str(export), "--images", str(images), "--out", str(out), "--tile", "128",
                 "--min-score", "0.5", "-q"]) == 0
    assert open(out / "detections.csv").read().count("\n") == 2  # the header and one merged box


@pytest.mark.slow
def test_tiled_ssd_on_a_mosaic_equals_it_on_each_image(trained):
    """The done-when of tiling, on the real tiny SSD: 4 of its 128 px images in a 2 x 2 mosaic,
    128 px windows, no overlap, no merging: the same boxes (within 1 px) at the same threshold."""
    names = sorted(os.listdir(trained["images"]))[:4]
    images = [np.asarray(Image.open(os.path.join(trained["images"], n)).convert("RGB")) for n in names]
    mosaic = np.vstack([np.hstack(images[:2]), np.hstack(images[2:])])
    model = ExportedModel(trained["exported"])
    scores = sorted((d.score for p in model.predict(images, min_score=0.0) for d in p.detections), reverse=True)
    threshold = scores[min(12, len(scores) - 1)]  # a dozen or so detections: the tiny model scores low
    options = PredictOptions(max_per_image=400)
    alone = model.predict(images, min_score=threshold, options=options)
    tiled = model.predict(mosaic, min_score=threshold, options=PredictOptions(
        max_per_image=400, tile=128, tile_overlap=0.0, tile_merge="none"))[0]
    expected = sorted((d.label, d.score, d.box.xmin + x, d.box.ymin + y, d.box.xmax + x, d.box.ymax + y)
                      for p, (x, y) in zip(alone, [(0, 0), (128, 0), (0, 128), (128, 128)]) for d in p.detections)
    found = sorted((d.label, d.score, d.box.xmin, d.box.ymin, d.box.xmax, d.box.ymax) for d in tiled.detections)
    assert len(found) == len(expected) > 0
    unmatched = list(found)
    for e in expected:  # the tiny model's scores tie a lot: match each box to an equal one, not by order
        match = next((f for f in unmatched if f[:2] == e[:2] and np.max(np.abs(np.subtract(f[2:], e[2:]))) <= 1.0),
                     None)
        assert match is not None, f"no tiled detection equals {e}"
        unmatched.remove(match)
