"""On-device half of the input pipeline: uint8 (or float) batches -> normalized model inputs.

The host ships each source's storage dtype (uint8 images and clips: 4x fewer bytes than float32, no
host-side float passes; float32 log-mels); the jitted train and eval steps call `normalize` first,
once, so XLA fuses it with the model's first layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def normalize(
    images: jax.Array, mean: Sequence[float], std: Sequence[float], dtype=jnp.float32
) -> jax.Array:
    """Per-channel (x - mean) / std on the last axis; jit-able (mean/std are static Python numbers).

    Args:
      images: [..., C]. uint8 is read as pixels x / 255 in [0, 1] (mean/std in [0, 1] units, timm
        convention); float input is used as is, in its own units (e.g. a log-mel spectrogram with
        its dataset mean/std; mean 0, std 1 leaves it unchanged).
      mean, std: C values each, e.g. `data.mean`, `data.std`.
      dtype: output dtype.

    Returns:
      dtype [..., C].
    """
    if len(mean) != len(std) or images.shape[-1] != len(mean):
        raise ValueError(
            f"normalize: images have {images.shape[-1]} channels (shape {images.shape}) but data.mean/std "
            f"have {len(mean)}/{len(std)} values; set one mean and std per channel."
        )
    x = images.astype(jnp.float32)
    if images.dtype == jnp.uint8:
        x = x * jnp.float32(1.0 / 255.0)
    mean = jnp.asarray(mean, jnp.float32)
    inv_std = 1.0 / jnp.asarray(std, jnp.float32)
    return ((x - mean) * inv_std).astype(dtype)
