"""Bar charts drawn with OpenCV, so the base install (no matplotlib) can write PNG plots."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

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


#: Height of one bar, and the gap between label groups, in pixels.
BAR_H, GAP = 16, 12


@dataclass(frozen=True)
class _Frame:
    """Where a chart's parts go: the legend at ``top``, the groups of bars from ``y0`` to ``y1``,
    bars starting at ``left`` and at most ``plot_w`` pixels long."""

    top: int
    left: int
    plot_w: int
    y0: int
    y1: int
    group_h: int


def _frame(labels: Sequence[str], n_series: int, subtitle: bool, width: int) -> _Frame:
    top = 58 if subtitle else 44
    legend_h = 26 if n_series > 1 else 0
    left = max([_text_width(s) for s in labels] + [60]) + 20
    right = 80
    group_h = BAR_H * n_series + GAP
    y0 = top + legend_h
    return _Frame(top, left, width - left - right, y0, y0 + group_h * len(labels), group_h)


def _scale(series: dict[str, Sequence[float | None]], left: int, plot_w: int,
           log: bool) -> tuple[Callable[[float], int], list[float]]:
    """Value -> x pixel, and the values to draw grid lines at (decades on a log scale)."""
    values = [v for s in series.values() for v in s if v is not None and np.isfinite(v)]
    vmax = max(values) if values else 1.0
    vmin = min([v for v in values if v > 0], default=1e-3)
    if log:
        lo = 10 ** np.floor(np.log10(vmin))
        hi = 10 ** np.ceil(np.log10(vmax)) if vmax > lo else lo * 10
        span = np.log10(hi) - np.log10(lo)

        def x_of(v: float) -> int:
            return left + int(plot_w * (np.log10(max(v, lo)) - np.log10(lo)) / span)

        return x_of, [lo * 10**k for k in range(int(round(span)) + 1)]
    hi = vmax * 1.05 if vmax > 0 else 1.0

    def x_of(v: float) -> int:
        return left + int(plot_w * max(v, 0.0) / hi)

    step = 10 ** np.floor(np.log10(hi / 5)) if hi > 0 else 1
    return x_of, list(np.arange(0, hi, step * (2 if hi / step > 10 else 1)))


def _draw_grid(img: np.ndarray, f: _Frame, x_of: Callable[[float], int], ticks: Sequence[float], unit: str) -> None:
    for t in ticks:
        x = x_of(t)
        cv2.line(img, (x, f.y0 - 4), (x, f.y1), GRID, 1)
        s = _fmt(float(t))
        _text(img, s, (x - _text_width(s, 0.38) // 2, f.y1 + 16), 0.38, (110, 110, 110))
    _text(img, unit, (f.left, f.y1 + 34), 0.42, (90, 90, 90))


def _draw_legend(img: np.ndarray, f: _Frame, names: Sequence[str]) -> None:
    x = f.left
    for k, name in enumerate(names):
        cv2.rectangle(img, (x, f.top + 4), (x + 14, f.top + 16), PALETTE[k % len(PALETTE)], -1)
        _text(img, name, (x + 20, f.top + 15), 0.42)
        x += _text_width(name, 0.42) + 44


def _draw_bars(img: np.ndarray, f: _Frame, labels: Sequence[str], series: dict[str, Sequence[float | None]],
               x_of: Callable[[float], int]) -> None:
    names = list(series)
    for i, label in enumerate(labels):
        gy = f.y0 + i * f.group_h + GAP // 2
        _text(img, label, (f.left - 10 - _text_width(label), gy + (BAR_H * len(names)) // 2 + 5))
        for k, name in enumerate(names):
            v = series[name][i]
            by = gy + k * BAR_H
            if v is None or not np.isfinite(v):
                _text(img, "n/a", (f.left + 4, by + BAR_H - 4), 0.4, (120, 120, 120))
                continue
            x = x_of(v)
            cv2.rectangle(img, (f.left, by + 1), (max(x, f.left + 1), by + BAR_H - 2), PALETTE[k % len(PALETTE)], -1)
            _text(img, _fmt(v), (x + 4, by + BAR_H - 4), 0.4)


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
    f = _frame(labels, len(series), bool(subtitle), width)
    img = np.full((f.y1 + 40, width, 3), 255, np.uint8)
    _text(img, title, (12, 24), 0.6, INK, 2)
    if subtitle:
        _text(img, subtitle, (12, 46), 0.42, (90, 90, 90))
    x_of, ticks = _scale(series, f.left, f.plot_w, log)
    _draw_grid(img, f, x_of, ticks, unit + (" (log scale)" if log else ""))
    if len(series) > 1:
        _draw_legend(img, f, list(series))
    _draw_bars(img, f, labels, series, x_of)
    cv2.line(img, (f.left, f.y0 - 4), (f.left, f.y1), INK, 1)
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


def score_histograms(title: str, series: dict[str, Sequence[float]], threshold: float | None, subtitle: str = "",
                     width: int = 900, height: int = 360, bins: int = 40) -> np.ndarray:
    """Histograms of one score for several groups of photos (each normalised to its share, so
    groups of different sizes compare), with the threshold as a vertical line: a BGR image."""
    values = [np.asarray(v, np.float64) for v in series.values()]
    lo = min([float(v.min()) for v in values if len(v)] + ([threshold] if threshold is not None else []))
    hi = max([float(v.max()) for v in values if len(v)] + ([threshold] if threshold is not None else []))
    hi = hi if hi > lo else lo + 1
    edges = np.linspace(lo, hi, bins + 1)
    shares = [np.histogram(v, edges)[0] / max(1, len(v)) for v in values]
    top = max(float(s.max()) for s in shares) or 1.0
    img = np.full((height, width, 3), 255, np.uint8)
    _text(img, title, (12, 24), 0.6, INK, 2)
    if subtitle:
        _text(img, subtitle, (12, 46), 0.42, (90, 90, 90))
    left, right, y0, y1 = 60, width - 20, 90, height - 50
    x_of = lambda v: int(left + (v - lo) / (hi - lo) * (right - left))  # noqa: E731
    for frac in (0, 0.25, 0.5, 0.75, 1):
        y = int(y1 - frac * (y1 - y0))
        cv2.line(img, (left, y), (right, y), GRID, 1)
        _text(img, f"{frac * top:.0%}", (8, y + 4), 0.38)
    for i, (name, share) in enumerate(zip(series, shares)):
        colour = PALETTE[i % len(PALETTE)]
        for j, s in enumerate(share):
            if s > 0:
                x_a, x_b = x_of(edges[j]), max(x_of(edges[j]) + 1, x_of(edges[j + 1]) - 1)
                overlay = img.copy()
                cv2.rectangle(overlay, (x_a, int(y1 - s / top * (y1 - y0))), (x_b, y1), colour, -1)
                cv2.addWeighted(overlay, 0.55, img, 0.45, 0, img)
        cv2.rectangle(img, (left + 200 * i, 58), (left + 200 * i + 14, 72), colour, -1)
        _text(img, f"{name} ({len(values[i])})", (left + 200 * i + 20, 70), 0.42)
    if threshold is not None:
        x = x_of(threshold)
        cv2.line(img, (x, y0 - 6), (x, y1), (0, 0, 200), 2)
        _text(img, f"threshold {threshold:.3g}", (min(x + 4, right - 120), y0 + 6), 0.42, (0, 0, 200))
    cv2.line(img, (left, y1), (right, y1), INK, 1)
    for v in np.linspace(lo, hi, 6):
        _text(img, _fmt(float(v)), (x_of(v) - 14, y1 + 18), 0.38)
    _text(img, "unknown score (higher: farther from the training photos)", (left, height - 12), 0.42)
    return img
