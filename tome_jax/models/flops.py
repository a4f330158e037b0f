"""FLOPs of a model with token reduction, in the paper's convention (one multiply-add = one FLOP)."""

from __future__ import annotations

from typing import Any

from tome_jax.models.encoder import Encoder


def token_counts(model: Encoder, r: Any = None) -> list[int]:
    """Tokens entering each block, then the final count: depth + 1 numbers (r=None: `model.r`)."""
    return model.token_counts(r)


def count_flops(model: Encoder, r: Any = None) -> float:
    """Forward FLOPs for one example, each block at its actual token count after reduction.

    Counts every matmul: the stem (`model.stem_flops()`, e.g. patch embedding), qkv, q @ k,
    attention @ v, proj, the method's own matmuls where a block reduces (`ReductionMethod.extra_flops`:
    ToMe's A @ B^T similarity over head_dim by default), MLP
    and the head (`model.head_flops()`). Norms, softmax and elementwise ops are ignored, as in the
    paper (fvcore). Works on any `Encoder` subclass, also under `nnx.eval_shape`. r=None: `model.r`.
    """
    dim = model.embed_dim
    hidden = model.blocks[0].mlp.fc1.out_features
    head_dim = dim // model.blocks[0].attn.num_heads
    counts = token_counts(model, r)
    flops = model.stem_flops()
    for t_in, t_out in zip(counts[:-1], counts[1:]):
        flops += t_in * dim * 3 * dim + 2 * t_in * t_in * dim + t_in * dim * dim  # attention
        if t_out < t_in:
            flops += model.reduction.extra_flops(t_in, t_out, head_dim, dim)  # the method's own matmuls
        flops += 2 * t_out * dim * hidden  # MLP after the reduction
    return float(flops + model.head_flops())
