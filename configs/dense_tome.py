r"""Dense prediction with token merging that keeps the grid: a windowed ViT (ViTDet layout, decomposed
relative positions) segmenting digits pasted on a canvas, tomesd-style merge / unmerge in every block
(docs/dense.md).

  python train.py --config configs/dense_tome.py:runlocal --workdir runs/dense
  python eval.py --config configs/dense_tome.py:runlocal --workdir runs/dense --r 0,4,8,12 --batch_size 359

`runlocal` is a 4-block, 64-wide windowed ViT on 32x32 canvases with 4-px patches: an 8x8 token grid
in four 4x4 windows (blocks 0 and 2 windowed, 1 and 3 global), each token predicting its own 4x4
pixels. It is trained without merging (r=0: tomesd merges a model trained without it); r is the
tokens each 4x4 window loses in every block (a global block loses the same share of the grid): 8
halves the tokens of attention and MLP, 12 (the most with 2x2 cells) leaves a quarter. The full
recipe is ViTDet-B on 256x256 canvases, trained at r=49. `r=N` sets the trained r:
`--config configs/dense_tome.py:runlocal,r=8`.
"""

import ml_collections

from configs.common import add_run_settings, data_config, parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, runlocal=False, r=-1)
    config = ml_collections.ConfigDict()
    config.seed = 0

    # Model: ViTDet-B (windows of 14, global blocks 2, 5, 8, 11, absolute and decomposed relative positions),
    # a per-pixel head.
    config.model_name = "vitdet_base_patch16_1024"
    config.model = ml_collections.ConfigDict(dict(num_classes=11, img_size=256, drop_path_rate=0.1,
                                                  use_rel_pos=True, dtype="bfloat16"))
    config.init = ml_collections.ConfigDict(dict(weights="", skip=()))

    # Per-pixel cross-entropy; mIoU and pixel accuracy.
    config.task = "segmentation"

    # Merging (tomesd's 2-D rule): r tokens per window per block; "random" destinations while training
    # (tomesd's default), "bipartite" = fixed top-left destinations, "none" = off.
    config.tome = ml_collections.ConfigDict(dict(r=49 if arg.r < 0 else arg.r, method="random"))

    # Data: digits pasted on a canvas, each pixel labelled background or 1 + its digit (no download).
    config.data = data_config()
    config.data.update(dict(name="dense_digits", image_size=256, mean=(0.5,) * 3, std=(0.5,) * 3, hflip=False,
                            options=dict(canvas=256, digits=6, scale=6, examples=0, seed=0)))
    config.batch_size = 64
    config.total_epochs = 100.0
    config.total_steps = 0
    config.warmup_epochs = 5.0
    config.warmup_steps = 0

    config.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", lr=1e-3, min_lr=1e-5, b1=0.9, b2=0.999, weight_decay=0.05, clip_norm=1.0,
        layer_decay=0.0, ema_decay=0.0))
    config.label_smoothing = 0.0
    config.mixup = ml_collections.ConfigDict(dict(mixup_alpha=0.0, cutmix_alpha=0.0, switch_prob=0.5))

    add_run_settings(config)

    if arg.runlocal:
        # 4-px patches: an 8x8 token grid, each token 2x2 of a digit's 8x8 pixels; every token predicts its
        # own 4x4 pixels (dense_head="unpatchify"), so the masks keep the canvas' resolution.
        config.model.update(dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0,
                                 window_size=4, global_attn_indexes=(1, 3), dense_head="unpatchify",
                                 drop_path_rate=0.0, dtype="float32"))
        # Trained without merging (tomesd merges a trained model); eval.py sweeps r.
        config.tome.r = 0 if arg.r < 0 else arg.r
        # 7190 canvases per split (each digit image on 5 canvases on average, at other places, colours and
        # partners; the test split's from its 359 held-out digits): with the default one canvas per digit
        # image the model memorizes its 1438 training canvases (docs/dense.md).
        config.data.update(dict(image_size=32, num_threads=2,
                                options=dict(canvas=32, digits=2, scale=2, examples=7190, seed=0)))
        config.batch_size = 32
        config.total_epochs = 12.0
        config.warmup_epochs = 0.5
        config.optimizer.update(dict(lr=2e-3, min_lr=1e-5, weight_decay=0.05, clip_norm=1.0))
        config.log_every_steps = 45
        config.eval_every_steps = 1350
        config.checkpoint_every_steps = 1350
    return config
