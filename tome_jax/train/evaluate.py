"""Accuracy and throughput over a sweep of ToMe's r: the library behind `eval.py`."""

from __future__ import annotations

import csv
import json
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
from tome_jax.train.checkpoint import Checkpointer


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
    """The task's eval metrics (top-1/top-5, or mAP, ...) on the eval split, images/s and GFLOPs per r.

    Every r compiles one eval forward and one plain forward (`CompiledForward`); throughput is timed
    with `tome_jax.timing.time_interleaved` over all r values in interleaved rounds (compile and
    warm-up excluded), so load from other processes hits every r alike."""
    task = tasks.make_task(config)
    mesh = sharding_lib.make_mesh(1)
    batch_sharding = sharding_lib.batch_sharding(mesh)
    dataset = data_lib.make_dataset(config.data, config.data.split_eval, global_batch_size=batch_size,
                                    train=False, seed=config.seed)
    timing_images = jax.device_put(next(iter(dataset))["image"], batch_sharding)
    model.eval()
    evaluator, forward = CompiledForward(model, task.eval_batch), CompiledForward(model)
    results, candidates = [], {}
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
    base = results[0]["images_per_sec"]
    for row in results:
        row["speedup"] = row["images_per_sec"] / base
    return results


_METRIC_COLUMNS = (("top1", "top1 %"), ("top5", "top5 %"), ("mAP", "mAP %"), ("loss", "loss"))


def _metrics(results: list[dict]) -> list[tuple[str, str]]:
    """The task's metric columns present in the results (top-1/top-5, mAP, loss)."""
    return [(key, title) for key, title in _METRIC_COLUMNS if key in results[0]]


def format_table(results: list[dict]) -> str:
    metrics = _metrics(results)
    lines = [f"{'r':>10} " + "".join(f"{title:>8} " for _, title in metrics)
             + f"{'images/s':>10} {'speedup':>8} {'GFLOPs':>8} {'tokens':>7}"]
    for row in results:
        lines.append(f"{str(row['r']):>10} " + "".join(f"{row[key]:8.2f} " for key, _ in metrics)
                     + f"{row['images_per_sec']:10.1f} {row['speedup']:7.2f}x {row['gflops']:8.3f} {row['tokens_out']:7d}")
    return "\n".join(lines)


def write_report(results: list[dict], out_dir: str, title: str) -> list[str]:
    """eval_results.json, eval_results.csv and accuracy_vs_throughput.png in out_dir."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, n) for n in ("eval_results.json", "eval_results.csv", "accuracy_vs_throughput.png")]
    rows = [dict(row, r=str(row["r"])) for row in results]
    with open(paths[0], "w") as f:
        json.dump(rows, f, indent=2)
    with open(paths[1], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    key, metric_title = _metrics(results)[0]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([r["images_per_sec"] for r in results], [r[key] for r in results], "o-")
    for row in results:
        ax.annotate(f"r={row['r']}", (row["images_per_sec"], row[key]), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("images / s")
    ax.set_ylabel(metric_title)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=120)
    plt.close(fig)
    return paths


def parse_r_list(text: str) -> list:
    """"0,8,16" -> [0, 8, 16]; "16:-1" is the schedule (16, -1) (decreasing)."""
    values = []
    for item in filter(None, text.split(",")):
        r, _, inflect = item.partition(":")
        values.append((int(r), float(inflect)) if inflect else int(r))
    return values
