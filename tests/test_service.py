"""``edgeclf serve CONFIG.toml``: the config's errors (file, line, key), the debounce, and the whole
service on real videos with a real mosquitto broker and a real subscriber, stopped by SIGTERM."""

from __future__ import annotations

import dataclasses
import json
import re
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from live_helpers import make_colour_video
from benchmarks.mqtt_broker import MOSQUITTO, Broker, Watcher, wait_for
from onnx_fixtures import make_colour_model

from edgeclf.errors import EdgeclfError
from edgeclf.service.config import load_config
from edgeclf.service.state import Debouncer


def _write(tmp: Path, text: str) -> Path:
    path = tmp / "svc.toml"
    path.write_text(text)
    return path


GOOD = 'model = "m.onnx"\n\n[[source]]\nname = "door"\nuri = "a.mp4"\n'


def test_unknown_key_names_the_file_line_and_key(tmp_path):
    path = _write(tmp_path, GOOD + "debounce_frams = 4\n")
    with pytest.raises(EdgeclfError, match=r"svc\.toml:6: source\[0\]\.debounce_frams: unknown key"):
        load_config(path)


def test_wrong_types_ranges_and_missing_parts_are_one_line(tmp_path):
    cases = {
        GOOD + "debounce_frames = 0\n": r":6: source\[0\]\.debounce_frames: must be at least 1",
        GOOD + "timeout = \"ten\"\n": r":6: source\[0\]\.timeout: must be a number",
        GOOD + "\n[mqtt]\nport = 1883\n": r"mqtt\.host: missing",
        GOOD + "\n[[source]]\nname = \"door\"\nuri = \"b.mp4\"\n": r"source\[1\]\.name: 'door' is used by another source",
        '[[source]]\nname = "a"\nuri = "x"\n': r"model: missing",
        'model = "m.onnx"\n': r"source: missing",
        GOOD.replace('"door"', '"front/door"'): r"name: .*MQTT topic level",
        "model = [": r"not valid TOML",
        GOOD + '\n[mqtt]\nhost = "mqtt://127.0.0.1"\n': r":8: mqtt\.host: a host name or address only, not a URL or host:port",
        GOOD + '\n[mqtt]\nhost = "127.0.0.1:1883"\n': r":8: mqtt\.host: a host name or address only",
        GOOD + '\n[[source]]\nname = "Door"\nuri = "b.mp4"\n[mqtt]\nhost = "h"\n':
            r"mqtt\.discovery: sources 'door' and 'Door' would share one Home Assistant id: rename one",
        GOOD + '\n[webhook]\nurl = "http://h/x"\nheaders = {X = "a\\r\\nEvil: 1"}\n':
            r":9: webhook\.headers: header X's value holds a control character",
        GOOD + '\n[webhook]\nurl = "http://h/x"\nheaders = {"Bad Header" = "v"}\n': r"'Bad Header' is not a valid HTTP header name",
        GOOD + '\n[webhook]\nurl = "http://h:99999/x"\n': r"webhook\.url: .* is not a URL \(Port out of range",
    }
    for text, pattern in cases.items():
        with pytest.raises(EdgeclfError, match=pattern):
            load_config(_write(tmp_path, text))


def test_case_twins_are_fine_without_discovery_and_a_device_is_read_within_the_bound(tmp_path):
    twins = GOOD + '\n[[source]]\nname = "Door"\nuri = "b.mp4"\n[mqtt]\nhost = "h"\ndiscovery = false\n'
    assert [s.name for s in load_config(_write(tmp_path, twins)).sources] == ["door", "Door"]
    with pytest.raises(EdgeclfError, match=r"/dev/zero: larger than 1 MiB; not a config file"):
        load_config("/dev/zero")  # no size to check first: the read itself is bounded


def test_secrets_from_env_or_file_never_in_repr(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECLF_TEST_PW", "s3cret-env")
    cfg = load_config(_write(tmp_path, GOOD + '\n[mqtt]\nhost = "localhost"\nusername = "u"\npassword_env = "EDGECLF_TEST_PW"\n'))
    assert cfg.mqtt.password == "s3cret-env" and "s3cret" not in repr(cfg)
    (tmp_path / "pw").write_text("s3cret-file\n")
    cfg = load_config(_write(tmp_path, GOOD + '\n[mqtt]\nhost = "localhost"\npassword_file = "pw"\n'))
    assert cfg.mqtt.password == "s3cret-file"
    with pytest.raises(EdgeclfError, match=r"mqtt\.password_env: environment variable NOPE_NOT_SET"):
        load_config(_write(tmp_path, GOOD + '\n[mqtt]\nhost = "h"\npassword_env = "NOPE_NOT_SET"\n'))


def test_debounce_needs_n_frames_in_a_row_and_t_seconds():
    d = Debouncer(frames=3)
    labels = ["cat", "cat", "cat", "dog", "cat", "dog", "dog", "dog"]
    changes = [(i, c.label, c.previous) for i, lab in enumerate(labels) if (c := d.update(lab, 0.9, float(i)))]
    assert changes == [(2, "cat", None), (7, "dog", "cat")]  # the lone "dog" at 3 changed nothing
    d = Debouncer(frames=1, seconds=2.0)
    assert d.update("a", 1, 0.0) is None and d.update("a", 1, 1.0) is None and d.update("a", 1, 2.0).label == "a"


@pytest.fixture
def colour_setup(tmp_path):
    make_colour_model(tmp_path / "m.onnx")
    make_colour_video(tmp_path / "a.mp4", frames=90, hold=30)
    make_colour_video(tmp_path / "b.mp4", frames=60, hold=10)
    return tmp_path


def _serve(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeclf", "serve", str(cfg), *args], capture_output=True, text=True,
                          timeout=120)


def test_check_validates_and_prints_no_secret(colour_setup):
    cfg = _write(colour_setup, GOOD + '\n[mqtt]\nhost = "localhost"\npassword = "hunter2"\n')
    r = _serve(cfg, "--check", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] and out["sources"][0]["name"] == "door" and out["mqtt"]["password"] is True
    assert "hunter2" not in r.stdout + r.stderr
    bad = _write(colour_setup, GOOD + "colour = 1\n")
    r = _serve(bad, "--check")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "colour: unknown key" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.skipif(MOSQUITTO is None, reason="needs Debian's mosquitto broker: apt-get install mosquitto")
def test_two_sources_states_reach_mqtt_in_order(colour_setup):
    broker = Broker(colour_setup).start()
    watcher = None
    try:
        watcher = Watcher(broker.port)
        # at the videos' own frame rate, as cameras: a file read flat out would change state faster
        # than a broker round trip, and the newest state wins by design
        cfg = _write(colour_setup, f"""model = "m.onnx"
[[source]]
name = "door"
uri = "a.mp4"
[[source]]
name = "yard"
uri = "b.mp4"
debounce_frames = 2
[mqtt]
host = "127.0.0.1"
port = {broker.port}
node_id = "testnode"
""")
        r = _serve(cfg)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: len(watcher.states("yard")) >= 6 and len(watcher.states("door")) >= 3, 10, "every state")
        assert [s["label"] for s in watcher.states("door")] == ["red", "green", "blue"]
        assert [s["label"] for s in watcher.states("yard")] == ["red", "green", "blue"] * 2
        assert watcher.states("yard")[1]["previous"] == "red" and watcher.states("yard")[0]["model"] == "m.onnx"
        assert watcher.on("homeassistant/sensor/testnode/door/config")
        assert watcher.texts("edgeclf/testnode/availability")[-1] == "offline"
    finally:
        if watcher is not None:
            watcher.close()
        broker.kill()


@pytest.mark.skipif(MOSQUITTO is None, reason="needs Debian's mosquitto broker: apt-get install mosquitto")
def test_sigterm_ends_the_service_cleanly_and_says_offline(colour_setup):
    broker = Broker(colour_setup).start()
    watcher = Watcher(broker.port)
    cfg = _write(colour_setup, f"""model = "m.onnx"
[[source]]
name = "door"
uri = "a.mp4"
loop = true
[mqtt]
host = "127.0.0.1"
port = {broker.port}
node_id = "testnode"
""")
    proc = subprocess.Popen([sys.executable, "-m", "edgeclf", "serve", str(cfg)], stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(watcher.states("door")) >= 2, 30, "two states from the looping video")
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(10)
        took = time.monotonic() - t0
        assert rc == 0, proc.stderr.read()
        assert took < 3.0, f"SIGTERM took {took:.2f} s"  # the goal is 1 s (measured in the benchmark); a loose bound here
        wait_for(lambda: watcher.texts("edgeclf/testnode/availability")[-1:] == ["offline"], 5, "offline")
    finally:
        if proc.poll() is None:
            proc.kill()
        watcher.close()
        broker.kill()


def test_check_finds_a_thread_count_or_a_listen_host_this_machine_refuses(colour_setup):
    """serve --check loads the model with 1 thread, but checks the config's own threads against
    this machine's cores, and resolves server.listen's host, as the service would at start."""
    from edgeclf.model.threads import THREADS_PER_CORE
    from edgeclf.sysinfo import cpu_cores

    most = THREADS_PER_CORE * cpu_cores()
    if most >= 256:
        pytest.skip(f"this machine takes every thread count the config allows ({most})")
    r = _serve(_write(colour_setup, f"threads = {most + 1}\n" + GOOD), "--check")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"svc.toml: threads: must be 1 to {most} ({THREADS_PER_CORE} x the" in r.stderr and "--threads" not in r.stderr
    r = _serve(_write(colour_setup, GOOD + '\n[server]\nlisten = "nohost.invalid:18084"\n'), "--check")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "svc.toml: server: listen 'nohost.invalid:18084': cannot resolve host 'nohost.invalid'" in r.stderr


def test_sigterm_while_a_camera_is_still_opening_ends_at_once(colour_setup):
    """A network camera that accepts the connection and never answers, opened with a 20 s timeout:
    SIGTERM during the open ends the service within a second or two, not at the timeout."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    cfg = _write(colour_setup, f'model = "m.onnx"\n[[source]]\nname = "door"\n'
                               f'uri = "http://127.0.0.1:{silent.getsockname()[1]}/stream.mjpg"\ntimeout = 20\n')
    proc = subprocess.Popen([sys.executable, "-m", "edgeclf", "serve", str(cfg)], stderr=subprocess.PIPE, text=True)
    try:
        conn, _ = silent.accept()  # the reader is opening the stream now
        time.sleep(0.5)
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(15)
        took = time.monotonic() - t0
        assert rc == 0, proc.stderr.read()
        assert took < 3.0, f"SIGTERM took {took:.2f} s"
        conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        silent.close()


def test_systemd_hears_ready_watchdog_and_stopping(colour_setup, tmp_path):
    """A real NOTIFY_SOCKET: READY=1 once the source is open, WATCHDOG=1 while frames flow,
    STOPPING=1 on SIGTERM."""
    import socket

    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    cfg = _write(colour_setup, GOOD + "loop = true\n")
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen([sys.executable, "-m", "edgeclf", "serve", str(cfg)], env=env, stderr=subprocess.PIPE, text=True)
    got: list[str] = []
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end and sum("WATCHDOG=1" in m for m in got) < 3:
            try:
                got.append(sock.recv(4096).decode())
            except TimeoutError:
                assert proc.poll() is None, proc.stderr.read()
        assert any("READY=1" in m for m in got), got
        assert sum("WATCHDOG=1" in m for m in got) >= 3, got
        first_ready = next(i for i, m in enumerate(got) if "READY=1" in m)
        first_pet = next(i for i, m in enumerate(got) if "WATCHDOG=1" in m)
        assert first_ready < first_pet  # no pet before the sources are open
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0
        rest = []
        while True:
            try:
                rest.append(sock.recv(4096).decode())
            except TimeoutError:
                break
        assert any("STOPPING=1" in m for m in rest), rest
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_class_thresholds_must_name_the_models_classes(colour_setup):
    cfg = _write(colour_setup, GOOD + "class_thresholds = {purple = 0.5}\n")
    r = _serve(cfg)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "source 'door': class_thresholds: 'purple' is not a class of m.onnx (red, green, blue)" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_batch_auto_keeps_the_mode_that_costs_less_per_frame():
    from edgeclf.service.batching import TRIALS, BatchChooser

    def run(batched_ms: float, single_ms: float) -> BatchChooser:
        c = BatchChooser("auto")
        modes = []
        while c.choice is None:
            b = c.batched(4)
            modes.append(b)
            c.record(b, 4, 4 * (batched_ms if b else single_ms) / 1000)
        assert modes.count(True) == modes.count(False) == TRIALS  # the two modes alternate
        return c

    assert run(batched_ms=0.3, single_ms=1.0).choice is True  # a GPU: batches are cheaper per frame
    assert run(batched_ms=0.98, single_ms=1.0).choice is False  # within the margin: one by one
    c = run(batched_ms=1.2, single_ms=1.0)
    assert c.batched(4) is False and "off: 1.20 ms a frame in one call, 1.00 ms one by one" in c.describe()
    fixed = BatchChooser(True)
    assert fixed.batched(4) and fixed.record(True, 4, 0.1) is None and fixed.choice is True
    one = BatchChooser("auto")
    assert one.record(True, 1, 0.1) is None and one.per_frame_s == {True: [], False: []}  # one frame says nothing


def test_batch_must_be_true_false_or_auto(tmp_path):
    with pytest.raises(EdgeclfError, match=r'svc\.toml:1: batch: must be true, false or "auto" \(got \'yes\'\)'):
        load_config(_write(tmp_path, 'batch = "yes"\n' + GOOD))
    with pytest.raises(EdgeclfError, match=r'batch: must be true, false or "auto" \(got 1\)'):
        load_config(_write(tmp_path, "batch = 1\n" + GOOD))
    assert load_config(_write(tmp_path, GOOD)).batch == "auto"


@pytest.mark.parametrize("extra, where", [
    ('\n[server]\nlisten = "abc"\n', r"svc\.toml:8: server\.listen: expected \[HOST:\]PORT"),
    ('\n[server]\nlisten = "8080"\nallow_hosts = ["a b"]\n', r"svc\.toml:9: server\.allow_hosts: 'a b': expected a host name"),
    ('\n[server]\nlisten = "8080"\ntoken = "no spaces"\n', r"svc\.toml:9: server\.token: the API token must be"),
    ('\n[webhook]\nurl = "ftp://h/x"\n', r"svc\.toml:8: webhook\.url: 'ftp://h/\*\*\*' is not an http:// or https:// URL"),
    ('\n[mqtt]\nhost = "h"\ntls = true\nca_file = "svc.toml"\n', r"svc\.toml:10: mqtt\.ca_file: the CA file .*svc\.toml is not usable"),
])
def test_check_finds_what_would_fail_at_start(colour_setup, extra, where):
    """serve --check refuses what the service would refuse at start, naming the line and the key."""
    r = _serve(_write(colour_setup, GOOD + extra), "--check")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert re.search(where, r.stderr), r.stderr
    assert "mqtt: mqtt:" not in r.stderr and "Traceback" not in r.stderr


def test_webhook_paths_are_secrets_and_snapshots_follow_the_source(colour_setup):
    from edgeclf.comms.base import StateEvent
    from edgeclf.comms.webhook import shown_url

    assert shown_url("https://u:pw@ha.local:8123/api/webhook/s3cretid?x=1") == "https://u:***@ha.local:8123/***"
    assert shown_url("http://hooks.example/") == "http://hooks.example/"
    cfg = _write(colour_setup, GOOD + '\n[webhook]\nurl = "http://ha.local:8123/api/webhook/s3cretid"\n')
    r = _serve(cfg, "--check", "--json")
    assert r.returncode == 0 and "s3cretid" not in r.stdout + r.stderr
    assert json.loads(r.stdout)["webhooks"] == ["http://ha.local:8123/***"]
    ev = StateEvent(source="door", label="red", score=1.0, time=0.0, model="m", snapshot=b"jpeg")
    assert ev.snapshot_for(False) is None and ev.snapshot_for(True) == b"jpeg"
    shared = dataclasses.replace(ev, share_snapshot=True)  # the source's own snapshot = true: every way out sends it
    assert shared.snapshot_for(False) == b"jpeg"


def test_several_webhooks_are_told_apart_in_metrics(tmp_path):
    from edgeclf.service.runner import publishers_for

    cfg = load_config(_write(tmp_path, GOOD + '\n[[webhook]]\nurl = "http://a.example/x"\n[[webhook]]\nurl = "http://b.example/y"\n'))
    assert [p.name for p in publishers_for(cfg, "m.onnx")] == ["webhook1", "webhook2"]
    one = load_config(_write(tmp_path, GOOD + '\n[webhook]\nurl = "http://a.example/x"\n'))
    assert [p.name for p in publishers_for(one, "m.onnx")] == ["webhook"]


def test_watchdog_stops_for_a_wedged_local_camera_not_for_a_remote_stream():
    """What stops the WATCHDOG=1 pets. No camera exists on the test machine, so the source is a
    stand-in with a camera's kind and states (the end-to-end run: tests/test_service_live.py)."""
    import threading
    from types import SimpleNamespace

    from edgeclf.service.config import SourceConfig
    from edgeclf.service.workers import SourceWorker

    w = SourceWorker(SourceConfig(name="cam", uri="/dev/video0", timeout=2.0), clf=None, rule=None,
                     cond=threading.Condition(), stop=threading.Event(), log=lambda m: None,
                     on_up=lambda *a: None, on_reconnect=lambda *a: None)
    now = 100.0
    w.state, w._source, w.last_frame = "connected", SimpleNamespace(kind="camera", state="connected"), now - 1
    assert not w.stalled(now)
    w.last_frame = now - 3
    assert w.stalled(now)  # connected, but no frame past the timeout: a hung reader
    w._source.state = "reconnecting"
    assert w.stalled(now)  # a camera on this machine that does not come back: a restart may clear its driver
    w._source.kind = "stream"
    assert not w.stalled(now)  # a network camera being reconnected: restarting would change nothing
    w._source.kind, w.last_frame = "camera", None
    assert not w.stalled(now)  # never gave a frame: a restart would not make one


def test_the_log_names_where_the_token_was_given(tmp_path):
    (tmp_path / "tok").write_text("abc123\n")
    cfg = load_config(_write(tmp_path, GOOD + '\n[server]\nlisten = "0.0.0.0:8080"\ntoken_file = "tok"\n'))
    assert cfg.server.token == "abc123" and cfg.server.token_from == f"the config's server.token_file ({tmp_path / 'tok'})"
    assert "abc123" not in cfg.server.token_from
    cfg = load_config(_write(tmp_path, GOOD + '\n[server]\nlisten = "0.0.0.0:8080"\ntoken = "abc123"\n'))
    assert cfg.server.token_from == "the config's server.token"
