"""Accuracy and throughput over a sweep of ToMe's r, or of several reduction methods at matched
FLOPs (`compare_methods`): the library behind `eval.py`."""

from __future__ import annotations

import jax
import ml_collections
from flax import nnx
from tqdm import tqdm

import tome_jax
from tome_jax import data as data_lib
from tome_jax import timing
from tome_jax.choose import choose_r, method_overhead, method_set
from tome_jax.models.compiled import CompiledForward
from tome_jax.train import loop, tasks
from tome_jax.train import sharding as sharding_lib
from tome_jax.train import workdir as workdir_lib
from tome_jax.train.checkpoint import Checkpointer


def load_model(config: ml_collections.ConfigDict, workdir: str | None, weights: str | None):
    """The recipe's model with weights from `weights` (timm/big_vision/... file) or else the latest
    checkpoint in `workdir` (EMA parameters when the recipe keeps them)."""
    if weights:  # built for these weights (their GELU) and loaded as a recipe's init.weights, nothing skipped
        config = config.copy_and_resolve_references()
        config.init.weights, config.init.skip = weights, ()
        return loop.build_model(config), f"weights {weights}"
    model = loop.build_model(config, load_weights=False)
    if not workdir:
        raise ValueError("pass --workdir (a training run's directory) or --weights (a pretrained file).")
    ckpt = Checkpointer(workdir_lib.resolve(workdir) / "checkpoints", keep=1, create=False)
    step = ckpt.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {ckpt.directory}; train first or pass --weights.")
    params = ckpt.restore_params(step, nnx.state(model, nnx.Param),
                                 ema=config.optimizer.ema_decay > 0)
    nnx.update(model, params)
    ckpt.close()
    return model, f"checkpoint step {step} in {workdir}"


BASELINE = 0  # the r that speedups are measured against


class EvalSetup:
    """What a sweep evaluates and times with: the task, the eval dataset (once), a timing batch and
    one compiled program per schedule, `forward` (`task.outputs`: the model's forward), which both
    the metrics and the timing run. Normalizing the images and scoring the outputs are one program
    each, shared by every schedule."""

    def __init__(self, config: ml_collections.ConfigDict, model, batch_size: int):
        self.task = tasks.make_task(config)
        mesh = sharding_lib.make_mesh(1)
        self.batch_sharding = sharding_lib.batch_sharding(mesh)
        data_cfg = data_lib.resolve_config(config.data)  # once; passed down
        self.dataset = data_lib.make_dataset(data_cfg, data_cfg.split_eval, global_batch_size=batch_size,
                                             train=False, seed=config.seed)
        self._normalize = jax.jit(lambda batch: loop.normalized(batch, data_cfg))
        self._score = jax.jit(self.task.score)
        self.timing_batch = self._normalize(sharding_lib.global_batch(next(iter(self.dataset)), self.batch_sharding))
        model.eval()
        self.model = model
        self.forward = CompiledForward(model, self.task.outputs)

    def metrics(self, r) -> dict:
        """The task's eval metrics at schedule r of the model's current method, with `examples`."""
        forward, params, rest = self.forward.compiled(r)

        def eval_fn(params, rest, batch):
            return self._score(forward(params, rest, self._normalize(batch)), batch)

        metrics = loop.evaluate(self.task, eval_fn, params, rest, self.dataset, self.batch_sharding)
        return {**{k: v for k, v in metrics.items() if k != "count"}, "examples": metrics["count"]}

    def timer(self, r):
        """A zero-argument callable timing one forward of the timing batch at schedule r."""
        fn, params, rest = self.forward.compiled(r)
        return timing.blocking(fn, params, rest, self.timing_batch)


def sweep(config: ml_collections.ConfigDict, model, r_values: list, *, batch_size: int,
          repeats: int = 10) -> list[dict]:
    """The task's eval metrics (top-1/top-5, or mAP, ...) on the eval split, images/s and GFLOPs per r.

    Every r compiles one program, its forward (`EvalSetup`), which gives both the metrics and the
    timing; throughput is timed with `tome_jax.timing.time_interleaved` over all r values in
    interleaved rounds (compile and warm-up excluded), so load from other processes hits every r alike. `speedup` is always over
    r=0, which is timed even when `r_values` lacks it; every row carries its images/s as
    `baseline_images_per_sec`."""
    setup = EvalSetup(config, model, batch_size)
    results, candidates = [], {}
    if BASELINE not in r_values:  # speedups are over r=0 even when it is not in the sweep: time it too
        candidates[str(BASELINE)] = setup.timer(0)
    for r in tqdm(r_values, desc="r sweep", disable=jax.process_index() != 0):
        metrics = setup.metrics(r)
        candidates[str(r)] = setup.timer(r)
        counts = model.token_counts(r)
        results.append({"r": r, **metrics, "gflops": tome_jax.count_flops(model, r=r) / 1e9,
                        "tokens_out": counts[-1]})
    stats = timing.time_interleaved(candidates, repeats=repeats, warmup=1)
    batch = setup.timing_batch["image"].shape[0]
    for row in results:
        row["images_per_sec"] = batch / stats[str(row["r"])].median
    base = batch / stats[str(BASELINE)].median
    for row in results:
        row["speedup"] = row["images_per_sec"] / base
        row["baseline_images_per_sec"] = base
    return results


def comparable_methods() -> list[str]:
    """Every registered method that reduces tokens ("none" left out), in registration order."""
    from tome_jax.methods import METHODS

    return [m for m in METHODS if m != "none"]


def parse_methods(text: str) -> list[str]:
    """"bipartite,diffrate" or "all" (every registered method but "none") -> method names; "tome"
    is ToMe's "bipartite". Unknown names are a ValueError listing the registered ones."""
    from tome_jax.methods import METHODS

    names = comparable_methods() if text.strip() == "all" else [m.strip() for m in text.split(",") if m.strip()]
    names = ["bipartite" if m == "tome" else m for m in names]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ValueError(f"unknown token reduction method(s) {unknown or text!r}; registered: "
                         f"{', '.join(METHODS)} (or 'all', or 'tome' for bipartite).")
    return list(dict.fromkeys(names))


def flops_targets(model, r_values: list, method: str = "bipartite") -> list[float]:
    """The FLOP ratios (to r=0) of `method` at each r > 0 of `r_values`: the comparison's targets
    when none are given (e.g. ToMe's r=12 on the main job is 0.46)."""
    with method_set(model, method):
        base = tome_jax.count_flops(model, r=0)
        return [tome_jax.count_flops(model, r=r) / base for r in r_values if r != 0]


def compare_methods(config: ml_collections.ConfigDict, model, methods: list[str], targets: list[float], *,
                    batch_size: int, repeats: int = 10) -> dict[str, list[dict]]:
    """Methods side by side at matched FLOPs: for each method and each target FLOP ratio, the smallest
    r that meets it (`choose_r(..., method=)`), the task's eval metrics, GFLOPs, tokens, images/s
    and the share of the forward spent in the method's own work (its plans timed alone,
    `choose.method_overhead`). All forwards and plans are timed interleaved in one run, with r=0.

    Returns {method: rows}, each method's rows led by r=0 (shared: the model without reduction),
    so the report plots one line per method from the same start. A row has method, target_flops,
    flops_ratio, r, the metrics, examples, gflops, tokens_out, images_per_sec, speedup,
    baseline_images_per_sec and overhead (a fraction). A target a method cannot reach is skipped,
    with a line on stdout. A method that cannot run on this model (`not_applicable`: e.g. DiffRate's
    class-token importance on a model without a class token) is left out with a line on stdout
    giving the reason. The model's method, options and r are left as they were."""
    with method_set(model):
        return _compare_methods(config, model, methods, targets, batch_size, repeats)


def not_applicable(model, methods: list[str]) -> dict[str, str]:
    """{method: why it cannot run on `model`} for those of `methods` that cannot, asked through the
    seam (`ReductionMethod.not_applicable` with the model's protected prefix-token count and the
    method's default options). The model's method, options and r are left as they were."""
    reasons = {}
    for method in methods:
        with method_set(model, method):
            reason = model.reduction.reducer.not_applicable(model.reduction.protected)
        if reason is not None:
            reasons[method] = reason
    return reasons


def _compare_methods(config, model, methods, targets, batch_size, repeats) -> dict[str, list[dict]]:
    skipped = not_applicable(model, methods)
    for method, reason in skipped.items():
        print(f"{method}: not applicable to this model: {reason}")
    methods = [m for m in methods if m not in skipped]
    if not methods:
        return {}
    setup = EvalSetup(config, model, batch_size)
    base_flops = tome_jax.count_flops(model, r=0)
    baseline = {"method": model.method, "target_flops": 1.0, "flops_ratio": 1.0, "r": 0, **setup.metrics(0),
                "gflops": base_flops / 1e9, "tokens_out": model.token_counts(0)[-1], "overhead": 0.0}
    rows, points = {}, []
    for method in tqdm(methods, desc="methods", disable=jax.process_index() != 0):
        rows[method] = []
        for target in targets:
            try:
                choice = choose_r(model, target_flops_ratio=target, method=method)
            except ValueError as err:
                print(f"{method}: target FLOP ratio {target:.3f} skipped: {err}")
                continue
            if any(row["r"] == choice.r for row in rows[method]):
                continue
            with method_set(model, method):
                rows[method].append({"method": method, "target_flops": target, "flops_ratio": choice.flops_ratio,
                                     "r": choice.r, **setup.metrics(choice.r),
                                     "gflops": tome_jax.count_flops(model, r=choice.r) / 1e9,
                                     "tokens_out": model.token_counts(choice.r)[-1]})
            points.append((method, choice.r))
    timed = method_overhead(model, points, (setup.timing_batch,), repeats=repeats, forward=setup.forward)
    base_speed = next(iter(timed.values()))["baseline_images_per_sec"] if timed else None
    out = {}
    for method, method_rows in rows.items():
        for row in method_rows:
            row.update(timed[(method, row["r"])])
        if base_speed is not None:
            lead = {**baseline, "images_per_sec": base_speed, "speedup": 1.0, "baseline_images_per_sec": base_speed}
            out[method] = [lead] + method_rows
    return out


def parse_r_list(text: str) -> list:
    """"0,8,16" -> [0, 8, 16]; "16:-1" is the schedule (16, -1) (decreasing); ValueError naming the fix."""
    from tome_jax.cli import parse_r_list as parse  # the one parser eval.py's start-up check also uses

    return parse(text)
