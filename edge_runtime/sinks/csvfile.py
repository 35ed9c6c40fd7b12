"""``--csv FILE``: one row per result (``CsvSink``), written by ``CsvOutput``: atomic, flushed row
by row, safe to open in a spreadsheet."""

from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path
from typing import IO, Any, Sequence

from edgeclf.outfiles import CSV_HEADER, atomic_path, disk_error
from edgeclf.predict.options import Result
from edgeclf.sinks.base import Sink, frame_number
from edgeclf.sinks.console import record

#: A spreadsheet runs a cell that starts with one of these as a formula (``=HYPERLINK(...)``).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(text: str) -> str:
    """A text cell that a spreadsheet shows as text: file names, stream URLs and class names come
    from files and models edgeclf does not trust, so one starting like a formula gets a leading
    apostrophe (OWASP's CSV-injection rule); numbers are written as they are."""
    return "'" + text if text.startswith(FORMULA_START) else text


class CsvOutput:
    """``--csv FILE``: one row per result, flushed as it goes, renamed into place when closed
    (also after Ctrl-C, so what was classified is kept; an error leaves no half-written file).
    A write that fails (a full disk) raises ``OutputError`` and discards the file."""

    def __init__(self, path: str | os.PathLike, class_names: Sequence[str]) -> None:
        self.path = Path(path)
        self.rows = 0
        self._closed = False
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(path))
        self._file: IO[str] = self._stack.enter_context(open(tmp, "w", newline="", encoding="utf-8"))
        self._writer = csv.writer(self._file)
        self.class_names = list(class_names)
        self._guard(self._writer.writerow, [*CSV_HEADER, *(csv_text(f"prob_{c}") for c in self.class_names)])

    def _guard(self, write: Any, row: list) -> None:
        try:
            write(row)
            self._file.flush()
        except OSError as e:
            self.close(keep=False)
            raise disk_error(self.path, "--csv", e, f"{self.rows} rows") from None

    def write(self, rec: dict[str, Any]) -> None:
        frame = "" if rec["frame"] is None else rec["frame"]
        probs = [f"{rec['probs'][c]:.6f}" for c in self.class_names]
        self._guard(self._writer.writerow, [csv_text(rec["source"]), frame, csv_text(rec["label"]), rec["index"],
                                            f"{rec['score']:.6f}", f"{rec['latency_ms']:.3f}", *probs])
        self.rows += 1

    def close(self, keep: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        if not keep:
            with contextlib.suppress(OSError):  # closing may flush into the same full disk
                self._stack.__exit__(RuntimeError, RuntimeError("discarded"), None)
            return
        try:
            self._stack.close()
        except OSError as e:  # the last flush, on close, met a full disk; atomic_path removed the file
            raise disk_error(self.path, "--csv", e, f"{self.rows} rows") from None


class CsvSink(Sink):
    """``--csv FILE``: one row per result, the ``--json`` record's fields (``CsvOutput``)."""

    def __init__(self, path: Path, class_names: Sequence[str], numbered: bool) -> None:
        self.file = CsvOutput(path, class_names)
        self.numbered = numbered

    def write(self, result: Result) -> None:
        frame = frame_number(result, self.numbered)
        self.file.write(record(result.frame.source, frame, result.prediction, result.latency_ms))

    def close(self, keep: bool = True) -> None:
        self.file.close(keep=keep)
