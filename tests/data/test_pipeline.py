"""make_dataset on the embedded digits and on an id-encoding in-memory source."""

import itertools
import json

import numpy as np
import pytest

from tome_jax import data
from tome_jax.data import transforms

N = 100  # Records in the id-encoding source.
ID_CFG = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), image_size=4)


def id_source(n=N):
    """Image i is the constant i / n, so any crop/resize of it still reads as i."""
    images = np.broadcast_to((np.arange(n, dtype=np.float32) / n)[:, None, None, None], (n, 6, 6, 1))
    return data.ImageArraySource(
        images=np.ascontiguousarray(images), labels=np.arange(n, dtype=np.int32) % 7, num_classes=7
    )


def ids_of(batch, n=N):
    return np.rint(batch["image"].mean(axis=(1, 2, 3)) / 255 * n).astype(int)


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


def test_digits_batches_have_shapes_dtypes_labels_and_uint8_pixels(digits_train):
    cfg = dict(image_size=16, mean=(0.2, 0.3, 0.4), std=(0.5, 0.25, 0.125))
    batch = take(make(source=digits_train, cfg=cfg, global_batch_size=64), 1)[0]
    assert batch["image"].shape == (64, 16, 16, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (64,) and batch["label"].dtype == np.int32
    assert batch["mask"].dtype == bool and batch["mask"].all()
    assert 0 <= batch["label"].min() and batch["label"].max() <= 9
    assert batch["image"].max() > 200  # Ink reaches full scale: [0, 1] was mapped to [0, 255].
    np.testing.assert_array_equal(batch["image"][..., 0], batch["image"][..., 2])  # Gray -> RGB.
    model_input = np.asarray(data.normalize(batch["image"], cfg["mean"], cfg["std"]))
    np.testing.assert_allclose(
        model_input, (batch["image"] / 255 - np.float32(cfg["mean"])) / np.float32(cfg["std"]), atol=1e-5
    )


def test_digits_uint8_path_is_the_old_float_path_up_to_rounding(digits_train):
    """Before: float crop/resize then host normalize. Now: uint8, normalized on device."""
    cfg = data.resolve_config(dict(image_size=16, crop_scale=(0.5, 1.0)))
    batch = take(make(source=digits_train, cfg=cfg, global_batch_size=16), 1)[0]
    ids = np.random.default_rng([0, 0]).permutation(len(digits_train))[:16]  # Epoch 0 of seed 0.
    u = transforms.uniforms(0, np.zeros(16, np.int64), ids, 5)
    boxes = transforms.random_resized_crop_boxes(u[:, :4], np.full(16, 8), np.full(16, 8), cfg.crop_scale, cfg.crop_ratio)
    old = (transforms.crop_resize(digits_train.images[ids], boxes, 16) - 0.5) / 0.5  # Gray [B, S, S, 1].
    new = np.asarray(data.normalize(batch["image"], cfg.mean, cfg.std))
    np.testing.assert_array_equal(batch["label"], digits_train.labels[ids])
    np.testing.assert_allclose(new, np.broadcast_to(old, new.shape), atol=0.5 / 255 / 0.5 + 1e-6)


def test_zoom_out_crops_shrink_the_image_into_a_canvas_of_its_border_pixels():
    zoom = dict(ID_CFG, image_size=12, crop_scale=(2.0, 2.0), crop_ratio=(1.0, 1.0))
    batch = take(make(source=id_source(), cfg=zoom), 1)[0]  # constant images stay constant
    pixels = batch["image"].astype(int)
    assert (pixels.max(axis=(1, 2, 3)) - pixels.min(axis=(1, 2, 3)) <= 1).all()  # 1: rounding at x.5
    square = np.zeros((4, 6, 6, 1), np.float32)
    square[:, 1:5, 1:5] = 1.0  # a bright square on a black border
    source = data.ImageArraySource(images=square, labels=np.arange(4, dtype=np.int32), num_classes=4)
    plain, zoomed = (take(make(source=source, cfg=dict(zoom, crop_scale=s), global_batch_size=4), 1)[0]["image"]
                     .astype(float) for s in ((1.0, 1.0), (2.0, 2.0)))
    np.testing.assert_allclose(zoomed.sum(axis=(1, 2, 3)) / plain.sum(axis=(1, 2, 3)), 0.5, rtol=0.1)  # area x 2
    black_rows = (zoomed.max(axis=(2, 3)) == 0).sum(axis=1)
    assert (black_rows >= (plain.max(axis=(2, 3)) == 0).sum(axis=1) + 2).all()  # 12 - 12 / sqrt(2) = 3.5 px more


def test_eval_images_are_the_whole_digit_resized(digits_train):
    batch = take(make(source=digits_train, train=False, cfg=dict(image_size=8, crop_pct=1.0)), 1)[0]
    pixels = batch["image"][..., 0] / 255
    np.testing.assert_allclose(pixels, digits_train.images[:32, ..., 0], atol=0.5 / 255 + 1e-6)  # 8 -> 8.
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
    with pytest.raises(ValueError, match="Unknown data field"):
        make(source=digits_train, cfg=dict(imgae_size=32))
    with pytest.raises(ValueError, match=r"data.image_size: expected int \(default 32\), got '32'"):
        make(source=digits_train, cfg=dict(image_size="32"))
    with pytest.raises(ValueError, match=r"Unknown data.options field\(s\) \['frame'\]; known fields: \['frames', 'speed'\]"):
        data.resolve_config(dict(name="moving_digits", options=dict(frame=4)))
    with pytest.raises(ValueError, match=r"data.options.frames: expected int"):
        data.resolve_config(dict(name="moving_digits", options=dict(frames="4")))
    with pytest.raises(ValueError, match=r"Unknown data.options field"):
        data.resolve_config(dict(name="digits", options=dict(frames=4)))  # digits take no options
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


def test_one_channel_images_keep_one_channel(digits_train):
    batch = take(make(source=digits_train, cfg=dict(image_size=12, mean=(0.5,), std=(0.25,))), 1)[0]
    assert batch["image"].shape == (32, 12, 12, 1) and batch["image"].dtype == np.uint8
    assert data.normalize(batch["image"], (0.5,), (0.25,)).shape == (32, 12, 12, 1)


def clip_source(n=N, dtype=np.float32):
    """Example i: a [T=2, 3, 4, C=2] clip filled with i (float) or i % 256 (uint8); label i % 7."""
    values = np.arange(n).astype(dtype)[:, None, None, None, None]
    clips = np.ascontiguousarray(np.broadcast_to(values, (n, 2, 3, 4, 2)))
    return data.ArraySource(examples=clips, labels=np.arange(n, dtype=np.int32) % 7, num_classes=7)


ARRAY_CFG = dict(mean=(0.0, 0.0), std=(1.0, 1.0))


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_arrays_pass_through_unchanged_shuffled_sharded_and_resumable(dtype):
    source = clip_source(dtype=dtype)
    batches = take(make(source=source, cfg=ARRAY_CFG, global_batch_size=20), 5)  # One epoch.
    assert all(b["image"].shape == (20, 2, 3, 4, 2) and b["image"].dtype == dtype for b in batches)
    ids = np.concatenate([b["image"][:, 0, 0, 0, 0] for b in batches]).astype(int)
    assert sorted(ids) == list(range(N)) and not np.array_equal(ids, np.arange(N))  # Shuffled, complete.
    for b in batches:  # Untouched: every element of a clip is its id.
        np.testing.assert_array_equal(b["image"], np.broadcast_to(b["image"][:, :1, :1, :1, :1], b["image"].shape))
        np.testing.assert_array_equal(b["label"], b["image"][:, 0, 0, 0, 0].astype(int) % 7)
    hosts = [
        take(make(source=source, cfg=ARRAY_CFG, global_batch_size=20, shard_index=h, shard_count=2), 1)[0]
        for h in range(2)
    ]
    np.testing.assert_array_equal(np.concatenate([h["image"] for h in hosts]), batches[0]["image"])
    it = iter(make(source=source, cfg=ARRAY_CFG, global_batch_size=20))
    next(it)
    state = it.get_state()
    restored = iter(make(source=source, cfg=ARRAY_CFG, global_batch_size=20))
    restored.set_state(state)
    np.testing.assert_array_equal(next(restored)["image"], batches[1]["image"])


def test_array_eval_pads_with_zeros_and_masks():
    source = clip_source(n=13)
    batches = list(make("test", source=source, cfg=ARRAY_CFG, train=False, global_batch_size=8))
    assert [b["mask"].sum() for b in batches] == [8, 5]
    last = batches[-1]
    np.testing.assert_array_equal(last["image"][:5, 0, 0, 0, 0], np.arange(8, 13))
    assert not last["image"][5:].any() and last["image"].dtype == np.float32
    out = np.asarray(data.normalize(last["image"], (1.0, 1.0), (2.0, 2.0)))  # Float: its own units.
    np.testing.assert_allclose(out[:5, 0, 0, 0, 0], (np.arange(8, 13) - 1.0) / 2.0)


def test_a_spectrogram_source_with_one_channel():
    spectrograms = np.random.default_rng(0).normal(size=(10, 16, 12, 1)).astype(np.float32)
    source = data.ArraySource(examples=spectrograms, labels=np.arange(10) % 2, num_classes=2)
    cfg = dict(mean=(-4.0,), std=(4.5,))
    batch = take(make(source=source, cfg=cfg, train=False, global_batch_size=10), 1)[0]
    np.testing.assert_array_equal(batch["image"], spectrograms)
    np.testing.assert_allclose(data.normalize(batch["image"], (-4.0,), (4.5,)), (spectrograms + 4) / 4.5, rtol=1e-6)


def test_channel_and_shape_mismatches_are_clear_errors(digits_train):
    with pytest.raises(ValueError, match="one mean and std per channel"):
        make(source=clip_source(), cfg=dict(mean=(0.0,), std=(1.0,)))
    with pytest.raises(ValueError, match="same number each"):
        make(source=digits_train, cfg=dict(mean=(0.5,), std=(0.5, 0.5, 0.5)))
    with pytest.raises(ValueError, match="Use an ArraySource"):  # A clip is not an image.
        data.ImageArraySource(images=np.zeros((2, 2, 3, 4, 2), np.float32), labels=np.zeros(2), num_classes=1)
    with pytest.raises(ValueError, match="1 \\(gray\\) or 3 \\(RGB\\)"):
        make(source=digits_train, cfg=dict(mean=(0.5,) * 2, std=(0.5,) * 2))
    with pytest.raises(ValueError, match="hflip applies to image sources only"):
        make(source=clip_source(), cfg=ARRAY_CFG | dict(hflip=True))
    with pytest.raises(TypeError, match="uint8 or float32"):
        data.ArraySource(examples=np.zeros((2, 3, 3, 1)), labels=np.zeros(2), num_classes=1)
    with pytest.raises(ValueError, match="per channel"):
        data.normalize(np.zeros((2, 4, 4, 3), np.uint8), (0.5,), (0.5,))


def test_crop_and_flip_of_a_record_depend_only_on_seed_epoch_and_id():
    """Record i gets the same pixels whatever the batch size, the shard or the thread count."""
    images = np.random.default_rng(0).random((N, 12, 12, 3)).astype(np.float32)
    source = data.ImageArraySource(images=images, labels=np.arange(N, dtype=np.int32), num_classes=N)
    cfg = dict(image_size=8, hflip=True, crop_scale=(0.3, 1.0))

    def by_id(batches):
        return {int(l): img for b in batches for l, img in zip(b["label"], b["image"])}

    a = by_id(take(make(source=source, cfg=cfg, global_batch_size=20), 5))
    b = by_id(take(make(source=source, cfg=cfg | dict(num_threads=0), global_batch_size=25), 4))
    c = by_id(take(make(source=source, cfg=cfg, global_batch_size=50, shard_index=1, shard_count=2), 2))
    assert len(a) == len(b) == N and len(c) == N // 2
    for i in range(N):
        np.testing.assert_array_equal(a[i], b[i])
        if i in c:
            np.testing.assert_array_equal(a[i], c[i])


def test_thread_and_prefetch_defaults_follow_the_host():
    cores = data.config.usable_cores()
    assert data.resolve_config({}).read_parallelism() == (cores, 2 * cores)
    assert data.resolve_config(dict(num_threads=3, prefetch_batches=5)).read_parallelism() == (3, 5)
    assert data.resolve_config(dict(num_threads=0)).read_parallelism()[0] == 0
    with pytest.raises(ValueError, match="num_threads"):
        data.resolve_config(dict(num_threads=-2))
