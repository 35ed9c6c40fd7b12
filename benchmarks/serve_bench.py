"""The live view's cost to the inference loop (issue 6), measured side by side in one run.

``edgeclf predict MODEL VIDEO --serve 127.0.0.1:0 --loop --no-realtime`` classifies a 640x480
video of the shared cat and dog photos as fast as it can, while 0, 1, 5, 20 and 50 viewers
(each with the video and the figures open, as the page does) come and go. Every window with
viewers sits between two windows without, and the ratio to their mean is reported (median of
``--rounds``), with the frames per second each viewer received. Viewer threads run at the lowest
priority: they stand in for browsers on other machines, and here share the server's two cores.

Usage: ``python benchmarks/serve_bench.py --model RUN/export/model.int8.onnx [--rounds 5]``
(without ``--model``: a random-weight CNN of about the same cost). Writes ``serve.md`` and
``serve.json`` to ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CATS_DOGS = Path(os.environ.get("EDGECLF_CATS_DOGS", ROOT.parent / "shared" / "data" / "cats_dogs" / "train"))

from benchmarks.live_client import ServeProcess, StreamCounter, get  # noqa: E402
from benchmarks.onnx_models import make_conv_model  # noqa: E402
from benchmarks.provenance import provenance, stamp_json, stamp_markdown  # noqa: E402
from edgeclf.data.synthetic import make_shapes_video  # noqa: E402


def photo_video(path: Path, photos: Path, n: int = 40, hold: int = 5, size: tuple[int, int] = (640, 480)) -> Path:
    """An MP4 of ``n`` photos (cats and dogs alternating), ``hold`` frames each, at 25 fps."""
    cats, dogs = sorted((photos / "cats").glob("*.jpg")), sorted((photos / "dogs").glob("*.jpg"))
    files = [f for pair in zip(cats, dogs) for f in pair][:n]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, size)
    for f in files:
        img = cv2.resize(cv2.imread(str(f)), size, interpolation=cv2.INTER_AREA)
        for _ in range(hold):
            writer.write(img)
    writer.release()
    return path


def measure(sp: ServeProcess, viewers: int, window: float) -> dict:
    before = sp.frame_rate(window)
    video = [StreamCounter(sp.port, "/stream.mjpg", b"--frame", nice=19) for _ in range(viewers)]
    events = [StreamCounter(sp.port, "/events", b"data: ", nice=19) for _ in range(viewers)]
    for v in video + events:
        v.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    during = sp.frame_rate(window)
    seconds = time.monotonic() - t0
    video_fps = [v.parts_since(t0) / seconds for v in video]
    event_hz = [v.parts_since(t0) / seconds for v in events]
    for v in video + events:
        v.close()
    time.sleep(0.3)
    after = sp.frame_rate(window)
    return {
        "fps_without": (before + after) / 2, "fps_with": during, "ratio": during / ((before + after) / 2),
        "viewer_video_fps_min": min(video_fps, default=None), "viewer_video_fps_median": statistics.median(video_fps) if video_fps else None,
        "viewer_events_hz_min": min(event_hz, default=None),
    }


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="an exported edgeclf .onnx model (default: a stand-in CNN)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--window", type=float, default=1.5, help="seconds per measuring window")
    ap.add_argument("--viewers", default="1,5,20,50")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    return ap.parse_args()


def serving_video(tmp: Path) -> tuple[Path, str]:
    """The shared photos as a video when they are there, else generated shapes; and what it shows."""
    if (CATS_DOGS / "cats").is_dir():
        return photo_video(tmp / "photos.mp4", CATS_DOGS), "40 shared cat and dog photos at 640x480, 5 frames each"
    video = tmp / "shapes.mp4"
    make_shapes_video(video, frames=100, size=480, fps=25, hold=5)
    return video, "generated shapes at 480x480 (shared photos not found)"


def measure_rounds(args: argparse.Namespace, video: Path, counts: list[int]) -> tuple[dict[int, list[dict]], int]:
    """Every viewer count once per round against one serving process; and the snapshot's JPEG size."""
    rows: dict[int, list[dict]] = {n: [] for n in counts}
    with ServeProcess(args.model, video, "--loop", "--no-realtime") as sp:
        sp.wait_frames(100)
        time.sleep(1.0)
        jpeg = len(get(sp.local + "/snapshot.jpg")[2])
        for r in range(args.rounds):
            for n in counts:
                rows[n].append(measure(sp, n, args.window))
                print(f"round {r + 1}/{args.rounds}, {n:>2} viewers: ratio {rows[n][-1]['ratio']:.3f}", file=sys.stderr)
        sp.stop()
    return rows, jpeg


def viewer_summary(rows: dict[int, list[dict]]) -> dict[str, dict]:
    return {
        str(n): {
            "ratio_median": statistics.median(x["ratio"] for x in rs),
            "ratio_min": min(x["ratio"] for x in rs),
            "fps_without_median": statistics.median(x["fps_without"] for x in rs),
            "fps_with_median": statistics.median(x["fps_with"] for x in rs),
            "viewer_video_fps_min": min(x["viewer_video_fps_min"] for x in rs),
            "viewer_video_fps_median": statistics.median(x["viewer_video_fps_median"] for x in rs),
            "viewer_events_hz_min": min(x["viewer_events_hz_min"] for x in rs),
        }
        for n, rs in rows.items()
    }


def to_markdown(results: dict) -> str:
    lines = [
        "# Live view (`--serve`): cost to the inference loop", "",
        f"Machine: {results['machine']}. Model: `{Path(results['model']).name}`. Video: {results['video']}, classified as fast as possible.",
        f"Annotated JPEG sent to viewers: {results['jpeg_bytes'] / 1000:.0f} KB. {results['rounds']} rounds; each window with viewers ({results['window_s']:g} s) is compared with the mean of a window before and after it without.", "",
        "| viewers | inference frames/s without | with | ratio (median) | ratio (worst round) | video frames/s per viewer (worst / median) | events/s per viewer (worst) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, v in results["viewers"].items():
        lines.append(f"| {n} | {v['fps_without_median']:.0f} | {v['fps_with_median']:.0f} | {v['ratio_median']:.3f} | {v['ratio_min']:.3f} | "
                     f"{v['viewer_video_fps_min']:.1f} / {v['viewer_video_fps_median']:.1f} | {v['viewer_events_hz_min']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgeclf-serve-bench-"))
    if args.model is None:
        args.model = make_conv_model(tmp / "conv.onnx")
    video, video_desc = serving_video(tmp)
    rows, jpeg = measure_rounds(args, video, [int(x) for x in args.viewers.split(",")])
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "model": str(args.model), "video": video_desc,
        "rounds": args.rounds, "window_s": args.window, "jpeg_bytes": jpeg, "viewers": viewer_summary(rows),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    prov = provenance()
    (args.out / "serve.json").write_text(json.dumps(stamp_json(results, prov), indent=2) + "\n")
    md = to_markdown(results)
    (args.out / "serve.md").write_text(stamp_markdown(md, prov))
    print(md, end="")


if __name__ == "__main__":
    main()
