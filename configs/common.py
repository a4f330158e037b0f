"""Shared pieces of the recipes. Imports only ml_collections (and the data defaults, which need
nothing else), so reading a recipe never starts the training stack (big_vision's configs/common.py)."""

from __future__ import annotations

import ml_collections

from tome_jax.data.config import default_config as data_config  # noqa: F401  (re-exported for recipes)


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parse a recipe argument "runlocal,r=8,variant=s" against typed defaults.

    A bare name sets a bool option to True; "key=value" is converted to the default's type.
    Unknown names are errors, so a typo in `--config file.py:arg` fails at start.
    """
    options = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, eq, value = item.partition("=")
        key = key.strip()
        if key not in options:
            raise ValueError(f"unknown config argument {key!r}; known: {', '.join(sorted(options))}.")
        kind = type(options[key])
        if not eq:
            if kind is not bool:
                raise ValueError(f"config argument {key!r} needs a value: {key}=...")
            options[key] = True
        elif kind is bool:
            options[key] = value.strip().lower() in ("1", "true", "yes")
        else:
            options[key] = kind(value.strip())
    return ml_collections.ConfigDict(options)
