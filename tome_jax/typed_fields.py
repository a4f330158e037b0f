"""Typed option dataclasses filled from user dicts: `typed(cls, values, where)`.

The one checker of every typed config piece: the data config and a source's `data.options`
(tome_jax.data), a reduction method's `tome.options` (tome_jax.methods). It sits below both and
imports neither (only ml_collections, to accept a ConfigDict).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections


def typed(cls: type, values: Mapping[str, Any] | ml_collections.ConfigDict | None, where: str):
    """`cls(**values)` for a dataclass of scalar and tuple fields, checked: a field `cls` does not have
    or a value of the wrong type is a ValueError naming `where` (e.g. "data", "data.options").

    Each value must match its field's default: bool for bool, int (not bool) for int, int or float
    for float, str for str; a tuple default takes any sequence, its items converted to the type of
    the default's first item. Fields whose default is None take anything."""
    if isinstance(values, ml_collections.ConfigDict):
        values = values.to_dict()
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"Unknown {where} field(s) {unknown}; known fields: {sorted(fields)}.")
    return cls(**{k: _checked(v, fields[k].default, f"{where}.{k}") for k, v in values.items()})


def _checked(value: Any, default: Any, where: str) -> Any:
    if default is None or default is dataclasses.MISSING:
        return value
    if isinstance(default, tuple) and default:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a sequence like {default!r}, got {value!r}.")
        return tuple(_checked(v, default[0], where) for v in value)
    kind = type(default)
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ValueError(f"{where}: expected {kind.__name__} (default {default!r}), got {value!r}.")
    return value
