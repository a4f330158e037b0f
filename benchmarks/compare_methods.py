"""Token-reduction methods side by side at matched FLOPs: r, accuracy, images/s, the method's own share.

    # a trained model (the main job's): accuracy + speed, as eval.py --method prints them
    python benchmarks/compare_methods.py --config configs/vit_b_tome.py:runlocal --workdir /tmp/cmp_digits \
        --r 4,8,12 --batch_size 359 --json benchmarks/results/compare_methods_digits.json
    # off the shelf, random weights: speed and overhead only
    python benchmarks/compare_methods.py --model vit_base_patch16_224 --r 16 --batch_size 8 \
        --json benchmarks/results/compare_methods_vit_b.json

For every registered method (`--methods`, default all but "none") and every target FLOP ratio
(`--target_flops`, default ToMe's ratio at each r > 0 of `--r`), `tome_jax.choose_r(...,
method=)` picks the smallest r meeting it. With `--workdir` the recipe's eval split is evaluated
(`tome_jax.train.evaluate.compare_methods`, the function behind `eval.py --method`); with
`--model` only the speed is measured (`tome_jax.choose.method_overhead`). In both, every forward
(and r=0) and every method's plans alone are timed interleaved in one run: "own %" is the plans'
time over the forward's at that point (the method's matching / scores / sorting, not the gather
that applies them). A method that cannot run on the model (`ReductionMethod.not_applicable`, e.g.
DiffRate's class-token importance on a model without a class token) has one row saying why. A
method missing from the table is not registered in this tree. `--plot` writes the paper's figure
(the task's metric against images/s, one line per method). Timings on a shared machine are noisy:
compare ratios from one run.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import Report, add_json_arg  # noqa: E402

METRIC_NAMES = {"top1": "top-1 %", "mAP": "mAP %"}  # the task metric's column name
HEADER = ["method", "target FLOPs", "r", "FLOPs x", "tokens out", "{metric}", "images/s", "speedup", "own %"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="", help="a recipe 'configs/x.py[:arg]' (with --workdir)")
    p.add_argument("--workdir", default="", help="a training run of --config: accuracy and speed")
    p.add_argument("--model", default="", help="a registered model name, random weights: speed only")
    p.add_argument("--methods", default="all", help="comma-separated method names ('tome' = bipartite) or all")
    p.add_argument("--r", default="16", help="targets: ToMe's FLOP ratio at each r > 0 (comma-separated)")
    p.add_argument("--target_flops", default="", help="targets as FLOP ratios to r=0 (instead of --r)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--plot", default="", help="write the accuracy-vs-images/s figure here (with --workdir)")
    add_json_arg(p, "compare_methods_NAME")
    args = p.parse_args(argv)
    if bool(args.model) == bool(args.workdir):
        p.error("pass --workdir (with --config) or --model")
    return args


def rows_of(results: dict, metric: str, skipped: dict[str, str]) -> list[list]:
    """Table rows from {method: rows} (a row may lack the metric: speed only), then one row per
    method in `skipped` ({method: why it does not apply})."""
    out = []
    for method, rows in results.items():
        for row in rows:
            out.append([method, f"{row['target_flops']:.3f}", row["r"], f"{row['flops_ratio']:.3f}", row["tokens_out"],
                        f"{row[metric]:.2f}" if metric in row else "-", f"{row['images_per_sec']:.1f}",
                        f"{row['speedup']:.2f}x", f"{100 * row['overhead']:.2f}"])
    for method, reason in skipped.items():
        out.append([method, f"not applicable: {reason}"] + [""] * 7)
    return out


def speed_only(model, methods: list[str], targets: list[float], batch: int, repeats: int) -> dict:
    """{method: rows} without accuracy: choose_r per method and target, then one interleaved timing."""
    import tome_jax
    from tome_jax.choose import method_overhead

    chosen = {}
    for method in methods:
        for target in targets:
            try:
                choice = tome_jax.choose_r(model, target_flops_ratio=target, method=method)
            except ValueError as err:
                print(f"{method}: target {target:.3f} skipped: {err}")
                continue
            chosen.setdefault((method, choice.r), (target, choice))
    timed = method_overhead(model, list(chosen), model.example_inputs(batch), repeats=repeats)
    results = {}
    for (method, r), (target, choice) in chosen.items():
        from tome_jax.choose import method_set

        with method_set(model, method):
            tokens = model.token_counts(r)[-1]
        results.setdefault(method, []).append({"target_flops": target, "flops_ratio": choice.flops_ratio, "r": r,
                                               "tokens_out": tokens, **timed[(method, r)]})
    return results


def main(argv=None):
    args = parse_args(argv)
    from tome_jax import runtime

    runtime.configure()
    import tome_jax
    from tome_jax.train import evaluate

    report = Report()
    print("\n".join(report.machine))
    methods = evaluate.parse_methods(args.methods)
    r_values = evaluate.parse_r_list(args.r)
    if args.workdir:
        from tome_jax.cli import load_recipe
        from tome_jax.models.registry import describe_model

        config = load_recipe(args.config)
        model, origin = evaluate.load_model(config, args.workdir, None)
        title = f"{describe_model(config.model_name, **config.model.to_dict())}; {origin}"
    else:
        model = tome_jax.create_model(args.model)
        title = f"{args.model}, random weights"
    targets = ([float(t) for t in args.target_flops.split(",")] if args.target_flops
               else evaluate.flops_targets(model, r_values))
    print(f"{title}\nmethods {', '.join(methods)}; target FLOP ratios {', '.join(f'{t:.3f}' for t in targets)}")
    skipped = evaluate.not_applicable(model, methods)
    if args.workdir:
        results = evaluate.compare_methods(config, model, methods, targets, batch_size=args.batch_size,
                                           repeats=args.repeats)
    else:
        results = speed_only(model, [m for m in methods if m not in skipped], targets, args.batch_size, args.repeats)
    from tome_jax.train import report as report_lib

    metric = report_lib.headline(results) if args.workdir else "top1"
    header = [h.format(metric=METRIC_NAMES.get(metric, metric)) for h in HEADER]
    print(report.table("methods", header, rows_of(results, metric, skipped), align="lrrrrrrrr"))
    base = next((row["baseline_images_per_sec"] for rows in results.values() for row in rows), None)
    print(report.note("methods", f"{title}; batch {args.batch_size}, median of {args.repeats} interleaved "
                                 f"rounds; speedup over r=0 ({base:.1f} images/s, same run); own % = the "
                                 "method's plans timed alone over the forward"))
    report.write(args.json)
    if args.plot and args.workdir:
        fig = report_lib.plot_accuracy_vs_throughput(results, f"{title}: methods at matched FLOPs")
        fig.savefig(args.plot, dpi=120)
        print("wrote", args.plot)


if __name__ == "__main__":
    main()
