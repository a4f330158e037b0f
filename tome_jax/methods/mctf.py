"""MCTF: multi-criteria token fusion with one-step-ahead attention (Lee et al., CVPR 2024).

The authors' code is github mlvlab/MCTF (utils/mctf.py, models/modules/blocks.py); this is the
off-the-shelf (inference) mode of its evaluation scripts, written as pure functions over a
`MergePlan` (docs/methods.md, "MCTF").

In a merging block MCTF reduces BEFORE attention: the block computes its attention probabilities
P [B, H, T, T] on the incoming tokens, MCTF merges the incoming tokens x [B, T, C] (the residual
stream itself is the similarity metric), and the block applies the merged probabilities ("one-step-
ahead attention") to the values of the merged tokens: one attention pass, with q and k on T tokens
and v on T' tokens.

    plan = mctf_plan(x, probs, size, r, protected=1)            # MergePlan or None
    x, size, probs = mctf_merge(plan, x, size, probs)            # [B, T', C], [B, T', 1], [B, H, T', T']

Scores between A (even) and B (odd) tokens multiply three criteria:
    W_sim  = ((cos(x_a, x_b) + 1) / 2) ** (1 / tau_sim)
    W_info = (i_a * i_b) ** (1 / tau_info),   i = 1 / mean_{heads, queries} P[:, :, :, t], / its max
    W_size = (s_a * s_b) ** (1 / tau_size),   s = 1 / size, / its max
Bidirectional matching: r1 = r // 2 A tokens merge into their best B token (ToMe's rule), then
r2 = r - r1 B tokens merge into their best remaining A token, both from the same scores (the B
tokens' scores are not updated after the first step: the authors' code). Output order:
[unmerged A by index (class token first), unmerged B by descending score]. Ties are broken
towards the lower index (stable sorts); the authors' torch sorts are unstable.

Merged values are attention-weighted averages (pooling "attention", the authors' default): weight
w = a * size / max(size), a = mean_{heads, queries} P. The one-step-ahead attention sums P over
each key group, then takes the w-weighted average over each query group, so its rows still sum to 1.
The functions are jitted (one compile per shape when called eagerly, inlined under an outer jit).
Pure JAX + `tome_jax.merge`: no Flax.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

import tome_jax.merge as tome  # not `from tome_jax import`: that runs the package's lazy hook (models)
from tome_jax.methods.base import LayerInputs, ReductionMethod, ones_size, register_method

POOLINGS = ("attention", "size")


def mctf_r(tokens: int, r: int, protected: int, min_tokens: int = 10) -> int:
    """The tokens MCTF removes from `tokens` for a requested r: the authors' two clamps, in order.

    First at least `min_tokens` tokens stay (`if t - r < 10: r = t - 10`), then at most half of
    the unprotected tokens merge (`(t - protected) // 2`)."""
    if tokens - r < min_tokens:
        r = tokens - min_tokens
    return max(0, min(r, tome.max_r(tokens, protected)))


def _criteria_scores(metric: jax.Array, attn: jax.Array | None, size: jax.Array | None, *,
                     tau_sim: float, tau_info: float, tau_size: float) -> jax.Array:
    """Scores [B, Ta, Tb] between the A (even) and B (odd) tokens; no gradient (the matching is discrete)."""
    metric = tome._normalize(metric)
    a, b = metric[:, ::2], metric[:, 1::2]
    if tau_sim:
        scores = ((tome._similarity(a, b) + 1) / 2) ** (1 / tau_sim)
    else:
        scores = jnp.ones((a.shape[0], a.shape[1], b.shape[1]), jnp.float32)
    if tau_info > 0 and attn is not None:
        info = 1 / jax.lax.stop_gradient(attn).astype(jnp.float32).mean(axis=(1, 2))  # [B, T]
        info = info / info.max(axis=1, keepdims=True)
        scores = scores * (info[:, ::2, None] * info[:, None, 1::2]) ** (1 / tau_info)
    if tau_size and size is not None:
        inv = 1 / jax.lax.stop_gradient(size[..., 0]).astype(jnp.float32)
        inv = inv / inv.max(axis=1, keepdims=True)
        scores = scores * (inv[:, ::2, None] * inv[:, None, 1::2]) ** (1 / tau_size)
    return scores


def _descending(values: jax.Array) -> jax.Array:
    """Indices sorting values [B, n] from largest to smallest, ties by lower index."""
    return jnp.argsort(-values, axis=-1, stable=True)


@functools.partial(jax.jit, static_argnames=("r", "protected", "tau_sim", "tau_info", "tau_size", "bidirectional",
                                             "min_tokens"))
def mctf_plan(metric: jax.Array, attn: jax.Array | None, size: jax.Array | None, r: int, *,
              protected: int = 1, tau_sim: float = 1.0, tau_info: float = 20.0, tau_size: float = 40.0,
              bidirectional: bool = True, min_tokens: int = 10) -> tome.MergePlan | None:
    """MCTF's matching as one MergePlan (None when r clamps to 0).

    metric: [B, T, C] (the block's input tokens); attn: [B, H, T, T] attention probabilities on them
    (None: no informativeness criterion); size: [B, T, 1] or None (no size criterion). protected:
    prefix tokens never merged (0, 1: class token, 2: class and distill token). The two matching
    steps compose into one plan: a token merged into a B token that itself merges on goes straight
    to the final destination, which is exact for the "sum" and "amax" merges MCTF uses.
    """
    tome._check_3d("metric", metric)
    batch, tokens, _ = metric.shape
    r = mctf_r(tokens, r, protected, min_tokens)
    if r <= 0:
        return None
    r1, r2 = (r // 2, r - r // 2) if bidirectional else (r, 0)
    scores = _criteria_scores(metric, attn, size, tau_sim=tau_sim, tau_info=tau_info, tau_size=tau_size)
    num_a, num_b = scores.shape[1:]
    # The authors mask the first `protected` A rows; with a distill token (B token 0) we protect it as
    # ToMe does instead: it is no destination in step 1 and no source in step 2.
    scores = scores.at[:, :min(protected, 1), :].set(-jnp.inf)
    if protected == 2:
        scores = scores.at[:, :, 0].set(-jnp.inf)

    # Step 1: A -> B.
    node_max, node_idx = tome._max_argmax(scores)
    edge_idx = _descending(node_max)
    src_idx, unm_idx = edge_idx[:, :r1], edge_idx[:, r1:]
    if protected:
        unm_idx = jnp.sort(unm_idx, axis=-1)  # class token first, then index order
    dst_idx = jnp.take_along_axis(node_idx, src_idx, axis=-1)
    num_unm_a = num_a - r1

    # Step 2: B -> the unmerged A tokens, from the same scores.
    rows = jnp.arange(batch)[:, None]
    if bidirectional:
        new_scores = jnp.take_along_axis(scores, unm_idx[:, :, None], axis=1).transpose(0, 2, 1)  # [B, Tb, Ta-r1]
        node_max2, node_idx2 = tome._max_argmax(new_scores)
        if protected == 2:
            node_max2 = node_max2.at[:, 0].set(-jnp.inf)
        edge_idx2 = _descending(node_max2)
        src_idx2, unm_idx2 = edge_idx2[:, :r2], edge_idx2[:, r2:]
        dst_idx2 = jnp.take_along_axis(node_idx2, src_idx2, axis=-1)
    else:
        unm_idx2 = jnp.broadcast_to(jnp.arange(num_b), (batch, num_b))
        src_idx2 = dst_idx2 = jnp.zeros((batch, 0), jnp.int32)

    # Output positions: [unmerged A, unmerged B]; every B token's final position.
    num_out = num_unm_a + num_b - r2
    b_pos = jnp.zeros((batch, num_b), jnp.int32)
    b_pos = b_pos.at[rows, unm_idx2].set(num_unm_a + jnp.arange(num_b - r2, dtype=jnp.int32))
    b_pos = b_pos.at[rows, src_idx2].set(dst_idx2.astype(jnp.int32))
    out_rows = jnp.concatenate([2 * unm_idx, 2 * unm_idx2 + 1], axis=1)
    src_rows = jnp.concatenate([2 * src_idx, 2 * src_idx2 + 1], axis=1)
    dst_pos = jnp.concatenate([jnp.take_along_axis(b_pos, dst_idx, axis=-1), dst_idx2.astype(jnp.int32)], axis=1)
    if protected == 2 and bidirectional:  # the distill token (last of the unmerged B: score -inf) to position 1
        order = np.r_[0, num_out - 1, 1:num_out - 1]
        out_rows = out_rows[:, order]
        dst_pos = jnp.asarray(np.argsort(order))[dst_pos]
    elif protected == 2:  # one-way: B token 0 is the first unmerged B
        order = np.r_[0, num_unm_a, 1:num_unm_a, num_unm_a + 1:num_out]
        out_rows = out_rows[:, order]
        dst_pos = jnp.asarray(np.argsort(order))[dst_pos]
    return tome.MergePlan(out_rows.astype(jnp.int32), src_rows.astype(jnp.int32), dst_pos.astype(jnp.int32),
                          tokens)


@functools.partial(jax.jit, static_argnames=("tokens_shape", "pooling"))
def pooling_weights(attn: jax.Array | None, size: jax.Array | None, tokens_shape: tuple[int, int],
                    pooling: str = "attention") -> jax.Array:
    """Each token's weight in its group's average, [B, T, 1] float32, no gradient.

    "attention" (the authors' default, pooling_type 1): mean attention received x size / max size;
    "size" (pooling_type 0): the size, as ToMe."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
    if size is None:
        size = jnp.ones((*tokens_shape, 1), jnp.float32)
    size = jax.lax.stop_gradient(size).astype(jnp.float32)
    if pooling == "size":
        return size
    received = jax.lax.stop_gradient(attn).astype(jnp.float32).mean(axis=(1, 2))[..., None]  # [B, T, 1]
    return received * (size / size.max(axis=1, keepdims=True))


def _merge_rows(plan: tome.MergePlan, a: jax.Array) -> jax.Array:
    """Sum-merge axis 2 of a [B, H, T, N] by `plan` -> [B, H, T', N]: the kept rows gathered, the
    merged rows added into their destinations (whole rows: contiguous, no transpose of `a`)."""
    batch = jnp.arange(a.shape[0])[:, None]
    kept = jnp.take_along_axis(a, plan.out_rows[:, None, :, None], axis=2)
    merged = jnp.take_along_axis(a, plan.src_rows[:, None, :, None], axis=2)  # [B, H, R, N]
    return kept.at[batch, :, plan.dst_pos].add(merged.transpose(0, 2, 1, 3))


@jax.jit
def merge_attention(plan: tome.MergePlan, attn: jax.Array, weights: jax.Array, merged_weights: jax.Array) -> jax.Array:
    """One-step-ahead attention [B, H, T, T] -> [B, H, T', T']: the weighted average (weights
    [B, T, 1], their group sums merged_weights [B, T', 1]) over each query group, and the sum over
    each key group (the two commute; queries first, so the transpose is of the smaller tensor)."""
    queries = _merge_rows(plan, attn.astype(jnp.float32) * weights[:, None]) / merged_weights[:, None]
    return _merge_rows(plan, queries.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)


@jax.jit
def fuse(merge: tome.MergePlan, weights: jax.Array, x: jax.Array,
         size: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """The weighted average of each group of x [B, T, C] (weights [B, T, 1]) in x's dtype, and the
    summed sizes [B, T', 1] float32 (size None: ones)."""
    fused = tome.apply_plan(merge, x.astype(jnp.float32) * weights, "sum") / tome.apply_plan(merge, weights, "sum")
    size = tome.apply_plan(merge, ones_size(x) if size is None else size.astype(jnp.float32), "sum")
    return fused.astype(x.dtype), size


def mctf_merge(plan: tome.MergePlan | None, x: jax.Array, size: jax.Array | None, attn: jax.Array, *,
               pooling: str = "attention") -> tuple[jax.Array, jax.Array | None, jax.Array]:
    """Fuse x [B, T, C] by `plan` with the pooling weights; returns (x' [B, T', C] in x's dtype,
    size' [B, T', 1] float32, one-step-ahead attention [B, H, T', T'] float32). plan None: unchanged."""
    if plan is None:
        return x, size, attn
    weights = pooling_weights(attn, size, x.shape[:2], pooling)
    x, new_size = fuse(plan, weights, x, size)
    return x, new_size, merge_attention(plan, attn, weights, tome.apply_plan(plan, weights, "sum"))


# ----------------------------------------------------------------------------- the registered method


@dataclasses.dataclass(frozen=True)
class MCTFOptions:
    """MCTF's hyper-parameters; the defaults are the authors' evaluation setting
    (run/eval_deit_s_mctf.sh: mctf_type [16,0,0,1,1,1,20,40,1,1,0]). The authors' scripts also leave
    block 0 unmerged (activate_layer [1..11]): that is the schedule's job, r=[0] + [16] * 11.

    tau_sim, tau_info, tau_size: temperatures of the three criteria (0: criterion off).
    bidirectional: r // 2 tokens A -> B, then the rest B -> A (False: all r A -> B, as ToMe).
    pooling: "attention" (weights: attention received x size, the default) or "size" (ToMe's).
    min_tokens: the authors' clamp keeps at least this many tokens in a merging block.
    """

    tau_sim: float = 1.0
    tau_info: float = 20.0
    tau_size: float = 40.0
    bidirectional: bool = True
    pooling: str = "attention"
    min_tokens: int = 10

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"MCTF pooling must be one of {POOLINGS}, got {self.pooling!r}.")
        if min(self.tau_sim, self.tau_info, self.tau_size) < 0 or self.min_tokens < 0:
            raise ValueError("MCTF temperatures and min_tokens must be >= 0.")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MCTFPlan:
    """merge: where every token goes; weights [B, T, 1]: each token's pooling weight; attn
    [B, H, T', T']: the one-step-ahead attention the block applies to the merged tokens' values."""

    merge: tome.MergePlan
    weights: jax.Array
    attn: jax.Array


@register_method("mctf", options=MCTFOptions)
class MCTF(ReductionMethod):
    """Multi-criteria token fusion with one-step-ahead attention (module docstring)."""

    needs_attention = True
    reduces_before_attention = True

    def tokens_after(self, r: int, tokens: int, protected: int) -> int:
        return tokens - mctf_r(tokens, r, protected, self.options.min_tokens)

    def plan(self, inputs: LayerInputs) -> MCTFPlan | None:
        if inputs.x is None or inputs.attn is None:
            raise ValueError("method='mctf' plans from the block's input tokens x and its attention "
                             "probabilities attn; both must be given.")
        o = self.options
        merge = mctf_plan(inputs.x, inputs.attn, inputs.size, inputs.r, protected=inputs.protected,
                          tau_sim=o.tau_sim, tau_info=o.tau_info, tau_size=o.tau_size,
                          bidirectional=o.bidirectional, min_tokens=o.min_tokens)
        if merge is None:
            return None
        weights = pooling_weights(inputs.attn, inputs.size, inputs.x.shape[:2], o.pooling)
        attn = merge_attention(merge, inputs.attn, weights, tome.apply_plan(merge, weights, "sum"))
        return MCTFPlan(merge, weights, attn)

    def reduce(self, plan: MCTFPlan, x, size, source):
        if source is not None:
            source = tome.apply_plan(plan.merge, source, "amax")
        x, size = fuse(plan.merge, plan.weights, x, size)
        return x, size, source

    def attention_after(self, plan: MCTFPlan, attn: jax.Array) -> jax.Array:
        return plan.attn

    def undo(self, plan: MCTFPlan, y: jax.Array) -> jax.Array:
        return tome.undo_plan(plan.merge, y)

    def extra_flops(self, tokens_in: int, tokens_out: int, head_dim: int, dim: int) -> float:
        """The similarity A @ B^T over the C channels of x, less what the merged attention saves
        against the count of a block that attends on all tokens_in: v, attention @ v and proj run on
        tokens_out tokens (so this is negative at ViT sizes)."""
        similarity = ((tokens_in + 1) // 2) * (tokens_in // 2) * dim
        saved = 2 * (tokens_in - tokens_out) * dim * dim + (tokens_in ** 2 - tokens_out ** 2) * dim
        return float(similarity - saved)
