"""Grey windows for DICOM and 16-bit images (convert --window), multi-frame DICOM frames, and the
same pixels again at detect time. Expected pixels are computed here with plain numpy formulas."""
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from medtfod.core.errors import UserError
from medtfod.core.windowing import parse_window

pydicom = pytest.importorskip("pydicom")

COLUMNS = "filename=file,label=label,x=x,y=y,w=w,h=h"


def write_dicom(path, frames, photometric="MONOCHROME2", bits_stored=12, slope=None, intercept=None, **tags):
    """A DICOM file of `frames` ((H, W) or (N, H, W), uint16 or int16) with the given tags."""
    from support.dicom_files import new_dataset
    ds = new_dataset()
    ds.Rows, ds.Columns = frames.shape[-2:]
    if frames.ndim == 3:
        ds.NumberOfFrames = frames.shape[0]
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if frames.dtype == np.int16 else 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    for key, value in tags.items():
        setattr(ds, key, value)
    if frames is not None:
        ds.PixelData = frames.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return str(path)


def wl(values, width, level):
    """The textbook window, written out: level - width/2 -> 0, level + width/2 -> 255, clipped."""
    low = level - width / 2
    return np.clip((values - low) / width, 0, 1) * 255


def stretch(values, low, high):
    return np.clip((values - low) / (high - low), 0, 1) * 255


def to_uint8(scaled, mono1=False):
    return np.round(255 - scaled if mono1 else scaled).astype(np.uint8)


@pytest.fixture(scope="module")
def dicoms(tmp_path_factory):
    """Five DICOMs (12- and 16-bit, MONOCHROME1 and 2, rescale slope/intercept, one with 3 frames),
    one without pixel data, and a box table naming frames (one out of range). Returns the folder,
    the table and {image name: (modality values, MONOCHROME1?)}."""
    root = tmp_path_factory.mktemp("dicoms")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(7)
    raw_m1 = rng.integers(0, 4096, (12, 16)).astype(np.uint16)                # 12-bit MONOCHROME1
    raw_16 = rng.integers(-2000, 2000, (12, 16)).astype(np.int16)             # 16-bit signed
    raw_12 = rng.integers(0, 4096, (12, 16)).astype(np.uint16)                # 12-bit, slope 0.5
    raw_mf = rng.integers(0, 4096, (3, 12, 16)).astype(np.uint16)             # 3 frames
    write_dicom(images / "m1.dcm", raw_m1, "MONOCHROME1", slope=1, intercept=-1024,
                WindowCenter=40, WindowWidth=400)
    write_dicom(images / "s16.dcm", raw_16, bits_stored=16, slope=2, intercept=-100)
    write_dicom(images / "h12.dcm", raw_12, slope=0.5, intercept=-1000)
    write_dicom(images / "cine.dcm", raw_mf, slope=1, intercept=-1024)
    write_dicom(images / "empty.dcm", np.zeros((2, 2), np.uint16))
    empty = pydicom.dcmread(str(images / "empty.dcm"))
    del empty.PixelData
    empty.save_as(str(images / "empty.dcm"))
    rows = ["m1.dcm,nodule,1,1,5,5", "s16.dcm,nodule,2,2,6,6", "h12.dcm,mass,3,1,4,4",
            "cine.dcm#0,nodule,1,2,5,5", "cine.dcm#2,mass,2,2,5,5", "cine.dcm#5,nodule,1,1,3,3",
            "empty.dcm,nodule,0,0,1,1"]
    table = root / "t.csv"
    table.write_text("file,label,x,y,w,h\n" + "\n".join(rows) + "\n")
    values = {"m1.dcm": (raw_m1 * 1.0 - 1024, True), "s16.dcm": (raw_16 * 2.0 - 100, False),
              "h12.dcm": (raw_12 * 0.5 - 1000, False), "cine.dcm#0": (raw_mf[0] * 1.0 - 1024, False),
              "cine.dcm#2": (raw_mf[2] * 1.0 - 1024, False)}
    return SimpleNamespace(images=str(images), table=str(table), values=values, root=root)


def convert(dicoms, out, *options):
    from medtfod.cli import main
    return main(["convert", "csv", "--table", dicoms.table, "--columns", COLUMNS, "--images", dicoms.images,
                 "--out", str(out), "--split", "train=1.0", "--max-bad", "0.5", "--workers", "1", "-q", *options])


def tfrecord_pixels(out):
    """{image name: pixels decoded from the image's bytes in the written TFRecord}, and the manifest."""
    from medtfod.data import manifest
    data = manifest.load(str(out))
    return {e.name: np.asarray(Image.open(io.BytesIO(data.image_bytes(e)))) for e in data.images}, data


def test_lung_window_matches_the_formula(dicoms, tmp_path, capsys):
    assert convert(dicoms, tmp_path / "out", "--window", "lung") == 0
    pixels, data = tfrecord_pixels(tmp_path / "out")
    assert sorted(pixels) == sorted(dicoms.values)
    for name, (values, mono1) in dicoms.values.items():
        np.testing.assert_array_equal(pixels[name], to_uint8(wl(values, 1500, -600), mono1), err_msg=name)
    assert (data.window, data.clahe) == ("lung", False)
    frames = {e.name: (e.frame, e.source_path) for e in data.images}
    assert frames["cine.dcm#2"][0] == 2 and frames["cine.dcm#2"][1].endswith("cine.dcm")
    assert frames["m1.dcm"][0] is None
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    messages = {p["value"]: p["message"] for p in report["problems"]["items"]}
    assert "frame #5 is out of range" in messages["cine.dcm#5"] and "3 frame(s)" in messages["cine.dcm#5"]
    bad_frame = [p for p in report["problems"]["items"] if p["value"] == "cine.dcm#5"][0]
    assert bad_frame["file"].endswith(".csv") and bad_frame["line"] >= 2  # the table row naming the frame
    assert "no pixel data" in messages["empty.dcm"]
    assert (tmp_path / "out" / "voc" / "cine#0.xml").is_file() and (tmp_path / "out" / "voc" / "cine#2.xml").is_file()


def test_multi_window_puts_three_windows_in_rgb(dicoms, tmp_path):
    assert convert(dicoms, tmp_path / "out", "--window", "multi:lung;400,40;percentile:2,98") == 0
    pixels, data = tfrecord_pixels(tmp_path / "out")
    assert data.window == "multi:lung;400,40;percentile:2,98"
    for name, (values, mono1) in dicoms.values.items():
        low, high = np.percentile(values, [2, 98])
        want = np.stack([to_uint8(wl(values, 1500, -600), mono1), to_uint8(wl(values, 400, 40), mono1),
                         to_uint8(stretch(values, low, high), mono1)], axis=-1)
        assert pixels[name].shape == (12, 16, 3)
        np.testing.assert_array_equal(pixels[name], want, err_msg=name)


def test_header_default_is_unchanged(dicoms, tmp_path):
    """No --window: the header's window (m1.dcm has one) then min-max, as before windows existed."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    assert convert(dicoms, tmp_path / "out") == 0
    pixels, data = tfrecord_pixels(tmp_path / "out")
    assert data.window == "header"
    ds = pydicom.dcmread(str(dicoms.root / "images" / "m1.dcm"))
    shown = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float64)
    np.testing.assert_array_equal(pixels["m1.dcm"], to_uint8(stretch(shown, shown.min(), shown.max()), True))


def test_multiframe_file_without_a_frame(dicoms, tmp_path):
    """Listed without findings: each frame is an image without findings; a box on it without a
    frame is a bad image, named, and skipped."""
    from medtfod.cli import main
    table = tmp_path / "t.csv"
    table.write_text("file,label,x,y,w,h\ncine.dcm,,,,,\nm1.dcm,nodule,1,1,5,5\nh12.dcm,mass,1,1,4,4\n"
                     "s16.dcm,nodule,2,2,6,6\n")
    out = tmp_path / "out"
    assert main(["convert", "csv", "--table", str(table), "--columns", COLUMNS, "--images", dicoms.images, "--out",
                 str(out), "--split", "train=1.0", "--workers", "1", "-q"]) == 0
    pixels, data = tfrecord_pixels(out)
    assert {e.name: (e.frame, e.boxes) for e in data.images if e.frame is not None} == {
        "cine.dcm#0": (0, 0), "cine.dcm#1": (1, 0), "cine.dcm#2": (2, 0)}
    table.write_text("file,label,x,y,w,h\ncine.dcm,nodule,1,1,5,5\nm1.dcm,nodule,1,1,5,5\nh12.dcm,mass,1,1,4,4\n")
    assert main(["convert", "csv", "--table", str(table), "--columns", COLUMNS, "--images", dicoms.images, "--out",
                 str(tmp_path / "out2"), "--split", "train=1.0", "--workers", "1", "--max-bad", "0.5", "-q"]) == 0
    problems = json.loads((tmp_path / "out2" / "report.json").read_text())["problems"]["items"]
    assert [p["value"] for p in problems] == ["cine.dcm"]
    assert "multi-frame DICOM (3 frames): name one frame as FILE#k" in problems[0]["message"]


def write_png16(path, values):
    Image.fromarray(values.astype(np.uint16)).save(path)  # Pillow writes mode I;16 as a 16-bit grey PNG
    return str(path)


def test_16bit_png_and_tiff(tmp_path):
    from medtfod.core.images import read_and_probe
    values = np.random.default_rng(1).integers(0, 60000, (10, 14)).astype(np.uint16)
    png = write_png16(tmp_path / "a.png", values)
    data, _ = read_and_probe(png)
    assert data == open(png, "rb").read()  # header: passed through untouched, as before
    data, info = read_and_probe(png, window=parse_window("20000,30000"))
    assert info.channels == 1
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), to_uint8(wl(values * 1.0, 20000, 30000)))
    Image.fromarray(values).save(tmp_path / "a.tif")
    data, info = read_and_probe(str(tmp_path / "a.tif"))  # TIFF under header: min-max
    want = to_uint8(stretch(values * 1.0, values.min(), values.max()))
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), want)


def test_a_window_that_flattens_the_image_is_a_bad_image(tmp_path):
    """A CT window on 16-bit values that are not Hounsfield units (all >= 3000): every pixel white.
    The image is refused with its value range, instead of training on a blank square."""
    from medtfod.core.images import ImageError, read_and_probe
    values = np.random.default_rng(2).integers(3000, 60000, (10, 14)).astype(np.uint16)
    png = write_png16(tmp_path / "a.png", values)
    with pytest.raises(ImageError, match="the window lung makes this image one flat grey: its values run 4134 to 59592"):
        read_and_probe(png, window=parse_window("lung"))
    flat = write_png16(tmp_path / "flat.png", np.full((10, 14), 7000, np.uint16))  # flat already: kept
    data, _ = read_and_probe(flat, window=parse_window("lung"))
    assert np.asarray(Image.open(io.BytesIO(data))).min() == 255


@pytest.mark.parametrize("spec, words", [("lunge", ["lunge", "did you mean 'lung'"]),
                                         ("0,40", ["'0,40'", "width 0", "> 0"]),
                                         ("-5,40", ["width -5"]),
                                         ("percentile:99,1", ["0 <= P1 < P99 <= 100"]),
                                         ("multi:lung;bone", ["exactly three"]),
                                         ("multi:lung;multi:a;b", ["is not a window"])])
def test_bad_window_is_a_usage_error(spec, words):
    with pytest.raises(UserError) as e:
        parse_window(spec)
    for word in words:
        assert word in str(e.value)


def test_bad_window_on_the_command_line_writes_nothing(dicoms, tmp_path, capsys):
    assert convert(dicoms, tmp_path / "out", "--window", "1500") == 1
    assert "--window '1500'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # a value that starts with a minus sign reaches the window parser (not argparse's 'expected one argument')
    assert convert(dicoms, tmp_path / "out", "--window", "-5,40") == 1
    assert "--window '-5,40'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_clahe_runs_after_the_window(dicoms, tmp_path):
    import cv2
    assert convert(dicoms, tmp_path / "out", "--window", "mediastinum", "--clahe") == 0
    pixels, data = tfrecord_pixels(tmp_path / "out")
    assert (data.window, data.clahe) == ("mediastinum", True)
    values, _ = dicoms.values["h12.dcm"]
    want = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(to_uint8(wl(values, 350, 50)))
    np.testing.assert_array_equal(pixels["h12.dcm"], want)


def test_detect_inputs_get_the_training_pixels(dicoms, tmp_path):
    """Frames are listed one by one and loaded with the window, as convert made them."""
    from medtfod.inference.inputs import load_image, resolve_inputs
    inputs, _, _ = resolve_inputs(dicoms.images)
    names = [name for name, _ in inputs]
    assert names[:3] == ["cine.dcm#0", "cine.dcm#1", "cine.dcm#2"] and "m1.dcm" in names
    source = dict(inputs)["cine.dcm#2"]
    image, error = load_image(source, parse_window("lung"))
    assert error is None
    values, _ = dicoms.values["cine.dcm#2"]
    np.testing.assert_array_equal(np.asarray(image)[..., 0], to_uint8(wl(values, 1500, -600)))
    values16 = np.arange(0, 60000, 500, dtype=np.uint16).reshape(8, 15)
    image, _ = load_image(values16, parse_window("30000,20000"))
    np.testing.assert_array_equal(np.asarray(image)[..., 1], to_uint8(wl(values16 * 1.0, 30000, 20000)))
    image, _ = load_image(values16)  # no window: the high byte, as TensorFlow reads a 16-bit PNG
    np.testing.assert_array_equal(np.asarray(image)[..., 2], (values16 >> 8).astype(np.uint8))
    _, error = load_image(source.replace("#2", "#3"), parse_window("lung"))
    assert "out of range" in error


def test_detect_window_defaults_to_the_model_and_warns_when_changed():
    from medtfod.inference.predictor import PredictOptions
    from medtfod.inference.windows import choose_window
    model = SimpleNamespace(path="exp", window={"window": "lung", "clahe": False})
    window, source, warning = choose_window([model], PredictOptions())
    assert (window.text, warning) == ("lung", None) and "training data" in source
    window, _, warning = choose_window([model], PredictOptions(window="bone"))
    assert window.text == "bone" and "lung" in warning and "bone" in warning
    _, _, warning = choose_window([model], PredictOptions(window="1500,-600"))  # lung's own numbers: same pixels
    assert warning is None
    _, _, warning = choose_window([model], PredictOptions(clahe=True))
    assert "lung + CLAHE" in warning
    window, _, warning = choose_window([SimpleNamespace(path="old", window=None)], PredictOptions())
    assert window.is_default and warning is None
    with pytest.raises(UserError, match="window 'x,1'"):
        PredictOptions(window="x,1")


def blob_images(folder, rng, size=64):
    """Two 4-frame 12-bit DICOMs and eight 16-bit PNGs, each image with one bright square on a noisy
    background (raw values ~500 and ~2500); returns the box table's rows."""
    rows = []

    def image():
        pixels = rng.normal(500, 60, (size, size))
        side = int(rng.integers(14, 22))
        x, y = (int(v) for v in rng.integers(4, size - side - 4, 2))
        pixels[y:y + side, x:x + side] += 2000
        return np.clip(pixels, 0, 4095).astype(np.uint16), (x, y, side)

    for c in range(2):
        frames, boxes = zip(*(image() for _ in range(4)))
        write_dicom(folder / f"cine{c}.dcm", np.stack(frames))
        rows += [f"cine{c}.dcm#{k},blob,{x},{y},{s},{s}" for k, (x, y, s) in enumerate(boxes)]
    for i in range(8):
        pixels, (x, y, s) = image()
        write_png16(folder / f"p{i}.png", pixels)
        rows.append(f"p{i}.png,blob,{x},{y},{s},{s}")
    return rows


@pytest.mark.slow
@pytest.mark.tf
def test_multiframe_and_16bit_train_and_detect(tmp_path):
    """Multi-frame DICOM frames and 16-bit PNGs, windowed 3000,1500: convert, train a tiny SSD,
    export, detect on the raw files. Detect applies the window export.json recorded, so each
    image's detections on the raw file equal those on the dataset's own (windowed) bytes."""
    import csv

    from support.cli import medtfod

    from medtfod.demo import DEMO_OVERRIDES
    from medtfod.inference.model import ExportedModel
    from medtfod.inference.predictor import PredictOptions, Predictor
    images = tmp_path / "images"
    images.mkdir()
    rows = blob_images(images, np.random.default_rng(11))
    (tmp_path / "t.csv").write_text("file,label,x,y,w,h\n" + "\n".join(rows) + "\n")
    data, model, exported = tmp_path / "data", tmp_path / "model", tmp_path / "exported"
    medtfod("convert", "csv", "--table", tmp_path / "t.csv", "--columns", COLUMNS, "--images", images,
            "--out", data, "--split", "train=0.6,val=0.4", "--window", "3000,1500", "-q")
    config = model / "pipeline.config"
    overrides = [a for k, v in DEMO_OVERRIDES.items() for a in ("--set", f"{k}={v}")]
    medtfod("config", "--model", "ssd_mobilenet_v2_fpnlite_320", "--data", data, "--out", config, "--steps", "20",
            "--batch-size", "4", "--image-size", "64", "--learning-rate", "0.04", "--warmup-steps", "5", *overrides)
    medtfod("train", "--config", config, "--model-dir", model, "-q")
    medtfod("export", "--config", config, "--model-dir", model, "--out", exported, "-q")
    assert json.loads((exported / "export.json").read_text())["window"] == "3000,1500"

    raw = medtfod("detect", "--model", exported, "--images", images, "--out", tmp_path / "raw", "--min-score", "0",
                  "--no-draw", "-q")
    assert "grey window for DICOM/16-bit images: 3000,1500 (the model's training data" in raw.stdout
    val = medtfod("detect", "--model", exported, "--dataset", data, "--split", "val", "--out", tmp_path / "val",
                  "--min-score", "0", "--no-draw", "-q")
    assert "unreadable" not in raw.stdout + val.stdout

    def detections(folder):
        with open(folder / "detections.csv", newline="") as f:
            found = {}
            for row in csv.DictReader(f):
                found.setdefault(row["image"], []).append(row)
            return found
    on_raw, on_val = detections(tmp_path / "raw"), detections(tmp_path / "val")
    listed = {row["image"] for row in csv.DictReader(open(tmp_path / "raw" / "images.csv", newline=""))}
    assert {f"cine{c}.dcm#{k}" for c in range(2) for k in range(4)} | {f"p{i}.png" for i in range(8)} == listed
    assert set(on_val) <= set(on_raw)
    assert any("#" in name for name in on_val) and any(name.endswith(".png") for name in on_val)  # seed 0's val split
    for name, found in on_val.items():
        assert found == on_raw[name], name  # the same pixels, so the same boxes and scores
    predictor = Predictor([ExportedModel(str(exported))], PredictOptions(window="lung"))
    assert "3000,1500" in predictor.window_warning and "lung" in predictor.window_warning


def test_undecodable_compressed_dicom_is_named(tmp_path):
    """A JPEG 2000 file this environment cannot decode: an ImageError naming the transfer syntax
    (convert reports it per file and skips the image, as any bad image)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    from medtfod.core.dicom import dicom_to_png
    from medtfod.core.images import ImageError
    path = write_dicom(tmp_path / "j2k.dcm", np.zeros((4, 4), np.uint16))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 20])  # a J2K start, then nothing valid
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImageError, match="cannot decode DICOM pixel data .*JPEG 2000"):
        dicom_to_png(path, parse_window("lung"))


def test_export_knows_its_training_window(dicoms, tmp_path):
    """export.json's window first; without one, the manifest of the dataset pipeline.config trains on."""
    from medtfod.inference.model import ExportedModel
    assert convert(dicoms, tmp_path / "data", "--window", "bone", "--clahe") == 0
    export = tmp_path / "export"
    (export / "saved_model").mkdir(parents=True)
    (export / "saved_model" / "saved_model.pb").write_bytes(b"")
    records = tmp_path / "data" / "tfrecords" / "train.record-?????-of-00001"
    (export / "pipeline.config").write_text(f'train_input_reader {{ tf_record_input_reader {{ input_path: "{records}" }} }}\n')
    assert ExportedModel(str(export)).window == {"window": "bone", "clahe": True}
    (export / "export.json").write_text(json.dumps({"step": 1, "window": "lung", "clahe": False}))
    assert ExportedModel(str(export)).window == {"window": "lung", "clahe": False}
    (export / "export.json").write_text(json.dumps({"step": 1}))
    (export / "pipeline.config").write_text('train_input_reader { tf_record_input_reader { input_path: "/nowhere/x" } }\n')
    assert ExportedModel(str(export)).window is None
