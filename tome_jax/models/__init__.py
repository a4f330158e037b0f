"""Flax NNX Vision Transformers with Token Merging."""

from tome_jax.models.registry import MODELS, create_model, list_models
from tome_jax.models.vit import Attention, Block, Mlp, PatchEmbed, VisionTransformer

__all__ = ["MODELS", "create_model", "list_models", "Attention", "Block", "Mlp", "PatchEmbed",
           "VisionTransformer"]
