"""Reading checkpoints into flat {name: numpy array} dicts, no torch needed.

The file format is decided here, once (`checkpoint_format`), from the path:
- `.safetensors`, `.npz`: read as they are;
- `.pth` / `.pt` / `.bin`: a torch >= 1.6 zip file is read without torch and without running
  pickled code (only tensors, dicts and argparse namespaces, e.g. MAE's saved `args`); the legacy
  pickle format needs torch (`torch.load(weights_only=True)`);
- a directory: a training workdir of this project (its latest checkpoint's parameters, timm names).
Paths may be local or on a bucket (gs://, s3://: any etils `epath` scheme); a bucket file is read
into memory once. `flat_state_dict` removes the wrappers state dicts come in: a "model" /
"state_dict" / "model_ema" / "model_state" key (MAE, DeiT, PySlowFast) and DDP's "module." prefix.
Which names the arrays carry (timm, big_vision, torchvision) is weight_layouts.py's business.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import zipfile
from collections.abc import Mapping

import jax
import numpy as np

from tome_jax.models.weight_rules import CheckpointMismatchError, timm_name, to_torch_layout
from tome_jax.paths import is_local, resolve

_FORMATS = {".safetensors": "safetensors", ".npz": "npz", ".pth": "torch", ".pt": "torch", ".bin": "torch"}


def checkpoint_format(path: str | os.PathLike) -> str:
    """"workdir", "safetensors", "npz" or "torch" for an existing checkpoint path; errors name the fix."""
    path = os.fspath(path)
    file = resolve(path)
    if file.is_dir():
        return "workdir"
    if not file.exists():
        raise FileNotFoundError(
            f"weights file {path!r} does not exist; download the checkpoint (timm/HF hub .safetensors, "
            "big_vision .npz, torchvision .pth) and pass its path.")
    suffix = next((s for s in _FORMATS if path.endswith(s)), None)
    if suffix is None:
        raise ValueError(f"unsupported weights format {path!r}; use .safetensors, .npz, .pth/.pt/.bin.")
    return _FORMATS[suffix]


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a checkpoint file (or a training workdir) into a flat {name: numpy array} dict."""
    path = os.fspath(path)
    kind = checkpoint_format(path)
    if kind == "workdir":
        return read_workdir(path)
    file = resolve(path)
    local = is_local(file)  # epath also maps local /gs/... paths to gs://
    source = path if local else io.BytesIO(file.read_bytes())  # what np.load / zipfile / torch.load take
    if kind == "safetensors":
        from safetensors.numpy import load, load_file

        return load_file(path) if local else load(source.getvalue())
    if kind == "npz":
        with np.load(source, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    if zipfile.is_zipfile(source):  # torch >= 1.6 format: read safely, no torch needed
        return _flat_arrays(unwrap(read_torch_zip(source, path)), path)
    if not local:
        source.seek(0)  # is_zipfile read the buffer to its end
    return _read_legacy_torch(source, path)


def read_names(path: str | os.PathLike) -> list[str] | None:
    """The array names of a checkpoint file, reading only its index where the format has one (.npz,
    .safetensors; a torch file is read whole). None for a training workdir (this project's names)."""
    path = os.fspath(path)
    kind = checkpoint_format(path)
    if kind == "workdir":
        return None
    if kind == "torch":
        return list(read_state_dict(path))
    with resolve(path).open("rb") as opened:
        if kind == "npz":
            with np.load(opened, allow_pickle=False) as data:
                return list(data.files)
        header = json.loads(opened.read(int.from_bytes(opened.read(8), "little")))  # safetensors' header
        return [k for k in header if k != "__metadata__"]


def flat_state_dict(state: Mapping) -> dict[str, np.ndarray]:
    """A state dict without its wrappers: the "model" (or similar) entry, DDP's "module." prefixes."""
    return {k.removeprefix("module."): np.asarray(v) for k, v in unwrap(state).items()}


def unwrap(state: Mapping) -> Mapping:
    """Official MAE / DeiT checkpoints keep the weights under "model" (or "state_dict")."""
    for key in ("model", "state_dict", "model_ema", "model_state"):  # model_state: PySlowFast / MAE-ST
        if key in state and isinstance(state[key], Mapping):
            return state[key]
    return state


# ----------------------------------------------------------------------------- torch files


def _read_legacy_torch(source, path: str) -> dict[str, np.ndarray]:
    """The legacy (pre-1.6) pickle format, which needs torch's own reader."""
    try:
        import argparse

        import torch
    except ImportError:
        raise ImportError(
            f"{path!r} is a legacy PyTorch pickle and torch is not installed. Convert it once where torch "
            "is available: python -c \"import argparse, torch, safetensors.torch as st; "
            "torch.serialization.add_safe_globals([argparse.Namespace]); sd = torch.load('in.pth', "
            "map_location='cpu', weights_only=True); sd = sd.get('model', sd); st.save_file({k: "
            "v.contiguous() for k, v in sd.items()}, 'out.safetensors')\", then load the .safetensors "
            "file.") from None
    with torch.serialization.safe_globals([argparse.Namespace]):  # MAE's `args`; still weights_only
        state = torch.load(source, map_location="cpu", weights_only=True)
    state = unwrap(state)
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


# torch storage classes -> numpy dtypes (bfloat16 via ml_dtypes, a JAX dependency).
_TORCH_STORAGES = {"FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
                   "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
                   "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool"}


class _Namespace:
    """Stand-in for argparse.Namespace in a checkpoint (MAE's `args`): holds the attributes, runs nothing."""


class _TorchUnpickler(pickle.Unpickler):
    """Restricted unpickler of a torch zip checkpoint: tensors, (ordered) dicts, namespaces; nothing else."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, source: str):
        super().__init__(file)
        self.archive, self.prefix, self.source = archive, prefix, source

    def find_class(self, module: str, name: str):
        allowed = {("collections", "OrderedDict"): collections.OrderedDict,
                   ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
                   ("torch._utils", "_rebuild_parameter"): lambda data, *_: data,
                   ("argparse", "Namespace"): _Namespace}
        if (module, name) in allowed:
            return allowed[module, name]
        if module == "torch" and name in _TORCH_STORAGES:
            return np.dtype(_TORCH_STORAGES[name]) if name != "BFloat16Storage" else _bfloat16()
        raise pickle.UnpicklingError(
            f"{self.source!r} holds a pickled {module}.{name}, which is not loaded (only tensors, dicts and "
            "argparse namespaces are read, so no code in the file runs). Save just the state dict "
            "(torch.save(model.state_dict(), ...)) or convert it to .safetensors.")

    def persistent_load(self, pid):
        kind, dtype, key, _location, numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"{self.source!r}: unknown persistent record {kind!r}.")
        data = self.archive.read(f"{self.prefix}data/{key}")
        return np.frombuffer(data, dtype=dtype, count=numel)


def _bfloat16():
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *_) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2 on a numpy storage: a strided view, copied."""
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * item for s in stride))
    return np.array(view)


def read_torch_zip(file, name: str | None = None) -> object:
    """A `torch.save` zip file's object (tensors as numpy arrays, namespaces as `_Namespace`), without
    torch and without running pickled code. file: a path or a binary file object; name: for errors."""
    name = name or (os.fspath(file) if isinstance(file, (str, os.PathLike)) else getattr(file, "name", "<buffer>"))
    with zipfile.ZipFile(file) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if not pickles:
            raise ValueError(f"{name!r} is a zip file but not a torch checkpoint (no data.pkl).")
        prefix = pickles[0][: -len("data.pkl")]
        with archive.open(pickles[0]) as pickled:
            return _TorchUnpickler(pickled, archive, prefix, name).load()


def _flat_arrays(state: Mapping, source: str) -> dict[str, np.ndarray]:
    """The arrays of a state dict, float32 for floating ones (bfloat16/float16 widened)."""
    out = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            out[key] = value.astype(np.float32) if value.dtype.kind == "f" or value.dtype.name == "bfloat16" \
                else value
    if not out:
        raise CheckpointMismatchError(f"{source!r} holds no tensors at its top level (found: "
                                      f"{', '.join(map(str, list(state)[:10]))}).")
    return out


# ----------------------------------------------------------------------------- training workdirs


def read_workdir(workdir: str | os.PathLike) -> dict[str, np.ndarray]:
    """The parameters of a training workdir's latest checkpoint as a timm state dict (numpy)."""
    import orbax.checkpoint as ocp

    workdir = os.fspath(workdir)
    directory = resolve(workdir) / "checkpoints"
    manager = ocp.CheckpointManager(directory, item_handlers={"state": ocp.StandardCheckpointHandler()}) \
        if directory.is_dir() else None
    step = manager.latest_step() if manager is not None else None
    if step is None:
        raise FileNotFoundError(
            f"{workdir!r} is a directory but not a training workdir with a checkpoint (no "
            f"{os.path.join(workdir, 'checkpoints', '<step>')}); pass a finished run's --workdir or a weights file.")
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    manager.close()
    out = {}
    for key_path, value in jax.tree_util.tree_flatten_with_path(restored["state"]["params"])[0]:
        path = [str(getattr(k, "key", getattr(k, "idx", k))) for k in key_path]
        path = tuple(path[:-1] if path[-1] == "value" else path)
        out[timm_name(path)] = np.ascontiguousarray(to_torch_layout(np.asarray(value), path))
    return out
