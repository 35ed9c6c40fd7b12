"""Training curves and confusion matrices as PNG (matplotlib, headless)."""

from __future__ import annotations

import os
from typing import Sequence

from edgeclf.outfiles import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: Sequence[dict], path: str | os.PathLike, title: str = "") -> None:
    """Accuracy and loss per epoch, train and validation, side by side."""
    plt = _pyplot()
    epochs = [int(h["epoch"]) for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.plot(epochs, [float(h[metric]) for h in history], "o-", ms=3, label="train")
        ax.plot(epochs, [float(h[f"val_{metric}"]) for h in history], "o-", ms=3, label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def plot_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: str | os.PathLike, title: str = "") -> None:
    """Confusion matrix (rows: true class, columns: predicted class) with counts in the cells."""
    import numpy as np

    plt = _pyplot()
    cm = np.asarray(confusion)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(2.2 + 0.6 * n, 1.8 + 0.6 * n))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_title(title or "validation confusion matrix")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
