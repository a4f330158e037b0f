"""`make_dataset`: one host's grain pipeline of batches read by the source's `BatchReader`.

Train: a global example stream that visits a fresh permutation of the N records each epoch (drawn
from (seed, epoch)) is cut into per-host chunks of b = `global_batch_size // shard_count`; host h
takes chunks h, h + shard_count, ... So global batch t is the same whatever the number of hosts,
each epoch visits every example once across hosts, and nothing is dropped at epoch ends (batches may
straddle them). Each chunk goes to the reader the source picked once for this dataset
(`source.batch_reader(cfg)`, see `tome_jax.data.registry`): images are decoded, random-resized-cropped
and optionally flipped in uint8, clips and spectrograms made by their sources, in-memory arrays
passed through; normalization (`tome_jax.data.normalize`) runs on device inside the jitted step.
grain provides the chunk index, sharding slice, threaded prefetch, worker processes and state.

Eval: host h reads its contiguous part of the split once, padded with masked rows (zeros, mask
False) to ceil(ceil(N / shard_count) / b) batches, so every host runs the same number of steps and
every example is counted exactly once where `mask` is True.

State: iterating the returned `grain.IterDataset` gives a `grain.DatasetIterator`;
`it.get_state()` is a small JSON-able dict and `it.set_state(state)` on a fresh iterator of the same
pipeline resumes at the same batch (grain's Orbax handlers can save it with the model).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import grain
import numpy as np
from absl import flags

from tome_jax.data.config import DataConfig
from tome_jax.data.registry import Batch, BatchReader, Source
from tome_jax.data.sources import make_source, resolve_config

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
    source: Source | None = None,
) -> grain.IterDataset:
    """Batches of `split` for this host.

    Args:
      cfg: the run's resolved `DataConfig` (a ConfigDict or dict is resolved here; missing fields take
        defaults).
      split: split name, e.g. `cfg.split_train` / `cfg.split_eval`.
      global_batch_size: examples per step over all hosts; each host gets `// shard_count`.
      train: infinite, shuffled, augmented stream (True) or one padded pass in order (False).
      seed: shuffle and augmentation seed (non-negative).
      shard_index, shard_count: this host's shard; default `jax.process_index()/process_count()`.
      source: a source already built by `make_source(cfg, split)` (to reuse an indexed folder), or
        any object with the `Source` protocol (e.g. an `ArraySource` or `ImageArraySource`).

    Returns:
      A grain.IterDataset of `{"image": [b, ...], "label": int32 [b] or float32 [b, K], "mask": bool
      [b]}` with b = global_batch_size // shard_count: images uint8 [b, S, S, C] (S = cfg.image_size,
      C = len(cfg.mean)), clips uint8 [b, T, S, S, C], spectrograms float32 [b, T, F, 1], arrays as
      stored. `mask` is False on eval padding and on records that failed to decode. Feed "image" to
      the model through `normalize(image, cfg.mean, cfg.std)` inside the jitted step.
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
    source = make_source(cfg, split) if source is None else source
    if len(source) == 0:
        raise ValueError(f"Split {split!r} of {cfg.name!r} is empty.")
    reader = source.batch_reader(cfg)  # checks cfg against the examples; the one way batches are made
    if train:
        ds = _train_ids(len(source), batch_size, shard, seed).map(_TrainBatch(reader, seed))
    else:
        ds = _eval_ids(len(source), batch_size, shard).map(_EvalBatch(reader))
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


class _TrainBatch:
    """(epoch [b], record id [b]) -> augmented batch; randomness keyed on (seed, epoch, id)."""

    def __init__(self, reader: BatchReader, seed: int):
        self.reader, self.seed = reader, seed

    def __call__(self, chunk: tuple[np.ndarray, np.ndarray]) -> Batch:
        epoch, ids = chunk
        return self.reader(ids, epoch=epoch, seed=self.seed)


class _EvalBatch:
    """Record ids [b] (-1 = padding) -> the eval view of the real records; padding rows are zeros
    with mask False."""

    def __init__(self, reader: BatchReader):
        self.reader = reader

    def __call__(self, ids: np.ndarray) -> Batch:
        real = ids >= 0
        # All-padding batches (a host with fewer records) still need the example shape: read record 0.
        part = self.reader(ids[real] if real.any() else ids[:1] * 0)
        batch = {key: np.zeros((len(ids),) + value.shape[1:], value.dtype) for key, value in part.items()}
        if real.any():
            for key, value in part.items():
                batch[key][real] = value
        return batch
