"""Local paths and bucket URLs as one path type (etils `epath`), for the layers that read and write files.

`resolve("runs/a")` is an absolute local path, `resolve("gs://bucket/run")` stays a URL (never
`os.path.abspath`, which would turn it into `<cwd>/gs:/bucket/run`). A URL whose storage client is not
installed is refused here, when the path is first resolved (a run's start), in one line that names the
install command, instead of an ImportError from deep inside etils after the first training steps.
"""

from __future__ import annotations

import importlib
import os

from etils import epath

# The Python packages a URL scheme needs ({module: package}), and the command that installs them. gs://:
# etils.epath reads and writes through gcsfs (fsspec); orbax deletes old checkpoint steps through
# google-cloud-storage (its array data goes through TensorStore's own GCS driver, part of tensorstore).
# s3://: epath's s3fs.
BACKENDS = {
    "gs://": ({"gcsfs": "gcsfs", "google.cloud.storage": "google-cloud-storage"},
              "pip install -r requirements-cloud.txt (or: pip install -e .[gcs])"),
    "s3://": ({"s3fs": "s3fs"}, "pip install -r requirements-cloud.txt (or: pip install -e .[s3])"),
}


class MissingBackendError(ImportError):
    """A URL's storage client is not installed; the message names the install command."""


def require_backend(path: str | os.PathLike) -> None:
    """Raise `MissingBackendError` (one line, with the install command) when `path` is a URL whose
    storage client (`BACKENDS`) cannot be imported; local paths and other schemes pass."""
    text = os.fspath(path)
    for prefix, (modules, command) in BACKENDS.items():
        if text.startswith(prefix):
            for module, package in modules.items():
                try:
                    importlib.import_module(module)
                except ImportError as e:
                    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                    raise MissingBackendError(f"{text} needs the Python package {package!r} ({reason}); "
                                              f"install it with: {command}") from None


def resolve(path: str | os.PathLike) -> epath.Path:
    """A local path made absolute, or a URL (gs://, s3://, any registered epath scheme) unchanged.
    Raises `MissingBackendError` for a URL whose storage client is not installed."""
    require_backend(path)
    path = epath.Path(path)
    return path if not is_local(path) else epath.Path(os.path.abspath(os.fspath(path)))


def is_local(path: epath.Path) -> bool:
    """True for paths on this machine's filesystem (a plain `pathlib`-style path)."""
    text = os.fspath(path)
    return "://" not in text and isinstance(path, epath.Path)
