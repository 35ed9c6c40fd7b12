"""Debian's mosquitto broker on a loopback port and a paho subscriber that records what it hears:
shared by the service benchmark and the MQTT and service tests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
NODE = "testnode"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout: float = 8.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


class Broker:
    """mosquitto on 127.0.0.1:port with a config of our own; ``lines`` are extra config lines."""

    def __init__(self, tmp: Path, lines: list[str] = (), port: int | None = None) -> None:
        self.port = port or free_port()
        self.conf = tmp / f"mosquitto-{self.port}.conf"
        # user root: as root, mosquitto would switch to the user "mosquitto", who cannot read tmp_path
        self.conf.write_text("\n".join([f"listener {self.port} 127.0.0.1", "persistence false", "user root",
                                        "log_dest none", *(lines or ["allow_anonymous true"])]) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)

        def listening() -> bool:
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(listening, 5, "mosquitto to listen")
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class Watcher:
    """A paho subscriber that records every message under the topics it watches."""

    def __init__(self, port: int, topics=("edgeclf/#", "homeassistant/#"), **kw) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.ready = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2)
        if kw.get("username"):
            self.c.username_pw_set(kw["username"], kw["password"])
        self.c.on_message = lambda c, u, m: self.messages.append(m)
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.ready.wait(5), "subscriber did not subscribe"

    def on(self, topic: str) -> list[mqtt.MQTTMessage]:
        return [m for m in self.messages if m.topic == topic]

    def texts(self, topic: str) -> list[str]:
        return [m.payload.decode() for m in self.on(topic)]

    def states(self, source: str = "door") -> list[dict]:
        return [json.loads(m.payload) for m in self.on(f"edgeclf/{NODE}/{source}/state")]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()
