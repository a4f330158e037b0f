"""Masked autoencoder pre-training (He et al., MAE) on the shared encoder, with official names.

The stem embeds every patch, adds fixed 2-D sin-cos positions and keeps a per-sample random
(1 - mask_ratio) share of them (argsort of uniform noise drawn from the key: reproducible); the
class token goes in front and the shared `Encoder` runs on the visible tokens only (ToMe off by
default, as in the ToMe paper; with r > 0 the merges are undone before the decoder). A light
decoder (`decoder_embed`, `mask_token`, `decoder_pos_embed`, `decoder_blocks.i`, `decoder_norm`,
`decoder_pred`) sees every position and predicts each patch's pixels; the loss is the MSE on the
masked patches, of per-patch normalized pixels with `norm_pix_loss`. Parameter names are those of
facebookresearch/mae `models_mae.py`, so official pre-training checkpoints load with `load_timm`,
and `save_timm` writes one; the encoder part loads into a `vit_*.mae` fine-tuning model.

Images are NHWC [B, H, W, C]; patches are flattened in (row, column, channel) order like the
official `patchify` ("nhwpqc"), so `decoder_pred` weights are interchangeable.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tome_jax.models.encoder import Block, Encoder, layer_norm, linear
from tome_jax.models.registry import register_model
from tome_jax.models.vit import IMAGENET_MEAN, IMAGENET_STD, PatchEmbed, image_size
from tome_jax.reduction import TokenReduction


def sincos_pos_embed_2d(dim: int, grid: tuple[int, int], class_token: bool = True) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding [1, (1 +) gh * gw, dim], as MAE's `get_2d_sincos_pos_embed`
    (first half of the channels encodes the column, second half the row; zeros for the class token)."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos position embeddings need a width divisible by 4, got {dim}.")
    rows, cols = np.meshgrid(np.arange(grid[0], dtype=np.float64), np.arange(grid[1], dtype=np.float64),
                             indexing="ij")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))

    def one_d(pos):
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    emb = np.concatenate([one_d(cols), one_d(rows)], axis=1)
    if class_token:
        emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
    return emb[None].astype(np.float32)


class MaskedAutoencoder(Encoder):
    """MAE pre-training model: images [B, H, W, C] (normalized) -> per-example loss [B].

    `reconstruction_loss(images, key)` is the hook of the train loop's "reconstruction" task.
    Position embeddings are fixed sin-cos, as in the official code: they are parameters (saved,
    loaded, moved into the fine-tuning model) that receive no gradient.
    """

    stem_params = ("patch_embed", "cls_token", "pos_embed")
    no_weight_decay_params = ("pos_embed", "cls_token", "mask_token", "decoder_pos_embed")

    def __init__(
        self,
        *,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        drop_path_rate: float = 0.0,
        dtype=None,
        pretrained_cfg: dict | None = None,
        rngs: nnx.Rngs,
    ):
        if not (isinstance(mask_ratio, (int, float)) and 0.0 < mask_ratio < 1.0):
            raise ValueError(f"mask_ratio must be in (0, 1) (the share of patches hidden from the encoder; "
                             f"MAE uses 0.75), got {mask_ratio!r}.")
        height, width = image_size(img_size, patch_size)  # the decoder predicts whole patches
        self.grid_size = (height // patch_size, width // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.num_keep = int(self.num_patches * (1 - mask_ratio))  # the official len_keep
        if not 1 <= self.num_keep < self.num_patches:
            raise ValueError(f"mask_ratio={mask_ratio} keeps {self.num_keep} of {self.num_patches} patches; "
                             "at least one patch must stay visible and one be masked.")
        if decoder_depth < 1 or decoder_embed_dim % 4 or decoder_embed_dim % decoder_num_heads:
            raise ValueError(
                f"decoder config does not fit: decoder_depth={decoder_depth} (>= 1), decoder_embed_dim="
                f"{decoder_embed_dim} (a multiple of 4 for the 2-D sin-cos positions of the "
                f"{self.grid_size[0]}x{self.grid_size[1]} patch grid, and of decoder_num_heads="
                f"{decoder_num_heads}).")
        if embed_dim % 4:
            raise ValueError(f"embed_dim={embed_dim} must be a multiple of 4 (2-D sin-cos positions).")
        self.img_size = height if height == width else (height, width)
        self.patch_size, self.in_chans = patch_size, in_chans
        self.mask_ratio, self.norm_pix_loss = float(mask_ratio), bool(norm_pix_loss)
        self.num_prefix_tokens = 1
        self.set_pretrained_cfg(pretrained_cfg, input_size=(height, width, in_chans))

        # Encoder: stem on every patch, blocks on the visible ones.
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, rngs=rngs, dtype=dtype)
        self.cls_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, 1, embed_dim)))
        self.pos_embed = nnx.Param(jnp.asarray(sincos_pos_embed_2d(embed_dim, self.grid_size)))
        Encoder.__init__(
            self, embed_dim=embed_dim, depth=depth, num_heads=num_heads, num_tokens=1 + self.num_keep,
            mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate, num_prefix_tokens=self.num_prefix_tokens,
            dtype=dtype, rngs=rngs)
        self.norm = layer_norm(embed_dim, rngs=rngs, dtype=dtype)

        # Decoder: every position, no token reduction.
        self.decoder_embed_dim, self.decoder_depth = decoder_embed_dim, decoder_depth
        self.decoder_embed = linear(embed_dim, decoder_embed_dim, rngs=rngs, dtype=dtype)
        self.mask_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, 1, decoder_embed_dim)))
        self.decoder_pos_embed = nnx.Param(jnp.asarray(sincos_pos_embed_2d(decoder_embed_dim, self.grid_size)))
        self.decoder_blocks = nnx.List([
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio=mlp_ratio, rngs=rngs, dtype=dtype)
            for _ in range(decoder_depth)])
        self._decoder_reduction = TokenReduction(method="none", r=(0,) * decoder_depth)
        self.decoder_norm = layer_norm(decoder_embed_dim, rngs=rngs, dtype=dtype)
        self.decoder_pred = linear(decoder_embed_dim, patch_size**2 * in_chans, rngs=rngs, dtype=dtype)


    # --- pieces ---------------------------------------------------------------------------------------

    def patchify(self, images: jax.Array) -> jax.Array:
        """images [B, H, W, C] -> patches [B, N, p * p * C] in (row, column, channel) order."""
        (gh, gw), p = self.grid_size, self.patch_size
        b, c = images.shape[0], images.shape[-1]
        x = images.reshape(b, gh, p, gw, p, c).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(b, gh * gw, p * p * c)

    def unpatchify(self, patches: jax.Array) -> jax.Array:
        """patches [B, N, p * p * C] -> images [B, H, W, C] (inverse of `patchify`)."""
        (gh, gw), p = self.grid_size, self.patch_size
        b = patches.shape[0]
        x = patches.reshape(b, gh, gw, p, p, -1).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(b, gh * p, gw * p, -1)

    def random_masking(self, key: jax.Array, batch: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Per-sample random shuffle of the N patches; the first `num_keep` stay visible.

        Returns ids_keep [B, K] (int), mask [B, N] (1.0 = masked, 0.0 = visible), ids_restore [B, N]."""
        noise = jax.random.uniform(key, (batch, self.num_patches))
        ids_shuffle = jnp.argsort(noise, axis=1)
        ids_restore = jnp.argsort(ids_shuffle, axis=1)
        mask = (ids_restore >= self.num_keep).astype(jnp.float32)
        return ids_shuffle[:, :self.num_keep], mask, ids_restore

    def _check_images(self, images) -> None:
        expected = (self.grid_size[0] * self.patch_size, self.grid_size[1] * self.patch_size, self.in_chans)
        if getattr(images, "ndim", None) != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"expected images of shape [B, {expected[0]}, {expected[1]}, {expected[2]}] (NHWC), "
                             f"got {getattr(images, 'shape', type(images).__name__)}; resize to img_size="
                             f"{self.img_size} or create the model with the img_size / in_chans of your data.")
        if not jnp.issubdtype(images.dtype, jnp.floating):
            raise ValueError(f"images must be floating point and normalized, got dtype {images.dtype}.")

    def forward_encoder(self, images: jax.Array, key: jax.Array):
        """images [B, H, W, C] -> (latent [B, 1 + K, D] after `norm`, mask [B, N], ids_restore [B, N])."""
        self._check_images(images)
        x = self.patch_embed(images)
        pos = jax.lax.stop_gradient(self.pos_embed[...]).astype(x.dtype)  # fixed sin-cos
        x = x + pos[:, 1:]
        ids_keep, mask, ids_restore = self.random_masking(key, x.shape[0])
        x = jnp.take_along_axis(x, ids_keep[..., None], axis=1)
        cls = (self.cls_token[...].astype(x.dtype) + pos[:, :1])
        x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, x.shape[-1])), x], axis=1)
        out = self.encode(x)
        latent = self.unmerge(out.plans, out.x)  # identity when nothing merged (r=0)
        return self.norm(latent), mask, ids_restore

    def forward_decoder(self, latent: jax.Array, ids_restore: jax.Array) -> jax.Array:
        """latent [B, 1 + K, D], ids_restore [B, N] -> predicted patches [B, N, p * p * C]."""
        x = self.decoder_embed(latent)
        batch, dim = x.shape[0], x.shape[-1]
        masked = jnp.broadcast_to(self.mask_token[...].astype(x.dtype), (batch, self.num_patches - self.num_keep, dim))
        patches = jnp.take_along_axis(jnp.concatenate([x[:, 1:], masked], axis=1), ids_restore[..., None], axis=1)
        x = jnp.concatenate([x[:, :1], patches], axis=1)
        x = x + jax.lax.stop_gradient(self.decoder_pos_embed[...]).astype(x.dtype)
        for layer, block in enumerate(self.decoder_blocks):
            x, _, _, _ = block(x, None, None, self._decoder_reduction, layer)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def patch_losses(self, images: jax.Array, pred: jax.Array) -> jax.Array:
        """Mean squared error of each patch [B, N] (targets normalized per patch with norm_pix_loss)."""
        target = self.patchify(images.astype(jnp.float32))
        if self.norm_pix_loss:
            mean = target.mean(axis=-1, keepdims=True)
            var = target.var(axis=-1, keepdims=True, ddof=1)  # torch's unbiased var, as the official code
            target = (target - mean) / jnp.sqrt(var + 1e-6)
        return ((pred.astype(jnp.float32) - target) ** 2).mean(axis=-1)

    def __call__(self, images: jax.Array, key: jax.Array):
        """images [B, H, W, C], key -> (loss [B] on the masked patches, pred [B, N, p*p*C], mask [B, N])."""
        latent, mask, ids_restore = self.forward_encoder(images, key)
        pred = self.forward_decoder(latent, ids_restore)
        loss = (self.patch_losses(images, pred) * mask).sum(axis=1) / mask.sum(axis=1)
        return loss, pred, mask

    def example_inputs(self, batch: int, dtype=jnp.float32) -> tuple:
        """(images [B, H, W, C], masking key): the forward's arguments, for timing."""
        return (*super().example_inputs(batch, dtype), jax.random.key(1))

    def reconstruction_loss(self, images: jax.Array, key: jax.Array) -> jax.Array:
        """The train loop's hook: images [B, H, W, C], key -> loss [B]."""
        return self(images, key)[0]

    # --- FLOPs ---------------------------------------------------------------------------------------

    def stem_flops(self) -> float:
        return float(self.num_patches * self.patch_size**2 * self.in_chans * self.embed_dim)

    def head_flops(self) -> float:
        """The decoder on every position (1 + N tokens), its embedding and prediction."""
        tokens, dim = 1 + self.num_patches, self.decoder_embed_dim
        hidden = self.decoder_blocks[0].mlp.fc1.out_features
        block = tokens * dim * 4 * dim + 2 * tokens * tokens * dim + 2 * tokens * dim * hidden
        out = self.patch_size**2 * self.in_chans
        return float(tokens * self.embed_dim * dim + self.decoder_depth * block + tokens * dim * out)


# ----------------------------------------------------------------------------- names (official MAE's)

_SIZES = {  # name -> (patch, embed_dim, depth, heads); decoder 512-d, 8 blocks, 16 heads (dec512d8b)
    "mae_vit_tiny_patch16": (16, 192, 12, 3),
    "mae_vit_small_patch16": (16, 384, 12, 6),
    "mae_vit_base_patch16": (16, 768, 12, 12),
    "mae_vit_large_patch16": (16, 1024, 24, 16),
    "mae_vit_huge_patch14": (14, 1280, 32, 16),
}


def _register_maes() -> None:
    for name, (patch, dim, depth, heads) in _SIZES.items():
        # No proportional attention by default, as in the ToMe paper's MAE runs.
        register_model(name, tome=dict(prop_attn=False), pretrained_cfg=dict(
            mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=1.0, interpolation="bicubic"))(
            functools.partial(MaskedAutoencoder, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads,
                              decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, img_size=224))


_register_maes()
