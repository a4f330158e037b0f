"""Training speed with ToMe: images/s of one full train step at r = 0 and the paper's r (MAE fine-tuning).

    python benchmarks/train_throughput.py --variant B --batch 8 --trials 3 --repeats 3
    python benchmarks/train_throughput.py --runlocal --trials 3 --repeats 20   # the :runlocal ViT, batch 64

The step is the train loop's own (`tome_jax.train.loop.make_train_step` on the recipe
configs/mae_finetune_tome.py:variant=B: classification loss with label smoothing, mixup/cutmix, drop
path, AdamW with layer-wise lr decay), compiled once per r, compile excluded, no buffer donation.
Besides the full step, three parts are compiled and timed on their own, in the same interleaved
rounds: the forward (the loss), forward + backward (`jax.value_and_grad` of the loss) and the
optimizer (`tx.update` + `apply_updates` on a fixed gradient). backward = (forward + backward) -
forward. Each trial is one `tome_jax.timing.time_interleaved` call over all candidates (every r,
every part); the table shows the median over trials and the range [min, max] of the trial medians,
and the speedup r / r=0 taken within each trial. Next to it: the FLOP ratio of the forward
(`count_flops`) and of the step (3x the forward, minus the matching's similarity (no gradient) and
the patch embedding's input gradient). Wall time and process CPU time (all threads) are both shown;
on a shared machine the CPU-time column is the steadier one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import tome_jax  # noqa: E402
from configs import mae_finetune_tome  # noqa: E402
from tome_jax import runtime  # noqa: E402
from tome_jax.timing import blocking, time_interleaved  # noqa: E402
from tome_jax.train import loop, tasks  # noqa: E402

from benchmarks.common import Report, add_json_arg, recipe_train_step  # noqa: E402

PARTS = ("step", "forward", "fwd+bwd", "optimizer")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="B", choices=("B", "L", "H"))
    p.add_argument("--runlocal", action="store_true", help="the recipe's :runlocal model and batch instead")
    p.add_argument("--batch", type=int, default=0, help="default: 8, or the recipe's with --runlocal")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--r", type=int, default=-1, help="r to compare with 0 (default: the paper's for the variant)")
    p.add_argument("--trials", type=int, default=3, help="independent interleaved measurements")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds per trial (median per trial)")
    add_json_arg(p, "train_throughput")
    return p.parse_args(argv)


def similarity_flops(model, r) -> float:
    head_dim = model.embed_dim // model.blocks[0].attn.num_heads
    counts = model.token_counts(r)
    return float(sum(((t + 1) // 2) * (t // 2) * head_dim for t, t2 in zip(counts[:-1], counts[1:]) if t2 < t))


def step_flops(model, r) -> float:
    """Forward + backward (2x, no gradient through the matching, no input gradient of the stem)."""
    return 3 * tome_jax.count_flops(model, r=r) - 2 * similarity_flops(model, r) - 2 * model.stem_flops()


def build(config, r, batch):
    """Compiled step and parts at schedule r: {part: zero-arg blocking callable}, the model."""
    config.tome.r = r
    model = loop.build_model(config, load_weights=False)
    train_step, state, setup = recipe_train_step(config, model)
    task = tasks.make_task(config)
    graphdef, rest, tx, params = setup.graphdef, setup.rest, setup.tx, state.params

    def loss_fn(params, batch):  # the train step's loss, as in loop.make_train_step
        model = nnx.merge(graphdef, params, jax.tree.map(lambda v: v, rest))
        nnx.reseed(model, dropout=jax.random.key(1), reduction=jax.random.key(2))
        return task.loss(model, batch, jax.random.key(3))[0]

    forward = jax.jit(loss_fn)
    fwd_bwd = jax.jit(jax.value_and_grad(loss_fn))

    @jax.jit
    def optimizer(grads, opt_state, params):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    size = config.model.img_size
    images = jax.random.normal(jax.random.key(0), (batch, size, size, 3), jnp.float32)
    data = {"image": images, "label": jnp.arange(batch) % config.model.num_classes, "mask": jnp.ones(batch, bool)}
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 1e-3, p.dtype), params)
    compile_s = {}
    calls = {"step": blocking(train_step, state, data), "forward": blocking(forward, params, data),
             "fwd+bwd": blocking(fwd_bwd, params, data), "optimizer": blocking(optimizer, grads, state.opt_state, params)}
    for part, fn in calls.items():
        t0 = time.perf_counter()
        fn()
        compile_s[part] = time.perf_counter() - t0
    return calls, model, compile_s


def main(argv=None):
    runtime.configure()  # allocator, quiet logs, compilation cache (as train.py)
    args = parse_args(argv)
    report = Report()
    print("\n".join(report.machine))
    config = mae_finetune_tome.get_config("runlocal" if args.runlocal else f"variant={args.variant}")
    config.model.dtype = args.dtype
    args.batch = args.batch or (config.batch_size if args.runlocal else 8)
    r_tome = args.r if args.r >= 0 else config.tome.r
    schedules = (0, r_tome)
    print(f"model {config.model_name}, batch {args.batch}, {args.dtype}, r in {schedules}, "
          f"{args.trials} trials x {args.repeats} interleaved rounds")

    candidates, models = {}, {}
    for r in schedules:
        calls, models[r], compile_s = build(config, r, args.batch)
        candidates.update({(r, part): fn for part, fn in calls.items()})
        print(f"r={r}: compiled (first call incl. compile) " + ", ".join(f"{k} {v:.1f} s" for k, v in compile_s.items()))

    wall = {key: [] for key in candidates}
    cpu = {key: [] for key in candidates}
    for trial in range(args.trials):
        stats = time_interleaved({f"{r}/{p}": fn for (r, p), fn in candidates.items()}, repeats=args.repeats, warmup=1)
        for (r, part) in candidates:
            wall[(r, part)].append(stats[f"{r}/{part}"].median)
            cpu[(r, part)].append(stats[f"{r}/{part}"].cpu_median)
        print(f"trial {trial + 1}: step r=0 {wall[(0, 'step')][-1]:.2f} s, r={r_tome} {wall[(r_tome, 'step')][-1]:.2f} s "
              f"(speedup {wall[(0, 'step')][-1] / wall[(r_tome, 'step')][-1]:.2f}x); load average "
              "%.1f %.1f %.1f" % os.getloadavg())

    def derived(values, r):
        """Per-trial seconds of every part, backward derived within each trial."""
        out = {part: values[(r, part)] for part in PARTS}
        out["backward"] = [fb - f for fb, f in zip(out["fwd+bwd"], out["forward"])]
        return out

    def fmt(xs, scale=1.0, digits=2):
        xs = [x * scale for x in xs]
        return f"{statistics.median(xs):.{digits}f} [{min(xs):.{digits}f}, {max(xs):.{digits}f}]"

    rows = []
    base_w, base_c = derived(wall, 0), derived(cpu, 0)
    for r in schedules:
        w, c = derived(wall, r), derived(cpu, r)
        model = models[r]
        for part in ("step", "forward", "backward", "optimizer"):
            speed = [b / x for b, x in zip(base_w[part], w[part])]
            speed_cpu = [b / x for b, x in zip(base_c[part], c[part])]
            flop_ratio = {"step": step_flops(models[0], 0) / step_flops(model, r),
                          "forward": tome_jax.count_flops(models[0], r=0) / tome_jax.count_flops(model, r=r),
                          "backward": (step_flops(models[0], 0) - tome_jax.count_flops(models[0], r=0))
                          / (step_flops(model, r) - tome_jax.count_flops(model, r=r))}.get(part, 1.0)
            rows.append([r if part == "step" else "", part, fmt(w[part]), fmt(c[part]),
                         f"{statistics.median([args.batch / x for x in w[part]]):.2f}" if part == "step" else "",
                         fmt(speed), fmt(speed_cpu), f"{flop_ratio:.2f}"])
    print()
    print(report.table("step", ["r", "part", "s/batch wall (median [range])", "s/batch CPU", "img/s (wall)",
                                "speedup wall", "speedup CPU", "FLOP ratio"], rows, align="rlrrrrrr"))
    m0, m1 = models[0], models[r_tome]
    print(report.note("step", f"forward GFLOPs/img: r=0 {tome_jax.count_flops(m0, r=0) / 1e9:.2f}, r={r_tome} "
                      f"{tome_jax.count_flops(m1, r=r_tome) / 1e9:.2f}; step GFLOPs/img: "
                      f"{step_flops(m0, 0) / 1e9:.2f} vs {step_flops(m1, r_tome) / 1e9:.2f}; "
                      f"tokens {m1.token_counts()}"))
    share = [o / s for o, s in zip(derived(wall, r_tome)["optimizer"], derived(wall, r_tome)["step"])]
    print(report.note("step", f"optimizer share of the r={r_tome} step: {fmt(share, 100, 1)} %; parts sum vs step "
                      f"at r={r_tome}: " + fmt([(fb + o) / s for fb, o, s in zip(
                          derived(wall, r_tome)["fwd+bwd"], derived(wall, r_tome)["optimizer"],
                          derived(wall, r_tome)["step"])])))
    report.write(args.json)

if __name__ == "__main__":
    main()
