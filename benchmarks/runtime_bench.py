"""Edge runtime goals (issue 4), measured side by side in one run.

1. Cold start, one image, process start to printed label, wall time and peak RSS:
   ``edgeclf predict MODEL image.jpg`` vs a bare ten-line numpy+cv2+onnxruntime script vs loading
   the Keras model and calling ``model.predict`` as the tutorials do. The three run interleaved,
   round after round, so background load hits them alike; medians are reported.
   Goals: edgeclf within 2x of the bare script, at least 8x faster than Keras, peak RSS < 130 MB.
2. A video file: end-to-end frames per second of the predict pipeline (reader thread decoding
   while the main thread infers) vs each stage alone (decode+resize alone, inference alone).
   Goal: end to end at least 90% of the slowest stage.

Usage: ``python benchmarks/runtime_bench.py [--rounds 7] [--frames 300] [--out benchmarks/results]``
(needs the train extra, to build and export the model; the measured runtime itself never imports
TensorFlow). Writes ``runtime.md`` and ``runtime.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CATS_DOGS = Path(os.environ.get("EDGECLF_CATS_DOGS", ROOT.parent / "shared" / "data" / "cats_dogs" / "train"))
SIZE = 128

BARE_SCRIPT = textwrap.dedent(
    """
    import sys, json, numpy as np, cv2, onnxruntime as ort
    sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    names, h, w = json.loads(meta["class_names"]), int(meta["input_height"]), int(meta["input_width"])
    img = cv2.imread(sys.argv[2])
    x = cv2.cvtColor(cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)[None]
    probs = sess.run(None, {sess.get_inputs()[0].name: x})[0][0]
    print(sys.argv[2], names[int(probs.argmax())], f"{probs.max():.3f}")
    """
)

KERAS_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, keras
    model = keras.models.load_model(sys.argv[1])
    size = int(model.inputs[0].shape[1])
    img = keras.utils.load_img(sys.argv[2], target_size=(size, size))
    x = np.expand_dims(keras.utils.img_to_array(img), 0)
    probs = model.predict(x, verbose=0)[0]
    print(sys.argv[2], ["cats", "dogs"][int(probs.argmax())], f"{probs.max():.3f}")
    """
)


def build_models(work: Path) -> tuple[Path, Path]:
    """An edgenet (train.models) saved as .keras and exported to uint8-input ONNX with metadata."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import tf2onnx

    from edgeclf.train.models import ARCHITECTURES

    model = ARCHITECTURES["edgenet"].build(2, SIZE)
    keras_path = work / "model.keras"
    model.save(keras_path)
    spec = (tf.TensorSpec([None, SIZE, SIZE, 3], tf.uint8, name="image"),)

    @tf.function(input_signature=spec)
    def serve(image):
        return {"probs": model(tf.cast(image, tf.float32), training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=17)
    meta = {"class_names": json.dumps(["cats", "dogs"]), "input_height": str(SIZE), "input_width": str(SIZE),
            "color_order": "RGB", "precision": "fp32", "architecture": "edgenet"}
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx_path = work / "model.onnx"
    onnx_path.write_bytes(proto.SerializeToString())
    return keras_path, onnx_path


def timed_run(cmd: list[str]) -> tuple[float, float, float, str]:
    """Wall seconds, peak RSS (MiB), CPU seconds (user + system) and stdout of one fresh process.

    ru_maxrss of a child counts the parent's pages it started as, so this process keeps small
    (stdlib only) while it measures; TensorFlow and the runtime load only in other processes."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed with {proc.returncode}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, out.strip()


def bench_cold(onnx_path: Path, keras_path: Path, image: Path, rounds: int, work: Path) -> dict:
    bare = work / "bare.py"
    bare.write_text(BARE_SCRIPT)
    kscript = work / "keras_predict.py"
    kscript.write_text(KERAS_SCRIPT)
    py = sys.executable
    cmds = {
        "edgeclf predict": [py, "-m", "edgeclf.cli", "predict", str(onnx_path), str(image), "--provider", "cpu"],
        "bare onnxruntime script": [py, str(bare), str(onnx_path), str(image)],
        "keras model.predict": [py, str(kscript), str(keras_path), str(image)],
    }
    runs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in cmds}
    outputs = {}
    for name, cmd in cmds.items():  # warm the page cache once, not measured
        outputs[name] = timed_run(cmd)[3]
    for r in range(rounds):
        order = list(cmds) if r % 2 == 0 else list(reversed(cmds))
        for name in order:
            wall, rss, cpu, _ = timed_run(cmds[name])
            runs[name].append((wall, rss, cpu))
        print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {runs[n][-1][0]:.2f}s" for n in cmds), file=sys.stderr)
    res = {name: {"wall_s_median": round(statistics.median(v[0] for v in vals), 3),
                  "wall_s_min": round(min(v[0] for v in vals), 3),
                  "peak_rss_mib_median": round(statistics.median(v[1] for v in vals), 1),
                  "cpu_s_median": round(statistics.median(v[2] for v in vals), 3), "output": outputs[name]}
           for name, vals in runs.items()}
    e, b, k = (res[n]["wall_s_median"] for n in cmds)
    ce, cb, ck = (res[n]["cpu_s_median"] for n in cmds)
    res["ratios"] = {"edgeclf_vs_bare": round(e / b, 2), "keras_vs_edgeclf": round(k / e, 2),
                     "cpu_edgeclf_vs_bare": round(ce / cb, 2), "cpu_keras_vs_edgeclf": round(ck / ce, 2)}
    res["goals"] = {
        "edgeclf within 2x of bare": e / b <= 2.0,
        "edgeclf at least 8x faster than keras": k / e >= 8.0,
        "edgeclf peak RSS under 130 MB": res["edgeclf predict"]["peak_rss_mib_median"] * 1.048576 < 130,
    }
    return res


def _decode_alone(clf, video: Path) -> tuple[float, list]:
    from edgeclf.sources.open import open_source

    t0 = time.perf_counter()
    tensors = [clf.preprocess(f.image) for f in open_source(video)]
    return len(tensors) / (time.perf_counter() - t0), tensors


def _infer_alone(clf, tensors: list, batch: int = 1) -> float:
    import numpy as np

    from edgeclf.model.batching import in_batches

    t0 = time.perf_counter()
    in_batches(lambda b: clf.predict_arrays(np.stack(b)), tensors, batch)
    return len(tensors) / (time.perf_counter() - t0)


def _sequential(clf, video: Path) -> float:
    """A plain read-then-infer loop, for reference."""
    from edgeclf.sources.open import open_source

    t0 = time.perf_counter()
    n = 0
    for f in open_source(video):
        clf.predict_arrays(clf.preprocess(f.image)[None])
        n += 1
    return n / (time.perf_counter() - t0)


def _end_to_end(onnx_path: Path, video: Path, threads: int, batch: int) -> float:
    from edgeclf.predict.loop import PredictOptions, run_predict

    s = run_predict(PredictOptions(onnx_path, str(video), provider="cpu", threads=threads, batch=batch, quiet=True))
    return s.processed / s.seconds


def bench_video(onnx_path: Path, video: Path, rounds: int) -> dict:
    """Frames per second of each stage alone and of the whole pipeline, for the default thread
    count and for one inference thread (which leaves the second core to the reader thread)."""
    from edgeclf.model.classifier import Classifier
    from edgeclf.model.threads import default_threads

    configs = sorted({default_threads(), 1}, reverse=True)
    # The stages alone run with the settings `edgeclf predict` uses (no spinning worker threads);
    # onnxruntime's default (spinning) is measured too: faster alone, slower in the pipeline.
    clfs = {t: Classifier(onnx_path, provider="cpu", threads=t, spin=False) for t in configs}
    spinning = Classifier(onnx_path, provider="cpu", threads=configs[0], spin=True)
    rows: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)

    for r in range(rounds):
        fps_dec, tensors = _decode_alone(clfs[1], video)
        add("decode+resize alone", fps_dec)
        for t in configs:
            add(f"inference alone, {t} thread(s)", _infer_alone(clfs[t], tensors))
            add(f"sequential loop, {t} thread(s)", _sequential(clfs[t], video))
            add(f"predict pipeline, {t} thread(s)", _end_to_end(onnx_path, video, t, 1))
        t = configs[0]
        add(f"inference alone, {t} thread(s), spinning", _infer_alone(spinning, tensors))
        add(f"inference alone, {t} thread(s), batch 8", _infer_alone(clfs[t], tensors, 8))
        add(f"predict pipeline, {t} thread(s), batch 8", _end_to_end(onnx_path, video, t, 8))
        print("  video round", r + 1, {k: round(v[-1], 1) for k, v in rows.items()}, file=sys.stderr)
    return _video_summary(rows, configs)


def _video_summary(rows: dict[str, list[float]], configs: list[int]) -> dict:
    """Medians, and each pipeline against its slowest stage (median, and the median of per-round ratios)."""
    med = {k: round(statistics.median(v), 1) for k, v in rows.items()}
    out: dict = {"fps_median": med, "threads_default": configs[0], "per_config": {}}
    dec = "decode+resize alone"
    for t in configs:
        inf, e2e = f"inference alone, {t} thread(s)", f"predict pipeline, {t} thread(s)"
        slowest = min(med[dec], med[inf])
        # per round too: stages and pipeline measured seconds apart see similar background load
        per_round = [e / min(d, i) for d, i, e in zip(rows[dec], rows[inf], rows[e2e])]
        out["per_config"][t] = {
            "slowest_stage_fps": slowest,
            "end_to_end_fps": med[e2e],
            "end_to_end_vs_slowest": round(med[e2e] / slowest, 3),
            "end_to_end_vs_slowest_per_round_median": round(statistics.median(per_round), 3),
        }
    t = configs[0]
    out["batch8_vs_slowest"] = round(
        med[f"predict pipeline, {t} thread(s), batch 8"] / min(med["decode+resize alone"], med[f"inference alone, {t} thread(s), batch 8"]), 3)
    return out


def make_video(path: Path, frames: int) -> None:
    """A 640x480 video (shapes drawn on noise, a new one every 15 frames): a webcam-sized input."""
    import cv2
    import numpy as np

    from edgeclf.data.synthetic import SHAPES, draw_shape

    rng = np.random.default_rng(0)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    for i in range(frames):
        if i % 15 == 0:
            img = cv2.resize(draw_shape(SHAPES[(i // 15) % 3], 480, rng), (640, 480))
        w.write(img)
    w.release()


NOTE = """Reading these figures: with a load average above the number of CPUs, other processes take
cores from every measurement at random, and the pipeline (two busy threads) loses more to that
than a stage measured alone. On 2 cores, decoding and inference also compete for the same
cores, so the pipeline can reach the slowest stage only when that stage leaves a core free.
Compare ratios within one run; check the goals on an idle machine (`--rounds`, `--video-rounds`).
Stages alone and pipelines use the session settings of `edgeclf predict` (worker threads do not
spin); the `spinning` row is onnxruntime's default, faster alone but slower next to a reader thread.
"""


def to_markdown(res: dict) -> str:
    lines = [
        "# Edge runtime benchmark (issue 4)", "",
        f"Measured {res['date']} on {res['machine']} ({res['cpus']} CPUs usable; load average at start "
        f"{res['loadavg_start']}), Python {res['python']}, onnxruntime {res['versions']['onnxruntime']}, "
        f"OpenCV {res['versions']['cv2']}. Model: "
        + (f"`{Path(res['model']).name}` of the run (`--run`)" if "--run" in res["command"] else
           f"edgenet {SIZE}x{SIZE}, 2 classes, fp32 ONNX (tf2onnx, uint8 input)")
        + f". Reproduce: `{res['command']}`.", "",
    ]
    return "\n".join(lines + _cold_lines(res) + _video_lines(res) + ["", NOTE])


def _cold_lines(res: dict) -> list[str]:
    c = res["cold"]
    lines = [f"## Cold start: one image, process start to printed label ({res['rounds']} interleaved rounds, medians)", "",
             "| | wall (s) | best wall (s) | CPU user+sys (s) | peak RSS (MiB) |", "|---|---:|---:|---:|---:|"]
    for n in ["edgeclf predict", "bare onnxruntime script", "keras model.predict"]:
        lines.append(f"| {n} | {c[n]['wall_s_median']:.3f} | {c[n]['wall_s_min']:.3f} | {c[n]['cpu_s_median']:.3f} | {c[n]['peak_rss_mib_median']:.0f} |")
    return lines + [
        "",
        f"- edgeclf / bare script: **{c['ratios']['edgeclf_vs_bare']}x** (goal <= 2x: {'met' if c['goals']['edgeclf within 2x of bare'] else 'NOT met'})",
        f"- keras / edgeclf: **{c['ratios']['keras_vs_edgeclf']}x** faster (goal >= 8x: {'met' if c['goals']['edgeclf at least 8x faster than keras'] else 'NOT met'})",
        f"- CPU time ratios (less sensitive to other processes' load): edgeclf / bare {c['ratios']['cpu_edgeclf_vs_bare']}x, "
        f"keras / edgeclf {c['ratios']['cpu_keras_vs_edgeclf']}x",
        f"- edgeclf peak RSS {c['edgeclf predict']['peak_rss_mib_median']:.0f} MiB (goal < 130 MB: {'met' if c['goals']['edgeclf peak RSS under 130 MB'] else 'NOT met'})",
        "",
    ]


def _video_lines(res: dict) -> list[str]:
    v = res["video"]
    lines = [f"## Video file: {res['frames']} frames 640x480 MP4, frames per second ({res['rounds_video']} rounds, medians)", "",
             "| stage / pipeline | frames/s |", "|---|---:|"]
    lines += [f"| {k} | {val} |" for k, val in v["fps_median"].items()]
    lines.append("")
    for t, pc in v["per_config"].items():
        ok = pc["end_to_end_vs_slowest"] >= 0.9
        lines.append(
            f"- {t} inference thread(s): slowest stage alone {pc['slowest_stage_fps']} frames/s, pipeline "
            f"{pc['end_to_end_fps']} frames/s = **{pc['end_to_end_vs_slowest']:.0%}** of it (per-round median "
            f"{pc['end_to_end_vs_slowest_per_round_median']:.0%}; goal >= 90%: {'met' if ok else 'NOT met'})")
    return lines + [f"- batch 8 pipeline / slowest batch-8 stage: {v['batch8_vs_slowest']:.0%}"]


def prepare(work: Path, frames: int, run: Path | None = None) -> None:
    """Run in a child process: build/export the model (or take RUN's model.keras and its
    export/model.int8.onnx), pick the image, write the video."""
    import cv2
    import numpy as np

    if run is not None:
        keras_path, onnx_path = run / "model.keras", run / "export" / "model.int8.onnx"
    else:
        keras_path, onnx_path = build_models(work)
    photos = sorted((CATS_DOGS / "cats").glob("*.jpg"))
    if photos:
        image = photos[0]
    else:
        from edgeclf.data.synthetic import draw_shape

        image = work / "image.jpg"
        cv2.imwrite(str(image), draw_shape("circle", 400, np.random.default_rng(0)))
    make_video(work / "video.mp4", frames)
    (work / "prepared.json").write_text(json.dumps({"keras": str(keras_path), "onnx": str(onnx_path), "image": str(image)}))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--video-rounds", type=int, default=7)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--run", type=Path, help="a trained run folder: its model.keras and export/model.int8.onnx "
                                             "(the default model) instead of a freshly built edgenet")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--markdown-only", action="store_true", help="Rewrite runtime.md from runtime.json, measuring nothing.")
    return ap.parse_args()


def rewrite_markdown(out: Path) -> None:
    """runtime.md again from runtime.json, measuring nothing."""
    from provenance import stamp_markdown

    from edgeclf.outfiles import write_text

    res = json.loads((out / "runtime.json").read_text())
    md = to_markdown(res)
    write_text(out / "runtime.md", stamp_markdown(md, res["provenance"]) if "provenance" in res else md)


def measure(args: argparse.Namespace) -> dict:
    """Builds the model in a child process, then the cold starts (before this process imports anything big) and the video."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print("building and exporting the model...", file=sys.stderr)
        subprocess.run([sys.executable, __file__, "--prepare", str(work), "--frames", str(args.frames),
                        *(["--run", str(args.run.resolve())] if args.run else [])], check=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, stderr=subprocess.DEVNULL)
        prep = json.loads((work / "prepared.json").read_text())
        keras_path, onnx_path, image = Path(prep["keras"]), Path(prep["onnx"]), Path(prep["image"])
        res = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "loadavg_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
            "python": platform.python_version(),
            "rounds": args.rounds,
            "rounds_video": args.video_rounds,
            "frames": args.frames,
            "image": str(image),
            "command": "python benchmarks/runtime_bench.py" + (f" --rounds {args.rounds}" if args.rounds != 7 else "")
                       + (f" --run {args.run}" if args.run else ""),
            "model": str(onnx_path),
        }
        print("cold start...", file=sys.stderr)
        res["cold"] = bench_cold(onnx_path, keras_path, image, args.rounds, work)  # before this process imports anything big
        print("video...", file=sys.stderr)
        import cv2
        import numpy as np
        import onnxruntime

        res["versions"] = {"onnxruntime": onnxruntime.__version__, "cv2": cv2.__version__, "numpy": np.__version__}
        res["video"] = bench_video(onnx_path, work / "video.mp4", args.video_rounds)
        res["loadavg_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())

    return res


def main() -> None:
    args = parse_args()
    if args.prepare:
        prepare(args.prepare, args.frames, args.run)
        return
    if args.markdown_only:
        rewrite_markdown(args.out)
        return
    res = measure(args)
    from provenance import provenance, stamp_json, stamp_markdown  # here: the cold start runs before any import

    from edgeclf.outfiles import write_json, write_text

    prov = provenance()
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "runtime.json", stamp_json(res, prov))
    md = to_markdown(res)
    write_text(args.out / "runtime.md", stamp_markdown(md, prov))
    print(md)


if __name__ == "__main__":
    main()
