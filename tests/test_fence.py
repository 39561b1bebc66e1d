"""Outputs fenced off from inputs: the checks every writing command makes, and safe output names."""
import os

import pytest

from medtfod.core.errors import UserError
from medtfod.core.fence import check_outputs, inside, safe_names


def test_output_folder_may_not_be_contain_or_sit_in_an_input_folder(tmp_path, monkeypatch):
    images = tmp_path / "scans"
    (images / "a").mkdir(parents=True)
    table = tmp_path / "t.csv"
    table.write_text("x")
    check_outputs({"--out": str(tmp_path / "out")}, {"--images": str(images), "--table": str(table)})
    cases = [(images, "is the input --images"), (tmp_path, "contains the input"),
             (images / "detections", "is inside the input folder --images"),
             (images / "a" / "deeper", "is inside the input folder --images")]
    for out, words in cases:
        with pytest.raises(UserError, match=words):
            check_outputs({"--out": str(out)}, {"--images": str(images), "--table": str(table)})
    with pytest.raises(UserError, match="is the input --table"):
        check_outputs({"--out": str(table)}, {"--table": str(table)})
    # relative and absolute spellings of one folder are the same folder
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="is the input"):
        check_outputs({"--out": "scans/../scans"}, {"--images": str(images)})
    # a symlink into the input folder is inside it too
    link = tmp_path / "link"
    link.symlink_to(images, target_is_directory=True)
    with pytest.raises(UserError, match="is inside the input folder"):
        check_outputs({"--out": str(link / "det")}, {"--images": str(images)})
    check_outputs({"--out": None}, {"--images": str(images)})  # an output not asked for


def test_safe_names_strip_the_common_root_and_never_escape(tmp_path):
    assert safe_names(["/data/in/a.png"]) == ["a.png"]
    assert safe_names(["/data/in/x/a.png", "/data/in/y/a.png"]) == ["x/a.png", "y/a.png"]
    assert safe_names(["/data/in/a.png", "/data/other/b.png"]) == ["in/a.png", "other/b.png"]
    # the same file name twice, and names differing only in case (one file on Windows)
    assert safe_names(["/d/a.png", "/d/A.png", "/d/a.png"]) == ["a.png", "A-2.png", "a-3.png"]
    for name in safe_names(["/x/../etc/passwd.png", "../up.png", "/a/b/c.png"]):
        assert not name.startswith(("/", "..")) and ".." not in name.split("/")


def test_windows_names_map_inside(tmp_path):
    """Drive letters and backslashes (as a Windows list file holds them) never leave the folder."""
    out = str(tmp_path / "out")
    for name in ("C:\\\\scans\\\\a.png", "C:/scans/a.png", "..\\\\..\\\\x.png", "/abs/y.png", "a:b.png"):
        target = inside(out, name)
        assert os.path.commonpath([target, out]) == out and ".." not in target
    assert inside(out, "sub/a.png") == os.path.join(out, "sub", "a.png")


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_staged_outputs_get_the_umask_permissions_not_the_temp_files_private_ones(tmp_path):
    # mkdtemp/mkstemp create 0700/0600 so that a staged output would be unreadable by the
    # user's group once renamed into place; the permissions must be those of a plain mkdir/open.
    import stat

    from medtfod.core import atomic
    umask = os.umask(0o022)
    os.umask(umask)
    with atomic.staged_directory(str(tmp_path / "out")) as stage:
        atomic.write_file(os.path.join(stage, "report.json"), "{}")
    assert stat.S_IMODE(os.stat(tmp_path / "out").st_mode) == 0o777 & ~umask
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "report.json").st_mode) == 0o666 & ~umask
