"""Local paths and bucket URLs as one path type (etils `epath`), for the layers that read and write files.

`resolve("runs/a")` is an absolute local path, `resolve("gs://bucket/run")` stays a URL (never
`os.path.abspath`, which would turn it into `<cwd>/gs:/bucket/run`).
"""

from __future__ import annotations

import os

from etils import epath


def resolve(path: str | os.PathLike) -> epath.Path:
    """A local path made absolute, or a URL (gs://, s3://, any registered epath scheme) unchanged."""
    path = epath.Path(path)
    return path if not is_local(path) else epath.Path(os.path.abspath(os.fspath(path)))


def is_local(path: epath.Path) -> bool:
    """True for paths on this machine's filesystem (a plain `pathlib`-style path)."""
    text = os.fspath(path)
    return "://" not in text and isinstance(path, epath.Path)
