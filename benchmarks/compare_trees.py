"""Forward throughput of two source trees side by side: before / after a change to the models.

    git worktree add /tmp/before 3dbc8ef
    python benchmarks/compare_trees.py --before /tmp/before --model vit_base_patch16_224 --batch 16 --r 0,16

Each round runs one short process per tree (`--before`, then this tree, or the tree of `--after`),
each timing every r of `--r` with its own `tome_jax` (`create_model(name, r=...)` and
`CompiledForward(...).compiled()`, the calls every tree since the compiled-forward cache has) in
interleaved repeats; `--rounds` rounds alternate the trees, so load drifts hit both. Prints the
median images/s per tree and r, the ratio after / before, and whether the two trees lower the
forward to the same program (md5 of its StableHLO text: same program, same speed, whatever the
timing noise says); `--json` writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import Report, add_json_arg, machine_lines  # noqa: E402

# Runs inside each tree's own process: only calls every compared tree has.
_PROBE = r"""
import hashlib, json, sys
from tome_jax import runtime
runtime.configure()
import jax, tome_jax
from tome_jax.timing import blocking, time_interleaved
name, batch, rs, repeats = sys.argv[1], int(sys.argv[2]), [int(v) for v in sys.argv[3].split(",")], int(sys.argv[4])
model = tome_jax.create_model(name)
size = model.pretrained_cfg["input_size"]
images = jax.random.normal(jax.random.key(0), (batch, *size))
forward = tome_jax.CompiledForward(model)
candidates, programs = {}, {}
for r in rs:
    fn, params, rest = forward.compiled(r)
    candidates[r] = blocking(fn, params, rest, images)
    programs[str(r)] = hashlib.md5(fn.lower(params, rest, images).as_text().encode()).hexdigest()
stats = time_interleaved(candidates, repeats=repeats, warmup=1)
print(json.dumps({"images_per_sec": {str(r): batch / stats[r].median for r in rs}, "program_md5": programs}))
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="the tree to compare against (e.g. a git worktree)")
    p.add_argument("--after", default=ROOT, help="the changed tree (default: this one)")
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--r", default="0,16", help="comma-separated constant r values")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats inside each process")
    p.add_argument("--rounds", type=int, default=3, help="processes per tree, alternating")
    add_json_arg(p, "compare_trees")
    return p.parse_args(argv)


def run_tree(tree: str, args) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    out = subprocess.run([sys.executable, "-c", _PROBE, args.model, str(args.batch), args.r, str(args.repeats)],
                         cwd=tree, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    args = parse_args(argv)
    print(f"$ python {' '.join(sys.argv)}")
    print("\n".join(machine_lines()))
    runs = {"before": [], "after": []}
    for i in range(args.rounds):
        for side in ("before", "after"):
            runs[side].append(run_tree(getattr(args, side), args))
            print(f"round {i + 1}/{args.rounds} {side}: " + ", ".join(
                f"r={r} {v:.2f} img/s" for r, v in runs[side][-1]["images_per_sec"].items()), flush=True)
    report, rows = Report(), []
    for r in args.r.split(","):
        before = statistics.median(run["images_per_sec"][r] for run in runs["before"])
        after = statistics.median(run["images_per_sec"][r] for run in runs["after"])
        same = runs["before"][0]["program_md5"][r] == runs["after"][0]["program_md5"][r]
        rows.append([r, f"{before:.2f}", f"{after:.2f}", f"{after / before:.3f}", "yes" if same else "no"])
    print()
    print(report.table("forward", ["r", "before images/s (median)", "after images/s (median)", "after / before",
                                   "same program"], rows))
    report.write(args.json)


if __name__ == "__main__":
    main()
