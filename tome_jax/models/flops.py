"""FLOPs of a ViT with ToMe, in the paper's convention (one multiply-add = one FLOP)."""

from __future__ import annotations

from tome_jax import merge as tome
from tome_jax.models.vit import VisionTransformer


def token_counts(model: VisionTransformer, r=None) -> list[int]:
    """Tokens entering each block, then the final count: depth + 1 numbers."""
    tokens = model.num_patches + model.num_prefix_tokens
    counts = [tokens]
    for layer_r in tome.parse_r(model.depth, model.r if r is None else r):
        # The per-block clamp of bipartite_soft_matching.
        tokens -= max(0, min(layer_r, (tokens - model.num_prefix_tokens) // 2))
        counts.append(tokens)
    return counts


def count_flops(model: VisionTransformer, r=None) -> float:
    """Forward FLOPs for one image, each block at its actual token count after merging.

    Counts every matmul: patch embedding, qkv, q @ k, attention @ v, proj, ToMe's similarity
    (A @ B^T over head_dim), MLP and head(s). Norms, softmax and elementwise ops are ignored,
    as in the paper (fvcore). r=None uses `model.r`.
    """
    dim, patch, chans = model.embed_dim, model.patch_size, model.in_chans
    hidden = model.blocks[0].mlp.fc1.out_features
    head_dim = dim // model.blocks[0].attn.num_heads
    counts = token_counts(model, r)
    flops = model.num_patches * patch * patch * chans * dim
    for t_in, t_out in zip(counts[:-1], counts[1:]):
        flops += t_in * dim * 3 * dim + 2 * t_in * t_in * dim + t_in * dim * dim  # attention
        if t_out < t_in:
            flops += ((t_in + 1) // 2) * (t_in // 2) * head_dim  # bipartite similarity
        flops += 2 * t_out * dim * hidden  # MLP after the merge
    heads = (model.head is not None) + (model.head_dist is not None)
    return float(flops + heads * dim * model.num_classes)
