"""New sources from outside the library: an image, a clip and an audio-like source, each registered
from this file with typed options and read through the normal pipeline (make_source, make_dataset)."""

import dataclasses

import numpy as np
import pytest

from tome_jax import data
from tome_jax.data import audio, clips, register_source


# ----------------------------------------------------------------------------- toy image source


@dataclasses.dataclass(frozen=True)
class StripesOptions:
    count: int = 12  # records
    width: int = 2  # stripe period in pixels


@register_source("test_stripes", options=StripesOptions)
def make_stripes(cfg, split):
    """Vertical (label 0) or horizontal (label 1) stripes, 8x8 gray, in memory."""
    o = cfg.options
    pattern = ((np.arange(8) // o.width) % 2).astype(np.float32)
    vertical, horizontal = np.broadcast_to(pattern[None, :], (8, 8)), np.broadcast_to(pattern[:, None], (8, 8))
    labels = np.arange(o.count, dtype=np.int32) % 2
    images = np.stack([(vertical, horizontal)[k] for k in labels])[..., None]
    return data.ImageArraySource(images=np.ascontiguousarray(images), labels=labels, num_classes=2)


# ----------------------------------------------------------------------------- toy clip source


@dataclasses.dataclass(frozen=True)
class BlinkOptions:
    frames: int = 3


class BlinkSource:
    """Record i: a clip whose frame t is all (i + t) % 256, uint8 [T, S, S, 1]; train adds the epoch."""

    def __init__(self, frames: int, size: int):
        self.frames, self.size, self.num_classes = frames, size, 5

    def __len__(self):
        return 10

    def batch_reader(self, cfg):
        return clips.ClipBatches(self, cfg)  # the library's clip batches: gray -> C channels, int32 labels

    def load(self, ids):
        return self._clips(ids, np.zeros_like(ids)), ids % 5

    def load_train(self, ids, epoch, seed):
        return self._clips(ids, epoch + 1), ids % 5

    def _clips(self, ids, shift):
        values = (ids[:, None] + shift[:, None] + np.arange(self.frames)[None]) % 256
        return np.broadcast_to(values[:, :, None, None, None], (len(ids), self.frames, self.size, self.size, 1)
                               ).astype(np.uint8)


@register_source("test_blink", options=BlinkOptions)
def make_blink(cfg, split):
    return BlinkSource(cfg.options.frames, cfg.image_size)


# ----------------------------------------------------------------------------- toy audio-like source


@dataclasses.dataclass(frozen=True)
class TonesOptions(audio.AudioOptions):  # the front end's fields (num_frames, SpecAugment, ...) and its own
    tone_hz: float = 1000.0


class TonesSource:
    """Record i: a 0.3 s tone at tone_hz * (1 + i % 2), as a log-mel (the library's front end)."""

    def __init__(self, options):
        self.options, self.num_classes = options, 2
        self.labels = np.eye(2, dtype=np.float32)[np.arange(6) % 2]

    def __len__(self):
        return len(self.labels)

    def batch_reader(self, cfg):
        return audio.LogMelBatches(self, cfg)

    def log_mel(self, i):
        t = np.arange(int(0.3 * self.options.sample_rate)) / self.options.sample_rate
        return self.options.log_mel(np.sin(2 * np.pi * self.options.tone_hz * (1 + i % 2) * t))


@register_source("test_tones", options=TonesOptions)
def make_tones(cfg, split):
    return TonesSource(cfg.options)


# ----------------------------------------------------------------------------- tests


def first(cfg, split="train", **kw):
    kw = dict(global_batch_size=4, train=True, seed=0, shard_index=0, shard_count=1) | kw
    return next(iter(data.make_dataset(cfg, split, **kw)))


def test_registered_sources_are_listed_and_take_typed_options():
    assert {"test_stripes", "test_blink", "test_tones", "digits", "moving_digits"} <= set(data.list_sources())
    assert data.resolve_config(dict(name="test_stripes", options=dict(width=4))).options == StripesOptions(12, 4)
    assert data.resolve_config(dict(name="test_stripes")).options == StripesOptions()  # defaults
    with pytest.raises(ValueError, match=r"Unknown data.options field\(s\) \['widht'\]"):
        data.resolve_config(dict(name="test_stripes", options=dict(widht=4)))
    with pytest.raises(ValueError, match="data.options.width: expected int"):
        data.resolve_config(dict(name="test_stripes", options=dict(width=2.5)))
    with pytest.raises(ValueError, match="already registered"):
        register_source("test_stripes")(make_stripes)


def test_a_toy_image_source_reads_as_uint8_images():
    cfg = dict(name="test_stripes", options=dict(count=8, width=4), image_size=8, crop_scale=(1.0, 1.0),
               crop_ratio=(1.0, 1.0), mean=(0.5,), std=(0.5,))
    batch = first(cfg, train=False, global_batch_size=8)
    assert batch["image"].shape == (8, 8, 8, 1) and batch["image"].dtype == np.uint8
    stripes = np.repeat([0, 255], 4)
    for image, label in zip(batch["image"][..., 0], batch["label"]):
        np.testing.assert_array_equal(image, np.broadcast_to(stripes[None] if label == 0 else stripes[:, None], (8, 8)))


def test_a_toy_clip_source_reads_through_the_clip_batches():
    cfg = dict(name="test_blink", options=dict(frames=4), image_size=5, mean=(0.0,) * 3, std=(1.0,) * 3)
    train = first(cfg)
    assert train["image"].shape == (4, 4, 5, 5, 3) and train["image"].dtype == np.uint8
    ids = train["image"][:, 0, 0, 0, 0].astype(int) - 1  # epoch 0: frame t holds id + 1 + t
    np.testing.assert_array_equal(train["label"], ids % 5)
    np.testing.assert_array_equal(train["image"][:, :, 0, 0, 0], ids[:, None] + 1 + np.arange(4))
    evals = list(data.make_dataset(cfg, "test", global_batch_size=4, train=False, shard_index=0, shard_count=1))
    assert [int(b["mask"].sum()) for b in evals] == [4, 4, 2]
    np.testing.assert_array_equal(evals[0]["image"][:, 0, 0, 0, 0], np.arange(4))


def test_a_toy_audio_source_uses_the_front_end_and_is_normalized_on_device():
    options = dict(num_frames=24, freq_mask=0, time_mask=8, tone_hz=500.0)
    cfg = dict(name="test_tones", options=options, mean=(-4.0,), std=(8.0,))
    train, again = first(cfg, global_batch_size=6), first(cfg, global_batch_size=6)
    assert train["image"].shape == (6, 24, 128, 1) and train["image"].dtype == np.float32
    np.testing.assert_array_equal(train["image"], again["image"])  # SpecAugment keyed on (seed, epoch, id)
    assert (train["image"] == 0).all(axis=(2, 3)).any()  # time masks: whole frames set to 0 (raw log-mel)
    evals = first(cfg, "test", train=False, global_batch_size=6)
    low, high = evals["image"][evals["label"][:, 0] == 1], evals["image"][evals["label"][:, 1] == 1]
    assert low.mean(axis=(0, 1, 3)).argmax() < high.mean(axis=(0, 1, 3)).argmax()  # 500 Hz below 1 kHz
    np.testing.assert_allclose(data.normalize(evals["image"], (-4.0,), (8.0,)), (evals["image"] + 4) / 8, rtol=1e-5)


@pytest.mark.parametrize("recipe", ["vit_b_tome", "deit_s_tome", "finetune_tome", "mae_finetune_tome",
                                    "mae_pretrain", "video_tome", "audio_tome"])
@pytest.mark.parametrize("arg", [None, "runlocal"])
def test_every_recipe_data_config_resolves_with_typed_options(recipe, arg):
    import importlib

    module = importlib.import_module(f"configs.{recipe}")
    config = module.get_config(arg) if arg else module.get_config()
    cfg = data.resolve_config(config.data)
    expected = {"moving_digits": clips.MovingDigitsOptions(frames=8, speed=1),
                "clipfolder": clips.ClipFolderOptions(frames=16, stride=4)}.get(cfg.name)
    if expected is not None:
        assert cfg.options == expected


def test_the_command_line_checks_source_options_like_every_field():
    from configs import video_tome
    from tome_jax import cli

    config = video_tome.get_config("runlocal")
    cli.check_overrides(config, [("data.options.frames", "4")])
    with pytest.raises(cli.ConfigError, match="no field 'frame' in config.data.options. Did you mean: frames"):
        cli.check_overrides(config, [("data.options.frame", "4")])
    with pytest.raises(cli.ConfigError, match="expected int"):
        cli.check_overrides(config, [("data.options.frames", "four")])
