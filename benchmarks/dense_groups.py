"""The dense demo's merged groups and predictions, drawn with `tome_jax.visualize` (docs/dense.md figure).

    python benchmarks/dense_groups.py --config configs/dense_tome.py:runlocal --workdir runs/dense \
        --r 4,8,12 --out docs/img/dense_groups.png

For a few held-out canvases of the recipe's data: the canvas, its mask, then per r the groups of the
first block (windowed: the groups never cross a window's border) and of the last block
(global), each filled with its mean colour, and the predicted mask at that r. Destinations are fixed
(top left of each 2x2 cell) so the picture is the eval's.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from tome_jax import data as data_lib  # noqa: E402
from tome_jax import runtime, visualize  # noqa: E402
from tome_jax.cli import load_recipe  # noqa: E402
from tome_jax.models.compiled import CompiledForward  # noqa: E402


UPSCALE = 4  # pixels per canvas pixel in the group pictures


def main(argv=None):
    runtime.configure()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/dense_tome.py:runlocal")
    p.add_argument("--workdir", required=True)
    p.add_argument("--r", default="4,8,12")
    p.add_argument("--examples", default="0,1,2", help="ids of test canvases")
    p.add_argument("--out", default="docs/img/dense_groups.png")
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tome_jax.train import evaluate

    config = load_recipe(args.config)
    model, origin = evaluate.load_model(config, args.workdir, None)
    model.method = "bipartite"
    data_cfg = data_lib.resolve_config(config.data)
    source = data_lib.make_source(data_cfg, data_cfg.split_eval)
    ids = [int(v) for v in args.examples.split(",")]
    canvases, masks = source.images[ids], source.masks[ids]
    images = (canvases.astype(np.float32) / 255 - np.asarray(data_cfg.mean, np.float32)) / np.asarray(data_cfg.std, np.float32)
    r_values = [int(v) for v in args.r.split(",")]
    predict = CompiledForward(model)
    columns = 2 + 3 * len(r_values)
    fig, axes = plt.subplots(len(ids), columns, figsize=(1.6 * columns, 1.7 * len(ids)), squeeze=False)
    last = model.depth
    for col, (title, picture) in enumerate([("canvas", canvases), ("mask", masks)]):
        for row in range(len(ids)):
            axes[row, col].imshow(picture[row], cmap="tab20" if col else None, vmin=0, vmax=19,
                                  interpolation="nearest")
            axes[0, col].set_title(title, fontsize=8)
    for k, r in enumerate(r_values):
        first = visualize.source_after(model, images, r=r, layer=1)
        final = visualize.source_after(model, images, r=r, layer=last)
        predicted = np.asarray(predict(images, r=r)).argmax(-1)
        for row in range(len(ids)):
            for j, (name, src) in enumerate([("block 1 (windows)", first), (f"block {last} (global)", final)]):
                labels = visualize.patch_labels(src[row], num_prefix_tokens=0, grid=model.grid_size)
                ax = axes[row, 2 + 3 * k + j]
                big = np.kron(canvases[row], np.ones((UPSCALE, UPSCALE, 1), np.uint8))  # room for the outlines
                ax.imshow(visualize.draw_groups(big, labels), interpolation="nearest")
                axes[0, 2 + 3 * k + j].set_title(f"r={r}: {name}\n{int(labels.max()) + 1} groups", fontsize=8)
            axes[row, 4 + 3 * k].imshow(predicted[row], cmap="tab20", vmin=0, vmax=19, interpolation="nearest")
            axes[0, 4 + 3 * k].set_title(f"r={r}: predicted", fontsize=8)
    for ax in axes.reshape(-1):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"dense demo ({origin.split(' in ')[0]}): merged groups (mean colour) and predicted masks", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
