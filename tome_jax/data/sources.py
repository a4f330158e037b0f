"""The sources by name: `resolve_config` (the data config, with the named source's typed options) and
`make_source`. Importing this module registers the built-in sources (images, clips, audio); a source
registered elsewhere (`tome_jax.data.register_source`, e.g. from a test file) is found the same way.

Any name that is not registered is a TFDS dataset ("tfds" source, `images.TfdsSource`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections

from tome_jax.data import audio, clips, dense_digits, images  # noqa: F401  (the built-in sources register themselves)
from tome_jax.data import registry
from tome_jax.data.config import DataConfig, resolve_fields, typed
from tome_jax.data.registry import Source

TFDS = "tfds"


def source_entry(name: str) -> registry.SourceEntry:
    """The source registered as `name`; any other name is a TFDS dataset."""
    return registry.registered_source(name) or registry.registered_source(TFDS)


def list_sources() -> list[str]:
    """Registered source names (any other `data.name` is read from TFDS)."""
    return registry.registered_names()


def resolve_config(cfg: Mapping[str, Any] | ml_collections.ConfigDict | DataConfig | None) -> DataConfig:
    """Defaults + `cfg` -> DataConfig, `options` resolved to the named source's options dataclass.

    Unknown fields and values of the wrong type are ValueErrors naming the field (in `data` and in
    `data.options` alike). A run resolves its config once and passes the DataConfig down."""
    if isinstance(cfg, DataConfig):  # already resolved (or built by hand with options None / a dict)
        options = _options(cfg.name, cfg.options)
        return cfg if options is cfg.options else dataclasses.replace(cfg, options=options)
    values = cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else dict(cfg or {})
    name = values.get("name", DataConfig.name)
    return resolve_fields(values, _options(name, values.get("options")))


def _options(name: str, options: Any):
    """`options` (None, a dict of fields or the options object) -> the options dataclass of source `name`."""
    kind = source_entry(name).options
    if isinstance(options, kind):
        return options
    if dataclasses.is_dataclass(options):
        raise ValueError(f"data.options is a {type(options).__name__}, but data.name={name!r} takes {kind.__name__}.")
    return typed(kind, options, "data.options")


def make_source(cfg: DataConfig | Mapping[str, Any] | None, split: str) -> Source:
    """The source named by `cfg.name` for `split`."""
    cfg = resolve_config(cfg)
    return source_entry(cfg.name).make(cfg, split)
