"""Clip sources: examples `[T, H, W, C]` instead of images, batched as uint8 `[b, T, S, S, C]`.

- "moving_digits" (`MovingDigitsSource`, options: frames, speed): the embedded sklearn digits moving
  over a canvas of data.image_size that wraps around (a torus), in memory, no download. Label = digit
  * 4 + direction (right, left, down, up): 40 classes. On a torus every position is equally likely
  whatever the direction, so one frame says nothing about the direction: a single-frame model is
  capped at 1/4 of its digit accuracy (<= 25%); telling the direction needs two frames or more.
- "clipfolder" (`ClipFolderSource`, options: frames, stride): `data_dir/<split>/<class>/*.npy`, each
  a decoded clip uint8 [F, H, W, 3] (e.g. Kinetics-400 decoded at 30 fps, shorter side ~320); T
  frames taken every S-th.

Clips leave the host as uint8 pixels, like images (gray repeated to len(data.mean) channels), and
are normalized on device with data.mean/std. Train randomness is keyed on (seed, epoch, id):
moving digits draw a fresh direction and start position; clip folders take a random temporal window
(uniform start) and one random-resized crop shared by all frames. Eval takes the centered window
and center crop (clip folders) or a start fixed by the record id (moving digits).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from tome_jax.data import transforms
from tome_jax.data.config import DataConfig
from tome_jax.data.images import DIGITS_SPLIT_SEED, load_digits
from tome_jax.data.registry import Batch, DatasetNotFoundError, register_source

# (dy, dx) per frame: right, left, down, up.
DIRECTIONS = np.asarray([(0, 1), (0, -1), (1, 0), (-1, 0)], np.int64)
DIRECTION_NAMES = ("right", "left", "down", "up")


@dataclasses.dataclass(frozen=True)
class MovingDigitsOptions:
    frames: int = 8  # T
    speed: int = 1  # pixels per frame

    def __post_init__(self):
        if self.frames < 1 or self.speed < 1:
            raise ValueError(f"data.options: moving_digits needs frames >= 1 and speed >= 1, got {self}.")


@dataclasses.dataclass(frozen=True)
class ClipFolderOptions:
    frames: int = 16  # T
    stride: int = 4  # take every stride-th frame

    def __post_init__(self):
        if self.frames < 1 or self.stride < 1:
            raise ValueError(f"data.options: clipfolder needs frames >= 1 and stride >= 1, got {self}.")


class ClipBatches:
    """A clip source's ids -> {"image": uint8 [b, T, S, S, C], "label": int32 [b], "mask": bool [b]}.

    The source gives `load(ids)` (eval) and `load_train(ids, epoch, seed)`, each -> (uint8 clips
    [b, T, S, S, 1 or C], labels [b]); gray is repeated to C = len(data.mean)."""

    def __init__(self, source, cfg: DataConfig):
        self.source, self.channels = source, cfg.channels

    def __call__(self, ids: np.ndarray, *, epoch: np.ndarray | None = None, seed: int = 0) -> Batch:
        clips, labels = self.source.load(ids) if epoch is None else self.source.load_train(ids, epoch, seed)
        if clips.shape[-1] != self.channels:
            clips = np.repeat(clips, self.channels, axis=-1)
        return {"image": clips, "label": np.asarray(labels, np.int32), "mask": np.ones(len(ids), bool)}


class MovingDigitsSource:
    """Embedded digits moving `speed` px per frame over a `canvas` x `canvas` torus, `num_frames` frames.

    Eval (`load`): record i is digit i // 4 moving in direction i % 4 from a start fixed by i.
    Train (`load_train`): digit i // 4; direction and start drawn from (seed, epoch, i).
    The digits' ink (k / 16) is stored as uint8 pixels round(255 k / 16), as the image digits are.
    """

    def __init__(self, split: str, *, num_frames: int = 8, canvas: int = 16, speed: int = 1):
        digits = load_digits(split)
        if canvas < digits.images.shape[1]:
            raise ValueError(f"canvas={canvas} is smaller than the 8x8 digits.")
        self.num_frames, self.canvas, self.speed = num_frames, canvas, speed
        self.digits = transforms.to_uint8(digits.images[..., 0])  # uint8 [N, 8, 8]
        self.digit_labels = digits.labels  # [N]
        self.num_classes = 10 * len(DIRECTIONS)

    def batch_reader(self, cfg: DataConfig) -> ClipBatches:
        return ClipBatches(self, cfg)

    def __len__(self) -> int:
        return 4 * len(self.digit_labels)

    def load(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ids [b] -> (clips uint8 [b, T, S, S, 1], labels int32 [b]); deterministic."""
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
        base = np.zeros((b, size, size), np.uint8)
        base[:, :8, :8] = self.digits[digit]
        start = np.minimum((u * size).astype(np.int64), size - 1)  # [b, 2]
        steps = np.arange(self.num_frames)[None, :, None] * self.speed * DIRECTIONS[direction][:, None, :]
        shift = start[:, None, :] + steps  # [b, T, 2]: where the digit's corner is in each frame
        rows = (np.arange(size)[None, None, :] - shift[..., :1]) % size  # [b, T, S]
        cols = (np.arange(size)[None, None, :] - shift[..., 1:]) % size
        clips = base[np.arange(b)[:, None, None, None], rows[..., :, None], cols[..., None, :]]
        labels = (self.digit_labels[digit] * 4 + direction).astype(np.int32)
        return clips[..., None], labels


class ClipFolderSource:
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
        self.num_frames, self.stride, self.cfg = num_frames, stride, cfg
        self.num_classes = len(self.classes)

    def batch_reader(self, cfg: DataConfig) -> ClipBatches:
        return ClipBatches(self, cfg)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centered window and center crop: ids [b] -> (clips uint8 [b, T, S, S, 3], labels)."""
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
            out.append(transforms.to_uint8(transforms.crop_resize(frames, box, cfg.image_size), 1.0))
        return np.stack(out), self.labels[np.asarray(ids)]


def temporal_window(available: int, frames: int, stride: int, u: float | None) -> np.ndarray:
    """Indices of `frames` frames every `stride`-th from a clip of `available` frames: starting at
    u * (free room) for a random window, centered when u is None; indices past the end repeat the
    last frame (short clips)."""
    span = (frames - 1) * stride + 1
    room = max(available - span, 0)
    start = room // 2 if u is None else int(u * (room + 1))
    return np.minimum(start + stride * np.arange(frames), available - 1)


@register_source("moving_digits", options=MovingDigitsOptions)
def _moving_digits(cfg: DataConfig, split: str) -> MovingDigitsSource:
    return MovingDigitsSource(split, num_frames=cfg.options.frames, canvas=cfg.image_size, speed=cfg.options.speed)


@register_source("clipfolder", options=ClipFolderOptions)
def _clip_folder(cfg: DataConfig, split: str) -> ClipFolderSource:
    if not cfg.data_dir:
        raise ValueError("data.name='clipfolder' needs data.data_dir (the folder holding the splits).")
    return ClipFolderSource(os.path.join(cfg.data_dir, split), num_frames=cfg.options.frames,
                            stride=cfg.options.stride, cfg=cfg)


def describe(labels: Sequence[int]) -> list[str]:
    """Moving-digits labels -> "3 left" etc. (for reports)."""
    return [f"{int(k) // 4} {DIRECTION_NAMES[int(k) % 4]}" for k in labels]
