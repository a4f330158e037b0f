r"""A class-conditional diffusion transformer (DiT) with tomesd-style merging, on the embedded digits
(docs/dense.md, "A diffusion transformer").

  python train.py --config configs/dit_tome.py:runlocal --workdir runs/dit
  python benchmarks/dit_digits.py --config configs/dit_tome.py:runlocal --workdir runs/dit

The full recipe is DiT-B/2 on 32x32x4 latents (256 tokens), as DiT trains it on ImageNet latents (this
project has no VAE: it is the shape, for the speed benchmark). `runlocal` trains a tiny DiT on the
digits' pixels as the "latent": 16x16x1 in [-1, 1], 2-px patches -> an 8x8 grid of 64 tokens, 4
blocks of width 64. The loss is DDPM's epsilon MSE (linear betas, 1000 steps; no learned variance),
labels dropped to the null class at rate 0.1 for classifier-free guidance. Trained without merging
(tomesd merges a model trained without it); `sampling` holds what the benchmark samples with: DDIM
steps, guidance scale, and tomesd's merge ratios (r = merge.ratio_r(64, ratio) tokens per block).
"""

import ml_collections

from configs.common import add_run_settings, data_config, parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, runlocal=False)
    config = ml_collections.ConfigDict()
    config.seed = 0

    # Model: DiT-B/2 (width 768, 12 blocks, 12 heads, 2-px patches) on 32x32x4 latents, 10 classes.
    config.model_name = "dit_b_2"
    config.model = ml_collections.ConfigDict(dict(num_classes=10, learn_sigma=False, dtype="float32"))
    config.init = ml_collections.ConfigDict(dict(weights="", skip=()))

    # DDPM epsilon loss; label dropout for classifier-free guidance (DiT's class_dropout_prob).
    config.task = "diffusion"
    config.diffusion = ml_collections.ConfigDict(dict(steps=1000, class_dropout=0.1))

    # Merging while training: none. Sampling sets the ratio (tomesd: random destinations per call).
    config.tome = ml_collections.ConfigDict(dict(r=0, method="random"))
    config.sampling = ml_collections.ConfigDict(dict(
        sample_steps=50, guidance=2.0, ratios=(0.0, 0.25, 0.5, 0.75), samples_per_class=50, clip=True))

    # Data: the embedded digits as pixels in [-1, 1]; no crop or zoom (the samples should look like them).
    config.data = data_config()
    config.data.update(dict(name="digits", image_size=32, mean=(0.5,), std=(0.5,), crop_scale=(1.0, 1.0),
                            crop_ratio=(1.0, 1.0), hflip=False))
    config.batch_size = 256
    config.total_epochs = 400.0
    config.total_steps = 0
    config.warmup_epochs = 5.0
    config.warmup_steps = 0

    config.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", lr=1e-4, min_lr=1e-4, b1=0.9, b2=0.999, weight_decay=0.0, clip_norm=1.0,
        layer_decay=0.0, ema_decay=0.9999))
    config.label_smoothing = 0.0
    config.mixup = ml_collections.ConfigDict(dict(mixup_alpha=0.0, cutmix_alpha=0.0, switch_prob=0.5))

    add_run_settings(config)

    if arg.runlocal:
        config.model_name = "dit_s_2"
        config.model.update(dict(input_size=16, in_channels=1, hidden_size=64, depth=4, num_heads=4))
        config.data.update(dict(image_size=16, num_threads=2))
        config.batch_size = 64
        config.total_epochs = 0.0
        config.total_steps = 1500
        config.warmup_steps = 50
        config.optimizer.update(dict(lr=3e-3, min_lr=1e-4, ema_decay=0.995))
        config.sampling.update(dict(sample_steps=25, samples_per_class=36))  # 360 samples ~ the 359 test digits
        config.log_every_steps = 50
        config.eval_every_steps = 1500
        config.checkpoint_every_steps = 500
    return config
