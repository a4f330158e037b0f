"""The r sweep's report: a text table, CSV / Markdown / JSON files and the accuracy-vs-throughput plot.

`results` is one sweep (a list of rows, one per r, as `evaluate.sweep` returns them) or several,
{model label: rows}: every file then holds one row per model and r, and the plot one line per model.
A row has r, top1, top5 (%), examples (test-set size), images_per_sec, speedup (over r=0),
gflops, tokens_out and baseline_images_per_sec (r=0's, timed in the same sweep even when r=0 is not
one of its rows; the tables then say so under them). Rows of a method comparison
(`evaluate.compare_methods`) also carry flops_ratio and overhead (the method's own share of the
forward), shown as the "FLOPs x" and "own %" columns.
"""

from __future__ import annotations

import csv
import json
import os
import textwrap
from typing import Any

COLUMNS = ("model", "r", "top1", "top5", "examples", "images_per_sec", "speedup", "gflops", "tokens_out")
MIN_SPAN_EXAMPLES = 20  # the y-axis spans at least this many test examples (and at least 2 points)


def r_label(r: Any) -> str:
    """The r of a row as eval.py's --r spells it: 8, 16:-1, or a per-layer list 8/8/4."""
    if isinstance(r, tuple) and len(r) == 2:
        return f"{r[0]}:{r[1]:g}"
    if isinstance(r, (tuple, list)):
        return "/".join(map(str, r))
    return str(r)


def by_model(results, label: str = "model") -> dict[str, list[dict]]:
    """A list of rows (one model) or {label: rows} -> {label: rows}."""
    return dict(results) if isinstance(results, dict) else {label: list(results)}


def model_label(workdir: str | None = None, weights: str | None = None) -> str:
    """A short name for a model from its run directory or weights file."""
    path = os.path.normpath(workdir or weights or "model")
    name = os.path.basename(path)
    return name if workdir else os.path.splitext(name)[0]


def _flat_rows(results) -> list[dict]:
    rows = []
    for label, model_rows in by_model(results).items():
        for row in model_rows:
            rows.append({"model": label, **row, "r": r_label(row["r"])})
    return rows


METRICS = ("top1", "top5", "mAP", "mIoU", "pixel_accuracy", "loss")  # the task metrics a sweep row may carry, in table order


def metric_keys(results) -> list[str]:
    """The task metrics present in the rows (top1/top5 for classification, mAP, loss ...)."""
    rows = [row for rows in by_model(results).values() for row in rows]
    return [k for k in METRICS if rows and all(k in row for row in rows)]


def headline(results) -> str:
    """The metric the plot shows: top-1 where there is one, else mAP, else mIoU, else the loss."""
    keys = metric_keys(results)
    return keys[0] if keys else "top1"


def baseline_note(results) -> str | None:
    """A line saying what the speedups are over when r=0 is not a row of a sweep, else None."""
    models = by_model(results)
    missing = {label: rows[0]["baseline_images_per_sec"] for label, rows in models.items()
               if rows and "baseline_images_per_sec" in rows[0] and "0" not in {r_label(row["r"]) for row in rows}}
    if not missing:
        return None
    values = "; ".join(f"{label} {ips:.1f}" if len(models) > 1 else f"{ips:.1f}" for label, ips in missing.items())
    return f"speedup: over r=0 ({values} images/s), timed as the baseline though not in --r"


def _method_columns(results) -> bool:
    """Whether the rows are a method comparison's (flops_ratio and overhead in every row)."""
    rows = [row for rows in by_model(results).values() for row in rows]
    return bool(rows) and all("overhead" in row and "flops_ratio" in row for row in rows)


def format_table(results) -> str:
    """Plain-text table; a model column when there are several models. GFLOPs with 4 significant
    digits, so small models' schedules stay distinguishable."""
    models = by_model(results)
    keys = metric_keys(results)
    several = len(models) > 1
    width = max([len(m) for m in models] + [5]) if several else 0
    head = f"{'model':<{width}} " if several else ""
    lines = [head + f"{'r':>10} " + "".join(f"{k + (' %' if k != 'loss' else ''):>8} " for k in keys)
             + f"{'images/s':>10} {'speedup':>8} {'GFLOPs':>9} {'tokens':>7}"
             + (f" {'FLOPs x':>8} {'own %':>6}" if _method_columns(results) else "")]
    for label, rows in models.items():
        for row in rows:
            lead = f"{label:<{width}} " if several else ""
            lines.append(lead + f"{r_label(row['r']):>10} " + "".join(f"{row[k]:8.2f} " for k in keys)
                         + f"{row['images_per_sec']:10.1f} {row['speedup']:7.2f}x {row['gflops']:9.4g} "
                         f"{row['tokens_out']:7d}"
                         + (f" {row['flops_ratio']:8.3f} {100 * row['overhead']:6.2f}"
                            if _method_columns(results) else ""))
    note = baseline_note(results)
    return "\n".join(lines + ([note] if note else []))


def markdown_table(results) -> str:
    """GitHub Markdown table, one row per model and r."""
    keys = metric_keys(results)
    methods = _method_columns(results)
    lines = ["| model | r | " + " | ".join(k + (" %" if k != "loss" else "") for k in keys)
             + " | examples | images/s | speedup | GFLOPs | tokens |" + (" FLOPs x | own % |" if methods else ""),
             "|---|---:|" + "---:|" * len(keys) + "---:|---:|---:|---:|---:|" + ("---:|---:|" if methods else "")]
    for row in _flat_rows(results):
        lines.append(f"| {row['model']} | {row['r']} | " + " | ".join(f"{row[k]:.2f}" for k in keys)
                     + f" | {row['examples']} | {row['images_per_sec']:.1f} | {row['speedup']:.2f}x | "
                     f"{row['gflops']:.4g} | {row['tokens_out']} |"
                     + (f" {row['flops_ratio']:.3f} | {100 * row['overhead']:.2f} |" if methods else ""))
    note = baseline_note(results)
    return "\n".join(lines + ([f"\n{note}."] if note else [])) + "\n"


_AXIS = {"top1": "top-1 accuracy (%)", "mAP": "mAP (%)", "loss": "eval loss"}


def plot_accuracy_vs_throughput(results, title: str = ""):
    """The paper's figure: top-1 against images/s, one line per model, each marker labelled with r,
    r=0 starred, a band of ±1 test example around each r=0 accuracy, and a y-axis spanning at least
    MIN_SPAN_EXAMPLES examples, so a one-image difference on a small test set is not a cliff.
    Returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = by_model(results, title or "model")
    metric = headline(results)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    sizes, tops, drawn = set(), [], set()
    starts = {(row["images_per_sec"], row[metric]) for rows in models.values() for row in rows if r_label(row["r"]) == "0"}
    shared = len(starts) == 1  # a method comparison: every line starts at the same r=0, drawn once
    for i, (label, rows) in enumerate(models.items()):
        color = f"C{i}"
        xs = [row["images_per_sec"] for row in rows]
        ys = [row[metric] for row in rows]
        tops += ys
        ax.plot(xs, ys, "o-", color=color, label=label)
        for row in rows:
            ax.annotate(f"r={r_label(row['r'])}", (row["images_per_sec"], row[metric]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8, color=color)
        base = next((row for row in rows if r_label(row["r"]) == "0"), None)
        if base is not None and (base["images_per_sec"], base[metric]) in drawn:
            base = None
        if base is not None:
            drawn.add((base["images_per_sec"], base[metric]))
            one = 100.0 / base["examples"]
            sizes.add(base["examples"])
            ax.plot([base["images_per_sec"]], [base[metric]], "*", color=color, markersize=14,
                    label=f"{label}: r=0 (baseline)" if len(models) > 1 and not shared else "r=0 (baseline)")
            ax.axhspan(base[metric] - one, base[metric] + one, color=color, alpha=0.12, lw=0,
                       label=f"r=0 ± 1 example ({one:.2g} points)")
        sizes.update(row["examples"] for row in rows)
    smallest = min(sizes) if sizes else None
    span = max(2.0, MIN_SPAN_EXAMPLES * 100.0 / smallest) if smallest else 2.0
    lo, hi = min(tops), max(tops)
    if hi - lo < span:
        mid = (lo + hi) / 2
        lo, hi = mid - span / 2, mid + span / 2
        if hi > 100.5:
            lo, hi = lo - (hi - 100.5), 100.5
    pad = 0.08 * (hi - lo)
    ax.set_ylim(lo - pad, hi + pad)
    ax.margins(x=0.12)  # room for the r labels
    n_text = ", ".join(map(str, sorted(sizes))) if sizes else "?"
    ax.set_ylabel(f"{_AXIS.get(metric, metric)}, {n_text} test examples")
    ax.set_xlabel("images / s")
    ax.set_title(textwrap.fill(title, 72), fontsize=9)  # a model with its overrides is a long name
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def write_report(results, out_dir: str, title: str) -> list[str]:
    """eval_results.json, eval_results.csv, eval_results.md and accuracy_vs_throughput.png in out_dir
    (a local path or a gs://-style URL, through the workdir path abstraction); returns their paths."""
    import io

    import matplotlib.pyplot as plt

    from tome_jax.train import workdir as workdir_lib

    out = workdir_lib.resolve(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = ("eval_results.json", "eval_results.csv", "eval_results.md", "accuracy_vs_throughput.png")
    paths = [out / n for n in names]
    rows = _flat_rows(by_model(results, title))
    workdir_lib.write_text(paths[0], json.dumps(rows, indent=2))
    table = io.StringIO()
    fields = list(COLUMNS) + [k for k in rows[0] if k not in COLUMNS]
    writer = csv.DictWriter(table, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    workdir_lib.write_text(paths[1], table.getvalue())
    workdir_lib.write_text(paths[2], f"{title}\n\n" + markdown_table(by_model(results, title)))
    fig = plot_accuracy_vs_throughput(results, title)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    paths[3].write_bytes(png.getvalue())
    return [str(p) for p in paths]
