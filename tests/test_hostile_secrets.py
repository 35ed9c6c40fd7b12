"""Issue 26, item 1: a stream URL's password never leaves the process. A real loopback MJPEG stream
is opened through ``http://user:secret@...``; the password must appear in none of the outputs
(``--json`` lines, the CSV, stderr, ``/api/health``, ``/api/prediction``, the event stream), nor in
the error of a URL that does not answer, while the stream itself is still read with it."""

from __future__ import annotations

import json
import socket
import time

import pytest
from conftest import error_line, run_cli
from mjpeg_server import MjpegServer, free_port
from onnx_fixtures import make_colour_model

from benchmarks.live_client import ServeProcess, get
from edgeclf.redact import redact_url

SECRET = "s3cr3t-Pa55"


def with_password(url: str) -> str:
    return url.replace("http://", f"http://viewer:{SECRET}@", 1)


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory):
    return make_colour_model(tmp_path_factory.mktemp("secrets_model") / "colour.onnx")


@pytest.mark.parametrize("text, shown", [
    ("rtsp://user:secret@cam.local:554/live?ch=1", "rtsp://user:***@cam.local:554/live?ch=1"),
    ("RTSP://admin:p@ss@10.0.0.2/s", "RTSP://admin:***@10.0.0.2/s"),  # an unescaped "@" in the password
    ("rtspsrc location=rtsp://admin:secret@10.0.0.2/s latency=0 ! decodebin ! appsink",
     "rtspsrc location=rtsp://admin:***@10.0.0.2/s latency=0 ! decodebin ! appsink"),
    ("rtspsrc location=rtsp://cam/s user-id=admin user-pw=secret ! appsink",
     "rtspsrc location=rtsp://cam/s user-id=admin user-pw=*** ! appsink"),
    ("http://cam/video.cgi?user=admin&password=secret&ch=1", "http://cam/video.cgi?user=admin&password=***&ch=1"),
    ("rtsp://user@cam/live", "rtsp://user@cam/live"),  # no password: nothing to mask
    ("http://cam:8080/a@b", "http://cam:8080/a@b"),  # a port and an "@" in the path are not credentials
    ("photos/cat:1@2.jpg", "photos/cat:1@2.jpg"),
    ("rtsp:/user:secret@cam/live", "rtsp:/user:***@cam/live"),  # a URL that went through pathlib.Path
])
def test_redact_url(text, shown):
    assert redact_url(text) == shown


def test_predict_json_csv_and_stderr_do_not_show_the_password(colour_model, tmp_path):
    csv = tmp_path / "out.csv"
    with MjpegServer(fps=25) as camera:
        res = run_cli("predict", colour_model, with_password(camera.url), "--json", "--csv", csv,
                      "--max-frames", 5, "--timeout", 10, timeout=120)
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(records) == 5  # the stream was read, with the real URL
    assert records[0]["source"] == f"http://viewer:***@127.0.0.1:{camera.port}/stream.mjpg"
    for where, text in (("stdout", res.stdout), ("stderr", res.stderr), ("csv", csv.read_text())):
        assert SECRET not in text, where
    assert "viewer:***@" in csv.read_text()


def test_console_lines_do_not_show_the_password(colour_model):
    with MjpegServer(fps=25) as camera:
        res = run_cli("predict", colour_model, with_password(camera.url), "--max-frames", 3, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "viewer:***@" in res.stdout
    assert SECRET not in res.stdout + res.stderr


def _events(port: int, want: int = 3, timeout: float = 10.0) -> bytes:
    """The raw bytes of /events until ``want`` events came (or ``timeout``)."""
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        deadline = time.monotonic() + timeout
        while data.count(b"data: ") < want and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def test_live_server_does_not_show_the_password(colour_model):
    camera = MjpegServer(fps=25).start()
    try:
        with ServeProcess(colour_model, with_password(camera.url), "--timeout", "10") as sp:
            health = sp.wait_frames(3)
            assert "viewer:***@" in json.dumps(health)
            pages = {path: get(sp.local + path)[2] for path in ("/api/health", "/api/prediction", "/")}
            events = _events(sp.port)
            assert events.count(b"data: ") >= 3
            assert sp.stop() == 130
        for where, body in {**pages, "/events": events}.items():
            assert SECRET.encode() not in body, where
        assert SECRET not in sp.stderr + sp.stdout
    finally:
        camera.stop()


def test_a_url_that_does_not_answer_fails_without_the_password(colour_model):
    url = f"http://viewer:{SECRET}@127.0.0.1:{free_port()}/stream.mjpg"
    res = run_cli("predict", colour_model, url, "--json", "--timeout", 2, timeout=120)
    line = error_line(res)
    assert "cannot open stream" in line and "viewer:***@" in line
    assert SECRET not in res.stdout + res.stderr


def test_bench_refusing_a_stream_does_not_show_the_password(colour_model):
    """``bench --source`` takes files and folders: a URL is refused, masked."""
    res = run_cli("bench", colour_model, "--source", f"rtsp://viewer:{SECRET}@127.0.0.1:1/live", "--runs", 1, timeout=120)
    line = error_line(res)
    assert "viewer:***@" in line and SECRET not in res.stdout + res.stderr
