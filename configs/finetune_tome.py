r"""Fine-tune pretrained weights with ToMe (MAE fine-tuning recipe of the ToMe paper, Sec. 4.2).

  python train.py --config configs/finetune_tome.py --workdir /tmp/ft \
      --config.init.weights=mae_finetuned_vit_base.pth.safetensors --config.data.data_dir=...
  python train.py --config configs/finetune_tome.py:model=vit_base_patch16_224,r=13 ...  # AugReg/timm weights

Any weights `tome_jax.load_timm` reads work (timm, big_vision/AugReg .npz, MAE, torchvision); the
classifier head always starts fresh (`init.skip=("head",)`: the checkpoint's head is not loaded, whatever
its class count). MAE models average-pool and train without proportional attention; the `.mae` tag sets
that.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs import vit_b_tome
from configs.common import parse_arg


def get_config(arg=None):
    options = parse_arg(arg, runlocal=False, r=-1, model="vit_base_patch16_224.mae")
    config = vit_b_tome.get_config(",".join(filter(None, ["runlocal" if options.runlocal else "",
                                                          f"r={options.r}" if options.r >= 0 else ""])))
    if not options.runlocal:
        config.model_name = options.model
        config.model.update(dict(drop_path_rate=0.1, dtype="bfloat16"))
        config.model.global_pool = placeholder(str)  # None: the tag's choice (.mae: avg + fc_norm)
        config.tome.r = 16 if options.r < 0 else options.r
        config.total_epochs = 100.0
        config.warmup_epochs = 5.0
        config.optimizer.update(dict(lr=5e-4 * config.batch_size / 256, layer_decay=0.65, weight_decay=0.05))
    # prop_attn is left to the model (.mae: off, timm: on): config.tome holds only r and method.
    config.tome = ml_collections.ConfigDict(dict(r=config.tome.r, method=config.tome.method))
    config.init.weights = ""  # set --config.init.weights=PATH
    config.init.skip = ("head",)
    return config
