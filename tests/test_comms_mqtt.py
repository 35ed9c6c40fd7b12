"""The MQTT publisher against a real broker (Debian's mosquitto on a loopback port), watched by a
real paho subscriber: states, retained states, Home Assistant discovery, availability and the last
will, a broker restart, a wrong password, TLS with the right and a wrong CA, and a broker down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from benchmarks.mqtt_broker import MOSQUITTO, NODE, Broker, Watcher, free_port, wait_for

from edgeclf.comms.base import StateEvent
from edgeclf.comms.mqtt import MqttOptions, MqttPublisher
from edgeclf.errors import EdgeclfError


@pytest.fixture(scope="module", autouse=True)
def _need_mosquitto():
    if MOSQUITTO is None:
        if os.environ.get("EDGECLF_REQUIRE_MQTT") == "1":
            pytest.fail("mosquitto is not installed (EDGECLF_REQUIRE_MQTT=1): apt-get install mosquitto")
        pytest.skip("needs Debian's mosquitto broker: apt-get install mosquitto")


@pytest.fixture
def broker(tmp_path):
    started: list[Broker] = []

    def make(lines: list[str] = (), port: int | None = None, start: bool = True) -> Broker:
        b = Broker(tmp_path, lines, port)
        started.append(b)
        return b.start() if start else b

    yield make
    for b in started:
        b.kill()


@pytest.fixture
def watch():
    made: list[Watcher] = []

    def make(port: int, **kw) -> Watcher:
        made.append(Watcher(port, **kw))
        return made[-1]

    yield make
    for w in made:
        w.close()


def ev(label: str, source: str = "door", **kw) -> StateEvent:
    return StateEvent(source=source, label=label, score=0.875, time=1_700_000_000.0, model="mnv3",
                      previous=kw.pop("previous", None), frame=3, **kw)


def publisher(port: int, log: list, sources=("door",), failures: list | None = None, **kw) -> MqttPublisher:
    """A started publisher; ``failures`` (when given) gets one item per failed connection attempt,
    so a test can wait for a retry instead of sleeping through paho's back-off."""
    pub = MqttPublisher(MqttOptions("127.0.0.1", port, node_id=NODE, **kw), model="mnv3", log=log.append)
    if failures is not None:
        c, on_fail, on_connect = pub.client, pub.client.on_connect_fail, pub.client.on_connect

        def connected(client, userdata, flags, reason, props):
            failures.extend([reason] * reason.is_failure)
            on_connect(client, userdata, flags, reason, props)

        c.on_connect_fail = lambda *a: (failures.append("fail"), on_fail(*a))
        c.on_connect = connected
    return pub.start(list(sources))


AVAIL = f"edgeclf/{NODE}/availability"


def test_states_discovery_retained_and_availability(broker, watch):
    b = broker()
    w = watch(b.port)
    log: list[str] = []
    pub = publisher(b.port, log, sources=("door", "front gate"), snapshot=True)
    pub.publish(ev("open", previous="closed", snapshot=b"\xff\xd8jpeg"))
    pub.publish(ev("car", source="front gate"))
    wait_for(lambda: pub.stats["sent"] == 2, what="two states sent")
    wait_for(lambda: len(w.states()) == 1 and w.on(f"edgeclf/{NODE}/door/snapshot"))
    state = w.states()[0]
    assert {k: state[k] for k in ("source", "label", "previous", "score", "model", "frame")} == {
        "source": "door", "label": "open", "previous": "closed", "score": 0.875, "model": "mnv3", "frame": 3}
    assert w.on(f"edgeclf/{NODE}/door/snapshot")[0].payload == b"\xff\xd8jpeg"
    assert w.texts(AVAIL) == ["online"]
    for slug, name in (("door", "door"), ("front_gate", "front gate")):
        (cfg,) = w.on(f"homeassistant/sensor/{NODE}/{slug}/config")
        assert cfg.retain is False  # live delivery; the late subscriber below sees it retained
        c = json.loads(cfg.payload)
        assert c["name"] == name and c["unique_id"] == f"edgeclf_{NODE}_{slug}"
        assert c["state_topic"] == c["json_attributes_topic"] == f"edgeclf/{NODE}/{name}/state"
        assert c["value_template"] == "{{ value_json.label }}" and c["availability_topic"] == AVAIL
        assert c["device"]["manufacturer"] == "edgeclf" and c["device"]["model"] == "mnv3"
        assert c["device"]["identifiers"] == [f"edgeclf_{NODE}"] and c["device"]["sw_version"]
    late = watch(b.port)  # retained: a subscriber that comes later sees the current state at once
    wait_for(lambda: late.states("front gate") and late.on(f"homeassistant/sensor/{NODE}/door/config"))
    assert late.states("front gate")[0]["label"] == "car" and late.on(f"edgeclf/{NODE}/front gate/state")[0].retain
    pub.close()
    wait_for(lambda: w.texts(AVAIL) == ["online", "offline"], what="offline on close")
    late = watch(b.port)
    wait_for(lambda: late.texts(AVAIL) == ["offline"] and late.on(AVAIL)[0].retain, what="offline retained")
    assert log == [f"mqtt: connected to 127.0.0.1:{b.port}"]
    assert pub.stats == {"sent": 2, "dropped": 0, "failed": 0, "reconnects": 0}


def test_last_will_when_the_process_is_killed(broker, watch):
    b = broker()
    w = watch(b.port)
    code = textwrap.dedent(f"""
        import time
        from edgeclf.comms.base import StateEvent
        from edgeclf.comms.mqtt import MqttOptions, MqttPublisher
        pub = MqttPublisher(MqttOptions("127.0.0.1", {b.port}, node_id="{NODE}"), log=lambda s: None).start(["door"])
        pub.publish(StateEvent("door", "open", 0.9, time.time(), "m"))
        while pub.stats["sent"] < 1:
            time.sleep(0.01)
        print("sent", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "sent"
        wait_for(lambda: w.texts(AVAIL) == ["online"])
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        wait_for(lambda: w.texts(AVAIL) == ["online", "offline"], what="the last will")
        assert w.states()[0]["label"] == "open"
        late = watch(b.port)  # the will is retained
        wait_for(lambda: late.texts(AVAIL) == ["offline"] and late.on(AVAIL)[0].retain)
    finally:
        proc.kill()
        proc.wait()


def test_broker_restart_republishes_the_current_state(broker, watch):
    b = broker()
    log: list[str] = []
    pub = publisher(b.port, log)
    pub.publish(ev("open"))
    wait_for(lambda: pub.stats["sent"] == 1)
    b.kill()  # no persistence: the retained state dies with it
    wait_for(lambda: not pub.connected, what="the publisher to notice")
    b2 = broker(port=b.port)
    w = watch(b2.port)
    wait_for(lambda: w.states() and w.texts(AVAIL) == ["online"], what="state re-published")
    assert w.states()[0]["label"] == "open"
    # the subscriber can hear the message before the publisher hears the broker's acknowledgement
    wait_for(lambda: pub.stats["sent"] == 2, what="the re-published state acknowledged")
    assert pub.stats["reconnects"] == 1 and pub.stats["sent"] == 2
    pub.close()
    lost = [line for line in log if "lost" in line]
    assert len(lost) == 1 and "retrying" in lost[0]
    assert [line for line in log if "connected to" in line] == [f"mqtt: connected to 127.0.0.1:{b.port}"] * 2


def test_broker_down_at_start_newest_state_wins(broker, watch, tmp_path):
    port = free_port()
    log: list[str] = []
    pub = publisher(port, log)
    wait_for(lambda: log, what="a log line")
    worst = 0.0
    for i in range(5):
        t0 = time.monotonic()
        pub.publish(ev(f"s{i}"))
        worst = max(worst, time.monotonic() - t0)
    assert worst < 0.05  # the frame loop never waits for a broker
    assert pub.stats["dropped"] == 4 and not pub.connected
    assert len(log) == 1 and "cannot connect" in log[0] and "refused" in log[0].lower()
    b = broker(port=port)
    w = watch(b.port)
    wait_for(lambda: w.states(), what="the state after the broker came")
    pub.close()
    assert [s["label"] for s in w.states()] == ["s4"]
    assert pub.stats["sent"] == 1 and pub.stats["reconnects"] == 0


def test_password(broker, watch, tmp_path):
    pwfile = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pwfile), "cam", "right-Pw"], check=True)
    b = broker(["allow_anonymous false", f"password_file {pwfile}"])
    w = watch(b.port, username="cam", password="right-Pw")
    log: list[str] = []
    failures: list = []
    bad = publisher(b.port, log, failures=failures, username="cam", password="wr0ng-Secret")
    wait_for(lambda: log, what="the refusal")
    t0 = time.monotonic()
    for i in range(3):
        bad.publish(ev(f"s{i}"))
    assert time.monotonic() - t0 < 0.05
    wait_for(lambda: len(failures) >= 2, what="a retry")  # which must not log again
    bad.close()
    assert len(log) == 1 and "refused" in log[0] and "authori" in log[0].lower()
    assert "wr0ng-Secret" not in repr(bad) + repr(bad.opts) + "".join(log)
    assert bad.stats["sent"] == 0 and bad.stats["dropped"] == 2
    good = publisher(b.port, [], username="cam", password="right-Pw")
    good.publish(ev("open"))
    wait_for(lambda: w.states(), what="state with the right password")
    good.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A test CA and a server certificate for 127.0.0.1/localhost signed by it, and another CA."""
    d = tmp_path_factory.mktemp("certs")

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        ssl("req", "-x509", *key, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj", f"/CN=edgeclf {ca}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    ssl("req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                               "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                               "authorityKeyIdentifier=keyid,issuer\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    return d


def test_tls(broker, watch, certs):
    tls_port = free_port()  # a TLS listener beside the plain one the watcher uses
    b = broker(["allow_anonymous true", f"listener {tls_port} 127.0.0.1", f"cafile {certs / 'ca.crt'}",
                f"certfile {certs / 'server.crt'}", f"keyfile {certs / 'server.key'}"])
    w = watch(b.port)
    log: list[str] = []
    pub = publisher(tls_port, log, ca_file=str(certs / "ca.crt"))
    pub.publish(ev("open"))
    wait_for(lambda: w.states(), what="state over TLS")
    pub.close()
    assert log == [f"mqtt: connected to 127.0.0.1:{tls_port}"]
    log.clear()
    failures: list = []
    wrong = publisher(tls_port, log, failures=failures, ca_file=str(certs / "other-ca.crt"))
    wrong.publish(ev("closed"))
    wait_for(lambda: len(failures) >= 2, what="a retry")  # which fails again, silently
    wrong.close()
    assert len(log) == 1 and "certificate verify failed" in log[0].lower()
    assert "Traceback" not in log[0] and "\n" not in log[0]
    assert [s["label"] for s in w.states()] == ["open"] and wrong.stats["sent"] == 0


def test_tls_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing-ca.crt"
    with pytest.raises(EdgeclfError, match="missing-ca.crt"):
        MqttPublisher(MqttOptions("127.0.0.1", ca_file=str(missing)))
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate\n")
    with pytest.raises(EdgeclfError, match="junk.crt") as e:
        MqttPublisher(MqttOptions("127.0.0.1", ca_file=str(junk)))
    assert "\n" not in str(e.value)
    with pytest.raises(EdgeclfError, match="junk.crt"):
        MqttPublisher(MqttOptions("127.0.0.1", cert_file=str(junk)))


def test_an_encrypted_key_is_one_line_not_a_pass_phrase_prompt(certs, tmp_path):
    """OpenSSL asks for a key's pass phrase on the terminal unless told otherwise: a service (or
    ``serve --check``) would wait for ever."""
    key = tmp_path / "locked.key"
    subprocess.run(["openssl", "pkey", "-in", str(certs / "server.key"), "-aes256", "-passout", "pass:secret",
                    "-out", str(key)], check=True, capture_output=True)
    code = ("from edgeclf.comms.mqtt import MqttOptions, MqttPublisher\n"
            f"MqttPublisher(MqttOptions('127.0.0.1', cert_file={str(certs / 'server.crt')!r}, key_file={str(key)!r}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode != 0 and "locked.key is not usable" in r.stderr and "pass phrase" not in r.stderr.lower()


@pytest.mark.parametrize("name", ["", "a/b", "a+b", "#", "x\0y"])
def test_bad_source_names(name):
    pub = MqttPublisher(MqttOptions("127.0.0.1", free_port()), log=lambda s: None)
    with pytest.raises(EdgeclfError, match="topic level"):
        pub.start(["ok", name])


def test_options_hide_the_password_and_check_values():
    o = MqttOptions("broker.lan", username="u", password="hunter2-pw")
    assert "hunter2-pw" not in repr(o) and "hunter2-pw" not in repr(MqttPublisher(o))
    assert o.node_id and all(c.isalnum() or c in "_-" for c in o.node_id)
    for bad in ({"port": 0}, {"qos": 3}, {"node_id": "a b"}, {"prefix": "a/#"}, {"prefix": "a//b"}):
        with pytest.raises(EdgeclfError):
            MqttOptions("h", **bad)
