"""Accuracy and throughput over a sweep of ToMe's r: the library behind `eval.py`."""

from __future__ import annotations

import os
import statistics
import time

import jax
import ml_collections
from flax import nnx
from tqdm import tqdm

import tome_jax
from tome_jax import data as data_lib
from tome_jax.train import loop
from tome_jax.train import sharding as sharding_lib
from tome_jax.train.checkpoint import Checkpointer


def images_per_second(forward, params, images, *, repeats: int = 10) -> float:
    """Median images/s of a jitted forward(params, images); compile and warm-up excluded."""
    jax.block_until_ready(forward(params, images))  # compile
    jax.block_until_ready(forward(params, images))  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(forward(params, images))
        times.append(time.perf_counter() - start)
    return images.shape[0] / statistics.median(times)


def load_model(config: ml_collections.ConfigDict, workdir: str | None, weights: str | None):
    """The recipe's model with weights from `weights` (timm/big_vision/... file) or else the latest
    checkpoint in `workdir` (EMA parameters when the recipe keeps them)."""
    model = loop.build_model(config, load_weights=False)
    if weights:
        tome_jax.load_timm(model, weights)
        return model, f"weights {weights}"
    if not workdir:
        raise ValueError("pass --workdir (a training run's directory) or --weights (a pretrained file).")
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=1)
    step = ckpt.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints; train first or pass --weights.")
    params = ckpt.restore_params(step, nnx.state(model, nnx.Param),
                                 ema=config.optimizer.ema_decay > 0)
    nnx.update(model, params)
    ckpt.close()
    return model, f"checkpoint step {step} in {workdir}"


def sweep(config: ml_collections.ConfigDict, model, r_values: list, *, batch_size: int,
          repeats: int = 10) -> list[dict]:
    """Top-1/top-5 on the eval split, images/s and GFLOPs for each r."""
    mesh = sharding_lib.make_mesh(1)
    batch_sharding = sharding_lib.batch_sharding(mesh)
    dataset = data_lib.make_dataset(config.data, config.data.split_eval, global_batch_size=batch_size,
                                    train=False, seed=config.seed)
    timing_images = jax.device_put(next(iter(dataset))["image"], batch_sharding)
    results = []
    for r in tqdm(r_values, desc="r sweep", disable=jax.process_index() != 0):
        graphdef, rest = loop.eval_forward(model, r)
        params = nnx.state(model, nnx.Param)
        eval_step = jax.jit(loop.make_eval_step(graphdef, rest))
        accuracy = loop.evaluate(eval_step, params, dataset, batch_sharding)
        forward = jax.jit(lambda p, x, g=graphdef, s=rest: nnx.merge(g, p, s)(x))
        results.append({
            "r": r, "top1": accuracy["top1"], "top5": accuracy["top5"], "examples": accuracy["count"],
            "images_per_sec": images_per_second(forward, params, timing_images, repeats=repeats),
            "gflops": tome_jax.count_flops(model, r=r) / 1e9,
            "tokens_out": tome_jax.models.flops.token_counts(model, r)[-1],
        })
    base = results[0]["images_per_sec"]
    for row in results:
        row["speedup"] = row["images_per_sec"] / base
    return results


def parse_r_list(text: str) -> list:
    """"0,8,16" -> [0, 8, 16]; "16:-1" is the schedule (16, -1) (decreasing)."""
    values = []
    for item in filter(None, text.split(",")):
        r, _, inflect = item.partition(":")
        values.append((int(r), float(inflect)) if inflect else int(r))
    return values
