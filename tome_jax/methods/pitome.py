"""PiToMe (Tran et al., NeurIPS 2024, "Accelerating Transformers with Spectrum-Preserving Token
Merging"), as the authors' timm/DeiT patch computes it at inference (github hchautran/PiToMe,
`algo/pitome/merge.py::pitome_vision`, `algo/pitome/patch/deit.py`).

On the unprotected tokens' keys k (averaged over heads), normalized to unit length:

    S = k k^T                                   [T, T] cosine similarities
    E_i = mean_j ELU(S_ij - m_l, alpha)         energy; m_l = m - m * l / L at layer l of L
    order = argsort(-E)                         highest energy first

- "pitome" layers (the later half): the 2k highest-energy tokens are the mergeable ones, alternately
  A = order[0:2k:2] and B = order[1:2k:2]; every A token merges into its most similar B token
  (argmax of S[A, B]); the T - 2k lowest-energy ("isolated") tokens are kept as they are.
  Output: [protected, order[2k:] (energy order), B (energy order)].
- "bsm" layers (the first ceil(L/2), `use_bsm_pitome` in their patch): ToMe's bipartite matching over
  the energy order, A = order[::2], B = order[1::2]: the k A tokens with the best match merge.
  Output: [protected, unmerged A (by descending best score), B].
Merges are size-weighted means (`merge_wavg`), sources by amax, as ToMe. k per layer is the schedule's
r, or with `ratio < 1` the authors' floor(T - T * ratio) of the T unprotected tokens (see Options).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

import tome_jax.merge as tome  # not `from tome_jax import`: that runs the package's lazy hook (models)
from tome_jax.methods.base import LayerInputs, ReductionMethod, register_method


@dataclasses.dataclass(frozen=True)
class PiToMeOptions:
    """margin: m, the first layer's energy margin; layer l of L uses m - m * l / L (the authors'
    `.75 - .75 * (i / num_layers)`). alpha: the ELU's alpha. ratio: 1.0 = a layer removes the
    schedule's r (so choose_r and eval's r sweep apply); < 1 = the authors' keep ratio: a layer whose
    r is > 0 removes floor(T - T * ratio) of its T unprotected tokens instead (r=0 still means no
    reduction). bsm_fraction: the first ceil(depth * bsm_fraction) layers use the bipartite variant
    (`use_bsm_pitome`, the authors' 0.5); 0.0 = the energy-protected rule in every layer."""

    margin: float = 0.75
    alpha: float = 1.0
    ratio: float = 1.0
    bsm_fraction: float = 0.5


def removed(r: int, unprotected: int, ratio: float) -> int:
    """Tokens a layer removes: the schedule's r, or the authors' floor(T - T * ratio) where ratio < 1
    (r = 0: none), clamped to half the unprotected tokens (2k <= T: every A token needs its own B)."""
    if r <= 0:
        return 0
    k = math.floor(unprotected - unprotected * ratio) if ratio < 1.0 else r
    return max(0, min(k, unprotected // 2))


def energy_order(metric: jax.Array, margin: float, alpha: float) -> tuple[jax.Array, jax.Array]:
    """metric [B, T, C'] -> (cosine similarities S [B, T, T], token indices by descending energy [B, T])."""
    k = jax.lax.stop_gradient(metric).astype(jnp.float32)
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    sim = jnp.einsum("bic,bjc->bij", k, k, precision=jax.lax.Precision.HIGHEST)
    energy = jax.nn.elu(sim - margin, alpha).mean(axis=-1)
    return sim, jnp.argsort(-energy, axis=-1, stable=True)


def _take(values: jax.Array, idx: jax.Array) -> jax.Array:
    """values [B, n] at idx [B, m] -> [B, m]."""
    return jnp.take_along_axis(values, idx, axis=-1)


def _scores(sim: jax.Array, a_idx: jax.Array, b_idx: jax.Array) -> jax.Array:
    """S[A, B] [B, |A|, |B|] from S [B, T, T] and the index sets a_idx [B, |A|], b_idx [B, |B|]."""
    rows = jnp.take_along_axis(sim, a_idx[..., None], axis=1)
    return jnp.take_along_axis(rows, b_idx[:, None, :], axis=2)


def _argmax_first(scores: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Max and first index of the max over the last axis."""
    best = scores.max(axis=-1)
    n = scores.shape[-1]
    return best, jnp.min(jnp.where(scores == best[..., None], jnp.arange(n), n), axis=-1)


def pitome_plan(metric: jax.Array, k: int, margin: float, alpha: float = 1.0, bipartite: bool = False,
                protected: int = 0) -> tome.MergePlan:
    """The merge plan of one PiToMe layer for metric [B, T, C'] (the first `protected` tokens kept in
    front), removing k tokens; `bipartite`: the authors' `pitome_bsm` variant."""
    p = protected
    sim, order = energy_order(metric[:, p:], margin, alpha)
    batch, tokens = order.shape
    if bipartite:
        a_idx, b_idx = order[:, ::2], order[:, 1::2]
        best, best_b = _argmax_first(_scores(sim, a_idx, b_idx))
        edge = jnp.argsort(-best, axis=-1, stable=True)
        unm, src = edge[:, k:], edge[:, :k]
        out_rows = jnp.concatenate([_take(a_idx, unm), b_idx], axis=1)
        src_rows, dst_pos = _take(a_idx, src), a_idx.shape[1] - k + _take(best_b, src)
    else:
        a_idx, b_idx = order[:, :2 * k:2], order[:, 1:2 * k:2]
        _, best_b = _argmax_first(_scores(sim, a_idx, b_idx))
        out_rows = jnp.concatenate([order[:, 2 * k:], b_idx], axis=1)
        src_rows, dst_pos = a_idx, tokens - 2 * k + best_b
    return tome.shift_plan(tome.MergePlan(out_rows, src_rows, dst_pos, tokens), p)


@register_method("pitome", options=PiToMeOptions)
class PiToMe(ReductionMethod):
    """Energy-protected merging (module docstring)."""

    def tokens_after(self, r: int, tokens: int, protected: int) -> int:
        return tokens - removed(r, tokens - protected, self.options.ratio)

    def plan(self, inputs: LayerInputs) -> tome.MergePlan:
        o, p = self.options, inputs.protected
        k = removed(inputs.r, inputs.metric.shape[1] - p, o.ratio)
        margin = o.margin - o.margin * (inputs.layer / inputs.depth)
        bipartite = inputs.layer < math.ceil(inputs.depth * o.bsm_fraction)
        return pitome_plan(inputs.metric, k, margin, o.alpha, bipartite, p)

    def extra_flops(self, tokens_in: int, tokens_out: int, head_dim: int, dim: int) -> float:
        """The full similarity matrix S = k k^T over the tokens (the energy needs every pair)."""
        return float(tokens_in * tokens_in * head_dim)
