"""Process set-up for the command-line entry points: quiet logs and a persistent compilation cache.

`configure(verbose=False)`: absl (orbax, grain) and JAX's Python loggers at WARNING, so a run prints
its progress bar, real warnings and results instead of hundreds of INFO lines (orbax's per-save
notes, "Unable to initialize backend 'tpu'", "Missing metrics for step N"); `verbose=True` keeps INFO.

The compilation cache keeps XLA executables on disk, so a second run of the same recipe (and every
eval schedule) loads them instead of compiling again. Its folder is $TOME_JAX_CACHE_DIR, else
~/.cache/tome_jax/jax; TOME_JAX_CACHE_DIR=off disables it.

The allocator: XLA's CPU runtime mallocs each execution's scratch buffer afresh (157 MB for the
digits recipe's train step). glibc serves a block that large from a new mmap and unmaps it on free, so
every step page-faults its whole scratch in again: 60 M page faults and 111 s of system time in a
147 s run. `tune_allocator()` keeps freed blocks up to 1 GiB in one heap (glibc's mallopt; no-op
elsewhere), which cuts that system time to ~1 s. TOME_JAX_MALLOC=default leaves glibc as it is.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

CACHE_ENV = "TOME_JAX_CACHE_DIR"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "tome_jax", "jax")
MALLOC_ENV = "TOME_JAX_MALLOC"
COMPILE_IN_CHILD_ENV = "TOME_JAX_COMPILE_IN_CHILD"
# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_KEEP_BYTES = 1 << 30


def cache_dir() -> str | None:
    """The compilation cache folder from the environment (None: disabled)."""
    value = os.environ.get(CACHE_ENV, DEFAULT_CACHE_DIR)
    return None if value.strip().lower() in ("", "off", "0", "none") else os.path.expanduser(value)


def compile_in_child() -> bool:
    """Whether a training run compiles its train step and eval program in a child process, into the
    persistent compilation cache (`tome_jax.train.loop._compiling_in_child` says why): on the CPU
    backend, in a single-process run, with the cache on; $TOME_JAX_COMPILE_IN_CHILD=0 turns it off."""
    import jax

    if os.environ.get(COMPILE_IN_CHILD_ENV, "1").strip().lower() in ("0", "off", "false", "no"):
        return False
    return (jax.default_backend() == "cpu" and jax.process_count() == 1
            and bool(jax.config.jax_compilation_cache_dir))


def tune_allocator() -> bool:
    """Keep XLA's per-step scratch buffers in the heap instead of fresh mmaps; True if applied.

    Call before JAX starts its threads. One arena, because a thread's own arena is capped at 64 MB
    and would hand large blocks to mmap regardless of the threshold.
    """
    if os.environ.get(MALLOC_ENV, "").strip().lower() == "default":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, _KEEP_BYTES), (_M_TRIM_THRESHOLD, _KEEP_BYTES)))


def configure(verbose: bool = False) -> None:
    """Allocator, log levels and the persistent compilation cache; call first thing in a command."""
    tune_allocator()
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
