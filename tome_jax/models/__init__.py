"""Flax NNX models with token reduction: the shared encoder, model families and the registry."""

from tome_jax.models.encoder import Attention, Block, Encoder, EncoderOutput, Mlp, apply_tome
from tome_jax.models.registry import create_model, list_models, register_model
from tome_jax.models.vit import PatchEmbed, VisionTransformer
from tome_jax.models.mae import MaskedAutoencoder
from tome_jax.models.video import VideoTransformer
from tome_jax.models.audio import AudioTransformer  # registers vit_*_patch16_audio
from tome_jax.models.siglip import SigLIPVisionTransformer  # registers vit_*_siglip_*
from tome_jax.models import clip  # noqa: F401  (registers vit_*_clip_* and vit_*_clip_quickgelu_*)
from tome_jax.models.map_head import MapHead
from tome_jax.models.windowed import WindowedViT  # registers vitdet_*_patch16_1024
from tome_jax.models.dit import DiT  # registers dit_{s,b,l,xl}_{2,4,8}

__all__ = ["Attention", "AudioTransformer", "Block", "DiT", "Encoder", "EncoderOutput", "MapHead", "MaskedAutoencoder",
           "Mlp", "PatchEmbed", "SigLIPVisionTransformer", "VideoTransformer", "VisionTransformer", "WindowedViT",
           "apply_tome", "create_model", "list_models", "register_model"]
