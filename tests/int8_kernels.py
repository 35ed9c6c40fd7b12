"""What onnxruntime's u8 x s8 integer product gives on each CPU family, computed in numpy.

x86 with VNNI and ARM give the exact product. x86 with AVX2 (or AVX-512) but no VNNI multiplies
u8 x s8 with ``vpmaddubsw``, which adds each pair of neighbouring products along k in saturating
int16, and only then sums the pairs in int32: 255 x -128 x 2 = -65280 clips to -32768. Weights in
-64..64 (the export's 7-bit weights) cannot saturate: 255 x 64 x 2 = 32640 < 32767.
"""

from __future__ import annotations

import numpy as np

INT16 = (-(1 << 15), (1 << 15) - 1)


def exact_matmul(a: np.ndarray, b: np.ndarray, a_zero: int = 0) -> np.ndarray:
    """(a - a_zero) @ b in int64: VNNI's and ARM's result."""
    return (a.astype(np.int64) - a_zero) @ b.astype(np.int64)


def pair_saturated_matmul(a: np.ndarray, b: np.ndarray, a_zero: int = 0) -> np.ndarray:
    """The AVX2 kernel's result: pairs of u8 x s8 products (k, k+1) clipped to int16, summed; the
    zero point is applied afterwards through the column sums of ``b``, as the kernel does."""
    a, b = a.astype(np.int64), b.astype(np.int64)
    if a.shape[1] % 2:  # the kernel pads k with zeros to whole pairs
        a, b = np.pad(a, ((0, 0), (0, 1))), np.pad(b, ((0, 1), (0, 0)))
    products = a[:, :, None] * b[None, :, :]  # [n, k, m]
    pairs = np.clip(products[:, 0::2] + products[:, 1::2], *INT16)
    return pairs.sum(axis=1) - a_zero * b.sum(axis=0)
