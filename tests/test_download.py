"""`jaxstyle weights download` end to end against an HTTP server on 127.0.0.1."""

import hashlib
import http.server
import threading
import time

import pytest
from conftest import DATA

from jaxstyle import WeightsError, load_weights
from jaxstyle.cli import main
from jaxstyle.download import download_source

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
