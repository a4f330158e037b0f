r"""Audio: a spectrogram ViT-B in AudioMAE's layout fine-tuned on AudioSet with ToMe (Bolya et al., Sec. 5 audio;
AudioMAE, Huang et al. 2022, submit_ft_mask_bal.sh).

  python train.py --config configs/audio_tome.py --workdir /tmp/audio_tome \
      --config.data.data_dir=/data/audioset --config.init.weights=audiomae_pretrained.safetensors
  python train.py --config configs/audio_tome.py:runlocal --workdir /tmp/audio_runlocal
  python eval.py --config configs/audio_tome.py:runlocal --workdir /tmp/audio_runlocal --r 0,4,8,12

Data: TFDS has no AudioSet, so the full recipe reads a folder of 16 kHz WAVs with a label CSV
(`data.name="audiofolder"`, layout in tome_jax/data/audio.py: <data_dir>/{train,eval}/*.wav,
<data_dir>/{train,eval}.csv "filename,labels", <data_dir>/class_labels_indices.csv). `runlocal`
trains a small model on synthetic multi-label clips made with NumPy (no download).
`r=N` sets ToMe's r (`:runlocal,r=0` is the same recipe without ToMe).
"""

import ml_collections

from configs.common import add_run_settings, data_config, parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, runlocal=False, r=-1)
    config = ml_collections.ConfigDict()
    config.seed = 0

    # Model: AudioMAE's ViT-B (1024 frames x 128 mel bins, 16x16 patches = 512 tokens + class token,
    # average pooling + fc_norm), 527 AudioSet classes.
    config.model_name = "vit_base_patch16_audio"
    config.model = ml_collections.ConfigDict(dict(
        num_classes=527, img_size=(1024, 128), drop_path_rate=0.1, dtype="bfloat16"))
    # AudioMAE's pre-trained checkpoint: load_timm ignores its decoder and final norm and keeps
    # fc_norm (and, by skip, head) at their init, as for image MAE checkpoints.
    config.init = ml_collections.ConfigDict(dict(weights="", skip=("head",)))

    config.task = "multilabel"  # sigmoid cross-entropy, mAP

    # ToMe r=40 on 513 tokens: 513 -> 473 -> ... -> 73 -> 37 (paper's audio setting), trained with merging,
    # no proportional attention (MAE-style model).
    config.tome = ml_collections.ConfigDict(dict(r=40 if arg.r < 0 else arg.r, method="bipartite",
                                                 prop_attn=False))

    # Data: AudioSet as WAVs + CSV; AudioMAE's front end and SpecAugment (freqm 48, timem 192).
    config.data = data_config()
    # Raw log-mels leave the host; the device normalizes them once, as AudioMAE: (x - mean) / (2 std)
    # with AudioSet's statistics (mean -4.2677393, std 4.5689974), i.e. one channel, std = 2 x 4.5689974.
    config.data.update(dict(name="audiofolder", data_dir="", split_train="train", split_eval="eval",
                            mean=(-4.2677393,), std=(2 * 4.5689974,),
                            num_threads=16))
    config.data.options = ml_collections.ConfigDict(dict(  # audiofolder's options: the front end
        sample_rate=16000, num_mel_bins=128, num_frames=1024, window="hanning", freq_mask=48, time_mask=192,
        labels_csv=""))
    config.batch_size = 256  # 8 nodes x 8 GPUs x 4
    # AudioMAE: 100 epochs of 200k class-balanced samples (weighted sampler; we sample uniformly).
    config.total_epochs = 0.0
    config.total_steps = 100 * 200_000 // 256
    config.warmup_epochs = 0.0
    config.warmup_steps = 10 * 200_000 // 256

    # Optimizer: AdamW, blr 2e-4 x batch / 256, layer decay 0.75, weight decay 5e-4.
    config.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", lr=2e-4 * config.batch_size / 256, min_lr=1e-6, b1=0.9, b2=0.999,
        weight_decay=5e-4, clip_norm=0.0, layer_decay=0.75, ema_decay=0.0))
    config.label_smoothing = 0.0
    config.mixup = ml_collections.ConfigDict(dict(mixup_alpha=0.5, cutmix_alpha=0.0, switch_prob=0.0))

    # Devices, logging, checkpoints, resume rules (configs/common.py).
    add_run_settings(config)

    if arg.runlocal:
        # 10 synthetic sound classes, 2.56 s clips -> 256 frames x 128 mel bins, 16x16 patches:
        # a 16 x 8 grid = 128 tokens + class token; ToMe r=16: 129 -> 113 -> 97 -> 81 -> 65.
        config.model_name = "vit_tiny_patch16_audio"
        config.model.update(dict(num_classes=10, img_size=(256, 128), embed_dim=64, depth=4, num_heads=4,
                                 mlp_ratio=2.0, drop_path_rate=0.0, dtype="float32"))
        config.init.weights = ""
        config.tome.r = 16 if arg.r < 0 else arg.r
        config.data.update(dict(name="synthetic_audio", split_eval="test", num_threads=2))
        config.data.options = ml_collections.ConfigDict(dict(  # synthetic_audio's options
            sample_rate=16000, num_mel_bins=128, num_frames=256, window="hanning", freq_mask=24, time_mask=48,
            clip_seconds=2.56, num_clips=(1024, 256), seed=0))
        config.batch_size = 64
        config.total_steps = 320  # 20 epochs of 1024 clips
        config.warmup_steps = 32
        config.optimizer.update(dict(lr=2e-3, min_lr=1e-5, weight_decay=0.05, layer_decay=0.0))
        config.mixup.mixup_alpha = 0.0
        config.log_every_steps = 40
        config.eval_every_steps = 320
        config.checkpoint_every_steps = 320
    return config
