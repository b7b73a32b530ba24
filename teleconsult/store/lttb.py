"""Largest-Triangle-Three-Buckets downsampling (Steinarsson 2013, "Downsampling Time Series for Visual
Representation", ch. 4.2). Pure numpy, no I/O.

Keeps the first and last points; splits the rest into ``n_out - 2`` equal-count buckets and, in each, keeps the point
forming the largest triangle with the point kept in the previous bucket and the average of the next bucket.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]


def lttb_indices(x: FloatArray, y: FloatArray, n_out: int) -> IndexArray:
    """Indices (increasing) of the ``n_out`` points LTTB keeps; all indices when ``len(x) <= n_out``.

    ``x`` must be sorted ascending; ``x`` and ``y`` have the same length; ``n_out >= 3`` (or >= len(x)).
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x and y differ in length ({n} != {len(y)})")
    if n_out >= n:
        return np.arange(n, dtype=np.intp)
    if n_out < 3:
        raise ValueError(f"n_out must be >= 3 (got {n_out})")
    out = np.empty(n_out, dtype=np.intp)
    out[0] = 0
    out[-1] = n - 1
    # bucket edges over the interior points 1 .. n-2
    edges = np.linspace(1, n - 1, n_out - 1).astype(np.intp)
    if n <= _SMALL_BUCKETS * n_out:
        out[1:-1] = _small_buckets(x, y, edges)
        return out
    a = 0
    for i in range(n_out - 2):
        lo, hi = edges[i], edges[i + 1]
        hi = max(hi, lo + 1)
        if i + 2 < len(edges):
            nlo, nhi = edges[i + 1], max(edges[i + 2], edges[i + 1] + 1)
            avg_x = float(x[nlo:nhi].mean())
            avg_y = float(y[nlo:nhi].mean())
        else:
            avg_x, avg_y = float(x[-1]), float(y[-1])
        ax, ay = x[a], y[a]
        bx = x[lo:hi]
        by = y[lo:hi]
        area = np.abs((ax - avg_x) * (by - ay) - (ax - bx) * (avg_y - ay))
        a = lo + int(np.argmax(area))
        out[i + 1] = a
    return out


_SMALL_BUCKETS = 32
"""Up to this many points per bucket, a plain Python loop beats numpy calls on tiny slices (~5x for 8 per bucket)."""


def _small_buckets(x: FloatArray, y: FloatArray, edges: IndexArray) -> list[int]:
    """The interior picks of :func:`lttb_indices` (same arithmetic, same ties: the first largest area)."""
    n = len(x)
    lo = edges[:-1]
    hi = np.maximum(edges[1:], lo + 1)
    cx = np.concatenate(([0.0], np.cumsum(x)))
    cy = np.concatenate(([0.0], np.cumsum(y)))
    nlo, nhi = np.append(lo[1:], n - 1), np.append(hi[1:], n)
    avg_x = ((cx[nhi] - cx[nlo]) / (nhi - nlo)).tolist()
    avg_y = ((cy[nhi] - cy[nlo]) / (nhi - nlo)).tolist()
    avg_x[-1], avg_y[-1] = float(x[-1]), float(y[-1])
    xs, ys = x.tolist(), y.tolist()
    picks: list[int] = []
    a = 0
    for i, (b_lo, b_hi) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
        ax, ay = xs[a], ys[a]
        dx, dy = ax - avg_x[i], avg_y[i] - ay
        best, a = -1.0, b_lo
        for j in range(b_lo, b_hi):
            area = abs(dx * (ys[j] - ay) - (ax - xs[j]) * dy)
            if area > best:
                best, a = area, j
        picks.append(a)
    return picks


def lttb(x: FloatArray, y: FloatArray, n_out: int) -> tuple[FloatArray, FloatArray]:
    """The downsampled ``(x, y)``; see :func:`lttb_indices`."""
    idx = lttb_indices(x, y, n_out)
    return x[idx], y[idx]
