"""Token counts and FLOPs of models or recipes at several r: no timing, seconds to run.

    python benchmarks/flops.py --models video_vit_large_patch16:0,65 video_vit_base_patch16:0,130
    python benchmarks/flops.py --config configs/video_tome.py:runlocal --r 0,4,8,12,16
    python benchmarks/flops.py --config configs/audio_tome.py --r 0,40

For each model (a registered name with its default sizes, or a recipe's model as the train loop builds
it) and each r: the tokens entering the first block and leaving the last, the forward GFLOPs per
example (`tome_jax.count_flops`: one multiply-add = one FLOP, the matching's similarity included) and
the FLOP ratio to r=0. Models are built under `nnx.eval_shape`, so no parameters are allocated (video
ViT-L counts as fast as a toy).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flax import nnx  # noqa: E402

import tome_jax  # noqa: E402

from benchmarks.common import Report, add_json_arg  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=[], metavar="NAME:R,R",
                   help="registered model names, each with its r values (0 is added)")
    p.add_argument("--config", default="", help="a recipe 'configs/x.py[:arg]': its model as the loop builds it")
    p.add_argument("--r", default="", help="--config: comma-separated r values (default: 0 and the recipe's)")
    add_json_arg(p, "flops_NAME")
    return p.parse_args(argv)


def _r_values(text: str, *always) -> list[int]:
    return sorted({*always, *(int(v) for v in text.split(",") if v.strip())})


def models_to_count(args) -> list[tuple[str, object, list[int]]]:
    """[(label, abstract model, r values)]."""
    out = []
    for spec in args.models:
        name, _, rs = spec.partition(":")
        out.append((name, nnx.eval_shape(lambda name=name: tome_jax.create_model(name)), _r_values(rs, 0)))
    if args.config:
        from tome_jax.cli import load_recipe
        from tome_jax.train import loop

        config = load_recipe(args.config)
        model = nnx.eval_shape(lambda: loop.build_model(config, load_weights=False))
        out.append((f"{config.model_name} ({args.config})", model, _r_values(args.r or str(config.tome.r), 0)))
    return out


def main(argv=None):
    args = parse_args(argv)
    report = Report()
    print("\n".join(report.machine))
    rows = []
    for label, model, rs in models_to_count(args):
        base = tome_jax.count_flops(model, r=0)
        for r in rs:
            counts, flops = model.token_counts(r), tome_jax.count_flops(model, r=r)
            rows.append([label, r, counts[0], counts[-1], f"{flops / 1e9:.4g}", f"{base / flops:.2f}"])
    print()
    print(report.table("flops", ["model", "r", "tokens in", "tokens out", "GFLOPs/example", "FLOP ratio"], rows,
                       align="lrrrrr"))
    report.write(args.json)


if __name__ == "__main__":
    main()
