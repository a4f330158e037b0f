"""The model registry: families register names with `register_model`; `create_model` builds them.

timm style: a name maps to a builder (any callable returning an NNX module, usually the family's
class with its architecture bound), the weights' preprocessing config (`pretrained_cfg`) and tags
that change defaults ("vit_base_patch16_224.mae"). A new family is one new file plus registrations;
nothing here changes.

    @register_model("toy_tiny", pretrained_cfg=dict(mean=(0.5,), std=(0.5,)))
    def toy_tiny(**kwargs):
        return ToyModel(**{"embed_dim": 32, **kwargs})
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from flax import nnx


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    builder: Callable[..., nnx.Module]
    pretrained_cfg: dict
    tags: dict  # tag -> keyword defaults (a "pretrained_cfg" entry updates the config)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str | None = None, *, pretrained_cfg: dict | None = None,
                   tags: dict | None = None) -> Callable:
    """Decorator registering `builder(**kwargs) -> nnx.Module` under `name` (default: its __name__).

    Also usable as a call: `register_model("vit_x", pretrained_cfg=...)(functools.partial(Cls, ...))`.
    Registering a name twice is an error (two families must not silently shadow each other).
    """
    def decorator(builder):
        key = name or builder.__name__
        if key in _REGISTRY:
            raise ValueError(f"model name {key!r} is already registered.")
        _REGISTRY[key] = ModelEntry(builder, dict(pretrained_cfg or {}), dict(tags or {}))
        return builder
    return decorator


def list_models(pattern: str = "") -> list[str]:
    """Registered names containing `pattern`, sorted."""
    return sorted(n for n in _REGISTRY if pattern in n)


def create_model(name: str, *, rngs: nnx.Rngs | None = None, **kwargs) -> nnx.Module:
    """A registered model by name ("family_size[.tag]"), with ToMe settings and any override.

    create_model("vit_base_patch16_224", num_classes=1000, r=16, prop_attn=True, trace_source=False,
                 reduction_method="bipartite", img_size=224, global_pool="token", drop_path_rate=0.0,
                 dtype=None)
    Precedence: the name's architecture < the tag's defaults < the keywords given here (pass only
    the fields you mean to set: a tag's default survives every field you leave out). The model is
    returned in eval mode (dropout off); call `model.train()` before training.
    """
    stem, _, tag = name.partition(".")
    if stem not in _REGISTRY:
        raise ValueError(f"unknown model name {name!r}; known models: {', '.join(list_models())}.")
    entry = _REGISTRY[stem]
    if tag and tag not in entry.tags:
        raise ValueError(f"unknown tag {tag!r} in {name!r}; known tags for {stem}: "
                         f"{', '.join(sorted(entry.tags)) or 'none'}.")
    config = dict(entry.tags.get(tag, {}))
    pretrained_cfg = dict(entry.pretrained_cfg, **config.pop("pretrained_cfg", {}))
    config.update(kwargs)
    pretrained_cfg.update(config.pop("pretrained_cfg", None) or {})
    pretrained_cfg["architecture"] = stem
    model = entry.builder(**config, pretrained_cfg=pretrained_cfg, rngs=rngs or nnx.Rngs(0))
    model.eval()
    return model
