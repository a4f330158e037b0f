"""benchmarks/accelerator.sh and its driver benchmarks/accelerator.py, at --smoke sizes on the CPU."""

import json
import os
import stat
import subprocess

from benchmarks import accelerator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_smoke_run_writes_every_table(tmp_path):
    # The train step part (2 compiles of the recipe's step, benchmarks.common.recipe_train_step, which
    # tests/train/test_state.py covers) is left out here to keep the suite fast.
    out = tmp_path / "acc.json"
    accelerator.main(["--smoke", "--parts", "attention,forward,headline", "--json", str(out),
                      "--md", str(tmp_path / "acc.md")])
    tables = json.loads(out.read_text())["tables"]
    assert list(tables) == ["device", "attention", "forward", "headline"]
    assert [row[:2] for row in tables["forward"]["rows"]] == [
        [label, str(r)] for label in ("ViT-B/16", "ViT-L/16") for r in (0, 8, 16)]
    assert [row[1] for row in tables["headline"]["rows"]] == ["0", "40"]
    # The size-bias attention: the library's kernel always runs; each jax.nn implementation either ran or says why not.
    attention = {row[0]: row[1] for row in tables["attention"]["rows"]}
    assert attention["tome_jax dot_product_attention (auto)"] == "ran"
    assert all(attention[f"jax.nn.dot_product_attention {impl}"] == "ran"
               or attention[f"jax.nn.dot_product_attention {impl}"].startswith("refused") for impl in ("cudnn", "xla"))
    markdown = (tmp_path / "acc.md").read_text()
    assert all(table_header in markdown for table_header in ("## Device", "## Forward, bf16", "## Headline"))


def test_shell_script_installs_the_pinned_plugin_runs_marked_tests_then_the_driver(tmp_path):
    # A stand-in interpreter records each call: the script's steps without installing or running anything.
    log, fake = tmp_path / "calls.txt", tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$JAX_DEFAULT_MATMUL_PRECISION $*" >> {log}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PYTHON=str(fake), PATH=f"{tmp_path}:/usr/bin:/bin")
    for smoke in ([], ["--smoke"]):
        log.write_text("")
        subprocess.run(["bash", "benchmarks/accelerator.sh", *smoke, "--out", str(tmp_path)], cwd=ROOT, env=env,
                       check=True, capture_output=True)
        calls = log.read_text().splitlines()
        assert calls[-2].startswith("highest -m pytest -q") and "-m accelerator tests" in calls[-2]
        assert ("--collect-only" in calls[-2]) == bool(smoke)
        assert calls[-1].split()[:1 + len(smoke)] == ["benchmarks/accelerator.py", *smoke]
        assert f"--json {tmp_path}/accelerator.json --md {tmp_path}/accelerator.md" in calls[-1]
    assert subprocess.run(["bash", "benchmarks/accelerator.sh", "--bogus"], cwd=ROOT, env=env,
                          capture_output=True).returncode == 2
