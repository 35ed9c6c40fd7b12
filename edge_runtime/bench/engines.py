"""``edgeclf bench FOLDER --engines``: every engine edgeclf can run an export's int8 model with
(onnxruntime; OpenVINO on the same file; LiteRT on ``model.int8.tflite``), at
each thread count, timed side by side on this machine; the choice (``choose``) recorded for
``predict --engine auto`` (``edgeclf.model.engine_choice``). Each is timed as ``predict`` runs it by default: one
image a call, the unknown score included where the model has one.

The ways are timed in rounds, each round every way in turn, so that a burst of other work on the
machine falls on all of them alike rather than on whichever ran then. onnxruntime stays the choice
unless another engine is at least ``MARGIN`` faster at p50: it is the base install, and a smaller
gap is within what repeated runs here move by. For the same reason, of other ways within ``MARGIN``
of the fastest at p50, the one with the shortest tail (p99) is chosen.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeclf import __version__, sysinfo
from edgeclf.bench.run import latency_stats
from edgeclf.errors import EdgeclfError, safe_text
from edgeclf.model import engine_choice, litert, openvino_engine, threads as thr
from edgeclf.model.classifier import Classifier
from edgeclf.model.exported import INT8_NAME, REPORT_NAME, TFLITE_INT8_NAME
from edgeclf.model.locate import onnx_model
from edgeclf.progress import Bars

MARGIN = 0.05
ROUNDS = 5


@dataclass
class Way:
    """One engine at one thread setting (None: onnxruntime's adaptive default, as predict runs it)."""

    engine: str
    file: Path
    threads: int | None

    @property
    def label(self) -> str:
        name = {"litert": "LiteRT", "openvino": "OpenVINO"}.get(self.engine, self.engine)
        return f"{name}, {'adaptive threads' if self.threads is None else f'{self.threads} thread' + 's' * (self.threads > 1)}"


def export_folder(path: str | os.PathLike) -> Path:
    """The export folder a run folder, export folder or model file of one means."""
    path = Path(path)
    if path.is_file():
        return path.parent
    model, _ = onnx_model(path)
    return model.parent


def ways(folder: Path) -> tuple[list[Way], list[str]]:
    """What to time in ``folder`` on this machine, and what is left out and why."""
    cores = thr.default_threads()
    counts = sorted({1, cores})
    found, skipped = [], []
    onnx = folder / INT8_NAME
    if onnx.is_file():
        found += [Way("onnxruntime", onnx, None)] + [Way("onnxruntime", onnx, t) for t in counts]
    else:
        skipped.append(f"onnxruntime: no {INT8_NAME} in {folder} (`edgeclf export RUN --int8`)")
    if onnx.is_file() and openvino_engine.available():
        found += [Way("openvino", onnx, t) for t in counts]
    elif onnx.is_file():
        skipped.append(f"OpenVINO: openvino is not installed ({openvino_engine.INSTALL_HINT})")
    tflite = folder / TFLITE_INT8_NAME
    if not tflite.is_file():
        skipped.append(f"LiteRT: no {TFLITE_INT8_NAME} in {folder} (`edgeclf export RUN --format tflite`)")
    elif not litert.available():
        skipped.append(f"LiteRT: ai-edge-litert is not installed ({litert.INSTALL_HINT})")
    else:
        found += [Way("litert", tflite, t) for t in counts]
    if not found:
        raise EdgeclfError(f"{folder}: no int8 model to compare engines on ({'; '.join(skipped)})")
    return found, skipped


def compare_engines(path: str | os.PathLike, runs: int = 200, warmup: int = 10, record: bool = True,
                    show_progress: bool = True) -> dict:
    """Time every way of ``ways`` on one image at a time (``runs`` frames each, over ``ROUNDS``
    interleaved rounds), ``choose`` one and, with ``record``, write it to the folder."""
    folder = export_folder(path)
    todo, skipped = ways(folder)
    per_round = max(1, runs // ROUNDS)
    first, clfs = {}, {}
    with Bars(quiet=not show_progress) as bars:
        step = bars.add("engines", len(todo) * (1 + ROUNDS * (warmup + per_round)))
        for w in todo:  # opening each, and its first result: what a device's start-up pays
            t0 = time.perf_counter()
            # as predict runs it by default: with the unknown score, where the model has one
            clfs[w.label] = Classifier(w.file, provider="cpu", threads=w.threads,
                                       engine="openvino" if w.engine == "openvino" else "onnxruntime")
            clf = clfs[w.label]
            x = np.random.default_rng(0).integers(0, 256, (1, *clf.size, 3), dtype=np.uint8)
            clf.classify_arrays(x)
            first[w.label] = (time.perf_counter() - t0) * 1e3
            step()
        times = {w.label: [] for w in todo}
        for _ in range(ROUNDS):
            for w in todo:
                _time(clfs[w.label], x, warmup, per_round, times[w.label], step)
    results = [_result(w, times[w.label], first[w.label], folder) for w in todo]
    choice = choose(results)
    litert_scores = litert.has_unknown_score(folder / TFLITE_INT8_NAME)
    report = {"folder": str(folder), "results": results, "choice": choice,
              engine_choice.WITH_UNKNOWN: choose_with_unknown(results, choice, litert_scores),
              "litert_unknown_score": litert_scores,
              "skipped": skipped, "margin": MARGIN,
              "runs": per_round * ROUNDS, "warmup": warmup, "rounds": ROUNDS, "machine": sysinfo.describe(),
              "edgeclf": __version__}
    if record:
        _record(folder, report)
    return report


def _time(clf: Classifier, x: np.ndarray, warmup: int, runs: int, into: list[float], step) -> None:
    for _ in range(warmup):
        clf.classify_arrays(x)
        step()
    for _ in range(runs):
        t = time.perf_counter()
        clf.classify_arrays(x)
        into.append((time.perf_counter() - t) * 1e3)
        step()


def _result(w: Way, ms: list[float], first_ms: float, folder: Path) -> dict:
    return {"engine": w.engine, "file": w.file.name, "threads": w.threads, "label": w.label,
            "latency_ms": latency_stats(ms), "first_inference_ms": first_ms, "model_bytes": w.file.stat().st_size,
            "export_accuracy": _export_accuracy(folder, w.engine)}


def _export_accuracy(folder: Path, engine: str) -> float | None:
    """The model's accuracy on the validation photos as its export's guard measured it (export.json)."""
    import json

    try:
        report = json.loads((folder / REPORT_NAME).read_text(encoding="utf-8"))
        value = report["tflite_int8" if engine == "litert" else "int8"]["accuracy_int8"]  # OpenVINO runs the int8 ONNX file
        return float(value) if isinstance(value, (int, float)) else None
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


def choose(results: list[dict]) -> dict:
    """The way ``predict --engine auto`` runs: onnxruntime's best unless another engine beats it
    by ``MARGIN`` at p50, and within onnxruntime its adaptive threads unless a fixed count beats
    them by ``MARGIN`` (an idle bench cannot see the co-tenants that adapting is for). Of the other
    ways that beat it so and are within ``MARGIN`` of the fastest at p50 (a gap repeated runs here
    move by), the one with the shortest tail (p99)."""
    p50 = {r["label"]: r["latency_ms"]["p50"] for r in results}
    fastest = min(p50.values())
    ort_rows = [r for r in results if r["engine"] == "onnxruntime"]
    ort_best = min(ort_rows, key=lambda r: p50[r["label"]], default=None)
    adaptive = next((r for r in ort_rows if r["threads"] is None), None)
    if ort_best is not None and adaptive is not None and p50[ort_best["label"]] > (1 - MARGIN) * p50[adaptive["label"]]:
        ort_best = adaptive
    beats_ort = [r for r in results if r["engine"] != "onnxruntime"
                 and (ort_best is None or p50[r["label"]] <= (1 - MARGIN) * p50[ort_best["label"]])]
    tied = [r for r in beats_ort if fastest > (1 - MARGIN) * p50[r["label"]]]
    if not tied:  # onnxruntime stays (or, where every time was not a number, the first way)
        best = ort_best or results[0]
    else:
        best = min(tied, key=lambda r: (r["latency_ms"]["p99"], p50[r["label"]]))
    others = [r for r in results if r["engine"] != best["engine"]]
    runner_up = min(others, key=lambda r: p50[r["label"]], default=None)
    return {"engine": best["engine"], "file": best["file"], "threads": best["threads"], "label": best["label"],
            "p50_ms": best["latency_ms"]["p50"], "p99_ms": best["latency_ms"]["p99"],
            "runner_up": None if runner_up is None else {"engine": runner_up["engine"], "label": runner_up["label"],
                                                         "p50_ms": runner_up["latency_ms"]["p50"],
                                                         "p99_ms": runner_up["latency_ms"]["p99"]}}


def choose_with_unknown(results: list[dict], choice: dict, litert_scores: bool = False) -> dict | None:
    """For callers that need the unknown score, where LiteRT is the ``choice`` and its model lacks
    the score (``litert_scores`` False: exported before LiteRT had one), the choice among the other
    engines by the same rule (None where there are none, or no need)."""
    keep = [r for r in results if r["engine"] != "litert"]
    return choose(keep) if choice["engine"] == "litert" and not litert_scores and keep else None


def _record(folder: Path, report: dict) -> None:
    """engine.json in the folder; a folder that cannot be written loses only the record (said)."""
    try:
        report["record"] = str(engine_choice.write_record(folder, {k: report[k] for k in ("choice", engine_choice.WITH_UNKNOWN, "results", "edgeclf")}))
    except OSError as e:
        report["record"] = None
        report["record_error"] = f"{folder / engine_choice.RECORD_NAME}: cannot write ({e.strerror or e}); predict --engine auto will run onnxruntime"


def render(report: dict, console) -> None:
    """The table, the choice and what was left out."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"engines on this machine: {escape(safe_text(report['folder']))}")
    for col in ("engine, threads", "file", "p50 ms", "p99 ms", "first inference ms", "accuracy (export)", ""):
        table.add_column(col, justify="right" if "ms" in col or "accuracy" in col else "left")
    c = report["choice"]
    for r in report["results"]:
        acc = r["export_accuracy"]
        chosen = r["label"] == c["label"]
        table.add_row(r["label"], r["file"], f"{r['latency_ms']['p50']:.2f}", f"{r['latency_ms']['p99']:.2f}",
                      f"{r['first_inference_ms']:.0f}", "n/a" if acc is None else f"{acc:.2%}", "chosen" if chosen else "")
    console.print(table)
    if any(r["engine"] == "openvino" and r["export_accuracy"] is not None for r in report["results"]):
        console.print("accuracy (export): the export's int8 guard measured it with onnxruntime (LiteRT's own model "
                      "with LiteRT); OpenVINO runs the same int8 ONNX file with integer kernels of its own, which "
                      "the export did not check", highlight=False)
    for line in report["skipped"]:
        console.print(f"not timed: {escape(safe_text(line))}", highlight=False)
    console.print(f"chosen: [bold]{escape(c['label'])}[/] ({c['file']}), p50 {c['p50_ms']:.2f} ms, p99 {c['p99_ms']:.2f} ms; "
                  f"onnxruntime (adaptive threads) stays the choice unless another way is {MARGIN:.0%} faster at p50; "
                  f"of other ways within {MARGIN:.0%} of the fastest, the shortest p99", highlight=False)
    if report.get("record"):
        alt = report.get(engine_choice.WITH_UNKNOWN)
        caveat = (f"; with the unknown answer on (predict's default) it runs {escape(alt['label']) if alt else 'onnxruntime'}, "
                  "as this LiteRT model has no unknown score (export it again to give it one): --no-unknown runs LiteRT"
                  ) if c["engine"] == "litert" and not report.get("litert_unknown_score") else ""
        console.print(f"recorded in {escape(safe_text(report['record']))}: `edgeclf predict {escape(safe_text(report['folder']))}` "
                      f"runs it on this machine's CPU (--engine auto){caveat}", highlight=False)
    elif report.get("record_error"):
        console.print(f"warning: {escape(safe_text(report['record_error']))}", highlight=False)


def run_engines(model: Path, runs: int, warmup: int, json_out: bool, *, batch: str = "1", threads: str | None = None,
                source: Path | None = None, plot: Path | None = None, provider: str = "auto") -> dict:
    """The CLI command: refuse the options --engines does not take, measure, print (table or JSON)."""
    import json
    import sys

    from edgeclf.bench.run import check_count
    from edgeclf.progress import console as make_console

    given = [name for name, on in (("--batch", batch != "1"), ("--threads", threads), ("--source", source),
                                   ("--plot", plot), ("--provider", provider not in ("auto", "cpu"))) if on]
    if given:
        raise EdgeclfError(f"--engines times one image per call on the CPU at each engine's thread counts; drop {', '.join(given)}")
    check_count(runs, "--runs", ROUNDS)
    check_count(warmup, "--warmup", 0)
    report = compare_engines(model, runs, warmup, show_progress=not json_out)
    if json_out:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        render(report, make_console(highlight=True))
    if report.get("record_error") and json_out:
        print(f"edgeclf: warning: {report['record_error']}", file=sys.stderr)
    return report
