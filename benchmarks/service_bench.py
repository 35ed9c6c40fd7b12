"""``edgeclf serve``: event latency to an MQTT subscriber, and throughput of 4 sources against 1.

    python benchmarks/service_bench.py [--seconds 30] [--out benchmarks/results/service]

1. Event latency: 4 sources, each a looping colour video read at its own frame rate (20 frames/s,
   colour changes every 10 frames), the colour model (benchmarks/onnx_models.py: its answers are
   known, its inference costs well under a millisecond), a real mosquitto on loopback and a paho
   subscriber; latency = the subscriber's receive time minus the event's ``timestamp`` (the capture
   time of the frame that completed the debounce), on one clock. Every state seen is also checked
   against the video's colour sequence.
2. Throughput: video files read flat out (``realtime = false``) through a CNN of a real edge
   classifier's cost (benchmarks/onnx_models.make_conv_model, 128 px, random weights; ``--model``
   a real one, e.g. a run's export/model.int8.onnx), 1 source
   against 4, batching across sources on, off and measured at run time (``batch = "auto"``, the
   default). Needs Debian's mosquitto for part 1. Each mode also reports the process's CPU time
   per classified frame and how many cores it kept busy: where 4 sources keep every core busy, the
   ratio to 1 source is bounded by the CPU one frame costs (reading, preprocessing, inference), not
   by how frames are batched.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.mqtt_broker import Broker, Watcher  # noqa: E402
from benchmarks.onnx_models import make_colour_model, make_conv_model  # noqa: E402
from benchmarks.provenance import provenance  # noqa: E402
from edgeclf.service.config import load_config  # noqa: E402
from edgeclf.service.runner import Service, publishers_for  # noqa: E402


def make_colour_video(path: Path, frames: int, fps: float, hold: int, size: tuple[int, int] = (160, 120)) -> Path:
    """Red, green and blue in turn, ``hold`` frames each, with pixel noise (as the tests' videos)."""
    bgr = {0: (0, 0, 255), 1: (0, 255, 0), 2: (255, 0, 0)}
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    rng = np.random.default_rng(0)
    for i in range(frames):
        img = np.array(bgr[(i // hold) % 3], np.float32) * 0.8 + rng.normal(0, 20, (size[1], size[0], 3))
        writer.write(np.clip(img, 0, 255).astype(np.uint8))
    writer.release()
    return path


def _config(work: Path, model: str, videos: list[str], extra: str = "", source_extra: str = "") -> Path:
    text = f'model = "{model}"\nthreads = 2\n{extra}\n'
    for i, v in enumerate(videos):
        text += f'\n[[source]]\nname = "cam{i}"\nuri = "{v}"\n{source_extra}\n'
    path = work / f"bench-{len(videos)}-{abs(hash(text)) % 10**6}.toml"
    path.write_text(text)
    return path


def _run(cfg_path: Path, seconds: float) -> Service:
    cfg = load_config(cfg_path)
    svc = Service(cfg, log=lambda m: None, publishers=publishers_for(cfg, "m", log=lambda m: None))
    cpu0 = time.process_time()  # before start(): the readers begin reading there
    svc.start()
    wall0 = time.monotonic()
    end = time.monotonic() + seconds
    t = threading.Thread(target=svc.run, kwargs={"until": lambda: time.monotonic() > end}, daemon=True)
    t.start()
    t.join(seconds + 30)
    svc.cpu_s = time.process_time() - cpu0  # every thread of the process: readers, inference, publishers
    svc.wall_s = time.monotonic() - wall0
    svc.close()
    return svc


def latency(work: Path, seconds: float) -> dict:
    make_colour_model(work / "colour.onnx")
    videos = []
    for i in range(4):
        make_colour_video(work / f"v{i}.mp4", frames=90, fps=20, hold=10)
        videos.append(f"v{i}.mp4")
    broker = Broker(work).start()
    watcher = Watcher(broker.port, topics=("edgeclf/#",))
    got: list[tuple[str, float]] = []  # (topic, latency_ms)
    original = watcher.c.on_message

    def on_message(client, userdata, msg) -> None:  # noqa: ANN001
        if msg.topic.endswith("/state") and not msg.retain:
            got.append((msg.topic, (time.time() - json.loads(msg.payload)["timestamp"]) * 1000))
        original(client, userdata, msg)

    watcher.c.on_message = on_message
    cfg = _config(work, "colour.onnx", videos, f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nnode_id = "bench"\n',
                  "loop = true\ndebounce_frames = 3\n")
    svc = _run(cfg, seconds)
    watcher.close()
    broker.kill()
    lat = sorted(ms for _, ms in got)
    order = ["red", "green", "blue"]
    wrong = 0
    for i in range(4):
        labels = [json.loads(m.payload)["label"] for m in watcher.messages if m.topic == f"edgeclf/bench/cam{i}/state"]
        wrong += sum(1 for a, b in zip(labels, labels[1:]) if order[(order.index(a) + 1) % 3] != b)
    return {"events": len(lat), "p50_ms": round(statistics.median(lat), 2), "p99_ms": round(lat[int(0.99 * (len(lat) - 1))], 2),
            "max_ms": round(lat[-1], 2), "out_of_sequence": wrong, "frames": svc.stats.frames, "seconds": seconds}


def throughput(work: Path, seconds: float, model: Path | None = None) -> dict:
    if model is None:
        model = make_conv_model(work / "conv.onnx", size=128)
    for i in range(4):
        make_colour_video(work / f"t{i}.mp4", frames=600, fps=30, hold=10, size=(320, 240))
    out = {}
    modes = (("1 source", 1, "true"), ("4 sources, batched", 4, "true"), ("4 sources, one by one", 4, "false"),
             ("4 sources, batch = auto (the default)", 4, '"auto"'))
    for name, n, batch in modes:
        cfg = _config(work, str(Path(model).resolve()), [f"t{i}.mp4" for i in range(n)], f"batch = {batch}",
                      "realtime = false\nloop = true\n")
        svc = _run(cfg, seconds)
        per = {w.name: w.frames for w in svc.workers}
        out[name] = {"fps": round(svc.stats.frames / seconds, 1), "calls": svc.stats.calls,
                     "per_source_fps": {k: round(v / seconds, 1) for k, v in per.items()},
                     "cpu_ms_per_frame": round(1000 * svc.cpu_s / max(1, svc.stats.frames), 2),
                     "cores_busy": round(svc.cpu_s / svc.wall_s, 2), "cores": os.cpu_count()}
        if batch == '"auto"':
            out[name]["chose"] = svc.chooser.describe() if svc.chooser.choice is not None else "undecided"
    one = out["1 source"]["fps"]
    for name, _, _ in modes[1:]:
        out[name]["ratio_to_1_source"] = round(out[name]["fps"] / one, 2)
        fair = [f / (out[name]["fps"] / 4) for f in out[name]["per_source_fps"].values()]
        out[name]["worst_source_share_pct"] = round(100 * min(fair), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgeclf-service-bench"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "service")
    ap.add_argument("--model", type=Path, help="a real model for the throughput part (e.g. a run's "
                                               "export/model.int8.onnx); default: the 128 px stand-in CNN")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    res = {"provenance": provenance(sys.argv), "latency": latency(a.work, a.seconds),
           "throughput": throughput(a.work, a.seconds, a.model)}
    if a.model is not None:
        res["throughput"]["model"] = str(a.model)
    a.out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
