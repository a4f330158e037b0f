"""Load pretrained ViT weights into a tome_jax model, no torch needed: `load_timm`, the one door.

A checkpoint becomes a model in four steps, each decided in one place:
1. reading: a file, a training workdir or a dict -> a flat {name: array} dict (weight_files.py:
   .safetensors, .npz, torch .pth read without torch, buckets, "model" wrappers, DDP "module.");
2. layout: big_vision / AugReg / SigLIP / torchvision / OpenAI CLIP names -> timm names and torch
   layouts, and the layout's GELU (weight_layouts.py). The GELU is a property of the built model, so
   it is decided before building: `create_model(name, **checkpoint_layout(path).model_kwargs())`; a
   checkpoint whose GELU differs from the model's is refused (strict) rather than loaded into the
   wrong activation; where the names do not say (CLIP: OpenAI's QuickGELU or LAION's exact GELU)
   the model name decides (`vit_base_patch16_clip_quickgelu_224`);
3. the family's rules: `model.adapt_state_dict(state_dict)` (an `Encoder` method with a default
   that families extend: MAE pre-training checkpoints, MAE-ST names, position tables resampled to
   the model's grid; the shared pieces live in weight_rules.py);
4. matching (here): timm names -> the model's parameters, every missing / unused key and shape
   mismatch reported by name, nothing changed unless everything fits.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypedDict

import jax.numpy as jnp
import numpy as np
from flax import nnx

from tome_jax.models.encoder import Encoder
from tome_jax.models.weight_files import read_state_dict
from tome_jax.models.weight_layouts import CheckpointLayout, checkpoint_layout, to_timm_state_dict
from tome_jax.models.weight_rules import (
    MAE_DECODER_KEYS,
    CheckpointMismatchError,
    found_keys,
    resample_pos_embed,
    timm_name,
    timm_state_dict,
    to_model_layout,
)

__all__ = ["CheckpointLayout", "CheckpointMismatchError", "LoadReport", "checkpoint_layout", "load_timm",
           "read_state_dict", "resample_pos_embed", "save_timm", "timm_state_dict"]


class LoadReport(TypedDict):
    """What `load_timm` did; always these five lists of timm names.

    missing / unused: model keys the checkpoint lacks / checkpoint keys the model lacks (empty unless
    strict=False); resampled: position tables resized to the model's grid; ignored: checkpoint keys a
    family rule leaves out on purpose (an MAE decoder) or that belong to no image model (the text tower
    and temperature of a SigLIP / CLIP checkpoint); initialized: model keys a family rule leaves
    at their init on purpose (MAE fine-tuning's fresh `fc_norm`). Keys the caller's `skip` names are
    in none of them.
    """

    missing: list[str]
    unused: list[str]
    resampled: list[str]
    ignored: list[str]
    initialized: list[str]


def load_timm(model: Encoder, source: str | os.PathLike | Mapping, *, strict: bool = True,
              skip: tuple[str, ...] = ()) -> LoadReport:
    """Load a checkpoint (timm names or any layout above) into `model` in place; returns a `LoadReport`.

    source: a path (a file, or a training workdir; local or a bucket URL) or a dict of arrays.
    skip: timm-name prefixes to leave at their init, e.g. ("head",) to fine-tune on a new class
    count. Shape mismatches always raise, naming the key. Missing and unused keys, and a checkpoint
    trained with another GELU than the model's, raise when `strict`; otherwise they are loaded as
    far as they fit (missing / unused are returned).
    """
    state_dict = read_state_dict(source) if isinstance(source, (str, os.PathLike)) else source
    state_dict, layout, not_image = to_timm_state_dict(state_dict)  # not_image: a text tower, logit scale
    if strict and layout.gelu is not None and layout.gelu != model.gelu:
        raise CheckpointMismatchError(
            f"the checkpoint ({layout.name} layout) was trained with the {layout.gelu} GELU but the model uses "
            f"the {model.gelu} one; build the model with "
            "create_model(..., gelu=tome_jax.checkpoint_layout(path).gelu), or pass strict=False to load it anyway.")
    adapted = model.adapt_state_dict(state_dict)  # the family's rules: names, MAE decoders, grids
    state_dict, ignored = adapted.state_dict, list(adapted.ignored) + not_image
    state = nnx.state(model, nnx.Param)
    flat = dict(nnx.to_flat_state(state))
    skip = tuple(skip) + tuple(adapted.initialized)
    missing, mismatched, updates = [], [], {}
    for path, param in flat.items():
        name = timm_name(path)
        if skip and name.startswith(skip):
            continue
        if name not in state_dict:
            missing.append(name)
            continue
        value = to_model_layout(np.asarray(state_dict[name]), path)
        if value.shape != param.shape:
            mismatched.append(f"{name}: checkpoint {np.shape(state_dict[name])} does not fit the model's "
                              f"{tuple(param.shape)} (Flax layout)")
        updates[path] = value
    model_names = {timm_name(path) for path in flat}
    if strict and not updates and not ignored:
        raise CheckpointMismatchError(
            f"unknown checkpoint layout: no key matches the model. Found: {found_keys(state_dict)}. Supported: "
            "timm / DeiT / MAE state dicts (patch_embed.proj.weight, blocks.0.attn.qkv.weight, ...), big_vision "
            "and AugReg .npz (embedding/kernel, Transformer/encoderblock_0/..., SigLIP's params/img/...), "
            "torchvision (encoder.layers.*), OpenAI CLIP / open_clip (visual.conv1.weight, ...).")
    unused = sorted(k for k in state_dict if k not in model_names and not (skip and k.startswith(skip)))
    if mismatched:
        raise CheckpointMismatchError(
            "shape mismatch between checkpoint and model (is this the right architecture, img_size, "
            "num_classes? pass skip=('head',) to keep a new head):\n  " + "\n  ".join(mismatched))
    if strict and (missing or unused):
        mae_note = (" This is an MAE pre-training checkpoint (its decoder keys are ignored); the model's encoder "
                    "must have the same size, e.g. vit_base_patch16_224.mae."
                    if any(k.startswith(MAE_DECODER_KEYS) for k in ignored) else "")
        raise CheckpointMismatchError(
            f"checkpoint does not fit the model: missing keys {missing}, unused keys {unused}. "
            "Check the model name / global_pool / fc_norm, or pass strict=False to load what matches." + mae_note)
    for path, value in updates.items():  # only after every check passed: no half-loaded model
        flat[path].set_value(jnp.asarray(value, flat[path].dtype))
    nnx.update(model, state)
    return LoadReport(missing=missing, unused=unused, resampled=list(adapted.resampled), ignored=sorted(ignored),
                      initialized=sorted(adapted.initialized))


def save_timm(model: nnx.Module, path: str | os.PathLike) -> None:
    """Write the model as a timm-compatible `.safetensors` file (atomically: temp file + rename)."""
    from safetensors.numpy import save_file

    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    save_file(timm_state_dict(model), tmp)
    os.replace(tmp, path)
