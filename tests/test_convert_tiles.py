"""`convert --tile`: the training split cut into tiles at native resolution, read back by the OD
API's own decoder and input pipeline; val stays whole; config trains on the tiles."""
import glob
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from medtfod.cli import main
from medtfod.core.annotations import ImageRecord, Object
from medtfod.core.boxes import Box
from medtfod.core.errors import UserError
from medtfod.data.tiles import TileOptions, cut

SIZE, TILE = 200, 80


def squares(root, count=10, seed=0):
    """`count` grey 200x200 PNGs with 1-2 bright 10-24 px squares each (the boxes, COCO xywh)."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    os.makedirs(root / "images")
    for i in range(count):
        pixels = rng.integers(0, 40, (SIZE, SIZE), dtype=np.uint8)
        for _ in range(1 + i % 2):
            side = int(rng.integers(10, 25))
            x, y = (int(v) for v in rng.integers(0, SIZE - side, 2))
            pixels[y:y + side, x:x + side] = 250
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1,
                                "bbox": [x, y, side, side], "area": side * side, "iscrowd": 0})
        Image.fromarray(pixels).save(root / "images" / f"img{i:02d}.png")
        images.append({"id": i + 1, "file_name": f"img{i:02d}.png", "width": SIZE, "height": SIZE})
    path = root / "boxes.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "lesion"}]}))
    return str(path), str(root / "images")


@pytest.fixture(scope="module")
def tiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiles")
    json_path, images = squares(root)
    out = root / "data"
    assert main(["convert", "coco", "--json", json_path, "--images", images, "--out", str(out),
                 "--split", "train=0.7,val=0.3", "--tile", str(TILE), "--tile-overlap", "0.25",
                 "--tile-keep-empty", "0.5", "-q"]) == 0
    return {"root": root, "out": out, "json": json_path, "images": images}


def test_cut_keeps_boxes_at_least_half_inside_and_counts_the_lost():
    record = ImageRecord("a.png", "a.png", 300, 100, 1, "png", "p",
                         [Object("x", Box(90, 10, 110, 30)),    # 50% in each of two tiles at overlap 0
                          Object("x", Box(20, 20, 30, 30)),     # inside the first tile
                          Object("x", Box(0, 0, 300, 100))])    # a third in each tile: lost
    png = Image.new("L", (300, 100))
    import io
    buffer = io.BytesIO()
    png.save(buffer, format="PNG")
    tiles, counts = cut(record, buffer.getvalue(), TileOptions(100, 0.0, keep_empty=0.0), seed=0)
    boxes = {t.record.image_id: [o.box for o in t.record.objects] for t, _ in tiles}
    assert boxes == {"a.png@0,0": [Box(90, 10, 100, 30), Box(20, 20, 30, 30)], "a.png@100,0": [Box(0, 10, 10, 30)]}
    assert counts.tiles == 2 and counts.boxes == 3 and counts.lost == 1 and counts.empty == 0  # 200,0 dropped:
    assert counts.lost_boxes == ({"image": "a.png", "source": None, "label": "x", "box": [0, 0, 300, 100]},)
    tiles, counts = cut(record, buffer.getvalue(), TileOptions(100, 0.0, keep_empty=1.0), seed=0)  # keep_empty 1
    assert [t.record.image_id for t, _ in tiles] == ["a.png@0,0", "a.png@100,0", "a.png@200,0"] and counts.empty == 1


def test_tiles_decode_with_the_od_api_on_their_bright_squares(tiled):
    """Every tile shard record, through the OD API's TfExampleDecoder: its pixels are the crop of the
    source image at the tile's origin and every box covers bright pixels; tiles.json agrees."""
    from medtfod.odapi.runtime import import_tensorflow
    tf = import_tensorflow(verbose=False)
    from object_detection.core import standard_fields as fields
    from object_detection.data_decoders import tf_example_decoder

    out = tiled["out"]
    report = json.loads((out / "report.json").read_text())
    entry = report["splits"]["train"]["tiles"]
    assert "tiles" not in report["splits"]["val"] and entry["size"] == TILE
    listing = {t["name"]: t for t in json.loads((out / "tiles.json").read_text())["splits"]["train"]}
    files = sorted(glob.glob(str(out / "tfrecords" / "train-tiles.record-*")))
    assert files and not glob.glob(str(out / "tfrecords" / "val-tiles*"))
    decoder = tf_example_decoder.TfExampleDecoder(label_map_proto_file=str(out / "label_map.pbtxt"))
    names, boxed = [], 0
    for raw in tf.data.TFRecordDataset(files):
        d = decoder.decode(raw)
        name = d[fields.InputDataFields.source_id].numpy().decode()
        names.append(name)
        image = d[fields.InputDataFields.image].numpy()[..., 0]
        t = listing[name]
        source = np.asarray(Image.open(os.path.join(tiled["images"], t["image"])))
        assert image.shape == (TILE, TILE)
        assert np.array_equal(image, source[t["y"]:t["y"] + TILE, t["x"]:t["x"] + TILE])
        got = d[fields.InputDataFields.groundtruth_boxes].numpy() * TILE
        assert len(got) == len(t["boxes"])
        for ymin, xmin, ymax, xmax in got:
            inner = image[int(round(ymin)):int(round(ymax)), int(round(xmin)):int(round(xmax))]
            assert inner.size and inner.min() == 250
            boxed += 1
    assert sorted(names) == sorted(listing) and len(names) == entry["tiles"] and boxed == entry["boxes"]
    assert 0 < entry["without_boxes"] < entry["tiles"]
    train = (out / "splits" / "train.txt").read_text().split()
    assert {t["image"] for t in listing.values()} <= set(train)
    assert glob.glob(str(out / "tfrecords" / "train.record-*"))  # the whole images are still there


def test_a_rerun_writes_the_same_tiles(tiled, tmp_path):
    out = tmp_path / "again"
    assert main(["convert", "coco", "--json", tiled["json"], "--images", tiled["images"], "--out", str(out),
                 "--split", "train=0.7,val=0.3", "--tile", str(TILE), "--tile-overlap", "0.25",
                 "--tile-keep-empty", "0.5", "-q"]) == 0
    for name in ("tiles.json", "tfrecords/train-tiles.record-00000-of-00001"):
        assert (out / name).read_bytes() == (tiled["out"] / name).read_bytes()


def test_config_trains_on_tiles_and_evaluates_whole_images(tiled, capsys):
    from medtfod.training.config import RenderOptions, render
    config = render("ssd_mobilenet_v2_fpnlite_320", str(tiled["out"]), options=RenderOptions(tiny=True))
    assert "train-tiles.record-" in config.train_input_reader.tf_record_input_reader.input_path[0]
    assert "/val.record-" in config.eval_input_reader[0].tf_record_input_reader.input_path[0]
    assert "smaller than the model's 128 px input" in capsys.readouterr().out
    with pytest.raises(UserError, match="--tile-keep-empty"):
        render("ssd_mobilenet_v2_fpnlite_320", str(tiled["out"]), options=RenderOptions(positive_fraction=0.5))


@pytest.mark.tf
def test_od_api_train_input_reads_the_tiles(tiled):
    """The rendered config's train input through the OD API's `inputs.train_input`: batches of tiles
    resized to the model's input, with the tiles' boxes."""
    from medtfod.odapi.runtime import import_tensorflow
    import_tensorflow(verbose=False)
    from object_detection import inputs
    from object_detection.core import standard_fields as fields
    from medtfod.training.config import RenderOptions, render

    config = render("ssd_mobilenet_v2_fpnlite_320", str(tiled["out"]),
                    options=RenderOptions(tiny=True, image_size=TILE, augment=[], batch_size=4))
    features, labels = next(iter(inputs.train_input(config.train_config, config.train_input_reader, config.model)))
    assert tuple(features[fields.InputDataFields.image].shape) == (4, TILE, TILE, 3)
    counts = labels[fields.InputDataFields.num_groundtruth_boxes].numpy()
    assert counts.shape == (4,) and counts.max() <= 2


@pytest.mark.parametrize("args, message", [
    (["--tile", "80", "--tile-overlap", "0.95"], "--tile-overlap"),
    (["--tile-overlap", "0.3"], "go with --tile PX"),
    (["--tile", "80", "--runner", "direct"], "local runner"),
])
def test_bad_tile_options_are_refused_before_anything_is_written(tiled, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    code = main(["convert", "coco", "--json", tiled["json"], "--images", tiled["images"], "--out", str(out)] + args)
    assert code != 0 and message in capsys.readouterr().err and not out.exists()


def test_tiles_of_a_masked_source_are_refused(tmp_path, capsys):
    from support.data import masked_coco
    json_path, images = masked_coco(tmp_path)
    out = tmp_path / "out"
    assert main(["convert", "coco", "--json", json_path, "--images", images, "--out", str(out), "--tile", "64"]) != 0
    assert "instance masks" in capsys.readouterr().err and not out.exists()


def test_export_records_the_training_tile_size(tiled):
    from medtfod.odapi.export import _training_tiles
    from medtfod.training.config import RenderOptions, render
    config = render("ssd_mobilenet_v2_fpnlite_320", str(tiled["out"]), options=RenderOptions(tiny=True))
    assert _training_tiles(config) == {"training_tiles": TILE}
    del config.train_input_reader.tf_record_input_reader.input_path[:]
    config.train_input_reader.tf_record_input_reader.input_path.append(str(tiled["out"] / "tfrecords" / "train.record-x"))
    assert _training_tiles(config) == {}


def _decoded(tf, decoder, files):
    from object_detection.core import standard_fields as fields
    return {d[fields.InputDataFields.source_id].numpy().decode(): d[fields.InputDataFields.image].numpy()[..., 0]
            for d in (decoder.decode(raw) for raw in tf.data.TFRecordDataset(files))}


@pytest.mark.tf
def test_16_bit_tiles_hold_what_the_whole_images_record_decodes_to(tmp_path):
    """A 16-bit grey PNG under the default window: TensorFlow decodes its whole-image record to each
    sample's high byte, and every tile must show the same pixels (Pillow's convert clipped them to 255)."""
    from medtfod.odapi.runtime import import_tensorflow
    tf = import_tensorflow(verbose=False)
    from object_detection.data_decoders import tf_example_decoder
    rng = np.random.default_rng(3)
    (tmp_path / "images").mkdir()
    images, annotations = [], []
    for i in range(2):
        values = rng.integers(1000, 20000, (SIZE, SIZE)).astype(np.uint16)
        values[50:70, 100:120] = 60000
        Image.fromarray(values).save(tmp_path / "images" / f"deep{i}.png")
        assert Image.open(tmp_path / "images" / f"deep{i}.png").mode.startswith("I")
        images.append({"id": i + 1, "file_name": f"deep{i}.png", "width": SIZE, "height": SIZE})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [100, 50, 20, 20],
                            "area": 400, "iscrowd": 0})
    (tmp_path / "boxes.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                     "categories": [{"id": 1, "name": "lesion"}]}))
    out = tmp_path / "data"
    assert main(["convert", "coco", "--json", str(tmp_path / "boxes.json"), "--images", str(tmp_path / "images"),
                 "--out", str(out), "--split", "train=1", "--tile", str(TILE), "--tile-keep-empty", "1", "-q"]) == 0
    decoder = tf_example_decoder.TfExampleDecoder(label_map_proto_file=str(out / "label_map.pbtxt"))
    whole = _decoded(tf, decoder, glob.glob(str(out / "tfrecords" / "train.record-*")))
    tiles = _decoded(tf, decoder, glob.glob(str(out / "tfrecords" / "train-tiles.record-*")))
    listing = {t["name"]: t for t in json.loads((out / "tiles.json").read_text())["splits"]["train"]}
    assert sorted(whole) == ["deep0.png", "deep1.png"] and len(tiles) == len(listing) == 2 * 9
    for name, pixels in tiles.items():
        t = listing[name]
        assert np.array_equal(pixels, whole[t["image"]][t["y"]:t["y"] + TILE, t["x"]:t["x"] + TILE]), name
    assert max(p.mean() for p in tiles.values()) < 100  # not clipped white


def test_a_tiled_split_that_gives_training_nothing_is_refused_and_nothing_is_written(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    Image.new("L", (SIZE, SIZE), 30).save(tmp_path / "images" / "big.png")
    table = {"images": [{"id": 1, "file_name": "big.png", "width": SIZE, "height": SIZE}],
             "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 20, 150, 150], "area": 22500,
                              "iscrowd": 0}], "categories": [{"id": 1, "name": "lesion"}]}
    (tmp_path / "boxes.json").write_text(json.dumps(table))
    base = ["convert", "coco", "--json", str(tmp_path / "boxes.json"), "--images", str(tmp_path / "images"),
            "--split", "train=1", "-q"]
    assert main(base + ["--out", str(tmp_path / "lost"), "--tile", "40"]) != 0
    assert re.search(r"--tile 40: none of the 1 boxes of split train is at least half inside", capsys.readouterr().err)
    assert not (tmp_path / "lost").exists()
    table["annotations"] = []
    (tmp_path / "boxes.json").write_text(json.dumps(table))
    assert main(base + ["--out", str(tmp_path / "none"), "--tile", "40", "--tile-keep-empty", "0"]) != 0
    assert re.search(r"split train has no boxes and --tile-keep-empty 0 kept no tile", capsys.readouterr().err)
    assert not (tmp_path / "none").exists()
    assert main(base + ["--out", str(tmp_path / "tiny"), "--tile", "8"]) != 0
    assert re.search(r"--tile 8: give the window size in pixels, a whole number of at least 32", capsys.readouterr().err)
    assert sorted(os.listdir(tmp_path)) == ["boxes.json", "images"]


def test_sigterm_during_convert_removes_the_output_in_progress(tmp_path):
    """`timeout`, batch schedulers and containers stop a job with SIGTERM: convert then discards its
    staged output as on Ctrl-C (it left a `.out.partial-*` folder of up to a gigabyte)."""
    import signal
    import subprocess
    import time
    from support.cli import medtfod_script
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    images, annotations = [], []
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (1200, 1200), dtype=np.uint8)).save(tmp_path / "images" / f"i{i}.png")
        images.append({"id": i + 1, "file_name": f"i{i}.png", "width": 1200, "height": 1200})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [100, 100, 20, 20],
                            "area": 400, "iscrowd": 0})
    (tmp_path / "b.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                 "categories": [{"id": 1, "name": "x"}]}))
    run = subprocess.Popen([medtfod_script(), "convert", "coco", "--json", str(tmp_path / "b.json"), "--images",
                            str(tmp_path / "images"), "--out", str(tmp_path / "out"), "--split", "train=1",
                            "--tile", "32", "--tile-keep-empty", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    deadline = time.time() + 120
    while time.time() < deadline and run.poll() is None and not list(tmp_path.glob(".out.partial-*")):
        time.sleep(0.1)
    assert run.poll() is None and list(tmp_path.glob(".out.partial-*")), "convert ended before it could be stopped"
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 143 and "terminated (SIGTERM); outputs in progress were discarded" in err, err[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "images"]


@pytest.mark.skipif(os.name == "nt", reason="no fork on Windows")
def test_sigterm_to_a_forked_worker_ends_it_quietly():
    """Process pools (convert's, Beam's multi_processing runner) stop their forked workers with
    SIGTERM: the command's SIGTERM handler, inherited by the fork, must not turn that into a
    `Terminated` traceback on the terminal (it did, under Beam's --strict error message)."""
    import subprocess
    import sys
    from support import REPO
    script = ("import multiprocessing, time\n"
              "from medtfod.cli import _terminate_as_interrupt\n"
              "assert _terminate_as_interrupt() is not None\n"
              "worker = multiprocessing.get_context('fork').Process(target=time.sleep, args=(60,))\n"
              "worker.start(); time.sleep(0.5); worker.terminate(); worker.join(30)\n"
              "print(worker.exitcode)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.stdout.strip() == "-15" and run.stderr == "", (run.stdout, run.stderr)


def test_boxes_in_no_tile_are_listed_in_the_report_and_named_in_the_summary(tmp_path, capsys):
    """A lost box is one a user may need back: report.json lists each (image, source, label, box)
    and convert's summary names the first ones, not only their number."""
    json_path, images = squares(tmp_path, count=6)
    data = json.loads(open(json_path).read())
    for k, image_id in enumerate((1, 2, 3, 4, 5)):  # larger than a tile: no tile holds half of it
        data["annotations"].append({"id": 100 + k, "image_id": image_id, "category_id": 1, "bbox": [10, 10, 150, 150],
                                    "area": 22500, "iscrowd": 0})
    open(json_path, "w").write(json.dumps(data))
    assert main(["convert", "coco", "--json", json_path, "--images", images, "--out", str(tmp_path / "out"),
                 "--split", "train=1", "--tile", str(TILE), "--tile-overlap", "0.25"]) == 0
    printed = capsys.readouterr().out
    lost = json.load(open(tmp_path / "out" / "report.json"))["splits"]["train"]["tiles"]["lost"]
    assert len(lost) == 5 and {e["image"] for e in lost} == {f"img{i:02d}.png" for i in range(5)}
    assert all(e["label"] == "lesion" and e["box"] == [10, 10, 160, 160] for e in lost), lost
    assert "5 boxes in no tile" in printed and printed.count("in no tile: img0") == 3, printed
    assert "... and 2 more: report.json lists them (splits.train.tiles.lost)" in printed

