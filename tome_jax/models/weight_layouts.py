"""Foreign checkpoint layouts -> timm names, and which layout a checkpoint has (with its GELU).

`layout_of(names)` is the one place that tells layouts apart, from key names alone:
- "timm": timm / DeiT / MAE / MAE-ST / AudioMAE state dicts and this project's own (a family's
  names are its `adapt_state_dict`'s business);
- "augreg": old big_vision / AugReg `.npz` ("Transformer/posembed_input/pos_embedding",
  "MultiHeadDotProductAttention_1", "MlpBlock_3"), trained with the exact (erf) GELU, as timm;
- "big_vision": today's big_vision ViT (params-only or "params/"-prefixed training checkpoints,
  top-level "pos_embedding" without a class-token row, "MultiHeadDotProductAttention_0" /
  "LayerNorm_1" / "MlpBlock_0", scanned "encoderblock" stacks), trained with the tanh GELU;
- "torchvision": torchvision's VisionTransformer ("encoder.layers.encoder_layer_0...", SWAG).
`checkpoint_layout(path)` reads only the names where the file format allows it, so the GELU can be
decided before the model is built: `create_model(name, gelu=checkpoint_layout(path).gelu)`.
`to_timm_state_dict` converts a state dict of any layout to timm names and torch layouts.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping

import numpy as np

from tome_jax.models.weight_files import flat_state_dict, read_names
from tome_jax.models.weight_rules import CheckpointMismatchError, found_keys


@dataclasses.dataclass(frozen=True)
class CheckpointLayout:
    """Whose names a checkpoint uses, and the GELU its MLPs were trained with."""

    name: str  # "timm", "augreg", "big_vision" or "torchvision"
    gelu: str  # "exact" (torch's erf GELU) or "tanh" (big_vision's approximation)


_GELUS = {"timm": "exact", "augreg": "exact", "big_vision": "tanh", "torchvision": "exact"}


def layout_of(names: Iterable[str]) -> CheckpointLayout:
    """The layout of a checkpoint with these key names (wrappers and "module." prefixes removed)."""
    names = [str(k) for k in names]
    if any(k.startswith("params/") for k in names):  # a big_vision training checkpoint: params + optimizer
        names = [k for k in names if k.startswith("params/")]
    bare = {k.removeprefix("params/").removeprefix("opt/target/") for k in names}
    if "Transformer/posembed_input/pos_embedding" in bare:
        name = "augreg"
    elif any(k.startswith(("Transformer/", "embedding/")) for k in bare):
        name = "big_vision"
    elif "conv_proj.weight" in bare or any(k.startswith("encoder.layers.") for k in bare):
        name = "torchvision"
    else:
        name = "timm"
    return CheckpointLayout(name, _GELUS[name])


def checkpoint_layout(source: str | os.PathLike | Mapping) -> CheckpointLayout:
    """The layout of a checkpoint path (names only: a .npz or .safetensors index; a torch file is read
    whole) or state dict. A training workdir holds this project's timm names; its GELU is not recorded
    (exact is assumed)."""
    if isinstance(source, Mapping):
        return layout_of(flat_state_dict(source))
    names = read_names(source)
    return layout_of(names) if names is not None else CheckpointLayout("timm", _GELUS["timm"])


def to_timm_state_dict(state_dict: Mapping) -> tuple[dict[str, np.ndarray], CheckpointLayout]:
    """Any supported state dict -> (timm names and torch layouts, the layout it came in)."""
    state_dict = flat_state_dict(state_dict)
    layout = layout_of(state_dict)
    convert = {"augreg": _from_big_vision, "big_vision": _from_big_vision, "torchvision": _from_torchvision}
    return convert.get(layout.name, dict)(state_dict), layout


# ----------------------------------------------------------------------------- big_vision


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


def _from_big_vision(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """big_vision / AugReg npz names and Flax layouts -> timm names and torch layouts.

    Today's big_vision adds `pos_embedding` [1, N, C] to the patches only (the class token has none),
    so a zero class row is prepended when the checkpoint has a `cls` token.
    """
    sd = _big_vision_params(sd)
    found = found_keys(sd)

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


# ----------------------------------------------------------------------------- torchvision


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
