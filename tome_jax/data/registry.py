"""What a source is and how it is named: the `Source` protocol and the registry of source names.

A source is N labelled examples plus the one way they become a host batch. `make_dataset` asks the
source once for its `BatchReader` (`source.batch_reader(cfg)`), then calls it for every batch:

    reader = source.batch_reader(cfg)          # checks cfg against the source, picks its transforms
    batch = reader(ids, epoch=epoch, seed=s)   # train: randomness from (seed, epoch[k], ids[k])
    batch = reader(ids)                        # eval (epoch None): the deterministic view

A batch is `{"image": [b, ...] in the source's storage dtype, "label": int32 [b] (or float32 [b, K]
multi-hot), "mask": bool [b] (False where a record failed to decode)}`.

Sources register by name with the dataclass of their options (`data.options`); `make_source`
(tome_jax.data.sources) builds them. A new source is one new file plus a registration, e.g. from a
test file:

    @dataclasses.dataclass(frozen=True)
    class ToyOptions:
        frames: int = 4

    @register_source("toy_clips", options=ToyOptions)
    def toy_clips(cfg: DataConfig, split: str) -> Source:   # cfg.options is a ToyOptions
        return ToyClipSource(split, frames=cfg.options.frames)

This module imports nothing of the data layer but its config: source files import it, never the
reverse.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

import numpy as np

from tome_jax.data.config import DataConfig

Batch = dict[str, np.ndarray]


class BatchReader(Protocol):
    def __call__(self, ids: np.ndarray, *, epoch: np.ndarray | None = None, seed: int = 0) -> Batch:
        """ids: int64 [b] (valid record ids) -> Batch; epoch: int64 [b] for train, None for eval."""


class Source(Protocol):
    """N labelled examples (`len`, `num_classes`) and how ids become a host batch (`batch_reader`)."""

    num_classes: int

    def __len__(self) -> int: ...

    def batch_reader(self, cfg: DataConfig) -> BatchReader:
        """The reader of this source's batches under `cfg`; raises ValueError where cfg does not fit
        the examples (channels, crops)."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset the config names is not on disk (or not in a readable format)."""


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The options of a source that takes none: `data.options` must be empty."""


@dataclasses.dataclass(frozen=True)
class SourceEntry:
    make: Callable[[DataConfig, str], Source]  # (cfg with cfg.options resolved, split) -> Source
    options: type  # a frozen dataclass of scalar / tuple fields with defaults


_REGISTRY: dict[str, SourceEntry] = {}


def register_source(name: str, *, options: type = NoOptions) -> Callable:
    """Decorator registering `make(cfg, split) -> Source` under `name`, with its options dataclass.

    Registering a name twice is an error (two sources must not silently shadow each other)."""
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"register_source({name!r}): options must be a dataclass, got {options!r}.")

    def decorator(make):
        if name in _REGISTRY:
            raise ValueError(f"data source {name!r} is already registered.")
        _REGISTRY[name] = SourceEntry(make, options)
        return make
    return decorator


def registered_source(name: str) -> SourceEntry | None:
    """The entry registered as `name`, or None."""
    return _REGISTRY.get(name)


def registered_names() -> list[str]:
    return sorted(_REGISTRY)
