"""Vision Transformer (timm layout and parameter names) with Token Merging in every block.

ToMe is a property of the module: `model.r` (int, `(r, inflect)` or a per-layer list),
`model.prop_attn` and `model.trace_source` are plain attributes, static under jit, so each
schedule compiles once. Each block merges between attention and MLP (TOME_SPEC.md, "In the ViT").
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tome_jax import merge as tome
from tome_jax.models.attention import dot_product_attention

_trunc_normal = nnx.initializers.truncated_normal(stddev=0.02)


def _linear(din: int, dout: int, *, rngs: nnx.Rngs, dtype, use_bias: bool = True) -> nnx.Linear:
    return nnx.Linear(din, dout, use_bias=use_bias, kernel_init=_trunc_normal, dtype=dtype, rngs=rngs)


def _layer_norm(dim: int, *, rngs: nnx.Rngs, dtype) -> nnx.LayerNorm:
    return nnx.LayerNorm(dim, epsilon=1e-6, dtype=dtype, rngs=rngs)


class LayerScale(nnx.Module):
    """Per-channel scale `gamma` (timm `ls1` / `ls2`)."""

    def __init__(self, dim: int, init_value: float):
        self.gamma = nnx.Param(jnp.full((dim,), init_value, jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.gamma[...].astype(x.dtype)


class PatchEmbed(nnx.Module):
    """Non-overlapping patches: [B, H, W, 3] -> [B, N, C] (timm `patch_embed.proj`)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, *, rngs: nnx.Rngs, dtype=None):
        self.proj = nnx.Conv(
            in_chans, embed_dim, kernel_size=(patch_size, patch_size),
            strides=(patch_size, patch_size), padding="VALID", dtype=dtype, rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.proj(x)
        return x.reshape(x.shape[0], -1, x.shape[-1])


class Attention(nnx.Module):
    """Multi-head self-attention that also returns ToMe's metric (keys averaged over heads)."""

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, proj_drop: float = 0.0,
                 rngs: nnx.Rngs, dtype=None):
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}.")
        self.num_heads = num_heads
        self.qkv = _linear(dim, 3 * dim, use_bias=qkv_bias, rngs=rngs, dtype=dtype)
        self.proj = _linear(dim, dim, rngs=rngs, dtype=dtype)
        self.proj_drop = nnx.Dropout(proj_drop, rngs=rngs)

    def __call__(self, x: jax.Array, size: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """x: [B, T, C]; size: [B, T, 1] token sizes for proportional attention, or None.

        Returns (out [B, T, C], metric [B, T, C // heads]).
        """
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        metric = qkv[:, :, 1].astype(jnp.float32).mean(axis=2)  # keys averaged over heads: [B, T, D]
        q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # [B, H, T, D] each
        # Proportional attention: a key that stands for s tokens counts s times.
        bias = None if size is None else jnp.log(size)[:, None, None, :, 0].astype(q.dtype)
        out = dot_product_attention(q, k, v, bias).transpose(0, 2, 1, 3)
        out = self.proj_drop(self.proj(out.reshape(batch, tokens, dim)))
        return out, metric


class Mlp(nnx.Module):
    """fc1 -> GELU (exact, as torch) -> fc2, with timm's `mlp.fc1` / `mlp.fc2` names."""

    def __init__(self, dim: int, hidden: int, *, drop: float = 0.0, rngs: nnx.Rngs, dtype=None):
        self.fc1 = _linear(dim, hidden, rngs=rngs, dtype=dtype)
        self.fc2 = _linear(hidden, dim, rngs=rngs, dtype=dtype)
        self.drop = nnx.Dropout(drop, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.drop(jax.nn.gelu(self.fc1(x), approximate=False))
        return self.drop(self.fc2(x))


class Block(nnx.Module):
    """Pre-norm transformer block; ToMe merges between attention and MLP."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 init_values: float | None = None, drop: float = 0.0, drop_path: float = 0.0,
                 rngs: nnx.Rngs, dtype=None):
        self.norm1 = _layer_norm(dim, rngs=rngs, dtype=dtype)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_drop=drop, rngs=rngs, dtype=dtype)
        self.ls1 = LayerScale(dim, init_values) if init_values else None
        self.norm2 = _layer_norm(dim, rngs=rngs, dtype=dtype)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop, rngs=rngs, dtype=dtype)
        self.ls2 = LayerScale(dim, init_values) if init_values else None
        # Stochastic depth = dropout of a whole sample's residual branch.
        self.drop_path = nnx.Dropout(drop_path, broadcast_dims=(1, 2), rngs=rngs)

    def __call__(self, x, size, source, *, r: int, prop_attn: bool, trace_source: bool,
                 class_token: bool, distill_token: bool):
        """x: [B, T, C]; size: [B, T, 1] or None; source: [B, T, T0] or None -> same, T - r tokens."""
        out, metric = self.attn(self.norm1(x), size if prop_attn else None)
        x = x + self.drop_path(out if self.ls1 is None else self.ls1(out))
        if r > 0:
            merge, _ = tome.bipartite_soft_matching(metric, r, class_token, distill_token)
            if trace_source:
                source = tome.merge_source(merge, x, source)
            x, size = tome.merge_wavg(merge, x, size)
        out = self.mlp(self.norm2(x))
        x = x + self.drop_path(out if self.ls2 is None else self.ls2(out))
        return x, size, source


class VisionTransformer(nnx.Module):
    """timm's VisionTransformer with ToMe. Images [B, H, W, C] (NHWC, normalized) -> logits."""

    def __init__(
        self,
        *,
        img_size: int = 224,
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
        r: Any = 0,
        prop_attn: bool = True,
        trace_source: bool = False,
        dtype=None,
        pretrained_cfg: dict | None = None,
        rngs: nnx.Rngs,
    ):
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}.")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True; use global_pool='avg'.")
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}.")
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.embed_dim, self.depth, self.num_classes = embed_dim, depth, num_classes
        self.global_pool = global_pool
        self.has_class_token, self.distilled = class_token, distilled
        self.num_prefix_tokens = int(class_token) + int(distilled)
        self.num_patches = (img_size // patch_size) ** 2
        # Hashable (static graph structure); read through the `pretrained_cfg` property.
        self._pretrained_cfg = tuple(sorted(
            (k, tuple(v) if isinstance(v, list) else v) for k, v in (pretrained_cfg or {}).items()))
        self.r = r
        self.prop_attn = prop_attn
        self.trace_source = trace_source

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, rngs=rngs, dtype=dtype)
        self.cls_token = nnx.Param(1e-6 * jax.random.normal(rngs.params(), (1, 1, embed_dim))) if class_token else None
        self.dist_token = nnx.Param(_trunc_normal(rngs.params(), (1, 1, embed_dim))) if distilled else None
        num_tokens = self.num_patches + self.num_prefix_tokens
        self.pos_embed = nnx.Param(_trunc_normal(rngs.params(), (1, num_tokens, embed_dim)))
        self.pos_drop = nnx.Dropout(drop_rate, rngs=rngs)
        self.blocks = nnx.List([
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, init_values=init_values,
                  drop=drop_rate, drop_path=drop_path_rate * i / max(depth - 1, 1), rngs=rngs, dtype=dtype)
            for i in range(depth)
        ])
        use_fc_norm = global_pool == "avg" if fc_norm is None else fc_norm
        self.norm = None if use_fc_norm else _layer_norm(embed_dim, rngs=rngs, dtype=dtype)
        self.fc_norm = _layer_norm(embed_dim, rngs=rngs, dtype=dtype) if use_fc_norm else None
        self.head_drop = nnx.Dropout(drop_rate, rngs=rngs)
        self.head = _linear(embed_dim, num_classes, rngs=rngs, dtype=dtype) if num_classes else None
        self.head_dist = _linear(embed_dim, num_classes, rngs=rngs, dtype=dtype) if distilled and num_classes else None

    @property
    def pretrained_cfg(self) -> dict:
        """Preprocessing of the weights: input_size, mean, std, crop_pct, interpolation."""
        return dict(self._pretrained_cfg)

    # ToMe schedule: stored in a hashable form, so it is part of the static graph structure.
    @property
    def r(self):
        return list(self._r) if self._r_is_list else self._r

    @r.setter
    def r(self, value):
        tome.parse_r(self.depth, value)  # validates now, not at the first forward
        self._r_is_list = isinstance(value, list)
        self._r = tuple(value) if self._r_is_list else value

    @property
    def r_per_layer(self) -> list[int]:
        """The schedule's r of each block, before the per-block clamp."""
        return tome.parse_r(self.depth, self.r)

    def _check_images(self, images) -> None:
        expected = (self.img_size, self.img_size, self.in_chans)
        if getattr(images, "ndim", None) != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"expected images of shape [B, {expected[0]}, {expected[1]}, {expected[2]}] (NHWC), "
                f"got {getattr(images, 'shape', type(images).__name__)}; resize to img_size="
                f"{self.img_size} or create the model with img_size={getattr(images, 'shape', (0, 0))[1:2]}"
                " (position embeddings are resampled by load_timm)."
            )
        if not jnp.issubdtype(images.dtype, jnp.floating):
            raise ValueError(
                f"images must be floating point and normalized with the model's mean/std "
                f"(model.pretrained_cfg), got dtype {images.dtype}."
            )

    def forward_features(self, images: jax.Array):
        """images [B, H, W, C] -> (tokens [B, T', C], size [B, T', 1], source [B, T', T] or None)."""
        self._check_images(images)
        x = self.patch_embed(images)
        batch = x.shape[0]
        prefix = [t[...] for t in (self.cls_token, self.dist_token) if t is not None]
        prefix = [jnp.broadcast_to(t, (batch, 1, self.embed_dim)).astype(x.dtype) for t in prefix]
        x = jnp.concatenate([*prefix, x], axis=1) + self.pos_embed[...].astype(x.dtype)
        x = self.pos_drop(x)
        size = source = None
        for block, r in zip(self.blocks, self.r_per_layer):
            x, size, source = block(
                x, size, source, r=r, prop_attn=self.prop_attn, trace_source=self.trace_source,
                class_token=self.has_class_token, distill_token=self.distilled,
            )
        if self.norm is not None:
            x = self.norm(x)
        if size is None:
            size = jnp.ones((*x.shape[:2], 1), jnp.float32)
        return x, size, source

    def forward_head(self, x: jax.Array, size: jax.Array) -> jax.Array:
        """x [B, T', C], size [B, T', 1] -> logits [B, num_classes] (or pooled [B, C])."""
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
        {"size": [B, T', 1], "source": [B, T', T] or None}."""
        x, size, source = self.forward_features(images)
        logits = self.forward_head(x, size)
        return (logits, {"size": size, "source": source}) if return_info else logits
