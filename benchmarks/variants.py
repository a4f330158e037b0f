"""Alternative formulations of ToMe's hot spots, timed against the library at real ViT shapes.

    python benchmarks/variants.py --part tome --model vit_base_patch16_224 --batch 16 --r 16
    python benchmarks/variants.py --part attention --model vit_base_patch16_224 --batch 16

`--part tome`: one ToMe step (matching + `merge_wavg`, optionally + `merge_source`) per variant,
each built from the public API (`tome_jax.merge`: `bipartite_plan`, `apply_plan`, `keep_rows`):
  library               bipartite_soft_matching + merge_wavg, as the models call them
  apply_plan            the same plan applied with `apply_plan` directly (the baseline of the next rows)
  one-hot matmul        the scatter of the merged rows as a one-hot matmul
  segment_sum           the whole merge as one segment_sum over all B x T rows
  concatenated          values and sizes concatenated into one [B, T, C + 1] merge
with `--trace-source`, also values, sizes and sources in one "sum" merge (sources are 0/1 and
disjoint, so their "amax" equals their "sum").
`--part attention`: `jax.nn.dot_product_attention` on [B, T, H, D] (the first implementation)
vs. einsum-softmax on [B, T, H, D] vs. the library's attention on [B, H, T, D] (auto choice) and
each of its kernels forced ("batched", "head_loop"), each with the qkv projection (the layout
change is part of the cost) and the proportional-attention bias. `--img-size` for long sequences.

`--part forward`: whole jitted forwards of several models (`--models name@img_size:batch,...`) with
each attention kernel of `--attention` (tome_jax.models.attention; "batched" = the kernel before
the long-sequence work, "auto" = the library's choice), all interleaved in one run: effective
GFLOP/s = 2 x `count_flops` x images / time, and each model's GFLOP/s relative to the first
model's with the same kernel (issue 16's target: ViT-L/16@512 >= 0.85x ViT-B/16@224 at r=0).

    python benchmarks/variants.py --part forward --attention batched,auto --r 0 --repeats 3 \
        --models vit_base_patch16_224@224:16,vit_large_patch16_384@512:2

Every variant is checked against the library first (same sizes, values within 1e-5). Times are
per call for the whole batch, summed over the layers of the r schedule (each layer at its own
token count), median of interleaved rounds. ToMe steps are tiny: on a busy machine add
XLA_FLAGS=--xla_cpu_multi_thread_eigen=false and read the CPU-time column.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import tome_jax  # noqa: E402
from tome_jax import runtime  # noqa: E402
from tome_jax import merge as tome  # noqa: E402
from tome_jax.models.flops import token_counts  # noqa: E402

from tome_jax.models.attention import attention_implementation, dot_product_attention  # noqa: E402
from tome_jax.models.compiled import CompiledForward  # noqa: E402
from tome_jax.timing import blocking, time_interleaved  # noqa: E402

from benchmarks.common import Report, add_json_arg  # noqa: E402


# ----------------------------------------------------------------------------- ToMe variants


def _rows(x, idx):
    """Rows of x [B, T, C] at idx [B, n] -> [B, n, C]."""
    return jnp.take_along_axis(x, idx[..., None], axis=1)


def _sum_merge_fn(kind, metric, r, class_token):
    """A "sum"-only merge(x) from the library's plan (`tome_jax.merge.bipartite_plan`), with the
    scatter of the merged rows done another way."""
    plan = tome.bipartite_plan(metric, r, class_token)
    batch, tokens = metric.shape[:2]

    def merge(x, mode="sum"):
        assert mode == "sum"
        if kind == "plan":
            return tome.apply_plan(plan, x, "sum")
        if kind == "onehot":
            onehot = jax.nn.one_hot(plan.dst_pos, plan.num_out, dtype=x.dtype)  # [B, r, T']
            return tome.keep_rows(plan, x) + jnp.einsum(
                "bro,brc->boc", onehot, _rows(x, plan.src_rows), precision=jax.lax.Precision.HIGHEST)
        if kind == "segment_sum":
            # Output slot of every input token, then one segment_sum over the flattened batch.
            rows = jnp.arange(batch)[:, None]
            slot = jnp.zeros((batch, tokens), plan.out_rows.dtype).at[rows, plan.out_rows].set(
                jnp.arange(plan.num_out))
            slot = slot.at[rows, plan.src_rows].set(plan.dst_pos) + rows * plan.num_out
            merged = jax.ops.segment_sum(x.reshape(batch * tokens, -1), slot.reshape(-1), batch * plan.num_out)
            return merged.reshape(batch, plan.num_out, -1)
        raise ValueError(kind)

    return merge


def _wavg_separate(merge, x, size):
    merged_size = merge(size, "sum")
    return merge(x * size, "sum") / merged_size, merged_size


def _wavg_concat(merge, x, size):
    merged = merge(jnp.concatenate([x * size, size], axis=-1), "sum")
    return merged[..., :-1] / merged[..., -1:], merged[..., -1:]


def tome_steps(r, class_token, trace_source):
    """name -> step(x, metric, size, source) -> (x, size, source)."""

    def library(x, metric, size, source):
        merge, _ = tome.bipartite_soft_matching(metric, r, class_token)
        source = tome.merge_source(merge, x, source) if trace_source else None
        return (*tome.merge_wavg(merge, x, size), source)

    def with_merge(kind, wavg=_wavg_separate):
        def step(x, metric, size, source):
            merge = _sum_merge_fn(kind, metric, r, class_token)
            source = merge(source) if trace_source else None
            return (*wavg(merge, x, size), source)
        return step

    steps = {"library": library, "apply_plan, sums (no input checks)": with_merge("plan"),
             "one-hot matmul scatter": with_merge("onehot"), "segment_sum merge": with_merge("segment_sum"),
             "values+sizes concatenated": with_merge("plan", wavg=_wavg_concat)}
    if trace_source:
        def fused_source(x, metric, size, source):
            merge = _sum_merge_fn("plan", metric, r, class_token)
            c = x.shape[-1]
            merged = merge(jnp.concatenate([x * size, size, source], axis=-1))
            size = merged[..., c:c + 1]
            return merged[..., :c] / size, size, merged[..., c + 1:]
        steps["x, size, source in one merge"] = fused_source
    return steps


def run_tome(model, args, report: Report):
    batch, dim = args.batch, model.embed_dim
    head_dim = dim // model.blocks[0].attn.num_heads
    counts = token_counts(model, args.r)
    class_token = model.has_class_token
    if model.distilled:
        raise SystemExit("--part tome covers models without a distill token; pick a vit_* / deit_* model")
    rng = np.random.default_rng(0)
    totals, layer0 = {}, {}
    layers = [(i, counts[i], counts[i] - counts[i + 1]) for i in range(model.depth) if counts[i + 1] < counts[i]]
    if args.first_layer_only:
        layers = layers[:1]
    print(f"ToMe step variants, batch {batch}, dim {dim}, r={args.r}, class token {class_token}, "
          f"trace_source {args.trace_source}; layers (T in, r): {[(t, lr) for _, t, lr in layers]}", flush=True)
    for i, tokens, layer_r in layers:
        x = jnp.asarray(rng.standard_normal((batch, tokens, dim)), jnp.float32)
        metric = jnp.asarray(rng.standard_normal((batch, tokens, head_dim)), jnp.float32)
        size = jnp.asarray(1 + rng.integers(0, 3, (batch, tokens, 1)), jnp.float32)
        source = (jnp.asarray(np.eye(tokens, counts[0], dtype=np.float32)[None].repeat(batch, 0))
                  if args.trace_source else None)
        steps = {name: jax.jit(fn) for name, fn in tome_steps(layer_r, class_token, args.trace_source).items()}
        want = steps["library"](x, metric, size, source)
        for name, fn in steps.items():
            got = fn(x, metric, size, source)
            np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]), err_msg=name)
            np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), atol=1e-5, rtol=1e-5, err_msg=name)
            if args.trace_source:
                np.testing.assert_array_equal(np.asarray(got[2]), np.asarray(want[2]), err_msg=name)
        stats = time_interleaved({n: blocking(f, x, metric, size, source) for n, f in steps.items()},
                                 repeats=args.repeats, warmup=2, min_time=0.05)
        for name, s in stats.items():
            prev = totals.get(name, (0.0, 0.0))
            totals[name] = (prev[0] + s.median, prev[1] + s.cpu_median)
        if not layer0:
            layer0 = {name: (s.median, s.cpu_median) for name, s in stats.items()}
        print(f"  layer {i} (T={tokens}) done", flush=True)
    base = totals["library"][0]
    rows = [[name, f"{layer0[name][0] * 1e3:.2f}", f"{layer0[name][1] * 1e3:.2f}",
             f"{wall * 1e3:.1f}", f"{cpu * 1e3:.1f}", f"{wall / base:.2f}"]
            for name, (wall, cpu) in totals.items()]
    print()
    print(report.table("tome", ["variant (all same outputs)", f"layer {layers[0][0]} ms", "(cpu ms)", "all layers ms",
                 "(cpu ms)", "time / library"], rows))


# ----------------------------------------------------------------------------- attention variants


def attention_variants(num_heads):
    def split_bthd(x, w, b):
        batch, tokens, dim = x.shape
        qkv = (x @ w + b).reshape(batch, tokens, 3, num_heads, dim // num_heads)
        return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]

    def bias_of(size):
        return None if size is None else jnp.log(size)[:, None, None, :, 0]

    def dpa_bthd(x, w, b, size):
        q, k, v = split_bthd(x, w, b)
        return jax.nn.dot_product_attention(q, k, v, bias=bias_of(size)).reshape(x.shape)

    def einsum_bthd(x, w, b, size):
        q, k, v = split_bthd(x, w, b)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * jnp.float32(1 / np.sqrt(q.shape[-1]))
        if size is not None:
            logits = logits + bias_of(size)
        return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v).reshape(x.shape)

    def kernel(name):
        def fn(x, w, b, size):
            batch, tokens, dim = x.shape
            q, k, v = (x @ w + b).reshape(batch, tokens, 3, num_heads, dim // num_heads).transpose(2, 0, 3, 1, 4)
            out = dot_product_attention(q, k, v, bias_of(size), implementation=name)
            return out.transpose(0, 2, 1, 3).reshape(x.shape)
        return fn

    return {"library (auto kernel, [B, H, T, D])": kernel(None), "einsum-softmax, [B, T, H, D]": einsum_bthd,
            "jax.nn.dot_product_attention, [B, T, H, D]": dpa_bthd,
            "kernel batched (all heads' logits at once)": kernel("batched"),
            "kernel head_loop (a few heads per step)": kernel("head_loop")}


def run_attention(model, args, report: Report):
    batch, dim, heads = args.batch, model.embed_dim, model.blocks[0].attn.num_heads
    counts = token_counts(model, args.r)
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.standard_normal((dim, 3 * dim)) / np.sqrt(dim), jnp.float32)
    b = jnp.zeros((3 * dim,), jnp.float32)
    variants = {n: jax.jit(f) for n, f in attention_variants(heads).items()}
    distinct = sorted(set(counts[:-1]), reverse=True)
    if args.first_layer_only:
        distinct = distinct[:1]
    per_t = {}
    for tokens in distinct:
        x = jnp.asarray(rng.standard_normal((batch, tokens, dim)), jnp.float32)
        size = None if tokens == counts[0] else jnp.asarray(1 + rng.integers(0, 3, (batch, tokens, 1)), jnp.float32)
        want = variants["library (auto kernel, [B, H, T, D])"](x, w, b, size)
        for name, fn in variants.items():
            np.testing.assert_allclose(np.asarray(fn(x, w, b, size)), np.asarray(want), atol=1e-5, rtol=1e-5,
                                       err_msg=name)
        per_t[tokens] = time_interleaved({n: blocking(f, x, w, b, size) for n, f in variants.items()},
                                         repeats=args.repeats, warmup=1)
        print(f"  T={tokens} done", flush=True)
    first = distinct[0]
    totals = {n: sum(per_t[t][n].median for t in counts[:-1] if t in per_t) for n in variants}
    base = totals["library (auto kernel, [B, H, T, D])"]
    rows = [[n, f"{per_t[first][n].median * 1e3:.1f}", f"{per_t[first][n].cpu_median * 1e3:.1f}",
             f"{totals[n] * 1e3:.0f}", f"{totals[n] / base:.2f}"] for n in variants]
    print(f"\nAttention (qkv projection + attention, bias from sizes after the first merge), batch {batch}, "
          f"dim {dim}, {heads} heads, r={args.r} token counts {counts[:-1]}:\n")
    print(report.table("attention", ["variant", f"T={first} ms", "(cpu ms)", "all layers ms", "time / library"], rows))


# ----------------------------------------------------------------------------- whole forwards


def run_forward(args, report: Report):
    kernels = [k.strip() for k in args.attention.split(",") if k.strip()]
    rs = sorted({int(v) for v in str(args.r_list).split(",") if v.strip()})
    models, candidates, flops = {}, {}, {}
    rng = np.random.default_rng(0)
    for spec in args.models.split(","):
        name, _, rest = spec.partition("@")
        img, _, batch = rest.partition(":")
        model = tome_jax.create_model(name, img_size=int(img)) if img else tome_jax.create_model(name)
        label = f"{name}@{model.img_size} b{int(batch or args.batch)}"
        models[label] = (model, int(batch or args.batch))
        images = jnp.asarray(rng.standard_normal((models[label][1], model.img_size, model.img_size, 3)),
                             jnp.float32)
        for kernel in kernels:
            fwd = CompiledForward(model)  # one jit cache per kernel
            for r in rs:
                fn, params, state = fwd.compiled(r)
                with attention_implementation(kernel):  # read while tracing
                    jax.block_until_ready(fn(params, state, images))
                candidates[(label, kernel, r)] = blocking(fn, params, state, images)
                flops[(label, r)] = tome_jax.count_flops(model, r=r) * models[label][1]
                print(f"  compiled {label} {kernel} r={r} ({token_counts(model, 0)[0]} tokens)", flush=True)
    print(f"  timing {len(candidates)} forwards x {args.repeats} interleaved rounds ...", flush=True)
    stats = time_interleaved({" ".join(map(str, k)): f for k, f in candidates.items()},
                             repeats=args.repeats, warmup=1)
    first = next(iter(models))
    gf = {k: 2 * flops[(k[0], k[2])] / stats[" ".join(map(str, k))].median / 1e9 for k in candidates}
    gf_cpu = {k: 2 * flops[(k[0], k[2])] / stats[" ".join(map(str, k))].cpu_median / 1e9 for k in candidates}
    rows = []
    for (label, kernel, r), fn in candidates.items():
        st = stats[f"{label} {kernel} {r}"]
        rows.append([label, kernel, r, f"{st.median * 1e3:.0f}", f"{st.min * 1e3:.0f}",
                     f"{models[label][1] / st.median:.3f}", f"{gf[(label, kernel, r)]:.0f}",
                     f"{gf_cpu[(label, kernel, r)]:.0f}",
                     f"{gf[(label, kernel, r)] / gf[(first, kernel, r)]:.2f}",
                     f"{st.median / stats[f'{label} {kernels[-1]} {r}'].median:.2f}"])
    print()
    print(report.table("forward", ["model@img batch", "attention", "r", "ms/batch (median)", "ms (min)", "img/s",
                                   "eff. GFLOP/s", "GFLOP/CPU-s", f"GFLOP/s vs {first.split()[0]}",
                                   f"speedup of {kernels[-1]}"], rows, align="lllrrrrrrr"))
    print(f"\n{args.repeats} interleaved rounds, medians; eff. GFLOP/s = 2 x counted FLOPs x images / wall time; "
          "GFLOP/CPU-s the same per second of process CPU time (all threads).")


def main(argv=None):
    runtime.configure()  # allocator, quiet logs, compilation cache (as train.py)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["tome", "attention", "forward"], default="tome")
    p.add_argument("--models", default="vit_base_patch16_224@224:16,vit_large_patch16_384@512:2",
                   help="--part forward: comma-separated name@img_size:batch")
    p.add_argument("--attention", default="batched,auto", help="--part forward: attention kernels")
    p.add_argument("--r-list", default="0", help="--part forward: comma-separated r values")
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--img-size", type=int, default=None, help="input resolution (default: the model's)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--trace-source", action="store_true")
    p.add_argument("--first-layer-only", action="store_true", help="time only the first (largest) layer")
    add_json_arg(p, "variants_PART")
    args = p.parse_args(argv)
    report = Report()
    print("\n".join(report.machine), flush=True)
    if args.part == "forward":
        run_forward(args, report)
        return report.write(args.json)
    size_kw = {} if args.img_size is None else dict(img_size=args.img_size)
    model = tome_jax.create_model(args.model, r=args.r, **size_kw)
    (run_tome if args.part == "tome" else run_attention)(model, args, report)
    report.write(args.json)


if __name__ == "__main__":
    main()
