"""Which engine runs an export folder's model fastest on this machine, as ``edgeclf bench FOLDER
--engines`` measured it: the record (``engine.json`` in the export folder) and its reading.

The record belongs to the machine that measured it: an export folder copied from a workstation to
a Raspberry Pi carries the workstation's figures, which say nothing of the Pi's. ``predict
--engine auto`` follows a record only when its CPU, core count and architecture are this machine's.
A new export replaces the whole folder, and with it the record of the models it replaced.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgeclf import sysinfo
from edgeclf.errors import EdgeclfError, safe_text
from edgeclf.model.exported import MODEL_NAMES
from edgeclf.outfiles import write_json

RECORD_NAME = "engine.json"
#: the record's choice among the other engines, when LiteRT won with a model that has no unknown score
WITH_UNKNOWN = "choice_with_unknown"
ENGINES = ("onnxruntime", "litert", "openvino")
_MAX_RECORD_BYTES = 1 << 20
_MAX_THREADS = 256


def this_machine() -> dict[str, object]:
    """What a record must match to apply here."""
    m = sysinfo.describe()
    return {"cpu": m["cpu"], "cores": m["cores"], "arch": m["arch"]}


def write_record(folder: str | os.PathLike, record: dict) -> Path:
    """``record`` (bench's choice and figures) as FOLDER/engine.json, with this machine's identity."""
    path = Path(folder) / RECORD_NAME
    write_json(path, {**record, "machine": this_machine()})
    return path


def read_record(folder: str | os.PathLike) -> dict | None:
    """FOLDER/engine.json checked, or None when there is none. One-line error when it is damaged
    or names something edgeclf would not run (the file is as untrusted as the models beside it)."""
    path = Path(folder) / RECORD_NAME
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > _MAX_RECORD_BYTES:
            raise ValueError(f"larger than {_MAX_RECORD_BYTES} bytes")
        rec = json.loads(path.read_text(encoding="utf-8"))
        _check_choice(rec, "choice")
        if rec.get(WITH_UNKNOWN) is not None:
            _check_choice(rec, WITH_UNKNOWN)
            if rec[WITH_UNKNOWN]["engine"] == "litert":
                raise ValueError(f"{WITH_UNKNOWN} is LiteRT, the engine it stands in for")
        if not isinstance(rec.get("machine"), dict):
            raise ValueError("no machine")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise EdgeclfError(f"{path}: unreadable engine record ({first_words(e)}); "
                           f"measure again with `edgeclf bench {path.parent} --engines`") from None
    return rec


def _check_choice(rec: dict, key: str) -> None:
    """``rec[key]`` names an engine edgeclf runs, one of an export's files that engine runs, and a
    sane thread count; a ValueError naming ``key`` otherwise."""
    try:
        _check_one_choice(rec[key])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{key}: {first_words(e)}") from None


def _check_one_choice(choice: dict) -> None:
    engine, file, threads = choice["engine"], choice["file"], choice["threads"]
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {safe_text(str(engine))[:40]!r}")
    if file not in MODEL_NAMES:
        raise ValueError(f"file {safe_text(str(file))[:60]!r} is not one of an export's models")
    if (engine == "litert") != file.endswith(".tflite"):  # LiteRT runs .tflite files, the others .onnx
        raise ValueError(f"engine {engine} does not run {file}")
    if threads is not None and not (type(threads) is int and 1 <= threads <= _MAX_THREADS):
        raise ValueError(f"threads {safe_text(str(threads))[:20]!r} is not a whole number from 1 to {_MAX_THREADS}")
    _check_runner_up(choice.get("runner_up"))


def _check_runner_up(r: object) -> None:
    """The runner-up ``describe`` prints: None, or a label and a p50 in milliseconds."""
    if r is None:
        return
    if not (isinstance(r, dict) and isinstance(r.get("label", r.get("engine")), str) and _ms(r.get("p50_ms"))
            and ("p99_ms" not in r or _ms(r["p99_ms"]))):
        raise ValueError("runner_up is not a label with a p50 (and p99) in milliseconds")


def first_words(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:120] if not isinstance(e, KeyError) else f"no {text}"


def applicable_choice(folder: str | os.PathLike, no_litert: bool = False) -> tuple[dict | None, str]:
    """(the recorded choice, why) when FOLDER's record applies on this machine and its file is
    there; (None, why not) otherwise ("" when there is no record at all). With ``no_litert`` (the
    caller needs the unknown score, which this LiteRT model lacks), the fastest engine other than
    LiteRT where LiteRT won, if the record has one."""
    rec = read_record(folder)
    if rec is None:
        return None, ""
    here, there = this_machine(), rec["machine"]
    if any(there.get(k) != v for k, v in here.items()):
        # records from before ARM cores had names say "aarch64 (Raspberry Pi 4 ...)": the same board, named otherwise
        renamed = (there.get("arch") == here["arch"] and there.get("cores") == here["cores"]
                   and str(there.get("cpu", "")).startswith(str(here["arch"])))
        where = ("by an older edgeclf, which named ARM CPUs by their architecture alone" if renamed else
                 f"on another machine ({safe_text(str(there.get('cpu')))[:80]}, {safe_text(str(there.get('cores')))[:8]} cores)")
        return None, (f"{Path(folder) / RECORD_NAME} was measured {where}: running onnxruntime; "
                      f"`edgeclf bench {folder} --engines` measures this one")
    choice, lead, what = rec["choice"], "", None
    if choice["engine"] == "litert" and no_litert:
        lead = (f"{RECORD_NAME} found LiteRT faster here, but this LiteRT model has no unknown score (export it again to "
                "give it one; --no-unknown, or --engine litert, runs it)")
        if rec.get(WITH_UNKNOWN) is None:
            return None, lead + ": running onnxruntime"
        choice, lead, what = rec[WITH_UNKNOWN], lead + "; ", "keeping the unknown score, the record's choice among the other engines"
    if not (Path(folder) / choice["file"]).is_file():
        return None, f"{lead}{Path(folder) / RECORD_NAME} chose {choice['file']}, which is not in {folder}: running onnxruntime"
    return choice, lead + describe(choice, what)


def describe(choice: dict, what: str | None = None) -> str:
    """"chosen here by `edgeclf bench --engines`: LiteRT, 2 threads, p50 2.31 ms, p99 2.60 ms
    (onnxruntime 3.99 / 5.10 ms)"; ``what`` replaces the words before the colon. Records written
    before the choice looked at p99 give p50 alone."""
    threads = "adaptive threads" if choice["threads"] is None else f"{choice['threads']} thread{'s' * (choice['threads'] > 1)}"
    runner_up = choice.get("runner_up")
    p50, p99 = choice.get("p50_ms"), choice.get("p99_ms")
    tails = _ms(p99) and (not isinstance(runner_up, dict) or _ms(runner_up.get("p99_ms")))
    vs = (f" ({safe_text(str(runner_up.get('label') or runner_up.get('engine')))[:60]} {runner_up['p50_ms']:.2f}"
          + (f" / {runner_up['p99_ms']:.2f} ms)" if tails else " ms)")
          if isinstance(runner_up, dict) and _ms(runner_up.get("p50_ms")) else "")
    name = {"litert": "LiteRT", "openvino": "OpenVINO"}.get(choice["engine"], choice["engine"])
    return (f"{what or 'chosen here by `edgeclf bench --engines`'}: {name}, {threads}"
            + (f", p50 {p50:.2f} ms" + (f", p99 {p99:.2f} ms" if tails else "") + vs if _ms(p50) else ""))


def _ms(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
