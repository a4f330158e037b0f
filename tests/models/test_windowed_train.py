"""The dense demo end to end: configs/dense_tome.py:runlocal shrunk to a few dozen steps trains the
windowed ViT with merging (random destinations, r=8 of 16 tokens per window) on dense_digits and
segments held-out canvases well above what predicting the background everywhere scores."""

import json

import pytest

from configs.dense_tome import get_config
from tome_jax import data as data_lib
from tome_jax.train import train_and_evaluate


def tiny_config():
    config = get_config("runlocal")
    config.model.update(dict(img_size=16, patch_size=2, embed_dim=32, depth=2, num_heads=2, window_size=4,
                             global_attn_indexes=(1,)))
    config.tome.r = 8
    config.data.update(dict(image_size=16, options=dict(canvas=16, digits=1, scale=2, examples=256, seed=0)))
    config.batch_size = 32
    config.total_steps = 150  # steps are cheap (~0.1 s); compiling the train and eval steps is most of the test
    config.warmup_steps = 10
    config.optimizer.lr = 3e-3
    config.eval_every_steps = 150
    config.checkpoint_every_steps = 150
    config.log_every_steps = 50
    return config


@pytest.mark.slow  # ~25 s, mostly compiling; the parts are covered fast: test_tasks (segmentation), test_windowed,
# tests/data/test_dense_digits.py
def test_dense_demo_learns_to_segment(tmp_path):
    config = tiny_config()
    summary = train_and_evaluate(config, str(tmp_path))
    masks = data_lib.make_source(config.data, "test").masks
    background = float((masks == 0).mean())
    # Predicting the background everywhere scores pixel accuracy = the background share (68%) and mIoU =
    # that / 11 (6.2%); finding the digits' pixels (even with the wrong digit) adds a few points to both,
    # naming the digits more. Misaligned masks or a broken merge / unmerge / loss stay at the floor.
    assert summary["eval_pixel_accuracy"] > 100 * background + 2
    assert summary["eval_mIoU"] > 100 * background / 11 + 2
    assert json.loads((tmp_path / "summary.json").read_text())["tome_r"] == 8
