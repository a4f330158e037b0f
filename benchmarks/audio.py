"""Audio ViT throughput with ToMe: forward of ViT-B audio (1024 x 128 log-mel, 513 tokens) at r=0 and the
paper's r=40, and the train step of the `configs/audio_tome.py:runlocal` model with and without ToMe.

    python benchmarks/audio.py --batch 2 --repeats 5 --train-repeats 5

1. forward: clips/s of the jitted forward (compile excluded, warm-up, `tome_jax.timing.time_interleaved`
   over the r values in the same rounds, block_until_ready), speedup over r=0, FLOP ratio from
   `tome_jax.count_flops`, efficiency = speedup / FLOP ratio; wall and process-CPU medians.
2. train step (`--train-repeats` > 0): the runlocal recipe's train step as the loop builds it
   (`benchmarks.common.recipe_train_step`: sigmoid BCE, mixup, AdamW with layer decay) on one synthetic
   batch, r=0 vs the recipe's r, interleaved.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import tome_jax  # noqa: E402
from tome_jax import runtime  # noqa: E402
from tome_jax.models.compiled import CompiledForward  # noqa: E402
from tome_jax.timing import blocking, time_interleaved  # noqa: E402

from benchmarks.common import Report, add_json_arg, recipe_train_step  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_base_patch16_audio")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--r", default="0,40", help="comma-separated r values; speedups are over the first (give 0 first)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--train-repeats", type=int, default=5, help="0 skips the train-step comparison")
    add_json_arg(p, "audio")
    return p.parse_args(argv)


def forward(args, report: Report) -> str:
    model = tome_jax.create_model(args.model)
    r_values = [int(r) for r in args.r.split(",")]
    (clips,) = model.example_inputs(args.batch)  # [B, time, freq, 1], the model's own input
    compiled, candidates = CompiledForward(model), {}
    for r in r_values:
        fn, params, rest = compiled.compiled(r)
        candidates[r] = blocking(fn, params, rest, clips)
    stats = time_interleaved(candidates, repeats=args.repeats, warmup=1)
    base, base_flops = stats[r_values[0]], tome_jax.count_flops(model, r=r_values[0])
    rows = []
    for r in r_values:
        s, flops = stats[r], tome_jax.count_flops(model, r=r)
        speedup, cpu_speedup, ratio = base.median / s.median, base.cpu_median / s.cpu_median, base_flops / flops
        rows.append([r, model.token_counts(r)[-1], f"{flops / 1e9:.2f}", f"{ratio:.2f}", f"{s.median * 1e3:.0f}",
                     f"{s.min * 1e3:.0f}", f"{s.cpu_median * 1e3:.0f}", f"{args.batch / s.median:.2f}",
                     f"{speedup:.2f}", f"{speedup / ratio:.2f}", f"{cpu_speedup:.2f}"])
    return (f"## forward: {args.model}, input [B, time, freq, 1] = {list(clips.shape)}, float32, "
            f"{args.repeats} interleaved rounds\n\n" + report.table(
                "forward", ["r", "tokens out", "GFLOPs/clip", "FLOP ratio", "ms/batch (median)", "ms (min)", "CPU ms",
                 "clips/s", "speedup", "efficiency", "CPU-time speedup"], rows))


def train_step(args, report: Report) -> str:
    from configs.audio_tome import get_config
    from tome_jax.train.loop import build_model

    config = get_config("runlocal")
    r_tome = config.tome.r
    height, width = config.model.img_size
    batch = {"image": jax.random.normal(jax.random.key(0), (config.batch_size, height, width, 1)),
             "label": (jax.random.uniform(jax.random.key(1), (config.batch_size, config.model.num_classes))
                       < 0.2).astype(jnp.float32),
             "mask": jnp.ones((config.batch_size,), bool)}
    candidates, flops = {}, {}
    for r in (0, r_tome):
        config.tome.r = r
        model = build_model(config)
        step, state, _ = recipe_train_step(config, model)
        candidates[r] = blocking(step, state, batch)
        flops[r] = tome_jax.count_flops(model)
    stats = time_interleaved(candidates, repeats=args.train_repeats, warmup=1)
    rows = []
    for r in (0, r_tome):
        s = stats[r]
        rows.append([r, f"{flops[0] / flops[r]:.2f}", f"{s.median * 1e3:.0f}", f"{s.cpu_median * 1e3:.0f}",
                     f"{stats[0].median / s.median:.2f}", f"{stats[0].cpu_median / s.cpu_median:.2f}"])
    return (f"## train step: configs/audio_tome.py:runlocal model (batch {config.batch_size}, [{height}, {width}, 1]), "
            f"{args.train_repeats} interleaved rounds\n\n" + report.table(
                "train", ["r", "FLOP ratio (fwd)", "ms/step (median)", "CPU ms", "speedup", "CPU-time speedup"], rows))


def main(argv=None):
    runtime.configure()  # allocator, quiet logs, compilation cache (as train.py)
    args = parse_args(argv)
    report = Report()
    print("\n".join(report.machine))
    print()
    print(forward(args, report))
    if args.train_repeats > 0:
        print()
        print(train_step(args, report))
    report.write(args.json)


if __name__ == "__main__":
    main()
