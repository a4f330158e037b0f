"""Video ViT (MAE-ST layout) with ToMe: forward and train-step throughput at r=0 vs the paper's r.

    python benchmarks/video_throughput.py --forward video_vit_large_patch16:65,video_vit_base_patch16:130 \
        --train video_vit_base_patch16:130 --batch 1 --train-batch 1 --repeats 3

Prints the command line and the machine, then
1. forward: for each model and r (16 x 224 x 224 clips, 8 x 14 x 14 = 1568 tokens), ms per batch of
   the jitted forward (`CompiledForward`, compile and one warm-up excluded, median of `--repeats`
   interleaved rounds over every model and r), the speedup over r=0 of the same model in the same
   run, the FLOP ratio (`count_flops`) and efficiency = speedup / FLOP ratio.
2. train: the recipe's own jitted train step (`configs/video_tome.py`: AdamW, layer decay, mixup /
   cutmix, label smoothing, drop path; `tome_jax.train.loop.make_train_step`) at r=0 vs r, timed the
   same way (same input state every call, nothing donated).
Defaults follow the paper: r=65 for video ViT-L (1568 -> 37 tokens over 24 blocks); for ViT-B the r
that ends about as low over 12 blocks (130: 1568 -> 69).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import tome_jax  # noqa: E402
from benchmarks.common import Report, add_json_arg, recipe_train_step  # noqa: E402
from tome_jax import runtime  # noqa: E402
from tome_jax.models.compiled import CompiledForward  # noqa: E402
from tome_jax.timing import blocking, time_interleaved  # noqa: E402

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--forward", default="video_vit_large_patch16:65,video_vit_base_patch16:130",
                   help="comma-separated model:r pairs timed at r=0 and r ('' skips)")
    p.add_argument("--train", default="video_vit_base_patch16:130", help="model:r for the train step ('' skips)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--train-batch", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--repeats", type=int, default=3)
    add_json_arg(p, "video_throughput")
    return p.parse_args(argv)


def _pairs(text: str) -> list[tuple[str, int]]:
    return [(name, int(r)) for name, _, r in (item.rpartition(":") for item in filter(None, text.split(",")))]


def forward_rows(args) -> list[list]:
    clips = jax.random.normal(jax.random.key(0), (args.batch, args.frames, args.img_size, args.img_size, 3),
                              DTYPES[args.dtype])
    candidates, meta = {}, {}
    for name, r in _pairs(args.forward):
        model = tome_jax.create_model(name, num_frames=args.frames, img_size=args.img_size,
                                      dtype=DTYPES[args.dtype])
        forward = CompiledForward(model)
        for rr in (0, r):
            fn, params, rest = forward.compiled(rr)
            candidates[f"{name} r={rr}"] = blocking(fn, params, rest, clips)
            meta[f"{name} r={rr}"] = (name, rr, model.token_counts(rr)[-1], tome_jax.count_flops(model, r=rr))
    stats = time_interleaved(candidates, repeats=args.repeats, warmup=1)
    rows = []
    for key, (name, r, tokens, flops) in meta.items():
        base_key = f"{name} r=0"
        speedup = stats[base_key].median / stats[key].median
        flop_ratio = meta[base_key][3] / flops
        rows.append([name, r, tokens, f"{flops / 1e9:.1f}", f"{flop_ratio:.2f}", f"{stats[key].median * 1e3:.0f}",
                     f"{stats[key].min * 1e3:.0f}", f"{stats[key].cpu_median:.2f}",
                     f"{args.batch / stats[key].median:.3f}", f"{speedup:.2f}", f"{speedup / flop_ratio:.2f}"])
    return rows


def train_rows(args) -> list[list]:
    from configs.video_tome import get_config
    from tome_jax.train import loop, tasks
    from tome_jax.train.state import split_model

    (name, r), = _pairs(args.train)
    batch = {"image": jax.random.normal(jax.random.key(1), (args.train_batch, args.frames, args.img_size,
                                                            args.img_size, 3), DTYPES[args.dtype]),
             "label": jnp.arange(args.train_batch, dtype=jnp.int32) % 400,
             "mask": jnp.ones((args.train_batch,), bool)}
    config = get_config("r=0")
    config.model_name = name
    config.model.update(dict(num_frames=args.frames, img_size=args.img_size, dtype=args.dtype))
    # One train state for both r (the parameters do not depend on r): half the optimizer memory.
    step0, state, setup = recipe_train_step(config, loop.build_model(config, load_weights=False))
    candidates, meta = {"r=0": blocking(step0, state, batch)}, {}
    config.tome.r = r
    model = loop.build_model(config, load_weights=False)
    model.train()
    graphdef, _, rest = split_model(model)
    step_r = jax.jit(loop.make_train_step(graphdef, rest, setup.tx, setup.schedule, config,
                                          tasks.make_task(config)))
    candidates[f"r={r}"] = blocking(step_r, state, batch)
    for rr in (0, r):
        meta[f"r={rr}"] = (rr, model.token_counts(rr)[-1], tome_jax.count_flops(model, r=rr))
    stats = time_interleaved(candidates, repeats=args.repeats, warmup=1)
    rows = []
    for key, (rr, tokens, flops) in meta.items():
        speedup = stats["r=0"].median / stats[key].median
        flop_ratio = meta["r=0"][2] / flops
        rows.append([name, rr, tokens, f"{flop_ratio:.2f}", f"{stats[key].median * 1e3:.0f}",
                     f"{stats[key].min * 1e3:.0f}", f"{stats[key].cpu_median:.2f}",
                     f"{args.train_batch / stats[key].median:.3f}", f"{speedup:.2f}"])
    return rows


def main(argv=None):
    runtime.configure()  # allocator, quiet logs, compilation cache (as train.py)
    args = parse_args(argv)
    report = Report()
    print("\n".join(report.machine))
    print(f"clips: batch {args.batch} (train {args.train_batch}) x {args.frames} x {args.img_size} x "
          f"{args.img_size} x 3, {args.dtype}; {args.repeats} interleaved rounds, medians\n")
    if args.forward:
        print("## forward")
        print(report.table("forward", ["model", "r", "tokens out", "GFLOPs/clip", "FLOP ratio", "ms/batch (median)",
                                       "ms (min)", "CPU s (median)", "clips/s", "speedup", "efficiency"],
                           forward_rows(args)), flush=True)
    if args.train:
        print("\n## train step (configs/video_tome.py recipe)")
        print(report.table("train", ["model", "r", "tokens out", "fwd FLOP ratio", "ms/step (median)", "ms (min)",
                                     "CPU s (median)", "clips/s", "speedup"], train_rows(args)), flush=True)
    report.write(args.json)


if __name__ == "__main__":
    main()
