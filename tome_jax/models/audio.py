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
  head when `skip=("head",)` asks (a pre-trained checkpoint has none): the `Encoder`'s default
  MAE pre-training rule, as for image MAE.
`AudioTransformer` only changes how a pos_embed for another clip length is resampled: along time.
"""

from __future__ import annotations

import functools

from tome_jax.models.registry import register_model
from tome_jax.models.vit import VisionTransformer
from tome_jax.models.weight_rules import CheckpointMismatchError

AUDIOSET_CLASSES = 527
# The front end the weights expect (tome_jax.data.fbank computes it): Kaldi fbank, 16 kHz, 25 ms
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


class AudioTransformer(VisionTransformer):
    """The image ViT on spectrograms; only its checkpoints' grid differs: a pos_embed for another clip
    length keeps the model's frequency rows and is resampled linearly along time (the image rule
    assumes a square grid)."""

    pos_embed_resize_method = "linear"

    def checkpoint_grid(self, num_patches: int) -> tuple[int, int]:
        """A checkpoint's (time, freq) patch grid: the model's frequency patches, the rest along time."""
        grid_f = self.grid_size[1]
        if num_patches % grid_f:
            raise CheckpointMismatchError(
                f"pos_embed has {num_patches} patch tokens, not a multiple of the model's {grid_f} frequency "
                "patches; create the model with the checkpoint's num_mel_bins (img_size=(frames, mel_bins)).")
        return num_patches // grid_f, grid_f


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
