"""Load pretrained ViT weights into a tome_jax model, no torch needed.

Every format is first turned into a timm state dict (timm names, torch layouts), then one table
maps timm names onto the model's parameters:

- timm state dicts: `.safetensors`, `.npz`, `.pth`/`.pt`/`.bin` (needs torch), or a dict of arrays;
  official MAE checkpoints wrap it in a "model" key (fc_norm + average pooling);
- big_vision `.npz` checkpoints: the AugReg layout ("Transformer/posembed_input/pos_embedding",
  "MultiHeadDotProductAttention_1", "MlpBlock_3") and today's big_vision ViT (params-only or
  "params/"-prefixed training checkpoints, top-level "pos_embedding" without a class-token row,
  "MultiHeadDotProductAttention_0" / "LayerNorm_1" / "MlpBlock_0", scanned "encoderblock" stacks);
  the latter also switches the model's GELU to big_vision's tanh approximation (`model.gelu`);
- PyTorch `.pth` zip checkpoints are read without torch and without running pickled code: only
  tensors, dicts and argparse namespaces (MAE's training script saves its `args`) are accepted;
- torchvision ViT state dicts ("encoder.layers.encoder_layer_0...", e.g. SWAG ViT-L/16@512, H/14@518).
- a training workdir of this project (its latest checkpoint's parameters), e.g. an MAE pre-training
  run whose encoder starts a fine-tuning run (`init.weights=runs/mae_pt`).
Every path may be local or on a bucket (gs://, s3://: any etils `epath` scheme); a "module." prefix
(a model saved under DistributedDataParallel) is removed from every key.
Position embeddings are resampled (bicubic) when the model's grid differs from the checkpoint's.
An MAE *pre-training* checkpoint (decoder keys) loads its encoder into a fine-tuning model: the
decoder keys (and `norm` when the model pools with `fc_norm` instead) are reported as `ignored`,
the fresh `fc_norm` as `initialized`, as the official MAE fine-tuning does.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import re
import zipfile
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tome_jax.models.vit import VisionTransformer
from tome_jax.paths import is_local, resolve


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not fit the model."""


# ----------------------------------------------------------------------------- reading


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a checkpoint file into a flat {name: numpy array} dict (any supported layout).

    `path` is local or a bucket URL (gs://, s3://: any etils `epath` scheme); a bucket file is read
    into memory once.
    """
    path = os.fspath(path)
    file = resolve(path)
    if file.is_dir():
        return read_workdir(path)
    if not file.exists():
        raise FileNotFoundError(
            f"weights file {path!r} does not exist; download the checkpoint (timm/HF hub .safetensors, "
            "big_vision .npz, torchvision .pth) and pass its path.")
    if not path.endswith((".safetensors", ".npz", ".pth", ".pt", ".bin")):
        raise ValueError(f"unsupported weights format {path!r}; use .safetensors, .npz, .pth/.pt/.bin.")
    local = is_local(file)  # epath also maps local /gs/... paths to gs://
    source = path if local else io.BytesIO(file.read_bytes())  # what np.load / zipfile / torch.load take
    if path.endswith(".safetensors"):
        from safetensors.numpy import load, load_file

        return load_file(path) if local else load(source.getvalue())
    if path.endswith(".npz"):
        with np.load(source, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    if path.endswith((".pth", ".pt", ".bin")):
        if zipfile.is_zipfile(source):  # torch >= 1.6 format: read safely, no torch needed
            return _flat_arrays(_unwrap(read_torch_zip(source, path)), path)
        if not local:
            source.seek(0)  # is_zipfile read the buffer to its end
        try:  # the legacy (pre-1.6) pickle format needs torch's own reader
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
        state = _unwrap(state)
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
    flat = jax.tree_util.tree_flatten_with_path(restored["state"]["params"])[0]
    out = {}
    for key_path, value in flat:
        path = [str(getattr(k, "key", getattr(k, "idx", k))) for k in key_path]
        path = tuple(path[:-1] if path[-1] == "value" else path)
        value = np.asarray(value)
        if path[-1] == "kernel":  # Flax layout -> torch layout (inverse of _to_model_layout)
            value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
        out[_timm_name(path)] = np.ascontiguousarray(value)
    return out


def _unwrap(state: Mapping) -> Mapping:
    """Official MAE / DeiT checkpoints keep the weights under "model" (or "state_dict")."""
    for key in ("model", "state_dict", "model_ema", "model_state"):  # model_state: PySlowFast / MAE-ST
        if key in state and isinstance(state[key], Mapping):
            return state[key]
    return state


# ----------------------------------------------------------------------------- formats -> timm


def _big_vision_params(sd: Mapping) -> dict[str, np.ndarray]:
    """Strip the wrappers of big_vision checkpoints: "opt/target/" (AugReg) or "params/" (training
    checkpoints, whose other keys are optimizer state); scanned block stacks are split per block."""
    if any(k.startswith("params/") for k in sd):
        sd = {k.removeprefix("params/"): v for k, v in sd.items() if k.startswith("params/")}
    sd = {k.removeprefix("opt/target/"): np.asarray(v) for k, v in sd.items()}
    out = {}
    for key, value in sd.items():
        if key.startswith("Transformer/encoderblock/"):  # scan=True: [depth, ...] per parameter
            rest = key.removeprefix("Transformer/encoderblock/")
            out.update({f"Transformer/encoderblock_{i}/{rest}": v for i, v in enumerate(value)})
        else:
            out[key] = value
    return out


def big_vision_layout(sd: Mapping | list) -> str | None:
    """"augreg" (old big_vision / AugReg names), "big_vision" (today's ViT) or None, from the keys."""
    keys = [str(k) for k in sd]
    if any(k.startswith("params/") for k in keys):
        keys = [k for k in keys if k.startswith("params/")]
    keys = {k.removeprefix("params/").removeprefix("opt/target/") for k in keys}
    if "Transformer/posembed_input/pos_embedding" in keys:
        return "augreg"
    if any(k.startswith(("Transformer/", "embedding/")) for k in keys):
        return "big_vision"
    return None


def checkpoint_gelu(path) -> str | None:
    """"tanh" when `path` is a checkpoint of today's big_vision (read from its .npz key names only),
    else None: what `create_model(gelu=...)` needs before the weights are restored (resume, eval)."""
    path = os.fspath(path) if isinstance(path, (str, os.PathLike)) else ""
    if not (path.endswith(".npz") and (file := resolve(path)).is_file()):
        return None
    with file.open("rb") as opened, np.load(opened, allow_pickle=False) as data:  # reads the index only
        return "tanh" if big_vision_layout(data.files) == "big_vision" else None


def _found(sd: Mapping, n: int = 12) -> str:
    items = [f"{k} {tuple(np.shape(v))}" for k, v in list(sd.items())[:n]]
    return ", ".join(items) + (f", ... ({len(sd)} keys)" if len(sd) > n else "")


def _from_big_vision(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """big_vision / AugReg npz names and Flax layouts -> timm names and torch layouts.

    Today's big_vision adds `pos_embedding` [1, N, C] to the patches only (the class token has none),
    so a zero class row is prepended when the checkpoint has a `cls` token.
    """
    sd = _big_vision_params(sd)
    found = _found(sd)

    def pop(key):
        if key not in sd:
            raise CheckpointMismatchError(
                f"big_vision checkpoint without {key!r}; found: {found}. Supported: ViTs with a learned "
                "position embedding ('pos_embedding') and a 'tok' or 'gap' head (no MAP head).")
        return sd.pop(key)

    out = {"patch_embed.proj.weight": pop("embedding/kernel").transpose(3, 2, 0, 1),
           "patch_embed.proj.bias": pop("embedding/bias")}
    if "Transformer/posembed_input/pos_embedding" in sd:
        out["pos_embed"] = sd.pop("Transformer/posembed_input/pos_embedding")
    else:
        pos = pop("pos_embedding")
        if "cls" in sd:
            pos = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
        out["pos_embed"] = pos
    out["norm.weight"] = pop("Transformer/encoder_norm/scale")
    out["norm.bias"] = pop("Transformer/encoder_norm/bias")
    if "cls" in sd:
        out["cls_token"] = sd.pop("cls")
    if "head/kernel" in sd:
        out["head.weight"] = sd.pop("head/kernel").T
        out["head.bias"] = sd.pop("head/bias")
    blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"Transformer/encoderblock_(\d+)/", k))})
    for i in blocks:
        p, t = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        # AugReg: LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3;
        # big_vision today: LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0.
        new = p + "MultiHeadDotProductAttention_0/query/kernel" in sd
        mha = p + ("MultiHeadDotProductAttention_0/" if new else "MultiHeadDotProductAttention_1/")
        mlp = next((p + n for n in ("MlpBlock_3/", "MlpBlock_0/") if p + n + "Dense_0/kernel" in sd), p + "MlpBlock_0/")
        if mha + "query/kernel" not in sd:
            pop(mha + "query/kernel")  # raises, listing what was found
        dim = sd[mha + "query/kernel"].shape[0]
        out[t + "attn.qkv.weight"] = np.concatenate(
            [pop(mha + f"{n}/kernel").reshape(dim, -1).T for n in ("query", "key", "value")])
        out[t + "attn.qkv.bias"] = np.concatenate(
            [pop(mha + f"{n}/bias").reshape(-1) for n in ("query", "key", "value")])
        out[t + "attn.proj.weight"] = pop(mha + "out/kernel").reshape(-1, dim).T
        out[t + "attn.proj.bias"] = pop(mha + "out/bias")
        for n, name in (("LayerNorm_0", "norm1"), ("LayerNorm_1" if new else "LayerNorm_2", "norm2")):
            out[t + name + ".weight"] = pop(p + n + "/scale")
            out[t + name + ".bias"] = pop(p + n + "/bias")
        for n, name in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            out[t + f"mlp.{name}.weight"] = pop(mlp + n + "/kernel").T
            out[t + f"mlp.{name}.bias"] = pop(mlp + n + "/bias")
    out.update(sd)  # leftovers are reported as unused keys
    return out


_TORCHVISION_RULES = [
    (r"^conv_proj\.", "patch_embed.proj."),
    (r"^class_token$", "cls_token"),
    (r"^encoder\.pos_embedding$", "pos_embed"),
    (r"^encoder\.ln\.", "norm."),
    (r"^heads\.head\.", "head."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.ln_1\.", r"blocks.\1.norm1."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.ln_2\.", r"blocks.\1.norm2."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.in_proj_(weight|bias)$", r"blocks.\1.attn.qkv.\2"),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.out_proj\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.mlp\.(0|linear_1)\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.mlp\.(3|linear_2)\.", r"blocks.\1.mlp.fc2."),
]


def _from_torchvision(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """torchvision VisionTransformer names -> timm names (layouts already agree)."""
    out = {}
    for key, value in sd.items():
        new = key
        for pattern, repl in _TORCHVISION_RULES:
            new, hit = re.subn(pattern, repl, key)
            if hit:
                break
        out[new] = value
    return out


def to_timm_state_dict(sd: Mapping) -> dict[str, np.ndarray]:
    """Any supported checkpoint dict -> timm names and torch layouts."""
    sd = _unwrap(sd)
    sd = {k.removeprefix("module."): np.asarray(v) for k, v in sd.items()}  # "module.": saved under DDP
    if big_vision_layout(sd):
        return _from_big_vision(sd)
    if "conv_proj.weight" in sd or any(k.startswith("encoder.layers.") for k in sd):
        return _from_torchvision(sd)
    return sd


# ----------------------------------------------------------------------------- timm -> model


def resample_pos_embed(pos_embed: np.ndarray, grid: int | tuple[int, int], num_prefix_tokens: int) -> np.ndarray:
    """[1, P + g*g, C] -> [1, P + gh*gw, C], bicubic on the (square) patch grid, prefix tokens kept.

    grid: the new (gh, gw), or one int for a square grid."""
    grid_h, grid_w = (grid, grid) if isinstance(grid, int) else grid
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old = int(round(np.sqrt(patches.shape[1])))
    if old * old != patches.shape[1]:
        raise CheckpointMismatchError(
            f"pos_embed has {patches.shape[1]} patch tokens, not a square grid; check the model's "
            f"class/distill tokens ({num_prefix_tokens} prefix tokens expected).")
    dim = patches.shape[-1]
    patches = jax.image.resize(jnp.asarray(patches, jnp.float32).reshape(old, old, dim),
                               (grid_h, grid_w, dim), method="bicubic", antialias=True)
    return np.concatenate([prefix, np.asarray(patches).reshape(1, grid_h * grid_w, dim)], axis=1)


def _timm_name(path: tuple) -> str:
    """NNX state path -> timm name: ('blocks', 0, 'attn', 'qkv', 'kernel') -> blocks.0.attn.qkv.weight."""
    *module, leaf = (str(p) for p in path)
    return ".".join([*module, "weight" if leaf in ("kernel", "scale") else leaf])


def _to_model_layout(value: np.ndarray, path: tuple) -> np.ndarray:
    if path[-1] == "kernel" and value.ndim == 4:  # conv OIHW -> HWIO
        return value.transpose(2, 3, 1, 0)
    if path[-1] == "kernel" and value.ndim == 5:  # conv3d OITHW -> THWIO (video tubelets)
        return value.transpose(2, 3, 4, 1, 0)
    if path[-1] == "kernel" and value.ndim == 2:  # linear [out, in] -> [in, out]
        return value.T
    return value


def timm_state_dict(model: VisionTransformer) -> dict[str, np.ndarray]:
    """The model's parameters as a timm state dict (timm names, torch layouts, numpy)."""
    out = {}
    for path, param in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        value = np.asarray(param[...])
        if path[-1] == "kernel":  # inverse of _to_model_layout
            value = value.transpose({4: (3, 2, 0, 1), 5: (4, 3, 0, 1, 2)}.get(value.ndim, (1, 0)))
        out[_timm_name(path)] = np.ascontiguousarray(value)
    return out


def save_timm(model: VisionTransformer, path: str | os.PathLike) -> None:
    """Write the model as a timm-compatible `.safetensors` file (atomically: temp file + rename)."""
    from safetensors.numpy import save_file

    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    save_file(timm_state_dict(model), tmp)
    os.replace(tmp, path)


MAE_DECODER_KEYS = ("decoder_", "mask_token")  # what only an MAE pre-training checkpoint holds
_MAE_SIGNATURE = ("mask_token", "decoder_embed.weight", "decoder_pred.weight")  # all present: pre-training


def _mae_pretraining_rule(state_dict: Mapping, model_names: set[str]) -> tuple[list[str], list[str]]:
    """(checkpoint keys to ignore, model keys to leave at their init) when an MAE pre-training
    checkpoint (decoder keys) goes into a model without a decoder: the decoder is dropped, and a model
    that pools with `fc_norm` and has no final `norm` starts `fc_norm` fresh and drops the
    checkpoint's `norm` (official MAE fine-tuning: missing keys = head + fc_norm)."""
    if not all(k in state_dict for k in _MAE_SIGNATURE) or \
            any(n.startswith(MAE_DECODER_KEYS) for n in model_names):
        return [], []
    ignored = [k for k in state_dict if k.startswith(MAE_DECODER_KEYS)]
    initialized = []
    if not any(n.startswith("norm.") for n in model_names) and any(n.startswith("fc_norm.") for n in model_names):
        ignored += [k for k in state_dict if k.startswith("norm.")]
        initialized = [n for n in model_names if n.startswith("fc_norm.") and n not in state_dict]
    return sorted(ignored), sorted(initialized)


def load_timm(model: VisionTransformer, source, *, strict: bool = True, skip: tuple[str, ...] = ()) -> dict:
    """Load timm-named weights (or any format above) into `model` in place.

    source: a path (a file, or a training workdir) or a dict of arrays. `skip`: timm-name prefixes to
    leave at their init, e.g. ("head",) to fine-tune on a new class count. Shape mismatches always
    raise, naming the key. Missing and unused keys raise when `strict`, else are returned. Returns
    {"missing": [...], "unused": [...], "resampled": [...], "ignored": [...], "initialized": [...]}
    (+ "gelu": "tanh" when set); a checkpoint of today's big_vision also sets `model.gelu = "tanh"` (its GELU).
    `ignored` / `initialized` are the checkpoint keys deliberately not loaded and the model keys
    deliberately left at their init (MAE pre-training checkpoint into a fine-tuning model). A family
    with its own checkpoint names adapts them first (`model.adapt_state_dict`: video's MAE-ST
    names, audio's resampling along time), adding "dropped" keys and "resampled" entries.
    """
    state_dict = read_state_dict(source) if isinstance(source, (str, os.PathLike)) else source
    layout = big_vision_layout(_unwrap(state_dict))
    state_dict = to_timm_state_dict(state_dict)
    adapted = {}
    if hasattr(model, "adapt_state_dict"):  # a family's own names and rules (video.py: MAE-ST, audio.py: AudioMAE)
        state_dict, adapted = model.adapt_state_dict(state_dict)
    state = nnx.state(model, nnx.Param)
    flat = dict(nnx.to_flat_state(state))
    ignored, initialized = _mae_pretraining_rule(state_dict, {_timm_name(path) for path in flat})
    state_dict = {k: v for k, v in state_dict.items() if k not in ignored}
    skip = tuple(skip) + tuple(initialized)
    missing, mismatched, resampled, updates = [], [], [], {}
    grid = model.grid_size
    for path, param in flat.items():
        name = _timm_name(path)
        if skip and name.startswith(skip):
            continue
        if name not in state_dict:
            missing.append(name)
            continue
        value = _to_model_layout(np.asarray(state_dict[name]), path)
        if name == "pos_embed" and value.shape != param.shape and value.ndim == 3:
            value = resample_pos_embed(value, grid, model.num_prefix_tokens)
            resampled.append(name)
        if value.shape != param.shape:
            mismatched.append(f"{name}: checkpoint {np.shape(state_dict[name])} does not fit the model's "
                              f"{tuple(param.shape)} (Flax layout)")
        updates[path] = value
    model_names = {_timm_name(path) for path in flat}
    if strict and not updates and not ignored:
        raise CheckpointMismatchError(
            f"unknown checkpoint layout: no key matches the model. Found: {_found(state_dict)}. Supported: "
            "timm / DeiT / MAE state dicts (patch_embed.proj.weight, blocks.0.attn.qkv.weight, ...), big_vision "
            "and AugReg .npz (embedding/kernel, Transformer/encoderblock_0/...), torchvision (encoder.layers.*).")
    unused = sorted(k for k in state_dict if k not in model_names and not (skip and k.startswith(skip)))
    if (missing or unused) and ignored:
        unused_note = (" This is an MAE pre-training checkpoint (its decoder keys are ignored); the model "
                       "must be a ViT of the same size, e.g. vit_base_patch16_224.mae.")
    else:
        unused_note = ""
    if mismatched:
        raise CheckpointMismatchError(
            "shape mismatch between checkpoint and model (is this the right architecture, img_size, "
            "num_classes? pass skip=('head',) to keep a new head):\n  " + "\n  ".join(mismatched))
    if strict and (missing or unused):
        raise CheckpointMismatchError(
            f"checkpoint does not fit the model: missing keys {missing}, unused keys {unused}. "
            "Check the model name / global_pool / fc_norm, or pass strict=False to load what matches."
            + unused_note)
    for path, value in updates.items():  # only after every check passed: no half-loaded model
        flat[path].set_value(jnp.asarray(value, flat[path].dtype))
    nnx.update(model, state)
    set_gelu = layout == "big_vision" and hasattr(model, "gelu")
    if set_gelu:  # today's big_vision MLPs use the tanh GELU
        model.gelu = "tanh"
    return {**({"gelu": "tanh"} if set_gelu else {}), "missing": missing, "unused": unused, "resampled": resampled + adapted.get("resampled", []),
            "ignored": ignored, "initialized": initialized,
            **({"dropped": adapted["dropped"]} if adapted.get("dropped") else {})}
