"""Metrics to a JSON-lines file and TensorBoard events in the workdir (process 0 only)."""

from __future__ import annotations

import json
import os

import jax


class MetricWriter:
    """`write(step, {"train/loss": ...})` appends one JSON line and TensorBoard scalars."""

    def __init__(self, workdir: str):
        self.active = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if self.active:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict) -> None:
        if not self.active:
            return
        metrics = {k: float(v) for k, v in metrics.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), **metrics}) + "\n")
        for key, value in metrics.items():
            self._tb.add_scalar(key, value, int(step))
        self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
    """All JSON lines written so far (for plots and tests)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
