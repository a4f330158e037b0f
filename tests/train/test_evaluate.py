"""The r sweep behind eval.py: accuracy, throughput, FLOPs, and the written report."""

import json
import os

import pytest

from tests.train.test_loop import tiny_config
from tome_jax.train import evaluate, report


def test_sweep_over_r_from_a_checkpoint(finished_tiny_run, tmp_path):
    config, run = tiny_config(), finished_tiny_run[0]
    model, origin = evaluate.load_model(config, str(run), None)
    assert "step 8" in origin
    results = evaluate.sweep(config, model, [0, 2, (2, -1)], batch_size=64, repeats=2)
    assert [row["r"] for row in results] == [0, 2, (2, -1)]
    assert results[0]["tokens_out"] == 17 and results[1]["tokens_out"] == 13
    assert results[0]["gflops"] > results[1]["gflops"]
    assert all(row["images_per_sec"] > 0 and row["examples"] == 359 for row in results)
    # r=2, the run's own schedule, reproduces the training run's final eval.
    summary = json.load(open(run / "summary.json"))
    assert results[1]["top1"] == pytest.approx(summary["eval_top1"])
    paths = report.write_report(results, str(tmp_path / "report"), "tiny")
    assert all(os.path.getsize(p) > 0 for p in paths)
    assert len(report.format_table(results).splitlines()) == 4
    assert all(row["baseline_images_per_sec"] == results[0]["images_per_sec"] for row in results)
    # Without r=0 in the list, r=0 is still timed and is what the speedups are over (it used to be
    # the first r given: r=2 here, whose speedup then read exactly 1.00x).
    without_r0 = evaluate.sweep(config, model, [2], batch_size=64, repeats=2)
    assert [row["r"] for row in without_r0] == [2]
    assert without_r0[0]["speedup"] == without_r0[0]["images_per_sec"] / without_r0[0]["baseline_images_per_sec"]
    assert without_r0[0]["speedup"] != 1.0
    assert "timed as the baseline though not in --r" in report.format_table(without_r0)


def test_parse_r_list_and_missing_checkpoint(tmp_path):
    assert evaluate.parse_r_list("0,8,16:-1") == [0, 8, (16, -1.0)]
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        evaluate.load_model(tiny_config(), str(tmp_path), None)
