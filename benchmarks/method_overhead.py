"""A reduction method's own work as a share of the reduced forward, side by side in one process.

For each method (default: ToMe's "bipartite", "mctf", "tofu") on ViT-B/16 (random weights): the
uniform r whose `count_flops` is closest to ToMe's r=16 (the same FLOPs), the full forward at that r,
and the method's own work at every reducing block -- `plan` (matching, scores, MCTF's one-step-ahead
attention) + `reduce` (merging x, sizes) + `attention_after` -- jitted as one function over every
layer's real shapes (tokens per block from the schedule), on random inputs of those shapes. The
share is own work / full forward (the parts timed alone lose the fusion of the whole program, so
the share is an upper bound of the in-context cost).

    python benchmarks/method_overhead.py [--batch 8] [--methods bipartite,mctf,tofu] \
        [--json benchmarks/results/method_overhead.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tome_jax  # noqa: E402
from benchmarks.common import Report, add_json_arg, machine_lines  # noqa: E402
from tome_jax.models.compiled import CompiledForward  # noqa: E402
from tome_jax.timing import blocking, time_interleaved  # noqa: E402


def flop_matched_r(model, method: str, target: float) -> int:
    """The uniform r of `method` whose FLOPs are closest to `target` (ties: the smaller r)."""
    tome_jax.apply_tome(model, method=method)
    return min(range(0, 64), key=lambda r: (abs(tome_jax.count_flops(model, r) - target), r))


def own_work(model, batch: int):
    """A jitted fn(inputs) running the method's plan + reduce (+ attention_after) at every reducing
    block, and its inputs: random x [B, T, C], metric [B, T, D], attention [B, H, T, T] per block."""
    reduction, counts = model.reduction, model.token_counts()
    dim, heads = model.embed_dim, model.blocks[0].attn.num_heads
    layers = [i for i in range(model.depth) if counts[i + 1] < counts[i]]
    keys = jax.random.split(jax.random.key(0), 3 * len(layers))
    inputs = []
    for n, i in enumerate(layers):
        t = counts[i]
        inputs.append(dict(
            x=jax.random.normal(keys[3 * n], (batch, t, dim)),
            metric=jax.random.normal(keys[3 * n + 1], (batch, t, dim // heads)),
            attn=jax.nn.softmax(jax.random.normal(keys[3 * n + 2], (batch, heads, t, t)), axis=-1),
            size=jnp.ones((batch, t, 1), jnp.float32)))

    def run(inputs):
        outs = []
        for i, a in zip(layers, inputs):
            attn = a["attn"] if reduction.needs_attention or reduction.reduces_before_attention else None
            plan = reduction.plan(i, a["metric"], x=a["x"], size=a["size"], attn=attn)
            outs.append(reduction.reduce(plan, a["x"], a["size"], None)[:2])
            if reduction.reduces_before_attention:
                outs.append(reduction.attention_after(plan, a["attn"]))
        return outs

    return jax.jit(run), inputs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="vit_base_patch16_224")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--methods", default="bipartite,mctf,tofu")
    ap.add_argument("--repeats", type=int, default=5)
    add_json_arg(ap, "method_overhead")
    args = ap.parse_args()
    report = Report()
    print("\n".join(machine_lines()))

    model = tome_jax.create_model(args.model)
    target = tome_jax.count_flops(tome_jax.apply_tome(model, method="bipartite", r=16))
    images = jax.random.normal(jax.random.key(1), (args.batch, *model.pretrained_cfg["input_size"]))
    candidates, setups = {}, {}
    for method in args.methods.split(","):
        r = flop_matched_r(model, method, target)
        tome_jax.apply_tome(model, method=method, r=r)
        setups[method] = (r, tome_jax.count_flops(model), model.token_counts())
        fwd = CompiledForward(model)
        fn, params, rest = fwd.compiled()
        candidates[f"forward {method}"] = blocking(fn, params, rest, images)
        work, inputs = own_work(model, args.batch)
        candidates[f"own work {method}"] = blocking(work, inputs)
        print(f"{method}: r={r}, {setups[method][1] / 1e9:.2f} GFLOPs, tokens {setups[method][2]}", flush=True)

    print(f"timing {len(candidates)} candidates x {args.repeats} interleaved rounds ...", flush=True)
    stats = time_interleaved(candidates, repeats=args.repeats, warmup=2, min_time=0.1)
    rows = []
    for method, (r, flops, counts) in setups.items():
        forward, work = stats[f"forward {method}"].median, stats[f"own work {method}"].median
        rows.append([method, r, f"{flops / 1e9:.2f}", counts[-1], f"{forward * 1e3:.0f}", f"{work * 1e3:.1f}",
                     f"{100 * work / forward:.1f}"])
    header = ["method", "r", "GFLOPs", "tokens out", "forward ms/batch", "own work ms/batch", "own work % of forward"]
    print("\n" + report.table("overhead", header, rows, align="lrrrrrr"))
    print(report.note("overhead", f"{args.model}, random weights, batch {args.batch}, float32; r: the uniform r "
                      f"with FLOPs closest to ToMe's r=16 ({target / 1e9:.2f} GFLOPs); medians of "
                      f"{args.repeats} interleaved rounds; own work = plan + reduce (+ attention_after) at "
                      f"every reducing block, jitted alone at the real shapes."))
    report.write(args.json)


if __name__ == "__main__":
    np.set_printoptions(linewidth=200)
    main()
