"""tome_jax: Token Merging (ToMe) for Vision Transformers in JAX / Flax NNX."""

from tome_jax import merge
from tome_jax.choose_r import choose_r
from tome_jax.models import create_model, list_models
from tome_jax.models.flops import count_flops
from tome_jax.models.weights import load_timm, save_timm

__version__ = "0.1.0"
__all__ = ["merge", "choose_r", "create_model", "list_models", "count_flops", "load_timm", "save_timm"]
