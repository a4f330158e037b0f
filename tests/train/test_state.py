"""The one train state: `build_train_state` gives the loop and the benchmarks the same state and step."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.common import recipe_train_step
from tests.train.test_loop import tiny_config
from tome_jax.train import loop
from tome_jax.train.state import TrainState, build_train_state


def test_state_layout_ema_and_train_mode():
    config = tiny_config(**{"optimizer.ema_decay": 0.9})
    model = loop.build_model(config, load_weights=False)
    model.eval()
    setup = build_train_state(config, model, total_steps=10, warmup_steps=2)
    dropouts = [node for _, node in nnx.iter_graph(model) if isinstance(node, nnx.Dropout)]
    assert dropouts and not any(d.deterministic for d in dropouts)  # switched to train mode
    state = setup.init()
    assert isinstance(state, TrainState) and int(state.step) == 0
    # The abstract state (what a restore reads into) is the initial state's shapes, dtypes and layout.
    assert jax.tree.structure(state) == jax.tree.structure(setup.abstract)
    for a, x in zip(jax.tree.leaves(setup.abstract), jax.tree.leaves(state)):
        assert a.shape == x.shape and a.dtype == x.dtype and a.sharding == x.sharding
    # EMA on: a float32 copy of the parameters; off: an empty dict.
    assert jax.tree.structure(state.ema_params) == jax.tree.structure(state.params)
    assert all(e.dtype == jnp.float32 for e in jax.tree.leaves(state.ema_params))
    config.optimizer.ema_decay = 0.0
    assert build_train_state(config, model, total_steps=10, warmup_steps=2).init().ema_params == {}


def test_benchmark_step_is_the_loops_step():
    config = tiny_config()
    model = loop.build_model(config, load_weights=False)
    step, state, _ = recipe_train_step(config, model)
    assert int(state.step) == 0
    batch = {"image": jnp.zeros((16, 16, 16, 3), jnp.uint8) + 128, "label": jnp.arange(16) % 10,
             "mask": jnp.ones(16, bool)}
    after_one, metrics = step(state, batch)  # warmup starts at lr 0
    after_two, _ = step(after_one, batch)
    assert int(after_two.step) == 2 and np.isfinite(float(metrics["loss"]))
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(after_two.params))]
    assert any(moved)  # the optimizer updated the parameters
