"""The run's directory, local or on a bucket: one path type (etils `epath`) for every file in it.

`resolve("runs/a")` is an absolute local path, `resolve("gs://bucket/run")` stays a URL (never
`os.path.abspath`, which would turn it into `<cwd>/gs:/bucket/run`). Everything the framework writes
in a workdir (checkpoints, config, metrics, summary, eval results, plots) is built from the returned
`epath.Path`, so a bucket workdir is written by every host to the bucket, not to local disks.

On `s3://`, which orbax cannot write, checkpoints are staged in a local folder and mirrored to the bucket
(`StagedCheckpoints`, used by train/checkpoint.py); every other file goes to the bucket through epath.

Also here: the checks and bookkeeping done at start-up (writable, free space, leftover temporary
checkpoint folders, config changes between a run and its restart) and small JSON helpers.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping

from etils import epath

from tome_jax import paths
from tome_jax.paths import is_local  # noqa: F401  (the workdir's path type; re-exported)

# Config fields whose change makes a resumed run a different run (the data order, the model, the
# schedule): a restart that changes one is refused unless `allow_config_change=True`. Dotted names
# inside these are exempt: where the data lives and how many threads read it do not change the run.
BREAKING_FIELDS = ("seed", "batch_size", "model_name", "model", "task", "tome", "data", "init", "total_steps",
                   "total_epochs", "warmup_steps", "warmup_epochs", "optimizer", "mixup", "label_smoothing")
# init.loader: removed (every family loads through load_timm); runs that saved it still resume.
EXEMPT_FIELDS = ("data.data_dir", "data.num_threads", "data.prefetch_batches", "init.loader")
# Data fields that sources' typed options (data.options) replaced: a run saved before then still
# resumes where each held its old default (the digits and image recipes); other values are a change.
RETIRED_DEFAULTS = {"data.kind": "image", "data.image_key": "image", "data.label_key": "label",
                    "data.verify_images": True, "data.audio": None}
# Groups where a field saved as None ("the model's default", as recipes once wrote config.tome.prop_attn)
# and now left out mean the same: build_model applies only the settings a recipe has.
UNSET_IS_MISSING = ("tome",)

# orbax writes a step into "<step>.orbax-checkpoint-tmp-<n>" (and items inside into "*.orbax-checkpoint-tmp*")
# and renames it when complete; a run killed mid-save (or a full disk) leaves such folders behind.
TEMPORARY_MARKER = ".orbax-checkpoint-tmp"


class WorkdirError(OSError):
    """The workdir cannot be written (permissions, full disk): names the path and the free space."""


# URL schemes whose checkpoints orbax-checkpoint cannot write itself, so they are staged locally and mirrored
# (`StagedCheckpoints`). orbax 0.12.8 (pinned, and the newest on the package index in December 2026, with
# tensorstore 0.1.86) picks TensorStore's kvstore driver from the path itself: `gs://` gets the gcs driver,
# every other path the local `file` driver. TensorStore has an `s3` driver, but orbax never builds one and
# takes no kvstore spec from its caller: `build_kvstore_tspec("s3://b/run")` raises "Checkpoint path should
# be absolute. Got s3:/b/run" at the first save. Upstream: google/orbax issue 359 and pull request 2739 (S3
# support, not merged); once orbax writes s3:// itself, this tuple empties and the staging layer goes.
STAGED_SCHEMES = ("s3://",)
# The object written last into a mirrored step folder: a step without it was not uploaded whole.
UPLOADED_MARKER = "tome_jax_uploaded"
# Where a writer stages a mirrored workdir's checkpoints: <root>/<bucket>/<path>, one folder per workdir.
STAGING_ROOT = os.path.join("~", ".cache", "tome_jax", "staging")


def resolve(path: str | os.PathLike) -> epath.Path:
    """A workdir (or a checkpoint folder in one): `paths.resolve`, which refuses a URL whose storage
    client is not installed when the run starts, not at its first save."""
    return paths.resolve(path)


def is_staged(path: epath.Path) -> bool:
    """True for a URL whose checkpoints orbax cannot write itself (`STAGED_SCHEMES`)."""
    return os.fspath(path).startswith(STAGED_SCHEMES)


def _step_number(name: str) -> int | None:
    return int(name) if name.isdigit() else None


class StagedCheckpoints:
    """A checkpoint folder on a URL orbax cannot write (s3://), mirrored from a local staging folder.

    orbax reads and writes `local` as it would any local folder. `pull` makes `local` a copy of the
    steps in `remote` that carry `UPLOADED_MARKER` (once, when the checkpoints are opened); `push(step)`
    (after orbax committed the step, and after its keep policy deleted old steps locally) uploads the
    step folder, writes the marker last, then deletes the steps in `remote` that are no longer in
    `local`. A step folder in `remote` without the marker (an upload cut short) is never read; a writer
    deletes it at `pull`. Files are moved with the URL's fsspec filesystem (s3fs for s3://).

    remote: the checkpoint folder's URL. writable: a writer stages in `STAGING_ROOT/<bucket>/<path>`
    (emptied at `pull`: one run per workdir, as for any workdir) and deletes unmarked steps; a reader
    (eval) stages in a fresh temporary folder, removed by `close`, and changes nothing remote.
    """

    def __init__(self, remote: epath.Path, *, writable: bool, staging_root: str = STAGING_ROOT):
        import fsspec  # the storage client paths.resolve checked for

        self.remote = remote
        self.writable = writable
        self.url = os.fspath(remote).rstrip("/")
        self.fs = fsspec.filesystem(self.url.split("://")[0])
        if writable:
            bucket_and_path = self.url.split("://", 1)[1]
            self.local = os.path.join(os.path.expanduser(staging_root), *bucket_and_path.split("/"))
        else:
            self.local = tempfile.mkdtemp(prefix="tome_jax_staging_")

    def remote_steps(self) -> dict[int, bool]:
        """{step: has the marker} for the step folders in `remote`, listed afresh (no cached listing)."""
        self.fs.invalidate_cache(self.url)
        if not self.fs.exists(self.url):
            return {}
        steps = {}
        for entry in self.fs.ls(self.url, detail=False, refresh=True):
            step = _step_number(entry.rstrip("/").rsplit("/", 1)[-1])
            if step is not None:
                steps[step] = self.fs.exists(f"{self.url}/{step}/{UPLOADED_MARKER}")
        return steps

    def pull(self) -> str:
        """`local` emptied and filled with every marked step of `remote`; returns `local`. A writer also
        deletes the unmarked step folders in `remote` (uploads cut short)."""
        shutil.rmtree(self.local, ignore_errors=True)
        os.makedirs(self.local, exist_ok=True)
        for step, marked in sorted(self.remote_steps().items()):
            if marked:
                self.fs.get(f"{self.url}/{step}/", os.path.join(self.local, str(step)), recursive=True)
                marker = os.path.join(self.local, str(step), UPLOADED_MARKER)
                if os.path.exists(marker):
                    os.remove(marker)
            elif self.writable:
                self.fs.rm(f"{self.url}/{step}", recursive=True)
        return self.local

    def push(self, step: int) -> None:
        """Upload the finished step folder `local/<step>`, marker last; then delete remote steps that
        orbax deleted locally (its keep policy)."""
        target = f"{self.url}/{step}"
        self.fs.invalidate_cache(self.url)
        if self.fs.exists(target):  # a step written again after a fallback or a cut upload
            self.fs.rm(target, recursive=True)
        self.fs.put(os.path.join(self.local, str(step)) + "/", target, recursive=True)
        self.fs.pipe(f"{target}/{UPLOADED_MARKER}", b"ok")
        kept = {s for s in map(_step_number, os.listdir(self.local)) if s is not None}
        for old in sorted(set(self.remote_steps()) - kept):
            self.fs.rm(f"{self.url}/{old}", recursive=True)

    def set_aside(self, step: int, name: str) -> None:
        """Rename the step folder to `name`, locally and in `remote` (kept, no longer a step)."""
        os.replace(os.path.join(self.local, str(step)), os.path.join(self.local, name))
        source = f"{self.url}/{step}"
        self.fs.invalidate_cache(self.url)
        for path in self.fs.find(source):  # object by object: S3 has no rename of a prefix
            self.fs.copy(path, f"{self.url}/{name}/{path[len(source.split('://', 1)[1]) + 1:]}")
        self.fs.rm(source, recursive=True)
        self.fs.invalidate_cache(self.url)

    def close(self) -> None:
        if not self.writable:
            shutil.rmtree(self.local, ignore_errors=True)


def free_bytes(path: epath.Path) -> int | None:
    """Free space on the filesystem holding `path` (its nearest existing parent); None for a URL."""
    if not is_local(path):
        return None
    probe = os.fspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    return shutil.disk_usage(probe).free


def describe_space(path: epath.Path) -> str:
    free = free_bytes(path)
    return "free space unknown (remote storage)" if free is None else f"{free / 2**20:.1f} MiB free"


def check_writable(workdir: epath.Path, *, needed_bytes: int = 0) -> None:
    """Create `workdir`, write and delete a probe file, and compare the free space with
    `needed_bytes` (e.g. two checkpoints): a clear error before any compute instead of a failed save."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write_probe_{uuid.uuid4().hex}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise WorkdirError(f"cannot write to the workdir {workdir} ({describe_space(workdir)}): {e}. Choose a "
                           "writable --workdir or free some space.") from e
    free = free_bytes(workdir)
    if free is not None and free < needed_bytes:
        raise WorkdirError(f"the workdir {workdir} has {free / 2**20:.1f} MiB free but a checkpoint needs about "
                           f"{needed_bytes / 2**20:.1f} MiB. Free some space or use another --workdir.")


def clean_temporaries(checkpoint_dir: epath.Path) -> list[str]:
    """Delete the temporary folders of interrupted saves in `checkpoint_dir` (never a finished step);
    returns their names."""
    if not checkpoint_dir.exists():
        return []
    removed = []
    for child in checkpoint_dir.iterdir():
        if TEMPORARY_MARKER in child.name:
            child.rmtree() if child.is_dir() else child.unlink()
            removed.append(child.name)
    return sorted(removed)


# ----------------------------------------------------------------------------- JSON files


def write_text(path: epath.Path, text: str) -> None:
    """Write a whole file so that a reader never sees half of it: a local file through a temporary
    file and a rename; an object on a bucket is replaced whole anyway."""
    if not is_local(path):
        path.write_text(text)
        return
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(text)
    os.replace(os.fspath(tmp), os.fspath(path))


def read_json(path: epath.Path):
    """The parsed file, or None when it does not exist."""
    return json.loads(path.read_text()) if path.exists() else None


# ----------------------------------------------------------------------------- config changes


def _flatten(tree, prefix="") -> dict:
    if isinstance(tree, Mapping):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def config_diff(old: Mapping, new: Mapping) -> list[tuple[str, object, object]]:
    """[(dotted field, old value, new value)] for every field that differs (absent = missing)."""
    a, b = _flatten(old), _flatten(new)
    return [(k, a.get(k, "<missing>"), b.get(k, "<missing>")) for k in sorted(set(a) | set(b))
            if a.get(k, "<missing>") != b.get(k, "<missing>")]


def breaking_changes(diff: list[tuple[str, object, object]]) -> list[tuple[str, object, object]]:
    """The part of `config_diff` that changes what the resumed run computes (`BREAKING_FIELDS`)."""
    return [(key, old, new) for key, old, new in diff
            if key.split(".")[0] in BREAKING_FIELDS and key not in EXEMPT_FIELDS
            and not (key.split(".")[0] in UNSET_IS_MISSING and old is None and new == "<missing>")
            and not (new == "<missing>" and key in RETIRED_DEFAULTS and RETIRED_DEFAULTS[key] == old)]


def format_diff(diff) -> str:
    return "\n".join(f"  {key}: {old!r} -> {new!r}" for key, old, new in diff)


class ConfigChangeError(ValueError):
    """A restart changed fields that make it a different run."""
