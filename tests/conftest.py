"""The runtime of every test process: XLA's scratch buffers stay in the heap, as train.py does, XLA:CPU
without LLVM's optimization passes, and a persistent compilation cache (tome_jax/runtime.py).

XLA:CPU at `--xla_backend_optimization_level=0`: the tests compile hundreds of small programs and run
each a few times, and LLVM's optimizations are much of a compile here (tests/models/test_vit.py and
tests/train/test_loop.py, both settings side by side in one shared-machine run: 292 -> 209 CPU
seconds; the golden-fixture ToMe tests 1.7x faster, a 60-step train.py run 1.25x slower, the
1600-step video demo 38 -> 48 CPU seconds); the HLO
passes (fusion, layout) still run, and LLVM without fast-math keeps IEEE results, so what the tests
check is unchanged. Set in XLA_FLAGS
before JAX starts, so train.py subprocesses inherit it; a test that sets its own XLA_FLAGS for a
subprocess (fake devices) replaces it, and an XLA_FLAGS that already names the level is kept.

The cache: most tests build the same tiny models and train steps afresh (each train_and_evaluate call
makes new jitted functions, each train.py subprocess starts cold), so JAX's in-memory cache misses and
XLA compiles identical programs again; the persistent cache is keyed by the program itself, so the
second compile is a load (test_faults' seven corrupt-checkpoint resumes: 79 s -> 29 s). One fresh
temporary folder per pytest run, shared by the xdist workers and deleted at the end: nothing carries
over between runs, so a run times what a fresh CI machine sees. $TOME_JAX_TEST_CACHE_DIR names another
folder (kept); "off" disables it. train.py subprocesses keep $TOME_JAX_CACHE_DIR's cache (the user's,
warm on a developer machine: pointing them at the fresh folder made test_loop 30% slower here).
"""

import os
import shutil
import tempfile

import pytest

from tome_jax import runtime

_TEST_CACHE_ENV = "TOME_JAX_TEST_CACHE_DIR"
_FAST_COMPILE = "--xla_backend_optimization_level=0"
_made = []


def pytest_configure(config):
    del config
    runtime.tune_allocator()
    # Training runs compile in-process here (tests/train/test_loop.py checks the child-process path):
    # a child per run would cost seconds each, and its cache is not this session's.
    os.environ.setdefault(runtime.COMPILE_IN_CHILD_ENV, "0")
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {_FAST_COMPILE}".strip()
    directory = os.environ.get(_TEST_CACHE_ENV, "")
    if directory.strip().lower() in ("off", "0", "none"):
        return
    if not directory:  # the first process (the xdist controller); its workers inherit the variable
        directory = tempfile.mkdtemp(prefix="tome_jax_test_cache_")
        os.environ[_TEST_CACHE_ENV] = directory
        _made.append(directory)
    import jax

    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_collection_modifyitems(session, config, items):
    """The modules that train or start train.py processes (tests/train/, and any module with a test marked
    slow) first, each module's tests kept together and in order: under `-n 2` the long tests then start
    early and the many short ones fill in around them, instead of one worker finishing a long run
    alone at the end while the other idles."""
    del session, config
    heavy = {item.module.__name__ for item in items
             if item.module.__name__.startswith("tests.train.") or item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in heavy)  # stable: the order within stays


def pytest_unconfigure(config):
    del config
    for directory in _made:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def finished_tiny_run(tmp_path_factory):
    """tests/train/test_loop.py's tiny_config() trained in this process, uninterrupted: 8 steps,
    checkpoints 4 and 8. Returns (workdir, the final parameters, what train_and_evaluate returned). Shared read-only by the tests that
    check, resume or evaluate a finished run (copy it before changing it): one training per worker."""
    from tests.train.test_loop import final_params, tiny_config
    from tome_jax.train import train_and_evaluate

    workdir = tmp_path_factory.mktemp("finished_tiny_run")
    summary = train_and_evaluate(tiny_config(), str(workdir))
    return workdir, final_params(workdir)[1], summary
