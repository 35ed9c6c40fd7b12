"""Progress bars on stderr, built one way for every edgeclf command (stdout stays for results,
so ``--json`` output is never mixed with a bar)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, Callable, Iterator, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TaskID, TextColumn, TimeElapsedColumn

#: Width of tables and lines written to a pipe or a file (rich's default there is 80 columns, which
#: cut tables short); a terminal, or $COLUMNS, still sets its own width.
PIPED_WIDTH = 200


def console(stderr: bool = False, **options: Any) -> Console:
    """The one way edgeclf makes a rich console: stdout (results) or stderr (progress, reports),
    full width when piped, no guessing at highlights unless asked."""
    stream = sys.stderr if stderr else sys.stdout
    piped = not (hasattr(stream, "isatty") and stream.isatty()) and "COLUMNS" not in os.environ
    options.setdefault("highlight", False)
    return Console(stderr=stderr, width=PIPED_WIDTH if piped else None, **options)


def stderr_console() -> Console:
    """The console progress bars draw on: stderr, without rich's guessing at highlights."""
    return console(stderr=True)


class Bar:
    """One bar: call it with ``n`` to advance it by ``n`` (the ``progress`` callback that loaders
    and ``in_batches`` take); ``describe`` renames it; ``update`` sets completed/total/fields."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress, self._task = progress, task

    def __call__(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def describe(self, description: str) -> None:
        self._progress.update(self._task, description=description)

    def update(self, **fields: Any) -> None:
        self._progress.update(self._task, **fields)


class Bars:
    """A group of progress bars: ``with Bars(quiet=q) as bars: step = bars.add("reading", n)``.

    ``quiet``: draw nothing. ``transient``: the bars vanish when the block ends (else they stay as a
    record of what ran). ``width``: pad descriptions to this many characters so that bars added
    later line up. ``columns``: a layout of one's own instead of description, bar, done/total and
    elapsed time (descriptions are shown as plain text, not rich markup: a file named "[b]x"
    shows as named). ``console``: stderr unless given.
    """

    def __init__(
        self,
        quiet: bool = False,
        transient: bool = True,
        width: int = 0,
        columns: Sequence[ProgressColumn | str] | None = None,
        console: Console | None = None,
    ) -> None:
        if columns is None:
            text = f"{{task.description:<{width}}}" if width else "{task.description}"
            columns = (TextColumn(text, markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self.progress = Progress(*columns, console=console or stderr_console(), transient=transient, disable=quiet)

    @property
    def console(self) -> Console:
        """Where the bars draw; print here so lines appear above the live bars, not through them."""
        return self.progress.console

    def add(self, description: str, total: int, **fields: Any) -> Bar:
        """A new bar of ``total`` steps; ``fields`` are extra values for custom columns."""
        return Bar(self.progress, self.progress.add_task(description, total=total, **fields))

    def start(self) -> None:
        self.progress.start()

    def stop(self) -> None:
        self.progress.stop()

    def __enter__(self) -> "Bars":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def progress_bar(description: str, total: int, quiet: bool = False, transient: bool = True,
                 console: Console | None = None) -> Iterator[Bar]:
    """A bar (on stderr unless ``console`` says otherwise; transient unless told) for the block;
    yields the ``Bar``, which is called as ``advance(n)``."""
    with Bars(quiet=quiet, transient=transient, console=console) as bars:
        yield bars.add(description, total)


#: ``step(description, total)``: adds a bar of ``total`` steps and returns it (see ``steps``).
Step = Callable[[str, int], Bar]


class _Line(Bar):
    """A step as plain lines on stderr, for when it is not a terminal (piped, a log file), where
    bars would show only once the work is over: one line when the step starts, one when it is done."""

    def __init__(self, description: str, total: int) -> None:
        self._description, self._total, self._done, self._started = description, total, 0, time.monotonic()
        _say(f"{description} ({total})..." if total > 1 else f"{description}...")

    def __call__(self, n: int = 1) -> None:
        before, self._done = self._done, self._done + n
        if before < self._total <= self._done:
            _say(f"{self._description}: done in {time.monotonic() - self._started:.1f} s")

    def describe(self, description: str) -> None:
        self._description = description

    def update(self, **fields: Any) -> None:
        if "completed" in fields:
            self(fields["completed"] - self._done)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def steps(quiet: bool = False, width: int = 0) -> Iterator[Step]:
    """Bars that stay on stderr as a record of what ran, one per step of the work: yields
    ``step(description, total)``. A step of at most one unit (a measurement, an empty set) shows
    as done at once. Where stderr is not a terminal, each step is a plain line as it starts and
    another when it is done (``_Line``)."""
    if not quiet and not stderr_console().is_terminal:
        yield lambda description, total: _Line(description, total if total > 1 else 0)
        return
    with Bars(quiet=quiet, transient=False, width=width) as bars:

        def step(description: str, total: int) -> Bar:
            bar = bars.add(description, max(total, 1))
            if total <= 1:
                bar.update(completed=1)
            return bar

        yield step
