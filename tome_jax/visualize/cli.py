r"""Command line of `tome_jax.visualize`: flags in, one call into the library, a PNG out.

    python -m tome_jax.visualize --image astronaut --model vit_base_patch16_224 --r 16 --out merged.png
    python -m tome_jax.visualize --image photo.jpg --model deit_small_patch16_224 --weights deit_s.safetensors \
        --r 16 --layers 1,4,8,12 --out layers.png          # a grid: the groups after each listed layer
    python -m tome_jax.visualize --image chelsea --model vit_base_patch16_224 --grid-r 0,4,8,16 --out r.png
    python -m tome_jax.visualize --image coffee --model vit_small_patch16_224 --img-size 224,320 --out wide.png
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from tome_jax.visualize import SAMPLES, merge_grid, merged_image, save_png


def parse_r(text: str) -> Any:
    """"16" -> 16; "16:-1" -> (16, -1.0) (r, inflect); "8,8,4,0" -> [8, 8, 4, 0] (per layer)."""
    text = text.strip()
    if "," in text:
        return [int(v) for v in text.split(",") if v]
    r, _, inflect = text.partition(":")
    return (int(r), float(inflect)) if inflect else int(r)


def parse_size(text: str) -> int | tuple[int, int]:
    """"224" -> 224; "224,320" -> (224, 320) (H, W)."""
    values = [int(v) for v in text.split(",")]
    return values[0] if len(values) == 1 else tuple(values)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tome_jax.visualize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", help="image file or scikit-image sample name (see --list-samples)")
    p.add_argument("--model", default="vit_base_patch16_224", help="timm model name, e.g. deit_small_patch16_224")
    p.add_argument("--weights", help="pretrained weights (timm/big_vision/MAE/torchvision file); default: random init")
    p.add_argument("--img-size", type=parse_size,
                   help="model input size: 224, or H,W such as 224,320 (default: the model's)")
    p.add_argument("--r", default="16", help="schedule: 16, 16:-1 (r:inflect) or a per-layer list 8,8,4")
    p.add_argument("--layer", type=int, help="draw the groups after this many blocks (default: all)")
    p.add_argument("--layers", help="a grid: groups after each of these layers, e.g. 1,4,8,12")
    p.add_argument("--grid-r", help="a grid: groups at each of these r values, e.g. 0,4,8,16 (':' for inflect)")
    p.add_argument("--fill", default="mean", choices=["mean", "random"], help="group colour")
    p.add_argument("--scale", type=int, default=2, help="pixel repeat of the single-image PNG")
    p.add_argument("--out", default="merged.png", help="PNG to write")
    p.add_argument("--list-samples", action="store_true", help="print the sample names and exit")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except ValueError as e:  # bad input: say what and how to fix it, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    if args.list_samples:
        print("\n".join(SAMPLES))
        return 0
    if not args.image:
        build_parser().error("--image is required (a file or one of: " + ", ".join(SAMPLES) + ")")
    import tome_jax

    kwargs = {"img_size": args.img_size} if args.img_size else {}
    if args.weights:  # the weights' GELU (big_vision: tanh), decided before building
        kwargs.update(tome_jax.checkpoint_layout(args.weights).model_kwargs())
    model = tome_jax.create_model(args.model, r=parse_r(args.r), **kwargs)
    if args.weights:
        tome_jax.load_timm(model, args.weights, skip=("head",))  # the classifier plays no part here
    origin = f"weights {args.weights}" if args.weights else "random init (pass --weights for trained merges)"
    if args.layers or args.grid_r:
        if args.layers:
            fig, results = merge_grid(model, args.image, layers=[int(v) for v in args.layers.split(",")],
                                      fill=args.fill)
        else:
            fig, results = merge_grid(model, args.image, r_values=[parse_r(v) for v in args.grid_r.split(",")],
                                      fill=args.fill)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        fig.savefig(args.out, dpi=100)
        notes, counts = results[0].notes, [m.num_tokens for m in results]
    else:
        merged = merged_image(model, args.image, layer=args.layer, fill=args.fill)
        save_png(merged.picture, args.out, scale=args.scale)
        notes, counts = merged.notes, [merged.num_tokens]
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{args.model} ({origin}), r={model.r}: {model.num_patches} patches -> "
          f"{', '.join(map(str, counts))} groups; wrote {args.out}")
    return 0
