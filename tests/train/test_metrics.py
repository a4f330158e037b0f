"""metrics.jsonl and TensorBoard events, read back by TensorBoard's own reader."""

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from tome_jax.train import metrics as metrics_lib


def tensorboard_scalars(workdir) -> dict[str, dict[int, float]]:
    """What TensorBoard shows: {tag: {step: value}} from the workdir's event files."""
    accumulator = event_accumulator.EventAccumulator(str(workdir / "tensorboard"))
    accumulator.Reload()
    return {tag: {e.step: e.value for e in accumulator.Scalars(tag)} for tag in accumulator.Tags()["scalars"]}


def test_tensorboard_reads_every_scalar_we_write(tmp_path):
    writer = metrics_lib.MetricWriter(tmp_path)
    for step in range(1, 4):
        writer.write(step, {"train/loss": 1.0 / step, "eval/top1": 90.0 + step})
    writer.close()
    scalars = tensorboard_scalars(tmp_path)
    assert sorted(scalars) == ["eval/top1", "train/loss"]
    assert scalars["eval/top1"] == {1: 91.0, 2: 92.0, 3: 93.0}
    np.testing.assert_allclose([scalars["train/loss"][s] for s in (1, 2, 3)], [1.0, 0.5, 1 / 3], rtol=1e-6)


def test_a_resumed_run_replaces_the_steps_after_its_checkpoint_in_tensorboard(tmp_path):
    """The first run logged steps 1-4 and was killed after its step-2 checkpoint; the restart logs 3-5.
    TensorBoard shows steps 1-2 of the first run and 3-5 of the second, once each, for every tag,
    even when the restart comes within the same second (event files are named by the second)."""
    first = metrics_lib.MetricWriter(tmp_path)
    for step in range(1, 5):
        first.write(step, {"train/loss": 10.0 + step, "eval/top1": 50.0 + step})
    first.close()
    second = metrics_lib.MetricWriter(tmp_path, resume_step=2)
    for step in range(3, 6):
        second.write(step, {"train/loss": 20.0 + step})
    second.close()
    scalars = tensorboard_scalars(tmp_path)
    assert scalars["train/loss"] == {1: 11.0, 2: 12.0, 3: 23.0, 4: 24.0, 5: 25.0}
    assert scalars["eval/top1"] == {1: 51.0, 2: 52.0}
    assert [r["step"] for r in metrics_lib.read_metrics(tmp_path)] == [1, 2, 3, 4, 5]


def test_interval_timer_leaves_evals_and_saves_out_of_the_same_interval():
    """4 steps of 1 s with a 10 s eval after step 2 and a 5 s save after step 4: 4 steps in 4 s of
    training. (The loop used to restart the interval's clock after an eval but keep its step count:
    4 steps over the 2 s after the eval, twice the real rate.)"""
    now = [100.0]
    timer = metrics_lib.IntervalTimer(clock=lambda: now[0])
    for step in range(1, 5):
        now[0] += 1.0
        timer.step()
        if step == 2:
            with timer.paused():
                now[0] += 10.0
        if step == 4:
            with timer.paused():
                now[0] += 5.0
    assert timer.end() == (4, 4.0)
    now[0] += 3.0
    timer.step()
    assert timer.end() == (1, 3.0)  # the next interval starts at the end of the last
