"""Checkpoint rules every model family shares; they know no model family.

The bottom of the weights layers (weight_rules < weight_files, weight_layouts < encoder and the
families < weights.py's `load_timm`):
- names and layouts: timm names of a module's parameters (`blocks.0.attn.qkv.weight`) and the
  torch <-> Flax array layouts (`timm_name`, `to_model_layout`, `to_torch_layout`, `timm_state_dict`);
- `AdaptedStateDict`: what a family's `adapt_state_dict` returns (the state dict, and the keys it
  ignored, left at their init or resampled);
- one grid resampler for position tables on any grid ((H, W), (time, freq), (time,), ...):
  `resample_grid`, and `resample_pos_embed` for tables with prefix (class / distill) rows;
- one MAE rule: an MAE pre-training checkpoint (a decoder) into a model without a decoder
  (`mae_pretraining_rule`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not fit the model."""


def found_keys(state_dict: Mapping, n: int = 12) -> str:
    """The first `n` keys with their shapes, for error messages that list what a checkpoint holds."""
    items = [f"{k} {tuple(np.shape(v))}" for k, v in list(state_dict.items())[:n]]
    return ", ".join(items) + (f", ... ({len(state_dict)} keys)" if len(state_dict) > n else "")


# ----------------------------------------------------------------------------- names and layouts


def timm_name(path: tuple) -> str:
    """NNX state path -> timm name: ('blocks', 0, 'attn', 'qkv', 'kernel') -> blocks.0.attn.qkv.weight."""
    *module, leaf = (str(p) for p in path)
    return ".".join([*module, "weight" if leaf in ("kernel", "scale") else leaf])


def to_model_layout(value: np.ndarray, path: tuple) -> np.ndarray:
    """A torch-layout array -> the layout of the Flax parameter at `path`."""
    if str(path[-1]) != "kernel":
        return value
    if value.ndim == 4:  # conv OIHW -> HWIO
        return value.transpose(2, 3, 1, 0)
    if value.ndim == 5:  # conv3d OITHW -> THWIO (video tubelets)
        return value.transpose(2, 3, 4, 1, 0)
    return value.T if value.ndim == 2 else value  # linear [out, in] -> [in, out]


def to_torch_layout(value: np.ndarray, path: tuple) -> np.ndarray:
    """The Flax parameter at `path` -> torch layout (the inverse of `to_model_layout`)."""
    if str(path[-1]) != "kernel":
        return value
    return value.transpose({4: (3, 2, 0, 1), 5: (4, 3, 0, 1, 2)}.get(value.ndim, (1, 0)))


def timm_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """The module's parameters as a timm state dict (timm names, torch layouts, numpy)."""
    out = {}
    for path, param in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        out[timm_name(path)] = np.ascontiguousarray(to_torch_layout(np.asarray(param[...]), path))
    return out


def timm_param_names(model: nnx.Module) -> set[str]:
    """The timm names of the module's parameters."""
    return {timm_name(path) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}


# ----------------------------------------------------------------------------- a family's result


@dataclasses.dataclass(frozen=True)
class AdaptedStateDict:
    """A timm-named state dict after a family's checkpoint rules, and what the rules did.

    ignored: checkpoint keys deliberately not loaded (an MAE decoder); initialized: model keys
    deliberately left at their init (a fresh `fc_norm`); resampled: keys resized to the model's grid.
    """

    state_dict: dict[str, np.ndarray]
    ignored: tuple[str, ...] = ()
    initialized: tuple[str, ...] = ()
    resampled: tuple[str, ...] = ()

    def with_resampled(self, key: str, value: np.ndarray) -> AdaptedStateDict:
        """This result with `state_dict[key]` replaced by its resampled `value`."""
        return dataclasses.replace(self, state_dict={**self.state_dict, key: value},
                                   resampled=(*self.resampled, key))


# ----------------------------------------------------------------------------- one grid resampler


def resample_grid(tokens: np.ndarray, old_grid: Sequence[int], new_grid: Sequence[int], *,
                  method: str = "bicubic") -> np.ndarray:
    """Tokens on a grid of any rank, row-major: [1, prod(old_grid), C] -> [1, prod(new_grid), C].

    A grid is (H, W) for images, (time, freq) for spectrograms, (time,) or (H, W) for a video's
    separable tables. `method` is a `jax.image.resize` method, antialiased when shrinking; an axis
    whose size does not change is left as it is.
    """
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    dim = tokens.shape[-1]
    if tokens.shape[1] != math.prod(old_grid):
        raise CheckpointMismatchError(f"{tokens.shape[1]} position rows do not fill a {old_grid} grid.")
    resized = jax.image.resize(jnp.asarray(tokens, jnp.float32).reshape(*old_grid, dim), (*new_grid, dim),
                               method=method, antialias=True)
    return np.asarray(resized).reshape(1, math.prod(new_grid), dim)


def square_grid(num_patches: int, num_prefix_tokens: int = 0) -> tuple[int, int]:
    """The (g, g) grid of `num_patches` position rows (timm's rule for a checkpoint's grid)."""
    side = int(round(np.sqrt(num_patches)))
    if side * side != num_patches:
        raise CheckpointMismatchError(
            f"pos_embed has {num_patches} patch tokens, not a square grid; check the model's "
            f"class/distill tokens ({num_prefix_tokens} prefix tokens expected).")
    return side, side


def resample_pos_embed(pos_embed: np.ndarray, grid: int | Sequence[int], num_prefix_tokens: int, *,
                       old_grid: Sequence[int] | None = None, method: str = "bicubic") -> np.ndarray:
    """[1, P + prod(old_grid), C] -> [1, P + prod(grid), C]: the patch rows resampled on their grid,
    the P prefix rows (class / distill tokens) kept. grid: the new grid, one int for a square one;
    old_grid: the checkpoint's, square when not given."""
    grid = (grid, grid) if isinstance(grid, int) else tuple(grid)
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old_grid = square_grid(patches.shape[1], num_prefix_tokens) if old_grid is None else old_grid
    return np.concatenate([prefix, resample_grid(patches, old_grid, grid, method=method)], axis=1)


# ----------------------------------------------------------------------------- one MAE rule

MAE_DECODER_KEYS = ("decoder_", "mask_token")  # what only an MAE pre-training checkpoint holds
_MAE_SIGNATURE = ("mask_token", "decoder_embed.weight", "decoder_pred.weight")  # all present: pre-training


def mae_pretraining_rule(state_dict: Mapping[str, np.ndarray], model_names: Iterable[str]) -> AdaptedStateDict:
    """An MAE pre-training checkpoint (decoder keys) into a model without a decoder: the decoder is
    ignored, and a model that pools with `fc_norm` and has no final `norm` starts `fc_norm` fresh
    and ignores the checkpoint's `norm` (official MAE fine-tuning: missing keys = head + fc_norm).
    Any other checkpoint or model: the state dict as it is."""
    model_names = set(model_names)
    if not all(k in state_dict for k in _MAE_SIGNATURE) or any(n.startswith(MAE_DECODER_KEYS) for n in model_names):
        return AdaptedStateDict(dict(state_dict))
    ignored = [k for k in state_dict if k.startswith(MAE_DECODER_KEYS)]
    initialized = []
    if not any(n.startswith("norm.") for n in model_names) and any(n.startswith("fc_norm.") for n in model_names):
        ignored += [k for k in state_dict if k.startswith("norm.")]
        initialized = [n for n in model_names if n.startswith("fc_norm.") and n not in state_dict]
    kept = {k: v for k, v in state_dict.items() if k not in ignored}
    return AdaptedStateDict(kept, ignored=tuple(sorted(ignored)), initialized=tuple(sorted(initialized)))
