"""bfloat16 on the CPU: does the matmul policy reach the fast bf16 kernels (AMX on Intel Xeons)?

    python benchmarks/bf16_cpu.py --json benchmarks/results/bf16_cpu.json        # issue 26's check
    python benchmarks/bf16_cpu.py --batch 8 --train_config runlocal --repeats 3   # a quick look

Three modes side by side, in one process, timed interleaved (`tome_jax.timing.time_interleaved`):
float32; bf16 "native" (XLA's default bf16 dot, which XLA:CPU runs as a float32 dot on converted
inputs); bf16 "float32_result" (the matmul policy, tome_jax/models/matmul.py: bf16 operands,
float32 output, which XLA:CPU gives to its YNNPACK kernels, AMX where the CPU has it).

1. One matmul, ViT-B's MLP fc1 at `--batch` images ([197 B, 768] x [768, 3072]): GFLOP/s.
2. The model's forward (`--model`, default ViT-B/16) at r=0 and `--r`: images/s, each dtype's
   speedup over float32 and ToMe's speedup within each dtype.
3. The train loop's step (configs/mae_finetune_tome.py:`--train_config`, nothing donated) at r=0
   and `--r`: images/s and the speedup over float32.
Then issue 26's goals, each PASS / FAIL: bf16 forward >= 2.5x float32, bf16 train step >= 2x
float32, ToMe still faster in bf16. The CPU's flags come first (`amx_bf16`, `avx512_bf16`): the
goals are for CPUs with AMX; elsewhere the table says what bf16 gains there.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import tome_jax  # noqa: E402
from configs import mae_finetune_tome  # noqa: E402
from tome_jax import runtime  # noqa: E402
from tome_jax.models import matmul  # noqa: E402
from tome_jax.timing import blocking, time_interleaved  # noqa: E402
from tome_jax.train import loop  # noqa: E402

from benchmarks.common import Report, add_json_arg, recipe_train_step  # noqa: E402

# (name, dtype, matmul policy)
MODES = (("float32", None, matmul.DEFAULT), ("bf16 native", "bfloat16", "native"),
         ("bf16 float32_result", "bfloat16", "float32_result"))
CPU_FLAGS = ("amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx512f", "avx2")
GOALS = (2.5, 2.0)  # issue 26 (AMX): bf16 forward / float32, bf16 train step / float32


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--batch", type=int, default=16, help="forward batch (issue 26: 16)")
    p.add_argument("--r", type=int, default=16, help="ToMe's r, compared with r=0")
    p.add_argument("--train_config", default="variant=B",
                   help="configs/mae_finetune_tome.py argument of the train step ('runlocal': a small ViT); "
                        "'' skips the train step")
    p.add_argument("--train_batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    p.add_argument("--skip_matmul", action="store_true")
    add_json_arg(p, "bf16_cpu")
    return p.parse_args(argv)


def cpu_flags() -> dict[str, bool]:
    """Which of `CPU_FLAGS` the CPU has (/proc/cpuinfo; all False where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return {flag: flag in flags for flag in CPU_FLAGS}


def matmul_candidates(batch: int) -> tuple[dict, float]:
    """{mode: blocking call} of ViT-B's fc1 at `batch` images, and its FLOPs (2 per multiply-add)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((197 * batch, 768), np.float32), rng.standard_normal((768, 3072), np.float32)
    calls = {}
    for name, dtype, policy in MODES:
        lhs, rhs = jnp.asarray(a, dtype or jnp.float32), jnp.asarray(b, dtype or jnp.float32)
        fn = jax.jit(lambda x, w, policy=policy: matmul.einsum("mk,kn->mn", x, w, policy=policy))
        calls[name] = blocking(fn, lhs, rhs)
    return calls, 2.0 * a.shape[0] * a.shape[1] * b.shape[1]


def forward_candidates(args) -> dict:
    """{(mode, r): blocking forward} of `args.model` at `args.batch` random images."""
    calls = {}
    for name, dtype, policy in MODES:
        model = tome_jax.create_model(args.model, dtype=dtype, matmul=policy)
        forward = tome_jax.CompiledForward(model)
        (images,) = model.example_inputs(args.batch)
        for r in (0, args.r):
            fn, params, rest = forward.compiled(r=r)
            calls[(name, r)] = blocking(fn, params, rest, images)
    return calls


def train_candidates(args) -> dict:
    """{(mode, r): blocking train step} of the recipe's step at `args.train_batch`."""
    calls = {}
    for name, dtype, policy in MODES:
        for r in (0, args.r):
            config = mae_finetune_tome.get_config(args.train_config)
            config.model.dtype = dtype or "float32"
            config.model.matmul = policy
            config.tome.r = r
            model = loop.build_model(config, load_weights=False)
            step, state, _ = recipe_train_step(config, model)
            size = config.model.img_size
            batch = {"image": jax.random.normal(jax.random.key(0), (args.train_batch, size, size, 3)),
                     "label": jnp.arange(args.train_batch) % config.model.num_classes,
                     "mask": jnp.ones(args.train_batch, bool)}
            calls[(name, r)] = blocking(step, state, batch)
    return calls


def timed(calls: dict, repeats: int) -> dict:
    """{key: median seconds} of interleaved rounds (first calls compile)."""
    t0 = time.perf_counter()
    stats = time_interleaved({str(k): fn for k, fn in calls.items()}, repeats=repeats, warmup=1)
    print(f"  ({len(calls)} candidates compiled and timed in {time.perf_counter() - t0:.0f} s)", flush=True)
    return {k: stats[str(k)].median for k in calls}


def per_r_table(report: Report, key: str, seconds: dict, batch: int, r: int) -> dict:
    """Prints images/s per mode and r, the speedup over float32 and ToMe's; returns {(mode, r): speedup
    over float32} (the seconds are `seconds`)."""
    rows, vs_f32 = [], {}
    for name, _, _ in MODES:
        for rr in (0, r):
            vs_f32[(name, rr)] = seconds[("float32", rr)] / seconds[(name, rr)]
            tome = seconds[(name, 0)] / seconds[(name, rr)]
            rows.append([name, rr, f"{batch / seconds[(name, rr)]:.2f}", f"{vs_f32[(name, rr)]:.2f}x",
                         f"{tome:.2f}x"])
    print(report.table(key, ["mode", "r", "images/s", "vs float32", "ToMe: vs r=0"], rows), flush=True)
    return vs_f32


def main(argv=None):
    runtime.configure()  # allocator, quiet logs, compilation cache (as train.py)
    args = parse_args(argv)
    report = Report()
    print("\n".join(report.machine))
    flags = cpu_flags()
    print(report.table("cpu_flags", list(flags), [["yes" if v else "no" for v in flags.values()]],
                       "l" * len(flags)))
    amx = flags["amx_bf16"]

    if not args.skip_matmul:
        print(f"\n## One matmul: [{197 * args.batch}, 768] x [768, 3072]\n", flush=True)
        calls, flops = matmul_candidates(args.batch)
        seconds = timed(calls, max(args.repeats, 5))
        print(report.table("matmul", ["mode", "ms", "GFLOP/s", "vs float32"], [
            [name, f"{1e3 * s:.2f}", f"{flops / s / 1e9:.0f}", f"{seconds['float32'] / s:.2f}x"]
            for name, s in seconds.items()]))

    print(f"\n## Forward: {args.model}, batch {args.batch}\n", flush=True)
    forward_s = timed(forward_candidates(args), args.repeats)
    forward = per_r_table(report, "forward", forward_s, args.batch, args.r)
    checks = [(f"bf16 forward >= {GOALS[0]}x float32 (r=0)", forward[("bf16 float32_result", 0)], GOALS[0])]

    if args.train_config:
        print(f"\n## Train step: mae_finetune_tome:{args.train_config}, batch {args.train_batch}\n", flush=True)
        train = per_r_table(report, "train_step", timed(train_candidates(args), args.repeats), args.train_batch,
                            args.r)
        checks.append((f"bf16 train step >= {GOALS[1]}x float32 (r=0)", train[("bf16 float32_result", 0)], GOALS[1]))
    tome_bf16 = forward_s[("bf16 float32_result", 0)] / forward_s[("bf16 float32_result", args.r)]
    checks.append((f"ToMe r={args.r} faster than r=0 in bf16 (forward)", tome_bf16, 1.0))

    print("\n## Issue 26's goals" + ("" if amx else " (set for CPUs with amx_bf16; this one has none)") + "\n")
    print(report.table("goals", ["goal", "measured", "result"], [
        [goal, f"{value:.2f}x", "PASS" if value >= target else "FAIL"] for goal, value, target in checks]))
    report.write(args.json)


if __name__ == "__main__":
    main()
