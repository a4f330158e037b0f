"""Host-side image transforms (NumPy), vectorized over a batch where the images allow it.

Boxes are float `(y0, x0, y1, x1)` in pixel-edge coordinates of the source image ([0, H] x [0, W]);
decoded files are cropped at whole pixels (`snap_boxes`, as torchvision's RandomResizedCrop), in-memory
arrays at the exact float box. Batches leave the host as uint8; normalization runs on device
(`tome_jax.data.normalize`).
Randomness comes from `uniforms(seed, epoch, ids)`, a counter-based hash: the crop and flip of record
`i` in epoch `e` depend on (seed, e, i) only, not on batch size, shard count or threads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MUL1
        z = (z ^ (z >> np.uint64(27))) * _MUL2
        return z ^ (z >> np.uint64(31))


def uniforms(seed: int, epoch: np.ndarray, ids: np.ndarray, n: int) -> np.ndarray:
    """Independent U[0, 1) draws per example. epoch, ids: int [b] -> float64 [b, n]."""
    seed_key = _splitmix64(np.asarray([seed], np.uint64))
    key = _splitmix64(
        _splitmix64(seed_key ^ np.asarray(epoch, np.uint64).reshape(-1))
        ^ np.asarray(ids, np.uint64).reshape(-1)
    )
    bits = _splitmix64(key[:, None] ^ (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN))
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def random_resized_crop_boxes(
    u: np.ndarray,
    height: np.ndarray,
    width: np.ndarray,
    scale: Sequence[float],
    ratio: Sequence[float],
) -> np.ndarray:
    """Inception-style random crops. u: [b, 4] uniforms; height, width: [b] -> boxes [b, 4].

    Area fraction ~ U(scale), log aspect ratio (w / h) ~ U(log ratio), position uniform. Unlike timm's
    10-try rejection loop, a side longer than the image is clipped to it (vectorized, always valid).
    An area fraction above 1 zooms out: the box's area exceeds the image's, and along each axis where
    the box is longer, the image lands at a uniform position inside it (`crop_resize` repeats the
    border pixels outside the image); sides are then clipped at sqrt(fraction) x the image's.
    """
    height, width = np.asarray(height, np.float64), np.asarray(width, np.float64)
    fraction = scale[0] + u[:, 0] * (scale[1] - scale[0])
    area = height * width * fraction
    log_lo, log_hi = np.log(ratio[0]), np.log(ratio[1])
    aspect = np.exp(log_lo + u[:, 1] * (log_hi - log_lo))
    cap = np.sqrt(np.maximum(fraction, 1.0))
    w = np.minimum(np.sqrt(area * aspect), width * cap)
    h = np.minimum(np.sqrt(area / aspect), height * cap)
    x0 = u[:, 2] * (width - w)
    y0 = u[:, 3] * (height - h)
    return np.stack([y0, x0, y0 + h, x0 + w], axis=-1)


def center_crop_boxes(height: np.ndarray, width: np.ndarray, crop_pct: float) -> np.ndarray:
    """Square center crops, side = crop_pct * shorter side. height, width: [b] -> boxes [b, 4].

    Resizing this box to S x S equals timm's eval transform (resize the shorter side to S / crop_pct,
    then center-crop S x S) in a single resampling step.
    """
    height, width = np.asarray(height, np.float64), np.asarray(width, np.float64)
    side = crop_pct * np.minimum(height, width)
    y0, x0 = (height - side) / 2, (width - side) / 2
    return np.stack([y0, x0, y0 + side, x0 + side], axis=-1)


def resize_weights(
    start: np.ndarray, stop: np.ndarray, in_size: int, out_size: int, edge: np.ndarray
) -> np.ndarray:
    """Triangle-filter resampling matrices, PIL "bilinear" semantics. start, stop: [b] -> [b, out, in].

    The filter widens by the scale factor when downsampling (antialiasing). Row s holds the weights of
    the input pixels for output pixel s. Rows are normally renormalized where the filter is cut at the
    image's edges, like clamping (PIL). Where `edge` (bool [b]: the box reaches past the image on any
    side, see crop_resize), the image's border pixels repeat outside it (PIL on an
    np.pad(mode="edge") canvas): for digits, whose strokes touch the border, that measured ~0.6
    points better than zeros as the canvas of zoom-out crops (benchmarks/RESULTS.md section 11).
    Decided per box, so a crop never depends on the other boxes of its batch.
    """
    scale = (stop - start) / out_size  # Input pixels per output pixel, [b].
    support = np.maximum(scale, 1.0)
    centers = start[:, None] + (np.arange(out_size) + 0.5) * scale[:, None]  # [b, out]
    edge = np.asarray(edge, bool)
    pad = int(np.ceil(max(0.0, -start.min(), (stop - in_size).max()) + support.max())) if edge.any() else 0
    grid = np.arange(-pad, in_size + pad) + 0.5  # Input pixel centers, `pad` virtual ones each side.
    dist = np.abs(grid[None, None, :] - centers[..., None])  # [b, out, in + 2 pad]
    w = np.maximum(0.0, 1.0 - dist / support[:, None, None])
    w[~edge, :, :pad] = 0.0  # PIL: the filter window is cut at the image's edges...
    w[~edge, :, pad + in_size:] = 0.0
    w /= np.maximum(w.sum(-1, keepdims=True), 1e-12)  # ...and renormalized.
    image = w[..., pad:pad + in_size].copy()
    image[..., 0] += w[..., :pad].sum(-1)  # Virtual pixels repeat the border pixel.
    image[..., -1] += w[..., pad + in_size:].sum(-1)
    return image.astype(np.float32)


def crop_resize(images: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Crop each box and resize it to size x size. images: [b, H, W, C], boxes: [b, 4] -> float32 [b, S, S, C].

    A box may reach past the image (zoom-out crops): it then sees the image on a canvas that repeats
    its border pixels, along both axes (resize_weights).
    """
    b, height, width, channels = images.shape
    edge = (boxes[:, :2] < 0).any(-1) | (boxes[:, 2] > height) | (boxes[:, 3] > width)  # [b]
    wy = resize_weights(boxes[:, 0], boxes[:, 2], height, size, edge)  # [b, S, H]
    wx = resize_weights(boxes[:, 1], boxes[:, 3], width, size, edge)  # [b, S, W]
    rows = np.matmul(wy, images.astype(np.float32, copy=False).reshape(b, height, width * channels))
    return np.matmul(wx[:, None], rows.reshape(b, size, width, channels))  # [b, 1, S, W] @ [b, S, W, C]


def snap_boxes(boxes: np.ndarray, height: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Float boxes [b, 4] -> int64 boxes of whole pixels inside the image, each side >= 1 pixel.

    Sides and corners are rounded to the nearest pixel; a box pushed past the border is shifted back in.
    """
    height, width = np.asarray(height, np.int64), np.asarray(width, np.int64)
    h = np.clip(np.rint(boxes[:, 2] - boxes[:, 0]).astype(np.int64), 1, height)
    w = np.clip(np.rint(boxes[:, 3] - boxes[:, 1]).astype(np.int64), 1, width)
    y0 = np.clip(np.rint(boxes[:, 0]).astype(np.int64), 0, height - h)
    x0 = np.clip(np.rint(boxes[:, 1]).astype(np.int64), 0, width - w)
    return np.stack([y0, x0, y0 + h, x0 + w], axis=-1)


def to_uint8(images: np.ndarray, scale: float = 255.0) -> np.ndarray:
    """Round `images * scale` to uint8, clipped to [0, 255]. float [b, ...] -> uint8 [b, ...]."""
    out = np.multiply(images, np.float32(scale), dtype=np.float32)
    np.rint(out, out=out)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def hflip(images: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Mirror images[k] left-right where flip[k], in place. images: [b, H, W, C], flip: bool [b]."""
    if flip.any() and not images.flags.c_contiguous:
        images[flip] = images[flip, :, ::-1]
    elif flip.any():
        pixels = images.view(np.dtype((np.void, images.shape[-1] * images.itemsize)))  # [b, H, W, 1]
        pixels[flip] = pixels[flip, :, ::-1]  # Whole pixels at a time: ~1.6x faster than per channel.
    return images
