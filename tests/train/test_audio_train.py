"""The audio demo end to end: synthetic multi-label clips -> spectrogram ViT with ToMe -> mAP over r."""

import numpy as np

from configs.audio_tome import get_config
from tome_jax.data import make_source
from tome_jax.train import evaluate, report, train_and_evaluate
from tome_jax.train.tasks import multilabel_metrics
from tome_jax.train.metrics import read_metrics


def tiny_audio_config():
    config = get_config("runlocal")
    config.model.update(dict(img_size=(64, 128), embed_dim=32, depth=2, num_heads=2))
    config.tome.r = 4  # 33 -> 29 -> 25 tokens
    config.data.options.update(dict(num_frames=64, clip_seconds=0.64, num_clips=(192, 64), time_mask=12))
    config.batch_size = 32
    config.total_steps = 36
    config.warmup_steps = 4
    config.optimizer.lr = 3e-3
    config.log_every_steps = 1
    config.eval_every_steps = 1000
    config.checkpoint_every_steps = 1000
    return config


def test_the_audio_demo_learns_and_sweeps_r_with_map(tmp_path):
    config = tiny_audio_config()
    summary = train_and_evaluate(config, str(tmp_path))
    losses = [m["train/loss"] for m in read_metrics(str(tmp_path)) if "train/loss" in m]
    assert np.mean(losses[-6:]) < 0.8 * np.mean(losses[:3])
    # Chance: the mAP of random scores on the same eval clips (~25 %); 36 steps reach ~38 %.
    labels = make_source(config.data, config.data.split_eval).labels
    rng = np.random.default_rng(0)
    chance = np.mean([multilabel_metrics(rng.uniform(size=labels.shape), labels)["mAP"] for _ in range(20)])
    assert summary["task"] == "multilabel" and summary["eval_mAP"] > chance + 8, (summary, chance)
    model, _ = evaluate.load_model(config, str(tmp_path), None)
    results = evaluate.sweep(config, model, [0, 4], batch_size=32, repeats=1)
    assert [row["tokens_out"] for row in results] == [33, 25] and results[1]["gflops"] < results[0]["gflops"]
    assert abs(results[1]["mAP"] - summary["eval_mAP"]) < 1e-6  # the run's own schedule reproduces its eval
    assert "mAP %" in report.format_table(results).splitlines()[0]
