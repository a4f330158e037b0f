r"""Video ViT-L (MAE-ST) fine-tuned on Kinetics-400 with ToMe (Bolya et al., Sec. 5; Feichtenhofer et al. 2022).

  python train.py --config configs/video_tome.py --workdir /tmp/k400 \
      --config.data.data_dir=/data/k400_clips --config.init.weights=k400_pretrain_vit_l.safetensors
  python train.py --config configs/video_tome.py:runlocal --workdir /tmp/video_local
  python eval.py --config configs/video_tome.py:runlocal --workdir /tmp/video_local --r 0,4,8,12

The full recipe is MAE-ST's fine-tuning command for ViT-L (FINETUNE.md: 16 frames every 4th,
2x16x16 tubelets, 50 epochs, blr 2.4e-3, layer decay 0.75, drop path 0.2, dropout 0.3, mixup 0.8 /
cutmix 1.0, label smoothing 0.1, clip 5.0, 5 warmup epochs), with ToMe r=65 (1568 tokens, 24 blocks).
Kinetics-400 is read as a folder of decoded clips, `data_dir/{train,val}/<class>/<clip>.npy` (uint8
[F, H, W, 3]); TFDS has no Kinetics-400 builder. Not reproduced here: RandAugment and repeated
augmentation (the lr keeps MAE-ST's formula without the repeat factor) and the 7-clip x 3-crop test.

`runlocal` shrinks the same recipe to a small video ViT on the embedded digits moving over a 16x16
canvas for 8 frames (label: digit and direction, 40 classes; no download); `frames=1` trains the
single-frame baseline on the same task (its accuracy is capped at 25%: one frame shows no motion);
`r=N` sets ToMe's r.
"""

import ml_collections

from configs.common import add_run_settings, data_config, parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, runlocal=False, r=-1, frames=8)
    config = ml_collections.ConfigDict()
    config.seed = 0

    # Model: registry name + overrides for tome_jax.create_model. ".mae_st": the official checkpoints'
    # layout (class token, no proportional attention); clips are [B, T, H, W, C].
    config.model_name = "video_vit_large_patch16.mae_st"
    config.model = ml_collections.ConfigDict(dict(
        num_classes=400, num_frames=16, tubelet_size=2, img_size=224, drop_path_rate=0.2, head_drop_rate=0.3,
        dtype="bfloat16"))
    config.init = ml_collections.ConfigDict(dict(weights="", skip=("head",)))  # MAE-ST pre-trained encoder
    config.task = "classification"

    # ToMe during fine-tuning: r=65 leaves 37 of 1568 tokens after 24 blocks (2.1x fewer FLOPs).
    # Fields of tome_jax.apply_tome; prop_attn is left to the model (the .mae_st tag: off).
    config.tome = ml_collections.ConfigDict(dict(r=65 if arg.r < 0 else arg.r, method="bipartite"))

    # Data: decoded Kinetics-400 clips, 16 frames every 4th; random window + random-resized crop.
    config.data = data_config()
    config.data.update(dict(
        name="clipfolder", data_dir="", split_train="train", split_eval="val", image_size=224,
        mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225), crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3),
        hflip=False, crop_pct=1.0, num_threads=16))
    config.data.options = ml_collections.ConfigDict(dict(frames=16, stride=4))  # clipfolder's options
    config.batch_size = 256
    config.total_epochs = 50.0
    config.total_steps = 0
    config.warmup_epochs = 5.0
    config.warmup_steps = 0

    config.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", lr=2.4e-3 * config.batch_size / 256, min_lr=1e-6, b1=0.9, b2=0.999, weight_decay=0.05,
        clip_norm=5.0, layer_decay=0.75, ema_decay=0.0))
    config.label_smoothing = 0.1
    config.mixup = ml_collections.ConfigDict(dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5))
    # Devices, logging, checkpoints, resume rules (configs/common.py).
    add_run_settings(config)

    if arg.runlocal:
        # 8 frames of 16x16, tubelets 2x4x4: 4 x 4 x 4 = 64 tokens; r=8 takes them 64 -> 56 -> 48 -> 40 -> 32.
        # frames=1: one frame, 1x4x4 tubelets (16 tokens), r=2 for the same share of merging.
        single = arg.frames == 1
        config.model_name = "video_vit_base_patch16"
        config.model.update(dict(
            num_classes=40, num_frames=arg.frames, tubelet_size=1 if single else 2, img_size=16, patch_size=4,
            embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0, drop_path_rate=0.0, head_drop_rate=0.0,
            dtype="float32"))
        config.tome.r = (2 if single else 8) if arg.r < 0 else arg.r
        config.tome.prop_attn = False
        config.data = data_config()
        config.data.update(dict(name="moving_digits", data_dir="", image_size=16,
                                mean=(0.5,) * 3, std=(0.5,) * 3, num_threads=2))
        config.data.options = ml_collections.ConfigDict(dict(frames=arg.frames, speed=1))
        config.batch_size = 64
        config.total_epochs = 6.0
        config.warmup_epochs = 0.5
        config.optimizer.update(dict(lr=2e-3, min_lr=1e-5, weight_decay=0.05, clip_norm=1.0, layer_decay=0.0))
        config.label_smoothing = 0.0
        config.mixup.update(dict(mixup_alpha=0.0, cutmix_alpha=0.0))
        config.log_every_steps = 50
        config.eval_every_steps = 1000
        config.checkpoint_every_steps = 500
    return config
