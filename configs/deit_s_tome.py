r"""DeiT-S trained from scratch with ToMe r=13 (ToMe paper, Table 2: 79.8 -> 79.36 top-1).

  python train.py --config configs/deit_s_tome.py --workdir /tmp/deit_s_tome --config.data.data_dir=...

Identical to the DeiT-B recipe (configs/vit_b_tome.py) but for the model and ToMe's r; the
`runlocal` and `r=N` arguments work the same way.
"""

from configs import vit_b_tome
from configs.common import parse_arg


def get_config(arg=None):
    options = parse_arg(arg, runlocal=False, r=-1)
    config = vit_b_tome.get_config(arg)
    if not options.runlocal:
        config.model_name = "deit_small_patch16_224"
        config.tome.r = 13 if options.r < 0 else options.r
    return config
