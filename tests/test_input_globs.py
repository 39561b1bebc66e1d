"""A config whose TFRecord globs match nothing is refused before anything is written (issue 21)."""
import os
import subprocess
import sys

import pytest

from medtfod.cli import main
from medtfod.core.resources import resource_path
from medtfod.odapi.protos import read_pipeline_config, to_text


def _config(tmp_path, train, evals):
    """A pipeline config (the SSD template) reading `train` and `evals` (lists of globs)."""
    config = read_pipeline_config(resource_path("pipeline_configs", "ssd_mobilenet_v2_fpnlite_320.config"))
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "label_map.pbtxt").write_text("item { id: 1 name: 'nodule' }\n")
    (data / "train.record").write_bytes(b"")
    (data / "val.record").write_bytes(b"")
    for reader, paths in [(config.train_input_reader, train), (config.eval_input_reader[0], evals)]:
        reader.label_map_path = str(data / "label_map.pbtxt")
        del reader.tf_record_input_reader.input_path[:]
        reader.tf_record_input_reader.input_path.extend(paths)
    path = tmp_path / "pipeline.config"
    path.write_text(to_text(config))
    return str(path), str(data)


def _error(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_train_glob_matching_nothing_writes_nothing(tmp_path, capsys):
    config, data = _config(tmp_path, [os.path.join(str(tmp_path), "data", "train.record"),
                                      os.path.join(str(tmp_path), "data", "trian-*.record")], [])
    model = tmp_path / "model"
    assert main(["train", "--config", config, "--model-dir", str(model), "-q"]) == 1
    err = _error(capsys)
    assert config in err and "train_input_reader.tf_record_input_reader.input_path" in err and "trian-*.record" in err
    assert not model.exists()


def test_train_eval_glob_checked_with_eval_every(tmp_path, capsys):
    config, data = _config(tmp_path, [os.path.join(data_dir(tmp_path), "train.record")],
                           [os.path.join(data_dir(tmp_path), "vla.record")])
    model = tmp_path / "model"
    model.mkdir()
    assert main(["train", "--config", config, "--model-dir", str(model), "--eval-every", "100", "-q"]) == 1
    err = _error(capsys)
    assert "eval_input_reader.tf_record_input_reader.input_path" in err and "vla.record" in err
    assert os.listdir(model) == []


def test_relative_glob_resolved_from_working_directory(tmp_path, capsys, monkeypatch):
    config, data = _config(tmp_path, ["data/nothing-*.record"], [])
    monkeypatch.chdir(tmp_path / "data")  # data/nothing-*.record is not there from here
    assert main(["train", "--config", config, "--model-dir", str(tmp_path / "model"), "-q"]) == 1
    err = _error(capsys)
    assert "data/nothing-*.record" in err and "working directory" in err and str(tmp_path / "data") in err
    assert not (tmp_path / "model").exists()


def test_eval_glob_matching_nothing(tmp_path, capsys):
    config, data = _config(tmp_path, [os.path.join(data_dir(tmp_path), "train.record")],
                           [os.path.join(data_dir(tmp_path), "test.record")])
    model = tmp_path / "model"
    model.mkdir()
    assert main(["eval", "--config", config, "--model-dir", str(model), "-q"]) == 1
    err = _error(capsys)
    assert config in err and "eval_input_reader.tf_record_input_reader.input_path" in err and "test.record" in err
    assert os.listdir(model) == []


def test_matching_globs_pass(tmp_path):
    from medtfod.odapi.checks import check_input_files
    data = data_dir(tmp_path)
    config, _ = _config(tmp_path, [os.path.join(data, "train*")], [os.path.join(data, "val.record")])
    check_input_files(config, train=True, evaluation=True)


def test_check_does_not_import_tensorflow(tmp_path):
    config, _ = _config(tmp_path, [str(tmp_path / "missing-*.record")], [])
    code = ("import sys\nfrom medtfod.odapi.checks import check_input_files\nfrom medtfod.core.errors import UserError\n"
            f"try:\n    check_input_files({config!r}, train=True, evaluation=False)\nexcept UserError:\n    pass\n"
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "False", out.stderr


def data_dir(tmp_path):
    return os.path.join(str(tmp_path), "data")


@pytest.fixture(autouse=True)
def _no_tensorflow_needed(monkeypatch):
    """The check comes first: a test that reached TensorFlow would be slow, so fail it instead."""
    import medtfod.odapi.evaluate
    import medtfod.odapi.runtime
    import medtfod.odapi.train

    def refuse(*args, **kwargs):
        raise AssertionError("reached TensorFlow: the input check did not run first")
    for module in (medtfod.odapi.runtime, medtfod.odapi.train, medtfod.odapi.evaluate):
        monkeypatch.setattr(module, "import_tensorflow", refuse)
