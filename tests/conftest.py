"""Shared fixtures: tiny synthetic data made in code; ../shared only when it exists."""
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")


@pytest.fixture
def shared_data():
    """Path of ../shared/data; skips the test when the checkout has no ../shared."""
    path = os.path.join(SHARED, "data")
    if not os.path.isdir(path):
        pytest.skip("../shared/data is not present (only in the developers' checkout)")
    return path


@pytest.fixture(scope="session")
def tiny_nih(tmp_path_factory):
    """24 synthetic 64-px images with NIH-format tables (read-only: copy before changing)."""
    from medtfod import demo_data
    root = tmp_path_factory.mktemp("tiny_nih")
    return demo_data.generate(str(root), num_images=24, size=64, seed=3)


def write(path, text):
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return str(path)


@pytest.fixture(scope="session")
def tiny_dataset(tiny_nih, tmp_path_factory):
    """`tiny_nih` converted by `medtfod convert nih` (read-only: tests must not change it)."""
    from medtfod.cli import main
    out = tmp_path_factory.mktemp("tiny_dataset") / "data"
    assert main(["convert", "nih", "--bbox-csv", tiny_nih["bbox_csv"], "--images", tiny_nih["images"],
                 "--data-entry", tiny_nih["data_entry"], "--label-map", tiny_nih["label_map"],
                 "--out", str(out), "-q"]) == 0
    return str(out)
