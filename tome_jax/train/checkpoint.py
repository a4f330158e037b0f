"""Checkpoints with orbax: train state + the data iterator's position, saved atomically and in the
background.

Orbax writes each step into a temporary directory and renames it only when complete (on gs://,
where a rename is a copy, it writes the step in place and marks it complete with `commit_success.txt`),
so a run killed mid-save leaves the previous checkpoint as the latest; `latest_step()` never sees the
half-written one. `save` returns once the arrays are copied to host memory and the data position
and config are written; the arrays are written while training goes on (a slow bucket does not stall
the steps), and the next save, `latest_step` / `all_steps`, or `close` waits for that write and
reports its failure naming its step. Restoring takes the target's shardings, so a checkpoint written on one mesh
loads onto another.

Restore falls back: a step that cannot be read (missing item, truncated array, corrupt iterator
state or config, empty folder) is reported by name and the previous kept step is tried, down to the
oldest; nothing is deleted. A transient I/O error (a bucket read that timed out, a dropped
connection) is not a broken checkpoint: the read is retried a few times with backoff, and if it
keeps failing the run stops without falling back (`TransientReadError`). Each step also stores the
resolved config ("config" item) it was written with; it is read with the step, so a corrupt one
falls back like any other item.

On s3://, which orbax cannot write (`workdir.STAGED_SCHEMES`), orbax works on a local staging folder
that `workdir.StagedCheckpoints` mirrors: the marked steps are downloaded when the checkpoints are
opened, and each save, once orbax has committed it, is uploaded in the background (marker last, old
steps deleted as orbax deletes them); the next save, `wait` and `close` wait for that upload too, so
the final save and a SIGTERM's save are in the bucket before the run exits.
"""

from __future__ import annotations

import errno
import re
import time
from concurrent import futures
from typing import Any, Callable, NamedTuple

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from flax import nnx

from tome_jax.train import workdir as workdir_lib


class CheckpointMismatchError(ValueError):
    """The checkpoint in the workdir was written for a different model or optimizer."""


class UnreadableCheckpointsError(RuntimeError):
    """No kept checkpoint step could be read; the message lists each step and its error."""


class TransientReadError(RuntimeError):
    """Reading a checkpoint step kept failing with transient I/O errors; nothing was renamed."""


class HostCountError(ValueError):
    """The checkpoint's data position was saved by a different number of processes."""


class NonFiniteStateError(FloatingPointError):
    """Parameters or optimizer state became NaN/inf; nothing was saved."""


@jax.jit
def all_finite(tree) -> jax.Array:
    """One fused reduction: True iff every floating-point leaf of `tree` is finite."""
    leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _leaves_by_path(tree) -> dict:
    """{"blocks/0/attn/qkv/kernel": leaf}: the same string for a live tree (nnx Variables count as
    leaves) and for orbax's restored dicts or metadata (which turn list indices, attributes and
    dict keys all into keys, and store a Variable's array under "value")."""
    def name(key):
        return str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key))))

    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
    out = {}
    for path, leaf in flat:
        names = [name(k) for k in path]
        out["/".join(names[:-1] if names[-1] == "value" else names)] = leaf
    return out


def _shapes_by_path(tree) -> dict[str, tuple]:
    return {path: tuple(leaf.shape) for path, leaf in _leaves_by_path(tree).items() if hasattr(leaf, "shape")}


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"


_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH,
                     errno.ENETUNREACH, errno.ENETDOWN}
# TensorStore (orbax's array I/O, GCS included) raises ValueError("<STATUS>: ...") with gRPC codes.
_TRANSIENT_STATUSES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED")


def is_transient(error: BaseException) -> bool:
    """True when `error` (or an error it was raised from) is a passing I/O failure worth a retry: a
    timeout, a dropped connection, a storage service's UNAVAILABLE / DEADLINE_EXCEEDED / 429. A missing
    or corrupt file is not transient."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (ConnectionError, TimeoutError)):
            return True
        if isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS:
            return True
        if str(error).lstrip().startswith(_TRANSIENT_STATUSES):
            return True
        error = error.__cause__ or error.__context__
    return False


class Restored(NamedTuple):
    """What `restore_latest` read: the step (None: no checkpoint), the state, and the config saved
    with that step (None: none saved, or no checkpoint)."""

    step: int | None
    state: object
    config: dict | None


class Checkpointer:
    """directory: a local path or a URL (gs://..., s3://... through a staging folder), see `workdir.resolve`."""

    def __init__(self, directory: str | epath.Path, *, keep: int, create: bool = True, read_attempts: int = 3,
                 retry_delay: float = 1.0, sleep: Callable[[float], None] = time.sleep):
        """read_attempts: tries of one step's read when it fails with a transient I/O error, waiting
        retry_delay, 2 * retry_delay, ... seconds (`sleep`) in between."""
        self.directory = workdir_lib.resolve(directory)
        self.read_attempts, self.retry_delay, self.sleep = read_attempts, retry_delay, sleep
        self.pending_step: int | None = None  # a save still being written in the background
        self.staged = None  # workdir.StagedCheckpoints where orbax cannot write the directory itself
        self.uploader: futures.ThreadPoolExecutor | None = None  # one background upload at a time
        self.upload: futures.Future | None = None  # the pending step's upload to a staged directory
        orbax_directory = self.directory
        if workdir_lib.is_staged(self.directory):
            if jax.process_count() > 1:
                raise workdir_lib.WorkdirError(
                    f"{self.directory}: checkpoints on {workdir_lib.STAGED_SCHEMES} are staged on one host's disk "
                    "and uploaded from there, which needs a single process; use a gs:// workdir for multi-host runs.")
            self.staged = workdir_lib.StagedCheckpoints(self.directory, writable=create)
            orbax_directory = epath.Path(self.staged.pull())
            self.uploader = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tome_jax_upload")
        self.manager = ocp.CheckpointManager(
            orbax_directory,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": grain.checkpoint.CheckpointHandler(),
                           "config": ocp.JsonCheckpointHandler()},
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=create,
                                                 enable_async_checkpointing=True),
        )

    def latest_step(self) -> int | None:
        """The newest complete step (a save in progress is waited for first)."""
        self.wait()
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        self.wait()
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, data_iterator, config: dict | None = None) -> None:
        """Start saving `step`: waits for the previous save, copies the state to host memory, writes the
        data position and config, and leaves the arrays to a background write (`wait`). A failed write
        (full disk, quota, storage unreachable after the clients' retries) raises `WorkdirError`
        naming the step, the path and the free space, here or at the next `wait`; the previous steps
        are untouched and the temporary folder is removed at the next start
        (`workdir.clean_temporaries`)."""
        if not bool(all_finite(state)):
            raise NonFiniteStateError(
                f"the parameters or optimizer state became NaN/inf by step {step}; not saved. The last good "
                f"checkpoint (step {self.latest_step()}) is kept in {self.directory}. Lower optimizer.lr, set "
                "optimizer.clip_norm, or use model.dtype='float32'.")
        self.wait()
        items = dict(state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator))
        if config is not None:
            items["config"] = ocp.args.JsonSave(config)
        self._reporting_failure(step, lambda: self.manager.save(step, args=ocp.args.Composite(**items)))
        self.pending_step = step
        if self.staged is not None:
            self.upload = self.uploader.submit(self._upload, step)

    def _upload(self, step: int) -> None:
        """In the background: wait for orbax to commit `step` (and delete old steps), then mirror it."""
        self.manager.wait_until_finished()
        self.staged.push(step)

    def wait(self) -> None:
        """Wait for the save in progress, if any; its failure raises `WorkdirError` naming its step."""
        if self.pending_step is not None:
            step, self.pending_step = self.pending_step, None
            self._reporting_failure(step, self.manager.wait_until_finished)
            if self.upload is not None:
                upload, self.upload = self.upload, None
                self._reporting_failure(step, upload.result)

    def set_aside(self, step: int, name: str) -> epath.Path:
        """Rename the step folder to `name` (kept, no longer a step; in the bucket too when staged);
        returns its new path."""
        if self.staged is not None:
            self.staged.set_aside(step, name)
        else:
            (self.directory / str(step)).rename(self.directory / name)
        self.manager.reload()
        return self.directory / name

    def _reporting_failure(self, step: int, action: Callable[[], Any]) -> None:
        try:
            action()
        except Exception as e:  # orbax/TensorStore wrap OSErrors in many types (OUT_OF_RANGE, ValueError...)
            raise workdir_lib.WorkdirError(
                f"saving the checkpoint of step {step} in {self.directory} failed "
                f"({workdir_lib.describe_space(self.directory)}): {_first_line(e)}. The earlier checkpoints "
                f"{sorted(self.manager.all_steps())} are intact; free some space (or fix permissions, or "
                "check that the storage is reachable) and run the same command again to resume.") from e

    def saved_config(self, step: int) -> dict | None:
        """The config saved with `step` (None for checkpoints written before configs were saved)."""
        if not (self.manager.directory / str(step) / "config").exists():
            return None
        return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

    def check_host_count(self, step: int) -> None:
        """The data iterator's position is one file per process ("process_0-of-N.json"); a restart on
        another process count cannot continue the same data order, so say so before any compute."""
        data_dir = self.manager.directory / str(step) / "data"
        counts = {int(m.group(1)) for f in (data_dir.iterdir() if data_dir.exists() else ())
                  if (m := re.fullmatch(r"process_\d+-of-(\d+)\.json", f.name))}
        if counts and counts != {jax.process_count()}:
            raise HostCountError(
                f"the checkpoint at step {step} in {self.directory} was written by {sorted(counts)[0]} processes "
                f"and this run has {jax.process_count()}: the data iterator's position is saved per process, so "
                f"the same data order cannot continue. Resume with {sorted(counts)[0]} processes, or start a "
                "new --workdir (optionally from these weights via config.init.weights).")

    def restore_latest(self, abstract_state, data_iterator) -> Restored:
        """`Restored(step, state, config)` of the newest readable step; (None, None, None) for an empty
        directory.

        A step that cannot be read (any item: config, state, data position) is reported (warning with
        its error) and the previous one tried; raises `UnreadableCheckpointsError` listing every failure
        when none can be read. A transient I/O error is retried (`read_attempts`); if it persists,
        `TransientReadError` stops the run without falling back. A checkpoint of another model
        (`CheckpointMismatchError`) or host count is an error at once."""
        failures = []
        for step in reversed(self.all_steps()):
            try:
                return self.read_with_retries(step, lambda: self._read_step(step, abstract_state, data_iterator))
            except (CheckpointMismatchError, HostCountError, TransientReadError):
                raise
            except Exception as e:  # noqa: BLE001 (any read error: KeyError, JSONDecodeError, TensorStore...)
                failures.append(f"step {step} ({self.directory / str(step)}): {_first_line(e)}")
                logging.warning("checkpoint step %d cannot be read, trying the previous one: %s", step, failures[-1])
        if failures:
            raise UnreadableCheckpointsError(
                f"no checkpoint in {self.directory} could be read (nothing was deleted):\n  "
                + "\n  ".join(failures) + "\nMove the broken step folders away to start those steps again, "
                "or use a new --workdir.")
        return Restored(None, None, None)

    def _read_step(self, step: int, abstract_state, data_iterator) -> Restored:
        self.check_host_count(step)
        config = self.saved_config(step)
        return Restored(step, self.restore(step, abstract_state, data_iterator), config)

    def read_with_retries(self, step: int, read: Callable[[], Any]) -> Any:
        """read() (a read of checkpoint `step`), tried up to `read_attempts` times while it fails with a
        transient I/O error; any other error is raised at once. Raises `TransientReadError` when the
        transient errors persist."""
        attempt = 1
        while True:
            try:
                return read()
            except Exception as e:  # noqa: BLE001 (sorted below: transient or not)
                if not is_transient(e):
                    raise
                if attempt >= self.read_attempts:
                    raise TransientReadError(
                        f"reading the checkpoint of step {step} in {self.directory} failed {attempt} times with a "
                        f"transient I/O error ({_first_line(e)}); the checkpoint may well be intact, so nothing "
                        "was renamed or deleted and no older step was used. Run the same command again when the "
                        "storage is reachable.") from e
                delay = self.retry_delay * 2 ** (attempt - 1)
                logging.warning("reading checkpoint step %d failed (%s); retrying in %.1f s (attempt %d of %d).",
                                step, _first_line(e), delay, attempt + 1, self.read_attempts)
                self.sleep(delay)
                attempt += 1

    def check_compatible(self, step: int, abstract_state) -> None:
        """Compare the saved tree's paths and shapes with ours before touching any array."""
        self._compare(step, _shapes_by_path(self.manager.item_metadata(step)["state"]),
                      _shapes_by_path(abstract_state))

    def _compare(self, step: int, saved: dict, ours: dict) -> None:
        problems = [f"{k}: saved {saved.get(k, 'absent')} vs now {ours.get(k, 'absent')}"
                    for k in sorted(set(saved) | set(ours)) if saved.get(k) != ours.get(k)]
        if problems:
            raise CheckpointMismatchError(
                f"the checkpoint at step {step} in {self.directory} was written for a different "
                f"model or optimizer ({len(problems)} differences, e.g. {problems[:5]}). Use a new "
                "--workdir for a new model; nothing in the old workdir was changed.")

    def restore(self, step: int, abstract_state, data_iterator):
        """abstract_state: jax.ShapeDtypeStruct leaves with the target shardings."""
        self.check_compatible(step, abstract_state)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=grain.checkpoint.CheckpointRestore(data_iterator)))
        return restored["state"]

    def restore_params(self, step: int, params, *, ema: bool = False):
        """Only the (EMA) parameters, into `params` (an nnx.State of the model's Params), e.g. for
        evaluation without building the optimizer."""
        self.check_compatible_params(step, params, ema)
        saved = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
        saved = _leaves_by_path(saved["state"]["ema_params" if ema else "params"])
        for path, leaf in _leaves_by_path(params).items():
            leaf.set_value(jax.numpy.asarray(saved[path], leaf.dtype))
        return params

    def check_compatible_params(self, step: int, params, ema: bool) -> None:
        key = "ema_params" if ema else "params"
        saved = self.manager.item_metadata(step)["state"][key]
        self._compare(step, _shapes_by_path(saved), _shapes_by_path(params))

    def close(self) -> None:
        """Wait for the save in progress (its failure raises `WorkdirError`), then release orbax."""
        try:
            self.wait()
        finally:
            self.manager.close()
            if self.staged is not None:
                self.uploader.shutdown()
                self.staged.close()
