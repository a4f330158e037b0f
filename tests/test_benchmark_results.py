"""Stated numbers come from commands: benchmark JSON files, the tables rendered from them into the docs."""

import json

import pytest

from benchmarks import common, flops, render_results


def _results(tmp_path, rows):
    report = common.Report()
    printed = report.table("main", ["r", "img/s"], rows)
    report.note("main", "a note under the table")
    path = tmp_path / "results" / "bench.json"
    report.write(str(path))
    return path, printed


def test_a_marked_table_is_the_printed_table_and_stale_ones_are_found(tmp_path):
    path, printed = _results(tmp_path, [[0, "10.0"], [8, "17.5"]])
    data = json.loads(path.read_text())
    assert data["command"].startswith("python ") and data["date"].endswith("UTC")
    doc = tmp_path / "doc.md"
    marker = "<!-- table:results/bench.json#main -->\n"
    doc.write_text(f"# Speed\n\n{marker}hand-typed numbers\n<!-- /table -->\n\nprose\n")
    rendered = render_results.render_text(doc.read_text(), root=str(tmp_path))
    assert printed in rendered and "a note under the table" in rendered and data["command"] in rendered
    assert "hand-typed" not in rendered and rendered.endswith("<!-- /table -->\n\nprose\n")
    assert render_results.render_text(rendered, root=str(tmp_path)) == rendered  # idempotent
    # A new run changes the JSON: the block is stale until rendered again.
    _results(tmp_path, [[0, "10.0"], [8, "19.0"]])
    assert render_results.render_text(rendered, root=str(tmp_path)) != rendered
    # The command line: --check finds the stale file and changes nothing; without it, the file is rewritten.
    doc.write_text(rendered.replace("results/bench.json", str(path)))
    before = doc.read_text()
    assert render_results.main([str(doc), "--check"]) == 1 and doc.read_text() == before
    assert render_results.main([str(doc)]) == 0 and "19.0" in doc.read_text()
    assert render_results.main([str(doc), "--check"]) == 0


def test_missing_results_file_or_table_is_an_error(tmp_path):
    path, _ = _results(tmp_path, [[0, "1"]])
    with pytest.raises(FileNotFoundError, match="--json results/nope.json"):
        render_results.render_text("<!-- table:results/nope.json#main -->\n<!-- /table -->", root=str(tmp_path))
    with pytest.raises(KeyError, match="no table 'other'"):
        render_results.render_text("<!-- table:results/bench.json#other -->\n<!-- /table -->", root=str(tmp_path))


def test_the_docs_match_their_results_files():
    # Every marked table of benchmarks/RESULTS.md and docs/*.md is what its JSON file renders to
    # (edit the JSON by running the benchmark, then python benchmarks/render_results.py).
    assert render_results.main(["--check"]) == 0


def test_flops_script_counts_a_recipe(tmp_path, capsys):
    out = tmp_path / "flops.json"
    flops.main(["--config", "configs/audio_tome.py:runlocal", "--r", "16", "--json", str(out)])
    rows = json.loads(out.read_text())["tables"]["flops"]["rows"]
    assert [row[1:4] for row in rows] == [["0", "129", "129"], ["16", "129", "65"]]  # 129 -> 113 -> ... -> 65
    assert float(rows[1][5]) > 1.0
