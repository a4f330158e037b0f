"""Input pipeline: sources (arrays, digits, image folder, TFDS), uint8 host transforms, grain batching.

Knows nothing about models or training. Typical use:

  cfg = tome_jax.data.default_config()              # or config.data from a recipe
  train = make_dataset(cfg, cfg.split_train, global_batch_size=256, train=True, seed=0)
  it = iter(train); batch = next(it)                # {"image": uint8, "label", "mask"}
  state = it.get_state(); ...; it.set_state(state)  # resume at the same batch
  # On device, inside the jitted step:
  images = normalize(batch["image"], cfg.mean, cfg.std)  # float32, per-channel mean/std
  images, targets = mixup_cutmix(images, onehot, key)
  # In the loop: batch = wait.next(it) with wait = InputWait(); wait.fraction() for the summary.
"""

import importlib

_LAZY = {  # loaded on first use, so `tome_jax.data.config` (read by recipes) needs no grain
    "DataConfig": "tome_jax.data.config", "default_config": "tome_jax.data.config",
    "resolve_config": "tome_jax.data.config", "mixup_cutmix": "tome_jax.data.mixup",
    "normalize": "tome_jax.data.device", "InputWait": "tome_jax.data.monitor",
    "make_dataset": "tome_jax.data.pipeline", "ArraySource": "tome_jax.data.sources",
    "DatasetNotFoundError": "tome_jax.data.sources", "ImageFolderSource": "tome_jax.data.sources",
    "Source": "tome_jax.data.sources", "TfdsSource": "tome_jax.data.sources",
    "load_digits": "tome_jax.data.sources", "make_source": "tome_jax.data.sources",
}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'tome_jax.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
