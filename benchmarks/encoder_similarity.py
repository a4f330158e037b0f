"""How much ToMe moves an image embedding: cosine similarity of the embedding at each r to r=0's, on
photos (scikit-image's sample images by default), for any registered tower and checkpoint.

    python benchmarks/encoder_similarity.py --model vit_base_patch16_clip_quickgelu_224 \
        --weights open_clip_vit_b16_openai.safetensors --r 0,4,8,12,16 --plot clip_cosine.png
    python benchmarks/encoder_similarity.py --model vit_so400m_patch14_siglip_384 \
        --weights webli_en_so400m_384_58765454.npz --r 0,8,16,24 --json benchmarks/results/NAME.json

The model is built for the weights (`checkpoint_layout(path).model_kwargs()`: big_vision's tanh
GELU) and loaded with `load_timm` (SigLIP/big_vision .npz, OpenAI/open_clip and timm files).
Each image is centre-cropped to the model's aspect ratio, resized to its input size and normalized
with its `pretrained_cfg` (tome_jax.visualize's preprocessing). For each r: tokens out, FLOP ratio,
and the mean / min over the images of cos(embedding at r, embedding at r=0); `--plot` draws one
line per image. Without `--weights` the tower is randomly initialized and the table says so: such
numbers measure nothing about a trained encoder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import tome_jax  # noqa: E402
from tome_jax.train.evaluate import parse_r_list  # noqa: E402
from tome_jax.visualize import fit_to_model, load_image, normalize  # noqa: E402

from benchmarks.common import Report, add_json_arg  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "horse", "camera")  # scikit-image samples


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a registered name, e.g. vit_base_patch16_clip_quickgelu_224")
    p.add_argument("--weights", default="", help="checkpoint path (none: random init, which measures nothing)")
    p.add_argument("--model-kwargs", default="{}", help='JSON overrides for create_model, e.g. \'{"img_size": 256}\'')
    p.add_argument("--r", default="0,4,8,16", help="comma-separated schedules (0 is added): 8 or 8:-1")
    p.add_argument("--images", default=",".join(PHOTOS), help="image files or scikit-image sample names")
    p.add_argument("--plot", default="", help="write a PNG of cosine vs r, one line per image")
    add_json_arg(p, "encoder_similarity_NAME")
    return p.parse_args(argv)


def embeddings_at(model, images: np.ndarray, r_values: list) -> dict:
    """r -> embeddings [N, E] (float64), one compiled forward per schedule."""
    forward = tome_jax.CompiledForward(model)
    return {r: np.asarray(forward(images, r=r), np.float64) for r in r_values}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def main(argv=None):
    args = parse_args(argv)
    kwargs = json.loads(args.model_kwargs)
    if args.weights:
        kwargs.update(tome_jax.checkpoint_layout(args.weights).model_kwargs())
    model = tome_jax.create_model(args.model, **kwargs)
    if args.weights:
        report = tome_jax.load_timm(model, args.weights, skip=())
        origin = f"weights {args.weights} ({len(report['ignored'])} keys of other towers ignored)"
    else:
        origin = "RANDOM INIT (no --weights): not a sanity figure of a trained encoder"
    names = [v for v in args.images.split(",") if v]
    batch = np.stack([normalize(fit_to_model(load_image(name)[0], model.img_size)[0], model) for name in names])
    r_values = [0] + [r for r in parse_r_list(args.r) if r != 0]
    embeddings = embeddings_at(model, batch, r_values)
    full = tome_jax.count_flops(model, 0)
    out = Report()
    rows = []
    for r in r_values:
        cos = cosine(embeddings[r], embeddings[0])
        rows.append([r, model.token_counts(r)[-1], f"{tome_jax.count_flops(model, r) / full:.3f}",
                     f"{cos.mean():.4f}", f"{cos.min():.4f}", names[int(cos.argmin())]])
    print("\n".join(out.machine))
    print(f"{args.model}, {origin}; {len(names)} images: {', '.join(names)}")
    print(out.table("cosine", ["r", "tokens out", "FLOPs vs r=0", "mean cos to r=0", "min cos", "min at"], rows))
    print(out.note("cosine", f"{args.model}, {origin}; images: {', '.join(names)}"))
    out.write(args.json)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        xs = [model.token_counts(r)[-1] for r in r_values]
        for i, name in enumerate(names):
            ax.plot(xs, [cosine(embeddings[r], embeddings[0])[i] for r in r_values], marker="o", label=name)
        ax.set_xlabel("tokens after the last block (r=0 at the right)")
        ax.set_ylabel("cos(embedding at r, at r=0)")
        ax.set_title(f"{args.model}\n{'trained weights' if args.weights else 'random init'}", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
