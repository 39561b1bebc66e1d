"""Duplicate-aware splits (issue 21): identical and near-identical images are found from their
pixels, grouped, and kept in one split with all their patients; audit reports near copies."""
import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from medtfod.cli import main
from medtfod.core.images import read_and_probe
from medtfod.data import duplicates
from medtfod.data.duplicates import DuplicateGroup, ImageHash, find_groups, hash_bytes, hash_files, patient_units
from medtfod.data.splits import assign_patients

from support import write


def _picture(seed: int, size=(96, 64)) -> Image.Image:
    """A smooth random grey picture (blurred noise, so its low frequencies differ from another seed's)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 8, size[0] // 8), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).convert("RGB")


def _encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def test_phash_equals_imagehash():
    """medtfod's numpy pHash gives the bits of the pinned imagehash.phash (the reference, in the
    test lock) on pictures of several sizes and modes."""
    imagehash = pytest.importorskip("imagehash", reason="imagehash is in requirements/test.txt")
    for seed in range(8):
        image = _picture(seed, (120 + 37 * seed, 80 + 11 * seed))
        for candidate in (image, image.convert("L")):
            reference = imagehash.phash(candidate)
            ours = duplicates.hash_pixels(candidate).phash
            assert ours == int(str(reference), 16), (seed, candidate.mode)


def test_exact_and_near_hashes():
    image = _picture(1)
    png_fast, png_small = _encoded(image, "PNG", compress_level=0), _encoded(image, "PNG", compress_level=9)
    assert png_fast != png_small and hash_bytes(png_fast) == hash_bytes(png_small)  # same pixels, other bytes
    jpeg = hash_bytes(_encoded(image, "JPEG", quality=85))
    assert jpeg.exact != hash_bytes(png_fast).exact
    assert duplicates.distance(jpeg.phash, hash_bytes(png_fast).phash) <= duplicates.DEFAULT_DISTANCE
    others = [hash_bytes(_encoded(_picture(s), "PNG")).phash for s in range(2, 8)]
    assert min(duplicates.distance(hash_bytes(png_fast).phash, o) for o in others) > duplicates.DEFAULT_DISTANCE
    grey = hash_bytes(_encoded(image.convert("L"), "PNG"))  # same picture in another mode: not exact, but near
    assert grey.exact != hash_bytes(png_fast).exact and grey.phash == hash_bytes(png_fast).phash


def test_groups_chain_and_units():
    hashes = {"a": ImageHash("x", 0b0), "b": ImageHash("x", 0b0), "c": ImageHash("y", 0b11),
              "d": ImageHash("z", 0b1111), "e": ImageHash("w", (1 << 64) - 1), "f": ImageHash("v", 0b1 << 40)}
    # a=b exact; c within 2 of a; d within 2 of c (4 of a): one chain; f within 1 of a
    assert find_groups(hashes, 2) == [DuplicateGroup(["a", "b", "c", "d", "f"], False, 2)]
    assert find_groups(hashes, -1) == [DuplicateGroup(["a", "b"], True, 0)]
    assert find_groups(hashes, 1) == [DuplicateGroup(["a", "b", "f"], False, 1)]
    patients = {"a": "p3", "b": "p1", "c": "p2", "d": "p4", "e": "p5", "x": "p2"}
    units = patient_units(patients, [DuplicateGroup(["a", "b"], True, 0), DuplicateGroup(["c", "d"], False, 2)])
    assert units == {"p1": "p1", "p3": "p1", "p2": "p2", "p4": "p2", "p5": "p5"}
    assert patient_units(patients, [DuplicateGroup(["a", "b", "c"], True, 0)])["p4"] == "p4"


def test_pool_gives_the_same_hashes(tmp_path, monkeypatch):
    for i in range(6):
        (tmp_path / f"{i}.png").write_bytes(_encoded(_picture(i), "PNG"))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    paths = {p.name: str(p) for p in tmp_path.iterdir()}
    one = hash_files(paths, read_and_probe, 1)
    monkeypatch.setattr(duplicates, "POOL_MIN", 2)
    assert hash_files(paths, read_and_probe, 2) == one and sorted(one) == [f"{i}.png" for i in range(6)]


N = 16  # patients, one image each


def _copies_dataset(root):
    """16 patients with one picture each; patient 0's picture is also patients 1-3's (same
    bytes), patient 4's is also patient 5's as a JPEG (near), each with one lesion box."""
    images = root / "images"
    images.mkdir()
    for i in range(N):
        source = {1: 0, 2: 0, 3: 0, 5: 4}.get(i, i)
        data = _encoded(_picture(100 + source), "JPEG", quality=70 if i == 5 else 95)
        (images / f"case_{i}.jpg").write_bytes(data)
    lines = ["name,finding,x,y,w,h,patient"] + [f"case_{i}.jpg,lesion,10,10,20,20,p{i:02d}" for i in range(N)]
    table = write(root / "boxes.csv", "\n".join(lines) + "\n")
    return str(table), str(images)


def _convert(table, images, out, seed, *extra):
    return main(["convert", "csv", "--table", table, "--columns", "filename=name,label=finding,x=x,y=y,w=w,h=h,"
                 "patient=patient", "--images", images, "--out", str(out), "--seed", str(seed),
                 "--split", "train=0.5,val=0.5", "--workers", "1", "-q", *extra])


def _splits(out):
    return {p.stem: sorted(p.read_text().split()) for p in (out / "splits").glob("*.txt")}


def test_copies_stay_in_one_split_and_the_flag_keeps_the_patient_split(tmp_path, capsys):
    table, images = _copies_dataset(tmp_path)
    patients = [f"p{i:02d}" for i in range(N)]
    classes = {p: {"lesion"} for p in patients}
    fractions = {"train": 0.5, "val": 0.5}

    def straddles(seed):
        split = assign_patients(patients, fractions, seed, classes)
        return len({split[p] for p in ("p00", "p01", "p02", "p03")}) > 1

    seed = next(s for s in range(20) if straddles(s))  # a seed where the patient split alone leaks
    assert _convert(table, images, tmp_path / "flag", seed, "--allow-duplicates-across-splits") == 0
    split = assign_patients(patients, fractions, seed, classes)  # the split before duplicate grouping
    expected = {name: sorted(f"case_{int(p[1:])}.jpg" for p in patients if split[p] == name) for name in fractions}
    assert _splits(tmp_path / "flag") == expected
    report = json.loads((tmp_path / "flag" / "report.json").read_text())
    assert report["duplicates"]["allowed_across_splits"] and report["duplicates"]["groups"] == []
    assert main(["audit", "--splits", str(tmp_path / "flag")]) == 1
    assert "LEAK identical image in several splits" in capsys.readouterr().out

    for s in (seed, seed + 1, seed + 2):
        out = tmp_path / f"grouped{s}"
        assert _convert(table, images, out, s) == 0
        where = {name: split for split, names in _splits(out).items() for name in names}
        assert len({where[f"case_{i}.jpg"] for i in range(4)}) == 1
        assert where["case_4.jpg"] == where["case_5.jpg"]
        assert all(_splits(out).values())  # both splits still have images
        assert main(["audit", "--splits", str(out)]) == 0
    report = json.loads((tmp_path / f"grouped{seed}" / "report.json").read_text())
    groups = report["duplicates"]["groups"]
    assert [g["images"] for g in groups] == [[f"case_{i}.jpg" for i in range(4)], ["case_4.jpg", "case_5.jpg"]]
    assert groups[0]["patients"] == ["p00", "p01", "p02", "p03"] and groups[0]["exact"]
    assert not groups[1]["exact"] and 0 < groups[1]["distance"] <= duplicates.DEFAULT_DISTANCE
    assert all(len(g["splits"]) == 1 for g in groups)
    out = capsys.readouterr().out
    assert "duplicates: 2 groups of identical or near-identical images" in out
    assert "case_0.jpg, case_1.jpg, case_2.jpg, case_3.jpg (patients p00, p01, p02, p03; identical)" in out


def test_folds_keep_copies_together(tmp_path):
    table, images = _copies_dataset(tmp_path)
    out = tmp_path / "folds"
    assert main(["convert", "csv", "--table", table, "--columns", "filename=name,label=finding,x=x,y=y,w=w,h=h,"
                 "patient=patient", "--images", images, "--out", str(out), "--folds", "4", "-q"]) == 0
    where = {name: split for split, names in _splits(out).items() for name in names}
    assert len({where[f"case_{i}.jpg"] for i in range(4)}) == 1 and len(set(where.values())) == 4


def test_audit_reports_near_duplicates(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    picture = _picture(7)
    (images / "a.png").write_bytes(_encoded(picture, "PNG"))
    (images / "a_copy.jpg").write_bytes(_encoded(picture, "JPEG", quality=80))      # near: other pixels
    (images / "a_same.png").write_bytes(_encoded(picture, "PNG", compress_level=0))  # identical pixels
    (images / "b.png").write_bytes(_encoded(_picture(8), "PNG"))
    splits = tmp_path / "splits"
    splits.mkdir()
    write(splits / "train.txt", "a.png\nb.png\n")
    write(splits / "val.txt", "a_copy.jpg\na_same.png\n")
    report = tmp_path / "audit.json"
    assert main(["audit", "--splits", str(splits), "--images", str(images), "--out", str(report)]) == 1
    result = json.loads(report.read_text())
    assert result["duplicate_images"] == []  # no two files have the same bytes
    (near,) = result["near_duplicates"]
    assert [d["image"] for d in near["images"]] == ["a.png", "a_copy.jpg", "a_same.png"]
    assert near["across_splits"] and not near["exact_pixels"] and result["leaks"] == 1
    assert "LEAK near-identical images in several splits (pHash distance" in capsys.readouterr().out
    # identical pixels only: the PNG pair is still a leak, the JPEG is not part of it
    assert main(["audit", "--splits", str(splits), "--images", str(images), "--duplicate-distance", "-1",
                 "--out", str(report)]) == 1
    (near,) = json.loads(report.read_text())["near_duplicates"]
    assert [d["image"] for d in near["images"]] == ["a.png", "a_same.png"] and near["exact_pixels"]
    shutil.rmtree(splits)


def test_real_ddti_no_leak_for_seeds_0_to_9(shared_data, tmp_path, monkeypatch):
    """The real DDTI: 150_1/233_2/323_1/326_1/349_1 are one picture under five cases (and
    353_2/396_1 one under two). For every seed 0-9 each group stays in one split; seed 0 is
    converted and audited end to end (the hashes are computed once for the plan-only seeds)."""
    from medtfod.core.problems import Problems
    from medtfod.data.plan import ConvertOptions, plan_conversion
    from medtfod.data.sources import read_source
    xml = os.path.join(shared_data, "thyroid_ddti", "xml")
    images = os.path.join(shared_data, "thyroid_ddti_full", "images")
    if not os.path.isdir(images):
        pytest.skip("thyroid_ddti_full/images is not present")
    cache = {}

    def hash_once(paths, read, workers):
        if "h" not in cache:
            cache["h"] = duplicates.hash_files(paths, read, workers)
        return cache["h"]

    monkeypatch.setattr("medtfod.data.plan.hash_files", hash_once)
    out = tmp_path / "s0"
    assert main(["convert", "ddti", "--xml-dir", xml, "--images", images, "--out", str(out), "-q"]) == 0
    assert main(["audit", "--splits", str(out)]) == 0
    groups = json.loads((out / "report.json").read_text())["duplicates"]["groups"]
    assert ["150_1.jpg", "233_2.jpg", "323_1.jpg", "326_1.jpg", "349_1.jpg"] in [g["images"] for g in groups]
    for seed in range(10):
        problems = Problems()
        table, label_map = read_source("ddti", problems, images=images, label_map=None, xml_dir=xml)
        plan = plan_conversion(table, images, label_map, ConvertOptions(seed=seed), problems)
        where = {name: split for split, names in plan.by_split.items() for name in names}
        for group in plan.duplicates:
            assert len({where[i] for i in group.images if i in where}) == 1, (seed, group)
        patient_splits = {}
        for name, split in where.items():
            patient_splits.setdefault(plan.patients[name], set()).add(split)
        assert all(len(s) == 1 for s in patient_splits.values())


def test_an_empty_split_names_the_joined_patients(tmp_path, capsys):
    """Four patients with one picture: one unit, so val would be empty; the error says why and how out."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        (images / f"c{i}.png").write_bytes(_encoded(_picture(3), "PNG"))
    table = write(tmp_path / "t.csv", "name,finding,x,y,w,h,patient\n" +
                  "".join(f"c{i}.png,lesion,5,5,10,10,p{i}\n" for i in range(4)))
    args = ["convert", "csv", "--table", table, "--columns",
            "filename=name,label=finding,x=x,y=y,w=w,h=h,patient=patient", "--images", str(images), "-q"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert "split 'val' would have 0 images" in err and "4 patients in all; 1 groups of identical" in err
    assert "--allow-duplicates-across-splits" in err and not (tmp_path / "a").exists()
    assert main(args + ["--out", str(tmp_path / "b"), "--allow-duplicates-across-splits"]) == 0
