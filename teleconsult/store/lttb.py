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


def lttb(x: FloatArray, y: FloatArray, n_out: int) -> tuple[FloatArray, FloatArray]:
    """The downsampled ``(x, y)``; see :func:`lttb_indices`."""
    idx = lttb_indices(x, y, n_out)
    return x[idx], y[idx]
