"""The runtime of every test process: XLA's scratch buffers stay in the heap, as train.py does, and a
persistent compilation cache (tome_jax/runtime.py).

The cache: most tests build the same tiny models and train steps afresh (each train_and_evaluate call
makes new jitted functions), so JAX's in-memory cache misses and XLA compiles identical programs again;
the persistent cache is keyed by the program itself, so the second compile is a load. It lives in a
fresh temporary folder per test process (nothing carries over between runs: a run times what a fresh
CI machine sees), or in $TOME_JAX_TEST_CACHE_DIR if set; TOME_JAX_TEST_CACHE_DIR=off disables it.
Subprocesses (train.py) keep their own setting from the environment.
"""

import os
import shutil
import tempfile

from tome_jax import runtime

_CACHE_ENV = "TOME_JAX_TEST_CACHE_DIR"
_made = []


def pytest_configure(config):
    del config
    runtime.tune_allocator()
    directory = os.environ.get(_CACHE_ENV, "")
    if directory.strip().lower() in ("off", "0", "none"):
        return
    if not directory:
        directory = tempfile.mkdtemp(prefix="tome_jax_test_cache_")
        _made.append(directory)
    import jax

    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    del config
    for directory in _made:
        shutil.rmtree(directory, ignore_errors=True)
