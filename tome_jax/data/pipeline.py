"""`make_dataset`: one host's grain pipeline of uint8 NHWC image batches (or pass-through arrays).

Train: a global example stream that visits a fresh permutation of the N records each epoch (drawn
from (seed, epoch)) is cut into per-host chunks of b = `global_batch_size // shard_count`; host h
takes chunks h, h + shard_count, ... So global batch t is the same whatever the number of hosts,
each epoch visits every example once across hosts, and nothing is dropped at epoch ends (batches may
straddle them). Each chunk is loaded, decoded, random-resized-cropped and optionally flipped, all in
uint8; normalization (`tome_jax.data.normalize`) runs on device inside the jitted step. With
`data.kind="array"` the examples skip the image transforms and are batched as the source stores them.
grain provides the chunk index, sharding slice, threaded prefetch, worker processes and state.

Eval: host h reads its contiguous part of the split once, padded with masked rows to
ceil(ceil(N / shard_count) / b) batches, so every host runs the same number of steps and every
example is counted exactly once where `mask` is True.

State: iterating the returned `grain.IterDataset` gives a `grain.DatasetIterator`;
`it.get_state()` is a small JSON-able dict and `it.set_state(state)` on a fresh iterator of the same
pipeline resumes at the same batch (grain's Orbax handlers can save it with the model).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import grain
import numpy as np
from absl import flags

from tome_jax.data import codecs
from tome_jax.data import sources as sources_lib
from tome_jax.data import transforms
from tome_jax.data.config import DataConfig, resolve_config

Batch = dict[str, np.ndarray]
_NUM_CHUNKS = 2**62  # "Infinite" train stream, in batches.


def make_dataset(
    cfg: Mapping[str, Any] | DataConfig | None,
    split: str,
    *,
    global_batch_size: int,
    train: bool,
    seed: int = 0,
    shard_index: int | None = None,
    shard_count: int | None = None,
    source: sources_lib.Source | None = None,
) -> grain.IterDataset:
    """Batches of `split` for this host.

    Args:
      cfg: the `data` config (ConfigDict, dict or DataConfig; missing fields take defaults).
      split: split name, e.g. `cfg.split_train` / `cfg.split_eval`.
      global_batch_size: examples per step over all hosts; each host gets `// shard_count`.
      train: infinite, shuffled, augmented stream (True) or one padded pass in order (False).
      seed: shuffle and augmentation seed (non-negative).
      shard_index, shard_count: this host's shard; default `jax.process_index()/process_count()`.
      source: a source already built by `make_source(cfg, split)` (to reuse an indexed folder).

    Returns:
      A grain.IterDataset of `{"image": uint8 [b, S, S, C], "label": int32 [b], "mask": bool [b]}`
      with b = global_batch_size // shard_count, S = cfg.image_size, C = len(cfg.mean); with
      cfg.kind="array", "image" is the source's examples `[b, ...]` in their own dtype. `mask` is
      False on eval padding and on files that failed to decode. Feed "image" to the model through
      `normalize(image, cfg.mean, cfg.std)` inside the jitted step.
    """
    cfg = resolve_config(cfg)
    if shard_index is None or shard_count is None:
        import jax  # pylint: disable=g-import-not-at-top

        shard_index, shard_count = jax.process_index(), jax.process_count()
    shard = grain.sharding.ShardOptions(shard_index=shard_index, shard_count=shard_count)
    if global_batch_size <= 0 or global_batch_size % shard_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} must be a positive multiple of shard_count={shard_count}."
        )
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}.")
    batch_size = global_batch_size // shard_count
    source = sources_lib.make_source(cfg, split) if source is None else source
    if len(source) == 0:
        raise ValueError(f"Split {split!r} of {cfg.name!r} is empty.")
    _check_source(source, cfg)

    loader = _Loader(source, cfg)
    if train:
        ds = _train_ids(len(source), batch_size, shard, seed).map(_TrainBatch(loader, seed))
    else:
        ds = _eval_ids(len(source), batch_size, shard).map(_EvalBatch(loader))
    num_threads, prefetch = cfg.read_parallelism()
    read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    iter_ds = ds.to_iter_dataset(read)
    if cfg.worker_count > 0:
        if not flags.FLAGS.is_parsed():  # grain reads its absl flags when it starts the workers.
            raise RuntimeError(
                "data.worker_count > 0 starts grain worker processes, which need parsed absl flags: run "
                "under absl.app.run() (as train.py does) or call absl.flags.FLAGS.mark_as_parsed() first."
            )
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count))
    return iter_ds


def _train_ids(num_records: int, batch_size: int, shard, seed: int) -> grain.MapDataset:
    """Infinite per-host chunks of (epoch int64 [b], record id int64 [b])."""
    ds = grain.MapDataset.range(_NUM_CHUNKS)[shard.shard_index :: shard.shard_count]
    return ds.map(functools.partial(_chunk_ids, num_records, batch_size, seed))


def _chunk_ids(num_records: int, batch_size: int, seed: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions [chunk * b, (chunk + 1) * b) of the stream that visits permutation(seed, epoch) per epoch.

    A vectorized permutation per epoch (NumPy Generator seeded with (seed, epoch)) instead of grain's
    per-element `shuffle`, which costs ~20 us per example in Python.
    """
    positions = np.arange(chunk * batch_size, (chunk + 1) * batch_size, dtype=np.int64)
    epoch, index = np.divmod(positions, num_records)
    ids = np.empty_like(positions)
    for e in np.unique(epoch):
        in_epoch = epoch == e
        ids[in_epoch] = np.random.default_rng([seed, int(e)]).permutation(num_records)[index[in_epoch]]
    return epoch, ids


def _eval_ids(num_records: int, batch_size: int, shard) -> grain.MapDataset:
    """One pass over this host's interval: record ids int64 [b], -1 on padding."""
    per_shard, extra = divmod(num_records, shard.shard_count)  # The first `extra` shards get one more.
    start = shard.shard_index * per_shard + min(shard.shard_index, extra)
    stop = start + per_shard + (shard.shard_index < extra)
    num_steps = -(-(per_shard + (extra > 0)) // batch_size)  # Same on every host.
    return grain.MapDataset.range(num_steps).map(functools.partial(_padded_ids, start, stop, batch_size))


def _padded_ids(start: int, stop: int, batch_size: int, step: int) -> np.ndarray:
    ids = np.arange(start + step * batch_size, start + (step + 1) * batch_size, dtype=np.int64)
    return np.where(ids < stop, ids, -1)


def _check_source(source: sources_lib.Source, cfg: DataConfig) -> None:
    """In-memory examples must fit cfg.kind and the channel count len(cfg.mean); zoom-out crops
    (crop_scale above 1) need examples in memory, not image files."""
    images = getattr(source, "images", None)
    if not isinstance(images, np.ndarray):
        if cfg.crop_scale[1] > 1 and not hasattr(source, "make_batch"):  # clips crop in memory
            raise ValueError(
                f"data.crop_scale={cfg.crop_scale}: an area fraction above 1 (zoom out) needs in-memory images "
                f"(ArraySource, e.g. digits); {type(source).__name__} decodes files, so keep crop_scale <= 1."
            )
        if cfg.kind == "array":
            raise ValueError(
                f"data.kind='array' needs an in-memory source (ArraySource); {type(source).__name__} yields "
                "encoded images: use data.kind='image'."
            )
        return
    channels = images.shape[-1]
    if cfg.kind == "image":
        if images.ndim != 4 or channels not in (1, 3) or (channels == 3 and cfg.channels == 1):
            raise ValueError(
                f"data.kind='image' needs in-memory images [N, H, W, 1 or 3] with no more channels than "
                f"len(data.mean)={cfg.channels}; got {images.shape}. Use data.kind='array' for other "
                "arrays, or set data.mean/std to one value per channel."
            )
    elif channels != cfg.channels:
        raise ValueError(
            f"data.kind='array': examples {images.shape[1:]} have {channels} channels (last axis) but "
            f"data.mean/std have {cfg.channels} values; set one mean and std per channel."
        )


class _Loader:
    """Record ids [b] + crop boxes -> (uint8 images [b, S, S, C] or arrays [b, ...], labels, decoded)."""

    def __init__(self, source: sources_lib.Source, cfg: DataConfig):
        self.source, self.cfg = source, cfg
        self.backend = None
        if cfg.kind == "image":
            self.backend = codecs.make_backend(cfg.image_backend, cfg.channels, cfg.interpolation)

    def __call__(
        self,
        ids: np.ndarray,
        boxes_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
        flip: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """flip: bool [b], mirror left-right (images only)."""
        cfg = self.cfg
        examples, labels = self.source.load(ids)
        labels = np.asarray(labels, np.int32)
        if cfg.kind == "array":
            return examples, labels, np.ones(len(ids), bool)
        if isinstance(examples, np.ndarray):  # In memory, one size: vectorized float resampling.
            height = np.full(len(ids), examples.shape[1])
            width = np.full(len(ids), examples.shape[2])
            resized = transforms.crop_resize(examples, boxes_fn(height, width), cfg.image_size)
            images = transforms.to_uint8(resized, 1.0 if examples.dtype == np.uint8 else 255.0)
            if images.shape[-1] != cfg.channels:  # Gray -> RGB.
                images = np.repeat(images, cfg.channels, axis=-1)
            if flip is not None:
                images = transforms.hflip(images, flip)
            return images, labels, np.ones(len(ids), bool)
        # Files of any size: decode and resample one by one, at whole-pixel boxes.
        name = getattr(self.source, "record_name", str)
        handles = [codecs.decode_or_none(self.backend, e, name(int(i))) for e, i in zip(examples, ids)]
        decoded = np.asarray([h is not None for h in handles], bool)
        sizes = np.asarray([self.backend.size(h) if h is not None else (1, 1) for h in handles]).reshape(-1, 2)
        boxes = transforms.snap_boxes(boxes_fn(sizes[:, 0], sizes[:, 1]), sizes[:, 0], sizes[:, 1])
        size = cfg.image_size
        images = np.zeros((len(ids), size, size, cfg.channels), np.uint8)
        flip = np.zeros(len(ids), bool) if flip is None else flip
        for k, handle in enumerate(handles):
            if handle is not None:
                images[k] = self.backend.crop_resize(handle, boxes[k], size, bool(flip[k]))
        return images, labels, decoded


class _TrainBatch:
    """(epoch [b], record id [b]) -> augmented batch; randomness keyed on (seed, epoch, id)."""

    def __init__(self, loader: _Loader, seed: int):
        self.loader, self.seed = loader, seed

    def __call__(self, chunk: tuple[np.ndarray, np.ndarray]) -> Batch:
        epoch, ids = chunk
        if hasattr(self.loader.source, "make_batch"):  # clips, audio: the source builds its own batches
            return self.loader.source.make_batch(ids, train=True, seed=self.seed, epoch=epoch)
        cfg = self.loader.cfg
        u = transforms.uniforms(self.seed, epoch, ids, 5)
        boxes_fn = functools.partial(
            transforms.random_resized_crop_boxes, u[:, :4], scale=cfg.crop_scale, ratio=cfg.crop_ratio
        )
        images, labels, decoded = self.loader(ids, boxes_fn, u[:, 4] < 0.5 if cfg.hflip else None)
        return {"image": images, "label": labels, "mask": decoded}


class _EvalBatch:
    """Record ids [b] (-1 = padding) -> center-cropped batch with `mask`."""

    def __init__(self, loader: _Loader):
        self.loader = loader

    def __call__(self, ids: np.ndarray) -> Batch:
        cfg = self.loader.cfg
        real = ids >= 0
        if hasattr(self.loader.source, "make_batch"):  # padding rows repeat record 0, masked
            batch = self.loader.source.make_batch(np.where(real, ids, 0), train=False, seed=0,
                                                  epoch=np.zeros_like(ids))
            return dict(batch, mask=batch["mask"] & real)
        boxes_fn = functools.partial(transforms.center_crop_boxes, crop_pct=cfg.crop_pct)
        # All-padding batches (a host with fewer records) still need the example shape: load record 0.
        images, labels, decoded = self.loader(ids[real] if real.any() else ids[:1] * 0, boxes_fn)
        batch = {
            "image": np.zeros((len(ids),) + images.shape[1:], images.dtype),
            "label": np.zeros(len(ids), np.int32),
            "mask": np.zeros(len(ids), bool),
        }
        if real.any():
            batch["image"][real] = images
            batch["label"][real] = labels
            batch["mask"][real] = decoded
        return batch
