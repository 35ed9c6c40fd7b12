"""``edgeclf serve CONFIG.toml`` as a real process, with real peers: a network camera that hangs
(ffmpeg's MJPEG stream, SIGSTOPped) beside a looping video, systemd's notify socket and watchdog,
a webhook that fails on purpose beside a camera that cannot be opened (its password never shown),
bad input refused in one line, and SIGTERM answered within a second with the port released."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from live_helpers import MjpegViewer, get, make_colour_video, port_is_free
from mjpeg_server import MjpegServer, free_port
from onnx_fixtures import make_colour_model
from test_comms_webhook import Hook

SECRET = "hunter2"
CAM_TIMEOUT = 2.0  # the hung camera's [[source]] timeout, seconds


# ------------------------------------------------------------------------------------ helpers
@pytest.fixture
def colours(tmp_path: Path) -> Path:
    """The colour model and a 4.5 s video (20 fps): red, green, blue, 1.5 s each."""
    make_colour_model(tmp_path / "m.onnx")
    make_colour_video(tmp_path / "a.mp4", frames=90, hold=30)
    return tmp_path


def _write(tmp: Path, text: str) -> Path:
    path = tmp / "svc.toml"
    path.write_text(text)
    return path


def _source(name: str, uri: str, **keys: object) -> str:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    return f'\n[[source]]\nname = "{name}"\nuri = "{uri}"\n{extra}'


def _start(cfg: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``edgeclf serve CFG`` in the background; its stderr goes to a file next to the config."""
    with open(cfg.parent / "stderr.txt", "w") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "edgeclf", "serve", str(cfg)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **(env or {})})


def _stderr(cfg: Path) -> str:
    return (cfg.parent / "stderr.txt").read_text()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def _until(pred: Callable[[], object], timeout: float, what: str, proc: subprocess.Popen, cfg: Path) -> float:
    """Poll ``pred`` until it is true; fail (with the service's stderr) on timeout or if it exits.
    Returns the time.monotonic() at which it became true."""
    end = time.monotonic() + timeout
    while not pred():
        assert proc.poll() is None, f"edgeclf serve exited ({proc.returncode}) waiting for {what}:\n{_stderr(cfg)}"
        assert time.monotonic() < end, f"timed out after {timeout:g} s waiting for {what}:\n{_stderr(cfg)}"
        time.sleep(0.05)
    return time.monotonic()


def _http(port: int, path: str) -> tuple[int, str]:
    """(status, body) of GET ``path``; (0, reason) while nothing answers."""
    try:
        status, _, body = get(f"http://127.0.0.1:{port}{path}", timeout=3)
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)
    return status, body.decode()


def _state(port: int) -> dict[str, dict]:
    status, body = _http(port, "/api/state")
    return json.loads(body)["sources"] if status == 200 else {}


def _frames(port: int, source: str) -> int:
    return _state(port).get(source, {}).get("frames", -1)


class Notify:
    """A bound AF_UNIX datagram socket standing in for systemd (in a short folder: a socket path
    must fit in 108 bytes); a thread records every message with its time.monotonic()."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="ecsl-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.got: list[tuple[float, str]] = []
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                self.got.append((time.monotonic(), self.sock.recv(4096).decode()))
            except TimeoutError:
                continue

    def times(self, field: str) -> list[float]:
        return [t for t, m in list(self.got) if field in m.splitlines()]

    def close(self) -> None:
        self._halt.set()
        self._thread.join(2)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify() -> Iterator[Notify]:
    n = Notify()
    yield n
    n.close()


# -------------------------------------------------------------------------------------- tests
def _healthz_names(port: int, name: str) -> list[str] | None:
    """/healthz's reasons when it is 503 and names source ``name``; else None."""
    status, body = _http(port, "/healthz")
    if status != 503:
        return None
    reasons = json.loads(body)["reasons"]
    return reasons if any(r.startswith(f"{name}:") for r in reasons) else None


def test_a_hung_camera_is_reported_and_the_other_source_goes_on(colours, notify):
    """ffmpeg SIGSTOPped: the connection stays open, no frame comes. OpenCV's read times out after
    the source's ``timeout`` (the service sets CAP_PROP_READ_TIMEOUT_MSEC to it), so the camera is
    declared lost and reconnected: /healthz turns 503 naming it, the video goes on being
    classified, and the watchdog is still petted (a source being reconnected is handled; a restart
    would not help: ``SourceWorker.stalled``). When the camera answers again it is back: 200."""
    server = MjpegServer().start()  # skips, saying what to install, without ffmpeg
    port = free_port()
    cfg = _write(colours, 'model = "m.onnx"\n' + _source("cam", server.url, timeout=CAM_TIMEOUT)
                 + _source("file", "a.mp4", loop=True) + f'\n[server]\nlisten = "127.0.0.1:{port}"\n')
    proc = _start(cfg, {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"})
    try:
        _until(lambda: _http(port, "/healthz")[0] == 200 and len(notify.times("WATCHDOG=1")) >= 3, 30,
               "READY, pets and a healthy service", proc, cfg)
        assert notify.times("READY=1")[0] < notify.times("WATCHDOG=1")[0]
        assert _frames(port, "cam") > 0 and _frames(port, "file") > 0
        os.kill(server.proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        seen = _until(lambda: _healthz_names(port, "cam"), CAM_TIMEOUT + 3, "/healthz to name the hung camera", proc, cfg)
        reasons = _healthz_names(port, "cam")
        assert reasons is not None and not any(r.startswith("file:") for r in reasons), reasons
        assert seen - stopped > CAM_TIMEOUT - 0.5, "declared hung before its timeout"
        cam, file = _frames(port, "cam"), _frames(port, "file")
        _until(lambda: _frames(port, "file") >= file + 30, 10, "the video to go on (30 frames)", proc, cfg)
        assert _frames(port, "cam") == cam and _state(port)["cam"]["source_state"] == "reconnecting"
        assert len([t for t in notify.times("WATCHDOG=1") if t > seen]) >= 4, "the watchdog stopped being petted"
        # ffmpeg's -listen 1 serves one client, which has gone: the camera comes back as a new server
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()
        server.start()
        back = _until(lambda: _http(port, "/healthz")[0] == 200 and _frames(port, "cam") > cam, 20,
                      "the camera back and /healthz 200", proc, cfg)
        _until(lambda: len([t for t in notify.times("WATCHDOG=1") if t > back]) >= 3, 5, "pets after", proc, cfg)
        err = _stderr(cfg)
        assert "stream lost; reconnecting" in err and "reconnected" in err, err
    finally:
        if server.proc is not None:
            os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()
        _stop(proc)


@pytest.mark.parametrize("bad_uri", [f"http://user:{SECRET}@127.0.0.1:{{port}}/cam.mjpg",
                                     f"rtsp://user:{SECRET}@127.0.0.1:{{port}}/x"], ids=["http", "rtsp"])
def test_webhook_retries_through_serve_while_a_source_fails(colours, bad_uri):
    """A webhook answering 500 to the first two POSTs gets the video's states in order (the first
    one by its retries); a camera that cannot be opened is retried, named by /healthz with its
    password masked, and never stops the video; the password is never shown anywhere."""
    hook = Hook()
    hook.fail = 2
    port, uri = free_port(), bad_uri.format(port=free_port())
    cfg = _write(colours, 'model = "m.onnx"\n' + _source("door", "a.mp4") + _source("gate", uri, timeout=1)
                 + f'\n[webhook]\nurl = "{hook.url.replace("//", f"//hook:{SECRET}@")}"\nretries = 3\nbackoff = 0.1\n'
                 + f'\n[server]\nlisten = "127.0.0.1:{port}"\n')
    proc = _start(cfg)
    pages: list[str] = []

    def look() -> bool:
        pages.extend(_http(port, p)[1] for p in ("/healthz", "/api/state", "/metrics"))
        return len(hook.requests) >= 5

    try:
        _until(lambda: _healthz_names(port, "gate"), 30, "/healthz to name the failed camera", proc, cfg)
        reasons = _healthz_names(port, "gate")  # (while its first attempt is under way it is "connecting": not yet a problem)
        assert reasons is not None and len(reasons) == 1 and "user:***@" in reasons[0], reasons
        _until(look, 20, "five POSTs (two refused, three states)", proc, cfg)
        assert hook.labels() == [("door", "red")] * 3 + [("door", "green"), ("door", "blue")], hook.labels()
        assert [r["json"]["previous"] for r in hook.requests[2:]] == [None, "red", "green"]
        auth = "Basic " + base64.b64encode(f"hook:{SECRET}".encode()).decode()
        assert all(r["headers"]["Authorization"] == auth for r in hook.requests)
        sent = 'edgeclf_events_sent_total{publisher="webhook"} 3.0'
        _until(lambda: sent in _http(port, "/metrics")[1], 5, "three events counted as sent", proc, cfg)
        assert 'edgeclf_events_failed_total{publisher="webhook"} 0.0' in _http(port, "/metrics")[1]
        state = _state(port)
        assert state["door"]["frames"] >= 60 and state["gate"]["frames"] == 0
        assert state["gate"]["source_state"] == "failed" and state["gate"]["uri"] == uri.replace(SECRET, "***")
        _until(lambda: _state(port)["door"]["source_state"] == "ended", 10, "the video's end", proc, cfg)
        assert len(_healthz_names(port, "gate") or []) == 1  # still 503, for the camera only: an ended video is fine
        assert 'edgeclf_source_up{source="gate"} 0.0' in _http(port, "/metrics")[1]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, _stderr(cfg)
        assert time.monotonic() - t0 < 2.0
    finally:
        _stop(proc)
        hook.close()
    assert len(pages) >= 3 and not any(SECRET in p for p in pages)
    err = _stderr(cfg)
    assert SECRET not in err and "Traceback" not in err, err
    assert sum("gate:" in line and "retrying" in line for line in err.splitlines()) == 1, err


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    """The one stderr line of a serve that refused to start: exit 2, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


BAD_INPUT = {  # case: (model, MQTT ca_file or None, the file the line must name, what it must say)
    "missing model": ("missing.onnx", None, "missing.onnx", "does not exist"),
    "CA file not a certificate": ("m.onnx", "ca.pem", "ca.pem", "not usable"),
    "CA file missing": ("m.onnx", "nope.pem", "nope.pem", "cannot read"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_naming_the_file(colours, case):
    """A model file that does not exist; an MQTT CA file that is not a certificate, or is not
    there: ``edgeclf serve`` refuses at start in one line naming the file (MqttPublisher builds
    its TLS context before the service starts), exit 2, no traceback."""
    model, ca, named, says = BAD_INPUT[case]
    (colours / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    text = f'model = "{model}"\n' + _source("door", "a.mp4", loop=True)
    if ca is not None:
        text += f'\n[mqtt]\nhost = "127.0.0.1"\nport = {free_port()}\ntls = true\nca_file = "{ca}"\n'
    cfg = _write(colours, text)
    r = subprocess.run([sys.executable, "-m", "edgeclf", "serve", str(cfg)], check=False, capture_output=True, text=True,
                       timeout=60)
    line = _one_line_error(r)
    assert line.startswith("edgeclf: error: ") and str(colours / named) in line and says in line, line


def test_sigterm_ends_the_service_within_a_second_and_frees_the_port(colours):
    """SIGTERM with frames flowing and a viewer on /stream.mjpg: exit 0 well within 2 s (the goal
    is 1 s; the bound is loose for a loaded machine), the summary said, the port free again."""
    port = free_port()
    cfg = _write(colours, 'model = "m.onnx"\n' + _source("door", "a.mp4", loop=True)
                 + f'\n[server]\nlisten = "127.0.0.1:{port}"\n')
    proc = _start(cfg)
    viewer = None
    try:
        _until(lambda: _http(port, "/healthz")[0] == 200 and _frames(port, "door") >= 10, 30, "a healthy service",
               proc, cfg)
        viewer = MjpegViewer(port)
        viewer.start()
        _until(lambda: len(viewer.times) >= 3, 10, "the viewer's first frames", proc, cfg)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(10)
        took = time.monotonic() - t0
    finally:
        if viewer is not None:
            viewer.close()
        _stop(proc)
    err = _stderr(cfg)
    assert rc == 0, err
    assert took < 2.0, f"SIGTERM took {took:.2f} s"
    assert port_is_free(port), "the HTTP port is still taken after exit"
    assert "Traceback" not in err and "frames in" in err.splitlines()[-1], err
