"""Input pipeline: named sources (images, in-memory arrays, clips, audio), host batches, grain.

Knows nothing about models or training. Typical use:

  cfg = resolve_config(config.data)                 # once per run: fields and source options typed
  train = make_dataset(cfg, cfg.split_train, global_batch_size=256, train=True, seed=0)
  it = iter(train); batch = next(it)                # {"image": uint8 (or the source's dtype), "label", "mask"}
  state = it.get_state(); ...; it.set_state(state)  # resume at the same batch
  # On device, inside the jitted step:
  images = normalize(batch["image"], cfg.mean, cfg.std)  # float32, per-channel mean/std
  images, targets = mixup_cutmix(images, onehot, key)
  # In the loop: batch = wait.next(it) with wait = InputWait(); wait.fraction() for the summary.

A new source is one file plus `@register_source(name, options=OptionsDataclass)` (see registry.py).
Layers (imports go down only): config < registry < transforms, codecs, fbank, wav < images, arrays,
clips, audio (the sources) < sources (the catalog: resolve_config, make_source) < pipeline.
"""

import importlib

_LAZY = {  # loaded on first use, so `tome_jax.data.config` (read by recipes) needs no grain
    "DataConfig": "tome_jax.data.config", "default_config": "tome_jax.data.config",
    "resolve_config": "tome_jax.data.sources", "make_source": "tome_jax.data.sources",
    "list_sources": "tome_jax.data.sources", "register_source": "tome_jax.data.registry",
    "Source": "tome_jax.data.registry", "BatchReader": "tome_jax.data.registry",
    "DatasetNotFoundError": "tome_jax.data.registry", "mixup_cutmix": "tome_jax.data.mixup",
    "normalize": "tome_jax.data.device", "InputWait": "tome_jax.data.monitor",
    "make_dataset": "tome_jax.data.pipeline", "ArraySource": "tome_jax.data.arrays",
    "ImageArraySource": "tome_jax.data.images", "ImageFolderSource": "tome_jax.data.images",
    "TfdsSource": "tome_jax.data.images", "load_digits": "tome_jax.data.images",
}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'tome_jax.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
