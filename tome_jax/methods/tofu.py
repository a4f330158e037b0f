"""ToFu: Token Fusion, bridging token pruning and token merging (Kim et al., WACV 2024).

ToFu has no official repository; the published code is the PiToMe repository's copy (github
hchautran/PiToMe, algo/tofu/merge.py and algo/tofu/patch/timm.py, deit.py). It keeps ToMe's
bipartite matching (keys averaged over heads, between attention and MLP) and changes what happens
to a matched pair, by depth:

- early blocks (i <= depth // 2 in the published patch) PRUNE: the r merged-away tokens are
  dropped, their destinations keep their values;
- later blocks MERGE with MLERP, norm-preserving: the destination becomes the plain mean m of itself
  and its sources, rescaled to the largest norm in the group,
      published code:  m / ||x_dst|| * max(||x_dst||, ||x_src||, ...)   (the destination's PRE-merge norm)
      paper (MLERP):   m / ||m||     * max(||x_dst||, ||x_src||, ...)   (rescale="merged")

    plan = tome.bipartite_plan(metric, r, class_token=True)
    x = mlerp_merge(plan, x)          # or tome.keep_rows(plan, x) in a pruning block

Sizes and sources: a pruned token is counted in its destination's size and source (the published
source tracking merges sources by amax in pruning blocks too), so sources partition the input
tokens, sizes add and `unmerge` gives a pruned token its destination's value. The published code
never updates sizes, so its proportional attention is inert: `prop_attn=False` reproduces it.
Pure JAX + `tome_jax.merge`: no Flax.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

import tome_jax.merge as tome  # not `from tome_jax import`: that runs the package's lazy hook (models)
from tome_jax.methods.base import LayerInputs, ReductionMethod, ones_size, register_method

RESCALES = ("destination", "merged")


@functools.partial(jax.jit, static_argnames="rescale")
def mlerp_merge(plan: tome.MergePlan, x: jax.Array, rescale: str = "destination") -> jax.Array:
    """x [B, T, C] -> [B, T', C]: each group's plain mean, rescaled to its largest norm.

    rescale "destination": divided by the destination token's norm before the merge (the published
    code); "merged": by the mean's own norm (the paper's MLERP). Norms in float32, result in x's dtype.
    A token nothing merged into keeps its value (up to one rounding)."""
    if rescale not in RESCALES:
        raise ValueError(f"rescale must be one of {RESCALES}, got {rescale!r}.")
    x32 = x.astype(jnp.float32)
    norms = jnp.linalg.norm(x32, axis=-1, keepdims=True)  # [B, T, 1]
    mean = tome.apply_plan(plan, x32, "mean")
    largest = tome.apply_plan(plan, norms, "amax")
    before = tome.keep_rows(plan, norms) if rescale == "destination" else jnp.linalg.norm(mean, axis=-1, keepdims=True)
    return (mean / before * largest).astype(x.dtype)


def prunes(layer: int, depth: int, merge_from: int) -> bool:
    """Whether block `layer` of `depth` prunes (else merges): before `merge_from`; merge_from < 0 is
    the published rule, blocks i <= depth // 2 prune."""
    return layer < (depth // 2 + 1 if merge_from < 0 else merge_from)


# ----------------------------------------------------------------------------- the registered method


@dataclasses.dataclass(frozen=True)
class ToFuOptions:
    """merge_from: the first block that merges (MLERP); the blocks before it prune. -1: the published
    rule, depth // 2 + 1. rescale: "destination" (the published code: the destination's norm before
    the merge) or "merged" (the paper's MLERP: the merged mean's norm)."""

    merge_from: int = -1
    rescale: str = "destination"

    def __post_init__(self):
        if self.rescale not in RESCALES:
            raise ValueError(f"ToFu rescale must be one of {RESCALES}, got {self.rescale!r}.")
        if self.merge_from < -1:
            raise ValueError(f"ToFu merge_from must be a block index >= 0, or -1 (the published rule), "
                             f"got {self.merge_from}.")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ToFuPlan:
    """merge: ToMe's matching; prune (static): this block drops the matched tokens instead of fusing them."""

    merge: tome.MergePlan
    prune: bool = dataclasses.field(metadata=dict(static=True))


@register_method("tofu", options=ToFuOptions)
class ToFu(ReductionMethod):
    """Token Fusion: ToMe's matching; early blocks prune, later blocks merge by MLERP (module docstring)."""

    def tokens_after(self, r: int, tokens: int, protected: int) -> int:
        return tokens - min(r, tome.max_r(tokens, protected))

    def plan(self, inputs: LayerInputs) -> ToFuPlan | None:
        merge = tome.bipartite_plan(inputs.metric, inputs.r, class_token=inputs.protected >= 1,
                                    distill_token=inputs.protected == 2)
        if merge is None:
            return None
        return ToFuPlan(merge, prunes(inputs.layer, inputs.depth, self.options.merge_from))

    def reduce(self, plan: ToFuPlan, x, size, source):
        if source is not None:
            source = tome.apply_plan(plan.merge, source, "amax")
        size = tome.apply_plan(plan.merge, ones_size(x) if size is None else size, "sum")
        x = tome.keep_rows(plan.merge, x) if plan.prune else mlerp_merge(plan.merge, x, self.options.rescale)
        return x, size, source

    def undo(self, plan: ToFuPlan, y: jax.Array) -> jax.Array:
        return tome.undo_plan(plan.merge, y)
