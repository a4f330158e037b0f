"""What a training run optimizes and how it is evaluated: `config.task` picks one of `TASKS`.

A task knows the loss (traced inside the jitted train step), what the eval runs the model for
(`outputs`, e.g. logits), what one eval batch contributes given those outputs (`score`; both traced
inside jitted eval programs) and how the host turns the accumulated eval values into the reported
metrics. `outputs` is the only part that depends on the token-reduction schedule, so an r-sweep
compiles one program per r (the same one it times) and one `score` for all. The loop itself knows
nothing about labels, classes or pixels.

- "classification": softmax cross-entropy with label smoothing and mixup/cutmix; top-1 / top-5.
- "multilabel": sigmoid cross-entropy on multi-hot labels [B, K] with mixup; mAP (and top-1 where
  each example has exactly one positive label).
- "segmentation": per-pixel softmax cross-entropy on masks int32 [B, H, W] against logits
  [B, H, W, K]; mIoU (mean over the classes present in labels or predictions) and pixel accuracy.
- "reconstruction": the model's own loss hook, `model.reconstruction_loss(images, key) -> [B]`
  (e.g. MAE pre-training); the eval reports the mean loss.
- "diffusion": DDPM's epsilon loss of a class-conditional denoiser (`model(x_t, t, y)`, a DiT) on the
  images as x_0 (`tome_jax.models.diffusion`), with the labels replaced by the model's null class at
  rate `config.diffusion.class_dropout` (classifier-free guidance); the eval reports the mean loss.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from tome_jax import data as data_lib
from tome_jax.models import diffusion


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    mask = mask.astype(jnp.float32)
    return (values * mask).sum() / jnp.maximum(mask.sum(), 1)


class Task:
    """Base: subclasses define `loss`, `score`, `finalize`, the headline metric and, when the eval
    needs more than the model's forward, `outputs`."""

    headline = "loss"

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    def loss(self, model, batch: dict, key: jax.Array) -> tuple[jax.Array, dict]:
        """-> (scalar loss, {name: scalar} train metrics). Traced inside the train step."""
        raise NotImplementedError

    def outputs(self, model, batch: dict) -> jax.Array:
        """What the eval runs the model for, given a batch with normalized images [B, ...]: its
        forward (logits) by default."""
        return model(batch["image"])

    def score(self, outputs: jax.Array, batch: dict) -> dict:
        """`outputs` of one batch -> {name: array}: scalars are summed over batches, arrays [B, ...]
        concatenated (masked rows included; `finalize` drops them with the "mask" entry)."""
        raise NotImplementedError

    def eval_batch(self, model, batch: dict) -> dict:
        """`score` of `outputs` for a batch with normalized images (one jitted program)."""
        return self.score(self.outputs(model, batch), batch)

    def finalize(self, totals: dict) -> dict:
        """Accumulated eval values -> reported metrics (host side, NumPy)."""
        raise NotImplementedError


class Classification(Task):
    headline = "top1"

    def loss(self, model, batch, key):
        config = self.config
        targets = jax.nn.one_hot(batch["label"], model.num_classes)
        targets = optax.smooth_labels(targets, config.label_smoothing)
        images, targets = data_lib.mixup_cutmix(batch["image"], targets, key, config.mixup.mixup_alpha,
                                                config.mixup.cutmix_alpha, config.mixup.switch_prob)
        logits = model(images).astype(jnp.float32)
        loss = _masked_mean(optax.softmax_cross_entropy(logits, targets), batch["mask"])
        accuracy = _masked_mean(logits.argmax(-1) == batch["label"], batch["mask"])
        return loss, {"accuracy": accuracy}

    def score(self, logits, batch):
        top = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
        hits = top == batch["label"][:, None]
        mask = batch["mask"]
        return {"top1": (hits[:, 0] & mask).sum(), "top5": (hits.any(-1) & mask).sum(), "count": mask.sum()}

    def finalize(self, totals):
        n = max(int(totals["count"]), 1)
        return {"top1": 100.0 * int(totals["top1"]) / n, "top5": 100.0 * int(totals["top5"]) / n,
                "count": int(totals["count"])}


class MultiLabel(Task):
    headline = "mAP"

    def loss(self, model, batch, key):
        config = self.config
        targets = batch["label"].astype(jnp.float32)
        targets = targets * (1.0 - config.label_smoothing) + 0.5 * config.label_smoothing
        images, targets = data_lib.mixup_cutmix(batch["image"], targets, key, config.mixup.mixup_alpha,
                                                config.mixup.cutmix_alpha, config.mixup.switch_prob)
        logits = model(images).astype(jnp.float32)
        loss = _masked_mean(optax.sigmoid_binary_cross_entropy(logits, targets).mean(-1), batch["mask"])
        return loss, {}

    def score(self, logits, batch):
        return {"scores": jax.nn.sigmoid(logits.astype(jnp.float32)),
                "labels": batch["label"], "mask": batch["mask"]}

    def finalize(self, totals):
        return multilabel_metrics(totals["scores"], totals["labels"], totals["mask"])


def multilabel_metrics(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """mAP (%) = mean over classes with at least one positive of the average precision (AudioSet's
    convention); also top-1 (%) when every example has exactly one positive label."""
    from sklearn.metrics import average_precision_score

    keep = np.ones(len(scores), bool) if mask is None else np.asarray(mask, bool)
    scores, labels = np.asarray(scores, np.float64)[keep], np.asarray(labels)[keep] > 0.5
    present = labels.any(axis=0)
    out = {"count": int(keep.sum()), "classes_scored": int(present.sum())}
    out["mAP"] = 100.0 * float(average_precision_score(labels[:, present], scores[:, present], average="macro")) \
        if present.any() else float("nan")
    if (labels.sum(axis=1) == 1).all():
        out["top1"] = 100.0 * float((scores.argmax(1) == labels.argmax(1)).mean())
    return out


class Reconstruction(Task):
    headline = "loss"

    def loss(self, model, batch, key):
        return _masked_mean(model.reconstruction_loss(batch["image"], key), batch["mask"]), {}

    def outputs(self, model, batch):
        # A fixed key: the eval loss of a checkpoint is one number, whatever the step.
        return model.reconstruction_loss(batch["image"], jax.random.key(0))  # [B]

    def score(self, losses, batch):
        mask = batch["mask"]
        return {"loss_sum": (losses * mask).sum(), "count": mask.sum()}

    def finalize(self, totals):
        return {"loss": float(totals["loss_sum"]) / max(int(totals["count"]), 1), "count": int(totals["count"])}


class Segmentation(Task):
    headline = "mIoU"

    def loss(self, model, batch, key):
        logits = model(batch["image"]).astype(jnp.float32)  # [B, H, W, K]
        labels = batch["label"]
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(axis=(1, 2))
        accuracy = (logits.argmax(-1) == labels).mean(axis=(1, 2))
        return _masked_mean(losses, batch["mask"]), {"pixel_accuracy": _masked_mean(accuracy, batch["mask"])}

    def score(self, logits, batch):
        num_classes = logits.shape[-1]
        pairs = batch["label"] * num_classes + logits.argmax(-1)  # [B, H, W]: true * K + predicted
        weight = jnp.broadcast_to(batch["mask"][:, None, None], pairs.shape).astype(jnp.int32)
        confusion = jnp.zeros(num_classes * num_classes, jnp.int32).at[pairs.reshape(-1)].add(weight.reshape(-1))
        return {"confusion": confusion.reshape(1, num_classes, num_classes), "count": batch["mask"].sum()}

    def finalize(self, totals):
        return segmentation_metrics(np.asarray(totals["confusion"]).sum(axis=0), int(totals["count"]))


def segmentation_metrics(confusion: np.ndarray, count: int) -> dict:
    """confusion [K, K] pixel counts (row: true class, column: predicted) -> mIoU (%) over the classes
    that occur in the labels or the predictions, and pixel accuracy (%)."""
    confusion = np.asarray(confusion, np.float64)
    hits = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - hits
    iou = np.where(union > 0, hits / np.maximum(union, 1), np.nan)
    return {"mIoU": 100.0 * float(np.nanmean(iou)), "pixel_accuracy": 100.0 * float(hits.sum() / max(confusion.sum(), 1)),
            "count": count}


class Diffusion(Reconstruction):
    """Reports what Reconstruction does (the mean eval loss)."""

    def loss(self, model, batch, key):
        drop_key, loss_key = jax.random.split(key)
        labels = batch["label"]
        dropped = jax.random.uniform(drop_key, labels.shape) < self.config.diffusion.class_dropout
        labels = jnp.where(dropped, model.null_class, labels)
        losses = diffusion.epsilon_loss(model, batch["image"], labels, loss_key, self.config.diffusion.steps)
        return _masked_mean(losses, batch["mask"]), {}

    def outputs(self, model, batch):
        # A fixed key (the same timesteps and noise at every eval), the true labels.
        return diffusion.epsilon_loss(model, batch["image"], batch["label"], jax.random.key(0),
                                      self.config.diffusion.steps)  # [B]


TASKS = {"classification": Classification, "multilabel": MultiLabel, "segmentation": Segmentation,
         "reconstruction": Reconstruction, "diffusion": Diffusion}


def make_task(config: ml_collections.ConfigDict) -> Task:
    name = config.get("task", "classification")
    if name not in TASKS:
        raise ValueError(f"unknown config.task {name!r}; known tasks: {', '.join(TASKS)}.")
    return TASKS[name](config)


def accumulate(totals: dict | None, out: dict[str, Any]) -> dict:
    """Host-side accumulation of `eval_batch` outputs: scalars summed, arrays concatenated."""
    out = {k: np.asarray(v) for k, v in out.items()}
    if totals is None:
        return {k: (v if v.ndim == 0 else [v]) for k, v in out.items()}
    for k, v in out.items():
        if v.ndim == 0:
            totals[k] = totals[k] + v
        else:
            totals[k].append(v)
    return totals


def finish(task: Task, totals: dict | None) -> dict:
    if totals is None:
        raise ValueError("the eval split gave no batches; check data.split_eval.")
    return task.finalize({k: (np.concatenate(v) if isinstance(v, list) else v) for k, v in totals.items()})
