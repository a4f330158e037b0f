"""Foreign checkpoint layouts -> timm names, and which layout a checkpoint has (with its GELU).

`layout_of(names)` is the one place that tells layouts apart, from key names alone:
- "timm": timm / DeiT / MAE / MAE-ST / AudioMAE state dicts and this project's own (a family's
  names are its `adapt_state_dict`'s business);
- "augreg": old big_vision / AugReg `.npz` ("Transformer/posembed_input/pos_embedding",
  "MultiHeadDotProductAttention_1", "MlpBlock_3"), trained with the exact (erf) GELU, as timm;
- "big_vision": today's big_vision ViT (params-only or "params/"-prefixed training checkpoints,
  top-level "pos_embedding" without a class-token row, "MultiHeadDotProductAttention_0" /
  "LayerNorm_1" / "MlpBlock_0", scanned "encoderblock" stacks, a "MAPHead_0"), trained with the
  tanh GELU; in a two-tower checkpoint (SigLIP, SigLIP 2, LiT: "params/img/...", "params/txt/...",
  "params/t", "params/b") the image tower "img/" is read and the rest reported as ignored;
- "torchvision": torchvision's VisionTransformer ("encoder.layers.encoder_layer_0...", SWAG);
- "open_clip": OpenAI CLIP / open_clip state dicts ("visual.conv1.weight", "visual.class_embedding",
  "visual.transformer.resblocks.N...", "visual.ln_post", "visual.proj"; or the image tower's own
  dict without "visual."), or open_clip's timm-trunk towers ("visual.trunk.*": timm names); the
  text tower and "logit_scale" are reported as ignored. The names do not say the GELU (OpenAI's
  weights use QuickGELU, open_clip's LAION weights the exact one), so its `gelu` is None: the model
  name decides (`vit_base_patch16_clip_quickgelu_224` for OpenAI's weights). So does a timm CLIP
  tower's ("norm_pre": timm names with gelu None).
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

    name: str  # "timm", "augreg", "big_vision", "torchvision" or "open_clip"
    # "exact" (torch's erf GELU), "tanh" (big_vision's approximation), or None where the names do not
    # say (CLIP towers: OpenAI's QuickGELU or LAION's exact GELU; the model name decides)
    gelu: str | None

    def model_kwargs(self) -> dict:
        """Builder keywords these weights decide before the model is built: the GELU where the names
        say one other than the exact GELU every family starts from (big_vision: tanh)."""
        return {"gelu": self.gelu} if self.gelu not in (None, "exact") else {}


_GELUS = {"timm": "exact", "augreg": "exact", "big_vision": "tanh", "torchvision": "exact", "open_clip": None}
_IMAGE_TOWER = "img/"  # big_vision two-tower checkpoints (SigLIP, LiT): the image model's subtree


def layout_of(names: Iterable[str]) -> CheckpointLayout:
    """The layout of a checkpoint with these key names (wrappers and "module." prefixes removed)."""
    names = [str(k) for k in names]
    if any(k.startswith("params/") for k in names):  # a big_vision training checkpoint: params + optimizer
        names = [k for k in names if k.startswith("params/")]
    bare = {k.removeprefix("params/").removeprefix("opt/target/") for k in names}
    if any(k.startswith(_IMAGE_TOWER) for k in bare):
        bare = {k.removeprefix(_IMAGE_TOWER) for k in bare if k.startswith(_IMAGE_TOWER)}
    if "Transformer/posembed_input/pos_embedding" in bare:
        name = "augreg"
    elif any(k.startswith(("Transformer/", "embedding/")) for k in bare):
        name = "big_vision"
    elif "conv_proj.weight" in bare or any(k.startswith("encoder.layers.") for k in bare):
        name = "torchvision"
    elif ("visual.conv1.weight" in bare or {"conv1.weight", "class_embedding"} <= bare
          or any(k.startswith("visual.trunk.") for k in bare)):  # a bare conv1 alone is any CNN's stem
        name = "open_clip"
    else:
        name = "timm"
    if name == "timm" and "norm_pre.weight" in bare:  # a timm CLIP tower: QuickGELU or not, by model name
        return CheckpointLayout(name, None)
    return CheckpointLayout(name, _GELUS[name])


def checkpoint_layout(source: str | os.PathLike | Mapping) -> CheckpointLayout:
    """The layout of a checkpoint path (names only: a .npz or .safetensors index; a torch file is read
    whole) or state dict. A training workdir holds this project's timm names; its GELU is not recorded
    (exact is assumed)."""
    if isinstance(source, Mapping):
        return layout_of(flat_state_dict(source))
    names = read_names(source)
    return layout_of(names) if names is not None else CheckpointLayout("timm", _GELUS["timm"])


def to_timm_state_dict(state_dict: Mapping) -> tuple[dict[str, np.ndarray], CheckpointLayout, list[str]]:
    """Any supported state dict -> (timm names and torch layouts, the layout it came in, the keys left
    out because they belong to no image model: a two-tower checkpoint's text tower and temperature)."""
    state_dict = flat_state_dict(state_dict)
    layout = layout_of(state_dict)
    convert = {"augreg": _from_big_vision, "big_vision": _from_big_vision, "torchvision": _from_torchvision,
               "open_clip": _from_open_clip}
    if layout.name not in convert:
        return dict(state_dict), layout, []
    converted, ignored = convert[layout.name](state_dict)
    return converted, layout, ignored


# ----------------------------------------------------------------------------- big_vision


def _big_vision_params(sd: Mapping) -> tuple[dict[str, np.ndarray], list[str]]:
    """Strip the wrappers of big_vision checkpoints: "opt/target/" (AugReg) or "params/" (training
    checkpoints, whose other keys are optimizer state); a two-tower checkpoint's image tower "img/"
    (the other towers' keys are returned as ignored); scanned block stacks are split per block."""
    if any(k.startswith("params/") for k in sd):
        sd = {k.removeprefix("params/"): v for k, v in sd.items() if k.startswith("params/")}
    sd = {k.removeprefix("opt/target/"): np.asarray(v) for k, v in sd.items()}
    ignored = []
    if any(k.startswith(_IMAGE_TOWER) for k in sd):
        ignored = sorted(k for k in sd if not k.startswith(_IMAGE_TOWER))
        sd = {k.removeprefix(_IMAGE_TOWER): v for k, v in sd.items() if k.startswith(_IMAGE_TOWER)}
    out = {}
    for key, value in sd.items():
        if key.startswith("Transformer/encoderblock/"):  # scan=True: [depth, ...] per parameter
            rest = key.removeprefix("Transformer/encoderblock/")
            out.update({f"Transformer/encoderblock_{i}/{rest}": v for i, v in enumerate(value)})
        else:
            out[key] = value
    return out, ignored


def _from_big_vision(sd: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """big_vision / AugReg npz names and Flax layouts -> (timm names and torch layouts, ignored keys).

    Today's big_vision adds `pos_embedding` [1, N, C] to the patches only (the class token has none),
    so a zero class row is prepended when the checkpoint has a `cls` token. A MAP head (`MAPHead_0`,
    SigLIP) becomes timm's `attn_pool` (as timm's `_load_weights`).
    """
    sd, ignored = _big_vision_params(sd)
    found = found_keys(sd)

    def pop(key):
        if key not in sd:
            raise CheckpointMismatchError(
                f"big_vision checkpoint without {key!r}; found: {found}. Supported: ViTs with a learned "
                "position embedding ('pos_embedding') and a 'tok', 'gap' or 'map' head.")
        return sd.pop(key)

    def attention(mha: str, t: str, dim: int) -> dict[str, np.ndarray]:
        """A Flax MultiHeadDotProductAttention (kernels [D, H, hd], out [H, hd, D]) -> torch Linears."""
        kernel = {n: pop(mha + f"{n}/kernel").reshape(dim, -1).T for n in ("query", "key", "value")}
        bias = {n: pop(mha + f"{n}/bias").reshape(-1) for n in ("query", "key", "value")}
        if t.endswith("attn_pool."):  # timm's AttentionPoolLatent: q from the probe, kv from the tokens
            qkv = {t + "q.weight": kernel["query"], t + "q.bias": bias["query"],
                   t + "kv.weight": np.concatenate([kernel["key"], kernel["value"]]),
                   t + "kv.bias": np.concatenate([bias["key"], bias["value"]])}
        else:
            qkv = {t + "qkv.weight": np.concatenate([kernel[n] for n in ("query", "key", "value")]),
                   t + "qkv.bias": np.concatenate([bias[n] for n in ("query", "key", "value")])}
        proj = {t + "proj.weight": pop(mha + "out/kernel").reshape(-1, dim).T, t + "proj.bias": pop(mha + "out/bias")}
        return {**qkv, **proj}

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
        out.update(attention(mha, t + "attn.", sd[mha + "query/kernel"].shape[0]))
        for n, name in (("LayerNorm_0", "norm1"), ("LayerNorm_1" if new else "LayerNorm_2", "norm2")):
            out[t + name + ".weight"] = pop(p + n + "/scale")
            out[t + name + ".bias"] = pop(p + n + "/bias")
        for n, name in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            out[t + f"mlp.{name}.weight"] = pop(mlp + n + "/kernel").T
            out[t + f"mlp.{name}.bias"] = pop(mlp + n + "/bias")
    if "MAPHead_0/probe" in sd:  # big_vision's MAPHead -> timm's attn_pool
        p, t = "MAPHead_0/", "attn_pool."
        out[t + "latent"] = pop(p + "probe")
        out.update(attention(p + "MultiHeadDotProductAttention_0/", t, out[t + "latent"].shape[-1]))
        out[t + "norm.weight"], out[t + "norm.bias"] = pop(p + "LayerNorm_0/scale"), pop(p + "LayerNorm_0/bias")
        for n, name in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            out[t + f"mlp.{name}.weight"] = pop(p + f"MlpBlock_0/{n}/kernel").T
            out[t + f"mlp.{name}.bias"] = pop(p + f"MlpBlock_0/{n}/bias")
    out.update(sd)  # leftovers are reported as unused keys
    return out, ignored


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


def _from_torchvision(sd: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """torchvision VisionTransformer names -> timm names (layouts already agree)."""
    return {_renamed(key, _TORCHVISION_RULES): value for key, value in sd.items()}, []


def _renamed(key: str, rules: list[tuple[str, str]]) -> str:
    """`key` renamed by the first rule (regex, replacement) that matches; unchanged if none does."""
    for pattern, repl in rules:
        new, hit = re.subn(pattern, repl, key)
        if hit:
            return new
    return key


# ----------------------------------------------------------------------------- OpenAI CLIP / open_clip


_OPEN_CLIP_RULES = [  # the image tower's names (after "visual.") -> timm's (timm's _convert_openai_clip)
    (r"^conv1\.", "patch_embed.proj."),
    (r"^ln_pre\.", "norm_pre."),
    (r"^ln_post\.", "norm."),
    (r"^transformer\.resblocks\.(\d+)\.ln_1\.", r"blocks.\1.norm1."),
    (r"^transformer\.resblocks\.(\d+)\.ln_2\.", r"blocks.\1.norm2."),
    (r"^transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$", r"blocks.\1.attn.qkv.\2"),
    (r"^transformer\.resblocks\.(\d+)\.attn\.out_proj\.", r"blocks.\1.attn.proj."),
    (r"^transformer\.resblocks\.(\d+)\.mlp\.c_fc\.", r"blocks.\1.mlp.fc1."),
    (r"^transformer\.resblocks\.(\d+)\.mlp\.c_proj\.", r"blocks.\1.mlp.fc2."),
]


def _from_open_clip(sd: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """OpenAI CLIP / open_clip names -> (timm names, ignored keys: the text tower and logit scale).

    `class_embedding` [D] -> `cls_token` [1, 1, D]; `positional_embedding` [N, D] -> `pos_embed`
    [1, N, D]; `proj` [D, E] (x @ proj) -> `head.weight` [E, D] with a zero `head.bias`, as timm.
    open_clip's timm-trunk towers ("visual.trunk.*") already use timm names."""
    prefix = "visual." if any(k.startswith("visual.") for k in sd) else ""
    ignored = sorted(k for k in sd if not k.startswith(prefix))
    tower = {k.removeprefix(prefix): np.asarray(v) for k, v in sd.items() if k.startswith(prefix)}
    if any(k.startswith("trunk.") for k in tower):
        return {k.removeprefix("trunk."): v for k, v in tower.items()}, ignored
    out = {}
    for key, value in tower.items():
        if key == "class_embedding":
            out["cls_token"] = value.reshape(1, 1, -1)
        elif key == "positional_embedding":
            out["pos_embed"] = value[None]
        elif key == "proj":
            out["head.weight"] = value.T
            out["head.bias"] = np.zeros(value.shape[1], value.dtype)
        else:
            out[_renamed(key, _OPEN_CLIP_RULES)] = value
    return out, ignored
