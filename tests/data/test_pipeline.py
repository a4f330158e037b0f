"""make_dataset on the embedded digits and on an id-encoding in-memory source."""

import itertools
import json

import numpy as np
import pytest

from tome_jax import data

N = 100  # Records in the id-encoding source.
ID_CFG = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), image_size=4)


def id_source(n=N):
    """Image i is the constant i / n, so any crop/resize of it still reads as i."""
    images = np.broadcast_to((np.arange(n, dtype=np.float32) / n)[:, None, None, None], (n, 6, 6, 1))
    return data.ArraySource(
        images=np.ascontiguousarray(images), labels=np.arange(n, dtype=np.int32) % 7, num_classes=7
    )


def ids_of(batch, n=N):
    return np.rint(batch["image"].mean(axis=(1, 2, 3)) * n).astype(int)


def take(ds, k):
    return list(itertools.islice(iter(ds), k))


def make(split="train", *, source=None, cfg=None, **kw):
    kw = dict(global_batch_size=32, train=True, seed=0, shard_index=0, shard_count=1) | kw
    return data.make_dataset(cfg or {}, split, source=source, **kw)


@pytest.fixture(scope="module")
def digits_train():
    return data.load_digits("train")


def test_digits_splits_are_disjoint_stratified_and_complete():
    train, test = data.load_digits("train"), data.load_digits("test")
    assert (len(train), len(test)) == (1438, 359)
    assert train.images.shape == (1438, 8, 8, 1) and 0 <= train.images.min() and train.images.max() <= 1
    np.testing.assert_array_equal(
        np.bincount(train.labels) + np.bincount(test.labels),
        [178, 182, 177, 183, 181, 182, 181, 179, 174, 180],
    )
    assert np.abs(np.bincount(test.labels) / np.bincount(train.labels) - 0.25).max() < 0.01
    with pytest.raises(ValueError, match="splits"):
        data.load_digits("validation")


def test_digits_batches_have_shapes_dtypes_labels_and_normalization(digits_train):
    cfg = dict(image_size=16, mean=(0.2, 0.3, 0.4), std=(0.5, 0.25, 0.125))
    batch = take(make(source=digits_train, cfg=cfg, global_batch_size=64), 1)[0]
    assert batch["image"].shape == (64, 16, 16, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (64,) and batch["label"].dtype == np.int32
    assert batch["mask"].dtype == bool and batch["mask"].all()
    assert 0 <= batch["label"].min() and batch["label"].max() <= 9
    pixels = batch["image"] * np.float32(cfg["std"]) + np.float32(cfg["mean"])  # Back to [0, 1].
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    np.testing.assert_allclose(pixels[..., 0], pixels[..., 2], atol=1e-5)  # Gray -> RGB.


def test_eval_images_are_the_whole_digit_resized(digits_train):
    batch = take(make(source=digits_train, train=False, cfg=dict(image_size=8, crop_pct=1.0)), 1)[0]
    pixels = batch["image"][..., 0] * 0.5 + 0.5
    np.testing.assert_allclose(pixels, digits_train.images[:32, ..., 0], atol=1e-5)  # 8 -> 8: identity.
    np.testing.assert_array_equal(batch["label"], digits_train.labels[:32])


def test_same_seed_same_batches_other_seed_other_batches(digits_train):
    a, b, c = (take(make(source=digits_train, seed=s), 3) for s in (5, 5, 6))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])
    assert not np.array_equal(a[0]["label"], c[0]["label"])
    assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_each_epoch_is_a_fresh_permutation():
    source = id_source()
    batches = take(make(source=source, cfg=ID_CFG, global_batch_size=20), 10)  # Two epochs.
    ids = np.concatenate([ids_of(b) for b in batches])
    assert sorted(ids[:N]) == list(range(N)) and sorted(ids[N:]) == list(range(N))
    assert not np.array_equal(ids[:N], ids[N:])
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), ids % 7)


def test_two_shards_partition_an_epoch_and_match_the_single_host_global_batch():
    source = id_source()
    one_host = take(make(source=source, cfg=ID_CFG, global_batch_size=20), 5)
    hosts = [
        take(make(source=source, cfg=ID_CFG, global_batch_size=20, shard_index=h, shard_count=2), 5)
        for h in range(2)
    ]
    ids = [np.concatenate([ids_of(b) for b in host]) for host in hosts]
    assert len(ids[0]) == len(ids[1]) == N // 2 and not set(ids[0]) & set(ids[1])
    assert set(ids[0]) | set(ids[1]) == set(range(N))
    for t in range(5):  # Global batch t does not depend on the number of hosts.
        np.testing.assert_array_equal(
            ids_of(one_host[t]), np.concatenate([ids_of(hosts[0][t]), ids_of(hosts[1][t])])
        )


@pytest.mark.parametrize("num_threads", [0, 2])
def test_iterator_state_round_trip_resumes_at_the_same_batch(digits_train, num_threads):
    cfg = dict(num_threads=num_threads)
    it = iter(make(source=digits_train, cfg=cfg))
    for _ in range(3):
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # Survives a JSON checkpoint.
    expected = [next(it) for _ in range(4)]
    restored = iter(make(source=digits_train, cfg=cfg))
    restored.set_state(state)
    for want, got in zip(expected, [next(restored) for _ in range(4)]):
        for key in ("image", "label", "mask"):
            np.testing.assert_array_equal(want[key], got[key])


@pytest.mark.parametrize("shard_count, batch", [(1, 32), (2, 64), (3, 30)])
def test_eval_covers_every_example_exactly_once_with_padding_masked(shard_count, batch):
    source = id_source(n=N + 3)
    per_host = [
        list(
            make(
                "test",
                source=source,
                cfg=ID_CFG,
                train=False,
                global_batch_size=batch,
                shard_index=h,
                shard_count=shard_count,
            )
        )
        for h in range(shard_count)
    ]
    assert len({len(host) for host in per_host}) == 1  # Same number of steps on every host.
    seen = np.concatenate([ids_of(b, N + 3)[b["mask"]] for host in per_host for b in host])
    np.testing.assert_array_equal(np.sort(seen), np.arange(N + 3))
    padded = [b for host in per_host for b in host if not b["mask"].all()]
    assert padded and all(b["image"].shape[0] == batch // shard_count for host in per_host for b in host)


def test_eval_iterates_again_from_the_start(digits_train):
    ds = make(source=digits_train, train=False, global_batch_size=500)
    first, second = list(ds), list(ds)
    assert len(first) == len(second) == 3
    np.testing.assert_array_equal(first[2]["image"], second[2]["image"])
    assert first[2]["mask"].sum() == 1438 - 1000


def test_config_errors_fail_early(digits_train):
    with pytest.raises(ValueError, match="Unknown data config"):
        make(source=digits_train, cfg=dict(imgae_size=32))
    with pytest.raises(ValueError, match="multiple of shard_count"):
        make(source=digits_train, global_batch_size=33, shard_count=2)
    with pytest.raises(ValueError, match="crop_pct"):
        make(source=digits_train, cfg=dict(crop_pct=1.5))


def test_default_config_round_trips_through_configdict():
    cfg = data.default_config()
    cfg.image_size = 24
    resolved = data.resolve_config(cfg)
    assert resolved.image_size == 24 and resolved.name == "digits" and resolved.mean == (0.5, 0.5, 0.5)
    batch = take(
        data.make_dataset(
            cfg, cfg.split_eval, global_batch_size=8, train=False, shard_index=0, shard_count=1
        ),
        1,
    )[0]
    assert batch["image"].shape == (8, 24, 24, 3)
