"""Start-up errors and --help of train.py / eval.py: one line naming the field and the fix, exit before JAX."""

import os
import subprocess
import sys

import pytest

from tome_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = "configs/vit_b_tome.py:runlocal"


def _run(script, *args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=60)


@pytest.mark.parametrize("script", ["train.py", "eval.py"])
def test_help_exits_0_and_lists_recipe_arguments(script):
    out = _run(script, "--config", "configs/deit_s_tome.py", "--help")
    assert out.returncode == 0, out.stderr
    assert "runlocal=False, r=-1" in out.stdout and "--workdir" in out.stdout


@pytest.mark.parametrize("args, expected", [
    (["--config.tome.rr=4"], "--config.tome.rr: no field 'rr' in config.tome. Did you mean: r?"),
    (["--config.batch_size=abc"], "--config.batch_size='abc': expected int"),
    (["--config", "configs/nope.py"], "recipe file 'configs/nope.py' not found"),
])
def test_config_mistakes_are_one_line_without_traceback(args, expected, tmp_path):
    out = _run("train.py", "--config", RECIPE, "--workdir", str(tmp_path / "w"), *args)
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and expected in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "w").exists()  # nothing touched


def test_bad_r_list_fails_before_loading():
    out = _run("eval.py", "--config", RECIPE, "--workdir", "/nonexistent/run", "--r", "0,two")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--r '0,two': 'two' is not an int r" in out.stderr


def test_checks_in_process():
    from configs import vit_b_tome

    config = vit_b_tome.get_config("runlocal")
    cli.check_overrides(config, [("tome.r", "4"), ("tome.prop_attn", None), ("optimizer.lr", "1")]
                        if "lr" in config.optimizer else [("tome.r", "4"), ("tome.prop_attn", None)])
    with pytest.raises(cli.ConfigError, match="Did you mean: image_size"):
        cli.check_overrides(config, [("data.imagesize", "32")])
    with pytest.raises(cli.ConfigError, match="expected bool"):
        cli.check_overrides(config, [("tome.prop_attn", "maybe")])
    with pytest.raises(cli.ConfigError, match="Recipe arguments: runlocal=False, r=-1"):
        cli.load_recipe("configs/vit_b_tome.py:runlocl")
    assert cli.parse_r_list("0, 8,16:-1") == [0, 8, (16, -1.0)]
    for bad in ("", "-1", "8:2", "a:b"):
        with pytest.raises(cli.ConfigError, match="--r"):
            cli.parse_r_list(bad)


def test_every_recipe_sets_only_tome_settings_and_no_placeholders():
    """config.tome holds apply_tome's keywords with values; a setting the model decides is left out."""
    import glob

    from tome_jax.reduction import SETTINGS

    recipes = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                     if os.path.basename(p) not in ("__init__.py", "common.py"))
    assert len(recipes) >= 7
    for path in recipes:
        for arg in (None, "runlocal"):
            config = cli.load_recipe(path if arg is None else f"{path}:{arg}")
            assert "r" in config.tome and set(config.tome) <= set(SETTINGS), (path, arg, config.tome)
            assert None not in config.tome.to_dict().values(), (path, arg, config.tome)
    finetune = cli.load_recipe(os.path.join(ROOT, "configs/finetune_tome.py"))
    with pytest.raises(cli.ConfigError, match="no field 'prop_attn' in config.tome. Fields: method, r"):
        cli.check_overrides(finetune, [("tome.prop_attn", "true")])  # the model's: .mae off, timm on


def test_readme_parse_r_examples():
    from tome_jax import merge

    assert merge.parse_r(4, (8, -1)) == [16, 10, 5, 0]
    assert merge.parse_r(4, (8, 0.5)) == [4, 6, 9, 12]
    assert merge.parse_r(4, 8) == [8, 8, 8, 8] and merge.parse_r(4, [8, 4]) == [8, 4, 0, 0]
