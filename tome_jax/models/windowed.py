"""A windowed ViT in the ViTDet / SAM layout with tomesd-style merging, and a dense (per-pixel) head.

The backbone is ViTDet's plain ViT: patch embedding, an absolute position embedding on the token
grid, then blocks that attend inside `window_size x window_size` windows (the grid zero-padded at
the bottom and right to a multiple of the window, as ViTDet) except the `global_attn_indexes`
blocks, which attend over the whole grid. No class token: the output is the token grid
[B, H, W, C], and the head maps every token to class logits, upsampled (bilinear) to the pixels.

Token merging keeps the grid: each block merges its tokens right before attention and before the
MLP and unmerges right after each (tomesd's placement), so attention and MLP run on fewer tokens
while every block reads and writes the full grid. The matching is tomesd's 2-D rule
(`merge.random2d_plan`): one destination per `merge_stride x merge_stride` cell, the rest are
sources, the `r` most similar sources merge into their destination; the block's input x is the
metric. A window block matches inside every window with the same r (`merge.windowed_random2d_plan`),
so the merged windows stay equal-sized and are attended to as a batch; a global block matches over
the whole grid and removes `r * H * W // window_size**2` tokens (the same share).

Settings (`apply_tome`): r is an int (tokens each window loses in every block) or one int per
block; method "bipartite" takes the top-left token of each cell as its destination (tomesd's
`no_rand`), "random" draws the destinations from the model's `reduction` RNG stream (tomesd's
default; re-seeded every train step); "none" turns merging off. prop_attn does not apply (tomesd
merges with a plain mean and no sizes). trace_source returns the groups of the last merging
block as `info["source"]` [B, G, H * W], so `tome_jax.visualize` draws them.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tome_jax import merge
from tome_jax.models.attention import attention_with_probabilities, dot_product_attention
from tome_jax.models.encoder import Attention, Encoder, layer_norm, linear, trunc_normal
from tome_jax.models.registry import register_model
from tome_jax.models.vit import IMAGENET_MEAN, IMAGENET_STD, PatchEmbed, image_size
from tome_jax.models.weight_rules import AdaptedStateDict, resample_grid, timm_param_names
from tome_jax.reduction import resolve_schedule

METHODS = ("bipartite", "random", "none")  # the reduction methods this family runs


def grid_merge_schedule(model, r: Any = None) -> tuple[int, ...]:
    """The r of each block of a model that merges with tomesd's 2-D rule (this family, DiT):
    `model.reduction.r`, or `r` resolved for the model; zeros for method "none"."""
    reduction = model.reduction
    if reduction.method not in METHODS:
        raise ValueError(f"{type(model).__name__} merges with tomesd's 2-D rule: method must be one of "
                         f"{METHODS}, got {reduction.method!r}.")
    if reduction.method == "none":
        return (0,) * model.depth
    return reduction.r if r is None else resolve_schedule(r, model.depth, model.num_tokens, reduction)
# How the dense head reaches the pixels: "bilinear": one logit vector per token, upsampled bilinearly;
# "unpatchify": each token predicts its own patch's pixels (patch_size**2 logit vectors; MAE's decoder_pred).
DENSE_HEADS = ("bilinear", "unpatchify")
SAM_PREFIX = "image_encoder."  # SAM checkpoints: the image encoder's keys; the rest (prompt encoder,
SAM_NECK = "neck."  # mask decoder) and the encoder's neck are not part of this model


# ----------------------------------------------------------------------------- relative positions


class RelPosAttention(Attention):
    """SAM's / ViTDet's attention: multi-head attention plus decomposed relative positions (MViTv2).

    For a query at (row_q, col_q) and a key at (row_k, col_k) of an `input_size` grid, the logits get
    q . rel_pos_h[row_q - row_k + h - 1] + q . rel_pos_w[col_q - col_k + w - 1] (q unscaled, as SAM's
    `add_decomposed_rel_pos`); `rel_pos_h` [2h - 1, D], `rel_pos_w` [2w - 1, D] (D = head width),
    zero at init as SAM's `rel_pos_zero_init`. A window block's grid is its window, a global block's
    the whole token grid. With merging, each token keeps the position of the token it is (a
    destination, or a source that was not merged): `positions` gives it.
    """

    def __init__(self, dim: int, num_heads: int, input_size: tuple[int, int], *, qkv_bias: bool = True,
                 proj_drop: float = 0.0, rngs: nnx.Rngs, dtype=None):
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, proj_drop=proj_drop, rngs=rngs, dtype=dtype)
        self.input_size = tuple(int(n) for n in input_size)
        head_dim = dim // num_heads
        self.rel_pos_h = nnx.Param(jnp.zeros((2 * self.input_size[0] - 1, head_dim), jnp.float32))
        self.rel_pos_w = nnx.Param(jnp.zeros((2 * self.input_size[1] - 1, head_dim), jnp.float32))

    def __call__(self, x: jax.Array, size: jax.Array | None = None, *, return_probabilities: bool = False,
                 positions: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        """x: [B, T, C], the input_size grid's tokens in raster order (positions None) or any T tokens
        with positions [B, T] int: each token's raster index on the grid. size: as `Attention`.
        Returns (out [B, T, C], metric [B, T, C // heads], probs [B, H, T, T] or None)."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        metric = qkv[:, :, 1].astype(jnp.float32).mean(axis=2)
        q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # [B, H, T, D] each
        bias = self.relative_bias(q, positions)
        size_bias = self._size_bias(size, jnp.float32)
        bias = bias if size_bias is None else bias + size_bias
        if return_probabilities:
            out, probs = attention_with_probabilities(q, k, v, bias, matmul=self.matmul_policy)
        else:
            out, probs = dot_product_attention(q, k, v, bias, matmul=self.matmul_policy), None
        return self._output(out), metric, probs

    def relative_tables(self) -> tuple[jax.Array, jax.Array]:
        """SAM's `get_rel_pos` for equal query and key sizes: (R_h [h, h, D], R_w [w, w, D]) float32,
        R_h[i, j] = rel_pos_h[i - j + h - 1]."""
        def table(rel_pos: jax.Array, n: int) -> jax.Array:
            offsets = np.arange(n)[:, None] - np.arange(n)[None, :] + n - 1
            return rel_pos.astype(jnp.float32)[offsets]
        return table(self.rel_pos_h[...], self.input_size[0]), table(self.rel_pos_w[...], self.input_size[1])

    def relative_bias(self, q: jax.Array, positions: jax.Array | None) -> jax.Array:
        """q [B, H, T, D] (unscaled) -> the logits' relative-position terms [B, H, T, T] float32."""
        (height, width), (batch, heads, tokens, head_dim) = self.input_size, q.shape
        table_h, table_w = self.relative_tables()
        q = q.astype(jnp.float32)
        if positions is None:  # SAM's add_decomposed_rel_pos on the whole grid: [B, H, h, w, h, w]
            grid = q.reshape(batch, heads, height, width, head_dim)
            rel_h = jnp.einsum("bnyxd,ykd->bnyxk", grid, table_h)
            rel_w = jnp.einsum("bnyxd,xkd->bnyxk", grid, table_w)
            return (rel_h[..., :, None] + rel_w[..., None, :]).reshape(batch, heads, tokens, tokens)
        rows, cols = positions // width, positions % width  # [B, T]
        # rel_h[b, n, t, i] = q_t . R_h[row_t, i] for every key row i; then gathered at each key's row.
        rel_h = jnp.einsum("bntd,btkd->bntk", q, table_h[rows])  # [B, H, T, h]
        rel_w = jnp.einsum("bntd,btkd->bntk", q, table_w[cols])  # [B, H, T, w]

        def at_keys(rel: jax.Array, index: jax.Array) -> jax.Array:
            index = jnp.broadcast_to(index[:, None, None, :], (batch, heads, tokens, tokens))
            return jnp.take_along_axis(rel, index, axis=-1)
        return at_keys(rel_h, rows) + at_keys(rel_w, cols)

    def relative_flops(self, tokens: int) -> float:
        """Multiply-adds of the relative terms for `tokens` queries: q . R_h and q . R_w."""
        return float(tokens * sum(self.input_size) * self.rel_pos_h.shape[1] * self.num_heads)


def resample_rel_pos(table: np.ndarray, length: int) -> np.ndarray:
    """A relative-position table [L, D] -> [length, D], linear (torch's `F.interpolate(mode="linear")`,
    align_corners=False, as SAM's `get_rel_pos`)."""
    table = np.asarray(table, np.float32)
    if table.shape[0] == length:
        return table
    return np.asarray(jax.image.resize(jnp.asarray(table), (length, table.shape[1]), "linear", antialias=False))


class WindowedViT(Encoder):
    """ViTDet's windowed ViT with tomesd-style merge / unmerge in every block.

    images [B, H, W, C] (NHWC, normalized) -> per-pixel logits [B, H, W, num_classes]
    (num_classes=0: the token grid [B, H / p, W / p, embed_dim] after the final norm).
    """

    stem_params = ("patch_embed", "pos_embed")
    no_weight_decay_params = ("pos_embed",)

    def __init__(
        self,
        *,
        img_size: int | tuple[int, int] = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 0,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11),
        merge_stride: int = 2,
        use_rel_pos: bool = False,
        dense_head: str = "bilinear",
        init_values: float | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        dtype=None,
        gelu: str = "exact",
        pretrained_cfg: dict | None = None,
        rngs: nnx.Rngs,
    ):
        height, width = image_size(img_size, patch_size)
        self.img_size = height if height == width else (height, width)
        self.patch_size, self.in_chans, self.num_classes = patch_size, in_chans, num_classes
        self.grid_size = (height // patch_size, width // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.num_prefix_tokens = 0
        self.window_size, self.merge_stride = window_size, merge_stride
        self.global_attn_indexes = tuple(int(i) for i in global_attn_indexes)
        if any(not 0 <= i < depth for i in self.global_attn_indexes):
            raise ValueError(f"global_attn_indexes {self.global_attn_indexes} must be block indices in [0, {depth}).")
        if not 1 <= merge_stride <= window_size:
            raise ValueError(f"merge_stride must be in [1, window_size={window_size}], got {merge_stride}.")
        self.set_pretrained_cfg(pretrained_cfg, input_size=(height, width, in_chans))

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, rngs=rngs, dtype=dtype)
        self.pos_embed = nnx.Param(trunc_normal(rngs.params(), (1, *self.grid_size, embed_dim)))
        self.pos_drop = nnx.Dropout(drop_rate, rngs=rngs)
        Encoder.__init__(
            self, embed_dim=embed_dim, depth=depth, num_heads=num_heads, num_tokens=self.num_patches,
            mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, init_values=init_values, drop_rate=drop_rate,
            drop_path_rate=drop_path_rate, num_prefix_tokens=0, dtype=dtype, rngs=rngs, gelu=gelu)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:  # SAM / ViTDet: relative positions over the window (window blocks) or the grid (global)
            for layer, block in enumerate(self.blocks):
                grid = self.grid_size if layer in self.global_attn_indexes else (window_size, window_size)
                block.attn = RelPosAttention(embed_dim, num_heads, grid, qkv_bias=qkv_bias, proj_drop=drop_rate,
                                             rngs=rngs, dtype=dtype)
        self.norm = layer_norm(embed_dim, rngs=rngs, dtype=dtype)
        if dense_head not in DENSE_HEADS:
            raise ValueError(f"dense_head must be one of {DENSE_HEADS}, got {dense_head!r}.")
        self.dense_head = dense_head
        self.head = linear(embed_dim, self.head_outputs_per_token, rngs=rngs, dtype=dtype) if num_classes else None

    # --- how many tokens each block merges -----------------------------------------------------------

    @property
    def window_tokens(self) -> int:
        return self.window_size**2

    @property
    def num_windows(self) -> int:
        return -(-self.grid_size[0] // self.window_size) * -(-self.grid_size[1] // self.window_size)

    def _per_block_r(self, r: Any = None) -> tuple[int, ...]:
        return grid_merge_schedule(self, r)

    def block_r(self, layer: int, r_window: int) -> int:
        """Tokens block `layer` merges away (clamped to its sources): r_window in each window of a
        window block; the same share of the grid, r_window * H * W // window_size**2, in a global block."""
        s, (height, width) = self.merge_stride, self.grid_size
        if layer in self.global_attn_indexes:
            sources = height * width - (height // s) * (width // s)
            return min(r_window * height * width // self.window_tokens, sources)
        return min(r_window, self.window_tokens - (self.window_size // s) ** 2)

    def token_counts(self, r: Any = None) -> list[int]:
        """Tokens the attention and MLP of each block see (one image, window padding included), then
        the grid the head sees (depth + 1 numbers)."""
        counts = []
        for layer, r_window in enumerate(self._per_block_r(r)):
            merged = self.block_r(layer, r_window)
            full = self.num_patches if layer in self.global_attn_indexes else self.num_windows * self.window_tokens
            counts.append(full - merged * (1 if layer in self.global_attn_indexes else self.num_windows))
        return counts + [self.num_patches]

    # --- the forward ----------------------------------------------------------------------------------

    def _check_images(self, images) -> None:
        expected = (self.grid_size[0] * self.patch_size, self.grid_size[1] * self.patch_size, self.in_chans)
        if getattr(images, "ndim", None) != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"expected images of shape [B, {expected[0]}, {expected[1]}, {expected[2]}] (NHWC), "
                             f"got {getattr(images, 'shape', type(images).__name__)}.")

    def _block(self, layer: int, x: jax.Array, r_window: int, key: jax.Array | None):
        """x: [B, H, W, C] -> (x [B, H, W, C], the block's MergePlan or None)."""
        block = self.blocks[layer]
        batch, height, width, dim = x.shape
        window, s = self.window_size, self.merge_stride
        is_global = layer in self.global_attn_indexes
        r = self.block_r(layer, r_window)
        plan = None
        if r > 0:
            plan = (merge.random2d_plan(x.reshape(batch, -1, dim), width, height, s, s, r, key) if is_global
                    else merge.windowed_random2d_plan(x, window, s, s, r, key))

        def attend_or_mlp(y: jax.Array, fn, windowed: bool) -> jax.Array:
            """fn on y's tokens (merged when there is a plan, in windows when `windowed`) -> [B, H*W, C]."""
            tokens = merge.window_partition(y, window) if windowed else y.reshape(batch, -1, dim)
            if plan is not None:
                tokens = merge.undo_plan(plan, fn(merge.apply_plan(plan, tokens, "mean")))
            else:
                tokens = fn(tokens)
            out = merge.window_unpartition(tokens, window, height, width) if windowed else tokens
            return out.reshape(batch, height * width, dim)

        def residual(x, out, scale):
            out = out if scale is None else scale(out)
            return x + block.drop_path(out).reshape(x.shape)

        if self.use_rel_pos:  # each token at its own position: a group at its destination's (plan.out_rows)
            attend = lambda t: block.attn(t, positions=None if plan is None else plan.out_rows)[0]  # noqa: E731
        else:
            attend = lambda t: block.attn(t)[0]  # noqa: E731
        out = attend_or_mlp(block.norm1(x), attend, windowed=not is_global)
        x = residual(x, out, block.ls1)
        # ViTDet's MLP runs on the grid; merged, it runs on the block's groups (in windows).
        out = attend_or_mlp(block.norm2(x), block.mlp, windowed=plan is not None and not is_global)
        return residual(x, out, block.ls2), plan

    def _groups(self, layer: int, plan: merge.MergePlan, batch: int) -> jax.Array:
        """The groups of `layer`'s plan as a source matrix [B, G, H * W] (0/1: tokens of each group)."""
        height, width = self.grid_size
        out = plan.num_out
        ids = jnp.broadcast_to(jnp.arange(out, dtype=jnp.float32)[None, :, None], (plan.out_rows.shape[0], out, 1))
        ids = merge.undo_plan(plan, ids)  # [B', T, 1]: the output row each token went into
        if layer in self.global_attn_indexes:
            group, count = ids.reshape(batch, -1), out
        else:
            per_window = ids.reshape(batch, self.num_windows, -1, 1)
            per_window = per_window + out * jnp.arange(self.num_windows, dtype=jnp.float32)[None, :, None, None]
            grid = merge.window_unpartition(per_window.reshape(-1, self.window_tokens, 1), self.window_size,
                                            height, width)
            group, count = grid.reshape(batch, -1), out * self.num_windows
        return jax.nn.one_hot(group.astype(jnp.int32), count, dtype=jnp.float32).transpose(0, 2, 1)

    def forward_features(self, images: jax.Array) -> tuple[jax.Array, tuple, jax.Array | None]:
        """images [B, H, W, C] -> (token grid [B, H/p, W/p, D] after the final norm, one plan or None per
        block, the last merging block's groups [B, G, H/p * W/p] when trace_source, else None)."""
        self._check_images(images)
        x = self.patch_embed(images)
        batch = x.shape[0]
        x = self.pos_drop(x.reshape(batch, *self.grid_size, self.embed_dim) + self.pos_embed[...].astype(x.dtype))
        plans, source = [], None
        for layer, r_window in enumerate(self._per_block_r()):
            key = None
            if self.reduction.method == "random" and self.block_r(layer, r_window) > 0:
                key = self.reduction_rngs.reduction()
            x, plan = self._block(layer, x, r_window, key)
            plans.append(plan)
            if plan is not None and self.reduction.trace_source:
                source = self._groups(layer, plan, batch)
        return self.norm(x), tuple(plans), source

    def __call__(self, images: jax.Array, *, return_info: bool = False):
        """images [B, H, W, C] -> logits [B, H, W, num_classes]; with return_info also {"plans": one
        MergePlan or None per block, "source": [B, G, H/p * W/p] or None, "size": None}."""
        x, plans, source = self.forward_features(images)
        if self.head is not None:
            batch, height, width = images.shape[:3]
            x = self.head(x)  # [B, H/p, W/p, K] or [B, H/p, W/p, p * p * K]
            if self.dense_head == "unpatchify":
                p, (rows, cols) = self.patch_size, self.grid_size
                x = x.reshape(batch, rows, cols, p, p, self.num_classes).transpose(0, 1, 3, 2, 4, 5)
                x = x.reshape(batch, height, width, self.num_classes)
            else:
                x = jax.image.resize(x, (batch, height, width, self.num_classes), "bilinear")
        return (x, {"plans": plans, "source": source, "size": None}) if return_info else x

    # --- FLOPs (one multiply-add = one FLOP) ---------------------------------------------------------

    def forward_flops(self, r: Any = None) -> float:
        """Patch embedding, per block qkv + q @ k + attention @ v + proj + MLP on the merged tokens
        (windows: per window), with use_rel_pos the relative terms (q . R_h and q . R_w: tokens x (h + w)
        x embed_dim per block), the 2-D matching's similarity (sources x destinations x embed_dim), the
        dense head. Merge, unmerge, norms, softmax, the bias additions and the upsampling are not counted."""
        dim, s = self.embed_dim, self.merge_stride
        hidden = self.blocks[0].mlp.fc1.out_features
        height, width = self.grid_size
        flops = self.num_patches * self.patch_size**2 * self.in_chans * dim
        for layer, r_window in enumerate(self._per_block_r(r)):
            merged = self.block_r(layer, r_window)
            if layer in self.global_attn_indexes:
                groups, tokens, dst = 1, self.num_patches, (height // s) * (width // s)
            else:
                groups, tokens, dst = self.num_windows, self.window_tokens, (self.window_size // s) ** 2
            t = tokens - merged
            flops += groups * (4 * t * dim * dim + 2 * t * t * dim + 2 * t * dim * hidden)
            if self.use_rel_pos:
                flops += groups * self.blocks[layer].attn.relative_flops(t)
            if merged:
                flops += groups * (tokens - dst) * dst * dim
        return float(flops + self.num_patches * dim * self.head_outputs_per_token)

    @property
    def head_outputs_per_token(self) -> int:
        """The dense head's outputs per token: num_classes, times patch_size**2 when it unpatchifies."""
        return self.num_classes * (self.patch_size**2 if self.dense_head == "unpatchify" else 1)


    # --- checkpoints: this family's rules, applied by load_timm ----------------------------------------

    def adapt_state_dict(self, state_dict: dict[str, np.ndarray]) -> AdaptedStateDict:
        """SAM's image encoder (and ViTDet backbones under the same names) -> this model's names, then
        the shared rules, then the grids resampled to this model's.

        Names: the `image_encoder.` prefix dropped, the rest of a SAM checkpoint (prompt encoder, mask
        decoder) and the encoder's `neck` ignored, `mlp.lin1` / `mlp.lin2` -> `mlp.fc1` / `mlp.fc2`;
        the final `norm` (SAM has none) left at its init when absent. Grids: `pos_embed` [1, H, W, C]
        bicubic onto this grid; each `rel_pos_h` / `rel_pos_w` table linearly onto its block's length
        (SAM's `get_rel_pos` interpolates the same way at every forward; here once, when loading).
        """
        sd, ignored = {}, []
        prefixed = any(k.startswith(SAM_PREFIX) for k in state_dict)
        for key, value in state_dict.items():
            name = key[len(SAM_PREFIX):] if prefixed and key.startswith(SAM_PREFIX) else key
            if (prefixed and not key.startswith(SAM_PREFIX)) or name.startswith(SAM_NECK):
                ignored.append(key)
                continue
            sd[name.replace(".mlp.lin1.", ".mlp.fc1.").replace(".mlp.lin2.", ".mlp.fc2.")] = value
        model_names = timm_param_names(self)
        adapted = super().adapt_state_dict(sd)
        initialized = tuple(n for n in sorted(model_names) if n.startswith("norm.") and n not in adapted.state_dict)
        adapted = AdaptedStateDict(adapted.state_dict, ignored=(*adapted.ignored, *ignored),
                                   initialized=(*adapted.initialized, *initialized), resampled=adapted.resampled)
        pos_embed = adapted.state_dict.get("pos_embed")
        if pos_embed is not None and np.ndim(pos_embed) == 4 and np.shape(pos_embed) != self.pos_embed.shape:
            old_grid, dim = np.shape(pos_embed)[1:3], np.shape(pos_embed)[3]
            resized = resample_grid(np.asarray(pos_embed).reshape(1, -1, dim), old_grid, self.grid_size)
            adapted = adapted.with_resampled("pos_embed", resized.reshape(1, *self.grid_size, dim))
        if self.use_rel_pos:
            for layer, block in enumerate(self.blocks):
                for axis, param in (("h", block.attn.rel_pos_h), ("w", block.attn.rel_pos_w)):
                    key = f"blocks.{layer}.attn.rel_pos_{axis}"
                    table = adapted.state_dict.get(key)
                    if table is not None and np.ndim(table) == 2 and np.shape(table)[0] != param.shape[0]:
                        adapted = adapted.with_resampled(key, resample_rel_pos(table, param.shape[0]))
        return adapted


# ----------------------------------------------------------------------------- names

_SIZES = {  # ViTDet backbones (Li et al. 2022): embed_dim, depth, heads, global blocks
    "tiny": (192, 12, 3, (2, 5, 8, 11)),
    "base": (768, 12, 12, (2, 5, 8, 11)),
    "large": (1024, 24, 16, (5, 11, 17, 23)),
}


def _register(name: str, sizes: dict, **options) -> None:
    """One registered name per size: `name.format(size)`, a 1024x1024 WindowedViT with windows of 14."""
    for size, (dim, depth, heads, global_blocks) in sizes.items():
        register_model(name.format(size), pretrained_cfg=dict(mean=IMAGENET_MEAN, std=IMAGENET_STD))(
            functools.partial(WindowedViT, img_size=1024, patch_size=16, embed_dim=dim, depth=depth,
                              num_heads=heads, window_size=14, global_attn_indexes=global_blocks, **options))


_register("vitdet_{}_patch16_1024", _SIZES)

_SAM_SIZES = {  # SAM's image encoders (Kirillov et al. 2023, build_sam.py) without the neck; SAM's
    # pixel_mean / pixel_std are ImageNet's (x 255)
    "b": (768, 12, 12, (2, 5, 8, 11)),
    "l": (1024, 24, 16, (5, 11, 17, 23)),
    "h": (1280, 32, 16, (7, 15, 23, 31)),
}
_register("sam_vit_{}_encoder", _SAM_SIZES, use_rel_pos=True)
