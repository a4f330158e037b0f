"""Metrics to a JSON-lines file and TensorBoard events in the workdir (process 0 only), and the
training time of each log interval (`IntervalTimer`: evals and saves left out).

On a bucket both go through the workdir's own path type (etils epath), like every other file of the
run: tensorboardX writes its event file into a local temporary folder and each flush replaces the
bucket's copy whole (objects cannot be appended to), as metrics.jsonl is."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from typing import Callable

import jax
from etils import epath

from tome_jax.train import workdir as workdir_lib


class IntervalTimer:
    """Steps and training seconds of one log interval, with the time of evals and saves left out, so
    images/s and the data-wait fraction divide the same interval's work by the same interval's time.

        timer.step()                      # after each train step
        with timer.paused(state): ...     # an eval or a checkpoint save
        steps, seconds = timer.end()      # at a log step; the next interval starts

    clock: seconds (time.perf_counter; a fake clock in tests).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self._start, self._steps, self._paused = clock(), 0, 0.0

    def step(self) -> None:
        self._steps += 1

    @contextlib.contextmanager
    def paused(self, pending=None):
        """Time inside the block is not training time. pending: arrays the interval's steps are still
        computing (the train state, dispatched asynchronously): waited for first, as training time."""
        if pending is not None:
            jax.block_until_ready(pending)
        start = self.clock()
        try:
            yield
        finally:
            self._paused += self.clock() - start

    def end(self) -> tuple[int, float]:
        """(steps, training seconds) of the interval since the last `end` (or the start)."""
        now = self.clock()
        steps, seconds = self._steps, now - self._start - self._paused
        self._start, self._steps, self._paused = now, 0, 0.0
        return steps, seconds


class MetricWriter:
    """`write(step, {"train/loss": ...})` appends one JSON line and TensorBoard scalars.

    resume_step: the step the run restarts from; lines after it (written after that checkpoint by a
    run that was then killed) are dropped, and TensorBoard purges its events after it, so a resumed
    run logs every step once."""

    def __init__(self, workdir: str | epath.Path, resume_step: int | None = None):
        workdir = workdir_lib.resolve(workdir)
        self.active = jax.process_index() == 0
        self.path = workdir / "metrics.jsonl"
        self._local = workdir_lib.is_local(self.path)
        self._lines = []  # the whole file, kept for remote storage (objects cannot be appended to)
        self._tb, self._tb_staging = None, None
        if not self.active:
            return
        if self.path.exists():
            kept = [json.dumps(r) + "\n" for r in _parse(self.path.read_text())
                    if resume_step is not None and r["step"] <= resume_step]
            workdir_lib.write_text(self.path, "".join(kept))
            self._lines = kept
        from tensorboardX import SummaryWriter

        self.tb_dir = workdir / "tensorboard"
        if not self._local:  # written locally, copied to the bucket at each flush (`_publish`)
            self.tb_dir.mkdir(parents=True, exist_ok=True)
            self._tb_staging = tempfile.mkdtemp(prefix="tome_jax_tensorboard_")
        purge = None if resume_step is None else resume_step + 1
        # Event files are named by the second and the host; a restart within the same second would
        # overwrite the previous file, so the name also gets a suffix that sorts in time order.
        self._tb = SummaryWriter(self._tb_staging or os.fspath(self.tb_dir), purge_step=purge,
                                 filename_suffix=f".{time.time_ns()}")

    def write(self, step: int, metrics: dict) -> None:
        if not self.active:
            return
        metrics = {k: float(v) for k, v in metrics.items()}
        line = json.dumps({"step": int(step), **metrics}) + "\n"
        if self._local:
            with self.path.open("a") as f:
                f.write(line)
        else:
            self._lines.append(line)
            self.path.write_text("".join(self._lines))
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, value, int(step))
            self._tb.flush()
            self._publish()

    def _publish(self) -> None:
        """Copy the staged event file(s) to the bucket's tensorboard/ folder, replacing the older copy."""
        if self._tb_staging is not None:
            for name in os.listdir(self._tb_staging):
                with open(os.path.join(self._tb_staging, name), "rb") as f:
                    (self.tb_dir / name).write_bytes(f.read())

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._publish()
            self._tb = None
        if self._tb_staging is not None:
            shutil.rmtree(self._tb_staging, ignore_errors=True)
            self._tb_staging = None


def _parse(text: str) -> list[dict]:
    """JSON lines; a torn last line (a run killed mid-write) is skipped."""
    rows, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise
    return rows


def read_metrics(workdir: str | epath.Path) -> list[dict]:
    """All JSON lines written so far (for plots and tests); tolerates a torn last line."""
    path = workdir_lib.resolve(workdir) / "metrics.jsonl"
    return _parse(path.read_text()) if path.exists() else []
