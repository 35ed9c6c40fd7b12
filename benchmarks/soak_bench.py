"""``edgeclf serve`` for half an hour: 4 looping camera-like sources, a real mosquitto restarted
every 5 minutes, and a subscriber that checks every state change against the videos.

    python benchmarks/soak_bench.py [--minutes 30] [--restart-every 300] [--out benchmarks/results/soak]

The service runs as it would on a device (``python -m edgeclf serve CONFIG.toml``, a process of its
own) on 4 colour videos read at their frame rate and looped; each video shows red, green and blue
in turn, for 3 to 6 seconds each, so its true sequence of states is known. The colour model
(benchmarks/onnx_models.py) classifies them. Every ``--restart-every`` seconds the broker is
killed (SIGKILL, as a crash) and started again on the same port.

Checked at the end:
- no state change lost: per source, the changes the subscriber saw (retained re-sends folded; the
  first state is not a change) equal the service's own count (``edgeclf_state_changes_total`` on /metrics), and every change follows
  the previous one in the videos' order (a skipped colour would be a lost change);
- memory: resident set size at the end against after the first 2 minutes (goal: under 5% growth);
- file descriptors and threads: the same at the end as after warm-up;
- SIGTERM: seconds until the process has exited (goal: 1 s).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from benchmarks.mqtt_broker import Broker, Watcher, free_port, wait_for  # noqa: E402
from benchmarks.onnx_models import make_colour_model  # noqa: E402
from benchmarks.provenance import provenance  # noqa: E402
from benchmarks.service_bench import make_colour_video  # noqa: E402

ORDER = ["red", "green", "blue"]
FPS = 15
HOLDS = (45, 60, 75, 90)  # frames per colour: 3, 4, 5 and 6 s at 15 frames/s
NODE = "soak"


def _config(work: Path, broker_port: int, http_port: int) -> Path:
    text = (f'model = "colour.onnx"\nthreads = 2\n\n[defaults]\nloop = true\ndebounce_frames = 3\ntimeout = 5\n\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\nnode_id = "{NODE}"\n\n'
            f'[server]\nlisten = "127.0.0.1:{http_port}"\n')
    for i, hold in enumerate(HOLDS):
        make_colour_video(work / f"cam{i}.mp4", frames=3 * hold, fps=FPS, hold=hold)
        text += f'\n[[source]]\nname = "cam{i}"\nuri = "cam{i}.mp4"\n'
    path = work / "soak.toml"
    path.write_text(text)
    return path


def _proc_sample(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    return {"rss_mb": round(rss_kb / 1024, 1), "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": threads}


def _metric(port: int, name: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(rf'^{name}{{source="([^"]+)"}} (\S+)$', text, re.M)}


def _changes_seen(watcher: Watcher, source: str) -> list[dict]:
    """The distinct states the subscriber heard for ``source``, in order (a retained re-send of the
    same change carries the same timestamp and is folded)."""
    seen: list[dict] = []
    for m in watcher.on(f"edgeclf/{NODE}/{source}/state"):
        p = json.loads(m.payload)
        if not seen or (p["timestamp"], p["label"]) != (seen[-1]["timestamp"], seen[-1]["label"]):
            seen.append(p)
    return seen


def _check(seen: list[dict]) -> int:
    """How many changes do not follow the previous one in the videos' order (each one a lost change)."""
    return sum(1 for a, b in zip(seen, seen[1:]) if ORDER[(ORDER.index(a["label"]) + 1) % 3] != b["label"])


def soak(work: Path, minutes: float, restart_every: float, sample_every: float = 10.0) -> dict:
    make_colour_model(work / "colour.onnx")
    broker = Broker(work).start()
    watcher = Watcher(broker.port, topics=("edgeclf/#",))
    watcher.c.reconnect_delay_set(1, 2)
    http_port = free_port()
    cfg = _config(work, broker.port, http_port)
    log = (work / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "edgeclf", "serve", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    samples: list[dict] = []
    restarts = 0
    try:
        wait_for(lambda: all(_changes_seen(watcher, f"cam{i}") for i in range(len(HOLDS))), 60, "a first state from every source")
        t0 = time.monotonic()
        next_restart, next_sample = t0 + restart_every, t0
        while (now := time.monotonic()) < t0 + minutes * 60:
            assert proc.poll() is None, f"the service died: see {work / 'serve.log'}"
            if now >= next_sample:
                samples.append({"t_s": round(now - t0), **_proc_sample(proc.pid)})
                next_sample += sample_every
            if now >= next_restart:
                broker.kill()
                broker.start()
                restarts += 1
                next_restart += restart_every
            time.sleep(0.2)
        time.sleep(2)  # the last change in flight reaches the subscriber
        counted = _metric(http_port, "edgeclf_state_changes_total")
        frames = _metric(http_port, "edgeclf_frames_total")
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        sigterm_s = time.monotonic() - t_term
        wait_for(lambda: watcher.texts(f"edgeclf/{NODE}/availability")[-1:] == ["offline"], 10, "offline")
    finally:
        if proc.poll() is None:
            proc.kill()
        watcher.close()
        broker.kill()
        log.close()
    return _report(watcher, samples, counted, frames, restarts, minutes, rc, sigterm_s)


def _report(watcher: Watcher, samples: list[dict], counted: dict, frames: dict, restarts: int, minutes: float,
            rc: int, sigterm_s: float) -> dict:
    sources = {}
    for i, hold in enumerate(HOLDS):
        name = f"cam{i}"
        seen = _changes_seen(watcher, name)
        sources[name] = {"seconds_per_colour": hold / FPS, "changes_counted_by_service": int(counted.get(name, 0)),
                         "changes_seen_by_subscriber": max(0, len(seen) - 1), "out_of_order": _check(seen),
                         "frames": int(frames.get(name, 0))}
    warm = [s for s in samples if s["t_s"] >= 120] or samples
    base, end = warm[: 6], samples[-6:]
    rss0, rss1 = statistics.median(s["rss_mb"] for s in base), statistics.median(s["rss_mb"] for s in end)
    lost = sum(max(0, s["changes_counted_by_service"] - s["changes_seen_by_subscriber"]) + s["out_of_order"]
               for s in sources.values())
    return {
        "minutes": minutes, "broker_restarts": restarts, "sources": sources, "lost_changes": lost,
        "rss_mb_after_warmup": rss0, "rss_mb_at_end": rss1, "rss_growth_pct": round(100 * (rss1 - rss0) / rss0, 2),
        "fds_after_warmup": base[0]["fds"], "fds_max": max(s["fds"] for s in warm), "fds_at_end": end[-1]["fds"],
        "threads_after_warmup": base[0]["threads"], "threads_at_end": end[-1]["threads"],
        "sigterm_exit_s": round(sigterm_s, 3), "exit_code": rc, "samples": samples,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--restart-every", type=float, default=300, help="seconds between broker restarts")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgeclf-soak"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "soak")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    res = {"provenance": provenance(sys.argv), **soak(a.work, a.minutes, a.restart_every)}
    a.out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    shown = {k: v for k, v in res.items() if k != "samples"}
    print(json.dumps(shown, indent=1))


if __name__ == "__main__":
    main()
