"""What training shows on stderr: its console, the bar for reading images, and a line per epoch
with a live bar and an estimate of the time left (a Keras callback).

Without a terminal (a log file, a pipe, a service) there are no bars: plain lines instead, at most
one every ``PLAIN_EVERY_S`` seconds while images are read and during an epoch, and one (``say``)
when the data is ready and the first epoch starts, so a log never stays silent for minutes."""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

from .tf_quiet import import_tensorflow_quietly

import_tensorflow_quietly()  # before keras: TensorFlow's start-up log lines silenced
import keras  # noqa: E402
from rich.markup import escape
from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

from edgeclf.progress import Bars, console as make_console, progress_bar

console = make_console(stderr=True, soft_wrap=True)

#: Without a terminal: the most seconds between two progress lines while reading or in an epoch.
PLAIN_EVERY_S = 20.0


def say(text: str, quiet: bool = False) -> None:
    """A plain line for a log: printed only when stderr is not a terminal (a terminal has the bars)."""
    if not quiet and not console.is_terminal:
        console.print(text, markup=False)


class _Ticker:
    """True at most once every ``PLAIN_EVERY_S`` seconds (the first time that long after it starts)."""

    def __init__(self) -> None:
        self.start = self.last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last < PLAIN_EVERY_S:
            return False
        self.last = now
        return True


@contextlib.contextmanager
def load_progress(total: int, what: str, quiet: bool = False) -> Iterator[Callable[[int], None]]:
    """A progress bar for reading images; yields an ``advance(n)`` function. Without a terminal,
    a plain line now and then instead (a first read decodes every image into the cache: minutes)."""
    if quiet or console.is_terminal:
        with progress_bar(what, total, quiet=quiet, console=console) as advance:
            yield advance
        return
    ticker, done = _Ticker(), 0

    def advance(n: int = 1) -> None:
        nonlocal done
        done += n
        if ticker.due():
            say(f"{what}: {done}/{total} ({time.monotonic() - ticker.start:.0f} s; decoded into the image cache "
                "once, read from it by later runs)")

    yield advance


class EpochProgress(keras.callbacks.Callback):
    """One line per epoch with its metrics, plus a live bar with the time left for the whole run."""

    def __init__(self, total_epochs: int, steps: int, state: dict, stage: str = "") -> None:
        super().__init__()
        self.total_epochs, self.steps, self.state, self.stage = total_epochs, steps, state, stage
        self.progress: Bars | None = None

    def on_train_begin(self, logs=None):
        self.progress = Bars(
            columns=(TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[n_epochs]}"), BarColumn(),
                     TextColumn("{task.fields[info]}"), TextColumn("ETA"), TimeRemainingColumn()),
            console=console, quiet=not console.is_terminal,  # logs get the per-epoch lines only
        )
        self.progress.start()
        done = self.state["epoch"]
        self.bar = self.progress.add("train", self.total_epochs * self.steps, completed=done * self.steps,
                                     epoch=done + 1, n_epochs=self.total_epochs, info="")
        self.t0 = time.time()
        self.ticker = _Ticker()

    def on_epoch_begin(self, epoch, logs=None):
        self.bar.update(epoch=epoch + 1, completed=epoch * self.steps)
        self.t_epoch, self.epoch = time.time(), epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        info = f"loss {logs.get('loss', 0):.3f} acc {logs.get('accuracy', 0):.3f}"
        self.bar.update(advance=1, info=info)
        if not self.progress.console.is_terminal and self.ticker.due():  # no bar: a line in the log
            stage = f"[{self.stage}] " if self.stage else ""
            self.progress.console.print(f"{stage}epoch {self.epoch + 1}/{self.total_epochs}  step {batch + 1}/{self.steps}  "
                                        f"{info}  {time.time() - self.t_epoch:.0f}s", markup=False)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        best = self.state["best"]
        star = "*" if best["epoch"] == epoch + 1 else " "
        stage = escape(f"[{self.stage}] ") if self.stage else ""
        self.epoch_times = getattr(self, "epoch_times", []) + [time.time() - self.t_epoch]
        # The first epoch includes graph tracing; later ones predict the rest better.
        typical = sorted(self.epoch_times[1:] or self.epoch_times)[len(self.epoch_times[1:] or self.epoch_times) // 2]
        left = (self.total_epochs - epoch - 1) * typical
        self.progress.console.print(
            f"{stage}epoch {epoch + 1:3d}/{self.total_epochs}  loss {logs.get('loss', 0):.4f}  acc {logs.get('accuracy', 0):.4f}  "
            + (f"val_loss {logs['val_loss']:.4f}  val_acc {logs.get('val_accuracy', 0):.4f}{star}  " if "val_loss" in logs else "")
            + f"{self.epoch_times[-1]:5.1f}s  ETA {int(left // 60)}:{int(left % 60):02d}"
        )

    def on_train_end(self, logs=None):
        if self.progress:
            self.progress.stop()
