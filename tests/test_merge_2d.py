"""tomesd's 2-D matching (`merge.random2d_plan`) and its windowed variant.

The golden fixture holds tomesd's own `bipartite_soft_matching_random2d` outputs for the same
metric, values and destination choice (tests/fixtures/make_tomesd_fixture.py).
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tome_jax import merge

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "tomesd_random2d.npz")
CASES = ("even_no_rand", "odd_random", "rect_stride_clamped", "half_random")


def _rows_sorted(a):
    """Rows of a [B, T, C] in lexicographic order per batch row (tomesd's order is unspecified)."""
    return np.stack([b[np.lexsort(b.T[::-1])] for b in np.asarray(a)])


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7))
def _merge_unmerge(metric, x, choice, w, h, sx, sy, r):
    merge_fn, unmerge_fn = merge.bipartite_soft_matching_random2d(metric, w, h, sx, sy, r, dst_choice=choice)
    merged = merge_fn(x, "mean")
    return merged, unmerge_fn(merged)


@pytest.mark.parametrize("case", CASES)
def test_equals_tomesd(case):
    data = np.load(FIXTURE)
    h, w, sx, sy, r = (int(v) for v in data[f"{case}/args"])
    choice = None if case.endswith("no_rand") else data[f"{case}/dst_choice"]
    merged, unmerged = _merge_unmerge(data[f"{case}/metric"], data[f"{case}/x"], choice, w, h, sx, sy, r)
    assert merged.shape == data[f"{case}/merged"].shape
    np.testing.assert_allclose(_rows_sorted(merged), _rows_sorted(data[f"{case}/merged"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(unmerged, data[f"{case}/unmerged"], rtol=1e-5, atol=1e-6)


def test_no_rand_keeps_tomesd_order():
    """With the top-left destinations, tomesd's argsort ties only among sources: the destination block
    (the last h/2 * w/2 rows) is in raster order in both."""
    data = np.load(FIXTURE)
    case = "even_no_rand"
    h, w, sx, sy, r = (int(v) for v in data[f"{case}/args"])
    plan = jax.jit(merge.random2d_plan, static_argnums=(1, 2, 3, 4, 5))(data[f"{case}/metric"], w, h, sx, sy, r)
    num_dst = (h // sy) * (w // sx)
    dst_rows = np.asarray(plan.out_rows[0, -num_dst:])
    np.testing.assert_array_equal(dst_rows, [y * w + x for y in range(0, h, sy) for x in range(0, w, sx)])


def test_destinations_one_per_window_and_static_under_jit():
    h, w, sx, sy = 7, 9, 2, 2
    metric = jax.random.normal(jax.random.key(0), (2, h * w, 8))

    @jax.jit
    def plan_of(metric, key):
        return merge.random2d_plan(metric, w, h, sx, sy, 1000, key)  # clamped: every source merges

    p1, p2 = plan_of(metric, jax.random.key(1)), plan_of(metric, jax.random.key(2))
    num_dst = (h // sy) * (w // sx)
    for plan in (p1, p2):
        assert plan.out_rows.shape == (2, num_dst) and plan.src_rows.shape == (2, h * w - num_dst)
        ys, xs = np.divmod(np.asarray(plan.out_rows), w)
        cells = (ys // sy) * (w // sx) + xs // sx
        assert (ys < (h // sy) * sy).all() and (xs < (w // sx) * sx).all()  # leftover rows/columns: sources
        assert all(sorted(c) == list(range(num_dst)) for c in cells)  # one destination per window
    assert not np.array_equal(p1.out_rows, p2.out_rows)  # the key picks the destinations
    fixed = jax.jit(lambda m: merge.random2d_plan(m, w, h, sx, sy, 5))(metric)
    assert (np.asarray(fixed.out_rows[:, -num_dst:]) % sx == 0).all()  # no key: top left


def test_zero_r_and_ratio():
    metric = jnp.ones((1, 16, 4))
    assert merge.random2d_plan(metric, 4, 4, 2, 2, 0) is None
    assert merge.ratio_r(4096, 0.5) == 2048
    with pytest.raises(ValueError, match="grid"):
        merge.random2d_plan(metric, 5, 4, 2, 2, 3)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _windowed_roundtrip(grid, values, window, r):
    """values [B, H, W, C] merged in windows ("mean", and "amax") and unmerged back to the grid."""
    plan = merge.windowed_random2d_plan(grid, window, 2, 2, r, jax.random.key(5))
    windows = merge.window_partition(values, window)
    merged = merge.apply_plan(plan, windows, "mean")
    height, width = values.shape[1:3]
    back = merge.window_unpartition(merge.undo_plan(plan, merged), window, height, width)
    back_max = merge.window_unpartition(merge.undo_plan(plan, merge.apply_plan(plan, windows, "amax")),
                                        window, height, width)
    return merged.shape, back, back_max


@pytest.mark.parametrize("height,width", [(10, 11)])
def test_windowed_same_r_per_window_and_no_crossing(height, width):
    """Every window loses exactly r tokens; a token's unmerged value comes from its own window; padding
    never mixes into real tokens (their values are >= 1, padding is 0)."""
    window, r = 4, 6
    grid = jax.random.normal(jax.random.key(3), (2, height, width, 8))
    index = jnp.broadcast_to(jnp.arange(height * width, dtype=jnp.float32).reshape(1, height, width, 1),
                             (2, height, width, 1))
    values = jnp.concatenate([1.0 + jax.random.uniform(jax.random.key(4), index.shape), index], axis=-1)
    shape, back, back_max = _windowed_roundtrip(grid, values, window, r)
    n_windows = -(-height // window) * -(-width // window) * 2
    assert shape == (n_windows, window * window - r, 2)
    assert back.shape == values.shape
    assert (back[..., 0] >= 1.0).all()  # no padding averaged in
    assert (back[..., 0] != values[..., 0]).any()  # something merged
    ys, xs = np.divmod(np.asarray(back_max[..., 1]).astype(int), width)  # the group's largest token index
    y0, x0 = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    assert ((ys // window == y0 // window) & (xs // window == x0 // window)).all()  # from the same window


def test_window_partition_roundtrip():
    x = jax.random.normal(jax.random.key(0), (2, 9, 10, 3))
    windows = merge.window_partition(x, 4)
    assert windows.shape == (2 * 3 * 3, 16, 3)
    np.testing.assert_array_equal(merge.window_unpartition(windows, 4, 9, 10), x)
    np.testing.assert_array_equal(windows[0].reshape(4, 4, 3), x[0, :4, :4])
