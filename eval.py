r"""Accuracy and throughput over a sweep of ToMe's r, for one or several models.

  python eval.py --config configs/vit_b_tome.py:runlocal --workdir runs/digits --r 0,8,12 --batch_size 359
  python eval.py --config configs/vit_b_tome.py --weights deit_base.safetensors --r 0,8,16,16:-1
  python eval.py --config configs/vit_b_tome.py:runlocal --workdir runs/a --workdir runs/b --labels a,b
  python eval.py --config configs/vit_b_tome.py:runlocal --workdir runs/digits --r 0,12 --choose_r flops=0.5
  python eval.py --config configs/vit_b_tome.py:runlocal --workdir runs/digits --method all --r 4,8,12 --batch_size 359

Weights come from --weights (timm / big_vision / MAE / torchvision file) or the latest checkpoint
in --workdir; repeat either flag for several models of the recipe's architecture (one line each in
the plot). --choose_r adds the smallest r meeting a target (tome_jax.choose_r on the first model:
flops=RATIO from count_flops, or speedup=FACTOR measured at --batch_size). Prints a table and writes
eval_results.{json,csv,md} and accuracy_vs_throughput.png to --out (default: the first workdir,
or ./eval_out).

--method compares reduction methods (registered names, "tome" for bipartite, or "all") at matched
FLOPs: for each target FLOP ratio (--target_flops, default: ToMe's at each r > 0 of --r) each
method's smallest r that meets it (choose_r), its accuracy, images/s and the share of the forward
spent in the method's own work ("own %": its plans timed alone), all timed in one interleaved run;
the plot has one line per method.
"""

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file (configs/*.py[:args]).", lock_config=True)
_WORKDIR = flags.DEFINE_multi_string("workdir", None, "A training run's directory (its latest checkpoint is "
                                     "used); repeat for several models.")
_WEIGHTS = flags.DEFINE_multi_string("weights", None, "Pretrained weights file instead of a checkpoint; repeat "
                                     "for several models.")
_LABELS = flags.DEFINE_list("labels", None, "Names of the models in the table and plot (default: from the paths).")
_R = flags.DEFINE_string("r", "0,8,16", "Comma-separated r values; 'r:inflect' for a schedule, e.g. 16:-1. "
                        "Speedups are over r=0, timed even when not listed.")
_CHOOSE = flags.DEFINE_string("choose_r", None, "Also evaluate the smallest r meeting a target: flops=0.5 "
                              "(FLOP ratio to r=0) or speedup=1.5 (measured images/s ratio).")
_SCHEDULE = flags.DEFINE_enum("choose_r_schedule", "constant", ["constant", "decreasing"],
                              "Schedule family of --choose_r: r or (r, -1).")
_METHOD = flags.DEFINE_string("method", None, "Compare reduction methods at matched FLOPs: comma-separated "
                              "registered names ('tome' = bipartite) or 'all'.")
_TARGETS = flags.DEFINE_list("target_flops", None, "--method: FLOP ratios to r=0 to match (default: "
                             "ToMe's at each r > 0 of --r).")
_BATCH = flags.DEFINE_integer("batch_size", None, "Batch for accuracy and timing (default: the recipe's).")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed forward passes per r (median is reported).")
_OUT = flags.DEFINE_string("out", None, "Where to write the results (default: the first --workdir or ./eval_out).")


def main(argv):
    del argv
    from tome_jax import runtime

    runtime.configure()  # allocator, quiet logs, compilation cache ($TOME_JAX_CACHE_DIR)
    import tome_jax
    from tome_jax.timing import CompileTimer
    from tome_jax.choose import parse_target
    from tome_jax.models.registry import describe_model
    from tome_jax.train import evaluate, report

    config = _CONFIG.value
    sources = [(w, None) for w in _WORKDIR.value or []] + [(None, w) for w in _WEIGHTS.value or []]
    sources = sources or [(None, None)]  # load_model explains what to pass
    labels = _LABELS.value or [report.model_label(w, p) for w, p in sources]
    if len(labels) != len(sources) or len(set(labels)) != len(labels):
        raise app.UsageError(f"--labels needs one distinct name per model ({len(sources)}), got {labels}.")
    batch_size = _BATCH.value or config.batch_size
    r_values = evaluate.parse_r_list(_R.value)
    try:
        methods = evaluate.parse_methods(_METHOD.value) if _METHOD.value else None
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    compile_timer = CompileTimer()
    title = describe_model(config.model_name, **config.model.to_dict())  # the name plus what changes it
    results = {}
    for label, (workdir, weights) in zip(labels, sources):
        model, origin = evaluate.load_model(config, workdir, weights)
        if _CHOOSE.value and not results:
            choice = tome_jax.choose_r(model, **parse_target(_CHOOSE.value), schedule=_SCHEDULE.value,
                                       batch_size=batch_size)
            print(f"choose_r({_CHOOSE.value}, {_SCHEDULE.value}): {choice}")
            r_values += [] if choice.r in r_values else [choice.r]
        print(f"{label}: {title}; {model.num_tokens} tokens in; {origin}; eval split {config.data.split_eval!r}")
        if methods:
            targets = ([float(t) for t in _TARGETS.value] if _TARGETS.value
                       else evaluate.flops_targets(model, r_values))
            print(f"methods {', '.join(methods)} at FLOP ratios {', '.join(f'{t:.3f}' for t in targets)}")
            compared = evaluate.compare_methods(config, model, methods, targets, batch_size=batch_size,
                                                repeats=_REPEATS.value)
            several = len(sources) > 1
            results.update({f"{label} {m}" if several else m: rows for m, rows in compared.items()})
            continue
        results[label] = evaluate.sweep(config, model, r_values, batch_size=batch_size, repeats=_REPEATS.value)
    print(f"{title}\n{report.format_table(results)}")  # the table says which model it measured
    print(f"compile: {compile_timer}")
    out = _OUT.value or (_WORKDIR.value or ["eval_out"])[0]
    for path in report.write_report(results, out, title):
        print("wrote", path)


if __name__ == "__main__":
    import sys

    from tome_jax import cli

    # Config mistakes and --help are answered here, before any data, checkpoint or JAX work.
    cli.preflight(sys.argv, __doc__, flags.FLAGS.module_help(sys.modules[__name__]), check_r=True)
    flags.mark_flag_as_required("config")
    app.run(main)
