"""Spectrogram ViTs in the AudioMAE layout: names, preprocessing config and AudioMAE weights.

The model is the image `VisionTransformer` (tome_jax/models/vit.py) on a one-channel "image" laid
out as AudioMAE lays it out: time x frequency = 1024 x 128 log-mel frames x bins ([B, 1024, 128, 1],
NHWC), 16 x 16 patches -> a 64 x 8 grid = 512 tokens, time-major, plus the class token; average
pooling over the patch tokens (size-weighted under ToMe) -> fc_norm -> head (527 AudioSet classes,
multi-label). The only new code is the registrations and `AudioTransformer`'s resampling along time.

AudioMAE checkpoints (github.com/facebookresearch/AudioMAE, models_vit.py / models_mae.py) use
timm's names, so `load_timm` loads them as it loads image MAE checkpoints:
- fine-tuned (`models_vit.VisionTransformer`, global_pool): cls_token, pos_embed,
  patch_embed.proj.*, blocks.*, fc_norm.*, head.* -> all loaded;
- pre-trained (`models_mae.MaskedAutoencoderViT`): the encoder's cls_token, pos_embed,
  patch_embed.proj.*, blocks.* are loaded; norm.* (the encoder's final norm, which AudioMAE's
  fine-tuning deletes), mask_token and decoder_* are ignored; fc_norm keeps its init, and so does
  head when `skip=("head",)` asks (a pre-trained checkpoint has none).
`AudioTransformer` only adds resampling a pos_embed along time, for another clip length.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from tome_jax.models.registry import register_model
from tome_jax.models.vit import VisionTransformer
from tome_jax.models.weights import CheckpointMismatchError

AUDIOSET_CLASSES = 527
# The front end the weights expect (tome_jax.data.audio computes it): Kaldi fbank, 16 kHz, 25 ms
# window every 10 ms, 128 mel bins, hanning window, 1024 frames, (x - mean) / (2 * std).
AUDIOMAE_PRETRAINED_CFG = dict(
    sample_rate=16000, num_mel_bins=128, num_frames=1024, window="hanning",
    mean=(-4.2677393,), std=(4.5689974,), normalization="(x - mean) / (2 * std)",
    layout="[B, time, freq, 1]")

_SIZES = {  # name stem -> (embed_dim, depth, heads), all 16 x 16 patches
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}


# ----------------------------------------------------------------------------- AudioMAE weights


def resample_pos_embed_time(pos_embed: np.ndarray, grid: tuple[int, int], num_prefix_tokens: int = 1) -> np.ndarray:
    """[1, P + t*f, C] -> [1, P + gt*gf, C] on a (time, freq) grid with the checkpoint's frequency
    patches equal to the model's (gf): linear along time (e.g. 1024 -> 512 frames), bicubic if gf differs
    too. The checkpoint's grid is inferred as (n // gf, gf)."""
    grid_t, grid_f = grid
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    n, dim = patches.shape[1], patches.shape[2]
    if n % grid_f:
        raise CheckpointMismatchError(
            f"pos_embed has {n} patch tokens, not a multiple of the model's {grid_f} frequency patches; "
            "create the model with the checkpoint's num_mel_bins (img_size=(frames, mel_bins)).")
    old = (n // grid_f, grid_f)
    resized = jax.image.resize(jnp.asarray(patches, jnp.float32).reshape(*old, dim), (grid_t, grid_f, dim),
                               method="linear" if old[1] == grid_f else "bicubic", antialias=True)
    return np.concatenate([prefix, np.asarray(resized).reshape(1, grid_t * grid_f, dim)], axis=1)


class AudioTransformer(VisionTransformer):
    """The image ViT on spectrograms; only its position-embedding resampling differs (along time)."""

    def adapt_state_dict(self, state_dict: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
        """Called by `load_timm`: a pos_embed for another clip length is resampled along time (the
        image rule assumes a square grid). AudioMAE's decoder and final norm are the generic MAE
        pre-training rule of `load_timm`. Returns (state dict, {"resampled": [...]})."""
        sd, resampled = dict(state_dict), []
        expected = (1, self.num_patches + self.num_prefix_tokens, self.embed_dim)
        if "pos_embed" in sd and np.shape(sd["pos_embed"]) != expected and np.ndim(sd["pos_embed"]) == 3:
            sd["pos_embed"] = resample_pos_embed_time(np.asarray(sd["pos_embed"]), self.grid_size,
                                                      self.num_prefix_tokens)
            resampled.append("pos_embed")
        return sd, {"resampled": resampled}


def _register_audio_vits() -> None:
    for size, (dim, depth, heads) in _SIZES.items():
        # MAE-style fine-tuned models: average pooling + fc_norm, class token kept (AudioMAE's layout),
        # no proportional attention (as the official ToMe patch for MAE models and training with ToMe).
        register_model(f"vit_{size}_patch16_audio", tome=dict(prop_attn=False),
                       pretrained_cfg=AUDIOMAE_PRETRAINED_CFG)(functools.partial(
            AudioTransformer, patch_size=16, embed_dim=dim, depth=depth, num_heads=heads,
            img_size=(1024, 128), in_chans=1, num_classes=AUDIOSET_CLASSES, class_token=True,
            global_pool="avg", fc_norm=True))


_register_audio_vits()
