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
    """Accuracy and loss per epoch, train and validation, side by side; whole-number epoch ticks,
    and the best epoch (highest validation accuracy) marked on both."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    epochs = [int(h["epoch"]) for h in history]
    best = max(history, key=lambda h: float(h["val_accuracy"])) if history else None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.plot(epochs, [float(h[metric]) for h in history], "o-", ms=3, label="train")
        ax.plot(epochs, [float(h[f"val_{metric}"]) for h in history], "o-", ms=3, label="validation")
        if best is not None:
            ax.axvline(int(best["epoch"]), color="grey", ls="--", lw=1,
                       label=f"best epoch {int(best['epoch'])} (val. accuracy {float(best['val_accuracy']):.3f})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def plot_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: str | os.PathLike, title: str = "") -> None:
    """Confusion matrix (rows: true class, columns: predicted class) with counts in the cells. The
    figure grows with the classes and their longest name, so no tick label overlaps another and
    the title is never cut; the counts are left out where the cells are too small for them."""
    import numpy as np

    plt = _pyplot()
    cm = np.asarray(confusion)
    n = len(class_names)
    font = 10 if n <= 20 else 7
    cell = 0.6 if n <= 20 else 0.22  # inches: a row of tick-label text at this font, with room
    margin = 0.8 + 0.075 * font / 10 * max((len(c) for c in class_names), default=1)  # the longest name
    fig, ax = plt.subplots(figsize=(margin + 1.5 + cell * n, margin + 1.2 + cell * n), layout="constrained")
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=font)  # upright names never overlap their neighbours
    ax.set_yticks(range(n), class_names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=font,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_title(title or "validation confusion matrix", wrap=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
