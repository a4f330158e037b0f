"""Methods side by side at matched FLOPs (eval.py --method): choose_r per method, accuracy, speed and
the method's own share, one line per method in the report."""

import os

import pytest
from flax import nnx

import tome_jax
from tests.train.test_loop import tiny_config
from tome_jax.choose import method_set
from tome_jax.train import evaluate, loop, report

TARGET = 0.7


@pytest.fixture(scope="module")
def compared():
    config = tiny_config()  # 17 tokens, depth 2; random weights (accuracy is not the point here)
    model = loop.build_model(config, load_weights=False)
    results = evaluate.compare_methods(config, model, ["diffrate"], [TARGET], batch_size=64, repeats=1)
    return model, results


def test_each_method_gets_the_smallest_r_meeting_the_target(compared):
    model, results = compared
    assert list(results) == ["diffrate"]  # one method keeps this test fast; choose_r is the same for all
    base = tome_jax.count_flops(model, r=0)
    for method, rows in results.items():
        lead, row = rows  # r=0 (shared), then the chosen r
        assert lead["r"] == 0 and lead["overhead"] == 0.0 and lead["speedup"] == 1.0
        assert row["method"] == method and row["r"] > 0 and row["target_flops"] == TARGET
        with method_set(model, method):
            assert row["flops_ratio"] == tome_jax.count_flops(model, r=row["r"]) / base <= TARGET
            assert tome_jax.count_flops(model, r=row["r"] - 1) / base > TARGET
            assert row["tokens_out"] == model.token_counts(row["r"])[-1] < 17
        assert row["examples"] == 359 and 0 <= row["top1"] <= 100
        assert row["images_per_sec"] > 0 and 0 < row["overhead"] < 1
        assert row["baseline_images_per_sec"] == lead["images_per_sec"]
    assert model.method == "bipartite" and model.r == 2  # the recipe's setting, put back


def test_report_has_one_line_per_method_and_the_own_share(compared, tmp_path):
    _, results = compared
    other = [{**row, "method": "bipartite", "images_per_sec": 2 * row["images_per_sec"]} for row in results["diffrate"]]
    results = {"diffrate": results["diffrate"], "bipartite": other}  # a second line
    table = report.format_table(results)
    assert "own %" in table and "FLOPs x" in table and len(table.splitlines()) == 5
    assert "| bipartite | 0 |" in report.markdown_table(results)
    paths = report.write_report(results, str(tmp_path), "tiny")
    assert all(os.path.getsize(p) > 0 for p in paths)


def test_parse_methods():
    assert evaluate.parse_methods("tome,diffrate,tome") == ["bipartite", "diffrate"]
    every = evaluate.parse_methods("all")
    assert "none" not in every and {"bipartite", "diffrate", "prune", "random"} <= set(every)
    with pytest.raises(ValueError, match="registered: bipartite"):
        evaluate.parse_methods("bipartite,nonesuch")


def test_a_method_that_cannot_run_on_the_model_is_listed_with_its_reason(capsys):
    """DiffRate ranks by the class token's attention: on a model without a class token the seam
    (`ReductionMethod.not_applicable`) says why, and compare_methods reports it instead of running it."""
    config = tiny_config(**{"model.class_token": False, "model.global_pool": "avg"})
    shapes = lambda config: nnx.eval_shape(lambda: loop.build_model(config, load_weights=False))  # noqa: E731
    model = shapes(config)  # no weights needed: nothing is run
    assert model.token_counts(0)[0] == 16  # no class token
    reasons = evaluate.not_applicable(model, ["bipartite", "diffrate"])
    assert list(reasons) == ["diffrate"] and "no class token" in reasons["diffrate"]
    assert evaluate.compare_methods(config, model, ["diffrate"], [TARGET], batch_size=64, repeats=1) == {}
    assert "diffrate: not applicable to this model: diffrate ranks tokens by the class token" in capsys.readouterr().out
    assert model.method == "bipartite" and model.r == 2
    assert evaluate.not_applicable(shapes(tiny_config()), ["bipartite", "diffrate"]) == {}
