"""`ArraySource`: in-memory examples of any shape, batched as stored (no crop, resize or flip).

For inputs that are already model-shaped: a spectrogram `[N, H, W, C]`, a clip `[N, T, H, W, C]`, ...
The device sees the stored dtype (uint8 read as x / 255, float in its own units) and normalizes it
with data.mean/std, one value per channel (last axis).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tome_jax.data.config import DataConfig
from tome_jax.data.registry import Batch


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySource:
    """examples: uint8 or float32 [N, ..., C]; labels: [N] (int) or [N, K] (multi-hot)."""

    examples: np.ndarray
    labels: np.ndarray
    num_classes: int

    def __post_init__(self):
        examples = self.examples
        if not isinstance(examples, np.ndarray) or examples.dtype not in (np.uint8, np.float32):
            raise TypeError(
                "ArraySource.examples must be a uint8 or float32 NumPy array, got "
                f"{getattr(examples, 'dtype', type(examples))}; convert it with np.asarray(x, np.float32)."
            )
        if examples.ndim < 2 or len(examples) != len(self.labels):
            raise ValueError(
                f"ArraySource needs examples [N, ..., C] and labels [N]; got shapes {examples.shape} and "
                f"{np.shape(self.labels)}."
            )

    def __len__(self) -> int:
        return len(self.labels)

    def batch_reader(self, cfg: DataConfig) -> PassThrough:
        return PassThrough(self, cfg)


class PassThrough:
    """ids -> the stored examples [b, ...] and labels, unchanged (train and eval alike)."""

    def __init__(self, source: ArraySource, cfg: DataConfig):
        channels = source.examples.shape[-1]
        if channels != cfg.channels:
            raise ValueError(
                f"ArraySource examples {source.examples.shape[1:]} have {channels} channels (last axis) but "
                f"data.mean/std have {cfg.channels} values; set one mean and std per channel."
            )
        if cfg.hflip:
            raise ValueError("data.hflip applies to image sources only; set it False for an ArraySource.")
        self.source = source

    def __call__(self, ids: np.ndarray, *, epoch: np.ndarray | None = None, seed: int = 0) -> Batch:
        labels = self.source.labels[ids]
        labels = labels.astype(np.int32) if labels.ndim == 1 else labels
        return {"image": self.source.examples[ids], "label": labels, "mask": np.ones(len(ids), bool)}
