r"""MAE pre-training (He et al., 2022), the start of the ToMe paper's MAE fine-tuning (Sec. 4.2).

  python train.py --config configs/mae_pretrain.py:variant=B --workdir runs/mae_b \
      --config.data.data_dir=/path/to/tensorflow_datasets
  python train.py --config configs/mae_pretrain.py:runlocal --workdir runs/mae_pt   # no download

The paper's settings: AdamW (0.9, 0.95), base lr 1.5e-4 per 256 images (batch 4096), weight decay
0.05, 40 warmup epochs, cosine to 0, 800 epochs (`epochs=1600` for the released checkpoints),
mask ratio 0.75, normalized-pixel loss, random-resized crop (0.2, 1) + flip. ToMe is off, as in the
ToMe paper. Then fine-tune the encoder with configs/mae_finetune_tome.py:init=<this workdir>.
"""

import ml_collections

from configs.common import add_run_settings, data_config, parse_arg

_VARIANTS = {"B": "mae_vit_base_patch16", "L": "mae_vit_large_patch16", "H": "mae_vit_huge_patch14"}


def get_config(arg=None):
    arg = parse_arg(arg, runlocal=False, variant="L", epochs=800, mask_ratio=0.75)
    if arg.variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {sorted(_VARIANTS)}, got {arg.variant!r}.")
    config = ml_collections.ConfigDict()
    config.seed = 0

    # Model: the official MAE architecture (decoder 512-d, 8 blocks); ToMe off.
    config.model_name = _VARIANTS[arg.variant]
    config.model = ml_collections.ConfigDict(dict(
        img_size=224, mask_ratio=arg.mask_ratio, norm_pix_loss=True, decoder_embed_dim=512, decoder_depth=8,
        decoder_num_heads=16, dtype="bfloat16"))
    config.init = ml_collections.ConfigDict(dict(weights="", skip=()))  # "" = from scratch
    config.task = "reconstruction"  # model.reconstruction_loss(images, key): masked-patch MSE
    config.tome = ml_collections.ConfigDict(dict(r=0, method="none", prop_attn=False))

    # Data: ImageNet, MAE augmentation (random-resized crop (0.2, 1), flip), no mixup.
    config.data = data_config()
    config.data.update(dict(
        name="imagenet2012", data_dir="", split_train="train", split_eval="validation", image_size=224,
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bicubic",
        crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3), hflip=True, crop_pct=1.0, num_threads=16))
    config.batch_size = 4096
    config.total_epochs = float(arg.epochs)
    config.total_steps = 0
    config.warmup_epochs = 40.0
    config.warmup_steps = 0

    # Optimizer: AdamW (0.9, 0.95), lr = 1.5e-4 * batch / 256, cosine to 0.
    config.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", lr=1.5e-4 * config.batch_size / 256, min_lr=0.0, b1=0.9, b2=0.95,
        weight_decay=0.05, clip_norm=0.0, layer_decay=0.0, ema_decay=0.0))

    # Devices, logging, checkpoints, resume rules (configs/common.py).
    add_run_settings(config, eval_every_steps=10000)

    if arg.runlocal:
        # The fine-tuning recipe's small ViT (16x16 digits, 2-px patches: 64 patches, 16 visible)
        # with a 1-block 32-d decoder.
        config.model_name = "mae_vit_tiny_patch16"
        config.model.update(dict(img_size=16, patch_size=2, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0,
                                 decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, dtype="float32"))
        config.data = data_config()
        config.data.update(dict(name="digits", data_dir="", image_size=16, mean=(0.5,) * 3, std=(0.5,) * 3,
                                crop_scale=(0.5, 1.0), crop_ratio=(0.9, 1.1), hflip=False, crop_pct=1.0,
                                num_threads=2))
        config.batch_size = 64
        config.total_epochs = 30.0
        config.warmup_epochs = 3.0
        config.optimizer.update(dict(lr=1.5e-3, min_lr=1e-5))
        config.log_every_steps = 50
        config.eval_every_steps = 2000
        config.checkpoint_every_steps = 300
    return config
