"""Every test process keeps XLA's scratch buffers in the heap, as train.py does (tome_jax/runtime.py)."""

from tome_jax import runtime


def pytest_configure(config):
    del config
    runtime.tune_allocator()
