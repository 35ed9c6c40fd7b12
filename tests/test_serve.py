"""``edgeclf predict --serve``: the live view's server, endpoints, viewers and shutdown, over real
sockets, with a real onnxruntime model classifying a real (generated) video."""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import error_line, run_cli
from live_helpers import (
    EventsViewer,
    MjpegViewer,
    ServeProcess,
    get,
    get_json,
    make_colour_video,
    port_is_free,
    raw_request,
    stalled_viewer,
)
from onnx_fixtures import COLOURS, make_colour_model, solid

from edgeclf.errors import EdgeclfError
from edgeclf.model.classifier import Prediction
from edgeclf.serve.address import parse_address
from edgeclf.serve.server import LiveServer
from edgeclf.sources.open import open_source


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory) -> Path:
    return make_colour_model(tmp_path_factory.mktemp("serve_model") / "colour.onnx")


@pytest.fixture(scope="module")
def colour_video(tmp_path_factory) -> Path:
    """3 s at 20 fps: red, green, blue, half a second each, twice."""
    return make_colour_video(tmp_path_factory.mktemp("serve_video") / "colours.mp4", frames=60, fps=20, hold=10)


# ------------------------------------------------------------------------------------------ address
@pytest.mark.parametrize("spec, expected", [
    ("8080", ("127.0.0.1", 8080)),
    (":8080", ("127.0.0.1", 8080)),
    ("0.0.0.0:8080", ("0.0.0.0", 8080)),
    ("localhost:0", ("localhost", 0)),
    ("[::1]:9000", ("::1", 9000)),
])
def test_parse_address(spec, expected):
    assert parse_address(spec) == expected


@pytest.mark.parametrize("spec", ["", "abc", "host:", "127.0.0.1:70000", "::1:80", "80a"])
def test_parse_address_rejects(spec):
    with pytest.raises(EdgeclfError, match=r"expected \[HOST:\]PORT"):
        parse_address(spec)


# ------------------------------------------------------------------------------- in-process server
def _publisher(server: LiveServer, stop: threading.Event, fps: float = 50.0) -> threading.Thread:
    """Publishes a changing frame and prediction ``fps`` times a second, as the predict loop does."""

    def run() -> None:
        i = 0
        while not stop.is_set():
            colour = COLOURS[(i // 10) % 3]
            probs = np.array([0.1, 0.1, 0.1])
            probs[COLOURS.index(colour)] = 0.8
            server.publish(solid(colour, 120, 160), Prediction.from_probs(probs, COLOURS), "test", i, 1.0)
            i += 1
            stop.wait(1 / fps)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_endpoints_before_the_first_frame():
    with LiveServer("127.0.0.1:0", info={"model": "m.onnx"}, log=lambda m: None) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert get(base + "/api/prediction")[0] == 503
        assert get(base + "/snapshot.jpg")[0] == 503
        h = get_json(base + "/api/health")
        assert h["frames"] == 0 and h["model"] == "m.onnx" and h["last_frame_age_s"] is None


def test_stalled_viewer_is_dropped_and_does_not_block_others():
    logs: list[str] = []
    stop = threading.Event()
    server = LiveServer("127.0.0.1:0", log=logs.append, send_timeout=1.5, stream_fps=25).start()
    try:
        _publisher(server, stop)
        stalled = [stalled_viewer(server.port) for _ in range(3)]
        idle = socket.create_connection(("127.0.0.1", server.port))  # connects, never sends a request
        good = MjpegViewer(server.port)
        slow = MjpegViewer(server.port, delay=0.2)  # reads 5 frames a second of 25
        good.start(), slow.start()
        time.sleep(4.0)  # the stalled viewers fill their buffers and time out meanwhile
        t = time.monotonic() - 2.0
        assert good.frames_since(t) >= 20, "a stalled viewer slowed a reading one"
        assert 4 <= slow.frames_since(t) <= 13, "a slow viewer must get fewer frames, not a backlog"
        assert good.error is None and slow.error is None
        dropped = [m for m in logs if "stopped reading" in m]
        assert len(dropped) == 3, logs
        assert any("timed out" in m for m in logs), logs
        assert server.health()["viewers"] == {"stream": 2, "events": 0}
        img = cv2.imdecode(np.frombuffer(good.last_jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[1] == 320  # annotate scales 160 px frames up to 320
        for s in (*stalled, idle):
            s.close()
        good.close(), slow.close()
    finally:
        stop.set()
        server.close()
    assert port_is_free(server.port)


def test_malformed_and_unknown_requests_are_answered_and_logged():
    logs: list[str] = []
    with LiveServer("127.0.0.1:0", log=logs.append) as server:
        port = server.port
        assert b"400" in raw_request(port, b"GARBAGE\r\n\r\n")  # no version: an HTTP/0.9 answer, body only
        assert b"400" in raw_request(port, b"GET / NOT-HTTP\r\n\r\n")
        many = b"".join(b"X-%d: 1\r\n" % i for i in range(120))
        assert raw_request(port, b"GET / HTTP/1.1\r\n" + many + b"\r\n").startswith(b"HTTP/1.0 431")
        assert raw_request(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)))  # a TLS hello
        assert b"505" in raw_request(port, b"GET / HTTP/9.9\r\n\r\n")
        assert raw_request(port, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 414")
        assert raw_request(port, b"BREW /pot HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 501")
        assert raw_request(port, b"POST /api/health HTTP/1.1\r\nContent-Length: 0\r\n\r\n").startswith(b"HTTP/1.0 405")
        status, _, body = get(f"http://127.0.0.1:{port}/nothing/here")
        assert status == 404 and b"The live view is at /" in body
        with socket.create_connection(("127.0.0.1", port)) as s:  # a client that hangs up mid-request
            s.sendall(b"GET /api/hea")
        assert get(f"http://127.0.0.1:{port}/api/health")[0] == 200  # still serving
    text = "\n".join(logs)
    for code in ("400", "431", "505", "414", "501", "405", "404"):
        assert re.search(rf"\b{code}\b", text), (code, text)
    assert "/nothing/here" in text


def test_close_ends_streams_and_releases_the_port():
    stop = threading.Event()
    server = LiveServer("127.0.0.1:0", log=lambda m: None).start()
    _publisher(server, stop)
    viewer, events = MjpegViewer(server.port), EventsViewer(server.port)
    viewer.start(), events.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    server.close()
    stop.set()
    viewer.join(5), events.join(5)
    assert not viewer.is_alive() and not events.is_alive(), "streams must end when the server closes"
    assert time.monotonic() - t0 < 5
    assert viewer.times and events.events
    assert port_is_free(server.port)


def test_bind_errors_are_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(EdgeclfError, match=rf"--serve 127.0.0.1:{port}: cannot listen on 127.0.0.1:{port} \(Address already in use\)"):
            LiveServer(f"127.0.0.1:{port}")
    with pytest.raises(EdgeclfError, match="cannot resolve host"):
        LiveServer("no-such-host.invalid:0")


# ---------------------------------------------------------------------------------- video sources
def test_video_loop_plays_the_file_again(colour_video):
    with open_source(colour_video, loop=True, max_frames=150) as src:
        frames = [f.index for f in src]
    assert len(frames) == 150
    assert frames[:60] == list(range(60)) and frames[60:120] == list(range(60))


def test_realtime_video_plays_at_its_frame_rate_and_skips_for_a_slow_reader(colour_video):
    with open_source(colour_video, realtime=True) as src:
        assert src.live and src.fps == pytest.approx(20)
        t0 = time.monotonic()
        got = 0
        for frame in src:
            got += 1
            time.sleep(0.1)  # a model twice as slow as the video
        took = time.monotonic() - t0
        assert src.state == "ended"
    assert 2.0 < took < 6.0, f"60 frames at 20 fps should take about 3 s, took {took:.2f}"
    assert 15 <= got <= 45 and src.dropped >= 15, (got, src.dropped)  # the present, not a backlog


def test_realtime_loop_keeps_going(colour_video):
    with open_source(colour_video, realtime=True, loop=True, max_frames=70) as src:
        indices = [f.index for f in src]
        assert src.state == "connected"
    assert len(indices) == 70 and indices[-1] >= 69  # past the 60 frames of one pass


# --------------------------------------------------------------------------------- the command
def test_serve_command_end_to_end(colour_model, colour_video):
    with ServeProcess(colour_model, colour_video, "--loop") as sp:
        assert sp.url.startswith("http://127.0.0.1:")
        status, headers, page = get(sp.local + "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        for element in (b'id="video"', b'src="/stream.mjpg"', b'id="label"', b'id="bars"', b'id="fps"', b'id="provider"', b'EventSource("/events")'):
            assert element in page
        assert not re.search(rb"(src|href)=\"(https?:)?//", page), "the page must fetch nothing from elsewhere"

        h1 = sp.wait_frames(10)
        assert h1["model"] == "colour.onnx" and h1["providers"] == ["cpu"] and h1["source_kind"] == "video"
        assert h1["source_state"] == "connected" and h1["classes"] == list(COLOURS)
        time.sleep(2.0)
        h2 = sp.health()
        rate = (h2["frames"] - h1["frames"]) / (h2["uptime_s"] - h1["uptime_s"])
        assert 10 < rate < 30, f"a 20 fps video must play at about 20 frames/s while serving, got {rate:.1f}"
        sp.wait_frames(75)  # --loop: past the file's 60 frames, still going
        assert sp.health()["source_state"] == "connected"

        pred = get_json(sp.local + "/api/prediction")
        assert pred["label"] in COLOURS and pred["score"] > 0.9 and pred["source"] == str(colour_video)
        assert set(pred["probs"]) == set(COLOURS) and pred["age_s"] < 1.0

        status, headers, jpeg = get(sp.local + "/snapshot.jpg")
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (240, 320, 3)

        viewer, events = MjpegViewer(sp.port), EventsViewer(sp.port)
        viewer.start(), events.start()
        time.sleep(1.5)
        assert len(viewer.times) >= 10
        assert len(events.events) >= 5 and events.events[-1]["prediction"]["label"] in COLOURS
        assert events.events[-1]["frames"] > events.events[0]["frames"]
        labels = {e["prediction"]["label"] for e in events.events}
        assert len(labels) >= 2, "the colour changes every 0.5 s, so should the label"
        viewer.close(), events.close()
        assert sp.stdout == ""  # per-frame lines only with --json

        rc = sp.stop(signal.SIGINT)
    assert rc == 130
    assert "Traceback" not in sp.stderr
    assert re.search(r"\d+ processed, 0 skipped\b.* \[interrupted\]", sp.stderr)  # "1 older frames dropped" may come between
    assert port_is_free(sp.port), "Ctrl-C must release the port"


def test_serve_sigterm_stops_cleanly_and_keeps_the_csv(colour_model, colour_video, tmp_path):
    csv = tmp_path / "out.csv"
    with ServeProcess(colour_model, colour_video, "--loop", "--csv", csv, "--json") as sp:
        sp.wait_frames(5)
        rc = sp.stop(signal.SIGTERM)
    assert rc == 130 and "Traceback" not in sp.stderr
    rows = csv.read_text().splitlines()
    assert len(rows) >= 6 and rows[0].startswith("source,frame,label")
    assert len(sp.stdout.splitlines()) == len(rows) - 1  # --json lines and CSV rows agree
    assert not list(tmp_path.glob("*.tmp*")), "no half-written file left behind"
    assert port_is_free(sp.port)


def test_serve_keeps_the_last_result_when_the_source_ends(colour_model, tmp_path):
    image = tmp_path / "green.png"
    cv2.imwrite(str(image), solid("green"))
    with ServeProcess(colour_model, image) as sp:
        deadline = time.monotonic() + 20
        while sp.health()["source_state"] != "ended" and time.monotonic() < deadline:
            time.sleep(0.1)
        h = sp.health()
        assert h["source_state"] == "ended" and h["frames"] == 1
        assert get_json(sp.local + "/api/prediction")["label"] == "green"
        viewer = MjpegViewer(sp.port)  # a viewer arriving after the end still sees the last frame
        viewer.start()
        deadline = time.monotonic() + 5
        while not viewer.times and time.monotonic() < deadline:
            time.sleep(0.05)
        assert viewer.times, "no frame for a viewer that came after the source ended"
        viewer.close()
        assert "no more frames; still serving" in sp.stderr
        assert sp.stop() == 130


def test_serve_on_all_interfaces_needs_the_token(colour_model, colour_video, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECLF_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("EDGECLF_TOKEN", raising=False)
    with ServeProcess(colour_model, colour_video, "--loop", address="0.0.0.0:0") as sp:
        token = (tmp_path / "token").read_text().strip()
        assert f"needs the API token, which is in the file {tmp_path / 'token'}" in sp.stderr
        assert token not in sp.stderr
        assert get(sp.local + "/api/health")[0] == 401
        req = urllib.request.Request(sp.local + "/api/health", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as r:  # reachable on loopback too, with the token
            assert json.loads(r.read())["status"] == "ok"
        assert sp.stop() == 130
    with ServeProcess(colour_model, colour_video, "--loop") as sp:
        assert "token" not in sp.stderr and sp.health()["status"] == "ok"
        sp.stop()


def test_serve_errors_are_one_line(colour_model, colour_video):
    line = error_line(run_cli("predict", colour_model, colour_video, "--serve", "localhost:http"))
    assert "--serve 'localhost:http': expected [HOST:]PORT" in line
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = error_line(run_cli("predict", colour_model, colour_video, "--serve", f"127.0.0.1:{port}"))
    assert f"cannot listen on 127.0.0.1:{port} (Address already in use)" in line


def test_loop_warns_for_images(colour_model, tmp_path):
    image = tmp_path / "red.png"
    cv2.imwrite(str(image), solid("red"))
    res = run_cli("predict", colour_model, image, "--loop", "--json")
    assert res.returncode == 0, res.stderr
    assert "warning: --loop applies to video files; ignored" in res.stderr
    assert json.loads(res.stdout)["label"] == "red"


def test_a_frame_that_cannot_be_drawn_is_logged_and_the_view_goes_on():
    logs: list[str] = []
    with LiveServer("127.0.0.1:0", log=logs.append) as server:
        viewer = MjpegViewer(server.port)
        viewer.start()
        pred = Prediction.from_probs(np.array([0.2, 0.7, 0.1]), COLOURS)
        server.publish(np.zeros((0, 0, 3), np.uint8), pred)
        deadline = time.monotonic() + 5
        while not logs and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any("live view error, still serving" in m for m in logs), logs
        server.publish(solid("green"), pred)
        while not viewer.times and time.monotonic() < deadline:
            time.sleep(0.05)
        assert viewer.times, "the stream stopped after one bad frame"
        viewer.close()


def test_health_follows_a_network_stream_that_drops_and_comes_back(colour_model):
    from mjpeg_server import MjpegServer

    camera = MjpegServer(fps=25).start()
    try:
        with ServeProcess(colour_model, camera.url, "--timeout", "5") as sp:
            assert sp.wait_frames(10)["source_state"] == "connected"
            camera.stop()
            deadline = time.monotonic() + 10
            while sp.health()["source_state"] != "reconnecting" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sp.health()["source_state"] == "reconnecting"
            frames = sp.health()["frames"]
            camera.start()
            sp.wait_frames(frames + 10, timeout=20)
            assert sp.health()["source_state"] == "connected"
            assert "reconnected" in sp.stderr
            assert sp.stop() == 130
    finally:
        camera.stop()
