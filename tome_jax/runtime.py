"""Process set-up for the command-line entry points: quiet logs and a persistent compilation cache.

`configure(verbose=False)`: absl (orbax, grain) and JAX's Python loggers at WARNING, so a run prints
its progress bar, real warnings and results instead of hundreds of INFO lines (orbax's per-save
notes, "Unable to initialize backend 'tpu'", "Missing metrics for step N"); `verbose=True` keeps INFO.

The compilation cache keeps XLA executables on disk, so a second run of the same recipe (and every
eval schedule) loads them instead of compiling again. Its folder is $TOME_JAX_CACHE_DIR, else
~/.cache/tome_jax/jax; TOME_JAX_CACHE_DIR=off disables it.
"""

from __future__ import annotations

import logging
import os

CACHE_ENV = "TOME_JAX_CACHE_DIR"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "tome_jax", "jax")


def cache_dir() -> str | None:
    """The compilation cache folder from the environment (None: disabled)."""
    value = os.environ.get(CACHE_ENV, DEFAULT_CACHE_DIR)
    return None if value.strip().lower() in ("", "off", "0", "none") else os.path.expanduser(value)


def configure(verbose: bool = False) -> None:
    """Log levels and the persistent compilation cache; call once at the start of a command."""
    from absl import logging as absl_logging

    level = logging.INFO if verbose else logging.WARNING
    absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.WARNING)
    for name in ("jax", "orbax", "absl", "grain"):
        logging.getLogger(name).setLevel(level)
    import jax

    directory = cache_dir()
    if directory is not None:
        jax.config.update("jax_compilation_cache_dir", directory)
        # Small programs too: the digits recipe's steps compile in well under JAX's 1 s default.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
