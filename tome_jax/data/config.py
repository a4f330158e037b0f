"""The `data` sub-config: every knob of the input pipeline, with its default.

A recipe sets `config.data = tome_jax.data.default_config()` and overrides fields, or writes the
ConfigDict out in full; `make_dataset` fills in missing fields from the defaults below and rejects
unknown ones, so a typo fails at start instead of being silently ignored.

The defaults are the embedded `digits` recipe (runs anywhere, no download). An ImageNet recipe sets
`name="imagenet2012"`, `image_size=224`, `split_eval="validation"`, `crop_scale=(0.08, 1.0)`,
`crop_ratio=(3/4, 4/3)`, `hflip=True`, `crop_pct=0.875` (DeiT) or `0.9` (AugReg), and the mean/std the
weights were trained with.
"""

from __future__ import annotations

import dataclasses
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

    # Geometry and normalization. mean/std are in [0, 1] pixel units (timm convention).
    image_size: int = 32
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    # PIL resampling of decoded files: "bilinear" | "bicubic". In-memory arrays (digits) are always
    # resampled bilinearly, with the same antialiasing as PIL.
    interpolation: str = "bilinear"

    # Train augmentation: random-resized crop (area fraction, aspect ratio range), then flip.
    crop_scale: tuple[float, float] = (0.7, 1.0)
    crop_ratio: tuple[float, float] = (0.8, 1.25)
    hflip: bool = False  # Off for digits (a mirrored 2 is not a 2); on for natural images.

    # Eval: square center crop of `crop_pct` x the shorter side, resized to image_size.
    crop_pct: float = 1.0

    # Host-side parallelism (grain). worker_count > 0 adds grain.mp_prefetch worker processes (needs
    # parsed absl flags, as under train.py); a restored iterator state needs the same worker_count.
    num_threads: int = 2  # grain ReadOptions.num_threads: batches prepared concurrently per process.
    prefetch_batches: int = 4  # grain ReadOptions.prefetch_buffer_size, in batches; >= num_threads,
    # else grain runs only prefetch_batches threads. Host memory ~ prefetch_batches x one batch.
    worker_count: int = 0

    # Audio sources ("synthetic_audio", "audiofolder"): a dict of tome_jax.data.audio.AudioConfig fields
    # (front end, clip length, SpecAugment); None for image sources.
    audio: Any = None

    def __post_init__(self):
        if self.image_size <= 0:
            raise ValueError(f"data.image_size must be positive, got {self.image_size}.")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"data.mean/std need 3 values (RGB), got {self.mean}, {self.std}.")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"data.crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}.")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"data.crop_ratio must satisfy 0 < lo <= hi, got {self.crop_ratio}.")
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"data.crop_pct must be in (0, 1], got {self.crop_pct}.")
        if self.interpolation not in ("bilinear", "bicubic"):
            raise ValueError(
                f"data.interpolation must be 'bilinear' or 'bicubic', got {self.interpolation!r}."
            )


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
