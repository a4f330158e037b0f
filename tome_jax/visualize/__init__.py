"""See what ToMe merged: the final token groups drawn on an image or on every frame of a clip.

The library (this module) draws; the command line is `python -m tome_jax.visualize`
(`tome_jax/visualize/cli.py`, run by `__main__.py`).

Each group (the patches one final token stands for, read from the model's source matrix
`info["source"]` [B, T', T]) is filled with its mean colour, with outlines between groups. `--image` is a
path or a scikit-image sample name (no download; `--list-samples`). Greyscale and RGBA images are
converted to RGB and other sizes are centre-cropped to the input's aspect ratio and resized to it (any
(H, W): square or not), each with a note.

From Python: `merged_image(model, image)` (one picture), `merge_grid(model, image, layers=...)` or
`r_values=...` (a figure), and for clips (frames are an axis: [T, H, W, C], a source over
(T / tubelet) * h * w patches) `draw_clip(clip, source, ...)`, `save_strip` and `save_gif`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from tome_jax.models.compiled import CompiledForward

SAMPLES = (  # scikit-image sample images shipped inside the wheel (no download)
    "astronaut", "brick", "camera", "cat", "chelsea", "checkerboard", "clock", "coffee", "coins",
    "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo",
    "microaneurysms", "moon", "page", "retina", "rocket", "text",
)
OUTLINE = (255, 255, 255)


# ----------------------------------------------------------------------------- images in


def load_image(path_or_sample: str) -> tuple[np.ndarray, list[str]]:
    """An image file or a scikit-image sample name -> (RGB uint8 [H, W, 3], notes on conversions)."""
    if os.path.exists(path_or_sample):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path_or_sample) as im:
                image = np.asarray(im)
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"cannot read {path_or_sample!r} as an image ({e}); pass a PNG/JPEG file "
                             f"or a sample name: {', '.join(SAMPLES)}.") from None
    elif path_or_sample in SAMPLES:
        import skimage.data

        image = getattr(skimage.data, path_or_sample)()
    elif os.sep in path_or_sample or os.path.splitext(path_or_sample)[1]:
        raise ValueError(f"no such image file {path_or_sample!r}; pass an existing PNG/JPEG path or a "
                         f"scikit-image sample name: {', '.join(SAMPLES)}.")
    else:
        raise ValueError(f"unknown sample {path_or_sample!r} (and no such file); samples: {', '.join(SAMPLES)}.")
    return to_rgb(image)


def to_rgb(image: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """[H, W], [H, W, 1|2|3|4] of any numeric dtype -> (RGB uint8 [H, W, 3], notes)."""
    image = np.asarray(image)
    notes = []
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.dtype != np.uint8:
        lo, hi = float(image.min()), float(image.max())
        scale = 1.0 if (lo >= 0 and hi <= 1.0) else 255.0 if (lo >= 0 and hi <= 255) else None
        if scale is None:
            image = (image - lo) / max(hi - lo, 1e-12)
            notes.append(f"rescaled values from [{lo:g}, {hi:g}] to [0, 255]")
            scale = 1.0
        image = np.clip(np.round(image / scale * 255), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"expected an image [H, W], [H, W, 3] or [H, W, 4], got shape {image.shape}.")
    if image.shape[-1] in (2, 4):  # grey+alpha or RGBA: composite on white
        alpha = image[..., -1:].astype(np.float32) / 255
        color = image[..., :-1].astype(np.float32)
        image = np.round(color * alpha + 255 * (1 - alpha)).astype(np.uint8)
        notes.append("dropped the alpha channel (composited on white)")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
        notes.append("converted greyscale to RGB")
    return image, notes


def fit_to_model(image: np.ndarray, size: int | tuple[int, int]) -> tuple[np.ndarray, list[str]]:
    """RGB uint8 [H, W, 3] -> [h, w, 3] for the model's input `size` (an int or (h, w)): centre-crop to
    the input's aspect ratio, then resize."""
    from skimage.transform import resize

    out_h, out_w = (size, size) if isinstance(size, int) else tuple(size)
    h, w = image.shape[:2]
    if (h, w) == (out_h, out_w):
        return image, []
    crop_h, crop_w = min(h, round(w * out_h / out_w)), min(w, round(h * out_w / out_h))
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    notes = []
    if (crop_h, crop_w) != (h, w):
        image = image[top:top + crop_h, left:left + crop_w]
        notes.append(f"centre-cropped {h}x{w} to {crop_h}x{crop_w}")
    if (crop_h, crop_w) != (out_h, out_w):
        image = resize(image, (out_h, out_w), order=3, anti_aliasing=crop_h > out_h, preserve_range=True)
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)
        notes.append(f"resized to the model's {out_h}x{out_w} (create the model with img_size=... "
                     "to keep more detail)")
    return image, notes


def normalize(image: np.ndarray, model) -> np.ndarray:
    """RGB uint8 [..., H, W, 3] -> float32, normalized with the model's mean/std (pretrained_cfg)."""
    cfg = model.pretrained_cfg
    mean = np.asarray(cfg.get("mean", (0.5, 0.5, 0.5)), np.float32)
    std = np.asarray(cfg.get("std", (0.5, 0.5, 0.5)), np.float32)
    return (image.astype(np.float32) / 255 - mean) / std


# ----------------------------------------------------------------------------- groups


def source_after(model, images: np.ndarray, *, r: Any = None, layer: int | None = None) -> np.ndarray:
    """Source matrix [B, T', T] of `model` on normalized images [B, H, W, C] (0/1 rows: which input
    tokens each output token stands for), after `layer` blocks (None: all). r=None uses `model.r`.

    Source tracing is switched on for the call if the model was built without it; `model.r` and
    `model.trace_source` are restored afterwards. One jitted forward per schedule (`CompiledForward`).
    """
    saved_r, saved_trace = model.r, model.trace_source
    try:
        if r is not None:
            model.r = r
        if layer is not None:
            if not 0 <= layer <= model.depth:
                raise ValueError(f"layer must be in [0, {model.depth}] (blocks done), got {layer}.")
            schedule = list(model.r_per_layer)
            model.r = schedule[:layer] + [0] * (model.depth - layer)
        model.trace_source = True
        source = CompiledForward(model, _source)(jnp.asarray(images))
    finally:
        model.r, model.trace_source = saved_r, saved_trace
    return np.asarray(source)


def _source(model, images):
    source = model(images, return_info=True)[1]["source"]
    if source is None:  # no block merged: every token is its own group
        tokens = model.num_prefix_tokens + model.num_patches
        source = jnp.broadcast_to(jnp.eye(tokens), (images.shape[0], tokens, tokens))
    return source


def patch_labels(source: np.ndarray, *, num_prefix_tokens: int, grid: tuple[int, ...]) -> np.ndarray:
    """Source [T', T] (prefix tokens first, then patches row-major; for clips time-major) ->
    labels [*grid] (e.g. [h, w] or [t, h, w]): 0..G-1, one per output token that holds patches,
    numbered in the order of the output tokens. Raises unless every patch is in exactly one token.
    """
    patches = np.asarray(source)[:, num_prefix_tokens:] > 0.5
    if patches.shape[1] != int(np.prod(grid)):
        raise ValueError(f"source has {patches.shape[1]} patch columns (after {num_prefix_tokens} prefix "
                         f"tokens) but the grid {tuple(grid)} has {int(np.prod(grid))} patches.")
    owners = patches.sum(axis=0)
    if not np.all(owners == 1):
        bad = int(np.argmax(owners != 1))
        raise ValueError(f"patch {bad} belongs to {owners[bad]} output tokens; a source from merge_source "
                         "assigns every patch to exactly one.")
    token = patches.argmax(axis=0)
    _, labels = np.unique(token, return_inverse=True)
    return labels.reshape(grid)


def draw_groups(image: np.ndarray, labels: np.ndarray, *, fill: str = "mean", outline=OUTLINE,
                seed: int = 0) -> np.ndarray:
    """Fill each group with one colour and outline the groups.

    image: RGB uint8 [..., H, W, 3]; labels: int [..., h, w] with H, W multiples of h, w (one label
    per patch; leading axes such as frames are shared, so a group spanning frames gets one colour).
    fill: "mean" (the group's mean colour over all its pixels) or "random" (a distinct colour per
    group). outline: RGB of the 1-pixel borders between groups, or None. Returns uint8 [..., H, W, 3].
    """
    pixels = pixel_labels(labels, image.shape[-3:-1])
    num = int(pixels.max()) + 1
    flat = pixels.reshape(-1)
    if fill == "mean":
        counts = np.bincount(flat, minlength=num)[:, None]
        sums = np.stack([np.bincount(flat, image[..., c].reshape(-1).astype(np.float64), minlength=num)
                         for c in range(3)], axis=-1)
        colors = np.round(sums / np.maximum(counts, 1)).astype(np.uint8)
    elif fill == "random":
        colors = np.random.default_rng(seed).integers(40, 256, (num, 3)).astype(np.uint8)
    else:
        raise ValueError(f"fill must be 'mean' or 'random', got {fill!r}.")
    out = colors[pixels]
    if outline is not None:
        out[boundaries(pixels)] = np.asarray(outline, np.uint8)
    return out


def pixel_labels(labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Patch labels [..., h, w] -> pixel labels [..., H, W] (each patch's label over its pixels)."""
    h, w = labels.shape[-2:]
    if hw[0] % h or hw[1] % w:
        raise ValueError(f"image {hw[0]}x{hw[1]} is not a whole number of {h}x{w} patches.")
    return np.repeat(np.repeat(labels, hw[0] // h, axis=-2), hw[1] // w, axis=-1)


def boundaries(pixels: np.ndarray) -> np.ndarray:
    """bool [..., H, W]: pixels whose label differs from the pixel above or to the left."""
    edge = np.zeros(pixels.shape, bool)
    edge[..., 1:, :] |= pixels[..., 1:, :] != pixels[..., :-1, :]
    edge[..., :, 1:] |= pixels[..., :, 1:] != pixels[..., :, :-1]
    return edge


@dataclasses.dataclass
class Merged:
    """One visualization: `picture` [H, W, 3] uint8, `image` the model's view of the input [H, W, 3],
    `labels` [h, w] (group of each patch), `num_tokens` (groups = final patch tokens), `notes`."""

    picture: np.ndarray
    image: np.ndarray
    labels: np.ndarray
    num_tokens: int
    notes: list[str]


def prepare(model, image) -> tuple[np.ndarray, list[str]]:
    """A path, sample name or array -> (RGB uint8 [H, W, 3] at the model's img_size, notes)."""
    if isinstance(image, str):
        image, notes = load_image(image)
    else:
        image, notes = to_rgb(image)
    image, more = fit_to_model(image, model.img_size)
    return image, notes + more


def merged_image(model, image, *, r: Any = None, layer: int | None = None, fill: str = "mean") -> Merged:
    """The final token groups of `model` (at schedule r, after `layer` blocks) drawn on `image`
    (path, sample name, or array [H, W] / [H, W, 3|4])."""
    rgb, notes = prepare(model, image)
    source = source_after(model, normalize(rgb, model)[None], r=r, layer=layer)[0]
    labels = patch_labels(source, num_prefix_tokens=model.num_prefix_tokens, grid=model.grid_size)
    # The pixels the patches read (a side that is not a whole number of patches loses its last rows /
    # columns, as big_vision's So400m/14 at 384 px).
    rgb = rgb[:model.grid_size[0] * model.patch_size, :model.grid_size[1] * model.patch_size]
    picture = draw_groups(rgb, labels, fill=fill)
    return Merged(picture, rgb, labels, int(labels.max()) + 1, notes)


def merge_grid(model, image, *, r: Any = None, layers: Sequence[int] | None = None,
               r_values: Sequence[Any] | None = None, fill: str = "mean", columns: int | None = None):
    """A matplotlib figure: the input, then the groups after each of `layers` (at schedule r) or at
    each of `r_values` (after the last layer). Returns (figure, [Merged, ...])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if (layers is None) == (r_values is None):
        raise ValueError("pass exactly one of layers=[...] or r_values=[...].")
    if layers is not None:
        results = [merged_image(model, image, r=r, layer=L, fill=fill) for L in layers]
        titles = [f"after layer {L}: {m.num_tokens} tokens" for L, m in zip(layers, results)]
    else:
        results = [merged_image(model, image, r=value, fill=fill) for value in r_values]
        titles = [f"r={value}: {m.num_tokens} tokens" for value, m in zip(r_values, results)]
    panels = [results[0].image] + [m.picture for m in results]
    titles = ["input"] + titles
    columns = columns or len(panels)
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, panel, title in zip(axes.flat, panels, titles):
        ax.imshow(panel)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig, results


# ----------------------------------------------------------------------------- clips


def draw_clip(clip: np.ndarray, source: np.ndarray, *, patch_size: int, num_prefix_tokens: int = 0,
              tubelet: int = 1, fill: str = "random", outline=OUTLINE) -> tuple[np.ndarray, np.ndarray]:
    """Groups of a video model drawn on every frame, one colour per token across frames.

    clip: [T, H, W, C] (any dtype accepted by `to_rgb`, per frame); source: [T', P + num_prefix_tokens]
    with P = (T / tubelet) * (H / patch) * (W / patch) patches, time-major then row-major.
    Returns (frames uint8 [T, H, W, 3], labels [T, h, w]). fill="random" (default) gives distinct
    colours, so a token spanning frames shows as the same colour in each of them.
    """
    clip = np.asarray(clip)
    if clip.ndim not in (3, 4):
        raise ValueError(f"expected a clip [T, H, W, C] or [T, H, W], got shape {clip.shape}.")
    frames = np.stack([to_rgb(f)[0] for f in clip])
    t, h, w = frames.shape[:3]
    if t % tubelet or h % patch_size or w % patch_size:
        raise ValueError(f"clip {t}x{h}x{w} is not a whole number of {tubelet}x{patch_size}x{patch_size} "
                         "tubelets; crop or resize it first.")
    grid = (t // tubelet, h // patch_size, w // patch_size)
    labels = np.repeat(patch_labels(source, num_prefix_tokens=num_prefix_tokens, grid=grid), tubelet, axis=0)
    return draw_groups(frames, labels, fill=fill, outline=outline), labels


def spanning_tokens(labels: np.ndarray) -> int:
    """Number of groups in labels [T, h, w] that cover more than one frame."""
    per_frame = [set(np.unique(frame).tolist()) for frame in labels]
    seen = {}
    for frame in per_frame:
        for g in frame:
            seen[g] = seen.get(g, 0) + 1
    return sum(count > 1 for count in seen.values())


def save_png(picture: np.ndarray, path: str, *, scale: int = 1) -> str:
    """Write uint8 [H, W, 3] as a PNG, each pixel repeated `scale` times per side."""
    from PIL import Image

    picture = np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1) if scale > 1 else picture
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(np.ascontiguousarray(picture)).save(path, optimize=True)
    return path


def save_strip(frames: np.ndarray, path: str, *, gap: int = 4, scale: int = 1) -> str:
    """Frames uint8 [T, H, W, 3] side by side (white gaps) as one PNG."""
    t, h, w, _ = frames.shape
    strip = np.full((h, t * w + (t - 1) * gap, 3), 255, np.uint8)
    for i, frame in enumerate(frames):
        strip[:, i * (w + gap):i * (w + gap) + w] = frame
    return save_png(strip, path, scale=scale)


def save_gif(frames: np.ndarray, path: str, *, fps: float = 4.0, scale: int = 1) -> str:
    """Frames uint8 [T, H, W, 3] as a looping animated GIF (the encoder keeps one of identical
    consecutive frames and shows it for their summed duration)."""
    from PIL import Image

    if scale > 1:
        frames = np.repeat(np.repeat(frames, scale, axis=1), scale, axis=2)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path
