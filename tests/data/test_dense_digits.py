"""dense_digits: canvases of pasted digits with per-pixel masks (no download)."""

import numpy as np
import pytest

from tome_jax import data as data_lib
from tome_jax.data import dense_digits


def test_masks_mark_the_pasted_digits_ink():
    cfg = dict(name="dense_digits", image_size=24, options=dict(canvas=24, digits=2, scale=2, examples=12))
    source = data_lib.make_source(cfg, "test")
    batch = source.batch_reader(data_lib.resolve_config(cfg))(np.arange(12))
    images, masks = batch["image"], batch["label"]
    assert images.shape == (12, 24, 24, 3) and images.dtype == np.uint8
    assert masks.shape == (12, 24, 24) and masks.dtype == np.int32
    assert 0 <= masks.min() and masks.max() <= 10 and source.num_classes == 11
    ink = masks > 0
    brightness = images.astype(np.float32).max(axis=-1)
    assert brightness[ink].mean() > brightness[~ink].mean() + 60  # the digits are drawn where the masks say
    assert 1 <= len(np.unique(masks[0])) - 1 <= 2  # up to two digits per canvas (one may hide the other)
    again = data_lib.make_source(cfg, "test")
    np.testing.assert_array_equal(again.images, source.images)  # drawn from (split, seed, index)
    train = data_lib.make_source(cfg, "train")
    assert not np.array_equal(train.masks, source.masks)


def test_options_are_checked():
    digits = np.zeros((1, 8, 8), np.float32)
    with pytest.raises(ValueError, match="canvas"):
        dense_digits.make_canvases(digits, np.zeros(1, int), dense_digits.DenseDigitsOptions(canvas=8, scale=2), 1, 0)
    cfg = dict(name="dense_digits", image_size=16, options=dict(canvas=24))
    with pytest.raises(ValueError, match="image_size"):
        data_lib.make_source(cfg, "test").batch_reader(data_lib.resolve_config(cfg))
