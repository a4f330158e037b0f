"""CLIP image towers (OpenAI CLIP, open_clip; timm's `vit_*_clip_*`) with ToMe.

A CLIP tower is the image ViT (vit.py) with three differences, all settings of `VisionTransformer`:
a LayerNorm after the position embedding (`ln_pre` -> timm's `norm_pre`, `pre_norm=True`; the
patch convolution then has no bias), LayerNorm epsilon 1e-5 (torch's default) and, for OpenAI's
weights, QuickGELU (`x * sigmoid(1.702 x)`, `gelu="quick"`). It pools with the class token after
the final LayerNorm (`ln_post` -> `norm`) and projects with `proj` (-> `head`, a zero bias), so
the output is the image embedding [B, E] before CLIP's L2 normalization. ToMe protects the class
token (1 protected token) and merges the patches.

Names follow timm: `vit_base_patch16_clip_224` (exact GELU: open_clip's LAION weights) and
`vit_base_patch16_clip_quickgelu_224` (QuickGELU: OpenAI's weights and open_clip's `-quickgelu`
models); the checkpoint's names do not say which GELU it was trained with, so the model name does.
Checkpoints: OpenAI / open_clip state dicts (`visual.conv1.weight`, `visual.class_embedding`,
`visual.transformer.resblocks.N.attn.in_proj_weight`, `visual.ln_post`, `visual.proj`; the text
tower is reported as ignored) and timm's safetensors load with `load_timm` (weight_layouts.py).

Preprocessing (`pretrained_cfg`): bicubic resize of the short side, centre crop, OpenAI's mean/std.
"""

from __future__ import annotations

import functools

from tome_jax.models.registry import register_model
from tome_jax.models.vit import VisionTransformer

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# name stem -> (patch, width, depth, heads, embedding size E, resolutions), as OpenAI / open_clip ship them
_SIZES = {
    "base_patch32": (32, 768, 12, 12, 512, (224,)),
    "base_patch16": (16, 768, 12, 12, 512, (224,)),
    "large_patch14": (14, 1024, 24, 16, 768, (224, 336)),
    "huge_patch14": (14, 1280, 32, 16, 1024, (224,)),
}


def _register_clip_towers() -> None:
    for stem, (patch, dim, depth, heads, out_dim, resolutions) in _SIZES.items():
        for res in resolutions:
            for name, gelu in ((f"vit_{stem}_clip_{res}", "exact"), (f"vit_{stem}_clip_quickgelu_{res}", "quick")):
                register_model(name, pretrained_cfg=dict(
                    mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, crop_pct=1.0, interpolation="bicubic"))(
                    functools.partial(VisionTransformer, img_size=res, patch_size=patch, embed_dim=dim, depth=depth,
                                      num_heads=heads, num_classes=out_dim, pre_norm=True, norm_eps=1e-5, gelu=gelu))


_register_clip_towers()
