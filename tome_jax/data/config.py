"""The `data` sub-config: every knob of the input pipeline, with its default.

A recipe sets `config.data = tome_jax.data.default_config()` and overrides fields, or writes the
ConfigDict out in full; `make_dataset` fills in missing fields from the defaults below and rejects
unknown ones, so a typo fails at start instead of being silently ignored.

`kind` says what the examples are: "image" (decoded files or in-memory images, random-resized-cropped
or center-cropped to `image_size`, optionally flipped) or "array" (in-memory arrays of any shape, e.g. a
`[H, W, C]` spectrogram or a `[T, H, W, C]` clip, passed through unchanged). Either way batches leave
the host as uint8 (images) or the source's dtype (arrays); `normalize` maps them to model inputs with
`mean`/`std` inside the jitted step. The channel count is `len(mean)`.

The defaults are the embedded `digits` recipe (runs anywhere, no download). An ImageNet recipe sets
`name="imagenet2012"`, `image_size=224`, `split_eval="validation"`, `crop_scale=(0.08, 1.0)`,
`crop_ratio=(3/4, 4/3)`, `hflip=True`, `crop_pct=0.875` (DeiT) or `0.9` (AugReg), and the mean/std the
weights were trained with.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import ml_collections


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Resolved, validated `data` config (see module docstring and field comments)."""

    # What to read. "digits" (embedded sklearn digits), "imagefolder" (`data_dir/<split>/<class>/*.jpg`)
    # or any TFDS name, e.g. "imagenet2012" or "cifar10", prepared in ArrayRecord format.
    name: str = "digits"
    # TFDS data_dir ("": TFDS default, $TFDS_DATA_DIR or ~/tensorflow_datasets) or the image-folder
    # root. A string, not None, so `--config.data.data_dir=...` can override it.
    data_dir: str = ""
    split_train: str = "train"  # TFDS split syntax works, e.g. "train[:99%]".
    split_eval: str = "test"
    image_key: str = "image"  # TFDS feature names.
    label_key: str = "label"
    verify_images: bool = True  # imagefolder: PIL verify() each file at index time, skip bad ones.
    # What an example is: "image" (cropped, resized, flipped) or "array" (passed through as is).
    kind: str = "image"

    # Geometry and normalization. One mean/std per channel: len(mean) is the channel count (1: gray,
    # 3: RGB; gray sources are repeated to 3 channels, RGB files decoded as gray for 1). Images are in
    # [0, 1] pixel units (timm convention); float arrays are normalized in their own units.
    image_size: int = 32
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    # Resampling of decoded files: "bilinear" | "bicubic" (antialiased, as PIL). In-memory arrays
    # (digits) are always resampled bilinearly, with the same antialiasing as PIL.
    interpolation: str = "bilinear"
    # Decoder and resizer of files: "opencv" (~2x faster per core; within 1/255 of PIL on average),
    # "pil" (PIL itself), or "auto" (opencv when importable, else pil).
    image_backend: str = "auto"

    # Train augmentation: random-resized crop (area fraction, aspect ratio range), then flip. A
    # fraction above 1 zooms out: the image shrinks to a random place in a canvas that repeats its
    # border pixels. In-memory images (digits, where it adds shifts to the zoom) and clips; refused
    # for image files.
    crop_scale: tuple[float, float] = (0.7, 1.0)
    crop_ratio: tuple[float, float] = (0.8, 1.25)
    hflip: bool = False  # Off for digits (a mirrored 2 is not a 2); on for natural images.

    # Eval: square center crop of `crop_pct` x the shorter side, resized to image_size.
    crop_pct: float = 1.0

    # Host-side parallelism (grain). worker_count > 0 adds grain.mp_prefetch worker processes (needs
    # parsed absl flags, as under train.py); a restored iterator state needs the same worker_count.
    # -1: one thread per CPU core this process may use (os.sched_getaffinity), so the pipeline scales
    # with the host. Worker processes measured slower per core than threads (benchmarks/RESULTS.md).
    num_threads: int = -1  # grain ReadOptions.num_threads: batches prepared concurrently per process.
    # -1: 2 x num_threads. grain ReadOptions.prefetch_buffer_size, in batches; >= num_threads, else
    # grain runs only prefetch_batches threads. Host memory ~ prefetch_batches x one batch.
    prefetch_batches: int = -1
    worker_count: int = 0

    # Audio sources ("synthetic_audio", "audiofolder"): a dict of tome_jax.data.audio.AudioConfig fields
    # (front end, clip length, SpecAugment); None for image sources.
    audio: Any = None

    def __post_init__(self):
        if self.image_size <= 0:
            raise ValueError(f"data.image_size must be positive, got {self.image_size}.")
        if self.kind not in ("image", "array"):
            raise ValueError(f"data.kind must be 'image' or 'array', got {self.kind!r}.")
        if not self.mean or len(self.mean) != len(self.std):
            raise ValueError(
                f"data.mean and data.std need one value per channel, the same number each; got "
                f"mean={self.mean}, std={self.std}."
            )
        if self.kind == "image" and self.channels not in (1, 3):
            raise ValueError(
                f"data.kind='image' has 1 (gray) or 3 (RGB) channels, i.e. len(data.mean) in (1, 3); got "
                f"mean={self.mean}. For other channel counts use data.kind='array'."
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"data.std must be positive, got {self.std}.")
        if self.kind == "array" and self.hflip:
            raise ValueError("data.hflip applies to images only; set it False for data.kind='array'.")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1]:
            raise ValueError(f"data.crop_scale must satisfy 0 < lo <= hi, got {self.crop_scale}.")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"data.crop_ratio must satisfy 0 < lo <= hi, got {self.crop_ratio}.")
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"data.crop_pct must be in (0, 1], got {self.crop_pct}.")
        if self.interpolation not in ("bilinear", "bicubic"):
            raise ValueError(
                f"data.interpolation must be 'bilinear' or 'bicubic', got {self.interpolation!r}."
            )
        if self.image_backend not in ("auto", "opencv", "pil"):
            raise ValueError(
                f"data.image_backend must be 'auto', 'opencv' or 'pil', got {self.image_backend!r}."
            )
        if self.num_threads < -1 or self.prefetch_batches < -1 or self.worker_count < 0:
            raise ValueError(
                "data.num_threads and data.prefetch_batches must be >= 0 or -1 (auto), data.worker_count "
                f">= 0; got {self.num_threads}, {self.prefetch_batches}, {self.worker_count}."
            )

    @property
    def channels(self) -> int:
        """Channels of the model input: len(mean)."""
        return len(self.mean)

    def read_parallelism(self) -> tuple[int, int]:
        """(num_threads, prefetch_batches) with -1 resolved from this host's usable cores."""
        threads = self.num_threads if self.num_threads >= 0 else usable_cores()
        prefetch = self.prefetch_batches if self.prefetch_batches >= 0 else max(2 * threads, 1)
        return threads, prefetch


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask; os.cpu_count() where that is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


_TUPLE_FIELDS = ("mean", "std", "crop_scale", "crop_ratio")


def default_config() -> ml_collections.ConfigDict:
    """The defaults of `DataConfig` as a ConfigDict, ready to be overridden by a recipe."""
    return ml_collections.ConfigDict(dataclasses.asdict(DataConfig()))


def resolve_config(cfg: Mapping[str, Any] | ml_collections.ConfigDict | DataConfig | None) -> DataConfig:
    """Defaults + `cfg` -> DataConfig. Raises ValueError on fields `DataConfig` does not have."""
    if isinstance(cfg, DataConfig):
        return cfg
    if cfg is None:
        return DataConfig()
    values = cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else dict(cfg)
    known = {f.name for f in dataclasses.fields(DataConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"Unknown data config field(s) {unknown}; known fields: {sorted(known)}.")
    if values.get("data_dir") is None:
        values.pop("data_dir", None)
    for key in _TUPLE_FIELDS:
        if key in values:
            values[key] = tuple(float(v) for v in values[key])
    return DataConfig(**values)
