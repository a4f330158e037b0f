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

from tome_jax.data.config import DataConfig, default_config, resolve_config
from tome_jax.data.device import normalize
from tome_jax.data.mixup import mixup_cutmix
from tome_jax.data.monitor import InputWait
from tome_jax.data.pipeline import make_dataset
from tome_jax.data.sources import (
    ArraySource,
    DatasetNotFoundError,
    ImageFolderSource,
    Source,
    TfdsSource,
    load_digits,
    make_source,
)

__all__ = [
    "ArraySource",
    "DataConfig",
    "DatasetNotFoundError",
    "ImageFolderSource",
    "InputWait",
    "Source",
    "TfdsSource",
    "default_config",
    "load_digits",
    "make_dataset",
    "make_source",
    "mixup_cutmix",
    "normalize",
    "resolve_config",
]
