r"""Fine-tune an MAE encoder with ToMe (Bolya et al., Sec. 4.2, Table 4; MAE fine-tuning recipe).

  python train.py --config configs/mae_finetune_tome.py:variant=B,init=mae_pretrain_vit_base.safetensors \
      --workdir runs/mae_ft_b --config.data.data_dir=/path/to/tensorflow_datasets
  python train.py --config configs/mae_finetune_tome.py:variant=B,r=0,init=... ...     # baseline
  python train.py --config configs/mae_finetune_tome.py:runlocal,init=runs/mae_pt --workdir runs/mae_ft

`init` is an official MAE checkpoint (pre-training or fine-tuned, any format `load_timm` reads) or
the workdir of a configs/mae_pretrain.py run (its latest checkpoint); the decoder is dropped, the
head and `fc_norm` start fresh. `variant=B|L|H` gives the paper's r (16 / 8 / 7) and the official
recipe: global average pooling with `fc_norm` (size-weighted under ToMe), no proportional
attention, AdamW, lr = base lr x batch / 256 (5e-4 for B, 1e-3 for L/H), layer-wise lr decay
(0.65 / 0.75 / 0.75), drop path (0.1 / 0.2 / 0.3), mixup 0.8 / cutmix 1.0, label smoothing 0.1,
100 / 50 / 50 epochs with 5 warmup, batch 1024. (RandAugment and random erasing are not in our
pipeline.) `init=` empty trains from scratch.
"""

import ml_collections

from configs.common import add_run_settings, data_config, parse_arg

_VARIANTS = {  # model, r, base lr, layer decay, drop path, epochs
    "B": ("vit_base_patch16_224.mae", 16, 5e-4, 0.65, 0.1, 100),
    "L": ("vit_large_patch16_224.mae", 8, 1e-3, 0.75, 0.2, 50),
    "H": ("vit_huge_patch14_224.mae", 7, 1e-3, 0.75, 0.3, 50),
}


def get_config(arg=None):
    arg = parse_arg(arg, runlocal=False, variant="B", r=-1, init="")
    if arg.variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {sorted(_VARIANTS)}, got {arg.variant!r}.")
    model_name, paper_r, base_lr, layer_decay, drop_path, epochs = _VARIANTS[arg.variant]
    config = ml_collections.ConfigDict()
    config.seed = 0

    # Model: the `.mae` tag sets global_pool="avg" (fc_norm, no final norm) and prop_attn=False.
    config.model_name = model_name
    config.model = ml_collections.ConfigDict(dict(
        num_classes=1000, img_size=224, drop_path_rate=drop_path, dtype="bfloat16"))
    # init.weights: MAE checkpoint file or pre-training workdir; head (and fc_norm) start fresh.
    config.init = ml_collections.ConfigDict(dict(weights=arg.init, skip=("head",)))
    config.task = "classification"

    # ToMe during fine-tuning, no proportional attention (the paper's training setting).
    config.tome = ml_collections.ConfigDict(dict(r=paper_r if arg.r < 0 else arg.r, method="bipartite",
                                                 prop_attn=False))

    config.data = data_config()
    config.data.update(dict(
        name="imagenet2012", data_dir="", split_train="train", split_eval="validation", image_size=224,
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bicubic",
        crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), hflip=True, crop_pct=0.875, num_threads=16))
    config.batch_size = 1024
    config.total_epochs = float(epochs)
    config.total_steps = 0
    config.warmup_epochs = 5.0
    config.warmup_steps = 0

    config.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", lr=base_lr * config.batch_size / 256, min_lr=1e-6, b1=0.9, b2=0.999,
        weight_decay=0.05, clip_norm=0.0, layer_decay=layer_decay, ema_decay=0.0))
    config.label_smoothing = 0.1
    config.mixup = ml_collections.ConfigDict(dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5))

    # Devices, logging, checkpoints, resume rules (configs/common.py).
    add_run_settings(config)

    if arg.runlocal:
        # The pre-training recipe's small ViT on 16x16 digits: 64 patches + the class token; ToMe
        # r=12 takes them 65 -> 53 -> 41 -> 29 -> 17 over the 4 blocks.
        config.model_name = "vit_tiny_patch16_224.mae"
        config.model.update(dict(num_classes=10, img_size=16, patch_size=2, embed_dim=64, depth=4, num_heads=4,
                                 mlp_ratio=2.0, drop_path_rate=0.1, dtype="float32"))
        config.tome.r = 12 if arg.r < 0 else arg.r
        config.data = data_config()
        config.data.update(dict(name="digits", data_dir="", image_size=16, mean=(0.5,) * 3, std=(0.5,) * 3,
                                crop_scale=(0.8, 1.0), crop_ratio=(0.9, 1.1), hflip=False, crop_pct=1.0,
                                num_threads=2))
        config.batch_size = 64
        config.total_epochs = 15.0
        config.warmup_epochs = 1.0
        config.optimizer.update(dict(lr=2e-3, min_lr=1e-5, layer_decay=0.75))
        config.mixup.update(dict(mixup_alpha=0.0, cutmix_alpha=0.0))
        config.log_every_steps = 50
        config.eval_every_steps = 1000
        config.checkpoint_every_steps = 200
    return config
