r"""Accuracy and throughput over a sweep of ToMe's r.

  python eval.py --config configs/vit_b_tome.py:runlocal --workdir /tmp/runlocal --r 0,2,4,6
  python eval.py --config configs/vit_b_tome.py --weights deit_base.safetensors --r 0,8,16,16:-1

Weights come from --weights (timm / big_vision / MAE / torchvision file) or the latest checkpoint
in --workdir. Prints a table and writes eval_results.{json,csv} and accuracy_vs_throughput.png to
--out (default: the workdir, or ./eval_out).
"""

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file (configs/*.py[:args]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's directory (its latest checkpoint is used).")
_WEIGHTS = flags.DEFINE_string("weights", None, "Pretrained weights file instead of a checkpoint.")
_R = flags.DEFINE_string("r", "0,8,16", "Comma-separated r values; 'r:inflect' for a schedule, e.g. 16:-1.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Batch for accuracy and timing (default: the recipe's).")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed forward passes per r (median is reported).")
_OUT = flags.DEFINE_string("out", None, "Where to write the results (default: --workdir or ./eval_out).")


def main(argv):
    del argv
    from tome_jax import runtime

    runtime.configure()  # quiet logs, persistent compilation cache ($TOME_JAX_CACHE_DIR)
    from tome_jax.train import evaluate

    config = _CONFIG.value
    model, origin = evaluate.load_model(config, _WORKDIR.value, _WEIGHTS.value)
    results = evaluate.sweep(config, model, evaluate.parse_r_list(_R.value),
                             batch_size=_BATCH.value or config.batch_size, repeats=_REPEATS.value)
    print(f"{config.model_name} ({origin}), eval split {config.data.split_eval!r}")
    print(evaluate.format_table(results))
    for path in evaluate.write_report(results, _OUT.value or _WORKDIR.value or "eval_out", config.model_name):
        print("wrote", path)


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
