"""The sweep report: one CSV/Markdown row per model and r, and a plot that keeps small test sets honest."""

import csv
import json
import os

import pytest

from tome_jax.train import report


def rows(top1s, examples=359, scale=1.0):
    out = []
    for i, (r, top1) in enumerate(zip([0, 4, (8, -1.0)], top1s)):
        out.append({"r": r, "top1": top1, "top5": 99.0, "examples": examples, "images_per_sec": scale * (100 + 50 * i),
                    "speedup": 1 + 0.5 * i, "gflops": 1.0 - 0.2 * i, "tokens_out": 65 - 16 * i})
    return out


def test_one_row_per_model_and_r(tmp_path):
    results = {"plain": rows([97.21, 96.94, 96.10]), "tome-trained": rows([97.5, 97.5, 97.2], scale=1.1)}
    paths = report.write_report(results, str(tmp_path), "tiny")
    assert [p.rsplit("/", 1)[1] for p in paths] == ["eval_results.json", "eval_results.csv", "eval_results.md",
                                                    "accuracy_vs_throughput.png"]
    with open(paths[1]) as f:
        table = list(csv.DictReader(f))
    assert [(row["model"], row["r"]) for row in table] == [
        (m, r) for m in ("plain", "tome-trained") for r in ("0", "4", "8:-1")]
    assert list(table[0])[:5] == ["model", "r", "top1", "top5", "examples"]
    assert len(json.load(open(paths[0]))) == 6
    md = open(paths[2]).read().splitlines()
    assert md[2].startswith("| model | r |") and len(md) == 2 + 2 + 6 and "| tome-trained | 8:-1 |" in md[-1]
    text = report.format_table(results).splitlines()
    assert len(text) == 7 and text[1].startswith("plain ")


def test_single_sweep_keeps_the_plain_table(tmp_path):
    paths = report.write_report(rows([97.0, 96.0, 95.0]), str(tmp_path), "one")
    assert all(os.path.getsize(p) > 0 for p in paths)
    assert report.format_table(rows([97.0, 96.0, 95.0])).splitlines()[0].split()[0] == "r"


@pytest.mark.parametrize("examples", [359, 50000])
def test_plot_axis_spans_many_examples_and_marks_the_baseline(examples):
    one = 100 / examples
    results = {"a": rows([97.0, 97.0 - one, 97.0 - one], examples)}  # a one-example difference
    fig = report.plot_accuracy_vs_throughput(results, "t")
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert hi - lo >= max(2.0, report.MIN_SPAN_EXAMPLES * one)  # one example is a small step, not a cliff
    assert f"{examples} test examples" in ax.get_ylabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "r=0 (baseline)" in legend and any("± 1 example" in t for t in legend)
    assert sorted(t.get_text() for t in ax.texts) == ["r=0", "r=4", "r=8:-1"]


def test_labels():
    assert report.model_label("runs/digits/") == "digits"
    assert report.model_label(weights="/w/deit_small.safetensors") == "deit_small"
    assert report.r_label([8, 8, 4]) == "8/8/4" and report.r_label((16, -1)) == "16:-1"


def test_a_sweep_without_r0_says_what_its_speedups_are_over():
    swept = [dict(row, r=row["r"], baseline_images_per_sec=80.0) for row in rows([97.0, 96.0, 95.0])[1:]]
    text = report.format_table(swept).splitlines()
    assert len(text) == 4 and text[-1] == "speedup: over r=0 (80.0 images/s), timed as the baseline though not in --r"
    assert report.markdown_table(swept).rstrip().endswith("timed as the baseline though not in --r.")
    with_r0 = [dict(row, baseline_images_per_sec=100.0) for row in rows([97.0, 96.0, 95.0])]
    assert "timed as the baseline" not in report.format_table(with_r0)  # r=0 is a row: nothing to say
