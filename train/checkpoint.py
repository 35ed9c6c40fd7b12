"""What a run folder holds after every epoch: the best model, the last epoch (for --resume),
state.json and history.csv, each written atomically; and the early stop and the divergence stop."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from .tf_quiet import import_tensorflow_quietly

import_tensorflow_quietly()  # before keras: TensorFlow's start-up log lines silenced
import keras  # noqa: E402

from edgeclf.outfiles import atomic_path, write_json


class Checkpointer(keras.callbacks.Callback):
    """Writes the best model (by val accuracy) and the last epoch atomically; stops early.

    ``n_val`` (LP-FT runs): a later epoch is kept unless its validation accuracy is credibly
    worse than the best so far, beyond what ``n_val`` photos can tell apart; on a tiny split the
    highest figure is mostly luck, and the end of the schedule is the better bet."""

    def __init__(self, out: Path, state: dict, patience: int, stage_index: int, n_val: int | None = None) -> None:
        super().__init__()
        self.out, self.state, self.patience, self.stage_index, self.n_val = out, state, patience, stage_index, n_val

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        # The weights are NaN from the first non-finite loss on: stop at once, save nothing more.
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.state["diverged"] = {"epoch": self.epoch + 1, "loss": str(float(loss))}
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        logs, state = logs or {}, self.state
        bad = {k: float(v) for k, v in logs.items() if k in ("loss", "val_loss") and not math.isfinite(float(v))}
        if bad and not state.get("diverged"):
            state["diverged"] = {"epoch": epoch + 1, "loss": str(next(iter(bad.values())))}
            self.model.stop_training = True
        if state.get("diverged"):
            return  # nothing of this epoch is kept: model.keras, last.keras and state.json stay as they were
        state["history"].append({"epoch": epoch + 1, "stage": self.stage_index,
                                 **{k: float(v) for k, v in logs.items() if k != "learning_rate"}})
        val_acc = float(logs.get("val_accuracy", 0.0))
        best = self._peak() - self._noise() if self.n_val else state["best"]["val_accuracy"]
        if val_acc > best or (self.n_val and val_acc >= best) or state["best"]["epoch"] == 0:
            with atomic_path(self.out / "model.keras") as tmp:
                self.model.save(tmp)
            # Only once it is on disk: a failed write (disk full) must not claim a best model.
            state["best"] = {"epoch": epoch + 1, "val_accuracy": val_acc, "val_loss": float(logs.get("val_loss", 0.0))}
            state["wait"] = 0
        else:
            state["wait"] += 1
        with atomic_path(self.out / "last.keras") as tmp:
            self.model.save(tmp)
        state["epoch"] = epoch + 1
        write_history(self.out / "history.csv", state["history"])
        write_json(self.out / "state.json", state)
        if state["wait"] >= self.patience:
            self.model.stop_training = True
            state["stopped_early"] = True


    def _noise(self) -> float:
        """How far two accuracies on the same ``n_val`` photos can differ by chance (a 95% bound
        on the difference of two proportions near the best's); 0 outside LP-FT runs."""
        if not self.n_val:
            return 0.0
        p = (self._peak() * self.n_val + 1) / (self.n_val + 2)  # Laplace: 70 of 70 right is not certainty
        return 1.96 * math.sqrt(2 * p * (1 - p) / self.n_val)

    def _peak(self) -> float:
        return max((h.get("val_accuracy", 0.0) for h in self.state["history"]), default=0.0)


def write_history(path: Path, history: list[dict]) -> None:
    """The per-epoch metrics as CSV."""
    cols = ["epoch", "stage", "loss", "accuracy", "val_loss", "val_accuracy"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(history)
