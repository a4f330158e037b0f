"""A few minutes on a GPU or TPU: throughput with ToMe in bfloat16, one JSON and one Markdown table.

Run through `bash benchmarks/accelerator.sh` (installs the jax plugin, runs the accelerator tests,
then this). On its own:

    python benchmarks/accelerator.py --json benchmarks/results/accelerator.json --md benchmarks/results/accelerator.md
    python benchmarks/accelerator.py --smoke --json /tmp/acc.json --md /tmp/acc.md   # tiny sizes, any CPU, seconds

Measured, every candidate compiled first and timed interleaved (`tome_jax.timing.time_interleaved`):
1. the attention path: `jax.nn.dot_product_attention` with ToMe's size bias ([B, 1, 1, T], bf16) at
   ViT-B's shape, implementation "cudnn" (if the backend accepts it) and "xla", next to the
   library's own kernel (tome_jax/models/attention.py), which the models run;
2. forward images/s, bf16, batch `--batch`: ViT-B/16 and ViT-L/16 at r = 0, 8, 16;
3. the MAE ViT-B fine-tuning train step (configs/mae_finetune_tome.py:variant=B, bf16) at r = 0, 16;
4. the headline: ViT-L/16 at 512x512 (1,025 tokens), r = 0 and 40.
Each row gives the speedup over r=0 of the same model. `--smoke` keeps every part but shrinks the
models (2 blocks, width 32, 17 tokens; the train step: the recipe's :runlocal with 2 blocks, width
32), the batches and the rounds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import tome_jax  # noqa: E402
from configs import mae_finetune_tome  # noqa: E402
from tome_jax import runtime  # noqa: E402
from tome_jax.models.attention import dot_product_attention  # noqa: E402
from tome_jax.timing import CompileTimer, blocking, time_interleaved  # noqa: E402
from tome_jax.train import loop  # noqa: E402

from benchmarks.common import Report, add_json_arg, recipe_train_step  # noqa: E402

# (label, registered name, keywords, r values); the smoke run adds SMOKE_MODEL to the keywords.
FORWARDS = (("ViT-B/16", "vit_base_patch16_224", {}, (0, 8, 16)),
            ("ViT-L/16", "vit_large_patch16_224", {}, (0, 8, 16)))
HEADLINE = ("ViT-L/16@512", "vit_large_patch16_384", dict(img_size=512), (0, 40))
TRAIN_R = (0, 16)
PARTS = ("attention", "forward", "train_step", "headline")
SMOKE_MODEL = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2)  # 17 tokens


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny models, batches and rounds (any CPU, seconds)")
    p.add_argument("--batch", type=int, default=256, help="forward batch of ViT-B and ViT-L")
    p.add_argument("--headline_batch", type=int, default=64, help="batch of ViT-L@512")
    p.add_argument("--train_batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--md", default="", metavar="PATH", help="also write the tables as one Markdown file")
    add_json_arg(p, "accelerator")
    args = p.parse_args(argv)
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    if unknown := sorted(set(args.parts) - set(PARTS)):
        p.error(f"--parts: unknown {unknown}; use some of {', '.join(PARTS)}")
    if args.smoke:
        args.batch = args.headline_batch = args.train_batch = 2
        args.repeats = 1
    return args


def device_rows() -> list[list]:
    devices = jax.devices()
    return [[jax.default_backend(), devices[0].device_kind, len(devices), getattr(devices[0], "platform_version", "")]]


def attention_rows(batch: int, smoke: bool, repeats: int) -> list[list]:
    """Which `jax.nn.dot_product_attention` implementation takes ToMe's size bias, and how fast it
    is next to the library's kernel, at ViT-B's attention shape ([B, 197, 12, 64], bf16)."""
    tokens, heads, dim = (17, 2, 16) if smoke else (197, 12, 64)
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v = (jax.random.normal(key, (batch, tokens, heads, dim), jnp.bfloat16) for key in keys[:3])
    size = jax.random.randint(keys[3], (batch, tokens), 1, 4).astype(jnp.float32)
    bias = jnp.log(size)[:, None, None, :].astype(jnp.bfloat16)  # [B, 1, 1, T], as Attention builds it
    calls, status = {}, {}
    for implementation in ("cudnn", "xla"):
        fn = jax.jit(lambda q, k, v, b, impl=implementation: jax.nn.dot_product_attention(
            q, k, v, bias=b, implementation=impl))
        try:
            fn(q, k, v, bias).block_until_ready()
        except Exception as error:  # noqa: BLE001 (the backend's refusal is the answer)
            status[implementation] = "refused: " + str(error).strip().splitlines()[0][:120]
            continue
        status[implementation] = "ran"
        calls[f"jax.nn.dot_product_attention {implementation}"] = blocking(fn, q, k, v, bias)
    heads_first = lambda x: x.transpose(0, 2, 1, 3)  # noqa: E731
    library = jax.jit(lambda q, k, v, b: dot_product_attention(heads_first(q), heads_first(k), heads_first(v), b))
    calls["tome_jax dot_product_attention (auto)"] = blocking(library, q, k, v, bias)
    stats = time_interleaved(calls, repeats=repeats, warmup=1)
    rows = [[f"jax.nn.dot_product_attention {impl}", outcome, ""] for impl, outcome in status.items()
            if outcome != "ran"]
    rows += [[name, "ran", f"{1e3 * s.median:.3f}"] for name, s in stats.items()]
    return rows


def forward_rows(label, name, kwargs, rs, batch, smoke, repeats) -> list[list]:
    """images/s of the bf16 forward at each r, and the speedup over r=0."""
    model = tome_jax.create_model(name, dtype=jnp.bfloat16, **{**kwargs, **(SMOKE_MODEL if smoke else {})})
    forward = tome_jax.CompiledForward(model)
    images = model.example_inputs(batch)
    calls = {}
    for r in rs:
        fn, params, rest = forward.compiled(r=r)
        calls[r] = blocking(fn, params, rest, *images)
    stats = time_interleaved({str(r): fn for r, fn in calls.items()}, repeats=repeats, warmup=1)
    seconds = {r: stats[str(r)].median for r in rs}
    return [[label, r, batch, model.token_counts(r)[-1], f"{batch / seconds[r]:.1f}", f"{seconds[0] / seconds[r]:.2f}x"]
            for r in rs]


def train_rows(batch, smoke, repeats) -> list[list]:
    """images/s of the MAE ViT-B fine-tuning step (bf16) at each r in TRAIN_R."""
    calls = {}
    for r in TRAIN_R:
        config = mae_finetune_tome.get_config("runlocal" if smoke else "variant=B")
        if smoke:
            config.model.update({k: v for k, v in SMOKE_MODEL.items() if k != "img_size"})
        config.model.dtype = "bfloat16"
        config.tome.r = r
        step, state, _ = recipe_train_step(config, loop.build_model(config, load_weights=False))
        size = config.model.img_size
        data = {"image": jax.random.normal(jax.random.key(0), (batch, size, size, 3)),
                "label": jnp.arange(batch) % config.model.num_classes, "mask": jnp.ones(batch, bool)}
        calls[r] = blocking(step, state, data)
    stats = time_interleaved({str(r): fn for r, fn in calls.items()}, repeats=repeats, warmup=1)
    seconds = {r: stats[str(r)].median for r in TRAIN_R}
    label = "MAE ViT-B/16 train step" + (" (runlocal)" if smoke else "")
    return [[label, r, batch, "", f"{batch / seconds[r]:.1f}", f"{seconds[0] / seconds[r]:.2f}x"] for r in TRAIN_R]


def main(argv=None):
    runtime.configure()  # allocator, quiet logs, compilation cache
    args = parse_args(argv)
    report, compiles, t0 = Report(), CompileTimer(), time.perf_counter()
    print("\n".join(report.machine), flush=True)
    printed = ["# Accelerator run" + (" (--smoke: tiny sizes)" if args.smoke else ""), "",
               "\n".join(f"- {line}" for line in report.machine), ""]

    def show(title, key, header, rows):
        text = report.table(key, header, rows)
        print(f"\n## {title}\n\n{text}", flush=True)
        printed.extend([f"## {title}", "", text, ""])

    show("Device", "device", ["backend", "device", "count", "platform"], device_rows())
    header = ["model", "r", "batch", "tokens out", "images/s", "vs r=0"]
    if "attention" in args.parts:
        show("Attention with the size bias (bf16, ViT-B shape)", "attention", ["implementation", "status", "ms"],
             attention_rows(args.batch, args.smoke, args.repeats))
    if "forward" in args.parts:
        rows = []
        for label, name, kwargs, rs in FORWARDS:
            rows += forward_rows(label, name, kwargs, rs, args.batch, args.smoke, args.repeats)
        show("Forward, bf16", "forward", header, rows)
    if "train_step" in args.parts:
        show("Train step, bf16", "train_step", header, train_rows(args.train_batch, args.smoke, args.repeats))
    if "headline" in args.parts:
        show("Headline: ViT-L/16 at 512x512, bf16", "headline", header,
             forward_rows(*HEADLINE, args.headline_batch, args.smoke, args.repeats))
    summary = (f"{compiles.programs} programs compiled ({compiles.cache_hits} from the persistent cache) in "
               f"{compiles.seconds:.1f} s; whole run {time.perf_counter() - t0:.0f} s")
    report.note("device", summary)
    print(summary)
    printed.append(summary)
    report.write(args.json)
    if args.md:
        with open(args.md, "w") as f:
            f.write("\n".join(printed) + "\n")
        print(f"wrote {args.md}")


if __name__ == "__main__":
    main()
