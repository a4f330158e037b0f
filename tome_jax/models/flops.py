"""FLOPs of a model with token reduction, in the paper's convention (one multiply-add = one FLOP)."""

from __future__ import annotations

from typing import Any

from tome_jax.models.encoder import Encoder


def token_counts(model: Encoder, r: Any = None) -> list[int]:
    """Tokens entering each block, then the final count: depth + 1 numbers (r=None: `model.r`)."""
    return model.token_counts(r)


def count_flops(model: Encoder, r: Any = None) -> float:
    """Forward FLOPs for one example at schedule r (None: `model.r`), in the paper's convention:
    `model.forward_flops(r)` (the shared encoder's formula, or a family's own count)."""
    return model.forward_flops(r)
