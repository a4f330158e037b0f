"""Losses and evaluators of the loop's tasks (classification, multi-label, segmentation, reconstruction)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tome_jax.train import tasks


def config(task, smoothing=0.0):
    return ml_collections.ConfigDict(dict(task=task, label_smoothing=smoothing, mixup=dict(
        mixup_alpha=0.0, cutmix_alpha=0.0, switch_prob=0.5)))


class Linear:
    """A stand-in model: logits = mean over pixels @ w."""

    num_classes = 3

    def __init__(self, w):
        self.w = w

    def __call__(self, images):
        return images.mean(axis=(1, 2)) @ self.w

    def reconstruction_loss(self, images, key):
        return (images**2).mean(axis=(1, 2, 3)) + 0.0 * jax.random.uniform(key)


def test_multilabel_loss_is_sigmoid_cross_entropy_over_unmasked_rows():
    w = jnp.array([[1.0, -2.0, 0.5]])
    images = jnp.arange(4, dtype=jnp.float32).reshape(4, 1, 1, 1)
    labels = jnp.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    mask = jnp.array([True, True, True, False])
    loss, _ = tasks.make_task(config("multilabel")).loss(Linear(w), dict(image=images, label=labels, mask=mask),
                                                         jax.random.key(0))
    logits = np.arange(4.0)[:, None] * np.array([1.0, -2.0, 0.5])
    labels = np.asarray(labels)
    bce = np.log1p(np.exp(-logits)) * labels + np.log1p(np.exp(logits)) * (1 - labels)
    assert float(loss) == pytest.approx(float(bce[:3].mean()), rel=1e-5)


def test_mean_average_precision_by_hand():
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.2, 0.6], [0.1, 0.9]])
    labels = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    # class 0: positives ranked 1st and 3rd -> AP = (1/1 + 2/3) / 2; class 1: its positive ranked 2nd -> 1/2.
    out = tasks.multilabel_metrics(scores, labels)
    assert out["mAP"] == pytest.approx(100 * ((1 + 2 / 3) / 2 + 0.5) / 2)
    assert "top1" not in out  # not single-label
    masked = tasks.multilabel_metrics(scores, labels, mask=np.array([1, 1, 1, 0]))
    assert masked["count"] == 3
    single = tasks.multilabel_metrics(scores[:3], np.array([[1, 0], [0, 1], [0, 1]]))
    assert single["top1"] == pytest.approx(100 * 2 / 3)  # row 1 ranks class 0 first


def test_eval_accumulation_sums_scalars_and_concatenates_arrays():
    task = tasks.make_task(config("multilabel"))
    model = Linear(jnp.eye(1, 3))
    totals = None
    for start in (0, 2):
        batch = dict(image=jnp.arange(start, start + 2, dtype=jnp.float32).reshape(2, 1, 1, 1),
                     label=jnp.array([[1, 0, 0], [0, 1, 0]]), mask=jnp.array([True, start == 0]))
        totals = tasks.accumulate(totals, task.eval_batch(model, batch))
    out = tasks.finish(task, totals)
    # The same as one pass over the 3 unmasked rows (logits [x, 0, 0] for x = 0, 1, 2): a lost batch or
    # a masked row counted would change the count or class 1's ranking.
    whole = tasks.multilabel_metrics(np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]),
                                     np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]]))
    assert out["count"] == 3 and out["mAP"] == pytest.approx(whole["mAP"])


def test_classification_and_reconstruction_tasks():
    batch = dict(image=jnp.ones((2, 2, 2, 1)), label=jnp.array([0, 2]), mask=jnp.array([True, True]))
    model = Linear(jnp.array([[0.0, 0.0, 1.0]]))
    cls = tasks.make_task(config("classification"))
    loss, metrics = cls.loss(model, batch, jax.random.key(0))
    assert float(metrics["accuracy"]) == 0.5 and np.isfinite(float(loss))
    out = cls.finalize(cls.eval_batch(model, batch))
    assert out == {"top1": 50.0, "top5": 100.0, "count": 2}
    rec = tasks.make_task(config("reconstruction"))
    assert float(rec.loss(model, batch, jax.random.key(0))[0]) == pytest.approx(1.0)
    assert rec.finalize(rec.eval_batch(model, batch))["loss"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown config.task 'detection'.*classification"):
        tasks.make_task(config("detection"))


def test_segmentation_loss_and_miou_by_hand():
    """Per-pixel cross-entropy over unmasked images; mIoU from the confusion matrix, classes that occur."""
    task = tasks.make_task(config("segmentation"))
    labels = jnp.array([[[0, 1], [1, 2]], [[0, 0], [0, 0]]])  # [B=2, H=2, W=2]; image 1 is padding
    logits = 5.0 * jax.nn.one_hot(jnp.array([[[0, 1], [2, 2]], [[1, 1], [1, 1]]]), 4)  # predicts class 2 for one 1
    model = lambda images: logits  # noqa: E731
    batch = dict(image=jnp.zeros((2, 2, 2, 1)), label=labels, mask=jnp.array([True, False]))
    loss, metrics = task.loss(model, batch, jax.random.key(0))
    per_pixel = -jax.nn.log_softmax(logits[0], axis=-1)[jnp.arange(2)[:, None], jnp.arange(2)[None, :], labels[0]]
    assert float(loss) == pytest.approx(float(per_pixel.mean()), rel=1e-6)
    assert float(metrics["pixel_accuracy"]) == pytest.approx(0.75)
    out = tasks.finish(task, tasks.accumulate(None, task.eval_batch(model, batch)))
    # class 0: 1/1; class 1: hit 1, union 2 -> 1/2; class 2: hit 1, union 2 -> 1/2; class 3 absent.
    assert out["mIoU"] == pytest.approx(100 * (1 + 0.5 + 0.5) / 3)
    assert out["pixel_accuracy"] == pytest.approx(75.0) and out["count"] == 1
