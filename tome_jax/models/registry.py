"""Model names (timm's), their architectures and preprocessing configs, and `create_model`."""

from __future__ import annotations

from flax import nnx

from tome_jax.models.vit import VisionTransformer

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INCEPTION_MEAN, INCEPTION_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

_SIZES = {  # name stem -> (patch, embed_dim, depth, heads)
    "tiny_patch16": (16, 192, 12, 3),
    "small_patch16": (16, 384, 12, 6),
    "base_patch16": (16, 768, 12, 12),
    "large_patch16": (16, 1024, 24, 16),
    "huge_patch14": (14, 1280, 32, 16),
}


def _registry() -> dict[str, dict]:
    models = {}
    for stem, (patch, dim, depth, heads) in _SIZES.items():
        arch = dict(patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads)
        for res in (224, 384):
            # AugReg / in21k weights: Inception normalization; 384 models are evaluated uncropped.
            models[f"vit_{stem}_{res}"] = dict(
                arch, img_size=res,
                pretrained_cfg=dict(input_size=(res, res, 3), mean=INCEPTION_MEAN, std=INCEPTION_STD,
                                    crop_pct=0.9 if res == 224 else 1.0, interpolation="bicubic"),
            )
        if stem != "huge_patch14" and stem != "large_patch16":
            for distilled in (False, True):
                name = f"deit_{stem.replace('_patch16', '')}{'_distilled' if distilled else ''}_patch16_224"
                models[name] = dict(
                    arch, img_size=224, distilled=distilled,
                    pretrained_cfg=dict(input_size=(224, 224, 3), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                        crop_pct=0.875, interpolation="bicubic"),
                )
    return models


MODELS = _registry()

# timm tags that change the architecture's defaults, e.g. "vit_base_patch16_224.mae".
_TAGS = {
    "mae": dict(global_pool="avg", prop_attn=False,
                pretrained_cfg=dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=0.875)),
    "swag": dict(pretrained_cfg=dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=1.0)),
}


def list_models() -> list[str]:
    return sorted(MODELS)


def create_model(name: str, *, rngs: nnx.Rngs | None = None, **kwargs) -> VisionTransformer:
    """A ViT by timm name, with ToMe settings and any architecture override.

    create_model("vit_base_patch16_224", num_classes=1000, r=16, prop_attn=True, trace_source=False,
                 img_size=224, global_pool="token", fc_norm=None, drop_path_rate=0.0, dtype=None)
    A ".mae" tag ("vit_base_patch16_224.mae") selects average pooling with fc_norm and no
    proportional attention, as in the official MAE patch. Architecture keys (embed_dim, depth,
    num_heads, patch_size, ...) may be overridden for small experiments. The model is returned
    in eval mode (dropout off); call `model.train()` before training.
    """
    stem, _, tag = name.partition(".")
    if stem not in MODELS:
        raise ValueError(f"unknown model name {name!r}; known models: {', '.join(list_models())}.")
    if tag and tag not in _TAGS:
        raise ValueError(f"unknown tag {tag!r} in {name!r}; known tags: {', '.join(sorted(_TAGS))}.")
    config = dict(MODELS[stem])
    pretrained_cfg = dict(config.pop("pretrained_cfg"))
    tag_config = dict(_TAGS.get(tag, {}))
    pretrained_cfg.update(tag_config.pop("pretrained_cfg", {}))
    config.update(tag_config)
    config.update(kwargs)
    pretrained_cfg.update(config.pop("pretrained_cfg", None) or {})
    img_size = config.get("img_size", 224)
    pretrained_cfg["input_size"] = (img_size, img_size, config.get("in_chans", 3))
    pretrained_cfg["architecture"] = stem
    model = VisionTransformer(**config, pretrained_cfg=pretrained_cfg, rngs=rngs or nnx.Rngs(0))
    model.eval()
    return model
