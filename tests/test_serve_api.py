"""The live server's HTTP API (``edgeclf.serve``): the token, ``POST /api/classify``, ``/api/state``,
``/healthz`` and ``/metrics``, over real sockets, with a real onnxruntime model classifying real
(generated) images. Exposed servers bind 0.0.0.0 and are reached on 127.0.0.1 (an IP Host header
is always allowed)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import struct
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from live_helpers import ServeProcess, make_colour_video, raw_request
from onnx_fixtures import COLOURS, make_colour_model, solid
from prometheus_client.parser import text_string_to_metric_families

import edgeclf.serve.handler as handler_module
from edgeclf.errors import EdgeclfError
from edgeclf.model.classifier import Classifier, Prediction
from edgeclf.predict.options import Result
from edgeclf.serve.api import RUNNING, WAITING, ClassifyApi
from edgeclf.serve.auth import resolve_token
from edgeclf.serve.metrics import ServiceMetrics
from edgeclf.serve.server import LiveServer
from edgeclf.sinks.live import LiveSink
from edgeclf.sources.base import Frame


@pytest.fixture(scope="module")
def clf(tmp_path_factory) -> Classifier:
    return Classifier(make_colour_model(tmp_path_factory.mktemp("api_model") / "colour.onnx"), provider="cpu", threads=1)


@pytest.fixture
def state_dir(tmp_path, monkeypatch) -> Path:
    """A state directory of the test's own, and no token from the environment."""
    monkeypatch.setenv("EDGECLF_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("EDGECLF_TOKEN", raising=False)
    return tmp_path / "state"


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request to 127.0.0.1:``port``; redirects not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def publish(server: LiveServer, colour: str, i: int = 0) -> None:
    probs = np.full(3, 0.1)
    probs[COLOURS.index(colour)] = 0.8
    server.publish(solid(colour), Prediction.from_probs(probs, COLOURS), "cam", i, 2.0)


# ---------------------------------------------------------------------------------------- the token
def test_loopback_is_open_without_a_token(state_dir):
    with LiveServer("127.0.0.1:0", log=lambda m: None) as server:
        assert not server.auth.required and server.token_file is None
        assert request(server.port, "GET", "/api/health")[0] == 200
        assert request(server.port, "GET", "/")[0] == 200
    assert not state_dir.exists()  # nothing written for a server that needs no token


def test_exposed_server_requires_the_token(state_dir):
    logs: list[str] = []
    with LiveServer("0.0.0.0:0", log=logs.append) as server:
        port = server.port
        assert server.exposed and server.token_file == state_dir / "token"
        token = server.token_file.read_text().strip()
        assert stat.S_IMODE(server.token_file.stat().st_mode) == 0o600 and len(token) >= 40
        for path in ("/", "/api/health", "/api/prediction", "/api/state", "/metrics", "/snapshot.jpg", "/events"):
            status, headers, body = request(port, "GET", path)
            assert status == 401, path
            assert headers["www-authenticate"].startswith("Bearer") and "error" in json.loads(body)
        assert request(port, "GET", "/api/health", headers=bearer("wrong" + token))[0] == 401
        assert request(port, "POST", "/api/classify", b"x", headers=bearer("nope"))[0] == 401
        assert request(port, "GET", "/api/health", headers=bearer(token))[0] == 200
        assert request(port, "GET", "/api/health", headers={"Cookie": f"other=1; edgeclf_token={token}"})[0] == 200
        assert request(port, "GET", "/healthz")[0] == 200  # probes need no token
        assert request(port, "GET", "/favicon.ico")[0] == 204
    text = "\n".join(logs)
    assert "401" in text and token not in text and "nope" not in text


def test_token_in_the_address_sets_the_cookie_and_redirects(state_dir):
    logs: list[str] = []
    with LiveServer("0.0.0.0:0", log=logs.append) as server:
        token = server.token_file.read_text().strip()
        status, headers, _ = request(server.port, "GET", f"/?token={token}")
        assert status == 303 and headers["location"] == "/"
        cookie = headers["set-cookie"]
        assert cookie.startswith(f"edgeclf_token={token};")
        assert all(attr in cookie for attr in ("HttpOnly", "SameSite=Strict", "Path=/"))
        assert headers["referrer-policy"] == "no-referrer"
        page = request(server.port, "GET", "/", headers={"Cookie": cookie.split(";")[0]})
        assert page[0] == 200 and b"<html" in page[2].lower()
        status, _, _ = request(server.port, "GET", "/?token=wrong-secret-value")
        assert status == 401
    text = "\n".join(logs)
    assert "wrong-secret-value" not in text and token not in text and "<redacted>" in text


def test_explicit_token_is_required_on_loopback_too(state_dir):
    with LiveServer("127.0.0.1:0", token="s3cret-token", log=lambda m: None) as server:
        assert server.token_file is None
        assert request(server.port, "GET", "/api/health")[0] == 401
        assert request(server.port, "GET", "/api/health", headers=bearer("s3cret-token"))[0] == 200
    with pytest.raises(EdgeclfError, match="token must be"):
        LiveServer("127.0.0.1:0", token="has space")


def test_token_sources_file_reuse_and_environment(state_dir, monkeypatch):
    token, path = resolve_token(None, state_dir)
    assert path == state_dir / "token" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_token(None, state_dir) == (token, path)  # reused
    assert resolve_token("explicit", state_dir) == ("explicit", None)
    monkeypatch.setenv("EDGECLF_TOKEN", "from-env")
    assert resolve_token(None, state_dir) == ("from-env", None)
    assert resolve_token("explicit", state_dir) == ("explicit", None)


def test_token_file_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "token"
    path.write_text("abc\n")
    os.chmod(path, 0o640)
    with pytest.raises(EdgeclfError, match=r"token: the API token file is readable by other users .*chmod 600") as e:
        resolve_token(None, tmp_path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


# ------------------------------------------------------------------------------------ /api/classify
@pytest.fixture
def api_server(clf):
    with LiveServer("127.0.0.1:0", classifier=clf, log=lambda m: None, max_upload_bytes=1 << 20) as server:
        yield server


def classify(port: int, data: bytes, query: str = "") -> tuple[int, dict]:
    status, _, body = request(port, "POST", "/api/classify" + query, data, {"Content-Type": "image/png"})
    return status, json.loads(body)


@pytest.mark.parametrize("colour", COLOURS)
def test_classify_an_uploaded_image(api_server, colour):
    status, rec = classify(api_server.port, png(solid(colour, 50, 70)))
    assert status == 200, rec
    assert rec["label"] == colour and rec["unknown"] is False and 0.33 < rec["score"] <= 1
    assert set(rec["probs"]) == set(COLOURS) and rec["latency_ms"] > 0
    assert [t["label"] for t in rec["top"]][0] == colour and len(rec["top"]) == 3
    assert rec["image"] == {"width": 70, "height": 50}


def test_classify_top_and_jpeg(api_server):
    ok, jpg = cv2.imencode(".jpg", solid("blue"))
    status, rec = classify(api_server.port, jpg.tobytes(), "?top=1")
    assert status == 200 and rec["label"] == "blue" and len(rec["top"]) == 1
    for bad in ("0", "4", "x", "-1", "%C2%B2"):  # "²": a digit to str.isdigit, not to int()
        status, rec = classify(api_server.port, jpg.tobytes(), f"?top={bad}")
        assert status == 400 and "from 1 to 3" in rec["error"]


def test_classify_refuses_bad_uploads(api_server):
    port = api_server.port
    status, rec = classify(port, b"this is not an image at all")
    assert status == 400 and rec["error"].startswith("not a usable image")
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    iend = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    status, rec = classify(port, bomb + iend)
    assert status == 400 and "megapixels" in rec["error"]
    answer = raw_request(port, b"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 411") and b"Content-Length required" in answer
    status, _, _ = request(port, "GET", "/api/classify")
    assert status == 405
    assert request(port, "PUT", "/api/state")[1]["allow"] == "GET, HEAD"
    assert request(port, "GET", "/api/classify")[1]["allow"] == "POST"


def test_oversized_upload_is_refused_before_its_body(api_server):
    """413 from the headers alone: the client sent none of its 1 GB."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", api_server.port), timeout=5) as s:
        s.sendall(b"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 413") and time.monotonic() - t0 < 2
    assert b"above the limit of 1048576 bytes" in answer


def test_slow_upload_times_out(clf, monkeypatch):
    monkeypatch.setattr(handler_module, "UPLOAD_READ_S", 0.5)
    with LiveServer("127.0.0.1:0", classifier=clf, log=lambda m: None) as server:
        answer = raw_request(server.port, b"POST /api/classify HTTP/1.1\r\nContent-Length: 100\r\n\r\n0123456789")
    assert answer.startswith(b"HTTP/1.0 408")


def test_classify_without_a_model_and_admission():
    with LiveServer("127.0.0.1:0", log=lambda m: None) as server:
        status, rec = classify(server.port, png(solid("red")))
        assert status == 404 and "no model" in rec["error"]
    api = ClassifyApi(None)
    assert all(api.admit() for _ in range(RUNNING + WAITING)) and not api.admit()  # the rest: 503 busy
    api.leave()
    assert api.admit()


def test_concurrent_uploads_all_answered(api_server):
    data = png(solid("green", 200, 200))
    results: list[int] = []

    def one() -> None:
        results.append(classify(api_server.port, data)[0])

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(results) == 12 and set(results) <= {200, 503} and 200 in results


# -------------------------------------------------------------------------------- state and health
def test_state_without_a_service(state_dir):
    with LiveServer("127.0.0.1:0", log=lambda m: None, source_name="cam") as server:
        assert request(server.port, "GET", "/api/state")[0] == 404
        publish(server, "green")
        status, _, body = request(server.port, "GET", "/api/state")
        state = json.loads(body)["sources"]["cam"]
        assert status == 200 and state["label"] == "green" and state["source_state"] == "connected"
        assert state["frames"] == 1 and state["unknown"] is False


def test_state_from_the_service():
    states = {"sources": {"door": {"state": "open"}, "yard": {"state": "empty"}}}
    with LiveServer("127.0.0.1:0", log=lambda m: None, states=lambda: states) as server:
        status, _, body = request(server.port, "GET", "/api/state")
        assert status == 200 and json.loads(body) == states


def test_healthz_reports_a_stalled_or_lost_source():
    source_state = ["connected"]
    with LiveServer("127.0.0.1:0", log=lambda m: None, frame_timeout=0.5, source_state=lambda: source_state[0]) as server:
        publish(server, "red")
        status, _, body = request(server.port, "GET", "/healthz")
        assert status == 200 and json.loads(body) == {"status": "ok"}
        time.sleep(0.7)
        status, _, body = request(server.port, "GET", "/healthz")
        assert status == 503 and "no frame for" in json.loads(body)["reasons"][0]
        publish(server, "red")
        source_state[0] = "reconnecting"
        status, _, body = request(server.port, "GET", "/healthz")
        assert status == 503 and json.loads(body) == {"status": "unhealthy", "reasons": ["source source is reconnecting"]}
        server.mark_ended()
        assert request(server.port, "GET", "/healthz")[0] == 200  # an ended file source is done, not broken
        assert request(server.port, "GET", "/api/health")[0] == 200  # unchanged
    with LiveServer("127.0.0.1:0", log=lambda m: None, health_check=lambda: ["mqtt: disconnected"]) as server:
        status, _, body = request(server.port, "HEAD", "/healthz")
        assert status == 503 and body == b""
        assert json.loads(request(server.port, "GET", "/healthz")[2])["reasons"] == ["mqtt: disconnected"]


# ----------------------------------------------------------------------------------------- metrics
def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """/metrics as {sample name: {sorted label items: value}}."""
    status, headers, body = request(port, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def test_metrics_count_what_the_live_sink_publishes():
    metrics = ServiceMetrics(model="colour.onnx")
    with LiveServer("127.0.0.1:0", log=lambda m: None, metrics=metrics) as server:
        sink = LiveSink(server, numbered=True, metrics=metrics, name="video")
        n = 17
        for i in range(n):
            frame = Frame(solid("red"), "/secret/path/clip.mp4", i, time.monotonic())
            probs = np.array([0.8, 0.1, 0.1])
            sink.write(Result(frame, Prediction.from_probs(probs, COLOURS), 4.0 + i))
        m = scrape(server.port)
    src = (("source", "video"),)
    assert m["edgeclf_frames_total"][src] == n == server.frames
    assert m["edgeclf_inference_seconds_count"][src] == n
    assert m["edgeclf_inference_seconds_bucket"][(("le", "0.005"), ("source", "video"))] == 2  # 4 and 5 ms
    assert m["edgeclf_fps"][src] > 0
    assert m["edgeclf_info"][(("model", "colour.onnx"), ("version", __import__("edgeclf").__version__))] == 1
    assert "/secret/path" not in json.dumps(list(map(str, m.values())))


def test_metrics_states_sources_and_publishers():
    metrics = ServiceMetrics(model="m.onnx")
    stats = {"sent": 3, "dropped": 1, "failed": 0}
    metrics.watch_publisher("mqtt", stats)
    metrics.watch_publisher("webhook", lambda: {"sent": 7, "reconnects": 2})
    t0 = time.monotonic()
    metrics.state_change("door", "closed", t0 - 10)
    metrics.state_change("door", "open", t0 - 4)
    metrics.state_change("door", "open", t0 - 2)  # no change
    metrics.source_up("door", True)
    metrics.source_reconnect("door")
    metrics.unknown("door")
    stats["sent"] = 5  # read when scraped
    with LiveServer("127.0.0.1:0", log=lambda m: None, metrics=metrics) as server:
        m = scrape(server.port)
    door = (("source", "door"),)
    assert m["edgeclf_state_changes_total"][door] == 1
    assert m["edgeclf_state_seconds_total"][(("source", "door"), ("state", "closed"))] == pytest.approx(6, abs=0.1)
    assert m["edgeclf_state_seconds_total"][(("source", "door"), ("state", "open"))] == pytest.approx(4, abs=0.5)
    assert m["edgeclf_source_up"][door] == 1 and m["edgeclf_source_reconnects_total"][door] == 1
    assert m["edgeclf_unknown_total"][door] == 1
    assert m["edgeclf_events_sent_total"][(("publisher", "mqtt"),)] == 5
    assert m["edgeclf_events_dropped_total"][(("publisher", "mqtt"),)] == 1
    assert m["edgeclf_events_sent_total"][(("publisher", "webhook"),)] == 7
    assert m["edgeclf_publisher_reconnects_total"][(("publisher", "webhook"),)] == 2


def test_state_change_accepts_wall_clock_times():
    metrics = ServiceMetrics()
    metrics.state_change("yard", "empty", time.time() - 5)
    assert metrics.state_seconds()[("yard", "empty")] == pytest.approx(5, abs=0.5)


def test_no_metrics_without_a_collector():
    with LiveServer("127.0.0.1:0", log=lambda m: None) as server:
        assert request(server.port, "GET", "/metrics")[0] == 404


def test_predict_serve_has_the_api(tmp_path):
    """``edgeclf predict --serve``: uploads use its model, /metrics counts its frames."""
    model = make_colour_model(tmp_path / "colour.onnx")
    video = make_colour_video(tmp_path / "colours.mp4", frames=30, fps=20, hold=10)
    with ServeProcess(model, video, "--loop") as sp:
        sp.wait_frames(5)
        status, rec = classify(sp.port, png(solid("blue")))
        assert status == 200 and rec["label"] == "blue"
        frames = scrape(sp.port)["edgeclf_frames_total"][(("source", "video"),)]
        assert frames >= 5
        assert request(sp.port, "GET", "/healthz")[0] == 200
        assert json.loads(request(sp.port, "GET", "/api/state")[2])["sources"]["video"]["source_state"] == "connected"
        sp.stop()
