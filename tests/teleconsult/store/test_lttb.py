"""LTTB: shape guarantees and peak preservation (pure)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from teleconsult.store.lttb import lttb, lttb_indices


def test_keeps_ends_and_spike() -> None:
    x = np.arange(10_000, dtype=np.float64)
    y = np.sin(x / 500)
    y[4321] = 50.0
    idx = lttb_indices(x, y, 100)
    assert len(idx) == 100
    assert idx[0] == 0
    assert idx[-1] == 9999
    assert 4321 in idx
    assert np.all(np.diff(idx) > 0)


def test_short_input_is_returned_whole() -> None:
    x = np.arange(5, dtype=np.float64)
    xs, ys = lttb(x, x * 2, 10)
    assert xs.tolist() == x.tolist()
    assert ys.tolist() == (x * 2).tolist()


def test_rejects_bad_arguments() -> None:
    x = np.arange(10, dtype=np.float64)
    with pytest.raises(ValueError, match="n_out"):
        lttb_indices(x, x, 2)
    with pytest.raises(ValueError, match="length"):
        lttb_indices(x, x[:5], 3)


@given(st.integers(3, 400), st.integers(0, 2000))
def test_indices_are_strictly_increasing_and_sized(n_out: int, n: int) -> None:
    x = np.arange(n, dtype=np.float64)
    y = np.cos(x)
    idx = lttb_indices(x, y, n_out)
    assert len(idx) == min(n, n_out)
    assert np.all(np.diff(idx) > 0)


@given(st.integers(3, 300), st.integers(0, 3000), st.integers(0, 2**32 - 1))
def test_small_bucket_loop_picks_what_the_numpy_path_picks(n_out: int, n: int, seed: int) -> None:
    import teleconsult.store.lttb as module

    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0, 1e6, n))
    y = np.round(rng.normal(70, 10, n), 1)  # rounded: ties in area happen, and must break the same way
    fast = lttb_indices(x, y, n_out)
    saved = module._SMALL_BUCKETS
    module._SMALL_BUCKETS = 0  # force the numpy path
    try:
        slow = lttb_indices(x, y, n_out)
    finally:
        module._SMALL_BUCKETS = saved
    assert fast.tolist() == slow.tolist()
