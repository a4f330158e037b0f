"""DiT with tomesd-style merging: forward speed at ratio 0 vs the ratios given, side by side in one run,
and what merging itself costs (the DiT sibling of dense_speed.py).

    python benchmarks/dit_speed.py --model dit_b_2 --batch 2 --ratios 0.5 --repeats 3

DiT-B/2 on 32x32x4 latents: 256 tokens; tomesd's ratio 0.5 is r = merge.ratio_r(256, 0.5) = 128 tokens
merged in every block (one destination per 2x2 cell), so attention and MLP see 128.
Prints the command line and the machine, then
1. forward: ms per batch of the jitted forward `model(x, t, y)` (`CompiledForward`; compile and one
   warm-up excluded; median of `--repeats` rounds interleaved over every row) at ratio 0 and at each
   ratio with "bipartite" (top-left destinations, tomesd's no_rand) and "random" destinations; the FLOP
   ratio (`count_flops`), the speedup over ratio 0 and efficiency = speedup / (ratio-0 FLOPs / FLOPs).
2. merge cost: the forward's merging work alone, jitted and timed the same way: every block's matching
   (`random2d_plan` on the block's input), its two merges (`apply_plan`) and its two unmerges
   (`undo_plan`), on the shapes the model uses, in ms per batch and as a share of the ratio-0 forward.
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
    p.add_argument("--model", default="dit_b_2")
    p.add_argument("--ratios", default="0.5", help="comma-separated tomesd ratios (share of all tokens merged)")
    p.add_argument("--methods", default="bipartite,random", help="destination choice: bipartite (fixed) and/or random")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--repeats", type=int, default=3)
    add_json_arg(p, "dit_speed")
    return p.parse_args(argv)


def merge_steps(model, r: int):
    """Three jittable functions of (tokens [depth, B, N, D]) doing only the forward's merging work at r:
    the matchings, + the merges, + the unmerges (so the differences are each part's cost)."""
    grid, s, r = model.grid, model.merge_stride, model.block_r(r)

    def plans(all_tokens):
        return [(merge.random2d_plan(tokens, grid, grid, s, s, r), tokens) for tokens in all_tokens]

    return staged_merge_work(plans)


def main(argv=None):
    runtime.configure()
    args = parse_args(argv)
    report = Report()
    print("\n".join(report.machine))
    dtype = DTYPES[args.dtype]
    model = tome_jax.create_model(args.model, dtype=dtype)
    x, t, y = model.example_inputs(args.batch, dtype)
    ratios = [float(v) for v in args.ratios.split(",")]
    methods = args.methods.split(",")
    print(f"{args.model}: {model.input_size}x{model.input_size}x{model.in_channels} latents, {model.grid}x{model.grid} "
          f"= {model.num_patches} tokens, width {model.embed_dim}, {model.depth} blocks; batch {args.batch}, "
          f"{args.dtype}; {args.repeats} interleaved rounds, medians\n")

    schedules, meta = [], {}
    for method in methods:
        for ratio in [0.0] + ratios:
            if ratio == 0 and method != methods[0]:
                continue
            r = merge.ratio_r(model.num_patches, ratio)
            model.method = method
            key = "ratio 0" if r == 0 else f"ratio {ratio:g} {method}"
            schedules.append((key, r, method))
            meta[key] = (ratio, r, method if r else "-", model.token_counts(r)[0], tome_jax.count_flops(model, r=r))
    all_tokens = jax.random.normal(jax.random.key(1), (model.depth, args.batch, model.num_patches, model.embed_dim),
                                   dtype)
    stats, costs = time_forwards_and_merging(model, (x, t, y), schedules, lambda r: merge_steps(model, r),
                                             all_tokens, repeats=args.repeats)

    base, base_flops = stats["ratio 0"].median, meta["ratio 0"][4]
    rows = []
    for key, (ratio, r, method, tokens, flops) in meta.items():
        speedup = base / stats[key].median
        rows.append([f"{ratio:g}", r, method, tokens, f"{flops / 1e9:.2f}", f"{flops / base_flops:.3f}",
                     f"{stats[key].median * 1e3:.0f}", f"{stats[key].min * 1e3:.0f}", f"{speedup:.2f}",
                     f"{speedup * flops / base_flops:.2f}"])
    print("## forward")
    print(report.table("forward", ["ratio", "r per block", "destinations", "tokens in attention / MLP",
                                   "GFLOPs/sample", "FLOPs vs ratio 0", "ms/batch (median)", "ms (min)", "speedup",
                                   "efficiency"], rows), flush=True)
    rows = []
    for ratio in ratios:
        cost = costs[merge.ratio_r(model.num_patches, ratio)]
        rows.append([f"{ratio:g}", *(f"{c * 1e3:.1f}" for c in cost), *(f"{100 * c / base:.1f}" for c in cost)])
    print("\n## merging cost (fixed destinations), per forward")
    print(report.table("merge_cost", ["ratio", "matching ms", "merges ms", "unmerges ms", "matching % of ratio 0",
                                      "merges % of ratio 0", "unmerges % of ratio 0"], rows), flush=True)
    print(report.note("merge_cost", "merges / unmerges: the difference of the timed medians (matching; + merges; "
                                    "+ unmerges), two of each per block."))
    report.write(args.json)


if __name__ == "__main__":
    main()
