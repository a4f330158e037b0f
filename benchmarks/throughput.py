"""Throughput of the jitted ViT forward with ToMe: images/s, speedup over r=0, FLOP ratio, efficiency.

    python benchmarks/throughput.py --model vit_base_patch16_224 --batch 16 --dtype float32 --r 0,8,16
    python benchmarks/throughput.py --model vit_large_patch16_384 --img-size 512 --batch 2 --r 0,40 \
        --attention batched,auto --repeats 3 --breakdown-r 0 --torch off

Prints the command line and the machine, then
1. throughput: for every r (and every attention kernel of `--attention`), images/s of the jitted
   forward (compile excluded, warm-up, median of `--repeats` interleaved rounds,
   block_until_ready), the effective GFLOP/s (2 x `tome_jax.count_flops` x images / time: one
   multiply-add = 2 floating-point operations), the speedup over r=0 of the same kernel, the
   FLOP ratio and the efficiency = speedup / FLOP ratio. When torch and timm are importable (and
   not `--torch off`), timm's ViT of the same name, batch, dtype, image size and thread count runs
   under `torch.inference_mode()` in the same rounds, side by side.
2. breakdown at `--breakdown-r` (only when given): every part timed in isolation at the real per-layer
   shapes (attention projections, attention logits/softmax/(p @ v) of each kernel, ToMe matching,
   ToMe merge, MLP, patch embedding, head) and summed over the layers, next to the measured
   forward. ToMe overhead = matching + merge, all layers.

Timings are wall-clock medians of interleaved rounds (see benchmarks/common.py): on a shared
machine rerun and compare medians; the minimum column shows the least disturbed run.
Run from the repository root (or with the package installed); torch is optional.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import tome_jax  # noqa: E402
from tome_jax import runtime  # noqa: E402
from tome_jax import merge as tome  # noqa: E402
from tome_jax.models.flops import token_counts  # noqa: E402

from tome_jax.models.attention import (  # noqa: E402
    IMPLEMENTATIONS, attention_implementation, dot_product_attention)
from tome_jax.models.compiled import CompiledForward  # noqa: E402
from tome_jax.reduction import TokenReduction  # noqa: E402
from tome_jax.timing import blocking, time_interleaved  # noqa: E402

from benchmarks.common import Report, add_json_arg  # noqa: E402

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--img-size", type=int, default=None,
                   help="input resolution (default: the model's); e.g. 512 for SWAG ViT-L/16, 518 for ViT-H/14")
    p.add_argument("--attention", default="auto",
                   help="comma-separated attention kernels to time side by side (tome_jax.models.attention: "
                        "auto, batched, head_loop); 'batched,auto' = before/after the long-sequence kernel. "
                        "The breakdown's other parts use the last one.")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--r", default="0,8,16", help="comma-separated r values (constant schedules); 0 is added")
    p.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs after compilation")
    p.add_argument("--breakdown-r", type=int, default=0, help="r of the per-part breakdown (off unless given, e.g. 16)")
    p.add_argument("--breakdown-repeats", type=int, default=5)
    p.add_argument("--in-context", action="store_true",
                   help="also time the forward at --breakdown-r with ToMe replaced by a free token drop "
                        "(same token counts, no matching or merging): a second estimate of ToMe's cost")
    p.add_argument("--torch", default="auto", choices=["auto", "off"],
                   help="auto: time timm's ViT too when torch and timm import")
    add_json_arg(p, "throughput")
    p.add_argument("--no-prop-attn", action="store_true", help="model.prop_attn = False")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- torch (optional)


def make_torch_forward(name: str, batch: int, dtype: str, images: np.ndarray):
    """timm's model under torch.inference_mode, or (None, why) when torch/timm are missing.

    Same threads as XLA:CPU (one per usable core); on a JAX GPU run, on the GPU when torch sees one.
    """
    # OpenMP threads that spin while they wait (the default policy) made torch 5-20x slower here as
    # soon as other processes competed for the cores. Set OMP_WAIT_POLICY=ACTIVE yourself on a
    # dedicated machine; the variable only counts when torch is first imported here.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import timm
        import torch
    except ImportError as e:
        return None, f"torch/timm not importable ({e.__class__.__name__}: {e}); PyTorch column skipped"
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(threads)
    device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    model = timm.create_model(name.partition(".")[0], pretrained=False, num_classes=1000,
                              img_size=images.shape[1])
    model = model.eval().to(device=device, dtype=torch_dtype)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device=device, dtype=torch_dtype)

    def forward():
        with torch.inference_mode():
            out = model(x)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    info = (f"torch {torch.__version__}, timm {timm.__version__}, {device}, {torch.get_num_threads()} threads, "
            f"inference_mode, {dtype}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    return forward, info


# ----------------------------------------------------------------------------- throughput


def run_throughput(model, fwds, args, images_np, dtype, report: Report):
    """fwds: attention kernel -> CompiledForward of the model (one jit cache per kernel)."""
    rs = sorted({0, *(int(v) for v in args.r.split(",") if v.strip())})
    images = [jnp.asarray(images_np, dtype), jnp.asarray(images_np[::-1].copy(), dtype)]
    several = len(fwds) > 1
    name = lambda kernel, r: f"jax {kernel} r={r}" if several else f"jax r={r}"  # noqa: E731

    candidates, first_call_s = {}, {}
    for kernel, fwd in fwds.items():
        for r in rs:
            fn, params, rest = fwd.compiled(r)
            t0 = time.perf_counter()
            with attention_implementation(kernel):  # read while tracing
                jax.block_until_ready(fn(params, rest, images[0]))
            first_call_s[name(kernel, r)] = time.perf_counter() - t0
            jax.block_until_ready(fn(params, rest, images[1]))  # new batch contents: must not retrace
            # Alternate two batch contents while timing: the trace counter then proves no retracing.
            batches = itertools.cycle(images)
            candidates[name(kernel, r)] = lambda fn=fn, p=params, s=rest, batches=batches: jax.block_until_ready(
                fn(p, s, next(batches)))
            print(f"  compiled {name(kernel, r)}: first call (trace + compile + run) "
                  f"{first_call_s[name(kernel, r)]:.1f} s", flush=True)

    torch_info = None
    if args.torch != "off":
        torch_fn, torch_info = make_torch_forward(args.model, args.batch, args.dtype, images_np)
        if torch_fn is not None:
            candidates["torch timm r=0"] = torch_fn
        print(f"  PyTorch: {torch_info}", flush=True)

    print(f"  timing {len(candidates)} candidates x {args.repeats} interleaved rounds ...", flush=True)
    stats = time_interleaved(candidates, repeats=args.repeats, warmup=args.warmup)
    retraced = {(kernel, k): n for kernel, fwd in fwds.items() for k, n in fwd.traces.items() if n != 1}

    flops = {r: tome_jax.count_flops(model, r=r) for r in rs}
    gflops = lambda r, s: 2 * flops[r] * args.batch / s.median / 1e9  # noqa: E731
    rows = []
    for kernel in fwds:
        base = stats[name(kernel, 0)].median
        for r in rs:
            s = stats[name(kernel, r)]
            flop_ratio = flops[0] / flops[r]
            speedup = base / s.median
            rows.append([
                f"JAX {kernel}" if several else "JAX", r, token_counts(model, r)[-1], f"{flops[r] / 1e9:.2f}",
                f"{flop_ratio:.2f}", f"{s.median * 1e3:.0f}", f"{s.min * 1e3:.0f}",
                f"{args.batch / s.median:.3f}", f"{gflops(r, s):.0f}", f"{speedup:.2f}", f"{speedup / flop_ratio:.2f}",
            ])
    base = stats[name(next(iter(fwds)), 0)].median
    if "torch timm r=0" in stats:
        s = stats["torch timm r=0"]
        rows.append(["PyTorch timm", 0, token_counts(model, 0)[-1], f"{flops[0] / 1e9:.2f}", "1.00",
                     f"{s.median * 1e3:.0f}", f"{s.min * 1e3:.0f}", f"{args.batch / s.median:.3f}",
                     f"{gflops(0, s):.0f}", f"{base / s.median:.2f}", ""])
    header = ["impl", "r", "tokens out", "GFLOPs/img", "FLOP ratio", "ms/batch (median)", "ms (min)",
              "img/s", "eff. GFLOP/s", "speedup vs r=0", "efficiency"]
    print()
    print(report.table("throughput", header, rows, align="llrrrrrrrrr"))
    print(f"\n{args.repeats} interleaved rounds, median wall time per batch of {args.batch}; "
          f"img/s = batch / median; eff. GFLOP/s = 2 x GFLOPs/img x img/s; speedup vs r=0 of the same "
          f"kernel (PyTorch: vs the first JAX kernel). First calls (trace + compile + one run): "
          + ", ".join(f"{k} {t:.1f} s" for k, t in first_call_s.items()) + ".")
    if several:
        first, last = list(fwds)[0], list(fwds)[-1]
        print(f"{last} vs {first}: " + ", ".join(
            f"r={r} {stats[name(first, r)].median / stats[name(last, r)].median:.2f}x" for r in rs) + " faster.")
    print("Traces per schedule (each schedule compiled once, 2 batch contents alternated): "
          + ("all 1 (no retracing)" if not retraced else f"RETRACED: {retraced}"))
    return stats


# ----------------------------------------------------------------------------- breakdown


def _pure(module, fn):
    """jit of fn(module, *args) as a pure function of the module's state; returns (jitted, state)."""
    graphdef, state = nnx.split(module)
    return jax.jit(lambda state, *a: fn(nnx.merge(graphdef, state), *a)), state


def _attention_part(block, x, size):
    """x + attn(norm1(x)), as in Block.__call__ (no LayerScale / drop path in the timed models)."""
    out, metric, _ = block.attn(block.norm1(x), size)
    return x + (out if block.ls1 is None else block.ls1(out)), metric


def _mlp_part(block, x):
    out = block.mlp(block.norm2(x))
    return x + (out if block.ls2 is None else block.ls2(out))


def run_breakdown(model, fwds, args, images_np, dtype, report: Report):
    """Parts timed with the last kernel of `fwds`; the attention core with every kernel."""
    kernels = list(fwds)
    kernel = kernels[-1]
    with attention_implementation(kernel):  # read when the parts are traced (first timed call)
        return _run_breakdown(model, fwds[kernel], kernels, args, images_np, dtype, report)


def _run_breakdown(model, fwd, kernels, args, images_np, dtype, report):
    r = args.breakdown_r
    model.r = r
    batch, dim = args.batch, model.embed_dim
    heads = model.blocks[0].attn.num_heads
    head_dim = dim // heads
    counts = token_counts(model, r)
    cls, dist = model.has_class_token, model.distilled
    prop_attn, trace_source = model.prop_attn, model.trace_source
    key = jax.random.key(1)

    def rand(shape, dt=dtype):
        nonlocal key
        key, sub = jax.random.split(key)
        return jax.random.normal(sub, shape, jnp.float32).astype(dt)

    candidates = {}
    images = jnp.asarray(images_np, dtype)
    embed, embed_state = _pure(model.patch_embed, lambda m, im: m(im))
    candidates["patch embed"] = blocking(embed, embed_state, images)
    for i, block in enumerate(model.blocks):
        t_in, t_out = counts[i], counts[i + 1]
        layer_r = t_in - t_out
        x = rand((batch, t_in, dim))
        # Sizes exist from the first merge on (None before: no attention bias, as in the model).
        size = None if i == 0 or counts[0] == t_in else 1.0 + jnp.abs(rand((batch, t_in, 1), jnp.float32))
        attn, state = _pure(block, _attention_part)
        candidates[f"attention {i}"] = blocking(attn, state, x, size if prop_attn else None)
        # softmax(q k^T / sqrt(D) + log size) v alone, [B, H, T, D] as in the model, for each kernel.
        bias = None if size is None or not prop_attn else jnp.log(size)[:, None, None, :, 0].astype(dtype)
        q, k, v = (rand((batch, heads, t_in, head_dim)) for _ in range(3))
        for kern in kernels:
            core = jax.jit(functools.partial(dot_product_attention, implementation=kern))
            candidates[f"core {kern} {i}"] = blocking(core, q, k, v, bias)
        if layer_r > 0:
            metric = rand((batch, t_in, head_dim))
            sizes = jnp.ones((batch, t_in, 1), jnp.float32) if size is None else size
            source = (jnp.broadcast_to(jnp.eye(t_in, counts[0], dtype=jnp.float32), (batch, t_in, counts[0]))
                      if trace_source else None)

            def step(x, metric, size, source, layer_r=layer_r):
                merge, _ = tome.bipartite_soft_matching(metric, layer_r, cls, dist)
                if source is not None:
                    source = tome.merge_source(merge, x, source)
                x, size = tome.merge_wavg(merge, x, size)
                return x, size, source

            # The matching alone: a 1-channel merge (of the sizes) makes it compute its indices.
            match = jax.jit(lambda metric, size, layer_r=layer_r: tome.bipartite_soft_matching(
                metric, layer_r, cls, dist)[0](size, "sum"))
            candidates[f"matching {i}"] = blocking(match, metric, sizes)
            candidates[f"matching+merge {i}"] = blocking(jax.jit(step), x, metric, size, source)
        mlp, state = _pure(block, _mlp_part)
        candidates[f"mlp {i}"] = blocking(mlp, state, rand((batch, t_out, dim)))
    head, head_state = _pure(model, lambda m, x, s: m.forward_head(m.norm(x) if m.norm is not None else x, s))
    candidates["norm + head"] = blocking(head, head_state, rand((batch, counts[-1], dim)),
                                         jnp.ones((batch, counts[-1], 1), jnp.float32))

    fn, params, rest = fwd.compiled(r)  # compiled already when r was in --r
    candidates["full forward"] = blocking(fn, params, rest, images)
    if args.in_context:
        fn_drop, params, rest = _token_drop_forward(model, r)
        candidates["forward, free token drop"] = blocking(fn_drop, params, rest, images)

    print(f"  timing {len(candidates)} parts x {args.breakdown_repeats} interleaved rounds ...", flush=True)
    # ToMe steps take milliseconds: repeat them within each round (min_time) to average out jitter.
    stats = time_interleaved(candidates, repeats=args.breakdown_repeats, warmup=args.warmup, min_time=0.1)
    med = {k: v.median for k, v in stats.items()}
    layers = range(model.depth)
    matching = sum(med.get(f"matching {i}", 0.0) for i in layers)
    overhead = sum(med.get(f"matching+merge {i}", 0.0) for i in layers)
    attention = sum(med[f"attention {i}"] for i in layers)
    cores = {kern: sum(med[f"core {kern} {i}"] for i in layers) for kern in kernels}
    parts = {
        "attention projections (norm1, qkv, proj) = attention - core": attention - cores[kernels[-1]],
        f"attention core softmax(qk^T/sqrt(D) + log s)v, {kernels[-1]}": cores[kernels[-1]],
        "ToMe matching (normalize, similarity, max, sort)": matching,
        "ToMe merge (gather/scatter of x and size) = step - matching": overhead - matching,
        "MLP (norm2, fc1, GELU, fc2)": sum(med[f"mlp {i}"] for i in layers),
        "patch embed": med["patch embed"],
        "final norm + head": med["norm + head"],
    }
    total = sum(parts.values())
    forward = med["full forward"]
    rows = [[name, f"{t * 1e3:.1f}", f"{100 * t / total:.1f}", f"{100 * t / forward:.1f}"]
            for name, t in parts.items()]
    rows.append(["sum of parts", f"{total * 1e3:.1f}", "100.0", f"{100 * total / forward:.1f}"])
    rows.append(["measured full forward", f"{forward * 1e3:.1f}", "", "100.0"])
    for kern in kernels[:-1]:
        rows.append([f"(attention core, {kern} instead)", f"{cores[kern] * 1e3:.1f}", "",
                     f"{100 * cores[kern] / forward:.1f}"])
    print(f"\nBreakdown at r={r}, attention kernel {kernels[-1]} (batch {batch}, {args.dtype}; "
          f"tokens per block {counts}), "
          f"each part jitted alone at its real shapes, median of {args.breakdown_repeats} rounds:\n")
    print(report.table("breakdown", ["part (all layers)", "ms/batch", "% of sum", "% of forward"], rows))
    print("\n" + report.note("breakdown", f"ToMe overhead (matching + merge steps, all layers, timed whole): "
                             f"{overhead * 1e3:.1f} ms = {100 * overhead / forward:.1f}% of the r={r} forward."))
    if args.in_context:
        drop = med["forward, free token drop"]
        print(f"In context: forward at r={r} {forward * 1e3:.0f} ms vs. the same forward with ToMe replaced "
              f"by a free token drop {drop * 1e3:.0f} ms: difference {100 * (forward - drop) / forward:.1f}%.")
    columns = ["attention", *(f"core {kern}" for kern in kernels), "matching", "matching+merge", "mlp"]
    per_layer = [[i, counts[i], counts[i + 1]] + [f"{med.get(f'{p} {i}', 0.0) * 1e3:.2f}" for p in columns]
                 for i in layers]
    print("\nPer layer (ms/batch; parts timed separately, so differences of parts are noisy; "
          "attention includes the core of the last kernel):\n")
    print(report.table("per_layer", ["layer", "T in", "T out", *columns], per_layer))
    return stats


@dataclasses.dataclass(frozen=True)
class FreeTokenDrop(TokenReduction):
    """A reduction that keeps the first T - r' tokens (r' = ToMe's clamped r) with no matching and
    no merging: the same token counts as ToMe at zero cost. Plugged in through `model.reduction`."""

    def plan(self, layer, metric, key=None, **block_inputs):
        batch, tokens = metric.shape[:2]
        out = self.tokens_after(layer, tokens)
        if out == tokens:
            return None
        rows = jnp.broadcast_to(jnp.arange(tokens), (batch, tokens))
        return tome.MergePlan(rows[:, :out], rows[:, out:], jnp.zeros((batch, tokens - out), jnp.int32), tokens)


def _token_drop_forward(model, r):
    """(jitted fn(params, rest, images), params, rest): the forward at r with every merge replaced by
    a free token drop (sizes unchanged)."""
    model.r = r
    original = model.reduction
    model.reduction = FreeTokenDrop(**{**dataclasses.asdict(original), "method": "prune"})
    try:
        return CompiledForward(model).compiled()
    finally:
        model.reduction = original


# ----------------------------------------------------------------------------- main


def main(argv=None):
    runtime.configure()  # allocator, quiet logs, compilation cache (as train.py)
    args = parse_args(argv)
    dtype = DTYPES[args.dtype]
    report = Report()
    print("\n".join(report.machine), flush=True)
    t0 = time.perf_counter()
    size_kw = {} if args.img_size is None else dict(img_size=args.img_size)
    model = tome_jax.create_model(args.model, dtype=None if args.dtype == "float32" else dtype, **size_kw)
    if args.no_prop_attn:
        model.prop_attn = False
    print(f"model: {args.model} @ {model.img_size} ({model.depth} blocks, dim {model.embed_dim}, "
          f"{model.num_patches + model.num_prefix_tokens} tokens), batch {args.batch}, {args.dtype}, "
          f"prop_attn={model.prop_attn}; created in {time.perf_counter() - t0:.1f} s", flush=True)
    images_np = np.random.default_rng(0).standard_normal(
        (args.batch, model.img_size, model.img_size, model.in_chans)).astype(np.float32)

    print("\n## Throughput\n", flush=True)
    kernels = [k.strip() for k in args.attention.split(",") if k.strip()]
    for kernel in kernels:
        if kernel not in IMPLEMENTATIONS:
            raise SystemExit(f"--attention: unknown kernel {kernel!r}; use {', '.join(IMPLEMENTATIONS)}.")
    fwds = {kernel: CompiledForward(model) for kernel in kernels}  # one jit cache per kernel
    run_throughput(model, fwds, args, images_np, dtype, report)
    if args.breakdown_r > 0:
        print("\n## Breakdown\n", flush=True)
        run_breakdown(model, fwds, args, images_np, dtype, report)
    report.write(args.json)


if __name__ == "__main__":
    main()
