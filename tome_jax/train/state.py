"""The train state of a recipe: `build_train_state(config, model, ...)`, used by the loop and by every
benchmark that times a train step, so both build exactly the same thing.

What it decides, in one place: which model variables are trained (`nnx.Param`) and which are
carried along (RNG streams, re-seeded every step), the recipe's optimizer and lr schedule, the EMA
copy, and the state's layout on the (data, model) mesh.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.sharding import Mesh

from tome_jax.train import optimizer as optimizer_lib
from tome_jax.train import sharding as sharding_lib


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any  # {} when EMA is off


def split_model(model: nnx.Module):
    """(graphdef, params, rest): params are trained; rest holds the RNG streams, re-seeded every step."""
    return nnx.split(model, nnx.Param, ...)


@dataclasses.dataclass(frozen=True)
class TrainSetup:
    """Everything a train step needs besides the batch.

    graphdef, rest: the model's structure and its non-trained variables (`split_model`).
    tx, schedule: the recipe's optax optimizer and lr schedule.
    abstract: the state's shapes, dtypes and shardings (`jax.ShapeDtypeStruct` tree), e.g. for a restore.
    shardings: the state's `NamedSharding` tree (the train step's in/out shardings).
    init: () -> TrainState at step 0, laid out by `shardings` (the model's current parameters).
    """

    graphdef: Any
    rest: Any
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    abstract: TrainState
    shardings: TrainState
    init: Callable[[], TrainState]


def build_train_state(config: ml_collections.ConfigDict, model: nnx.Module, *, total_steps: int,
                      warmup_steps: int, mesh: Mesh | None = None) -> TrainSetup:
    """The recipe's train state for `model` (switched to train mode here).

    config: the recipe (`config.optimizer` for the optimizer and EMA, `config.mesh.model` when no
    mesh is given). total_steps / warmup_steps: the lr schedule's length and warmup.
    """
    model.train()
    graphdef, params, rest = split_model(model)
    tx, schedule = optimizer_lib.make_optimizer(
        config.optimizer, params, layer_ids=model.layer_ids(params), depth=model.depth,
        decay_mask=model.weight_decay_mask(params), total_steps=total_steps, warmup_steps=warmup_steps)
    use_ema = config.optimizer.ema_decay > 0

    def init_state(params):
        ema = jax.tree.map(lambda p: p.astype(jnp.float32), params) if use_ema else {}
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), ema_params=ema)

    mesh = mesh if mesh is not None else sharding_lib.make_mesh(config.mesh.model)
    abstract = jax.eval_shape(init_state, params)
    shardings = sharding_lib.state_shardings(mesh, abstract)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return TrainSetup(graphdef=graphdef, rest=rest, tx=tx, schedule=schedule, abstract=abstract,
                      shardings=shardings, init=lambda: jax.jit(init_state, out_shardings=shardings)(params))
