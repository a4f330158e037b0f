"""Windowed ViT (ViTDet layout) with tomesd-style merging: forward speed at r=0 vs the r that halves
the tokens of attention and MLP, side by side in one run, and what merging itself costs.

    python benchmarks/dense_speed.py --model vitdet_base_patch16_1024 --img-size 1024 --batch 1 --repeats 3
    python benchmarks/dense_speed.py --model sam_vit_b_encoder --methods bipartite --repeats 2  # relative positions

Prints the command line and the machine, then
1. forward: ms per batch of the jitted forward (`CompiledForward`; compile and one warm-up excluded;
   median of `--repeats` rounds interleaved over every row) at r=0 and at each `--r` (tokens each
   14x14 window loses per block; 98 of 196 halves them, and a global block then loses 2048 of 4096),
   with "bipartite" (top-left destinations, tomesd's no_rand) and "random" destinations; the FLOP
   ratio (`count_flops`, with a `use_rel_pos` model's relative terms), speedup over r=0 and
   efficiency = speedup / (r=0 FLOPs / FLOPs). `sam_vit_b_encoder` is ViTDet-B with `use_rel_pos=True`.
2. merge cost: the same forward's merging work alone, jitted and timed the same way: every block's
   matching (`windowed_random2d_plan` / `random2d_plan` on the block's input), its two merges
   (`apply_plan`, before attention and before the MLP) and its two unmerges (`undo_plan`, after each),
   on the shapes the model uses, as ms per batch and as a share of the r=0 forward.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import tome_jax  # noqa: E402
from benchmarks.common import Report, add_json_arg, staged_merge_work, time_forwards_and_merging  # noqa: E402
from tome_jax import merge, runtime  # noqa: E402

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vitdet_base_patch16_1024")
    p.add_argument("--img-size", type=int, default=1024)
    p.add_argument("--r", default="98", help="comma-separated r values (tokens per window per block)")
    p.add_argument("--methods", default="bipartite,random", help="destination choice: bipartite (fixed) and/or random")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--repeats", type=int, default=3)
    add_json_arg(p, "dense_speed")
    return p.parse_args(argv)


def merge_steps(model, r: int):
    """Three jittable functions of (grids [depth, B, H, W, C]) doing only the forward's merging work at
    r: the matchings, + the merges, + the unmerges (so the differences are each part's cost)."""
    window, s = model.window_size, model.merge_stride

    def plans(grids):
        out = []
        for layer, grid in enumerate(grids):
            batch, height, width, dim = grid.shape
            rr = model.block_r(layer, r)
            if layer in model.global_attn_indexes:
                tokens = grid.reshape(batch, -1, dim)
                out.append((merge.random2d_plan(tokens, width, height, s, s, rr), tokens))
            else:
                out.append((merge.windowed_random2d_plan(grid, window, s, s, rr), merge.window_partition(grid, window)))
        return out

    return staged_merge_work(plans)


def main(argv=None):
    runtime.configure()
    args = parse_args(argv)
    report = Report()
    print("\n".join(report.machine))
    dtype = DTYPES[args.dtype]
    model = tome_jax.create_model(args.model, img_size=args.img_size, dtype=dtype)
    images = jax.random.normal(jax.random.key(0), (args.batch, args.img_size, args.img_size, 3), dtype)
    r_values = [int(v) for v in args.r.split(",")]
    methods = args.methods.split(",")
    print(f"{args.model} at {args.img_size}x{args.img_size}: grid {model.grid_size}, {model.num_windows} windows of "
          f"{model.window_tokens} tokens (padded), global blocks {model.global_attn_indexes}; batch {args.batch}, "
          f"{args.dtype}; {args.repeats} interleaved rounds, medians\n")

    schedules, meta = [], {}
    for method in methods:
        for r in [0] + r_values:
            if r == 0 and method != methods[0]:
                continue
            model.method = method
            key = "r=0" if r == 0 else f"r={r} {method}"
            schedules.append((key, r, method))
            meta[key] = (method if r else "-", r, model.token_counts(r), tome_jax.count_flops(model, r=r))
    grids = jax.random.normal(jax.random.key(1), (model.depth, args.batch, *model.grid_size, model.embed_dim), dtype)
    stats, costs = time_forwards_and_merging(model, (images,), schedules, lambda r: merge_steps(model, r), grids,
                                             repeats=args.repeats)

    base = stats["r=0"].median
    rows = []
    for key, (method, r, counts, flops) in meta.items():
        speedup = base / stats[key].median
        flop_ratio = meta["r=0"][3] / flops
        window_tokens = [c for layer, c in enumerate(counts[:-1]) if layer not in model.global_attn_indexes]
        global_tokens = [c for layer, c in enumerate(counts[:-1]) if layer in model.global_attn_indexes]
        rows.append([r, method, window_tokens[0] if window_tokens else "-", global_tokens[0] if global_tokens else "-",
                     f"{flops / 1e9:.1f}", f"{flops / meta['r=0'][3]:.3f}", f"{stats[key].median * 1e3:.0f}",
                     f"{stats[key].min * 1e3:.0f}", f"{speedup:.2f}", f"{speedup / flop_ratio:.2f}"])
    print("## forward")
    print(report.table("forward", ["r", "destinations", "tokens per window block", "tokens per global block",
                                   "GFLOPs/image", "FLOPs vs r=0", "ms/batch (median)", "ms (min)", "speedup",
                                   "efficiency"], rows), flush=True)
    rows = []
    for r in r_values:
        rows.append([r, *(f"{c * 1e3:.0f}" for c in costs[r]), *(f"{100 * c / base:.1f}" for c in costs[r])])
    print("\n## merging cost (fixed destinations), per forward")
    print(report.table("merge_cost", ["r", "matching ms", "merges ms", "unmerges ms", "matching % of r=0",
                                      "merges % of r=0", "unmerges % of r=0"], rows), flush=True)
    print(report.note("merge_cost", "merges / unmerges: the difference of the timed medians (matching; + merges; "
                                    "+ unmerges), two of each per block."))
    report.write(args.json)


if __name__ == "__main__":
    main()
