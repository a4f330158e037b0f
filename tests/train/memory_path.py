"""A non-local `epath` backend for offline tests: "memtest://bucket/run" lives in fsspec's in-memory
filesystem, like a gs:// bucket that needs no network. Registered with `epath.register_path_cls`,
so `epath.Path("memtest://...")` (and `tome_jax.train.workdir.resolve`) returns a `MemoryPath`."""

from __future__ import annotations

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

    def open(self, mode="r", encoding=None, errors=None, **kwargs):
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
