"""Vision Transformer (timm layout and parameter names) with Token Merging in every block.

The ViT is a stem (patch embedding, class / distill tokens, position embedding, CLIP's `norm_pre`),
the shared `Encoder` (blocks with token reduction, tome_jax/models/encoder.py) and a head: the class
token, a size-weighted average, or a MAP head (`global_pool="map"`, tome_jax/models/map_head.py:
SigLIP). Images may be rectangular and have any channel count (`img_size=(32, 128), in_chans=1` for
a spectrogram). SigLIP and CLIP towers are registered in siglip.py and clip.py.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tome_jax.models.encoder import Encoder, Mlp, layer_norm, linear, trunc_normal
from tome_jax.models.map_head import MapHead
from tome_jax.models.registry import register_model
from tome_jax.models.weight_rules import AdaptedStateDict, resample_pos_embed, square_grid


def image_size(img_size, patch_size: int) -> tuple[int, int]:
    """`img_size` (an int or an (H, W) pair) -> (H, W), checked to be a whole number of patches."""
    pair = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"img_size must be a positive int or an (H, W) pair of them, got {img_size!r}.")
    height, width = pair
    if height % patch_size or width % patch_size:
        fit = (max(height // patch_size, 1) * patch_size, max(width // patch_size, 1) * patch_size)
        raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}; use an (H, W) "
                         f"that is a multiple of it, e.g. {fit}.")
    return height, width


class PatchEmbed(nnx.Module):
    """Non-overlapping patches: [B, H, W, C] -> [B, N, D] (timm `patch_embed.proj`; CLIP's has no bias).
    VALID: rows and columns beyond the last whole patch are not read (big_vision's rule)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, *, rngs: nnx.Rngs, dtype=None,
                 use_bias: bool = True):
        self.proj = nnx.Conv(
            in_chans, embed_dim, kernel_size=(patch_size, patch_size),
            strides=(patch_size, patch_size), padding="VALID", use_bias=use_bias, dtype=dtype, rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.proj(x)
        return x.reshape(x.shape[0], -1, x.shape[-1])


class VisionTransformer(Encoder):
    """timm's VisionTransformer with ToMe. Images [B, H, W, C] (NHWC, normalized) -> logits.

    global_pool: "token" (class token), "avg" (size-weighted mean of the patch tokens) or "map"
    (big_vision's MAP head over all tokens, sizes as a log bias). pre_norm: a LayerNorm after the
    position embedding (CLIP's `ln_pre`, timm's `norm_pre`; the patch conv then has no bias, as
    CLIP's). norm_eps: every LayerNorm's epsilon (1e-6; CLIP: 1e-5).
    """

    stem_params = ("patch_embed", "cls_token", "dist_token", "pos_embed", "norm_pre")
    no_weight_decay_params = ("pos_embed", "cls_token", "dist_token")

    def __init__(
        self,
        *,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        class_token: bool = True,
        distilled: bool = False,
        global_pool: str = "token",
        fc_norm: bool | None = None,
        init_values: float | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        dtype=None,
        gelu: str = "exact",
        pre_norm: bool = False,
        norm_eps: float = 1e-6,
        pretrained_cfg: dict | None = None,
        rngs: nnx.Rngs,
    ):
        if global_pool not in ("token", "avg", "map"):
            raise ValueError(f"global_pool must be 'token', 'avg' or 'map', got {global_pool!r}.")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True; use global_pool='avg'.")
        height, width = image_size(img_size, patch_size)
        self.img_size = height if height == width else (height, width)
        self.patch_size, self.in_chans = patch_size, in_chans
        self.grid_size = (height // patch_size, width // patch_size)
        self.num_classes, self.global_pool = num_classes, global_pool
        self.has_class_token, self.distilled = class_token, distilled
        self.num_prefix_tokens = int(class_token) + int(distilled)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.set_pretrained_cfg(pretrained_cfg, input_size=(height, width, in_chans))

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, rngs=rngs, dtype=dtype, use_bias=not pre_norm)
        self.cls_token = nnx.Param(1e-6 * jax.random.normal(rngs.params(), (1, 1, embed_dim))) if class_token else None
        self.dist_token = nnx.Param(trunc_normal(rngs.params(), (1, 1, embed_dim))) if distilled else None
        num_tokens = self.num_patches + self.num_prefix_tokens
        self.pos_embed = nnx.Param(trunc_normal(rngs.params(), (1, num_tokens, embed_dim)))
        self.pos_drop = nnx.Dropout(drop_rate, rngs=rngs)
        norm = functools.partial(layer_norm, embed_dim, rngs=rngs, dtype=dtype, eps=norm_eps)
        self.norm_pre = norm() if pre_norm else None
        Encoder.__init__(
            self, embed_dim=embed_dim, depth=depth, num_heads=num_heads, num_tokens=num_tokens,
            mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, init_values=init_values, drop_rate=drop_rate,
            drop_path_rate=drop_path_rate, num_prefix_tokens=self.num_prefix_tokens, dtype=dtype, rngs=rngs,
            gelu=gelu, norm_eps=norm_eps)
        use_fc_norm = global_pool == "avg" if fc_norm is None else fc_norm
        self.norm = None if use_fc_norm else norm()
        self.fc_norm = norm() if use_fc_norm else None
        self.attn_pool = MapHead(embed_dim, num_heads, mlp_ratio=mlp_ratio, gelu=gelu, norm_eps=norm_eps, rngs=rngs,
                                 dtype=dtype) if global_pool == "map" else None
        self.head_drop = nnx.Dropout(drop_rate, rngs=rngs)
        self.head = linear(embed_dim, num_classes, rngs=rngs, dtype=dtype) if num_classes else None
        self.head_dist = linear(embed_dim, num_classes, rngs=rngs, dtype=dtype) if distilled and num_classes else None


    def _check_images(self, images) -> None:
        expected = self.pretrained_cfg["input_size"]
        if getattr(images, "ndim", None) != 4 or tuple(images.shape[1:]) != expected:
            got = getattr(images, "shape", type(images).__name__)
            raise ValueError(
                f"expected images of shape [B, {expected[0]}, {expected[1]}, {expected[2]}] (NHWC), got {got}; "
                f"resize to img_size={self.img_size} or create the model with img_size=(H, W) and "
                "in_chans=C of your data (position embeddings are resampled by load_timm).")
        if not jnp.issubdtype(images.dtype, jnp.floating):
            raise ValueError(
                f"images must be floating point and normalized with the model's mean/std "
                f"(model.pretrained_cfg), got dtype {images.dtype}."
            )

    def embed(self, images: jax.Array) -> jax.Array:
        """The stem: images [B, H, W, C] -> tokens [B, T, D], prefix tokens first, with positions."""
        self._check_images(images)
        x = self.patch_embed(images)
        batch = x.shape[0]
        prefix = [t[...] for t in (self.cls_token, self.dist_token) if t is not None]
        prefix = [jnp.broadcast_to(t, (batch, 1, self.embed_dim)).astype(x.dtype) for t in prefix]
        x = jnp.concatenate([*prefix, x], axis=1) + self.pos_embed[...].astype(x.dtype)
        x = self.pos_drop(x)
        return self.norm_pre(x) if self.norm_pre is not None else x

    def forward_features(self, images: jax.Array):
        """images [B, H, W, C] -> EncoderOutput(x [B, T', D] after the final norm, size, source, plans)."""
        out = self.encode(self.embed(images))
        return out._replace(x=self.norm(out.x)) if self.norm is not None else out

    def forward_head(self, x: jax.Array, size: jax.Array) -> jax.Array:
        """x [B, T', C], size [B, T', 1] -> logits [B, num_classes] (or pooled [B, C])."""
        if self.global_pool == "map":  # every token, each counted by its size
            x = self.attn_pool(x, size)
            return self.head(self.head_drop(x)) if self.head is not None else x
        if self.global_pool == "avg":
            # Size-weighted mean over the patch tokens = the plain mean over the original patches.
            k = self.num_prefix_tokens
            x = (x[:, k:] * size[:, k:].astype(x.dtype)).sum(axis=1) / self.num_patches
            x = self.fc_norm(x) if self.fc_norm is not None else x
            return self.head(self.head_drop(x)) if self.head is not None else x
        cls = self.fc_norm(x[:, 0]) if self.fc_norm is not None else x[:, 0]
        if self.head is None:
            return cls
        logits = self.head(self.head_drop(cls))
        if self.head_dist is not None:  # DeiT distilled: average of the class and distill heads
            dist = self.fc_norm(x[:, 1]) if self.fc_norm is not None else x[:, 1]
            logits = (logits + self.head_dist(self.head_drop(dist))) / 2
        return logits

    def __call__(self, images: jax.Array, *, return_info: bool = False):
        """images [B, H, W, C] -> logits [B, K]; with return_info also
        {"size": [B, T', 1], "source": [B, T', T] or None, "plans": one MergePlan or None per block}."""
        out = self.forward_features(images)
        logits = self.forward_head(out.x, out.size)
        return (logits, {"size": out.size, "source": out.source, "plans": out.plans}) if return_info else logits

    def stem_flops(self) -> float:
        return float(self.num_patches * self.patch_size**2 * self.in_chans * self.embed_dim)

    def head_flops(self) -> float:
        heads = (self.head is not None) + (self.head_dist is not None)
        pool = self.attn_pool.fixed_flops() if self.attn_pool is not None else 0.0
        return float(heads * self.embed_dim * self.num_classes + pool)

    def head_flops_per_token(self) -> float:
        return self.attn_pool.flops_per_token() if self.attn_pool is not None else 0.0

    def mlps(self) -> list[Mlp]:
        """The blocks' MLPs and the MAP head's: all use the model's GELU."""
        return super().mlps() + ([self.attn_pool.mlp] if self.attn_pool is not None else [])

    # --- checkpoints -----------------------------------------------------------------------------------

    pos_embed_resize_method = "bicubic"  # how a checkpoint's pos_embed is resized (jax.image.resize), as timm

    def checkpoint_grid(self, num_patches: int) -> tuple[int, ...]:
        """The patch grid of a checkpoint's pos_embed with `num_patches` patch rows: square, as timm."""
        return square_grid(num_patches, self.num_prefix_tokens)

    def adapt_state_dict(self, state_dict: dict[str, np.ndarray]) -> AdaptedStateDict:
        """The shared rules (`Encoder`), then a pos_embed [1, P + N, C] of another grid resampled onto
        this model's (P prefix rows kept)."""
        adapted = super().adapt_state_dict(state_dict)
        pos_embed = adapted.state_dict.get("pos_embed")
        if pos_embed is None or np.ndim(pos_embed) != 3 or np.shape(pos_embed) == self.pos_embed.shape:
            return adapted
        old_grid = self.checkpoint_grid(np.shape(pos_embed)[1] - self.num_prefix_tokens)
        return adapted.with_resampled("pos_embed", resample_pos_embed(
            np.asarray(pos_embed), self.grid_size, self.num_prefix_tokens, old_grid=old_grid,
            method=self.pos_embed_resize_method))


# ----------------------------------------------------------------------------- names (timm's)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INCEPTION_MEAN, INCEPTION_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

_SIZES = {  # name stem -> (patch, embed_dim, depth, heads)
    "tiny_patch16": (16, 192, 12, 3),
    "small_patch16": (16, 384, 12, 6),
    "base_patch16": (16, 768, 12, 12),
    "large_patch16": (16, 1024, 24, 16),
    "huge_patch14": (14, 1280, 32, 16),
}
# timm tags that change the architecture's defaults, e.g. "vit_base_patch16_224.mae".
_TAGS = {
    "mae": dict(global_pool="avg", tome=dict(prop_attn=False),
                pretrained_cfg=dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=0.875)),
    "swag": dict(pretrained_cfg=dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=1.0)),
}


def _register_vits() -> None:
    for stem, (patch, dim, depth, heads) in _SIZES.items():
        arch = dict(patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads)
        for res in (224, 384):
            # AugReg / in21k weights: Inception normalization; 384 models are evaluated uncropped.
            register_model(f"vit_{stem}_{res}", tags=_TAGS, pretrained_cfg=dict(
                mean=INCEPTION_MEAN, std=INCEPTION_STD, crop_pct=0.9 if res == 224 else 1.0,
                interpolation="bicubic"))(functools.partial(VisionTransformer, **arch, img_size=res))
        if stem in ("tiny_patch16", "small_patch16", "base_patch16"):
            for distilled in (False, True):
                name = f"deit_{stem.replace('_patch16', '')}{'_distilled' if distilled else ''}_patch16_224"
                register_model(name, pretrained_cfg=dict(
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=0.875, interpolation="bicubic"))(
                    functools.partial(VisionTransformer, **arch, img_size=224, distilled=distilled))


_register_vits()
