"""Token Merging (ToMe) as pure, jit-compatible JAX functions.

Every matching function takes a similarity `metric` of shape [B, T, C'] and returns a pair of
closures `(merge, unmerge)`:

    merge(x, mode="mean")   x: [B, T, C]  ->  [B, T - r, C]    mode: "sum" | "mean" | "amax"
    unmerge(y)              y: [B, T - r, C]  ->  [B, T, C]

`r` (and `k`) are static Python ints, so every shape is known at trace time: under `jax.jit` each
distinct r compiles once. No gradient flows through the matching (the metric is wrapped in
`stop_gradient`); gradients do flow through the merged values. Semantics follow the official ToMe
implementation exactly (docs/semantics.md); this module knows nothing about Flax.

Underneath, every matching computes a `MergePlan`: a small pytree of index arrays (the rows kept,
the rows merged away, and where each of those goes). `apply_plan` merges with it, `undo_plan`
puts tokens back and `keep_rows` prunes instead of merging; the closures above are thin wrappers,
and a model can keep the plans to undo its merges later (an MAE decoder, a dense head).
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

MergeFn = Callable[..., jax.Array]
UnmergeFn = Callable[[jax.Array], jax.Array]
Schedule = Union[int, tuple, Sequence[int]]

MODES = ("sum", "mean", "amax")

__all__ = [
    "MODES",
    "MergePlan",
    "apply_plan",
    "undo_plan",
    "keep_rows",
    "shift_plan",
    "plan_closures",
    "max_r",
    "bipartite_plan",
    "kth_plan",
    "random_plan",
    "bipartite_soft_matching",
    "kth_bipartite_soft_matching",
    "random_bipartite_soft_matching",
    "grid_destinations",
    "random2d_plan",
    "bipartite_soft_matching_random2d",
    "ratio_r",
    "window_partition",
    "window_unpartition",
    "windowed_random2d_plan",
    "merge_wavg",
    "merge_source",
    "parse_r",
]


# ----------------------------------------------------------------------------- checks


def _check_3d(name: str, x) -> None:
    if getattr(x, "ndim", None) != 3:
        raise ValueError(
            f"{name} must be a 3-D array [B, T, C] (batch, tokens, channels), got shape "
            f"{getattr(x, 'shape', type(x).__name__)}; add a batch axis with {name}[None] "
            "or flatten extra axes into B."
        )


def _check_count(name: str, value, minimum: int) -> int:
    """A static, non-negative Python int (numpy ints accepted); anything else is a ValueError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            f"{name} must be a Python int known at trace time, got {value!r} "
            f"({type(value).__name__}); under jax.jit pass it as a static argument."
        )
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")


def _check_input(x, batch: int, tokens: int, what: str = "x") -> None:
    _check_3d(what, x)
    if x.shape[0] != batch or x.shape[1] != tokens:
        raise ValueError(
            f"{what} has shape {x.shape} but the matching was computed for batch {batch} and "
            f"{tokens} tokens; metric and {what} must have the same batch size and token count."
        )


def _normalize(metric: jax.Array) -> jax.Array:
    """Unit vectors along channels, in float32, with no gradient (the matching is discrete)."""
    metric = jax.lax.stop_gradient(metric).astype(jnp.float32)
    return metric / jnp.linalg.norm(metric, axis=-1, keepdims=True)


def _similarity(a: jax.Array, b: jax.Array) -> jax.Array:
    """Cosine scores [B, Ta, Tb]. Full float32 (no TF32) so decisions match the reference."""
    return jnp.einsum("bic,bjc->bij", a, b, precision=jax.lax.Precision.HIGHEST)


def _max_argmax(scores: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Max and argmax over the last axis, argmax as the first index of the max (the first NaN if
    any, like jnp.argmax). XLA:CPU's argmax, a variadic reduction, is ~5x slower than this."""
    node_max = scores.max(axis=-1)
    is_max = (scores == node_max[..., None]) | jnp.isnan(scores)
    n = scores.shape[-1]
    return node_max, jnp.min(jnp.where(is_max, jnp.arange(n), n), axis=-1)


def _gather(x: jax.Array, idx: jax.Array) -> jax.Array:
    """Rows of x [B, T, C] at idx [B, n] -> [B, n, C]."""
    return jnp.take_along_axis(x, idx[..., None], axis=1)


def _scatter_reduce(dst: jax.Array, idx: jax.Array, src: jax.Array, mode: str) -> jax.Array:
    """Reduce src [B, n, C] into dst [B, m, C] at rows idx [B, n]; dst itself takes part
    (torch `scatter_reduce(include_self=True)`)."""
    rows = jnp.arange(dst.shape[0])[:, None]
    if mode == "sum":
        return dst.at[rows, idx].add(src)
    if mode == "amax":
        return dst.at[rows, idx].max(src)
    count = jnp.ones(dst.shape[:2], dst.dtype).at[rows, idx].add(1)
    return dst.at[rows, idx].add(src) / count[..., None]


# ----------------------------------------------------------------------------- merge plans


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MergePlan:
    """Where every token goes in one merge step, as index arrays into the rows of x [B, T, C].

    out_rows: [B, T'] the row of x behind each output token (in output order).
    src_rows: [B, R] the rows merged away.
    dst_pos:  [B, R] the output position each merged row is reduced into.
    num_tokens: static; the rows `undo_plan` returns (T, less kth's dropped tail).
    """

    out_rows: jax.Array
    src_rows: jax.Array
    dst_pos: jax.Array
    num_tokens: int = dataclasses.field(metadata=dict(static=True))

    @property
    def num_out(self) -> int:
        return self.out_rows.shape[1]


def apply_plan(plan: MergePlan, x: jax.Array, mode: str = "mean") -> jax.Array:
    """Merge x [B, T, C] -> [B, T', C]: one gather of the kept rows, one small scatter-reduce of the
    merged rows into their destinations (`mode`: "sum" | "mean" | "amax"; the destination takes part)."""
    _check_mode(mode)
    return _scatter_reduce(_gather(x, plan.out_rows), plan.dst_pos, _gather(x, plan.src_rows), mode)


def keep_rows(plan: MergePlan, x: jax.Array) -> jax.Array:
    """Prune instead of merge: the kept rows [B, T', C], the merged rows dropped (not averaged)."""
    return _gather(x, plan.out_rows)


def undo_plan(plan: MergePlan, y: jax.Array) -> jax.Array:
    """y [B, T', C] -> [B, T, C]: every token back at its position; a merged token reads the output
    row it went into (so after a "mean" merge each token holds its group's mean)."""
    batch = y.shape[0]
    rows = jnp.arange(batch)[:, None]
    slot = jnp.zeros((batch, plan.num_tokens), plan.out_rows.dtype)
    slot = slot.at[rows, plan.out_rows].set(jnp.arange(plan.num_out, dtype=plan.out_rows.dtype))
    return _gather(y, slot.at[rows, plan.src_rows].set(plan.dst_pos))


def shift_plan(plan: MergePlan, prefix: int) -> MergePlan:
    """A plan made for x[:, prefix:] as a plan for x: the first `prefix` rows are kept, in front."""
    if prefix == 0:
        return plan
    batch = plan.out_rows.shape[0]
    front = jnp.broadcast_to(jnp.arange(prefix, dtype=plan.out_rows.dtype), (batch, prefix))
    return MergePlan(jnp.concatenate([front, plan.out_rows + prefix], axis=1), plan.src_rows + prefix,
                     plan.dst_pos + prefix, plan.num_tokens + prefix)


def plan_closures(plan: MergePlan | None, batch: int, tokens: int) -> tuple[MergeFn, UnmergeFn]:
    """The public (merge, unmerge) pair of a plan (identity for None), checking their inputs."""
    out = tokens if plan is None else plan.num_out

    def merge(x: jax.Array, mode: str = "mean") -> jax.Array:
        _check_mode(mode)
        _check_input(x, batch, tokens)
        return x if plan is None else apply_plan(plan, x, mode)

    def unmerge(y: jax.Array) -> jax.Array:
        _check_input(y, batch, out, "y")
        return y if plan is None else undo_plan(plan, y)

    return merge, unmerge


def max_r(tokens: int, protected: int = 0) -> int:
    """The most tokens one bipartite step can remove: half of the unprotected ones. The one place
    the clamp `r = min(r, (T - protected) // 2)` is written (matchings, models, FLOP counts)."""
    return max(0, (tokens - protected) // 2)


# ----------------------------------------------------------------------------- matchings


def bipartite_plan(metric: jax.Array, r: int, class_token: bool = False,
                   distill_token: bool = False) -> MergePlan | None:
    """The plan of `bipartite_soft_matching` (None when r clamps to 0)."""
    _check_3d("metric", metric)
    r = _check_count("r", r, 0)
    batch, tokens, _ = metric.shape
    r = min(r, max_r(tokens, int(bool(class_token)) + int(bool(distill_token))))
    if r <= 0:
        return None

    metric = _normalize(metric)
    scores = _similarity(metric[:, ::2], metric[:, 1::2])  # A = even tokens, B = odd tokens
    if class_token:
        scores = scores.at[:, 0, :].set(-jnp.inf)
    if distill_token:
        scores = scores.at[:, :, 0].set(-jnp.inf)

    num_a, num_b, num_unm = (tokens + 1) // 2, tokens // 2, (tokens + 1) // 2 - r
    node_max, node_idx = _max_argmax(scores)
    if class_token:
        # Only the r best edges are needed (top_k breaks ties by lower index, like a stable sort);
        # the unmerged tokens keep index order (class token first): sort their indices, with the
        # src ones pushed to the end.
        src_idx = jax.lax.top_k(node_max, r)[1]
        is_src = (src_idx[..., None] == jnp.arange(num_a)).any(axis=-2)
        unm_idx = jnp.sort(jnp.where(is_src, num_a, jnp.arange(num_a)), axis=-1)[:, :num_unm]
    else:
        edge_idx = jnp.argsort(-node_max, axis=-1, stable=True)  # unmerged stay in score order
        unm_idx, src_idx = edge_idx[:, r:], edge_idx[:, :r]
    dst_idx = jnp.take_along_axis(node_idx, src_idx, axis=-1)

    # Indices into x itself (A token i is row 2i, B token j row 2j + 1), so the merge is one gather
    # and a small scatter, with no split / concat copies of x.
    b_rows = jnp.broadcast_to(2 * jnp.arange(num_b) + 1, (batch, num_b))
    if distill_token:  # [unm[0], B[0], unm[1:], B[1:]]
        out_rows = jnp.concatenate(
            [2 * unm_idx[:, :1], b_rows[:, :1], 2 * unm_idx[:, 1:], b_rows[:, 1:]], axis=1)
        dst_pos = jnp.where(dst_idx == 0, 1, num_unm + dst_idx)
    else:
        out_rows = jnp.concatenate([2 * unm_idx, b_rows], axis=1)
        dst_pos = num_unm + dst_idx
    return MergePlan(out_rows, 2 * src_idx, dst_pos, tokens)


def bipartite_soft_matching(
    metric: jax.Array, r: int, class_token: bool = False, distill_token: bool = False
) -> tuple[MergeFn, UnmergeFn]:
    """ToMe's bipartite soft matching: merge the r most similar (A -> B) token pairs.

    metric: [B, T, C'] (the ViT uses the attention keys averaged over heads).
    r: tokens to remove, clamped to (T - protected) // 2; identity when the clamp gives 0.
    class_token / distill_token: token 0 (and 1) are never merged and stay in front.
    Returns merge(x [B, T, C], mode) -> [B, T - r, C] and unmerge(y [B, T - r, C]) -> [B, T, C].
    """
    plan = bipartite_plan(metric, r, class_token, distill_token)
    return plan_closures(plan, *metric.shape[:2])


def kth_plan(metric: jax.Array, k: int) -> MergePlan | None:
    """The plan of `kth_bipartite_soft_matching` (None for k = 1)."""
    _check_3d("metric", metric)
    k = _check_count("k", k, 1)
    batch, tokens, _ = metric.shape
    if k > tokens:
        raise ValueError(f"k={k} is larger than the token count T={tokens}; use k <= T.")
    if k == 1:
        return None
    groups = tokens // k
    rows = jnp.arange(groups * k).reshape(groups, k)
    a_rows, b_rows = rows[:, :-1].reshape(-1), rows[:, -1]  # the last of each group is in B
    metric = _normalize(metric)
    dst_idx = _similarity(metric[:, a_rows], metric[:, b_rows]).argmax(axis=-1)
    return MergePlan(jnp.broadcast_to(b_rows, (batch, groups)),
                     jnp.broadcast_to(a_rows, (batch, a_rows.size)), dst_idx, groups * k)


def kth_bipartite_soft_matching(metric: jax.Array, k: int) -> tuple[MergeFn, UnmergeFn]:
    """Merge every group of k consecutive tokens down to one (k - 1 A tokens, the last in B).

    Each A token merges into its most similar B token (from any group). The tail T % k is
    dropped. merge: [B, T, C] -> [B, T // k, C]; unmerge: [B, T // k, C] -> [B, T // k * k, C].
    """
    plan = kth_plan(metric, k)
    return plan_closures(plan, *metric.shape[:2])


def random_plan(metric: jax.Array, r: int, key: jax.Array) -> MergePlan | None:
    """The plan of `random_bipartite_soft_matching` (None when r clamps to 0)."""
    _check_3d("metric", metric)
    r = _check_count("r", r, 0)
    batch, tokens, _ = metric.shape
    r = min(r, tokens - 1)
    if r <= 0:
        return None
    perm = jax.vmap(lambda k: jax.random.permutation(k, tokens))(jax.random.split(key, batch))
    a_idx, b_idx = perm[:, :r], perm[:, r:]
    metric = _normalize(metric)
    dst_idx = _similarity(_gather(metric, a_idx), _gather(metric, b_idx)).argmax(axis=-1)
    return MergePlan(b_idx, a_idx, dst_idx, tokens)


def random_bipartite_soft_matching(
    metric: jax.Array, r: int, key: jax.Array
) -> tuple[MergeFn, UnmergeFn]:
    """A random set A of r tokens (per batch row, from `key`) merges into the rest (B).

    r is clamped to T - 1. merge: [B, T, C] -> [B, T - r, C] (B tokens in permutation order);
    unmerge restores [B, T, C].
    """
    plan = random_plan(metric, r, key)
    return plan_closures(plan, *metric.shape[:2])


# ----------------------------------------------------------------------------- 2-D matchings (tomesd)


def ratio_r(tokens: int, ratio: float) -> int:
    """tomesd's count for a ratio: `int(tokens * ratio)` of ALL the tokens (not of the sources), so
    ratio 0.5 halves the tokens when there are enough sources (2x2 strides: up to 3/4)."""
    if not 0.0 <= float(ratio) < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}.")
    return int(tokens * float(ratio))


def grid_destinations(h: int, w: int, sx: int, sy: int, key: jax.Array | None = None,
                      batch: int | None = None) -> jax.Array:
    """Which token of each `sy x sx` window is its destination: int32 [h // sy, w // sx] (or
    [batch, h // sy, w // sx] with `batch`), the index in the window's raster order (dy * sx + dx).
    key None: 0 everywhere (tomesd's `no_rand`: the top-left token); else uniform from `key`."""
    shape = (h // sy, w // sx) if batch is None else (batch, h // sy, w // sx)
    if key is None:
        return jnp.zeros(shape, jnp.int32)
    return jax.random.randint(key, shape, 0, sy * sx, dtype=jnp.int32)


def random2d_plan(metric: jax.Array, w: int, h: int, sx: int, sy: int, r: int,
                  key: jax.Array | None = None, dst_choice: jax.Array | None = None) -> MergePlan | None:
    """The plan of tomesd's `bipartite_soft_matching_random2d` (None when r is 0 or no window fits).

    metric: [B, N, C'] with N = h * w tokens in raster order (row y, column x at y * w + x).
    Each full `sy x sx` window (h // sy by w // sx of them, from the top left) has one destination;
    every other token is a source, including the rows and columns left over where sy does not divide
    h or sx does not divide w (as tomesd). The r (clamped to the source count) sources with the
    highest cosine similarity to a destination merge into their most similar destination.
    dst_choice: int [h // sy, w // sx] or [B, h // sy, w // sx], the destination's index inside each
    window (`grid_destinations`); when None it is drawn from `key`, or 0 (top left, tomesd's
    `no_rand`) when key is None as well.
    Output order: the unmerged sources by descending score (ties: lower raster index first), then
    the destinations in raster order (tomesd's order with a stable sort; its unstable argsort
    permutes the sources, not the results). No size weighting: merge with `apply_plan(plan, x,
    "mean")`; `undo_plan` copies each destination's value back to its sources (tomesd's unmerge).
    """
    _check_3d("metric", metric)
    r = _check_count("r", r, 0)
    w, h, sx, sy = (_check_count(n, v, 1) for n, v in (("w", w), ("h", h), ("sx", sx), ("sy", sy)))
    batch, tokens, _ = metric.shape
    if tokens != h * w:
        raise ValueError(f"metric has {tokens} tokens but the grid is h={h} x w={w} = {h * w}.")
    hsy, wsx = h // sy, w // sx
    num_dst = hsy * wsx
    r = min(r, tokens - num_dst)
    if r <= 0 or num_dst == 0:
        return None
    if dst_choice is None:
        dst_choice = grid_destinations(h, w, sx, sy, key)
    choice = jnp.broadcast_to(jnp.asarray(dst_choice, jnp.int32), (batch, hsy, wsx))
    dst_y = jnp.arange(hsy)[:, None] * sy + choice // sx
    dst_x = jnp.arange(wsx)[None, :] * sx + choice % sx
    dst_rows = jnp.sort((dst_y * w + dst_x).reshape(batch, num_dst), axis=-1)  # raster order
    rows = jnp.arange(batch)[:, None]
    is_dst = jnp.zeros((batch, tokens), bool).at[rows, dst_rows].set(True)
    src_rows = jnp.argsort(is_dst, axis=-1, stable=True)[:, :tokens - num_dst]  # raster order

    metric = _normalize(metric)
    scores = _similarity(_gather(metric, src_rows), _gather(metric, dst_rows))
    node_max, node_idx = _max_argmax(scores)
    edge_idx = jnp.argsort(-node_max, axis=-1, stable=True)
    unm_idx, src_idx = edge_idx[:, r:], edge_idx[:, :r]
    dst_idx = jnp.take_along_axis(node_idx, src_idx, axis=-1)
    out_rows = jnp.concatenate([jnp.take_along_axis(src_rows, unm_idx, axis=-1), dst_rows], axis=1)
    return MergePlan(out_rows, jnp.take_along_axis(src_rows, src_idx, axis=-1),
                     unm_idx.shape[1] + dst_idx, tokens)


def bipartite_soft_matching_random2d(
    metric: jax.Array, w: int, h: int, sx: int, sy: int, r: int, key: jax.Array | None = None,
    dst_choice: jax.Array | None = None,
) -> tuple[MergeFn, UnmergeFn]:
    """tomesd's 2-D matching (`random2d_plan`) as closures: merge(x [B, N, C], mode) -> [B, N - r, C]
    and unmerge(y [B, N - r, C]) -> [B, N, C], every source reading its destination's value."""
    plan = random2d_plan(metric, w, h, sx, sy, r, key, dst_choice)
    return plan_closures(plan, *metric.shape[:2])


def window_partition(x: jax.Array, window: int) -> jax.Array:
    """x [B, H, W, C] -> windows [B * nH * nW, window * window, C] (ViTDet's layout: zero padding at
    the bottom and right up to a multiple of `window`, windows in raster order, tokens in raster
    order inside each)."""
    batch, height, width, dim = x.shape
    pad_h, pad_w = -height % window, -width % window
    x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    n_h, n_w = (height + pad_h) // window, (width + pad_w) // window
    x = x.reshape(batch, n_h, window, n_w, window, dim).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(batch * n_h * n_w, window * window, dim)


def window_unpartition(windows: jax.Array, window: int, height: int, width: int) -> jax.Array:
    """The inverse of `window_partition`: [B * nH * nW, window * window, C] -> [B, H, W, C] (the
    padding cropped)."""
    n_h, n_w = -(-height // window), -(-width // window)
    dim = windows.shape[-1]
    x = windows.reshape(-1, n_h, n_w, window, window, dim).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, n_h * window, n_w * window, dim)[:, :height, :width]


def windowed_random2d_plan(metric: jax.Array, window: int, sx: int, sy: int, r: int,
                           key: jax.Array | None = None) -> MergePlan | None:
    """tomesd's 2-D matching inside every attention window, the same r in each, so the merged
    windows stay equal-sized and windowed attention runs on them unchanged.

    metric: [B, H, W, C'] grid. Returns the plan over `window_partition(x, window)`'s rows
    ([B * windows, window * window]); apply it to the partitioned tokens. The destination choice
    is drawn per window from `key` (top left when None). Where H or W is not a multiple of
    `window`, the padding tokens that `window_partition` adds get a metric of their own: they are
    each other's best match (merged first) and every real token's worst, so a real token merges
    into a padding destination only in a window without a real one (the matching among real
    tokens is unchanged).
    """
    if getattr(metric, "ndim", None) != 4:
        raise ValueError(f"metric must be a [B, H, W, C] grid, got shape {getattr(metric, 'shape', None)}.")
    batch, height, width, _ = metric.shape
    windows = window_partition(metric.astype(jnp.float32), window)
    if height % window or width % window:
        # Real tokens -> [unit metric, 1], padding -> [0, -1]: cosine (c + 1) / 2 between real tokens
        # (same order, so the same matching), -1/sqrt(2) between real and padding, 1 among padding.
        is_pad = 1.0 - window_partition(jnp.ones((batch, height, width, 1), jnp.float32), window)
        norm = jnp.linalg.norm(windows, axis=-1, keepdims=True)
        unit = jnp.where(is_pad > 0, 0.0, windows / jnp.where(is_pad > 0, 1.0, norm))
        windows = jnp.concatenate([unit, 1.0 - 2.0 * is_pad], axis=-1)
    choice = None if key is None else grid_destinations(window, window, sx, sy, key, batch=windows.shape[0])
    return random2d_plan(windows, window, window, sx, sy, r, dst_choice=choice)


# ----------------------------------------------------------------------------- helpers


def merge_wavg(
    merge: MergeFn, x: jax.Array, size: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Size-weighted average merge. x: [B, T, C], size: [B, T, 1] (ones when None).

    Returns (x' [B, T', C] in x's dtype, size' [B, T', 1] float32). Values and sizes are merged
    separately: concatenating them into one [B, T, C + 1] merge costs an extra copy of x and
    misaligned rows, ~2x slower on CPU.
    """
    _check_3d("x", x)
    if size is None:
        size = jnp.ones((*x.shape[:2], 1), jnp.float32)
    dtype = jnp.promote_types(x.dtype, size.dtype)
    size = size.astype(dtype)
    merged_size = merge(size, mode="sum")
    return (merge(x.astype(dtype) * size, mode="sum") / merged_size).astype(x.dtype), merged_size


def merge_source(merge: MergeFn, x: jax.Array, source: jax.Array | None = None) -> jax.Array:
    """Track which original tokens each merged token holds.

    source: [B, T, T0] 0/1 rows (identity [B, T, T] when None, T from x). Returns [B, T', T0]:
    row i marks the original tokens merged into token i.
    """
    _check_3d("x", x)
    if source is None:
        batch, tokens = x.shape[:2]
        source = jnp.broadcast_to(jnp.eye(tokens, dtype=jnp.float32), (batch, tokens, tokens))
    return merge(source, mode="amax")


def parse_r(num_layers: int, r: Schedule) -> list[int]:
    """Per-layer r schedule.

    int -> [r] * L;  (r, inflect), inflect in [-1, 1] -> linear from int(r * (1 - inflect)) to
    2r minus that (inflect -1 decreases, as in the paper); list -> padded with zeros to L.
    """
    num_layers = _check_count("num_layers", num_layers, 1)
    if isinstance(r, (list, np.ndarray)) or (isinstance(r, tuple) and len(r) != 2):
        values = [_check_count("r", v, 0) for v in list(r)]
        if len(values) > num_layers:
            raise ValueError(f"r schedule has {len(values)} entries for {num_layers} layers.")
        return values + [0] * (num_layers - len(values))
    inflect = 0.0
    if isinstance(r, tuple):
        r, inflect = r
        if not -1.0 <= float(inflect) <= 1.0:
            raise ValueError(f"inflect must be in [-1, 1], got {inflect}.")
    r = _check_count("r", r, 0)
    low = int(r * (1.0 - inflect))
    high = 2 * r - low
    step = (high - low) / (num_layers - 1) if num_layers > 1 else 0.0
    return [int(low + step * i) for i in range(num_layers)]
