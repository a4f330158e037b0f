"""Flax NNX models with token reduction: the shared encoder, model families and the registry."""

from tome_jax.models.encoder import Attention, Block, Encoder, EncoderOutput, Mlp
from tome_jax.models.registry import create_model, list_models, register_model
from tome_jax.models.vit import PatchEmbed, VisionTransformer
from tome_jax.models.mae import MaskedAutoencoder  # registers the mae_vit_* names

__all__ = ["Attention", "Block", "Encoder", "EncoderOutput", "MaskedAutoencoder", "Mlp", "PatchEmbed", "VisionTransformer",
           "create_model", "list_models", "register_model"]
