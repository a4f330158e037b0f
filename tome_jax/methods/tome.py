"""ToMe and its ablations (Bolya et al., ICLR 2023): "bipartite", "prune", "random", "kth", "none".

- "bipartite": ToMe's bipartite soft matching (the paper; official semantics, docs/semantics.md).
- "prune": the same matching, but the merged tokens are dropped instead of averaged into their
  partner (the paper's merge-versus-prune ablation). Sizes of the kept tokens are unchanged.
- "random": a random set of r unprotected tokens merges into its most similar partner among the
  rest (the paper's random-matching ablation); needs a PRNG key per layer.
- "kth": groups of k consecutive unprotected tokens merge to one; here r is k (1 = nothing).
- "none": no reduction, whatever r says.
"""

from __future__ import annotations

import tome_jax.merge as tome  # not `from tome_jax import`: that runs the package's lazy hook (models)
from tome_jax.methods.base import LayerInputs, ReductionMethod, ones_size, register_method


@register_method("bipartite")
class Bipartite(ReductionMethod):
    """ToMe: r tokens of set A (even positions) merge into their most similar token of set B."""

    def tokens_after(self, r: int, tokens: int, protected: int) -> int:
        return tokens - min(r, tome.max_r(tokens, protected))

    def plan(self, inputs: LayerInputs) -> tome.MergePlan | None:
        return tome.bipartite_plan(inputs.metric, inputs.r, class_token=inputs.protected >= 1,
                                   distill_token=inputs.protected == 2)


@register_method("prune")
class Prune(Bipartite):
    """ToMe's matching, but the matched tokens are dropped (sizes of the kept tokens unchanged)."""

    def reduce(self, plan, x, size, source):
        if source is not None:
            source = tome.keep_rows(plan, source)
        size = ones_size(x) if size is None else size
        return tome.keep_rows(plan, x), tome.keep_rows(plan, size), source


@register_method("random")
class Random(ReductionMethod):
    """r random unprotected tokens merge into their most similar partner among the rest."""

    needs_key = True

    def tokens_after(self, r: int, tokens: int, protected: int) -> int:
        return tokens - min(r, max(tokens - protected - 1, 0))

    def plan(self, inputs: LayerInputs) -> tome.MergePlan | None:
        if inputs.key is None:
            raise ValueError("method='random' needs a PRNG key per layer (the model's 'reduction' RNG stream).")
        p = inputs.protected  # planned over the unprotected tokens, the prefix kept in front
        return tome.shift_plan(tome.random_plan(inputs.metric[:, p:], inputs.r, inputs.key), p)


@register_method("kth")
class Kth(ReductionMethod):
    """Groups of k = r consecutive unprotected tokens merge to one (r <= 1: nothing)."""

    def tokens_after(self, r: int, tokens: int, protected: int) -> int:
        k = min(r, tokens - protected)
        return tokens if k <= 1 else protected + (tokens - protected) // k

    def plan(self, inputs: LayerInputs) -> tome.MergePlan | None:
        p, tokens = inputs.protected, inputs.metric.shape[1]
        return tome.shift_plan(tome.kth_plan(inputs.metric[:, p:], min(inputs.r, tokens - p)), p)


@register_method("none")
class NoReduction(ReductionMethod):
    """No reduction, whatever r says."""

    def tokens_after(self, r: int, tokens: int, protected: int) -> int:
        return tokens

    def plan(self, inputs: LayerInputs) -> None:
        return None

