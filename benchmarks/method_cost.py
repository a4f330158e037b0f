"""The cost of each reduction method's own work (scores, matching, clustering, transform, merge) as a
share of the reduced forward, every method at the same token counts.

    python benchmarks/method_cost.py --model vit_base_patch16_224 --batch 8 --r 16 \
        --methods bipartite,pitome,dct,atc --json benchmarks/results/method_cost.json

Every method runs with the per-layer removals ToMe makes at `--r` (ViT-B/16, r=16: 16 per block,
10 in the last, 197 -> 11 tokens), so all forwards have the same token counts and the same FLOPs but
for the method's own matmuls. Two estimates of the own work, side by side in one process
(interleaved rounds, median):
- in context: the method's forward minus the same forward with the method replaced by a free token
  drop (the first T' tokens kept: no scores, no matching, no merge; sizes unchanged), over the
  method's forward;
- isolated: each block's plan + reduce jitted alone at its real shapes (random x, keys and sizes),
  summed over the blocks, over the method's forward.
Random weights (speed only). Run from the repository root; see benchmarks/common.py for `--json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import tome_jax  # noqa: E402
from tome_jax import runtime  # noqa: E402
from tome_jax.merge import MergePlan  # noqa: E402
from tome_jax.models.compiled import CompiledForward  # noqa: E402
from tome_jax.reduction import METHODS, TokenReduction  # noqa: E402
from tome_jax.timing import blocking, time_interleaved  # noqa: E402

from benchmarks.common import Report, add_json_arg  # noqa: E402


@dataclasses.dataclass(frozen=True)
class FreeTokenDrop(TokenReduction):
    """Keeps the first T' tokens of each block (T' from the schedule as "prune" clamps it): the
    token counts of the method it stands in for, at zero cost. Installed through `model.reduction`."""

    def plan(self, layer, metric, key=None, **block_inputs):
        batch, tokens = metric.shape[:2]
        out = self.tokens_after(layer, tokens)
        if out == tokens:
            return None
        rows = jnp.broadcast_to(jnp.arange(tokens), (batch, tokens))
        return MergePlan(rows[:, :out], rows[:, out:], jnp.zeros((batch, tokens - out), jnp.int32), tokens)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--r", type=int, default=16, help="ToMe's r whose per-block token counts every method uses")
    p.add_argument("--methods", default="bipartite,pitome,dct,atc", help=f"comma-separated, of {', '.join(METHODS)}")
    p.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds (median reported)")
    add_json_arg(p, "method_cost")
    return p.parse_args(argv)


def main(argv=None):
    runtime.configure()
    args = parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    report = Report()
    print("\n".join(report.machine), flush=True)
    model = tome_jax.create_model(args.model)
    counts = model.token_counts(args.r)  # ToMe's, at r
    removals = [a - b for a, b in zip(counts[:-1], counts[1:])]
    images = jnp.asarray(np.random.default_rng(0).standard_normal(
        (args.batch, model.img_size, model.img_size, model.in_chans)), jnp.float32)
    print(f"{args.model}, batch {args.batch}, float32, prop_attn={model.prop_attn}; per-block removals {removals} "
          f"(ToMe's at r={args.r}); tokens {counts}", flush=True)
    head_dim = model.embed_dim // model.blocks[0].attn.num_heads

    candidates, flops = {}, {}
    for method in methods:
        tome_jax.apply_tome(model, method=method, r=removals)
        assert model.token_counts() == counts, (method, model.token_counts())
        flops[method] = tome_jax.count_flops(model)
        fn, params, rest = CompiledForward(model).compiled()
        candidates[f"{method} forward"] = blocking(fn, params, rest, images)
        reduction = model.reduction
        for layer, (t_in, t_out) in enumerate(zip(counts[:-1], counts[1:])):
            if t_out == t_in:
                continue
            key = jax.random.key(layer)
            x = jax.random.normal(key, (args.batch, t_in, model.embed_dim))
            metric = jax.random.normal(jax.random.fold_in(key, 1), (args.batch, t_in, head_dim))
            size = None if layer == 0 else 1.0 + jnp.abs(jax.random.normal(jax.random.fold_in(key, 2),
                                                                           (args.batch, t_in, 1)))

            def step(x, metric, size, layer=layer, reduction=reduction):
                plan = reduction.plan(layer, metric, jax.random.key(0), x=x, size=size)
                return reduction.reduce(plan, x, size, None)
            candidates[f"{method} step {layer}"] = blocking(jax.jit(step), x, metric, size)
        original = model.reduction
        model.reduction = FreeTokenDrop(**{**{f.name: getattr(original, f.name) for f in dataclasses.fields(original)},
                                           "method": "prune", "options": None})
        fn, params, rest = CompiledForward(model).compiled()
        candidates[f"{method} free drop"] = blocking(fn, params, rest, images)
        model.reduction = original
    tome_jax.apply_tome(model, method="bipartite", r=0)
    fn, params, rest = CompiledForward(model).compiled()
    candidates["r=0 forward"] = blocking(fn, params, rest, images)
    flops_r0 = tome_jax.count_flops(model)

    print(f"timing {len(candidates)} programs x {args.repeats} interleaved rounds ...", flush=True)
    stats = time_interleaved(candidates, repeats=args.repeats, warmup=1, min_time=0.05)
    med = {k: v.median for k, v in stats.items()}
    rows = []
    for method in methods:
        forward, drop = med[f"{method} forward"], med[f"{method} free drop"]
        isolated = sum(v for k, v in med.items() if k.startswith(f"{method} step "))
        rows.append([method, f"{flops[method] / 1e9:.2f}", f"{flops[method] / flops_r0:.3f}",
                     f"{forward * 1e3:.1f}", f"{drop * 1e3:.1f}", f"{100 * (forward - drop) / forward:.1f}",
                     f"{isolated * 1e3:.1f}", f"{100 * isolated / forward:.1f}",
                     f"{med['r=0 forward'] / forward:.2f}x"])
    header = ["method", "GFLOPs/img", "FLOPs vs r=0", "forward ms", "free-drop forward ms",
              "own work in context %", "own work isolated ms", "own work isolated %", "speedup vs r=0"]
    print()
    print(report.table("overhead", header, rows, align="lrrrrrrrr"))
    print(report.note("overhead", f"{args.model}, batch {args.batch}, float32, random weights; every method at "
                      f"ToMe r={args.r}'s token counts {counts}; r=0 forward {med['r=0 forward'] * 1e3:.1f} ms; "
                      f"median of {args.repeats} interleaved rounds. 'in context' = (forward - free-drop forward) "
                      f"/ forward; 'isolated' = the blocks' plan + reduce jitted alone, summed, / forward."))
    report.write(args.json)


if __name__ == "__main__":
    main()
