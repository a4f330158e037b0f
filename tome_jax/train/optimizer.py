"""optax optimizer of a recipe: AdamW, warmup + cosine, clipping, layer-wise lr decay."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import ml_collections
import optax

# timm's no_weight_decay(): tokens and position embeddings, plus every bias and norm scale (ndim <= 1).
_NO_DECAY = ("pos_embed", "cls_token", "dist_token")


def _names(params) -> dict:
    """A tree like params whose leaves are the timm-style dotted names."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path), params)


def weight_decay_mask(params):
    return jax.tree.map(lambda name, p: p.ndim > 1 and name.split(".")[0] not in _NO_DECAY,
                        _names(params), params)


def layer_id(name: str, depth: int) -> int:
    """0 for the embeddings, i + 1 for blocks.i, depth + 1 for the final norm and head."""
    if name.split(".")[0] in ("patch_embed", "cls_token", "dist_token", "pos_embed"):
        return 0
    match = re.match(r"blocks\.(\d+)\.", name)
    return int(match.group(1)) + 1 if match else depth + 1


def layer_decay_scales(params, depth: int, decay: float):
    """Per-parameter lr multipliers decay^(depth + 1 - layer_id) (BEiT / MAE fine-tuning)."""
    return jax.tree.map(lambda name: decay ** (depth + 1 - layer_id(name, depth)), _names(params))


def _scale_by_tree(scales) -> optax.GradientTransformation:
    return optax.GradientTransformation(
        lambda params: optax.EmptyState(),
        lambda updates, state, params=None: (jax.tree.map(lambda u, s: u * s, updates, scales), state),
    )


def learning_rate_schedule(opt: ml_collections.ConfigDict, total_steps: int, warmup_steps: int):
    """Linear warmup from 0 to `opt.lr`, then cosine down to `opt.min_lr`."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=opt.lr, warmup_steps=max(warmup_steps, 1),
        decay_steps=max(total_steps, warmup_steps + 1), end_value=opt.min_lr)


def make_optimizer(opt: ml_collections.ConfigDict, params, *, depth: int, total_steps: int,
                   warmup_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The recipe's `optimizer` config -> (optax transformation, lr schedule)."""
    if opt.name != "adamw":
        raise ValueError(f"optimizer.name={opt.name!r} is not supported; use 'adamw'.")
    schedule = learning_rate_schedule(opt, total_steps, warmup_steps)
    parts = []
    if opt.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(opt.clip_norm))
    parts.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay,
                             mask=weight_decay_mask(params)))
    if opt.layer_decay > 0:
        parts.append(_scale_by_tree(layer_decay_scales(params, depth, opt.layer_decay)))
    return optax.chain(*parts), schedule


def ema_update(ema, params, decay: float):
    """Exponential moving average of the parameters (float32)."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p.astype(jnp.float32), ema, params)
