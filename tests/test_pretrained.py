"""Zoo checkpoints: the real download code (against a local server), offline failure, import."""
import contextlib
import http.server
import io
import os
import tarfile
import threading
import urllib.error

import pytest

from medtfod.training import pretrained
from medtfod.cli import main
from medtfod.core.errors import UserError


def zoo_tarball(name="ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8", extra=None):
    """A .tar.gz in the zoo layout: <name>/checkpoint/ckpt-0.{index,data-...}, <name>/pipeline.config."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for member, data in [(f"{name}/checkpoint/ckpt-0.index", b"index"),
                             (f"{name}/checkpoint/ckpt-0.data-00000-of-00001", b"data" * 100),
                             (f"{name}/checkpoint/checkpoint", b'model_checkpoint_path: "ckpt-0"\n'),
                             (f"{name}/pipeline.config", b"model {}\n")] + (extra or []):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_import_tarball(tmp_path, capsys):
    archive = tmp_path / "x.tar.gz"
    archive.write_bytes(zoo_tarball())
    assert main(["pretrained", "import", str(archive), "--workspace", str(tmp_path / "ws")]) == 0
    folder = tmp_path / "ws" / "pre-trained-models" / "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8"
    assert (folder / "checkpoint" / "ckpt-0.index").read_bytes() == b"index"
    assert "--checkpoint " + str(folder / "checkpoint" / "ckpt-0") in capsys.readouterr().out


def test_import_rejects_unsafe_and_wrong_archives(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(zoo_tarball(extra=[("../escape.txt", b"x")]))
    with pytest.raises(UserError, match="cannot unpack safely|one top-level folder"):
        pretrained.import_archive(str(bad), str(tmp_path / "ws"))
    assert not (tmp_path / "escape.txt").exists()
    notzoo = tmp_path / "n.tar.gz"
    with tarfile.open(notzoo, "w:gz") as tar:
        info = tarfile.TarInfo("model/readme.txt")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(UserError, match="not a TF2 zoo checkpoint"):
        pretrained.import_archive(str(notzoo), str(tmp_path / "ws"))
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(UserError, match="not a readable"):
        pretrained.import_archive(str(tmp_path / "junk.tar.gz"), str(tmp_path / "ws"))


def test_offline_get_fails_fast_with_instructions(tmp_path, monkeypatch, capsys):
    def offline(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(pretrained.urllib.request, "urlopen", offline)
    assert main(["pretrained", "get", "ssd_mobilenet_v2_fpnlite_320", "--workspace", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "download.tensorflow.org/models/object_detection/tf2/20200711/ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8.tar.gz" in err
    assert "medtfod pretrained import ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8.tar.gz" in err
    assert not (tmp_path / "pre-trained-models").exists()  # nothing left behind


@contextlib.contextmanager
def zoo_server(body: bytes):
    """A zoo stand-in on localhost serving `body` for any path; yields its URL template."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/{{name}}.tar.gz"
    finally:
        server.shutdown()
        server.server_close()


def test_get_downloads_from_a_server(tmp_path, monkeypatch):
    """The real download code, pointed at a zoo stand-in on localhost."""
    with zoo_server(zoo_tarball("faster_rcnn_resnet50_v1_640x640_coco17_tpu-8")) as url:
        monkeypatch.setattr(pretrained, "ZOO_URL", url)
        folder = pretrained.download("faster_rcnn_resnet50_v1_640", str(tmp_path), quiet=True)
    assert os.path.isfile(pretrained.checkpoint_prefix(folder) + ".index")
    assert not [f for f in os.listdir(tmp_path / "pre-trained-models") if f.endswith(".part")]


def test_unknown_model():
    with pytest.raises(UserError, match="no zoo checkpoint"):
        pretrained.zoo_name("yolo")


def test_retinanet_and_centernet_map_to_their_zoo_checkpoints(monkeypatch):
    monkeypatch.delenv(pretrained.MIRROR_ENV, raising=False)
    assert pretrained.zoo_name("retinanet_resnet50_v1_fpn_640") == "ssd_resnet50_v1_fpn_640x640_coco17_tpu-8"
    assert pretrained.zoo_name("centernet_resnet50_v1_fpn_512") == "centernet_resnet50_v1_fpn_512x512_coco17_tpu-8"
    assert pretrained.zoo_url("centernet_resnet50_v1_fpn_512x512_coco17_tpu-8") == \
        "https://download.tensorflow.org/models/object_detection/tf2/20200711/" \
        "centernet_resnet50_v1_fpn_512x512_coco17_tpu-8.tar.gz"
