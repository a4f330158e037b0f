"""Clip sources and clip transforms: examples `[T, H, W, C]` instead of images.

- `MovingDigitsSource` ("moving_digits[:T]"): the embedded sklearn digits moving over a canvas that
  wraps around (a torus), in memory, no download. Label = digit * 4 + direction (right, left, down,
  up): 40 classes. On a torus every position is equally likely whatever the direction, so one frame
  says nothing about the direction: a single-frame model is capped at 1/4 of its digit accuracy
  (<= 25%); telling the direction needs two frames or more.
- `ClipFolderSource` ("clipfolder:TxS"): `data_dir/<split>/<class>/*.npy`, each a decoded clip uint8
  [F, H, W, 3] (e.g. Kinetics-400 decoded at 30 fps, shorter side ~320); T frames taken every S-th.

Both are random-access sources that build their own batches (`make_batch`, the pipeline's hook): float32
[b, T, H, W, C] in [0, 1] (normalized on device like images), instead of the image crop/resize. Train randomness is keyed on (seed, epoch, id) as for images.
Temporal augmentation: moving digits draw a fresh direction and start position per (seed, epoch, id);
clip folders take a random temporal window (uniform start) and one random-resized crop shared by
all frames; eval takes the centered window and center crop.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from tome_jax.data import transforms
from tome_jax.data.config import DataConfig
from tome_jax.data.sources import DIGITS_SPLIT_SEED, DatasetNotFoundError, load_digits

# (dy, dx) per frame: right, left, down, up.
DIRECTIONS = np.asarray([(0, 1), (0, -1), (1, 0), (-1, 0)], np.int64)
DIRECTION_NAMES = ("right", "left", "down", "up")
CLIP_SOURCES = ("moving_digits", "clipfolder")


def parse_clip_name(name: str) -> tuple[str, int, int]:
    """"moving_digits" | "moving_digits:8" | "clipfolder:16x4" -> (kind, frames, stride)."""
    kind, _, spec = name.partition(":")
    frames, _, stride = (spec or ("8" if kind == "moving_digits" else "16x4")).partition("x")
    try:
        frames, stride = int(frames), int(stride or 1)
    except ValueError:
        raise ValueError(f"data.name={name!r}: write the clip as '{kind}:T' or '{kind}:TxS' (T frames, every "
                         "S-th frame), e.g. 'moving_digits:8' or 'clipfolder:16x4'.") from None
    if kind not in CLIP_SOURCES or frames < 1 or stride < 1:
        raise ValueError(f"data.name={name!r}: expected one of {CLIP_SOURCES} with T >= 1 frames, S >= 1.")
    return kind, frames, stride


# ----------------------------------------------------------------------------- batches (the pipeline's hook)


class _ClipBatches:
    """`make_batch`: the pipeline's hook for sources that build their own batches (clips, audio).

    Clips leave the host as float32 in [0, 1], gray repeated to `channels`; the jitted step
    normalizes them with data.mean/std like every other input."""

    channels = 3

    def make_batch(self, ids: np.ndarray, *, train: bool, seed: int, epoch: np.ndarray) -> dict:
        """ids int [b] -> {"image": float32 [b, T, H, W, C] in [0, 1], "label": int32 [b], "mask": bool [b]}."""
        clips, labels = self.load_train(ids, epoch, seed) if train else self.load(ids)
        if clips.shape[-1] != self.channels:
            clips = np.repeat(clips, self.channels, axis=-1)
        return {"image": clips, "label": np.asarray(labels, np.int32), "mask": np.ones(len(ids), bool)}


class MovingDigitsSource(_ClipBatches):
    """Embedded digits moving `speed` px per frame over a `canvas` x `canvas` torus, `num_frames` frames.

    Eval (`load`): record i is digit i // 4 moving in direction i % 4 from a start fixed by i.
    Train (`load_train`): digit i // 4; direction and start drawn from (seed, epoch, i).
    """

    def __init__(self, split: str, *, num_frames: int = 8, canvas: int = 16, speed: int = 1, channels: int = 3):
        digits = load_digits(split)
        if canvas < digits.images.shape[1]:
            raise ValueError(f"canvas={canvas} is smaller than the 8x8 digits.")
        self.num_frames, self.canvas, self.speed, self.channels = num_frames, canvas, speed, channels
        self.digits, self.digit_labels = digits.images[..., 0], digits.labels  # [N, 8, 8], [N]
        self.num_classes = 10 * len(DIRECTIONS)

    def __len__(self) -> int:
        return 4 * len(self.digit_labels)

    def load(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ids [b] -> (clips float32 [b, T, S, S, 1] in [0, 1], labels int32 [b]); deterministic."""
        ids = np.asarray(ids, np.int64)
        u = transforms.uniforms(DIGITS_SPLIT_SEED, np.zeros_like(ids), ids, 2)
        return self.render(ids // 4, ids % 4, u)

    def load_train(self, ids: np.ndarray, epoch: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """ids, epoch [b] -> (clips [b, T, S, S, 1], labels [b]) with a random direction and start."""
        ids = np.asarray(ids, np.int64)
        u = transforms.uniforms(seed, epoch, ids, 3)
        return self.render(ids // 4, np.minimum((u[:, 2] * 4).astype(np.int64), 3), u[:, :2])

    def render(self, digit: np.ndarray, direction: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """digit, direction: int [b]; u: [b, 2] uniforms for the start (y, x) -> (clips, labels)."""
        b, size = len(digit), self.canvas
        base = np.zeros((b, size, size), np.float32)
        base[:, :8, :8] = self.digits[digit]
        start = np.minimum((u * size).astype(np.int64), size - 1)  # [b, 2]
        steps = np.arange(self.num_frames)[None, :, None] * self.speed * DIRECTIONS[direction][:, None, :]
        shift = start[:, None, :] + steps  # [b, T, 2]: where the digit's corner is in each frame
        rows = (np.arange(size)[None, None, :] - shift[..., :1]) % size  # [b, T, S]
        cols = (np.arange(size)[None, None, :] - shift[..., 1:]) % size
        clips = base[np.arange(b)[:, None, None, None], rows[..., :, None], cols[..., None, :]]
        labels = (self.digit_labels[digit] * 4 + direction).astype(np.int32)
        return clips[..., None], labels


class ClipFolderSource(_ClipBatches):
    """Decoded clips `root/<class>/*.npy` (uint8 [F, H, W, 3]); classes sorted -> labels 0, 1, ..."""

    def __init__(self, root: str, *, num_frames: int, stride: int, cfg: DataConfig):
        if not os.path.isdir(root):
            raise DatasetNotFoundError(
                f"clip folder {root!r} does not exist. Expected <data_dir>/<split>/<class>/<clip>.npy, each a "
                "decoded clip uint8 [frames, H, W, 3] (decode Kinetics-400 once, e.g. with PyAV), or run the "
                "':runlocal' variant, which trains on the embedded moving digits.")
        self.classes = tuple(sorted(e.name for e in os.scandir(root) if e.is_dir()))
        paths, labels = [], []
        for label, name in enumerate(self.classes):
            for file in sorted(os.listdir(os.path.join(root, name))):
                if file.endswith(".npy"):
                    paths.append(os.path.join(root, name, file))
                    labels.append(label)
        if not paths:
            raise DatasetNotFoundError(f"no .npy clips under {root!r} (classes found: {self.classes}).")
        self.paths, self.labels = tuple(paths), np.asarray(labels, np.int32)
        self.num_frames, self.stride, self.cfg, self.channels = num_frames, stride, cfg, cfg.channels
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centered window and center crop: ids [b] -> (clips float32 [b, T, S, S, 3] in [0, 1], labels)."""
        return self._load(ids, None)

    def load_train(self, ids: np.ndarray, epoch: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Random window and random-resized crop (shared by the frames), from (seed, epoch, id)."""
        return self._load(ids, transforms.uniforms(seed, epoch, ids, 5))

    def _load(self, ids, u):
        cfg, out = self.cfg, []
        for k, i in enumerate(ids):
            clip = np.load(self.paths[i], mmap_mode="r")
            frames = clip[temporal_window(len(clip), self.num_frames, self.stride, None if u is None else u[k, 4])]
            h, w = np.full(1, frames.shape[1]), np.full(1, frames.shape[2])
            box = (transforms.center_crop_boxes(h, w, cfg.crop_pct) if u is None else
                   transforms.random_resized_crop_boxes(u[k:k + 1, :4], h, w, cfg.crop_scale, cfg.crop_ratio))
            box = np.repeat(box, len(frames), axis=0)
            out.append(transforms.crop_resize(np.asarray(frames, np.float32) / 255.0, box, cfg.image_size))
        return np.stack(out), self.labels[np.asarray(ids)]


def temporal_window(available: int, frames: int, stride: int, u: float | None) -> np.ndarray:
    """Indices of `frames` frames every `stride`-th from a clip of `available` frames: starting at
    u * (free room) for a random window, centered when u is None; indices past the end repeat the
    last frame (short clips)."""
    span = (frames - 1) * stride + 1
    room = max(available - span, 0)
    start = room // 2 if u is None else int(u * (room + 1))
    return np.minimum(start + stride * np.arange(frames), available - 1)


def make_clip_source(cfg: DataConfig, split: str):
    kind, frames, stride = parse_clip_name(cfg.name)
    if kind == "moving_digits":
        return MovingDigitsSource(split, num_frames=frames, canvas=cfg.image_size, speed=stride,
                                  channels=cfg.channels)
    if not cfg.data_dir:
        raise ValueError("data.name='clipfolder:...' needs data.data_dir (the folder holding the splits).")
    return ClipFolderSource(os.path.join(cfg.data_dir, split), num_frames=frames, stride=stride, cfg=cfg)


def describe(labels: Sequence[int]) -> list[str]:
    """Moving-digits labels -> "3 left" etc. (for reports)."""
    return [f"{int(k) // 4} {DIRECTION_NAMES[int(k) % 4]}" for k in labels]
