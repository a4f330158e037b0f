"""DiffRate (Chen et al., ICCV 2023, github OpenGVLab/DiffRate): prune, then merge, per block.

At inference a DiffRate block keeps two counts (class token included): `prune_kept` and
`merge_kept`. After the block's attention (and its residual):

1. importance: the class token's attention to every other token, averaged over heads,
   `a_j = mean_h softmax(q_0 k_j / sqrt(d) + log s_j)` (the probabilities of this block's own
   attention pass, proportional attention included). The tokens are sorted by it, descending,
   the class token first.
2. prune: the sorted tokens past `prune_kept` are dropped.
3. merge: of the kept ones, the first `merge_kept` are destinations; each of the others (the
   unimportant ones) merges into its most similar destination by cosine similarity of the block's
   tokens x themselves (not the keys), the class token excluded as a destination. The merged token
   is the *plain* mean of the destination and its sources (torch `scatter_reduce("mean")`, not
   weighted by size), and its size is the destination's size plus each source's size times its
   similarity to the destination (their "proportional attention considering similarity", so sizes
   are not token counts).

The output is the `merge_kept` destinations in importance order. The count of a layer with
schedule entry r (`kept_counts`) follows the r helper of their code (`init_kept_num_using_r`, in
the DiffRate port of hchautran/PiToMe): N starts at the *patch* count (196 for a 197-token ViT at
224), every block keeps `prune_kept = N` and `merge_kept = N - min(r, N // 2)`, then N is the new
count. So block 0 prunes one token more than r says (the least important patch); `count_patches=
False` starts N at the model's token count instead. Their searched schedules (compression_rate.json)
are `PUBLISHED`; `published="deit_small_patch16_224@2.9"` or explicit `prune_kept` / `merge_kept`
tuples set the counts per block (r is then only the switch: a block with r = 0 keeps everything).

Where we differ (documented in docs/methods.md): a distill token (protected=2) is kept and never a
destination (theirs ranks it like a patch); their importance needs a class token, so on a model
without one (protected=0) the method is not applicable (`not_applicable`; `plan` raises) unless
`importance="received"`: the attention each token receives, averaged over heads and queries (ours);
ties in importance keep the lower index first (torch.sort is not stable) and a merge tie goes to
the first destination; with r = 0 block 0 prunes nothing (their helper would still prune one).
The ordering and matching carry no gradient (their `.detach()`); the merged values do.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

import tome_jax.merge as tome
from tome_jax.methods.base import LayerInputs, ReductionMethod, ones_size, register_method

# Their searched kept-token schedules, per block, class token included (compression_rate.json of
# OpenGVLab/DiffRate, ViT models): "<model>@<GFLOPs>" -> (prune_kept, merge_kept).
PUBLISHED: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "deit_tiny_patch16_224@0.6": ((197, 196, 180, 157, 130, 107, 86, 73, 63, 51, 40, 3),
        (197, 187, 167, 139, 114, 90, 76, 66, 57, 45, 37, 3)),
    "deit_tiny_patch16_224@0.7": ((197, 196, 194, 180, 150, 123, 98, 82, 68, 60, 52, 3),
        (197, 196, 192, 158, 133, 103, 88, 72, 64, 58, 49, 3)),
    "deit_tiny_patch16_224@0.8": ((197, 197, 196, 186, 166, 147, 117, 103, 92, 80, 74, 3),
        (197, 196, 190, 172, 154, 125, 107, 96, 84, 78, 70, 3)),
    "deit_tiny_patch16_224@0.9": ((197, 197, 196, 190, 182, 166, 141, 125, 113, 105, 99, 3),
        (197, 196, 194, 188, 172, 147, 129, 115, 107, 103, 96, 3)),
    "deit_tiny_patch16_224@1.0": ((197, 197, 196, 194, 188, 184, 178, 164, 156, 137, 129, 21),
        (197, 197, 196, 190, 186, 154, 148, 156, 145, 135, 125, 21)),
    "deit_small_patch16_224@2.3": ((197, 192, 168, 143, 121, 105, 92, 74, 62, 45, 33, 3),
        (197, 180, 156, 127, 109, 98, 80, 66, 52, 37, 31, 3)),
    "deit_small_patch16_224@2.5": ((197, 192, 174, 156, 131, 115, 111, 99, 76, 50, 39, 3),
        (197, 186, 160, 133, 119, 107, 96, 82, 66, 43, 37, 3)),
    "deit_small_patch16_224@2.7": ((197, 196, 182, 160, 141, 127, 115, 105, 88, 66, 49, 3),
        (197, 188, 170, 147, 131, 119, 109, 96, 76, 54, 45, 3)),
    "deit_small_patch16_224@2.9": ((197, 196, 190, 168, 150, 139, 129, 117, 99, 78, 58, 3),
        (197, 194, 176, 156, 141, 133, 121, 107, 88, 64, 56, 3)),
    "deit_small_patch16_224@3.1": ((197, 197, 194, 180, 160, 147, 137, 129, 115, 92, 76, 3),
        (197, 196, 186, 164, 150, 141, 133, 121, 103, 78, 68, 3)),
    "deit_base_patch16_224@8.7": ((197, 192, 172, 156, 131, 107, 90, 72, 56, 33, 17, 3),
        (197, 178, 162, 141, 115, 96, 78, 60, 47, 21, 13, 3)),
    "deit_base_patch16_224@10.0": ((197, 194, 182, 168, 148, 129, 113, 101, 82, 49, 25, 3),
        (197, 186, 174, 156, 137, 117, 105, 90, 66, 31, 19, 3)),
    "deit_base_patch16_224@10.4": ((197, 196, 188, 174, 156, 141, 121, 103, 90, 58, 25, 3),
        (197, 190, 184, 164, 145, 131, 107, 94, 74, 31, 21, 3)),
    "deit_base_patch16_224@11.5": ((197, 197, 197, 188, 170, 154, 139, 123, 107, 72, 43, 3),
        (197, 197, 192, 178, 158, 145, 127, 111, 94, 50, 35, 3)),
    "deit_base_patch16_224@12.5": ((197, 197, 196, 192, 184, 170, 154, 139, 129, 94, 58, 3),
        (197, 196, 194, 190, 176, 160, 145, 131, 115, 68, 47, 3)),
    "vit_base_patch16_224.mae@8.7": ((197, 192, 166, 143, 119, 103, 86, 72, 54, 43, 37, 23),
        (197, 176, 150, 127, 107, 92, 76, 58, 47, 41, 23, 23)),
    "vit_base_patch16_224.mae@10.0": ((197, 194, 173, 154, 135, 120, 108, 92, 76, 64, 52, 40),
        (197, 181, 160, 141, 122, 116, 95, 80, 67, 60, 40, 40)),
    "vit_base_patch16_224.mae@10.4": ((197, 195, 179, 159, 140, 122, 105, 100, 89, 71, 56, 45),
        (197, 187, 166, 145, 125, 109, 102, 97, 75, 64, 45, 45)),
    "vit_base_patch16_224.mae@11.5": ((197, 196, 182, 172, 162, 147, 131, 109, 101, 94, 70, 49),
        (197, 192, 178, 164, 150, 133, 115, 101, 96, 82, 49, 49)),
    "vit_large_patch16_224.mae@31.0": ((197, 195, 188, 179, 168, 157, 146, 143, 131, 121, 111, 102, 93, 85, 76, 70, 61, 53, 47, 35, 31, 26, 21, 14),
        (197, 191, 184, 172, 161, 151, 145, 135, 125, 117, 106, 96, 89, 80, 72, 64, 54, 50, 40, 27, 27, 23, 14, 14)),
    "vit_large_patch16_224.mae@34.7": ((197, 195, 192, 189, 181, 170, 161, 160, 149, 140, 128, 118, 109, 95, 91, 82, 73, 68, 58, 54, 43, 38, 29, 18),
        (197, 193, 190, 185, 173, 164, 159, 154, 142, 137, 121, 111, 103, 97, 82, 76, 67, 61, 58, 48, 35, 32, 18, 18)),
    "vit_large_patch16_224.mae@38.5": ((197, 197, 195, 190, 187, 183, 179, 171, 164, 159, 151, 143, 137, 114, 106, 89, 88, 85, 76, 57, 47, 53, 32, 24),
        (197, 196, 193, 189, 183, 180, 175, 167, 161, 158, 152, 134, 120, 110, 97, 91, 87, 83, 65, 47, 54, 34, 24, 24)),
    "vit_large_patch16_224.mae@42.3": ((197, 197, 197, 195, 194, 193, 191, 187, 182, 180, 173, 149, 142, 134, 125, 121, 111, 106, 91, 87, 77, 39, 38, 32),
        (197, 197, 196, 194, 193, 192, 187, 183, 181, 173, 154, 146, 137, 127, 123, 114, 105, 98, 87, 75, 43, 45, 32, 32)),
    "vit_large_patch16_224.mae@46.1": ((197, 197, 197, 196, 194, 192, 191, 188, 185, 181, 170, 157, 154, 146, 143, 139, 128, 125, 111, 100, 92, 83, 69, 60),
        (197, 197, 196, 195, 193, 191, 189, 187, 183, 176, 162, 155, 148, 145, 139, 133, 127, 118, 104, 95, 86, 71, 60, 60)),
    "vit_huge_patch14_224.mae@83.7": ((257, 255, 246, 227, 200, 178, 168, 159, 155, 145, 140, 139, 128, 119, 114, 109, 107, 100, 101, 102, 117, 104, 103, 97, 97, 102, 95, 90, 82, 83, 74, 56),
        (257, 252, 240, 212, 186, 172, 160, 163, 148, 142, 138, 132, 118, 114, 111, 108, 103, 102, 105, 106, 109, 105, 108, 99, 96, 96, 95, 86, 79, 77, 56, 56)),
    "vit_huge_patch14_224.mae@93.2": ((257, 257, 257, 257, 248, 250, 240, 239, 229, 209, 160, 159, 149, 111, 109, 106, 104, 106, 101, 104, 85, 96, 88, 93, 94, 88, 88, 91, 81, 78, 76, 75),
        (257, 257, 257, 249, 242, 241, 239, 229, 209, 203, 159, 150, 124, 107, 107, 101, 100, 101, 104, 89, 101, 88, 89, 88, 91, 86, 86, 83, 78, 78, 75, 75)),
    "vit_huge_patch14_224.mae@103.4": ((257, 256, 255, 251, 245, 235, 204, 197, 194, 189, 185, 177, 169, 160, 152, 144, 146, 139, 139, 136, 135, 133, 131, 128, 126, 126, 124, 121, 114, 96, 82, 53),
        (257, 256, 253, 247, 238, 211, 201, 195, 193, 185, 179, 171, 162, 154, 150, 145, 141, 138, 137, 135, 134, 133, 130, 127, 125, 125, 122, 114, 101, 90, 53, 53)),
    "vit_huge_patch14_224.mae@124.5": ((257, 256, 252, 248, 238, 237, 220, 214, 198, 186, 189, 191, 191, 185, 188, 186, 186, 183, 183, 182, 182, 183, 183, 181, 186, 182, 182, 180, 178, 180, 161, 136),
        (257, 254, 251, 244, 238, 223, 221, 203, 194, 192, 191, 190, 188, 184, 188, 185, 184, 183, 185, 183, 183, 185, 183, 183, 185, 183, 179, 167, 177, 133, 136, 136)),
}


IMPORTANCE = ("class_token", "received")  # what ranks the tokens: theirs, or ours for models without one


@dataclasses.dataclass(frozen=True)
class DiffRateOptions:
    """prune_kept / merge_kept: tokens kept after pruning / after merging, per block, class token
    included (their `set_kept_num` format); () derives them from r (`kept_counts`). published: one
    of `PUBLISHED` ("deit_small_patch16_224@2.9"), their searched schedule. count_patches: the r
    helper's count, starting at the patch count (block 0 prunes one extra token), as their code does;
    False starts at the model's token count. similarity_size: merged sizes add each source's size
    times its similarity (their inference); False adds plain sizes (sizes count tokens). importance:
    "class_token" (theirs: the class token's attention; a model without one cannot use it) or
    "received" (ours: the attention each token receives, mean over heads and queries; any model)."""

    prune_kept: tuple[int, ...] = ()
    merge_kept: tuple[int, ...] = ()
    published: str = ""
    count_patches: bool = True
    similarity_size: bool = True
    importance: str = "class_token"

    def __post_init__(self):
        if self.importance not in IMPORTANCE:
            raise ValueError(f"diffrate: importance must be one of {', '.join(IMPORTANCE)}, got {self.importance!r}.")
        if len(self.prune_kept) != len(self.merge_kept):
            raise ValueError(f"diffrate: prune_kept and merge_kept need one entry per block each, got "
                             f"{len(self.prune_kept)} and {len(self.merge_kept)}.")
        if self.published and self.prune_kept:
            raise ValueError("diffrate: give either published or prune_kept / merge_kept, not both.")
        if self.published and self.published not in PUBLISHED:
            raise ValueError(f"diffrate: unknown published schedule {self.published!r}; known: "
                             f"{', '.join(PUBLISHED)}.")
        if any(v < 1 for v in self.prune_kept + self.merge_kept):
            raise ValueError("diffrate: kept counts must be >= 1 (the class token).")

    def schedule(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """The given per-block (prune_kept, merge_kept), or None (derived from r)."""
        if self.published:
            return PUBLISHED[self.published]
        return (self.prune_kept, self.merge_kept) if self.prune_kept else None


def kept_counts(layer: int, r: int, tokens: int, protected: int, options: DiffRateOptions) -> tuple[int, int]:
    """(tokens after pruning, tokens after merging) at block `layer` for `tokens` entering it: the
    one place DiffRate's counts are decided (forward, token counts, FLOPs, choose_r)."""
    if r == 0:
        return tokens, tokens
    given = options.schedule()
    if given is not None:
        if layer >= len(given[0]):
            raise ValueError(f"diffrate: the kept counts have {len(given[0])} blocks, block {layer} has none.")
        pruned = min(tokens, max(given[0][layer], protected + 1))
        return pruned, min(pruned, max(given[1][layer], protected + 1))
    n = tokens - protected if layer == 0 and options.count_patches else tokens  # their helper's N
    return n, n - min(r, n // 2)


def importance(attn: jax.Array, protected: int, kind: str = "class_token") -> jax.Array:
    """attn [B, H, T, T] softmax probabilities -> importance [B, T - protected] of the unprotected
    tokens: kind "class_token", the class token's attention to them (mean over heads; needs
    protected >= 1); "received", the attention each token receives (mean over heads and queries)."""
    if kind == "class_token" and protected == 0:
        raise ValueError(NO_CLASS_TOKEN)
    attn = jax.lax.stop_gradient(attn).astype(jnp.float32)
    if kind == "received":
        return attn.mean(axis=(1, 2))[:, protected:]
    return attn[:, :, 0, protected:].mean(axis=1)


NO_CLASS_TOKEN = ("diffrate ranks tokens by the class token's attention and the model has no class token; "
                  "options importance='received' ranks by the attention each token receives (not the authors' rule)")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DiffRatePlan:
    """merge: a MergePlan over the block's T rows (out_rows: the `merge_kept` destinations in
    importance order, src_rows [B, R]: the merged rows, dst_pos [B, R]: their destinations).
    similarity [B, R]: cosine similarity of each merged row to its destination. pruned_rows [B, P]:
    the rows dropped."""

    merge: tome.MergePlan
    similarity: jax.Array
    pruned_rows: jax.Array


def diffrate_plan(score: jax.Array, x: jax.Array, prune_kept: int, merge_kept: int,
                  protected: int) -> DiffRatePlan:
    """score [B, T - protected] (importance), x [B, T, C] -> the plan keeping `merge_kept` of T."""
    batch, tokens, _ = x.shape
    prefix = jnp.broadcast_to(jnp.arange(protected), (batch, protected))
    # Descending and stable: equal scores keep the lower index first.
    order = jnp.concatenate([prefix, protected + jnp.argsort(-score, axis=-1, stable=True)], axis=1)
    metric = jax.lax.stop_gradient(x).astype(jnp.float32)
    metric = metric / jnp.linalg.norm(metric, axis=-1, keepdims=True)
    metric = jnp.take_along_axis(metric, order[:, :prune_kept, None], axis=1)
    similarity = jnp.einsum("bic,bjc->bij", metric[:, merge_kept:], metric[:, :merge_kept],
                            precision=jax.lax.Precision.HIGHEST)  # [B, R, merge_kept]
    similarity = similarity.at[:, :, :protected].set(-jnp.inf)  # no merge into class / distill token
    best = similarity.max(axis=-1)
    # the first destination with the best score (argmax as a min over matches: fast on XLA:CPU)
    dst = jnp.min(jnp.where(similarity == best[..., None], jnp.arange(merge_kept), merge_kept), axis=-1)
    plan = tome.MergePlan(order[:, :merge_kept], order[:, merge_kept:prune_kept], dst, tokens)
    return DiffRatePlan(plan, best, order[:, prune_kept:])


@register_method("diffrate", options=DiffRateOptions)
class DiffRate(ReductionMethod):
    """Prune the least important tokens (class-token attention), merge the next least important
    into their most similar important token; per-block counts from r or a given schedule."""

    needs_attention = True

    def not_applicable(self, protected: int) -> str | None:
        return NO_CLASS_TOKEN if protected == 0 and self.options.importance == "class_token" else None

    def layer_tokens_after(self, layer: int, r: int, tokens: int, protected: int) -> int:
        return kept_counts(layer, r, tokens, protected, self.options)[1]

    def tokens_after(self, r: int, tokens: int, protected: int) -> int:
        return self.layer_tokens_after(1, r, tokens, protected)

    def plan(self, inputs: LayerInputs) -> DiffRatePlan:
        if inputs.attn is None or inputs.x is None:
            raise ValueError("method='diffrate' needs the block's attention probabilities and tokens.")
        tokens = inputs.x.shape[1]
        prune_kept, merge_kept = kept_counts(inputs.layer, inputs.r, tokens, inputs.protected, self.options)
        score = importance(inputs.attn, inputs.protected, self.options.importance)
        return diffrate_plan(score, inputs.x, prune_kept, merge_kept, inputs.protected)

    def reduce(self, plan: DiffRatePlan, x, size, source):
        """x: the plain mean of each group; size: + each source's size (times its similarity with
        `similarity_size`); source: the group's union (pruned rows vanish)."""
        size = ones_size(x) if size is None else size
        rows = jnp.arange(x.shape[0])[:, None]
        if self.options.similarity_size:
            weight = plan.similarity[..., None].astype(size.dtype)
            size = size.at[rows, plan.merge.src_rows].multiply(weight)
        x = tome.apply_plan(plan.merge, x, "mean")
        size = tome.apply_plan(plan.merge, size, "sum")
        if source is not None:
            source = tome.apply_plan(plan.merge, source, "amax")
        return x, size, source

    def undo(self, plan: DiffRatePlan, y: jax.Array) -> jax.Array:
        """y [B, T', C] -> [B, T, C]: merged positions read their group, pruned positions are zeros."""
        rows = jnp.arange(y.shape[0])[:, None]
        return tome.undo_plan(plan.merge, y).at[rows, plan.pruned_rows].set(0)

    def extra_flops(self, tokens_in: int, tokens_out: int, head_dim: int, dim: int) -> float:
        """The similarity of the merged tokens to the kept ones, over the full width (an upper
        bound: every removed token counted as merged; the importance reuses the attention)."""
        return float((tokens_in - tokens_out) * tokens_out * dim)
