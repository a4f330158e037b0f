"""Fault injection on the tiny digits run: preemption, kills mid-save, corrupt checkpoints, NaN, full
disk, config changes, another host count, and a non-local workdir. Each ends with nothing lost and,
where the semantics allow, the parameters of an uninterrupted run. RELIABILITY.md maps faults to tests."""

import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.train import memory_path
from tests.train.test_loop import ROOT, TINY, final_params, run_train, tiny_config
from tome_jax.train import metrics as metrics_lib
from tome_jax.train import resume, train_and_evaluate
from tome_jax.train import workdir as workdir_lib
from tome_jax.train.loop import build_model
from tome_jax.train.checkpoint import (Checkpointer, HostCountError, NonFiniteStateError, TransientReadError,
                                       UnreadableCheckpointsError)


def assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def steps_logged(workdir):
    return [m["step"] for m in metrics_lib.read_metrics(workdir) if "train/loss" in m]


@pytest.fixture
def finished_run(finished_tiny_run):
    """An uninterrupted 8-step run (checkpoints 4 and 8) and its final parameters (tests/conftest.py)."""
    return finished_tiny_run


def copy_run(finished_run, tmp_path):
    shutil.copytree(finished_run[0], tmp_path / "run")
    return tmp_path / "run"


# ----------------------------------------------------------------------------- corrupt checkpoints


def _missing_state(step_dir):
    shutil.rmtree(step_dir / "state")


def _truncated_arrays(step_dir):
    for f in glob.glob(str(step_dir / "state" / "**" / "d" / "*"), recursive=True):
        with open(f, "r+b") as fh:
            fh.truncate(10)


def _corrupt_iterator(step_dir):
    (step_dir / "data" / "process_0-of-1.json").write_text("{not json")


def _empty_folder(step_dir):
    shutil.rmtree(step_dir)
    step_dir.mkdir()


def _truncated(name):
    """Cut one file of the step to 7 bytes (a torn write)."""
    def corrupt(step_dir):
        with open(step_dir / name, "r+b") as fh:
            fh.truncate(7)
    return corrupt


# Each file of the latest checkpoint in turn (config item, state metadata, array data, the data
# iterator's position, the step's own metadata), plus whole items missing: the restart falls back to
# step 4 (the broken step kept aside) or, where orbax does not need the file, resumes at step 8.
CORRUPTIONS = {
    "truncated_config": (_truncated("config/metadata"), "fall back"),
    "truncated_state_metadata": (_truncated("state/_METADATA"), "fall back"),
    "truncated_arrays": (_truncated_arrays, "fall back"),
    "corrupt_iterator": (_corrupt_iterator, "fall back"),
    "truncated_step_metadata": (_truncated("_CHECKPOINT_METADATA"), "resume"),
    "missing_state": (_missing_state, "fall back"),
    "empty_folder": (_empty_folder, "fall back"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_unreadable_latest_checkpoint_falls_back_to_the_previous_and_reaches_the_same_parameters(
        finished_run, tmp_path, name):
    corrupt, outcome = CORRUPTIONS[name]
    run = copy_run(finished_run, tmp_path)
    corrupt(run / "checkpoints" / "8")
    (run / "summary.json").unlink()
    train_and_evaluate(tiny_config(), str(run))  # never crashes
    names = sorted(os.listdir(run / "checkpoints"))
    if outcome == "fall back":
        assert names[:2] == ["4", "8"] and names[2].startswith("8.unreadable-")  # the broken one is kept
    else:
        assert names == ["4", "8"]
    assert_same_params(final_params(run)[1], finished_run[1])
    assert steps_logged(run) == list(range(1, 9))  # steps 5..8 are logged once, not twice


# ----------------------------------------------------------------------------- transient read errors


class FlakyIterator:
    """A data iterator whose position fails to load `failures` times with a transient error, as a
    bucket read of `process_0-of-1.json` that timed out; grain's handler calls set_state."""

    def __init__(self, failures: int):
        self.failures, self.state = failures, None

    def set_state(self, state):
        if self.failures > 0:
            self.failures -= 1
            raise TimeoutError("read of process_0-of-1.json timed out")
        self.state = state

    def start_prefetch(self):
        pass


def abstract_state(ckpt, step):
    """The saved train state's shapes and dtypes, on this device."""
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        ckpt.manager.item_metadata(step)["state"])


def fail_init():
    raise AssertionError("a fresh state must not be made: the checkpoint is readable")


@pytest.mark.parametrize("failures", [2, 3])
def test_transient_read_errors_are_retried_and_never_make_the_run_fall_back(finished_run, tmp_path, failures):
    """2 failures: the third attempt restores step 8. 3 (all attempts): the run stops with
    TransientReadError; in neither case is an older step used or step 8 renamed."""
    run = copy_run(finished_run, tmp_path)
    sleeps = []
    ckpt = Checkpointer(run / "checkpoints", keep=2, create=False, read_attempts=3, retry_delay=0.5,
                        sleep=sleeps.append)
    iterator = FlakyIterator(failures)
    if failures < 3:
        step, state, config = resume.restore_or_init(ckpt, abstract_state(ckpt, 8), iterator, fail_init)
        assert step == 8 and config["total_steps"] == 8 and iterator.state is not None
        assert_same_params(state["params"], finished_run[1])
    else:
        with pytest.raises(TransientReadError, match=r"step 8 .* failed 3 times .*TimeoutError.*nothing was renamed"):
            resume.restore_or_init(ckpt, abstract_state(ckpt, 8), iterator, fail_init)
    assert sleeps == [0.5, 1.0]  # backoff between the attempts
    assert sorted(os.listdir(run / "checkpoints")) == ["4", "8"]


def test_a_flaky_bucket_read_is_retried_and_a_corrupt_file_is_not(finished_run):
    """The same rule on the in-memory bucket, for a file read through epath (the config item):
    timeouts are retried, a torn file is an error at once (the loop then falls back)."""
    local = finished_run[0] / "checkpoints"
    for path in local.rglob("*"):
        if path.is_file():
            memory_path.FS.pipe(f"/flaky/run/checkpoints/{path.relative_to(local)}", path.read_bytes())
    sleeps = []
    ckpt = Checkpointer("memtest://flaky/run/checkpoints", keep=2, create=False, retry_delay=1.0,
                        sleep=sleeps.append)
    assert ckpt.all_steps() == [4, 8]
    with memory_path.flaky_reads("8/config/metadata", times=2):
        config = ckpt.read_with_retries(8, lambda: ckpt.saved_config(8))
    assert config["total_steps"] == 8 and sleeps == [1.0, 2.0]
    with memory_path.flaky_reads("8/config/metadata", times=3), pytest.raises(TransientReadError):
        ckpt.read_with_retries(8, lambda: ckpt.saved_config(8))
    memory_path.FS.pipe("/flaky/run/checkpoints/8/config/metadata", b'{"seed"')
    sleeps.clear()
    with pytest.raises(json.JSONDecodeError):
        ckpt.read_with_retries(8, lambda: ckpt.saved_config(8))
    assert sleeps == []  # not retried
    memory_path.FS.rm("/flaky", recursive=True)


def test_no_readable_checkpoint_stops_with_the_list_and_deletes_nothing(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    _missing_state(run / "checkpoints" / "8")
    _corrupt_iterator(run / "checkpoints" / "4")
    with pytest.raises(UnreadableCheckpointsError, match=r"(?s)step 8 .*KeyError.*step 4 .*JSONDecodeError"):
        train_and_evaluate(tiny_config(), str(run))
    assert sorted(os.listdir(run / "checkpoints")) == ["4", "8"]


# ----------------------------------------------------------------------------- kills and bookkeeping


def test_kill_during_a_checkpoint_write_resumes_from_the_previous_step(finished_run, tmp_path):
    """The state of a run SIGKILLed while writing step 8: orbax's temporary folder, metrics logged past
    the last checkpoint and a torn last line. The restart cleans up and trains steps 5..8 again."""
    run = copy_run(finished_run, tmp_path)
    os.rename(run / "checkpoints" / "8", run / "checkpoints" / "8.orbax-checkpoint-tmp-1234")
    (run / "summary.json").unlink()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "train/lo')
    assert metrics_lib.read_metrics(run)[-1]["step"] == 8  # readers skip a torn last line
    train_and_evaluate(tiny_config(), str(run))
    assert sorted(os.listdir(run / "checkpoints")) == ["4", "8"]
    assert_same_params(final_params(run)[1], finished_run[1])
    assert steps_logged(run) == list(range(1, 9))


def test_finished_run_restarted_leaves_summary_and_config_alone(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    summary, config = (run / "summary.json").read_bytes(), (run / "config.json").read_bytes()
    assert train_and_evaluate(tiny_config(), str(run)) == json.loads(summary)
    assert "already finished at step 8" in capsys.readouterr().out
    assert (run / "summary.json").read_bytes() == summary and (run / "config.json").read_bytes() == config


def test_restart_with_a_breaking_config_change_is_refused_with_a_diff(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    config = (run / "config.json").read_bytes()
    with pytest.raises(workdir_lib.ConfigChangeError, match=r"(?s)batch_size: 16 -> 32.*seed: 0 -> 1"):
        train_and_evaluate(tiny_config(batch_size=32, seed=1), str(run))
    assert (run / "config.json").read_bytes() == config


def test_a_saved_tome_placeholder_does_not_block_a_resume():
    """Recipes once wrote config.tome.prop_attn=None for "the model's default"; they now leave it out."""
    saved = {"tome": {"r": 16, "method": "bipartite", "prop_attn": None}, "seed": 0}
    now = {"tome": {"r": 16, "method": "bipartite"}, "seed": 0}
    diff = workdir_lib.config_diff(saved, now)
    assert diff == [("tome.prop_attn", None, "<missing>")] and workdir_lib.breaking_changes(diff) == []
    changed = workdir_lib.config_diff(saved, {"tome": {**now["tome"], "prop_attn": False}, "seed": 0})
    assert workdir_lib.breaking_changes(changed) == [("tome.prop_attn", None, False)]
    dropped = workdir_lib.config_diff({"tome": {"r": 16, "prop_attn": False}}, {"tome": {"r": 16}})
    assert workdir_lib.breaking_changes(dropped) == [("tome.prop_attn", False, "<missing>")]


def test_a_saved_init_loader_does_not_block_a_resume_but_a_recipe_that_sets_it_is_refused():
    """init.loader (a dotted loader name) was removed: configs saved with it still resume."""
    saved = {"init": {"weights": "", "skip": ["head"], "loader": "tome_jax.models.audio.load_audiomae"}, "seed": 0}
    now = {"init": {"weights": "", "skip": ["head"]}, "seed": 0}
    diff = workdir_lib.config_diff(saved, now)
    assert diff == [("init.loader", "tome_jax.models.audio.load_audiomae", "<missing>")]
    assert workdir_lib.breaking_changes(diff) == []
    assert workdir_lib.breaking_changes(workdir_lib.config_diff(saved, {**now, "seed": 1})) == [("seed", 0, 1)]
    config = tiny_config()
    config.init.loader = "my_project.load"
    with pytest.raises(ValueError, match="init.loader='my_project.load' is no longer read.*Delete init.loader"):
        build_model(config)


def test_allowed_config_change_keeps_the_old_config_file(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    old = (run / "config.json").read_text()
    train_and_evaluate(tiny_config(total_steps=9, checkpoint_every_steps=100, allow_config_change=True), str(run))
    assert (run / "config.until_step_8.json").read_text() == old
    assert json.loads((run / "config.json").read_text())["total_steps"] == 9
    assert json.loads((run / "summary.json").read_text())["steps"] == 9


def test_another_host_count_is_refused_before_any_compute(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    for step in ("4", "8"):
        data = run / "checkpoints" / step / "data"
        state = (data / "process_0-of-1.json").read_text()
        (data / "process_0-of-1.json").unlink()
        for i in range(2):
            (data / f"process_{i}-of-2.json").write_text(state)
    (run / "summary.json").unlink()
    with pytest.raises(HostCountError, match="written by 2 processes and this run has 1"):
        train_and_evaluate(tiny_config(), str(run))


def test_non_finite_parameters_are_never_saved(finished_run, tmp_path):
    """lr=inf: the loss of step 9 (computed before the update) is finite, the parameters after it are
    not; the save at step 9 is refused and names the last good checkpoint, which is kept."""
    run = copy_run(finished_run, tmp_path)
    config = tiny_config(**{"total_steps": 12, "checkpoint_every_steps": 1, "log_every_steps": 100,
                            "optimizer.lr": float("inf"), "allow_config_change": True})
    with pytest.raises(NonFiniteStateError, match=r"last good checkpoint \(step 8\) is kept"):
        train_and_evaluate(config, str(run))
    assert sorted(os.listdir(run / "checkpoints")) == ["4", "8"]


# ----------------------------------------------------------------------------- workdir


def test_non_local_workdir_writes_nothing_to_the_local_disk(tmp_path, monkeypatch):
    """config.json, metrics.jsonl, summary.json and the start-up checks through a non-local epath
    backend (an in-memory bucket); the working directory stays empty."""
    monkeypatch.chdir(tmp_path)
    workdir = workdir_lib.resolve("memtest://bucket/run")
    assert isinstance(workdir, memory_path.MemoryPath) and str(workdir / "checkpoints") == "memtest://bucket/run/checkpoints"
    assert str(workdir_lib.resolve("gs://bucket/run") / "checkpoints") == "gs://bucket/run/checkpoints"
    workdir_lib.check_writable(workdir, needed_bytes=1 << 40)  # free space is unknown remotely: no refusal
    resume.check_config(workdir, tiny_config(), saved=None, step=None)
    writer = metrics_lib.MetricWriter(workdir)
    writer.write(1, {"train/loss": 2.5})
    writer.write(2, {"train/loss": 2.0})
    metrics_lib.MetricWriter(workdir, resume_step=1)  # a restart from step 1 drops step 2
    workdir_lib.write_text(workdir / "summary.json", json.dumps({"steps": 1}))
    assert resume.finished_summary(workdir, 1, 1) == {"steps": 1}
    assert json.loads((workdir / "config.json").read_text())["batch_size"] == 16
    assert metrics_lib.read_metrics(workdir) == [{"step": 1, "train/loss": 2.5}]
    assert os.listdir(tmp_path) == []


def test_unwritable_or_full_workdir_is_refused_naming_path_and_free_space(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(workdir_lib.WorkdirError, match=r"cannot write to the workdir .*file/run \(.* MiB free\)"):
        workdir_lib.check_writable(workdir_lib.resolve(tmp_path / "file" / "run"))
    with pytest.raises(workdir_lib.WorkdirError, match=r"has .* MiB free but a checkpoint needs about"):
        workdir_lib.check_writable(workdir_lib.resolve(tmp_path / "run"), needed_bytes=1 << 60)


# ----------------------------------------------------------------------------- processes


# train.py under a 20 kB file-size limit, set by the child itself (no fork hook in a threaded parent);
# SIGXFSZ ignored, so writes past the limit fail with EFBIG like on a full disk.
_LIMITED = ("import resource, runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000)); sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.mark.slow
def test_disk_full_during_a_save_is_a_clear_error_and_the_next_start_recovers(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    (run / "summary.json").unlink()
    shutil.rmtree(run / "checkpoints" / "8")
    cmd = [sys.executable, "-c", _LIMITED, os.path.join(ROOT, "train.py"), "--config", os.path.join(ROOT, "configs/vit_b_tome.py:runlocal"),
           "--workdir", str(run), *TINY, "--config.total_steps=8", "--config.warmup_steps=2",
           "--config.checkpoint_every_steps=4"]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT, "TOME_JAX_CACHE_DIR": "off"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert f"saving the checkpoint of step 8 in {run / 'checkpoints'} failed" in proc.stderr, proc.stderr[-3000:]
    assert "MiB free" in proc.stderr and "[4] are intact" in proc.stderr
    train_and_evaluate(tiny_config(), str(run))  # cleans the temporary folder, resumes from 4
    assert sorted(os.listdir(run / "checkpoints")) == ["4", "8"]
    assert_same_params(final_params(run)[1], finished_run[1])


@pytest.mark.slow
def test_sigterm_at_a_random_step_saves_there_exits_0_and_resumes_to_identical_parameters(tmp_path):
    steps = ["--config.total_steps=40", "--config.checkpoint_every_steps=100", "--config.warmup_steps=2"]
    stop_at = random.Random(22).randint(2, 30)  # seeded: a failure names a step that reproduces
    proc = run_train(tmp_path / "preempted", *steps, wait=False)
    deadline = time.time() + 240
    while not steps_logged(tmp_path / "preempted") or steps_logged(tmp_path / "preempted")[-1] < stop_at:
        assert proc.poll() is None and time.time() < deadline, f"run ended before step {stop_at}"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    saved = int(out.split("saved a checkpoint at step ")[1].split()[0])
    assert stop_at <= saved < 40 and os.listdir(tmp_path / "preempted" / "checkpoints") == [str(saved)], (stop_at, out)
    assert not os.path.exists(tmp_path / "preempted" / "summary.json")
    run_train(tmp_path / "preempted", *steps)
    run_train(tmp_path / "straight", *steps)
    assert_same_params(final_params(tmp_path / "preempted")[1], final_params(tmp_path / "straight")[1])
    assert steps_logged(tmp_path / "preempted") == list(range(1, 41))


def test_time_based_checkpoints(tmp_path):
    """checkpoint_every_minutes: with a tiny interval every step is saved (the step interval is 100)."""
    train_and_evaluate(tiny_config(total_steps=3, checkpoint_every_steps=100, checkpoint_every_minutes=1e-6,
                                   keep_checkpoints=5), str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2", "3"]
