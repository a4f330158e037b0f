"""Spatiotemporal ViT in the MAE-ST layout (Feichtenhofer et al. 2022) with Token Merging.

A clip [B, T, H, W, C] becomes tubelets (a 3-D conv, `patch_embed.proj`, e.g. 2x16x16: 16 frames at
224 -> 8 x 14 x 14 = 1568 tokens, time-major), plus separable position embeddings
(`pos_embed_spatial` [1, H'W', D] tiled over time + `pos_embed_temporal` [1, T', D] repeated over
space), then the shared `Encoder` (ToMe in every block: the tokens of all frames are one set, so
merges cross frames), a size-weighted global average over the patch tokens, `fc_norm` and `head`.

The official MAE-ST checkpoints (`cls_embed=True`) also carry a class token with its own position
(`cls_token`, `pos_embed_class`): it is attended to, never merged and not pooled. The `.mae_st` tag
builds that layout; plain names have no class token. `load_timm` reads the official key names
(`blocks.i.attn.q/k/v`, the post-pool `norm`) through `VideoTransformer.adapt_state_dict`, which
extends the `Encoder`'s rules (a pre-training decoder is ignored, as for image MAE).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tome_jax.models.encoder import Encoder, layer_norm, linear, trunc_normal
from tome_jax.models.registry import register_model
from tome_jax.models.vit import image_size
from tome_jax.models.weight_rules import (
    MAE_DECODER_KEYS,
    AdaptedStateDict,
    CheckpointMismatchError,
    resample_grid,
    resample_pos_embed,
    timm_state_dict,
)


class TubeletEmbed(nnx.Module):
    """Non-overlapping tubelets: [B, T, H, W, C] -> [B, T' * H' * W', D], time-major (MAE-ST
    `patch_embed.proj`, a Conv3d with kernel = stride = (tubelet, patch, patch))."""

    def __init__(self, tubelet_size: int, patch_size: int, in_chans: int, embed_dim: int, *,
                 rngs: nnx.Rngs, dtype=None):
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nnx.Conv(in_chans, embed_dim, kernel_size=kernel, strides=kernel, padding="VALID",
                             dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.proj(x)
        return x.reshape(x.shape[0], -1, x.shape[-1])


def separable_pos_embed(spatial: jax.Array, temporal: jax.Array) -> jax.Array:
    """spatial [1, L, D], temporal [1, T', D] -> [1, T' * L, D]: entry t * L + s = spatial[s] + temporal[t]."""
    return (temporal[:, :, None, :] + spatial[:, None, :, :]).reshape(1, -1, spatial.shape[-1])


class VideoTransformer(Encoder):
    """MAE-ST's video ViT with ToMe. Clips [B, T, H, W, C] (channels last, normalized) -> logits."""

    stem_params = ("patch_embed", "cls_token", "pos_embed_spatial", "pos_embed_temporal", "pos_embed_class")
    no_weight_decay_params = ("cls_token", "pos_embed_spatial", "pos_embed_temporal", "pos_embed_class")

    def __init__(
        self,
        *,
        num_frames: int = 16,
        tubelet_size: int = 2,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 400,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        class_token: bool = False,
        drop_rate: float = 0.0,
        head_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        dtype=None,
        pretrained_cfg: dict | None = None,
        rngs: nnx.Rngs,
    ):
        height, width = image_size(img_size, patch_size)
        if not (isinstance(num_frames, int) and isinstance(tubelet_size, int) and num_frames > 0
                and tubelet_size > 0 and num_frames % tubelet_size == 0):
            raise ValueError(f"num_frames={num_frames} must be a positive multiple of tubelet_size={tubelet_size}, "
                             f"e.g. {max(num_frames // max(tubelet_size, 1), 1) * max(tubelet_size, 1)}.")
        self.num_frames, self.tubelet_size, self.patch_size, self.in_chans = num_frames, tubelet_size, patch_size, in_chans
        self.img_size = height if height == width else (height, width)
        self.grid_size = (num_frames // tubelet_size, height // patch_size, width // patch_size)  # (T', H', W')
        self.num_patches = int(np.prod(self.grid_size))
        self.num_classes, self.has_class_token = num_classes, class_token
        self.num_prefix_tokens = int(class_token)
        self.set_pretrained_cfg(pretrained_cfg, input_size=(num_frames, height, width, in_chans))

        self.patch_embed = TubeletEmbed(tubelet_size, patch_size, in_chans, embed_dim, rngs=rngs, dtype=dtype)
        grid_t, grid_h, grid_w = self.grid_size
        self.pos_embed_spatial = nnx.Param(trunc_normal(rngs.params(), (1, grid_h * grid_w, embed_dim)))
        self.pos_embed_temporal = nnx.Param(trunc_normal(rngs.params(), (1, grid_t, embed_dim)))
        self.cls_token = nnx.Param(jnp.zeros((1, 1, embed_dim))) if class_token else None
        self.pos_embed_class = nnx.Param(trunc_normal(rngs.params(), (1, 1, embed_dim))) if class_token else None
        self.pos_drop = nnx.Dropout(drop_rate, rngs=rngs)
        Encoder.__init__(
            self, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            num_tokens=self.num_patches + self.num_prefix_tokens, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
            drop_rate=drop_rate, drop_path_rate=drop_path_rate, num_prefix_tokens=self.num_prefix_tokens,
            dtype=dtype, rngs=rngs)
        self.fc_norm = layer_norm(embed_dim, rngs=rngs, dtype=dtype)  # MAE-ST's post-pool `norm`
        self.head_drop = nnx.Dropout(head_drop_rate, rngs=rngs)  # MAE-ST's `dropout` (0.5 default, 0.3 for L)
        self.head = linear(embed_dim, num_classes, rngs=rngs, dtype=dtype) if num_classes else None


    # --- the stem ----------------------------------------------------------------------------------

    def _check_clips(self, clips) -> None:
        height, width = self.grid_size[1] * self.patch_size, self.grid_size[2] * self.patch_size
        expected = (self.num_frames, height, width, self.in_chans)
        want = f"clips of shape [B, {', '.join(map(str, expected))}] ([B, T, H, W, C], channels last)"
        shape = tuple(getattr(clips, "shape", ()))
        if len(shape) == 4:
            raise ValueError(f"expected {want}, got an image batch of shape {shape}; a video model takes "
                             "clips: stack frames on axis 1, or use an image model (vit_*).")
        if len(shape) != 5:
            raise ValueError(f"expected {want}, got {shape or type(clips).__name__}.")
        if shape[1:] != expected:
            hint = ""
            if shape[1] == self.in_chans and shape[-1] != self.in_chans:
                hint = " It looks channels-first ([B, C, T, H, W]): pass clips.transpose(0, 2, 3, 4, 1)."
            elif shape[-1] == self.in_chans:
                hint = (f" Create the model with num_frames=T (a multiple of tubelet_size={self.tubelet_size}) "
                        f"and img_size=(H, W) (multiples of patch_size={self.patch_size}) of your clips; "
                        "load_timm resamples the position embeddings.")
            raise ValueError(f"expected {want}, got {shape}.{hint}")
        if not jnp.issubdtype(clips.dtype, jnp.floating):
            raise ValueError(f"clips must be floating point and normalized with the model's mean/std "
                             f"(model.pretrained_cfg), got dtype {clips.dtype}.")

    def embed(self, clips: jax.Array) -> jax.Array:
        """The stem: clips [B, T, H, W, C] -> tokens [B, N, D] (class token first when present)."""
        self._check_clips(clips)
        x = self.patch_embed(clips)
        x = x + separable_pos_embed(self.pos_embed_spatial[...], self.pos_embed_temporal[...]).astype(x.dtype)
        if self.cls_token is not None:
            cls = (self.cls_token[...] + self.pos_embed_class[...]).astype(x.dtype)
            x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, x.shape[-1])), x], axis=1)
        return self.pos_drop(x)

    # --- the forward ---------------------------------------------------------------------------------

    def forward_features(self, clips: jax.Array):
        """clips [B, T, H, W, C] -> EncoderOutput(x [B, N', D], size [B, N', 1], source, plans)."""
        return self.encode(self.embed(clips))

    def forward_head(self, x: jax.Array, size: jax.Array) -> jax.Array:
        """Size-weighted mean over the patch tokens (= the plain mean over the original tubelets),
        fc_norm, head: x [B, N', D], size [B, N', 1] -> logits [B, K] (pooled [B, D] without a head)."""
        k = self.num_prefix_tokens
        x = (x[:, k:] * size[:, k:].astype(x.dtype)).sum(axis=1) / self.num_patches
        x = self.fc_norm(x)
        return self.head(self.head_drop(x)) if self.head is not None else x

    def __call__(self, clips: jax.Array, *, return_info: bool = False):
        """clips [B, T, H, W, C] -> logits [B, K]; with return_info also
        {"size": [B, N', 1], "source": [B, N', N] or None, "plans": one MergePlan or None per block}."""
        out = self.forward_features(clips)
        logits = self.forward_head(out.x, out.size)
        return (logits, {"size": out.size, "source": out.source, "plans": out.plans}) if return_info else logits

    def stem_flops(self) -> float:
        return float(self.num_patches * self.tubelet_size * self.patch_size**2 * self.in_chans * self.embed_dim)

    def head_flops(self) -> float:
        return float(self.embed_dim * self.num_classes) if self.head is not None else 0.0

    # --- official MAE-ST checkpoints -------------------------------------------------------------------

    def adapt_state_dict(self, state_dict: dict[str, np.ndarray]) -> AdaptedStateDict:
        """MAE-ST names (fine-tuned or pre-trained) -> this model's, then the shared rules.

        q / k / v -> qkv; the post-pool `norm` -> `fc_norm`; then the `Encoder`'s rules (a
        pre-training decoder, `decoder_*` and `mask_token`, is ignored); then the position tables
        are resampled to this model's grid: `pos_embed_spatial` on its (H', W') grid (bicubic, from
        a square one), `pos_embed_temporal` along time (linear).
        """
        sd = dict(state_dict)
        if "pos_embed" in sd and "pos_embed_spatial" not in sd:
            raise CheckpointMismatchError(
                "the checkpoint has a joint pos_embed (MAE-ST sep_pos_embed=False); this model uses separable "
                "pos_embed_spatial / pos_embed_temporal (MAE-ST's default and its released checkpoints).")
        if ("cls_token" in sd) != (self.cls_token is not None):
            has = "has" if "cls_token" in sd else "has no"
            raise CheckpointMismatchError(
                f"the checkpoint {has} class token but the model was built with class_token="
                f"{self.cls_token is not None}; official MAE-ST checkpoints (cls_embed=True) load into the "
                "'.mae_st' tag, e.g. create_model('video_vit_large_patch16.mae_st'), or pass class_token=...")
        for name in [k for k in sd if k.endswith(".attn.q.weight") and not k.startswith(MAE_DECODER_KEYS)]:
            prefix = name[: -len("q.weight")]
            for leaf in ("weight", "bias"):
                parts = [sd.pop(f"{prefix}{n}.{leaf}", None) for n in "qkv"]
                if all(p is not None for p in parts):
                    sd[f"{prefix}qkv.{leaf}"] = np.concatenate(parts, axis=0)
                elif any(p is not None for p in parts):
                    raise CheckpointMismatchError(f"{prefix}q/k/v.{leaf}: some of q, k, v are missing.")
        for leaf in ("weight", "bias"):
            if f"norm.{leaf}" in sd and f"fc_norm.{leaf}" not in sd:
                sd[f"fc_norm.{leaf}"] = sd.pop(f"norm.{leaf}")
        adapted = super().adapt_state_dict(sd)
        grid_t, grid_h, grid_w = self.grid_size
        spatial = adapted.state_dict.get("pos_embed_spatial")
        if spatial is not None and np.shape(spatial)[1] != grid_h * grid_w:
            adapted = adapted.with_resampled("pos_embed_spatial", resample_pos_embed(
                np.asarray(spatial), (grid_h, grid_w), num_prefix_tokens=0))
        temporal = adapted.state_dict.get("pos_embed_temporal")
        if temporal is not None and np.shape(temporal)[1] != grid_t:
            adapted = adapted.with_resampled("pos_embed_temporal", resample_grid(
                np.asarray(temporal), (np.shape(temporal)[1],), (grid_t,), method="linear"))
        return adapted


def to_mae_st_state_dict(model: VideoTransformer) -> dict[str, np.ndarray]:
    """The model's parameters under MAE-ST's fine-tuned key names and torch layouts (q/k/v split,
    post-pool `norm`): what `models_vit.VisionTransformer.state_dict()` holds."""
    out = {}
    for name, value in timm_state_dict(model).items():
        if ".attn.qkv." in name:
            for n, part in zip("qkv", np.split(value, 3, axis=0)):
                out[name.replace(".qkv.", f".{n}.")] = np.ascontiguousarray(part)
        elif name.startswith("fc_norm."):
            out[name.replace("fc_norm.", "norm.")] = value
        else:
            out[name] = value
    return out


# ----------------------------------------------------------------------------- names

KINETICS_MEAN, KINETICS_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)  # MAE-ST util/kinetics.py

_SIZES = {  # size -> (embed_dim, depth, heads); MAE-ST's `vit_huge_patch14` builder uses 16x16 patches
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}
# The official checkpoints' layout: a class token (cls_embed=True), trained without proportional attention.
_TAGS = {"mae_st": dict(class_token=True, tome=dict(prop_attn=False))}


def _register_video_vits() -> None:
    for size, (dim, depth, heads) in _SIZES.items():
        register_model(f"video_vit_{size}_patch16", tags=_TAGS, pretrained_cfg=dict(
            mean=KINETICS_MEAN, std=KINETICS_STD))(functools.partial(
                VideoTransformer, embed_dim=dim, depth=depth, num_heads=heads, patch_size=16, tubelet_size=2,
                num_frames=16, img_size=224, num_classes=400))


_register_video_vits()
