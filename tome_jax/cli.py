"""Start-up checks for the command-line entry points (train.py, eval.py): friendly errors and --help.

`preflight(argv, doc, flag_docs)` runs before absl parses the flags, so every config mistake is
reported in one or two lines naming the field and the fix, before any data or checkpoint is
touched (and without importing JAX):

  error: --config.tome.rr: no field 'rr' in config.tome. Did you mean: r? (fields: method, prop_attn, r)
  error: --config.batch_size='abc': expected int (the recipe's value is 128).
  error: --config: recipe file 'configs/nope.py' not found (run from the repository root; recipes: ...).
  error: --r '0,two': 'two' is not an int r or 'r:inflect' (e.g. --r 0,8,16:-1).

`--verbose` re-raises instead, with the traceback. `--help` prints the command's help and the
recipe arguments (`:runlocal,r=8`) of `--config` when given, and exits 0.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
import sys
from typing import Any, Sequence

# Value types an override may be checked against (others, e.g. tuples, are left to ml_collections).
_SCALARS = (bool, int, float, str)


class ConfigError(ValueError):
    """A mistake in the command line: the message names the flag and the fix."""


def closest(name: str, options: Sequence[str], n: int = 3) -> str:
    """' Did you mean: a, b?' for the closest names (difflib), or ''."""
    matches = difflib.get_close_matches(name, list(options), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""


def parse_r_list(text: str) -> list:
    """"0,8,16" -> [0, 8, 16]; "16:-1" -> the schedule (16, -1.0); ConfigError on anything else."""
    values = []
    for item in filter(None, (v.strip() for v in text.split(","))):
        r, colon, inflect = item.partition(":")
        try:
            value = (int(r), float(inflect)) if colon else int(r)
        except ValueError:
            raise ConfigError(f"--r {text!r}: {item!r} is not an int r or 'r:inflect' "
                              "(e.g. --r 0,8,16:-1).") from None
        if (value[0] if colon else value) < 0 or (colon and not -1.0 <= value[1] <= 1.0):
            raise ConfigError(f"--r {text!r}: {item!r} needs r >= 0 and inflect in [-1, 1] (e.g. 16:-1).")
        values.append(value)
    if not values:
        raise ConfigError(f"--r {text!r}: give at least one r, e.g. --r 0,8,16.")
    return values


def _flag_values(argv: Sequence[str], name: str) -> list[str]:
    """The values of --name=V / --name V in argv (absl's two spellings)."""
    values = []
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            values.append(arg.split("=", 1)[1])
        elif arg == f"--{name}" and i + 1 < len(argv):
            values.append(argv[i + 1])
    return values


def _overrides(argv: Sequence[str]) -> list[tuple[str, str | None]]:
    """[(dotted path, value or None for a bare bool flag)] of --config.a.b=V / --config.a.b V."""
    out = []
    for i, arg in enumerate(argv):
        if not arg.startswith("--config."):
            continue
        key, eq, value = arg[len("--config."):].partition("=")
        if not eq:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            value = nxt if nxt is not None and not nxt.startswith("--") else None
        out.append((key, value))
    return out


def recipe_path(spec: str) -> tuple[str, str | None]:
    """'configs/x.py:runlocal,r=0' -> ('configs/x.py', 'runlocal,r=0')."""
    path, colon, arg = spec.partition(":")
    return path, (arg if colon else None)


def load_recipe(spec: str):
    """The ConfigDict of --config 'file.py[:arg]'; ConfigError for a missing file or a bad argument."""
    path, arg = recipe_path(spec)
    if not os.path.isfile(path):
        folder = os.path.dirname(path) or "."
        known = sorted(f for f in os.listdir(folder) if f.endswith(".py") and f != "__init__.py") \
            if os.path.isdir(folder) else []
        hint = closest(os.path.basename(path), known) or (f" Recipes in {folder}/: {', '.join(known)}." if known
                                                           else " Run from the repository root.")
        raise ConfigError(f"--config: recipe file {path!r} not found.{hint}")
    module_spec = importlib.util.spec_from_file_location("_tome_recipe", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    try:
        return module.get_config(arg) if arg is not None else module.get_config()
    except ValueError as e:  # parse_arg: unknown or malformed recipe argument
        raise ConfigError(f"--config {spec}: {e} Recipe arguments: {recipe_arguments(path) or 'none'}.") from e


def recipe_arguments(path: str) -> str:
    """'runlocal=False, r=-1': the options the recipe passes to configs.common.parse_arg (read, not run)."""
    try:
        tree = ast.parse(open(path).read())
    except (OSError, SyntaxError):
        return ""
    options = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "parse_arg":
            for kw in node.keywords:
                if kw.arg:
                    options.setdefault(kw.arg, ast.unparse(kw.value))
    return ", ".join(f"{k}={v}" for k, v in options.items())


def _convert(value: str | None, like: Any) -> Any:
    """Parse an override's text as the type of the recipe's value (raises ValueError)."""
    if isinstance(like, bool):
        if value is None:
            return True
        if value.strip().lower() not in ("true", "t", "1", "false", "f", "0"):  # absl's spellings
            raise ValueError
        return value.strip().lower() in ("true", "t", "1")
    if value is None:
        raise ValueError
    return type(like)(value) if not isinstance(like, str) else value


def check_overrides(config, overrides: Sequence[tuple[str, str | None]]) -> None:
    """Every --config.a.b names a field of the recipe and its value parses as that field's type."""
    for key, value in overrides:
        node, path = config, "config"
        for part in key.split("."):
            fields = list(node.keys()) if hasattr(node, "keys") else []
            if not hasattr(node, "keys") or part not in fields:
                if not hasattr(node, "keys"):
                    raise ConfigError(f"--config.{key}: {path} is a {type(node).__name__}, not a group of fields.")
                hint = closest(part, fields) or f" Fields: {', '.join(sorted(fields))}."
                raise ConfigError(f"--config.{key}: no field {part!r} in {path}.{hint}")
            node, path = node[part], f"{path}.{part}"
        if isinstance(node, _SCALARS):
            kind = type(node).__name__
            if isinstance(node, float):  # ml_collections accepts an int for a float field
                kind = "float"
            try:
                _convert(value, node)
            except ValueError:
                shown = "(no value)" if value is None else repr(value)
                raise ConfigError(f"--config.{key}={shown}: expected {kind} (the recipe's value is {node!r}); "
                                  f"e.g. --config.{key}={node!r}.") from None


def _help(argv: Sequence[str], doc: str, flags_help: str) -> str:
    lines = [doc.strip(), "", "Flags:", flags_help.rstrip()]
    specs = _flag_values(argv, "config")
    if specs:
        path, _ = recipe_path(specs[-1])
        lines += ["", f"Recipe {path}:"]
        if os.path.isfile(path):
            args = recipe_arguments(path)
            lines.append(f"  arguments (--config {path}:name[,key=value]): {args or 'none'}")
            source_doc = ast.get_docstring(ast.parse(open(path).read())) or ""
            lines += ["  " + line for line in source_doc.strip().splitlines()]
        else:
            lines.append(f"  not found: {path}")
    else:
        lines += ["", "Give --config configs/<recipe>.py --help to list the recipe's arguments "
                  "(e.g. :runlocal,r=8)."]
    return "\n".join(lines) + "\n"


def preflight(argv: Sequence[str], doc: str, flags_help: str = "", check_r: bool = False) -> None:
    """Check argv before absl runs: --help (exit 0) and config / --r mistakes (one line, exit 2).

    argv: sys.argv; doc: the command's docstring; flags_help: its flags' help text;
    check_r: also validate eval.py's --r list.
    """
    args = list(argv[1:])
    if any(a in ("--help", "-h", "--helpfull", "-?", "--helpshort") for a in args):
        sys.stdout.write(_help(args, doc, flags_help))
        raise SystemExit(0)
    verbose = any(a in ("--verbose", "--verbose=true", "--verbose=1") or a.startswith(("--verbosity=", "-v=")) and
                  not a.endswith(("=0", "=-1")) for a in args)
    try:
        specs = _flag_values(args, "config")
        if not specs:
            raise ConfigError("--config is required: e.g. --config configs/vit_b_tome.py:runlocal "
                              "(see --help).")
        config = load_recipe(specs[-1])
        check_overrides(config, _overrides(args))
        if check_r:
            for text in _flag_values(args, "r"):
                parse_r_list(text)
    except ConfigError as e:
        if verbose:
            raise
        sys.stderr.write(f"error: {e}\n")
        raise SystemExit(2)
