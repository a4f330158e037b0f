"""A non-local `epath` backend for offline tests: "memtest://bucket/run" lives in fsspec's in-memory
filesystem, like a gs:// bucket that needs no network. Registered with `epath.register_path_cls`,
so `epath.Path("memtest://...")` (and `tome_jax.train.workdir.resolve`) returns a `MemoryPath`.
`flaky_reads` makes reads fail like a bucket that times out.

Orbax's arrays go through TensorStore, which cannot reach this backend: a train state cannot be
saved here, but every file orbax and grain read through epath (configs, metadata, data positions) can."""

from __future__ import annotations

import contextlib
import os
import pathlib

import fsspec
from etils import epath
from etils.epath import abstract_path

PREFIX = "memtest://"
FS = fsspec.filesystem("memory")


@epath.register_path_cls(PREFIX)
class MemoryPath(abstract_path.Path):
    """Parts are kept as the POSIX path "/bucket/run"; the string form is "memtest://bucket/run"."""

    def __new__(cls, *args):
        text = "/".join(os.fspath(a) for a in args).removeprefix(PREFIX)
        return super().__new__(cls, "/" + text.lstrip("/"))

    @property
    def _key(self) -> str:
        return pathlib.PurePosixPath.__str__(self)

    def __fspath__(self) -> str:
        return PREFIX + self._key.lstrip("/")

    __str__ = __fspath__

    def exists(self) -> bool:
        return FS.exists(self._key)

    def is_dir(self) -> bool:
        return FS.isdir(self._key)

    def iterdir(self):
        for info in FS.ls(self._key, detail=False):
            yield self / info.rstrip("/").rsplit("/", 1)[-1]

    def mkdir(self, mode=0o777, parents=False, exist_ok=False) -> None:
        FS.makedirs(self._key, exist_ok=True)

    read_faults: dict = {}  # {part of a key: reads left to fail}, set by `flaky_reads`

    def open(self, mode="r", encoding=None, errors=None, **kwargs):
        if "r" in mode:
            for part, left in self.read_faults.items():
                if part in self._key and left > 0:
                    self.read_faults[part] = left - 1
                    raise TimeoutError(f"reading {self} timed out (an injected bucket fault)")
        return FS.open(self._key, mode)

    def unlink(self, missing_ok=False) -> None:
        if FS.exists(self._key) or not missing_ok:
            FS.rm(self._key)

    def rmtree(self, missing_ok=False) -> None:
        FS.rm(self._key, recursive=True)

    def rename(self, target):
        FS.mv(self._key, MemoryPath(target)._key)
        return MemoryPath(target)

    replace = rename

    def expanduser(self):
        return self

    def resolve(self, strict=False):
        return self


@contextlib.contextmanager
def flaky_reads(part: str, times: int):
    """The next `times` reads of keys containing `part` raise TimeoutError, as a bucket read that timed out."""
    MemoryPath.read_faults = {part: times}
    try:
        yield
    finally:
        MemoryPath.read_faults = {}
