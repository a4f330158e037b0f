"""Accuracy and throughput over a sweep of ToMe's r: the library behind `eval.py`."""

from __future__ import annotations

import os

import jax
import ml_collections
from flax import nnx
from tqdm import tqdm

import tome_jax
from tome_jax import data as data_lib
from tome_jax import timing
from tome_jax.models.compiled import CompiledForward
from tome_jax.train import loop, tasks
from tome_jax.train import sharding as sharding_lib
from tome_jax.train import workdir as workdir_lib
from tome_jax.train.checkpoint import Checkpointer


def load_model(config: ml_collections.ConfigDict, workdir: str | None, weights: str | None):
    """The recipe's model with weights from `weights` (timm/big_vision/... file) or else the latest
    checkpoint in `workdir` (EMA parameters when the recipe keeps them)."""
    if weights:  # built for these weights (their GELU) and loaded as a recipe's init.weights, nothing skipped
        config = config.copy_and_resolve_references()
        config.init.weights, config.init.skip = weights, ()
        return loop.build_model(config), f"weights {weights}"
    model = loop.build_model(config, load_weights=False)
    if not workdir:
        raise ValueError("pass --workdir (a training run's directory) or --weights (a pretrained file).")
    ckpt = Checkpointer(workdir_lib.resolve(workdir) / "checkpoints", keep=1, create=False)
    step = ckpt.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {ckpt.directory}; train first or pass --weights.")
    params = ckpt.restore_params(step, nnx.state(model, nnx.Param),
                                 ema=config.optimizer.ema_decay > 0)
    nnx.update(model, params)
    ckpt.close()
    return model, f"checkpoint step {step} in {workdir}"


BASELINE = 0  # the r that speedups are measured against


def sweep(config: ml_collections.ConfigDict, model, r_values: list, *, batch_size: int,
          repeats: int = 10) -> list[dict]:
    """The task's eval metrics (top-1/top-5, or mAP, ...) on the eval split, images/s and GFLOPs per r.

    Every r compiles one eval forward and one plain forward (`CompiledForward`); throughput is timed
    with `tome_jax.timing.time_interleaved` over all r values in interleaved rounds (compile and
    warm-up excluded), so load from other processes hits every r alike. `speedup` is always over
    r=0, which is timed even when `r_values` lacks it; every row carries its images/s as
    `baseline_images_per_sec`."""
    task = tasks.make_task(config)
    mesh = sharding_lib.make_mesh(1)
    batch_sharding = sharding_lib.batch_sharding(mesh)
    data_cfg = data_lib.resolve_config(config.data)  # once; passed down
    dataset = data_lib.make_dataset(data_cfg, data_cfg.split_eval, global_batch_size=batch_size,
                                    train=False, seed=config.seed)
    timing_images = jax.device_put(loop.normalized(next(iter(dataset)), data_cfg)["image"], batch_sharding)
    model.eval()
    evaluator = CompiledForward(model, lambda m, batch: task.eval_batch(m, loop.normalized(batch, data_cfg)))
    forward = CompiledForward(model)
    results, candidates = [], {}
    if BASELINE not in r_values:  # speedups are over r=0 even when it is not in the sweep: time it too
        fn, params, rest = forward.compiled(0)
        candidates[str(BASELINE)] = timing.blocking(fn, params, rest, timing_images)
    for r in tqdm(r_values, desc="r sweep", disable=jax.process_index() != 0):
        eval_fn, params, rest = evaluator.compiled(r)
        metrics = loop.evaluate(task, eval_fn, params, rest, dataset, batch_sharding)
        fn, params, rest = forward.compiled(r)
        candidates[str(r)] = timing.blocking(fn, params, rest, timing_images)
        counts = model.token_counts(r)
        results.append({"r": r, **{k: v for k, v in metrics.items() if k != "count"},
                        "examples": metrics["count"], "gflops": tome_jax.count_flops(model, r=r) / 1e9,
                        "tokens_out": counts[-1]})
    stats = timing.time_interleaved(candidates, repeats=repeats, warmup=1)
    for row in results:
        row["images_per_sec"] = timing_images.shape[0] / stats[str(row["r"])].median
    base = timing_images.shape[0] / stats[str(BASELINE)].median
    for row in results:
        row["speedup"] = row["images_per_sec"] / base
        row["baseline_images_per_sec"] = base
    return results


def parse_r_list(text: str) -> list:
    """"0,8,16" -> [0, 8, 16]; "16:-1" is the schedule (16, -1) (decreasing); ValueError naming the fix."""
    from tome_jax.cli import parse_r_list as parse  # the one parser eval.py's start-up check also uses

    return parse(text)
