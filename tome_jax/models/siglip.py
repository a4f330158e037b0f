"""SigLIP and SigLIP 2 image towers (big_vision `vit.py`, `pool_type="map"`) with ToMe.

The tower is the image ViT (vit.py) as big_vision builds it for SigLIP: patches plus a learned
position embedding and no class token (so no token is protected: ToMe may merge any of them), the
shared encoder, the final LayerNorm (`encoder_norm`) and a MAP head (map_head.py): a learned probe
attends over the final tokens, each counted by its size. `num_classes=0` (SigLIP's
`out_dim=(None, ...)`): the output is the image embedding [B, D], before SigLIP's L2 normalization.

What differs from a timm ViT, and where it is handled:
- the MLPs' GELU: big_vision trains with the tanh approximation. `checkpoint_layout(path)` reads it
  from a big_vision `.npz`, so build with `create_model(name, **checkpoint_layout(path).model_kwargs())`
  (the registered default is timm's exact GELU, as timm's `vit_*_siglip_*` which load the same
  weights converted);
- checkpoints: big_vision `.npz` files, two-tower (`params/img/...` next to `params/txt/...`, `t`,
  `b`: the text tower is reported as ignored), params-only or training checkpoints, scanned
  (`Transformer/encoderblock/...` stacked over depth: SigLIP 2) or not; `MAPHead_0` becomes
  `attn_pool` (weight_layouts.py). timm's `vit_*_siglip_*` safetensors and open_clip's timm-trunk
  SigLIP files load too. A checkpoint of another resolution has its position embedding resampled;
- big_vision's patch convolution is VALID: an input side that is not a whole number of patches
  keeps only the whole patches (So400m/14 at 384 px: 27 x 27 patches, the last 6 rows and columns
  are not read). `SigLIPVisionTransformer` takes such sizes; any other ViT refuses them.

Preprocessing (`pretrained_cfg`): resize to the input size (bilinear), then `value_range(-1, 1)`,
i.e. mean = std = 0.5.

Names follow timm (`vit_base_patch16_siglip_224`, `vit_so400m_patch14_siglip_384`, ...); each
shipped big_vision checkpoint has one: B/16 at 224-512, B/32 at 256, L/16 at 256-512, So400m/14 at
224 and 384, So400m/16 at 256-512, g-opt/16 at 256 and 384 (SigLIP and SigLIP 2 share the shapes).
"""

from __future__ import annotations

import functools

from flax import nnx

from tome_jax.models.registry import register_model
from tome_jax.models.vit import VisionTransformer, image_size

SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # big_vision's value_range(-1, 1)


class SigLIPVisionTransformer(VisionTransformer):
    """The ViT with big_vision's SigLIP defaults (no class token, MAP head, no classifier) that also
    takes input sizes that are not a whole number of patches, reading only the whole patches (as
    big_vision's VALID patch convolution). Images [B, H, W, C] -> embeddings [B, D] (or logits)."""

    def __init__(self, *, img_size: int | tuple[int, int] = 224, patch_size: int = 16, in_chans: int = 3,
                 num_classes: int = 0, class_token: bool = False, global_pool: str = "map",
                 pretrained_cfg: dict | None = None, rngs: nnx.Rngs, **kwargs):
        height, width = image_size(img_size, 1)  # any positive size; the patches cover what they can
        if height < patch_size or width < patch_size:
            raise ValueError(f"img_size {img_size} is smaller than one {patch_size}-px patch.")
        covered = (height - height % patch_size, width - width % patch_size)
        super().__init__(img_size=covered, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
                         class_token=class_token, global_pool=global_pool, pretrained_cfg=pretrained_cfg,
                         rngs=rngs, **kwargs)
        self.img_size = height if height == width else (height, width)
        self.set_pretrained_cfg(pretrained_cfg, input_size=(height, width, in_chans))


# name stem -> (patch, width, depth, heads, mlp_ratio, resolutions): big_vision's decode_variant
# ("B", "L", "So400m": mlp_dim 4304 = int(1152 * 3.7362), "g-opt") and the shipped checkpoints.
_SIZES = {
    "base_patch16": (16, 768, 12, 12, 4.0, (224, 256, 384, 512)),
    "base_patch32": (32, 768, 12, 12, 4.0, (256,)),
    "large_patch16": (16, 1024, 24, 16, 4.0, (256, 384, 512)),
    "so400m_patch14": (14, 1152, 27, 16, 3.7362, (224, 384)),
    "so400m_patch16": (16, 1152, 27, 16, 3.7362, (256, 384, 512)),
    "giantopt_patch16": (16, 1536, 40, 16, 4.0, (256, 384)),
}


def _register_siglip_towers() -> None:
    for stem, (patch, dim, depth, heads, mlp_ratio, resolutions) in _SIZES.items():
        for res in resolutions:
            register_model(f"vit_{stem}_siglip_{res}", pretrained_cfg=dict(
                mean=SIGLIP_MEAN, std=SIGLIP_STD, crop_pct=1.0, interpolation="bilinear"))(functools.partial(
                    SigLIPVisionTransformer, img_size=res, patch_size=patch, embed_dim=dim, depth=depth,
                    num_heads=heads, mlp_ratio=mlp_ratio))


_register_siglip_towers()
