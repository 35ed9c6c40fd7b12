"""systemd integration: sd_notify over real AF_UNIX sockets, and units that systemd-analyze accepts."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from edgeclf.errors import EdgeclfError
from edgeclf.service import unit
from edgeclf.service.systemd import Notifier, watchdog_interval

REQUIRE_SYSTEMD = os.environ.get("EDGECLF_REQUIRE_SYSTEMD") == "1"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


# --- sd_notify -------------------------------------------------------------------------------


@pytest.fixture
def sock_dir():
    """A short folder: a socket path must fit in 108 bytes, and tmp_path can be longer."""
    d = tempfile.mkdtemp(prefix="ecsd-")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def receiver(sock_dir):
    """A bound datagram socket standing in for systemd; yields (socket, NOTIFY_SOCKET value)."""
    path = sock_dir / "notify"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(5)
    yield s, str(path)
    s.close()


def recv_text(s: socket.socket) -> str:
    return s.recv(4096).decode()


def test_messages_arrive_on_a_path_socket(receiver):
    s, address = receiver
    with Notifier(address) as n:
        assert n.enabled
        assert n.ready() is True
        assert recv_text(s) == "READY=1"
        assert n.ready("serving 2 cameras")
        assert recv_text(s) == "READY=1\nSTATUS=serving 2 cameras"
        assert n.status("door: open\nsecond line")
        assert recv_text(s) == "STATUS=door: open second line"  # one field, never two
        assert n.watchdog()
        assert recv_text(s) == "WATCHDOG=1"
        assert n.stopping()
        assert recv_text(s) == "STOPPING=1"
        assert n.reloading()
        lines = recv_text(s).split("\n")
        assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=")
        assert int(lines[1].split("=")[1]) > 0
        assert n.extend_timeout(2.5)
        assert recv_text(s) == "EXTEND_TIMEOUT_USEC=2500000"


def test_messages_arrive_on_an_abstract_socket():
    name = f"edgeclf-test-{uuid.uuid4().hex}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(5)
    try:
        n = Notifier(f"@{name}")
        assert n.ready("up")
        assert recv_text(s) == "READY=1\nSTATUS=up"
        n.close()
        assert n.watchdog()  # a closed notifier opens a new socket
        assert recv_text(s) == "WATCHDOG=1"
        n.close()
    finally:
        s.close()


def test_a_child_process_notifies_through_its_environment(receiver):
    """The env path end to end, and the sender is the child itself: what NotifyAccess=main checks."""
    s, address = receiver
    s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    code = (
        "from edgeclf.service.systemd import Notifier\n"
        "n = Notifier.from_env()\n"
        "assert n.enabled\n"
        "assert n.ready(f'interval {n.watchdog_interval()}')\n"
        "assert n.stopping()\n"
    )
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "4000000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        msg, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(12))
        assert msg.decode() == "READY=1\nSTATUS=interval 2.0"
        creds = [data for level, kind, data in anc if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS]
        assert creds and struct.unpack("iII", creds[0][:12])[0] == proc.pid
        assert recv_text(s) == "STOPPING=1"
    finally:
        assert proc.wait(timeout=30) == 0


def test_unset_or_unusable_socket_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    for n in (Notifier.from_env(), Notifier.from_env({}), Notifier("relative/path"), Notifier("@"),
              Notifier("vsock:2:1234")):
        assert n.enabled is False
        assert n.ready() is False and n.watchdog() is False and n.status("x") is False
        n.close()


def test_from_env_leaves_the_environment_alone(monkeypatch, receiver):
    _, address = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    n = Notifier.from_env()
    assert n.enabled and n.ready()
    assert os.environ["NOTIFY_SOCKET"] == address and os.environ["WATCHDOG_USEC"] == "1000000"
    n.close()


def test_send_to_a_vanished_socket_returns_false(sock_dir):
    path = sock_dir / "gone"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    n = Notifier(str(path))
    assert n.ready()
    s.close()
    path.unlink()
    assert n.watchdog() is False
    assert n.stopping() is False
    assert Notifier(f"@edgeclf-test-nobody-{uuid.uuid4().hex}").ready() is False
    n.close()


def test_a_full_receive_queue_never_blocks(receiver):
    """systemd not reading (hung, or busy) must cost lost messages, not a hung service."""
    _, address = receiver
    n = Notifier(address)
    results: list[bool] = []
    # In a thread, so a blocking send fails this test instead of hanging the run.
    worker = threading.Thread(target=lambda: results.extend(n.status("x" * 200) for _ in range(5000)), daemon=True)
    start = time.monotonic()
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "a send blocked"
    assert time.monotonic() - start < 10
    assert results[0] is True and results[-1] is False
    n.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}, 0.25),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "nope"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_PID": str(os.getpid())}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env, expected):
    assert watchdog_interval(env) == expected


def test_notifier_watchdog_interval_reads_the_process_environment(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier(None).watchdog_interval() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert Notifier(None).watchdog_interval() is None


# --- the unit file --------------------------------------------------------------------------


@pytest.fixture
def config(tmp_path) -> Path:
    p = tmp_path / "conf dir" / "Front Door.toml"
    p.parent.mkdir()
    p.write_text("[[source]]\n")
    return p


def directives(text: str) -> dict[str, list[str]]:
    """KEY -> values, in order, over the whole file (our keys are unique to their section)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_system_unit_directives(config):
    d = directives(unit.unit_text(config, user=False, name="edgeclf-front-door"))
    expect = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30", "Restart": "on-failure",
        "RestartSec": "5", "TimeoutStopSec": "10", "KillSignal": "SIGTERM", "StateDirectory": "edgeclf",
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "read-only", "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes", "LockPersonality": "yes", "SupplementaryGroups": "video",
        "DevicePolicy": "auto", "WantedBy": "multi-user.target", "Wants": "network-online.target",
        "After": "network-online.target",
    }
    for key, value in expect.items():
        assert d.get(key) == [value], key
    assert "EDGECLF_STATE_DIR=%S/edgeclf" in d["Environment"]
    assert "char-video4linux rw" in d["DeviceAllow"] and "char-media rw" in d["DeviceAllow"]
    assert "PrivateDevices" not in d  # it would hide /dev/video*
    assert "Front Door.toml" in d["Description"][0]


def test_user_unit_leaves_out_what_a_user_manager_cannot_do(config):
    d = directives(unit.unit_text(config, user=True, name="edgeclf-front-door"))
    assert d["WantedBy"] == ["default.target"]
    for key in ("ProtectHome", "ProtectSystem", "SupplementaryGroups", "DeviceAllow", "PrivateTmp", "After"):
        assert key not in d, key
    assert d["Type"] == ["notify"] and d["NoNewPrivileges"] == ["yes"]


def test_execstart_runs_this_interpreter_on_the_absolute_config(config, monkeypatch):
    monkeypatch.chdir(config.parent)
    d = directives(unit.unit_text(Path(config.name), user=False, name="x"))
    argv = shlex.split(d["ExecStart"][0])
    assert argv[0] == os.path.abspath(sys.executable) and argv[1] == "-m"
    assert argv[2] == "edgeclf"
    assert argv[3:] == ["serve", str(config)]


def test_execstart_escapes_specifiers_quotes_and_variables(tmp_path):
    weird = tmp_path / 'a "b" 100% $HOME\\x.toml'
    d = directives(unit.unit_text(weird, user=False, name="x", executable=["/usr/bin/python3"]))
    line = d["ExecStart"][0]
    assert "100%% $$HOME" in line
    assert shlex.split(line.replace("%%", "%").replace("$$", "$")) == ["/usr/bin/python3", "serve", str(weird)]
    assert unit.quote_arg("plain/path.toml") == "plain/path.toml"
    assert unit.quote_arg(";") == '";"'
    with pytest.raises(EdgeclfError):
        unit.quote_arg("line\nbreak")


def test_no_watchdog_and_no_device_policy_when_asked(config):
    d = directives(unit.unit_text(config, user=False, name="x", watchdog_s=0, devices=None))
    assert "WatchdogSec" not in d and "DeviceAllow" not in d and "DevicePolicy" not in d
    assert d["SupplementaryGroups"] == ["video"]


def test_unit_names(tmp_path):
    assert unit.unit_name(Path("/etc/edgeclf/Front Door.toml")) == "edgeclf-front-door.service"
    assert unit.unit_name(Path("cam_01.v2.toml")) == "edgeclf-cam-01-v2.service"
    assert unit.unit_name(Path("___.toml")) == "edgeclf-default.service"
    cfg = tmp_path / "c.toml"
    cfg.write_text("")
    for bad in ("a/b", "a b", "x@.service"):
        with pytest.raises(EdgeclfError):
            unit.install(cfg, unit_dir=tmp_path / "u", name=bad)


# --- systemd-analyze verify ------------------------------------------------------------------


def verify(path: Path, *, user: bool, runtime_dir: Path) -> list[str]:
    """The lines ``systemd-analyze verify`` prints about ``path``'s unit.

    A user manager needs XDG_RUNTIME_DIR; lines about other units (a container's own unit files)
    are not ours to judge, so only lines naming this unit or its command count."""
    if SYSTEMD_ANALYZE is None:
        if REQUIRE_SYSTEMD:
            pytest.fail("systemd-analyze is missing and EDGECLF_REQUIRE_SYSTEMD=1")
        pytest.skip("needs systemd-analyze: apt install systemd")
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir), "SYSTEMD_LOG_LEVEL": "notice"}
    cmd = [SYSTEMD_ANALYZE, *(["--user"] if user else []), "verify", "--man=no", str(path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    lines = (res.stdout + res.stderr).splitlines()
    ours = [line for line in lines if path.name in line or path.stem in line or "Command " in line]
    if res.returncode != 0 and not ours:
        ours = [f"exit {res.returncode} without a line about the unit: {lines}"]
    return ours


@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_generated_unit_passes_systemd_analyze_verify(config, tmp_path, user):
    path = unit.install(config, user=user, unit_dir=tmp_path / "units dir")
    assert verify(path, user=user, runtime_dir=tmp_path / "run") == []


def test_verify_unescapes_the_command_as_we_escaped_it(tmp_path):
    """verify checks that ExecStart's program exists: a path with spaces, % and $ proves the quoting
    (arguments are not checked by verify; test_execstart_escapes_... covers those)."""
    program = tmp_path / "bin 100% $x" / "py thon"
    program.parent.mkdir()
    program.symlink_to(sys.executable)
    weird = tmp_path / 'a "b" 100% $HOME\\x.toml'
    text = unit.unit_text(weird, user=False, name="q", executable=[str(program), "-m", "edgeclf"])
    path = tmp_path / "edgeclf-q.service"
    path.write_text(text)
    assert verify(path, user=False, runtime_dir=tmp_path / "run") == []
    # The control: the same check does see a program that is not there.
    path.write_text(text.replace("py thon", "missing"))
    assert any("missing" in line for line in verify(path, user=False, runtime_dir=tmp_path / "run"))


def test_a_program_path_systemd_cannot_run_is_refused(config):
    for bad in ('/opt/my "env"/bin/python', "/opt/it's/python", "/opt/back\\slash/python"):
        with pytest.raises(EdgeclfError, match="quotes or backslashes"):
            unit.unit_text(config, user=False, name="x", executable=[bad, "-m", "edgeclf"])


def test_verify_check_reports_a_broken_unit(config, tmp_path):
    """The assertion above can fail: a bad value in our unit is reported."""
    path = unit.install(config, unit_dir=tmp_path / "units")
    path.write_text(path.read_text().replace("ProtectSystem=strict", "ProtectSystem=sometimes"))
    assert any("ProtectSystem" in line or "protect system" in line
               for line in verify(path, user=False, runtime_dir=tmp_path / "run"))


# --- install / uninstall ---------------------------------------------------------------------


def test_install_writes_the_unit_with_mode_0644(config, tmp_path):
    units = tmp_path / "units"
    path = unit.install(config, unit_dir=units)
    assert path == units / "edgeclf-front-door.service"
    assert path.stat().st_mode & 0o777 == 0o644
    assert path.read_text() == unit.unit_text(config, user=False, name="edgeclf-front-door")
    assert sorted(p.name for p in units.iterdir()) == [path.name]  # no temporary file left


def test_install_again_is_a_no_op_and_a_different_unit_needs_force(config, tmp_path):
    units = tmp_path / "units"
    path = unit.install(config, unit_dir=units)
    assert unit.install(config, unit_dir=units) == path
    path.write_text("# edited by hand\n")
    with pytest.raises(EdgeclfError, match="--force") as e:
        unit.install(config, unit_dir=units)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    assert path.read_text() == "# edited by hand\n"
    assert unit.install(config, unit_dir=units, force=True) == path
    assert path.read_text().startswith(unit.MARKER)


def test_a_failed_write_keeps_the_old_unit_and_leaves_no_temp_file(config, tmp_path, monkeypatch):
    units = tmp_path / "units"
    path = unit.install(config, unit_dir=units, name="cam")
    before = path.read_text()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(unit.os, "replace", broken_replace)
    other = config.with_name("other.toml")
    other.write_text("")
    with pytest.raises(EdgeclfError, match="No space left"):
        unit.install(other, unit_dir=units, name="cam", force=True)
    assert path.read_text() == before
    assert sorted(p.name for p in units.iterdir()) == ["cam.service"]


def test_bad_config_paths(tmp_path):
    for bad, words in ((tmp_path / "nope.toml", "does not exist"), (tmp_path, "is not a file")):
        with pytest.raises(EdgeclfError, match=words) as e:
            unit.install(bad, unit_dir=tmp_path / "units")
        assert str(bad) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "units").exists()


def test_system_install_without_permission_suggests_sudo_or_user(config, tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(unit.tempfile, "mkstemp", denied)
    with pytest.raises(EdgeclfError, match="sudo.*--user") as e:
        unit.install(config, unit_dir=tmp_path / "units")
    assert "\n" not in str(e.value)


def test_user_install_goes_to_xdg_config_home(config, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert unit.default_unit_dir(user=True) == tmp_path / "xdg" / "systemd" / "user"
    assert unit.default_unit_dir(user=False) == Path("/etc/systemd/system")
    path = unit.install(config, user=True)
    assert path == tmp_path / "xdg" / "systemd" / "user" / "edgeclf-front-door.service"
    assert "WantedBy=default.target" in path.read_text()
    assert unit.uninstall("edgeclf-front-door", user=True) == path and not path.exists()


def test_uninstall_by_name_or_config_removes_enable_links(config, tmp_path):
    units = tmp_path / "units"
    path = unit.install(config, unit_dir=units)
    wants = units / "multi-user.target.wants"
    wants.mkdir()
    (wants / path.name).symlink_to(path)
    assert unit.uninstall(config, unit_dir=units) == path
    assert not path.exists() and not os.path.lexists(wants / path.name)
    with pytest.raises(EdgeclfError, match="no such service") as e:
        unit.uninstall(config, unit_dir=units)
    assert "\n" not in str(e.value)
    path = unit.install(config, unit_dir=units, name="porch")
    assert unit.uninstall("porch.service", unit_dir=units) == path and not path.exists()


def test_uninstall_refuses_a_unit_edgeclf_did_not_write(tmp_path):
    units = tmp_path / "units"
    units.mkdir()
    foreign = units / "edgeclf-x.service"
    foreign.write_text("[Service]\nExecStart=/bin/true\n")
    with pytest.raises(EdgeclfError, match="not written by edgeclf"):
        unit.uninstall("edgeclf-x", unit_dir=units)
    assert foreign.exists()


def test_instructions():
    system = unit.enable_instructions("edgeclf-door", user=False)
    assert "systemctl daemon-reload && systemctl enable --now edgeclf-door.service" in system
    assert "journalctl -u edgeclf-door.service" in system and "--user" not in system
    user = unit.enable_instructions("edgeclf-door.service", user=True)
    assert "systemctl --user daemon-reload && systemctl --user enable --now edgeclf-door.service" in user
    assert "journalctl --user -u edgeclf-door.service" in user and "enable-linger" in user
    assert unit.uninstall_instructions("edgeclf-door", user=True) == (
        "systemctl --user stop edgeclf-door.service && systemctl --user daemon-reload")


def test_service_modules_stay_light():
    code = (
        "import sys\n"
        "import edgeclf.service.systemd, edgeclf.service.unit\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'onnx', 'onnxruntime', 'numpy')"
        " or m.startswith(('edgeclf.train', 'edgeclf.export'))]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
