"""The README's main job, measured: per seed, test top-1 of the ToMe-trained model at its own r and
at r=0, the eval sweep's speedup at that r, training time, and the sweep's compile time with a cold
and then a warm compilation cache.

    python benchmarks/main_job.py --seeds 0,1,2,3,4 --r recipe   # the README's numbers
    python benchmarks/main_job.py                                # seeds 0,1,2, also trained at r=0

Every run is the README's command in a subprocess, `train.py --config configs/vit_b_tome.py:runlocal`
(`:runlocal,r=0` for the r=0 column) with `--config.seed=S`, in `--out/{tome,r0}_seed{S}`; a finished run
is reported again without training (`--fresh` retrains). "train s" is the loop's own wall time
(summary.json: compile + steps + evals), "command s" the whole process, "CPU s" its user + system
time, which other processes' load inflates far less than wall time: on a busy machine, compare
recipes by CPU s measured under the same load (the check below takes CPU s / 2 cores). Then the README's eval
command on every ToMe run, in a new process each, sharing one compilation cache that starts empty:
the first seed's sweep pays the compiles, every later one loads them (eval.py reports the seconds
JAX spent making programs). From each sweep: top-1 at r=0 and at the recipe's r, and images/s at
the recipe's r over r=0 (timed interleaved in the same run). Prints tables and writes main_job.json
to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import machine_lines, table  # noqa: E402

RECIPE = "configs/vit_b_tome.py:runlocal"
README_EVAL_R = "0,8,12"  # README command 1's sweep: r=0 is the baseline, 12 the recipe's r
README_EVAL_BATCH = 359  # the whole digits test set in one batch: the timing is compute, not dispatch
# Issue 22: mean over seeds, no seed below, ToMe on; the recipe's r at least this fast as r=0 while
# losing at most this much top-1; training within this on 2 quiet cores (so the command takes < 3 min).
TARGET_MEAN_TOP1, TARGET_MIN_TOP1 = 97.5, 97.0
TARGET_SPEEDUP, MAX_TOP1_DROP = 1.8, 1.0
TARGET_TRAIN_SECONDS = 100.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--r", default="recipe,0", help="comma-separated: 'recipe' (the recipe's ToMe r) and/or ints")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "main_job"), help="workdirs and main_job.json")
    p.add_argument("--fresh", action="store_true", help="delete and retrain runs that exist")
    p.add_argument("--eval_r", default=README_EVAL_R, help="the eval sweep's --r (the README's)")
    p.add_argument("--eval_batch_size", type=int, default=README_EVAL_BATCH, help="the eval sweep's --batch_size")
    p.add_argument("--skip_eval", action="store_true", help="only the training runs")
    return p.parse_args(argv)


def run(command: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Runs a command from the repository root; (wall seconds, CPU seconds (user + system), stdout+stderr).
    Raises if it fails."""
    def children_cpu():
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    t0, c0 = time.perf_counter(), children_cpu()
    proc = subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    seconds, cpu_seconds = time.perf_counter() - t0, children_cpu() - c0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return seconds, cpu_seconds, proc.stdout + proc.stderr


def train(r: str, seed: int, out: str, fresh: bool) -> dict:
    workdir = os.path.join(out, f"{'tome' if r == 'recipe' else 'r' + r}_seed{seed}")
    if fresh and os.path.isdir(workdir):
        shutil.rmtree(workdir)
    recipe = RECIPE if r == "recipe" else f"{RECIPE},r={r}"
    seconds, cpu_seconds, _ = run([sys.executable, "train.py", "--config", recipe, "--workdir", workdir,
                                   f"--config.seed={seed}"])
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    return {"r": summary["tome_r"], "seed": seed, "top1": summary["eval_top1"], "steps": summary["steps"],
            "train_s": summary["wall_time_sec"], "command_s": seconds, "cpu_s": cpu_seconds, "workdir": workdir}


def eval_sweep(run_: dict, r_values: str, batch_size: int, cache: str) -> dict:
    """The README's eval command on one training run; its sweep read back from eval_results.json:
    top-1 at r=0 and at the run's own r, the speedup of the run's r over r=0, compile seconds."""
    out = os.path.join(run_["workdir"], "eval")
    seconds, _, text = run([sys.executable, "eval.py", "--config", RECIPE, "--workdir", run_["workdir"],
                            "--r", r_values, "--batch_size", str(batch_size), "--out", out],
                           env={"TOME_JAX_CACHE_DIR": cache})
    with open(os.path.join(out, "eval_results.json")) as f:
        rows = {row["r"]: row for row in json.load(f)}
    if not {"0", str(run_["r"])} <= rows.keys():
        raise ValueError(f"--eval_r must include 0 and the recipe's r ({run_['r']}), got {r_values}.")
    trained, base = rows[str(run_["r"])], rows["0"]
    found = re.search(r"compile: ([0-9.]+) s making (\d+) XLA programs \((\d+) loaded", text)
    return {"top1_r0": base["top1"], "top1_trained_r": trained["top1"], "speedup": trained["speedup"],
            "images_per_sec_r0": base["images_per_sec"], "compile_s": float(found.group(1)),
            "programs": int(found.group(2)), "from_cache": int(found.group(3)), "command_s": seconds}


def main(argv=None):
    args = parse_args(argv)
    print("\n".join(machine_lines()), flush=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = [train(r, seed, args.out, args.fresh) for r in args.r.split(",") for seed in seeds]
    print()
    print(table(["r", "seed", "test top-1 %", "steps", "train s", "command s", "CPU s"],
                [[x["r"], x["seed"], f"{x['top1']:.2f}", x["steps"], f"{x['train_s']:.0f}", f"{x['command_s']:.0f}",
                  f"{x['cpu_s']:.0f}"] for x in runs]))
    for r in dict.fromkeys(x["r"] for x in runs):
        top1 = [x["top1"] for x in runs if x["r"] == r]
        train_s = [x["train_s"] for x in runs if x["r"] == r]
        cpu_s = [x["cpu_s"] for x in runs if x["r"] == r]
        print(f"r={r}: top-1 {min(top1):.2f}-{max(top1):.2f}% (mean {statistics.mean(top1):.2f}) over seeds "
              f"{seeds}; training {min(train_s):.0f}-{max(train_s):.0f} s, command CPU {min(cpu_s):.0f}-"
              f"{max(cpu_s):.0f} s")
    tome = [x for x in runs if x["r"] != 0]
    if tome:
        top1 = [x["top1"] for x in tome]
        ok_top1 = statistics.mean(top1) >= TARGET_MEAN_TOP1 and min(top1) >= TARGET_MIN_TOP1
        ok_time = max(x["cpu_s"] for x in tome) / 2 <= TARGET_TRAIN_SECONDS
        print(f"ToMe on: mean >= {TARGET_MEAN_TOP1}% and every seed >= {TARGET_MIN_TOP1}%: "
              f"{'yes' if ok_top1 else 'NO'}; every command's CPU s / 2 cores <= {TARGET_TRAIN_SECONDS:.0f} s: "
              f"{'yes' if ok_time else 'NO'}")
    if not args.skip_eval and tome:
        cache = os.path.join(args.out, "compilation_cache")
        shutil.rmtree(cache, ignore_errors=True)  # the first sweep compiles, the later ones load
        for x in tome:
            x["sweep"] = eval_sweep(x, args.eval_r, args.eval_batch_size, cache)
        print()
        print(f"eval.py --r {args.eval_r} --batch_size {args.eval_batch_size} on each run:")
        r = tome[0]["r"]
        print(table(["seed", f"top-1 % at r={r}", "top-1 % at r=0", "train s", "command CPU s", f"speedup at r={r}",
                     "r=0 images/s", "compile s", "programs (from cache)"],
                    [[x["seed"], f"{x['sweep']['top1_trained_r']:.2f}", f"{x['sweep']['top1_r0']:.2f}",
                      f"{x['train_s']:.0f}", f"{x['cpu_s']:.0f}", f"{x['sweep']['speedup']:.2f}x",
                      f"{x['sweep']['images_per_sec_r0']:.0f}", f"{x['sweep']['compile_s']:.1f}",
                      f"{x['sweep']['programs']} ({x['sweep']['from_cache']})"] for x in tome]))
        ok_sweep = all(x["sweep"]["speedup"] >= TARGET_SPEEDUP
                       and x["sweep"]["top1_r0"] - x["sweep"]["top1_trained_r"] <= MAX_TOP1_DROP for x in tome)
        print(f"every seed's sweep: r={r} >= {TARGET_SPEEDUP}x the r=0 images/s within "
              f"{MAX_TOP1_DROP} point of r=0's top-1: {'yes' if ok_sweep else 'NO'}")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "main_job.json")
    with open(path, "w") as f:
        json.dump({"machine": machine_lines(), "eval_r": args.eval_r, "eval_batch_size": args.eval_batch_size,
                   "runs": runs}, f, indent=2)
    print("wrote", path)


if __name__ == "__main__":
    main()
