"""Dense digits: sklearn's 8x8 digits pasted on a canvas, each pixel labelled with its digit (no download).

A segmentation source for the dense demo (docs/dense.md). Each example is an RGB uint8 canvas
[S, S, 3] with a coloured noise background and `digits` handwritten digits from the "digits"
source's split (so train and test canvases never share a digit image), each upscaled `scale` times
(nearest), tinted a random colour and pasted at a random place on the `scale`-pixel lattice (so with
2-px patches and scale 2 every patch is one pixel of an 8x8 original); later digits cover earlier ones.
The label is a mask int32 [S, S]: 0 for the background, 1 + d where a digit d's ink (density >= 0.5)
is visible. 11 classes.

Every canvas is drawn once from (split, seed, index), so a run sees the same examples every epoch
and on every host (no augmentation: `data.hflip` must be False, a mirrored digit is another shape).

    data.name = "dense_digits"; data.options = dict(canvas=32, digits=3, scale=2, examples=2000)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tome_jax.data.config import DataConfig
from tome_jax.data.images import load_digits
from tome_jax.data.registry import Batch, register_source

NUM_CLASSES = 11  # background + 10 digits
INK = 0.5  # a digit pixel is labelled where its ink density (0..1) reaches this


@dataclasses.dataclass(frozen=True)
class DenseDigitsOptions:
    canvas: int = 32  # S: the canvas is S x S pixels
    digits: int = 3  # digits pasted per canvas
    scale: int = 2  # each 8x8 digit is upscaled to 8*scale pixels (nearest)
    examples: int = 0  # canvases per split; 0: one per digit image of the split
    seed: int = 0  # which canvases (layout, colours, background) are drawn


def make_canvases(digits: np.ndarray, labels: np.ndarray, options: DenseDigitsOptions, count: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """digits float32 [N, 8, 8] in [0, 1], labels [N] -> (images uint8 [count, S, S, 3], masks int32
    [count, S, S]). Canvas i is drawn from (seed, i) alone."""
    size, side = options.canvas, 8 * options.scale
    if side > size:
        raise ValueError(f"dense_digits: a digit is {side} px (8 x scale={options.scale}) but the canvas is "
                         f"{size} px; raise canvas or lower scale.")
    images = np.empty((count, size, size, 3), np.uint8)
    masks = np.zeros((count, size, size), np.int32)
    for i in range(count):
        rng = np.random.default_rng((seed, i))
        background = rng.uniform(0.0, 0.35, 3) + rng.uniform(-0.08, 0.08, (size, size, 3))
        canvas = np.clip(background, 0.0, 1.0)
        for k in rng.choice(len(digits), options.digits, replace=False):
            ink = np.kron(digits[k], np.ones((options.scale, options.scale), np.float32))
            top, left = options.scale * rng.integers(0, (size - side) // options.scale + 1, 2)
            color = rng.uniform(0.5, 1.0, 3)
            patch = canvas[top:top + side, left:left + side]
            patch[...] = patch * (1.0 - ink[..., None]) + color * ink[..., None]
            region = masks[i, top:top + side, left:left + side]
            region[ink >= INK] = 1 + labels[k]
        images[i] = np.round(canvas * 255).astype(np.uint8)
    return images, masks


@dataclasses.dataclass(frozen=True, eq=False)
class DenseDigitsSource:
    """Canvases uint8 [N, S, S, 3] and masks int32 [N, S, S] (0 background, 1 + digit)."""

    images: np.ndarray
    masks: np.ndarray
    num_classes: int = NUM_CLASSES

    def __len__(self) -> int:
        return len(self.masks)

    def batch_reader(self, cfg: DataConfig) -> DenseBatches:
        return DenseBatches(self, cfg)


class DenseBatches:
    """ids -> {"image": uint8 [b, S, S, 3], "label": int32 [b, S, S], "mask": bool [b]}."""

    def __init__(self, source: DenseDigitsSource, cfg: DataConfig):
        if cfg.channels != 3:
            raise ValueError(f"dense_digits canvases are RGB; give data.mean/std 3 values, got {cfg.channels}.")
        size = source.images.shape[1]
        if cfg.image_size != size:
            raise ValueError(f"dense_digits canvases are {size}x{size} but data.image_size={cfg.image_size}; "
                             f"set data.image_size={size} or data.options.canvas={cfg.image_size}.")
        if cfg.hflip:
            raise ValueError("dense_digits has no flips (a mirrored digit is another shape); set data.hflip=False.")
        self.source = source

    def __call__(self, ids: np.ndarray, *, epoch: np.ndarray | None = None, seed: int = 0) -> Batch:
        return {"image": self.source.images[ids], "label": self.source.masks[ids], "mask": np.ones(len(ids), bool)}


@register_source("dense_digits", options=DenseDigitsOptions)
def _dense_digits(cfg: DataConfig, split: str) -> DenseDigitsSource:
    options = cfg.options
    digits = load_digits(split)
    count = options.examples or len(digits)
    images, masks = make_canvases(digits.images[..., 0], digits.labels, options, count,
                                  seed=options.seed * 2 + (split == "test"))
    return DenseDigitsSource(images, masks)
