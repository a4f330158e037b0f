"""A diffusion transformer (DiT, Peebles & Xie 2023) with tomesd-style merging in every block.

The layout and names are facebookresearch/DiT's `models.py`: `x_embedder` (patchify: a p x p conv of
the latent [B, H, W, C] to [B, N, D] tokens), a fixed 2-D sin-cos position embedding (not trained),
`t_embedder` (the timestep's sinusoidal frequencies, 256 of them, through Linear-SiLU-Linear),
`y_embedder` (a class embedding table with one extra row, the null class of classifier-free
guidance), then `blocks.i` with adaLN-Zero: the conditioning c = t_emb + y_emb gives, per block,
shift / scale / gate for attention and for the MLP (`blocks.i.adaLN_modulation`, zero-initialised, so
every block starts as the identity), and `final_layer` (adaLN shift / scale, a linear to p * p * out
channels, zero-initialised), unpatchified to [B, H, W, out_channels]. With `learn_sigma` the model
predicts 2C channels (noise, then the variance interpolation) as DiT does; without, C (the noise).
Differences from DiT: the linear layers start from the project's truncated normal (DiT: Xavier
uniform; the zero-initialised adaLN and final layers are the same), the class-label dropout of
classifier-free guidance is the training task's (`tome_jax.train.tasks.Diffusion`), not the model's.

Token merging (tomesd's placement, as `WindowedViT`'s global blocks): each block's input x is the
metric of tomesd's 2-D matching (`merge.random2d_plan`, one destination per `merge_stride` x
`merge_stride` cell); the modulated, normed tokens are merged before attention and unmerged right
after, and again for the MLP, so every block reads and writes the full token grid. The modulation
and the gate are the same for every token of an image, so merging after modulating is the same as
modulating the merged tokens. r (`apply_tome(model, r=...)`) is the tokens each block merges away: an
int, or one int per block, clamped to the sources; tomesd's `ratio` is `r = merge.ratio_r(N, ratio)`
(ratio 0.5 of DiT-B/2's 256 tokens: r=128). method "bipartite" = the top-left destination of every
cell (tomesd's `no_rand`), "random" = destinations drawn from the model's `reduction` RNG stream
(tomesd's default), "none" = off (`windowed.METHODS`).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tome_jax import merge
from tome_jax.models.encoder import Block, Encoder, linear
from tome_jax.models.registry import register_model
from tome_jax.models.vit import PatchEmbed
from tome_jax.models.windowed import METHODS
from tome_jax.reduction import resolve_schedule

FREQUENCY_DIM = 256  # DiT's TimestepEmbedder.frequency_embedding_size


@functools.lru_cache(maxsize=None)
def sincos_pos_embed_2d(embed_dim: int, grid_size: int) -> np.ndarray:
    """DiT's (MAE's) fixed 2-D sin-cos position embedding, float32 [grid_size**2, embed_dim].

    Token (row i, column j): the first half encodes j, the second half i; each half is
    [sin(pos * omega), cos(pos * omega)] with omega_k = 1 / 10000**(k / (D / 4)), k < D / 4."""
    if embed_dim % 4:
        raise ValueError(f"the 2-D sin-cos embedding needs embed_dim divisible by 4, got {embed_dim}.")

    def one_axis(pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(embed_dim // 4, dtype=np.float64) / (embed_dim / 4.0))
        out = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    columns, rows = np.meshgrid(np.arange(grid_size, dtype=np.float64), np.arange(grid_size, dtype=np.float64))
    return np.concatenate([one_axis(columns), one_axis(rows)], axis=1).astype(np.float32)


def timestep_embedding(t: jax.Array, dim: int = FREQUENCY_DIM, max_period: float = 10000.0) -> jax.Array:
    """DiT's sinusoidal timestep frequencies: t [B] (float or int) -> [B, dim] = [cos(t f), sin(t f)],
    f_k = max_period**(-k / (dim / 2))."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """adaLN: x [B, T, C] * (1 + scale [B, C]) + shift [B, C]."""
    return x * (1 + scale[:, None]) + shift[:, None]


def plain_norm(dim: int, *, rngs: nnx.Rngs, dtype) -> nnx.LayerNorm:
    """DiT's LayerNorm without a learned scale or bias (elementwise_affine=False), eps 1e-6."""
    return nnx.LayerNorm(dim, epsilon=1e-6, use_scale=False, use_bias=False, dtype=dtype, rngs=rngs)


def zero_linear(din: int, dout: int, *, rngs: nnx.Rngs, dtype) -> nnx.Linear:
    """A dense layer (the project's matmul policy) with zero kernel and bias: adaLN-Zero."""
    layer = linear(din, dout, rngs=rngs, dtype=dtype)
    layer.kernel[...] = jnp.zeros_like(layer.kernel[...])
    return layer


class TimestepEmbedder(nnx.Module):
    """DiT's `t_embedder`: t [B] -> sinusoidal [B, 256] -> mlp (Linear, SiLU, Linear) -> [B, D]."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs, dtype=None):
        self.mlp = nnx.Sequential(linear(FREQUENCY_DIM, dim, rngs=rngs, dtype=dtype), nnx.silu,
                                  linear(dim, dim, rngs=rngs, dtype=dtype))

    def __call__(self, t: jax.Array) -> jax.Array:
        return self.mlp(timestep_embedding(t))


class LabelEmbedder(nnx.Module):
    """DiT's `y_embedder`: labels int [B] in [0, num_classes] -> [B, D]; row `num_classes` is the null
    class (classifier-free guidance's unconditional input)."""

    def __init__(self, num_classes: int, dim: int, *, rngs: nnx.Rngs, dtype=None):
        self.embedding_table = nnx.Embed(num_classes + 1, dim, dtype=dtype, rngs=rngs,
                                         embedding_init=nnx.initializers.normal(0.02))

    def __call__(self, labels: jax.Array) -> jax.Array:
        return self.embedding_table(labels)


class DiTBlock(Block):
    """The encoder's block (attention `attn`, `mlp`) with DiT's parameter-free norms and adaLN-Zero
    modulation `adaLN_modulation` (SiLU, then Linear D -> 6 D, zero-initialised)."""

    def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs, dtype=None, **kwargs):
        super().__init__(dim, num_heads, rngs=rngs, dtype=dtype, **kwargs)
        self.norm1 = plain_norm(dim, rngs=rngs, dtype=dtype)
        self.norm2 = plain_norm(dim, rngs=rngs, dtype=dtype)
        self.adaLN_modulation = zero_linear(dim, 6 * dim, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array, c: jax.Array, plan: merge.MergePlan | None) -> jax.Array:
        """x [B, N, D], conditioning c [B, D], the block's merge plan (None: no merging) -> [B, N, D]."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(
            self.adaLN_modulation(nnx.silu(c)), 6, axis=-1)

        def merged(fn, tokens):  # tomesd: merge before, unmerge right after
            if plan is None:
                return fn(tokens)
            return merge.undo_plan(plan, fn(merge.apply_plan(plan, tokens, "mean")))

        out = merged(lambda t: self.attn(t)[0], modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + self.drop_path(gate_msa[:, None] * out)
        out = merged(self.mlp, modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x + self.drop_path(gate_mlp[:, None] * out)


class FinalLayer(nnx.Module):
    """DiT's `final_layer`: plain norm, adaLN shift / scale (`adaLN_modulation`, D -> 2 D), `linear`
    D -> p * p * out_channels; both linears zero-initialised."""

    def __init__(self, dim: int, patch_size: int, out_channels: int, *, rngs: nnx.Rngs, dtype=None):
        self.norm_final = plain_norm(dim, rngs=rngs, dtype=dtype)
        self.adaLN_modulation = zero_linear(dim, 2 * dim, rngs=rngs, dtype=dtype)
        self.linear = zero_linear(dim, patch_size * patch_size * out_channels, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        shift, scale = jnp.split(self.adaLN_modulation(nnx.silu(c)), 2, axis=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(Encoder):
    """DiT with tomesd-style merge / unmerge in every block.

    model(x [B, H, W, C] noisy latents, t [B] timesteps (0 .. 999), y int [B] labels (num_classes =
    the null class)) -> [B, H, W, out_channels] (out_channels = 2 C with learn_sigma, else C).
    """

    block_class = DiTBlock
    stem_params = ("x_embedder", "t_embedder", "y_embedder")

    def __init__(
        self,
        *,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        learn_sigma: bool = True,
        merge_stride: int = 2,
        drop_path_rate: float = 0.0,
        dtype=None,
        pretrained_cfg: dict | None = None,
        rngs: nnx.Rngs,
    ):
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not a multiple of patch_size {patch_size}.")
        self.input_size, self.patch_size, self.in_channels = input_size, patch_size, in_channels
        self.num_classes, self.learn_sigma = num_classes, learn_sigma
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.grid = input_size // patch_size
        self.num_patches = self.grid**2
        self.merge_stride = merge_stride
        if not 1 <= merge_stride <= self.grid:
            raise ValueError(f"merge_stride must be in [1, {self.grid}] (the token grid), got {merge_stride}.")
        self.set_pretrained_cfg(pretrained_cfg, input_size=(input_size, input_size, in_channels))

        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size, rngs=rngs, dtype=dtype)
        self.t_embedder = TimestepEmbedder(hidden_size, rngs=rngs, dtype=dtype)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, rngs=rngs, dtype=dtype)
        Encoder.__init__(self, embed_dim=hidden_size, depth=depth, num_heads=num_heads, num_tokens=self.num_patches,
                         mlp_ratio=mlp_ratio, qkv_bias=True, drop_path_rate=drop_path_rate, dtype=dtype, rngs=rngs,
                         gelu="tanh")
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels, rngs=rngs, dtype=dtype)

    @property
    def null_class(self) -> int:
        """The label that means "no class" (classifier-free guidance's unconditional input)."""
        return self.num_classes

    # --- how many tokens each block merges -----------------------------------------------------------

    def _per_block_r(self, r: Any = None) -> tuple[int, ...]:
        reduction = self.reduction
        if reduction.method not in METHODS:
            raise ValueError(f"{type(self).__name__} merges with tomesd's 2-D rule: method must be one of "
                             f"{METHODS}, got {reduction.method!r}.")
        if reduction.method == "none":
            return (0,) * self.depth
        return reduction.r if r is None else resolve_schedule(r, self.depth, self.num_tokens, reduction)

    @property
    def num_destinations(self) -> int:
        return (self.grid // self.merge_stride) ** 2

    def block_r(self, r: int) -> int:
        """Tokens a block merges away for a schedule entry r: r clamped to the sources."""
        return min(int(r), self.num_patches - self.num_destinations)

    def token_counts(self, r: Any = None) -> list[int]:
        """Tokens the attention and MLP of each block see, then the grid the final layer sees."""
        return [self.num_patches - self.block_r(r_block) for r_block in self._per_block_r(r)] + [self.num_patches]

    # --- the forward ----------------------------------------------------------------------------------

    def example_inputs(self, batch: int, dtype=jnp.float32) -> tuple:
        """(x [B, H, W, C] noise, t [B] timesteps, y [B] labels): one forward's arguments."""
        keys = jax.random.split(jax.random.key(0), 3)
        x = jax.random.normal(keys[0], (batch, self.input_size, self.input_size, self.in_channels), dtype)
        t = jax.random.randint(keys[1], (batch,), 0, 1000)
        y = jax.random.randint(keys[2], (batch,), 0, self.num_classes)
        return x, t, y

    def unpatchify(self, x: jax.Array) -> jax.Array:
        """[B, N, p * p * C_out] -> [B, H, W, C_out] (token (i, j)'s patch at rows i p .., columns j p ..)."""
        batch, p, g = x.shape[0], self.patch_size, self.grid
        x = x.reshape(batch, g, g, p, p, self.out_channels).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(batch, g * p, g * p, self.out_channels)

    def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array, *, return_info: bool = False):
        """x [B, H, W, C], t [B], y int [B] -> [B, H, W, out_channels]; with return_info also
        {"plans": one MergePlan or None per block}."""
        expected = (self.input_size, self.input_size, self.in_channels)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected latents [B, {expected[0]}, {expected[1]}, {expected[2]}], got {x.shape}.")
        tokens = self.x_embedder(x)
        tokens = tokens + jnp.asarray(sincos_pos_embed_2d(self.embed_dim, self.grid), tokens.dtype)[None]
        c = self.t_embedder(t) + self.y_embedder(y)
        plans = []
        for block, r_block in zip(self.blocks, self._per_block_r()):
            r = self.block_r(r_block)
            plan = None
            if r > 0:
                key = self.reduction_rngs.reduction() if self.reduction.method == "random" else None
                s = self.merge_stride
                plan = merge.random2d_plan(tokens, self.grid, self.grid, s, s, r, key)
            tokens = block(tokens, c, plan)
            plans.append(plan)
        out = self.unpatchify(self.final_layer(tokens, c))
        return (out, {"plans": tuple(plans)}) if return_info else out

    # --- FLOPs (one multiply-add = one FLOP) ---------------------------------------------------------

    def forward_flops(self, r: Any = None) -> float:
        """Patchify, the timestep MLP, per block the adaLN linear, qkv + q @ k + attention @ v + proj +
        MLP at the merged token count and the 2-D matching's similarity (sources x destinations x D),
        the final layer. Merge, unmerge, norms, softmax and the embeddings' lookups are not counted."""
        dim, n = self.embed_dim, self.num_patches
        hidden = self.blocks[0].mlp.fc1.out_features
        flops = n * self.patch_size**2 * self.in_channels * dim + FREQUENCY_DIM * dim + dim * dim
        for r_block in self._per_block_r(r):
            merged = self.block_r(r_block)
            t = n - merged
            flops += 6 * dim * dim + 4 * t * dim * dim + 2 * t * t * dim + 2 * t * dim * hidden
            if merged:
                flops += (n - self.num_destinations) * self.num_destinations * dim
        flops += 2 * dim * dim + n * dim * self.patch_size**2 * self.out_channels
        return float(flops)


# ----------------------------------------------------------------------------- names

_SIZES = {  # DiT's configs: hidden_size, depth, heads
    "s": (384, 12, 6),
    "b": (768, 12, 12),
    "l": (1024, 24, 16),
    "xl": (1152, 28, 16),
}


def _register_dits() -> None:
    for size, (dim, depth, heads) in _SIZES.items():
        for patch in (2, 4, 8):
            register_model(f"dit_{size}_{patch}", pretrained_cfg=dict(mean=(0.0,) * 4, std=(1.0,) * 4))(
                functools.partial(DiT, input_size=32, patch_size=patch, in_channels=4, hidden_size=dim, depth=depth,
                                  num_heads=heads))


_register_dits()
