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


def add_run_settings(config: ml_collections.ConfigDict, *, eval_every_steps: int = 5000) -> None:
    """The devices, logging and checkpoint fields every recipe has (override them after the call)."""
    # Devices: data parallel over all devices; mesh.model > 1 also shards large parameters.
    config.mesh = ml_collections.ConfigDict(dict(model=1))
    # Logging and checkpoints.
    config.log_every_steps = 100
    config.eval_every_steps = eval_every_steps
    config.checkpoint_every_steps = 1000
    config.checkpoint_every_minutes = 0.0  # > 0: also save after this much wall time (preemptible capacity)
    config.keep_checkpoints = 3
    # A restart that changes batch size, seed, model, data, optimizer or schedule is refused; True resumes anyway.
    config.allow_config_change = False
