"""Spectrogram ViTs in the AudioMAE layout: names, preprocessing config and AudioMAE weights.

The model is the image `VisionTransformer` (tome_jax/models/vit.py) on a one-channel "image" laid
out as AudioMAE lays it out: time x frequency = 1024 x 128 log-mel frames x bins ([B, 1024, 128, 1],
NHWC), 16 x 16 patches -> a 64 x 8 grid = 512 tokens, time-major, plus the class token; average
pooling over the patch tokens (size-weighted under ToMe) -> fc_norm -> head (527 AudioSet classes,
multi-label). Nothing here is a new module: only registrations and the weight mapping.

AudioMAE checkpoints (github.com/facebookresearch/AudioMAE, models_vit.py / models_mae.py) use
timm's names, so `load_audiomae` is a table of what to drop or initialize around `load_timm`:
- fine-tuned (`models_vit.VisionTransformer`, global_pool): cls_token, pos_embed,
  patch_embed.proj.*, blocks.*, fc_norm.*, head.* -> all loaded;
- pre-trained (`models_mae.MaskedAutoencoderViT`): the encoder's cls_token, pos_embed,
  patch_embed.proj.*, blocks.* are loaded; norm.* (the encoder's final norm, which AudioMAE's
  fine-tuning deletes), mask_token and decoder_* are dropped; fc_norm and head keep their init.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from tome_jax.models.registry import register_model
from tome_jax.models.vit import VisionTransformer
from tome_jax.models.weights import CheckpointMismatchError, _unwrap, load_timm, read_state_dict

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


def _register_audio_vits() -> None:
    for size, (dim, depth, heads) in _SIZES.items():
        # MAE-style fine-tuned models: average pooling + fc_norm, class token kept (AudioMAE's layout),
        # no proportional attention (as the official ToMe patch for MAE models and training with ToMe).
        register_model(f"vit_{size}_patch16_audio", pretrained_cfg=AUDIOMAE_PRETRAINED_CFG)(functools.partial(
            VisionTransformer, patch_size=16, embed_dim=dim, depth=depth, num_heads=heads,
            img_size=(1024, 128), in_chans=1, num_classes=AUDIOSET_CLASSES, class_token=True,
            global_pool="avg", fc_norm=True, prop_attn=False))


_register_audio_vits()


# ----------------------------------------------------------------------------- AudioMAE weights

DROPPED_PREFIXES = ("decoder_", "mask_token")  # MAE pre-training only


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


def load_audiomae(model: VisionTransformer, source, *, skip: tuple[str, ...] = ()) -> dict:
    """Load an official AudioMAE checkpoint (fine-tuned or pre-trained; .pth needs torch, or a
    .safetensors / .npz / dict of arrays with the same names) into an audio ViT in place.

    Every checkpoint key is accounted for: loaded, or dropped by the rules in the module docstring;
    anything else raises (`CheckpointMismatchError`, via `load_timm(strict=True)`). `skip`: model
    parameters (timm-name prefixes) to leave at their init, e.g. ("head",) for a new class count.
    A pos_embed for another clip length is resampled along time.
    Returns {"loaded": [...], "dropped": [...], "initialized": [...], "resampled": [...]}.
    """
    state_dict = read_state_dict(source) if isinstance(source, (str, os.PathLike)) else source
    state_dict = {k.removeprefix("module."): np.asarray(v) for k, v in _unwrap(state_dict).items()}
    dropped = sorted(k for k in state_dict if k.startswith(DROPPED_PREFIXES))
    initialized = list(skip)
    pretrained = "fc_norm.weight" not in state_dict and model.fc_norm is not None
    if pretrained:  # MAE encoder: its final norm has no place in the fine-tuning model
        dropped += sorted(k for k in state_dict if k.startswith("norm."))
        initialized += ["fc_norm", "head"]
    kept = {k: v for k, v in state_dict.items() if k not in set(dropped)}
    resampled = []
    expected = (1, model.num_patches + model.num_prefix_tokens, model.embed_dim)
    if "pos_embed" in kept and kept["pos_embed"].shape != expected and kept["pos_embed"].ndim == 3:
        kept["pos_embed"] = resample_pos_embed_time(kept["pos_embed"], model.grid_size, model.num_prefix_tokens)
        resampled.append("pos_embed")
    initialized = tuple(dict.fromkeys(initialized))
    load_timm(model, kept, strict=True, skip=initialized)
    loaded = sorted(k for k in kept if not k.startswith(initialized))
    dropped += sorted(k for k in kept if k.startswith(initialized))  # e.g. a checkpoint head under skip
    return {"loaded": loaded, "dropped": sorted(dropped), "initialized": list(initialized), "resampled": resampled}
