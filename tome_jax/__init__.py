"""tome_jax: Token Merging (ToMe) for Vision Transformers in JAX / Flax NNX.

Attributes load on first use (PEP 562), so `import tome_jax.data.config` or reading a recipe in
configs/ starts neither Flax nor the training stack.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {  # public name -> (module, attribute or None for the module itself)
    "merge": ("tome_jax.merge", None),
    "reduction": ("tome_jax.reduction", None),
    "TokenReduction": ("tome_jax.reduction", "TokenReduction"),
    "apply_tome": ("tome_jax.models.encoder", "apply_tome"),
    "create_model": ("tome_jax.models.registry", "create_model"),
    "list_models": ("tome_jax.models.registry", "list_models"),
    "register_model": ("tome_jax.models.registry", "register_model"),
    "count_flops": ("tome_jax.models.flops", "count_flops"),
    "load_timm": ("tome_jax.models.weights", "load_timm"),
    "save_timm": ("tome_jax.models.weights", "save_timm"),
    "checkpoint_layout": ("tome_jax.models.weights", "checkpoint_layout"),
    "CompiledForward": ("tome_jax.models.compiled", "CompiledForward"),
    "choose_r": ("tome_jax.choose", "choose_r"),
    "models": ("tome_jax.models", None),
    "data": ("tome_jax.data", None),
    "train": ("tome_jax.train", None),
    "timing": ("tome_jax.timing", None),
    "visualize": ("tome_jax.visualize", None),
}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'tome_jax' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    if module_name != "tome_jax.models":
        importlib.import_module("tome_jax.models")  # families register their names on import
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
