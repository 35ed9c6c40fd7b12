"""Bar charts drawn with OpenCV, so the base install (no matplotlib) can write PNG plots."""

from __future__ import annotations

import os
from typing import Sequence

import cv2
import numpy as np

from edgeclf.errors import EdgeclfError
from edgeclf.outfiles import png_with_mark, write_bytes

# BGR, colour-blind friendly (Okabe-Ito).
PALETTE = [(178, 114, 0), (0, 159, 230), (115, 158, 0), (167, 121, 204), (66, 228, 240), (0, 94, 213), (233, 180, 86)]
FONT = cv2.FONT_HERSHEY_SIMPLEX
INK = (40, 40, 40)
GRID = (225, 225, 225)


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.45, color=INK, thick: int = 1) -> None:
    cv2.putText(img, text, org, FONT, scale, color, thick, cv2.LINE_AA)


def _text_width(text: str, scale: float = 0.45, thick: int = 1) -> int:
    return cv2.getTextSize(text, FONT, scale, thick)[0][0]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def bar_chart(
    title: str,
    labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    unit: str,
    subtitle: str = "",
    width: int = 900,
    log: bool = False,
) -> np.ndarray:
    """A horizontal grouped bar chart (BGR image): one row group per label, one bar per series.

    ``None`` values are drawn as "n/a". ``log`` uses a log scale (for values spanning decades).
    """
    names = list(series)
    bar_h, gap = 16, 12
    group_h = bar_h * len(names) + gap
    top = 58 if subtitle else 44
    legend_h = 26 if len(names) > 1 else 0
    left = max([_text_width(s) for s in labels] + [60]) + 20
    right = 80
    height = top + legend_h + group_h * len(labels) + 40
    img = np.full((height, width, 3), 255, np.uint8)
    _text(img, title, (12, 24), 0.6, INK, 2)
    if subtitle:
        _text(img, subtitle, (12, 46), 0.42, (90, 90, 90))

    values = [v for s in series.values() for v in s if v is not None and np.isfinite(v)]
    vmax = max(values) if values else 1.0
    vmin = min([v for v in values if v > 0], default=1e-3)
    plot_w = width - left - right
    if log:
        lo = 10 ** np.floor(np.log10(vmin))
        hi = 10 ** np.ceil(np.log10(vmax)) if vmax > lo else lo * 10
        span = np.log10(hi) - np.log10(lo)

        def x_of(v: float) -> int:
            return left + int(plot_w * (np.log10(max(v, lo)) - np.log10(lo)) / span)

        ticks = [lo * 10**k for k in range(int(round(span)) + 1)]
    else:
        hi = vmax * 1.05 if vmax > 0 else 1.0

        def x_of(v: float) -> int:
            return left + int(plot_w * max(v, 0.0) / hi)

        step = 10 ** np.floor(np.log10(hi / 5)) if hi > 0 else 1
        ticks = list(np.arange(0, hi, step * (2 if hi / step > 10 else 1)))

    y0 = top + legend_h
    y1 = y0 + group_h * len(labels)
    for t in ticks:
        x = x_of(t)
        cv2.line(img, (x, y0 - 4), (x, y1), GRID, 1)
        s = _fmt(float(t))
        _text(img, s, (x - _text_width(s, 0.38) // 2, y1 + 16), 0.38, (110, 110, 110))
    _text(img, unit + (" (log scale)" if log else ""), (left, y1 + 34), 0.42, (90, 90, 90))

    if len(names) > 1:
        x = left
        for k, name in enumerate(names):
            cv2.rectangle(img, (x, top + 4), (x + 14, top + 16), PALETTE[k % len(PALETTE)], -1)
            _text(img, name, (x + 20, top + 15), 0.42)
            x += _text_width(name, 0.42) + 44

    for i, label in enumerate(labels):
        gy = y0 + i * group_h + gap // 2
        _text(img, label, (left - 10 - _text_width(label), gy + (bar_h * len(names)) // 2 + 5))
        for k, name in enumerate(names):
            v = series[name][i]
            by = gy + k * bar_h
            if v is None or not np.isfinite(v):
                _text(img, "n/a", (left + 4, by + bar_h - 4), 0.4, (120, 120, 120))
                continue
            x = x_of(v)
            cv2.rectangle(img, (left, by + 1), (max(x, left + 1), by + bar_h - 2), PALETTE[k % len(PALETTE)], -1)
            _text(img, _fmt(v), (x + 4, by + bar_h - 4), 0.4)
    cv2.line(img, (left, y0 - 4), (left, y1), INK, 1)
    return img


def stack(images: Sequence[np.ndarray]) -> np.ndarray:
    """Charts one above the other (padded to the widest) in one image."""
    w = max(i.shape[1] for i in images)
    padded = [cv2.copyMakeBorder(i, 0, 0, 0, w - i.shape[1], cv2.BORDER_CONSTANT, value=(255, 255, 255)) for i in images]
    return np.vstack(padded)


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write ``image`` as a PNG file atomically."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise EdgeclfError(f"{path}: OpenCV could not encode the PNG")
    write_bytes(path, png_with_mark(buf.tobytes()))  # the mark lets a later --plot replace it
