"""How long an r sweep takes to compile, cold and warm, and how many programs it makes.

    python benchmarks/compile_time.py --json benchmarks/results/compile_time.json
    python benchmarks/compile_time.py --models vit_base_patch16_224:0,4,8,12,16 --batch 2

For each model, in one process: the forward of every r in the sweep through one
`tome_jax.CompiledForward` (what eval.py, choose_r and the benchmarks use), run once on `--batch`
random images. Three passes per model:
- cold: an empty persistent compilation cache (a fresh temporary folder): XLA compiles every program;
- warm (disk): a new `CompiledForward` (a new process would do the same), the cache now full:
  JAX traces and lowers again, XLA's executables are loaded from disk;
- warm (memory): the same `CompiledForward` again: nothing is traced or compiled.
Programs are counted with `tome_jax.timing.CompileTimer` (JAX's own compile events), so the count
is exact and repeatable; seconds depend on the machine and its load. The count includes the small
programs of building the model's parameters (eager initializers) in the cold pass.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

import tome_jax  # noqa: E402
from tome_jax import runtime  # noqa: E402
from tome_jax.timing import CompileTimer  # noqa: E402

from benchmarks.common import Report, add_json_arg  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="vit_base_patch16_224:0,4,8,12,16;vit_large_patch16_224:0,2,4,6,8",
                   help="'name:r,r,...' separated by ';'")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    add_json_arg(p, "compile_time")
    return p.parse_args(argv)


def sweep(forward, rs, images) -> None:
    for r in rs:
        fn, params, rest = forward.compiled(r=r)
        jax.block_until_ready(fn(params, rest, images))


def measured(timer: CompileTimer, run) -> tuple[float, float, int, int]:
    """(wall s, compile s, programs, from cache) of run()."""
    before = (timer.seconds, timer.programs, timer.cache_hits)
    t0 = time.perf_counter()
    run()
    return (time.perf_counter() - t0, timer.seconds - before[0], timer.programs - before[1],
            timer.cache_hits - before[2])


def main(argv=None):
    runtime.tune_allocator()
    args = parse_args(argv)
    report = Report()
    print("\n".join(report.machine), flush=True)
    cache = tempfile.mkdtemp(prefix="tome_jax_compile_time_")  # empty: the cold pass compiles everything
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    timer = CompileTimer()
    rows = []
    for spec in args.models.split(";"):
        name, _, rs = spec.partition(":")
        rs = [int(r) for r in rs.split(",")]
        dtype = None if args.dtype == "float32" else args.dtype
        model = tome_jax.create_model(name, dtype=dtype)
        (images,) = model.example_inputs(args.batch)
        forward = tome_jax.CompiledForward(model)
        passes = {"cold": lambda: sweep(forward, rs, images)}
        again = tome_jax.CompiledForward(model)
        passes["warm (disk)"] = lambda: sweep(again, rs, images)
        passes["warm (memory)"] = lambda: sweep(again, rs, images)
        for label, run in passes.items():
            wall, seconds, programs, hits = measured(timer, run)
            rows.append([name, ",".join(map(str, rs)), label, programs, hits, f"{seconds:.1f}", f"{wall:.1f}"])
            print(f"{name} r={rs} {label}: {programs} programs ({hits} from cache), compile {seconds:.1f} s, "
                  f"wall {wall:.1f} s", flush=True)
    print(report.table("compile", ["model", "r sweep", "pass", "programs", "from cache", "compile s", "wall s"], rows))
    report.write(args.json)


if __name__ == "__main__":
    main()
