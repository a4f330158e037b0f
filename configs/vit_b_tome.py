r"""DeiT-B-style ImageNet recipe trained with ToMe (Bolya et al., Sec. 4.2 / DeiT, Touvron et al.).

  python train.py --config configs/vit_b_tome.py --workdir /tmp/vit_b_tome \
      --config.data.data_dir=/path/to/tensorflow_datasets
  python train.py --config configs/vit_b_tome.py:runlocal --workdir /tmp/runlocal
  python eval.py --config configs/vit_b_tome.py:runlocal --workdir /tmp/runlocal --r 0,8,12 --batch_size 359

`runlocal` shrinks the same recipe to a small ViT on the embedded digits data (no download), and
`r=N` sets ToMe's r: `--config configs/vit_b_tome.py:runlocal,r=0`.
"""

import ml_collections

from configs.common import add_run_settings, data_config, parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, runlocal=False, r=-1)
    config = ml_collections.ConfigDict()
    config.seed = 0

    # Model: timm name + overrides passed to tome_jax.create_model.
    config.model_name = "deit_base_patch16_224"
    config.model = ml_collections.ConfigDict(dict(
        num_classes=1000, img_size=224, drop_path_rate=0.1, global_pool="token", dtype="bfloat16"))
    config.init = ml_collections.ConfigDict(dict(weights="", skip=("head",)))  # "" = from scratch

    # What is optimized and measured: "classification" | "multilabel" | "reconstruction".
    config.task = "classification"

    # ToMe: trained with merging, no proportional attention (as in the paper's training runs).
    # method: "bipartite" (ToMe) | "prune" | "random" | "kth" | "none" (docs/semantics.md).
    config.tome = ml_collections.ConfigDict(dict(r=16 if arg.r < 0 else arg.r, method="bipartite",
                                                 prop_attn=False))

    # Data: ImageNet through tfds (ArrayRecord), DeiT augmentation.
    config.data = data_config()
    config.data.update(dict(
        name="imagenet2012", data_dir="", split_train="train", split_eval="validation", image_size=224,
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bicubic",
        crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), hflip=True, crop_pct=0.875))
    config.batch_size = 1024
    config.total_epochs = 300.0
    config.total_steps = 0  # > 0 overrides total_epochs
    config.warmup_epochs = 5.0
    config.warmup_steps = 0  # > 0 overrides warmup_epochs

    # Optimizer: AdamW, lr 5e-4 per 512 images, cosine to 1e-5.
    config.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", lr=5e-4 * config.batch_size / 512, min_lr=1e-5, b1=0.9, b2=0.999,
        weight_decay=0.05, clip_norm=0.0, layer_decay=0.0, ema_decay=0.0))
    config.label_smoothing = 0.1
    config.mixup = ml_collections.ConfigDict(dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5))

    # Devices, logging, checkpoints, resume rules (configs/common.py).
    add_run_settings(config)

    if arg.runlocal:
        # A small ViT on sklearn's digits at 16x16 with 2-px patches: 64 patch tokens (one per pixel of
        # the 8x8 originals) + the class token, enough that merging matters (issue 22). ToMe r=12 takes
        # them 65 -> 53 -> 41 -> 29 -> 17 -> 9 -> 5 over the 6 blocks: 0.46x the FLOPs of r=0, about 2x
        # the images/s in eval.py's sweep. Crops zoom in and out (area 0.7-1.4 of the digit, border
        # pixels repeated outside it) for 60 epochs, so training fits in about 100 s on 2 cores.
        # Measured top-1 and speed: README (benchmarks/main_job.py); the earlier 17-token variants:
        # benchmarks/RESULTS.md section 11.
        config.model_name = "vit_tiny_patch16_224"
        config.model.update(dict(num_classes=10, img_size=16, patch_size=2, embed_dim=64, depth=6,
                                 num_heads=4, mlp_ratio=2.0, global_pool="avg", drop_path_rate=0.0,
                                 dtype="float32"))
        config.tome.r = 12 if arg.r < 0 else arg.r
        config.data = data_config()
        config.data.update(dict(name="digits", data_dir="", image_size=16, mean=(0.5,) * 3, std=(0.5,) * 3,
                                crop_scale=(0.7, 1.4), crop_ratio=(0.9, 1.1), hflip=False, crop_pct=1.0,
                                num_threads=2))
        config.batch_size = 64
        config.total_epochs = 60.0
        config.warmup_epochs = 3.0
        config.optimizer.update(dict(lr=3e-3, min_lr=1e-5, weight_decay=0.05))
        config.label_smoothing = 0.1
        config.mixup.update(dict(mixup_alpha=0.0, cutmix_alpha=0.0))
        config.log_every_steps = 50
        config.eval_every_steps = 500
        config.checkpoint_every_steps = 500
    return config
