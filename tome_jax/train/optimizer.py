"""optax optimizer of a recipe: AdamW, warmup + cosine, clipping, layer-wise lr decay."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax


def layer_decay_scales(layer_ids, depth: int, decay: float):
    """Per-parameter lr multipliers decay^(depth + 1 - layer_id) (BEiT / MAE fine-tuning).

    layer_ids: a tree of ints like the parameters, from the model (`model.layer_ids(params)`):
    0 for the stem, i + 1 for block i, depth + 1 for the head."""
    return jax.tree.map(lambda layer: decay ** (depth + 1 - layer), layer_ids)


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


def make_optimizer(opt: ml_collections.ConfigDict, params, *, layer_ids, decay_mask, depth: int,
                   total_steps: int, warmup_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The recipe's `optimizer` config -> (optax transformation, lr schedule).

    layer_ids / decay_mask: trees like `params` from the model (`model.layer_ids(params)`,
    `model.weight_decay_mask(params)`): the model says which layer a parameter belongs to and which
    parameters are exempt from weight decay, so no parameter-name patterns live here."""
    if opt.name != "adamw":
        raise ValueError(f"optimizer.name={opt.name!r} is not supported; use 'adamw'.")
    schedule = learning_rate_schedule(opt, total_steps, warmup_steps)
    parts = []
    if opt.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(opt.clip_norm))
    parts.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay, mask=decay_mask))
    if opt.layer_decay > 0:
        parts.append(_scale_by_tree(layer_decay_scales(layer_ids, depth, opt.layer_decay)))
    return optax.chain(*parts), schedule


def ema_update(ema, params, decay: float):
    """Exponential moving average of the parameters (float32)."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p.astype(jnp.float32), ema, params)
