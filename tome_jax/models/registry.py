"""The model registry: families register names with `register_model`; `create_model` builds them.

timm style: a name maps to a builder (any callable returning an NNX module, usually the family's
class with its architecture bound), the weights' preprocessing config (`pretrained_cfg`), the
family's ToMe defaults (`tome`, e.g. MAE's `dict(prop_attn=False)`: applied with `apply_tome` after
the model is built, constructors know nothing of ToMe) and tags that change defaults
("vit_base_patch16_224.mae"). A new family is one new file plus registrations; nothing here changes.

    @register_model("toy_tiny", pretrained_cfg=dict(mean=(0.5,), std=(0.5,)), tome=dict(prop_attn=False))
    def toy_tiny(**kwargs):
        return ToyModel(**{"embed_dim": 32, **kwargs})
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Callable

from flax import nnx

from tome_jax.models.encoder import apply_tome
from tome_jax.models.matmul import set_matmul
from tome_jax.reduction import SETTINGS


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    builder: Callable[..., nnx.Module]
    pretrained_cfg: dict
    tome: dict  # the family's ToMe settings (`apply_tome` keywords) over TokenReduction's defaults
    tags: dict  # tag -> keyword defaults (a "pretrained_cfg" or "tome" entry updates that dict)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str | None = None, *, pretrained_cfg: dict | None = None, tome: dict | None = None,
                   tags: dict | None = None) -> Callable:
    """Decorator registering `builder(**kwargs) -> nnx.Module` under `name` (default: its __name__).

    Also usable as a call: `register_model("vit_x", pretrained_cfg=...)(functools.partial(Cls, ...))`.
    tome: the family's ToMe defaults, keywords of `apply_tome` (a tag's "tome" entry overrides them).
    Registering a name twice is an error (two families must not silently shadow each other).
    """
    def decorator(builder):
        key = name or builder.__name__
        if key in _REGISTRY:
            raise ValueError(f"model name {key!r} is already registered.")
        _check_tome(key, "tome", tome or {})
        for tag, defaults in (tags or {}).items():
            _check_tome(key, f"tags[{tag!r}]['tome']", defaults.get("tome", {}))
        _REGISTRY[key] = ModelEntry(builder, dict(pretrained_cfg or {}), dict(tome or {}), dict(tags or {}))
        return builder
    return decorator


def _check_tome(name: str, where: str, settings: dict) -> None:
    if unknown := sorted(set(settings) - set(SETTINGS)):
        raise ValueError(f"register_model({name!r}): {where} has {unknown}; ToMe settings are "
                         f"{', '.join(SETTINGS)}.")


def list_models(pattern: str = "") -> list[str]:
    """Registered names containing `pattern`, sorted."""
    return sorted(n for n in _REGISTRY if pattern in n)


# Keywords that change training (regularization) but not the function the trained model computes.
_TRAINING_ONLY = frozenset({"drop_rate", "drop_path_rate", "attn_drop_rate", "proj_drop_rate", "pretrained_cfg"})


def _entry(name: str) -> tuple[ModelEntry, str, str]:
    """"family_size[.tag]" -> (its registry entry, the stem, the tag), or a ValueError naming the fix."""
    stem, _, tag = name.partition(".")
    if stem not in _REGISTRY:
        raise ValueError(f"unknown model name {name!r}; known models: {', '.join(list_models())}.")
    entry = _REGISTRY[stem]
    if tag and tag not in entry.tags:
        raise ValueError(f"unknown tag {tag!r} in {name!r}; known tags for {stem}: "
                         f"{', '.join(sorted(entry.tags)) or 'none'}.")
    return entry, stem, tag


# Keywords a registered name states ("vit_tiny_patch16_224": width and depth by size, patch, input size).
_NAMED_ARCHITECTURE = ("img_size", "patch_size", "embed_dim", "depth")


def describe_model(name: str, **kwargs) -> str:
    """What the model is, in words, for summaries, tables and plot titles.

    The name plus the keywords that make the model differ from it:
    describe_model("vit_tiny_patch16_224", num_classes=10, drop_path_rate=0.1)
    -> "vit_tiny_patch16_224 (num_classes=10)": drop path only regularizes training.
    When the keywords change what the name itself states (input size, patch size, depth, width), the
    name would mislead, so the description leads with the family and its shape instead:
    describe_model("vit_tiny_patch16_224", img_size=16, patch_size=2, depth=6, embed_dim=64, num_heads=4)
    -> "VisionTransformer (16x16 input, 2-px patches, depth 6, width 64; num_heads=4)".
    Keywords the builder does not expose as defaults are listed.
    """
    entry, _, tag = _entry(name)
    defaults = {**_builder_defaults(entry.builder), **entry.tags.get(tag, {})}
    changed = {k: v for k, v in kwargs.items()
               if k not in _TRAINING_ONLY and (k not in defaults or _normalized(defaults[k]) != _normalized(v))}
    name_misleads = set(_NAMED_ARCHITECTURE) <= defaults.keys() and bool(changed.keys() & set(_NAMED_ARCHITECTURE))
    if not name_misleads:
        return f"{name} ({', '.join(f'{k}={v!r}' for k, v in changed.items())})" if changed else name
    arch = {**defaults, **changed}
    height, width = (arch["img_size"],) * 2 if isinstance(arch["img_size"], int) else arch["img_size"]
    shape = (f"{height}x{width} input, {arch['patch_size']}-px patches, depth {arch['depth']}, "
             f"width {arch['embed_dim']}")
    others = ", ".join(f"{k}={v!r}" for k, v in changed.items() if k not in _NAMED_ARCHITECTURE)
    return f"{_family(entry.builder)} ({shape}; {others})" if others else f"{_family(entry.builder)} ({shape})"


def _family(builder) -> str:
    """The class (or function) a registered name builds: "VisionTransformer" for every vit_*/deit_*."""
    while isinstance(builder, functools.partial):
        builder = builder.func
    return builder.__name__


def _builder_defaults(builder) -> dict:
    """Keyword defaults of a builder: a function, a class, or functools.partial of either."""
    bound = {}
    while isinstance(builder, functools.partial):
        bound, builder = {**builder.keywords, **bound}, builder.func
    # A class's own signature is its metaclass's call (nnx.Module), so read its __init__.
    params = inspect.signature(builder.__init__ if inspect.isclass(builder) else builder).parameters
    return {**{k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}, **bound}


def _normalized(value):
    if value == "float32":  # the default dtype (None) computes in float32
        return None
    return tuple(value) if isinstance(value, list) else value


def create_model(name: str, *, rngs: nnx.Rngs | None = None, **kwargs) -> nnx.Module:
    """A registered model by name ("family_size[.tag]"), with any override and ToMe settings.

    create_model("vit_base_patch16_224", num_classes=1000, img_size=224, global_pool="token",
                 drop_path_rate=0.0, dtype=None, r=16, method="bipartite", prop_attn=True, trace_source=False)
    The ToMe keywords (`reduction.SETTINGS`) go to `apply_tome` once the model is built, `matmul`
    (how bf16 matmuls run, `matmul.POLICIES`) to `set_matmul`; the rest to the builder. Precedence: the name's architecture and ToMe defaults < the tag's < the keywords
    given here (None or left out: the default survives). The model is returned in eval mode
    (dropout off); call `model.train()` before training.
    """
    entry, stem, tag = _entry(name)
    config = dict(entry.tags.get(tag, {}))
    pretrained_cfg = dict(entry.pretrained_cfg, **config.pop("pretrained_cfg", {}))
    tome = dict(entry.tome, **config.pop("tome", {}))
    config.update(kwargs)
    pretrained_cfg.update(config.pop("pretrained_cfg", None) or {})
    pretrained_cfg["architecture"] = stem
    given = {k: config.pop(k) for k in SETTINGS if k in config}
    tome.update({k: v for k, v in given.items() if v is not None})
    matmul = config.pop("matmul", None)
    model = entry.builder(**config, pretrained_cfg=pretrained_cfg, rngs=rngs or nnx.Rngs(0))
    if matmul is not None:
        set_matmul(model, matmul)
    if tome:  # a builder may return any NNX module; ToMe needs an Encoder
        apply_tome(model, **tome)
    model.eval()
    return model
