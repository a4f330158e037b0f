"""gs:// and s3:// workdirs against real storage APIs on loopback, each behind a fault-injecting proxy
(tests/train/storage_server.py): fake-gcs-server, reached by the same clients as a cloud bucket (gcsfs
through etils.epath, TensorStore's gcs driver under orbax, google-cloud-storage), and moto's S3 server,
reached by s3fs (etils.epath, and workdir.StagedCheckpoints, which mirrors orbax's local staging folder).
The machinery is test_loop's and test_faults' (tiny_config, run_train, assert_same_params); each test
ends with the parameters of the uninterrupted gs:// run. Cases that are the same on both schemes are
parametrized over `scheme`. RELIABILITY.md maps these cases to the faults they cover."""

import os
import signal
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath
from flax import nnx

import tome_jax
from tests.train.test_faults import assert_same_params, steps_logged
from tests.train.test_loop import run_train, tiny_config
from tests.train.test_metrics import tensorboard_scalars
from tome_jax import paths
from tome_jax.train import evaluate, report, train_and_evaluate
from tome_jax.train import metrics as metrics_lib
from tome_jax.train import workdir as workdir_lib
from tome_jax.train.checkpoint import Checkpointer
from tome_jax.train.loop import build_model

# What marks a step folder complete in the bucket: orbax's own marker on gs:// (steps are written in place),
# workdir.StagedCheckpoints' on s3:// (written after the step's upload).
COMMIT_MARKERS = {"gs": "commit_success.txt", "s3": workdir_lib.UPLOADED_MARKER}


def final_params(workdir: str):
    """The parameters of the workdir's latest checkpoint, read as eval.py reads it (a Checkpointer that
    creates nothing; on s3:// through its staging folder)."""
    ckpt = Checkpointer(f"{workdir}/checkpoints", keep=1, create=False)
    step = ckpt.latest_step()
    state = ckpt.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    ckpt.close()
    return step, state["params"]


@pytest.fixture(scope="module")
def bucket_run(gcs):
    """An uninterrupted 8-step run in gs://bucket/finished (checkpoints 4 and 8), its final parameters."""
    workdir = "gs://bucket/finished"
    train_and_evaluate(tiny_config(), workdir)
    return workdir, final_params(workdir)[1]


@pytest.fixture(scope="module")
def s3_run(s3):
    """s3://bucket/s3run: train.py (a subprocess, its clients through the S3 server's proxy) SIGKILLed once
    step 4 is in the bucket with its marker, the first upload of a step-4 object answered 503 (retried by
    botocore); then resumed in this process to step 8. Returns the workdir, the killed run's output and
    the faults the proxy injected."""
    workdir = "s3://bucket/s3run"
    s3.proxy.clear()
    s3.proxy.fail(1, "PUT /bucket/s3run/checkpoints/4/")
    try:
        proc = run_train(workdir, "--config.total_steps=8", "--config.checkpoint_every_steps=4",
                         "--config.warmup_steps=2", wait=False)
        deadline = time.time() + 240
        while not committed(s3, workdir, 4):
            assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        out = proc.communicate()[0]
        injected = dict(s3.proxy.injected)
    finally:
        s3.proxy.clear()
    killed_at = step_folders(s3, workdir)
    assert not committed(s3, workdir, 8), out[-3000:]
    train_and_evaluate(tiny_config(), workdir)
    return workdir, out, injected, killed_at


@pytest.fixture(params=["gs", "s3"])
def finished(request):
    """(scheme, storage server, uninterrupted-or-resumed 8-step workdir on it): `bucket_run` on gs://,
    `s3_run` on s3://."""
    if request.param == "gs":
        return "gs", request.getfixturevalue("gcs"), request.getfixturevalue("bucket_run")[0]
    return "s3", request.getfixturevalue("s3"), request.getfixturevalue("s3_run")[0]


def object_name(workdir: str) -> str:
    """The workdir's prefix in the bucket: "gs://bucket/run" -> "run"."""
    return workdir.split("://bucket/", 1)[1]


def copy_bucket_run(server, source: str, target: str) -> str:
    """Copy every object of <scheme>://bucket/<source> (a workdir URL) to the same bucket's <target> through epath."""
    scheme, name = source.split("://")[0], object_name(source)
    for key in server.objects(f"{name}/"):
        epath.Path(f"{scheme}://bucket/{target}/{key[len(name) + 1:]}").write_bytes(
            epath.Path(f"{scheme}://bucket/{key}").read_bytes())
    return f"{scheme}://bucket/{target}"


def step_folders(server, workdir: str) -> list[str]:
    """The step folders under <workdir>/checkpoints, listed by the server."""
    prefix = object_name(workdir) + "/checkpoints/"
    return sorted({name[len(prefix):].split("/")[0] for name in server.objects(prefix)})


def committed(server, workdir: str, step: int) -> bool:
    """The marker that step `step` was written whole (`COMMIT_MARKERS`), listed by the server."""
    name = f"{object_name(workdir)}/checkpoints/{step}/{COMMIT_MARKERS[workdir.split('://')[0]]}"
    return name in server.objects(name)


# ----------------------------------------------------------------------------- set-up errors


def test_a_missing_storage_client_is_refused_at_start(monkeypatch, tmp_path):
    """Before any data, model or compile: one line naming the install command (gcsfs, s3fs hidden as if
    they were not installed)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "gcsfs", None)
    with pytest.raises(paths.MissingBackendError) as error:
        train_and_evaluate(tiny_config(), "gs://bucket/run")
    assert "\n" not in str(error.value) and "'gcsfs'" in str(error.value)
    assert "pip install -r requirements-cloud.txt" in str(error.value)
    monkeypatch.setitem(sys.modules, "s3fs", None)
    with pytest.raises(paths.MissingBackendError, match=r"pip install -e \.\[s3\]"):
        paths.resolve("s3://bucket/vit.safetensors")  # what load_timm and every workdir path go through
    with pytest.raises(paths.MissingBackendError, match=r"pip install -e \.\[s3\]"):
        train_and_evaluate(tiny_config(), "s3://bucket/run")
    assert os.listdir(tmp_path) == []
    # Why s3:// checkpoints are staged locally (workdir.STAGED_SCHEMES), as orbax states it: the day an orbax
    # upgrade builds a TensorStore kvstore for s3:// this fails, and the staging layer can go.
    from orbax.checkpoint._src.serialization import tensorstore_utils

    with pytest.raises(ValueError, match="Checkpoint path should be absolute. Got s3:/bucket/run"):
        tensorstore_utils.build_kvstore_tspec("s3://bucket/run")


# ----------------------------------------------------------------------------- one run, everything there


def test_a_run_on_the_bucket_keeps_every_file_there(finished, tmp_path):
    """Checkpoints (with their commit markers), config, metrics, summary and TensorBoard events are
    objects in the bucket; TensorBoard's reader shows every logged loss."""
    scheme, server, workdir = finished
    name = object_name(workdir)
    names = server.objects(f"{name}/")
    assert {f"{name}/config.json", f"{name}/metrics.jsonl", f"{name}/summary.json"} <= set(names)
    assert step_folders(server, workdir) == ["4", "8"] and committed(server, workdir, 4) and committed(server, workdir, 8)
    events = [n for n in names if n.startswith(f"{name}/tensorboard/events.out.tfevents")]
    assert len(events) == 1 + (scheme == "s3")  # the killed run's, and the resumed run's (purge_step)
    (tmp_path / "tensorboard").mkdir()
    for event in events:
        (tmp_path / "tensorboard" / os.path.basename(event)).write_bytes(epath.Path(f"{scheme}://bucket/{event}").read_bytes())
    losses = {m["step"]: m["train/loss"] for m in metrics_lib.read_metrics(workdir) if "train/loss" in m}
    assert sorted(losses) == list(range(1, 9))
    logged = tensorboard_scalars(tmp_path)["train/loss"]
    np.testing.assert_allclose([logged[s] for s in range(1, 9)], [losses[s] for s in range(1, 9)], rtol=1e-6)


def test_eval_reads_the_bucket_and_writes_its_results_there(finished):
    """eval.py's path: evaluate.load_model from the workdir's latest checkpoint (on s3:// through a
    temporary staging folder, removed after), sweep, write_report into the workdir."""
    scheme, server, workdir = finished
    name = object_name(workdir)
    config = tiny_config()
    from_checkpoint, origin = evaluate.load_model(config, workdir, None)
    assert "checkpoint step 8" in origin
    results = evaluate.sweep(config, from_checkpoint, [0, 2], batch_size=64, repeats=1)
    report.write_report(results, workdir, "tiny")
    names = set(server.objects(f"{name}/eval_results"))
    assert {f"{name}/eval_results.{ext}" for ext in ("json", "csv", "md")} <= names
    assert server.objects(f"{name}/accuracy_vs_throughput.png")
    summary = workdir_lib.read_json(epath.Path(workdir) / "summary.json")
    assert results[1]["top1"] == pytest.approx(summary["eval_top1"])  # r=2, the run's own schedule


def test_weights_are_read_from_a_gs_workdir_and_file(gcs, bucket_run, tmp_path):
    """config.init.weights from the bucket: the training workdir itself and a .safetensors file give the
    checkpoint's parameters (as eval.py loads them)."""
    config = tiny_config()
    from_checkpoint, _ = evaluate.load_model(config, bucket_run[0], None)

    from_workdir = build_model(tiny_config(**{"init.weights": bucket_run[0], "init.skip": ()}))
    tome_jax.save_timm(from_checkpoint, str(tmp_path / "vit.safetensors"))
    epath.Path("gs://bucket/weights/vit.safetensors").write_bytes((tmp_path / "vit.safetensors").read_bytes())
    from_file, _ = evaluate.load_model(config, None, "gs://bucket/weights/vit.safetensors")
    for model in (from_workdir, from_file):
        assert_same_params(nnx.state(model, nnx.Param), nnx.state(from_checkpoint, nnx.Param))


def test_weights_are_read_from_an_s3_bucket(s3, tmp_path):
    """config.init.weights and eval.py's --weights on s3:// (s3fs through etils.epath, against moto's S3
    server on loopback): a .safetensors file of a model initialised with another seed gives both loads
    that model's parameters."""
    saved = build_model(tiny_config(seed=1))
    tome_jax.save_timm(saved, str(tmp_path / "vit.safetensors"))
    epath.Path("s3://bucket/weights/vit.safetensors").write_bytes((tmp_path / "vit.safetensors").read_bytes())
    from_eval, _ = evaluate.load_model(tiny_config(), None, "s3://bucket/weights/vit.safetensors")
    from_init = build_model(tiny_config(**{"init.weights": "s3://bucket/weights/vit.safetensors", "init.skip": ()}))
    for model in (from_eval, from_init):
        assert_same_params(nnx.state(model, nnx.Param), nnx.state(saved, nnx.Param))


# ----------------------------------------------------------------------------- faults


def test_a_step_without_its_upload_marker_is_never_read_and_a_writer_deletes_it(s3, tmp_path):
    """s3:// staging (workdir.StagedCheckpoints) on its own: step 4 uploaded (marker last), step 8's folder
    cut short (no marker, as a SIGKILL mid-upload leaves it). A reader (eval) downloads step 4 only and
    changes nothing in the bucket; a writer (a resumed run) also deletes step 8's folder there."""
    remote = epath.Path("s3://bucket/staging/checkpoints")
    writer = workdir_lib.StagedCheckpoints(remote, writable=True, staging_root=str(tmp_path))
    local = writer.pull()
    for step in (4, 8):
        os.makedirs(f"{local}/{step}/state")
        with open(f"{local}/{step}/state/a", "w") as f:
            f.write(str(step))
    writer.push(4)
    assert committed(s3, "s3://bucket/staging", 4)
    (remote / "8" / "state" / "a").write_text("8")
    reader = workdir_lib.StagedCheckpoints(remote, writable=False)
    assert sorted(os.listdir(reader.pull())) == ["4"]
    reader.close()
    assert not os.path.exists(reader.local) and step_folders(s3, "s3://bucket/staging") == ["4", "8"]
    assert sorted(os.listdir(writer.pull())) == ["4"] and os.listdir(f"{local}/4") == ["state"]
    assert step_folders(s3, "s3://bucket/staging") == ["4"]



def test_corrupt_latest_checkpoint_on_the_bucket_falls_back(finished, bucket_run):
    """Step 8's state metadata torn in the bucket: the restart reads step 4, keeps the broken step as
    8.unreadable-<time> (in the bucket), trains 5..8 again and ends with the uninterrupted run's parameters."""
    scheme, server, workdir = finished
    run = copy_bucket_run(server, workdir, f"corrupt_{object_name(workdir)}")
    (epath.Path(run) / "checkpoints/8/state/_METADATA").write_bytes(b'{"tree')
    (epath.Path(run) / "summary.json").unlink()
    train_and_evaluate(tiny_config(), run)
    folders = step_folders(server, run)
    assert folders[:2] == ["4", "8"] and folders[2].startswith("8.unreadable-") and len(folders) == 3
    assert_same_params(final_params(run)[1], bucket_run[1])
    assert steps_logged(run) == list(range(1, 9))


def test_killed_run_on_s3_resumes_to_identical_parameters(s3, s3_run, bucket_run):
    """train.py on s3:// (orbax writes a local staging folder, each committed step is uploaded with its marker
    last): killed once step 4 is in the bucket (step 8 not), with the first upload of one of step 4's objects
    failed (503, retried); the restart downloads step 4, trains 5..8 and uploads step 8: the uninterrupted
    gs:// run's parameters, every step logged once, old steps deleted in the bucket as orbax deletes them."""
    workdir, out, injected, killed_at = s3_run
    assert injected["failed"] == 1, injected
    assert killed_at in (["4"], ["4", "8"]) and committed(s3, workdir, 4), (killed_at, out[-3000:])
    assert step_folders(s3, workdir) == ["4", "8"] and committed(s3, workdir, 8)
    assert_same_params(final_params(workdir)[1], bucket_run[1])
    assert steps_logged(workdir) == list(range(1, 9))


def test_storage_faults_during_saves_lose_nothing_and_do_not_stall_training(gcs, bucket_run):
    """One run, three faults. A failed request: the first upload of step 4's arrays gets a 503 (retried
    by TensorStore). A slow server: every upload of step 4's arrays waits 1 s; the save returns once the
    arrays are in host memory, so steps 5, 6 and 7 are trained and logged to the bucket before step 4's
    last array upload is answered (step 8's save waits for step 4's: the async window). An outage: the
    server drops every connection for 3 s from the first write of step 8 on (every client retries).
    The run ends with both steps committed and the uninterrupted run's parameters."""
    gcs.proxy.clear()
    gcs.proxy.fail(1, "POST /upload/storage/v1/b/bucket/o?uploadType=media&name=faults/checkpoints/4/state/")
    gcs.proxy.slow(1.0, "name=faults/checkpoints/4/state/")
    gcs.proxy.down(3.0, "name=faults/checkpoints/8/")
    try:
        train_and_evaluate(tiny_config(), "gs://bucket/faults")
        state_uploaded = max(gcs.proxy.uploaded("name=faults/checkpoints/4/state/"))
        metrics_uploaded, injected = gcs.proxy.uploaded("name=faults/metrics.jsonl"), dict(gcs.proxy.injected)
    finally:
        gcs.proxy.clear()
    assert injected["failed"] == 1 and injected["delayed"] >= 1 and injected["dropped"] >= 1, injected
    assert len(metrics_uploaded) == 9  # steps 1..8, then step 8's eval
    assert metrics_uploaded[6] < state_uploaded  # step 7 logged while step 4 was still uploading
    assert step_folders(gcs, "gs://bucket/faults") == ["4", "8"] and committed(gcs, "gs://bucket/faults", 8)
    assert_same_params(final_params("gs://bucket/faults")[1], bucket_run[1])


@pytest.mark.slow
def test_killed_then_preempted_run_on_the_bucket_resumes_to_identical_parameters(gcs, bucket_run):
    """train.py on the bucket: SIGKILLed once step 4 is committed (step 8 is not), restarted and sent
    SIGTERM (it saves at the step it is on and exits 0), restarted again: the parameters of the
    uninterrupted run, every step logged once. The restart's logging is slowed (each metrics.jsonl
    request waits 1 s), so that SIGTERM lands mid-run."""
    workdir = "gs://bucket/killed"
    flags = ["--config.total_steps=8", "--config.checkpoint_every_steps=4", "--config.warmup_steps=2"]
    proc = run_train(workdir, *flags, wait=False)
    deadline = time.time() + 240
    while not committed(gcs, workdir, 4):
        assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not committed(gcs, workdir, 8)

    gcs.proxy.slow(1.0, "name=killed/metrics.jsonl")
    try:
        before = len(gcs.proxy.uploaded("name=killed/metrics.jsonl"))
        proc = run_train(workdir, *flags, wait=False)
        # The restart rewrites metrics.jsonl without the killed run's steps after 4, then logs step 5.
        while len(gcs.proxy.uploaded("name=killed/metrics.jsonl")) < before + 2:
            assert proc.poll() is None and time.time() < deadline, "resumed run ended before step 5"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        gcs.proxy.clear()
    assert proc.returncode == 0, out[-3000:]
    saved = int(out.split("saved a checkpoint at step ")[1].split()[0])
    assert 4 < saved < 8 and committed(gcs, workdir, saved), out[-3000:]
    train_and_evaluate(tiny_config(), workdir)
    assert_same_params(final_params(workdir)[1], bucket_run[1])
    assert steps_logged(workdir) == list(range(1, 9))

