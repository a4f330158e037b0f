"""The training loop: `train_and_evaluate(config, workdir)`.

One jit-compiled train step with a static ToMe schedule, the whole state laid out on a
(data, model) mesh, orbax checkpoints with the data position, resume from the latest checkpoint,
tqdm progress, JSON-lines + TensorBoard metrics, periodic eval and a final summary.
"""

from __future__ import annotations

import contextlib
import json
import math
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from jax.experimental import multihost_utils

import tome_jax
from tome_jax import data as data_lib
from tome_jax import runtime
from tome_jax.models.compiled import CompiledForward
from tome_jax.models.registry import describe_model
from tome_jax.reduction import SETTINGS
from tome_jax.train import optimizer as optimizer_lib
from tome_jax.train import sharding as sharding_lib
from tome_jax.train import preemption, resume, tasks
from tome_jax.train import workdir as workdir_lib
from tome_jax.train.metrics import IntervalTimer, MetricWriter
from tome_jax.train.state import TrainState, build_train_state

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


# ----------------------------------------------------------------------------- building blocks


def build_model(config: ml_collections.ConfigDict, *, load_weights: bool = True) -> nnx.Module:
    """The recipe's model from the registry: `config.model_name` + `config.model` overrides, then
    `apply_tome(model, **config.tome)`: only the settings the recipe has change; one it leaves out
    keeps the model's (or its tag's) default, e.g. `.mae` models' prop_attn=False."""
    if config.init.get("loader"):
        raise ValueError(f"config.init.loader={config.init.loader!r} is no longer read: every model family loads "
                         "its checkpoints through tome_jax.load_timm (a family adapts names in its model's "
                         "adapt_state_dict). Delete init.loader from the recipe.")
    kwargs = {k: v for k, v in config.model.to_dict().items() if v is not None}
    dtype = kwargs.pop("dtype", "float32")
    if dtype not in _DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {dtype!r}.")
    for key in ("img_size", "init_values"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    if config.init.weights and "gelu" not in kwargs:  # the checkpoint's GELU (big_vision: tanh), also on resume
        from tome_jax.models.weights import checkpoint_layout

        kwargs.update(checkpoint_layout(config.init.weights).model_kwargs())
    if unknown := sorted(set(config.tome) - set(SETTINGS)):
        raise ValueError(f"config.tome has {unknown}; its fields are the settings of tome_jax.apply_tome: "
                         f"{', '.join(SETTINGS)}.")
    model = tome_jax.create_model(config.model_name, dtype=_DTYPES[dtype],
                                  rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1), **kwargs)
    tome_jax.apply_tome(model, **config.tome.to_dict())
    if load_weights and config.init.weights:
        # Any supported layout; a family's own checkpoints (MAE-ST, AudioMAE) adapt through its model.
        report = tome_jax.load_timm(model, config.init.weights, skip=tuple(config.init.skip))
        if jax.process_index() == 0 and (report["ignored"] or report["initialized"] or report["resampled"]):
            print(f"init.weights {config.init.weights}: ignored {len(report['ignored'])} checkpoint keys "
                  f"(e.g. an MAE decoder), left at init {report['initialized']}, resampled {report['resampled']}")
    return model


def normalized(batch: dict, data_cfg: data_lib.DataConfig) -> dict:
    """The batch with its stored (uint8 or float) inputs normalized on device by the data's mean/std."""
    return dict(batch, image=data_lib.normalize(batch["image"], data_cfg.mean, data_cfg.std))


def make_train_step(graphdef, rest, tx, schedule, config: ml_collections.ConfigDict, task: tasks.Task,
                    data_cfg: data_lib.DataConfig | None = None):
    """data_cfg: the run's resolved data config (`data_lib.resolve_config(config.data)` when None)."""
    base_key = jax.random.key(config.seed)
    data_cfg = data_lib.resolve_config(config.data) if data_cfg is None else data_cfg

    def train_step(state: TrainState, batch: dict):
        task_key, drop_key = jax.random.split(jax.random.fold_in(base_key, state.step))
        batch = normalized(batch, data_cfg)  # uint8 -> float32, inside the jitted step

        def loss_fn(params):
            # A fresh copy of the RNG variables (merge would reuse the originals), re-seeded per step
            # so dropout / drop-path masks and random matchings depend only on (seed, step): a resumed
            # run is identical.
            model = nnx.merge(graphdef, params, jax.tree.map(lambda v: v, rest))
            nnx.reseed(model, dropout=drop_key, reduction=jax.random.fold_in(drop_key, 1))
            return task.loss(model, batch, task_key)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = state.ema_params
        if config.optimizer.ema_decay > 0:
            ema = optimizer_lib.ema_update(ema, params, config.optimizer.ema_decay)
        metrics = {"loss": loss, **metrics, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step)}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema), metrics

    return train_step


def _to_host(value) -> np.ndarray:
    """A (possibly multi-host, batch-sharded) array as one NumPy array on every host."""
    if isinstance(value, jax.Array) and not value.is_fully_replicated and jax.process_count() > 1:
        return np.asarray(multihost_utils.process_allgather(value, tiled=True))
    return np.asarray(value)


def evaluate(task: tasks.Task, eval_fn, params, rest, dataset, batch_sharding) -> dict:
    """One pass over `dataset` with eval_fn(params, rest, batch) (a `CompiledForward` of
    `task.eval_batch`) -> the task's metrics over the unmasked examples."""
    totals = None
    for local in dataset:
        out = eval_fn(params, rest, sharding_lib.global_batch(local, batch_sharding))
        totals = tasks.accumulate(totals, jax.tree.map(_to_host, out))
    return tasks.finish(task, totals)


def _total_steps(config, num_train: int) -> tuple[int, int]:
    steps_per_epoch = math.ceil(num_train / config.batch_size)
    total = config.total_steps or int(round(config.total_epochs * steps_per_epoch))
    if total <= 0:
        raise ValueError("set config.total_steps or config.total_epochs to a positive number.")
    warmup = config.warmup_steps or int(round(config.warmup_epochs * steps_per_epoch))
    return total, warmup


class _RunPrograms:
    """What a run computes with, built from its config alone, so that a child process builds the same
    programs (`_compiling_in_child`): the mesh, the data, the task, the model, the train state's
    setup, the jitted train step and the eval program (eval mode, the recipe's schedule).
    load_weights: read `config.init.weights` into the model (the child needs only its shapes)."""

    def __init__(self, config: ml_collections.ConfigDict, *, load_weights: bool = True):
        if config.batch_size % jax.device_count():
            raise ValueError(f"batch_size={config.batch_size} is not divisible by the {jax.device_count()} "
                             f"devices; use a multiple of {jax.device_count()}.")
        self.config = config
        self.mesh = sharding_lib.make_mesh(config.mesh.model)
        self.batch_sharding = sharding_lib.batch_sharding(self.mesh)
        data_cfg = self.data_cfg = data_lib.resolve_config(config.data)  # once per run; passed down
        train_source = data_lib.make_source(data_cfg, data_cfg.split_train)  # fails early if missing
        eval_source = data_lib.make_source(data_cfg, data_cfg.split_eval)
        self.train_ds = data_lib.make_dataset(data_cfg, data_cfg.split_train, global_batch_size=config.batch_size,
                                              train=True, seed=config.seed, source=train_source)
        self.eval_ds = data_lib.make_dataset(data_cfg, data_cfg.split_eval, global_batch_size=config.batch_size,
                                             train=False, seed=config.seed, source=eval_source)
        self.total_steps, warmup_steps = _total_steps(config, len(train_source))

        self.task = task = tasks.make_task(config)
        self.model = model = build_model(config, load_weights=load_weights)
        # The eval forward (eval mode, the recipe's schedule), compiled once; then train mode.
        evaluator = CompiledForward(model, lambda m, batch: task.eval_batch(m, normalized(batch, data_cfg)))
        model.eval()
        self.eval_fn, _, self.eval_rest = evaluator.compiled()
        self.setup = setup = build_train_state(config, model, total_steps=self.total_steps,
                                               warmup_steps=warmup_steps, mesh=self.mesh)
        self.train_step = jax.jit(make_train_step(setup.graphdef, setup.rest, setup.tx, setup.schedule, config,
                                                  task, data_cfg),
                                  in_shardings=(setup.shardings, self.batch_sharding),
                                  out_shardings=(setup.shardings, None), donate_argnums=0)

    def first_batch(self, dataset) -> dict:
        return sharding_lib.global_batch(next(iter(dataset)), self.batch_sharding)

    def lowered_eval(self):
        params = self.setup.abstract.ema_params if self.config.optimizer.ema_decay > 0 else self.setup.abstract.params
        return self.eval_fn.lower(params, self.eval_rest, self.first_batch(self.eval_ds))

    def lowered_train_step(self):
        return self.train_step.lower(self.setup.abstract, self.first_batch(self.train_ds))


@contextlib.contextmanager
def _compiling_in_child(config: ml_collections.ConfigDict):
    """Start compiling the run's train step and eval program in a child process, into the persistent
    compilation cache, from which this process then loads them; yields `wait()`, to call before the
    first step. The child starts at once, so its start-up and model build overlap this process's own;
    a child still running when the block ends (a finished run, an error) is killed.

    Why: on CPU, XLA runs programs markedly slower in a process that has compiled a large program
    itself than in one that loaded it from the cache (README's main job: 849 vs 577 training
    images/s on 2 AMD EPYC cores). `perf` shows why: in the compiling process 22% of a train step's
    CPU time is glibc's `_int_malloc` (1.6% in a loading one), the other threads waiting on its lock
    (one arena: `runtime.tune_allocator`); most likely the compiler's freed memory, left in the heap's
    free lists, is searched by every later allocation. Off unless `runtime.compile_in_child()`
    ($TOME_JAX_COMPILE_IN_CHILD=0, a GPU/TPU, several processes or no cache); then `wait()` does nothing."""
    if not runtime.compile_in_child():
        yield lambda: None
        return
    import pickle
    import subprocess
    import sys
    import tempfile

    code = "import sys; from tome_jax.train import loop; loop._compile_programs(sys.stdin.buffer)"
    # The child's errors are shown only if this process gets as far as waiting for it: a bad config
    # fails here first, with one traceback.
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stderr=errors)
        child.stdin.write(pickle.dumps(config))
        child.stdin.close()

        def wait() -> None:
            if child.wait() != 0:  # not fatal: this process compiles them itself
                errors.seek(0)
                tail = errors.read().decode(errors="replace").strip().splitlines()[-5:]
                print(f"compiling in a child process failed (exit {child.returncode}); compiling here. "
                      "Its last lines:\n  " + "\n  ".join(tail), flush=True)

        try:
            yield wait
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()


def _compile_programs(config_file) -> None:
    """The child of `_compiling_in_child`: build the run's programs from the pickled config in
    `config_file` and compile them."""
    import pickle

    runtime.configure()
    run = _RunPrograms(pickle.load(config_file), load_weights=False)
    run.lowered_train_step().compile()
    run.lowered_eval().compile()


# ----------------------------------------------------------------------------- the loop


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Train `config` in `workdir` (a local path or a gs:// URL), resuming from its latest readable
    checkpoint. Returns the summary; on SIGTERM/SIGINT saves a checkpoint at the current step and
    returns {"preempted_at_step": step} (see `preemption`)."""
    start_time = time.time()
    workdir = workdir_lib.resolve(workdir)
    with preemption.StopSignal() as stop_signal, _compiling_in_child(config) as compiled_in_child:
        return _train_and_evaluate(config, workdir, stop_signal, compiled_in_child, start_time)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir, stop_signal, compiled_in_child,
                        start_time: float) -> dict:
    lead = jax.process_index() == 0
    run = _RunPrograms(config)
    batch_sharding, train_ds, eval_ds = run.batch_sharding, run.train_ds, run.eval_ds
    task, model, setup, total_steps = run.task, run.model, run.setup, run.total_steps
    eval_fn, eval_rest = run.eval_fn, run.eval_rest

    ckpt = resume.open_checkpoints(workdir, setup.abstract, keep=config.keep_checkpoints)
    train_iter = iter(train_ds)
    latest, state, latest_config = resume.restore_or_init(ckpt, setup.abstract, train_iter, setup.init)
    resume.check_config(workdir, config, latest_config, latest)
    if (finished := resume.finished_summary(workdir, latest, total_steps)) is not None:
        ckpt.close()
        return finished

    compiled_in_child()  # the two big programs, into the persistent cache: loaded below
    train_step = run.train_step
    step = int(state.step)
    writer = MetricWriter(workdir, resume_step=latest)
    policy = preemption.CheckpointPolicy(stop_signal, every_steps=config.checkpoint_every_steps,
                                         every_minutes=config.get("checkpoint_every_minutes", 0.0))
    saved_config, stop = json.loads(config.to_json_best_effort()), False
    first_step = step
    nonfinite = jnp.zeros((), bool)
    eval_result, train_rate = {}, []
    data_wait = data_lib.InputWait()  # fraction of training time spent waiting for the input pipeline
    interval = IntervalTimer()  # steps and training seconds between log steps, evals and saves left out
    bar = tqdm(total=total_steps, initial=step, desc="train", disable=not lead, dynamic_ncols=True)
    while step < total_steps:
        batch = sharding_lib.global_batch(data_wait.next(train_iter), batch_sharding)
        state, metrics = train_step(state, batch)
        nonfinite = nonfinite | ~jnp.isfinite(metrics["loss"])
        step += 1
        interval.step()
        bar.update(1)
        last = step == total_steps
        save, stop = policy.decide(step, last)
        if step % config.log_every_steps == 0 or last or step == first_step + 1:
            if bool(nonfinite):
                raise FloatingPointError(
                    f"loss became NaN/inf at or before step {step}; stopped without saving. The last good "
                    f"checkpoint (step {ckpt.latest_step()}) is kept in {workdir}. Lower optimizer.lr, set "
                    "optimizer.clip_norm, or use model.dtype='float32'.")
            metrics = jax.device_get(metrics)
            interval_steps, elapsed = interval.end()
            rate = interval_steps * config.batch_size / elapsed
            if step > first_step + 1:  # the first interval includes compilation
                train_rate.append(rate)
            wait = data_wait.end_interval(elapsed, count=step > first_step + 1)
            writer.write(step, {f"train/{k}": v for k, v in metrics.items()} | {"train/images_per_sec": rate,
                                                                                 "train/data_wait_fraction": wait})
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", img_s=f"{rate:.0f}")
        if (step % config.eval_every_steps == 0 or last) and not stop:
            with interval.paused(state):  # eval time is not training throughput
                eval_params = state.ema_params if config.optimizer.ema_decay > 0 else state.params
                eval_result = evaluate(task, eval_fn, eval_params, eval_rest, eval_ds, batch_sharding)
                writer.write(step, {f"eval/{k}": v for k, v in eval_result.items()})
                if lead:
                    shown = " ".join(f"{k} {v:.4g}" for k, v in eval_result.items() if k != "count")
                    tqdm.write(f"step {step}: eval {shown} ({eval_result.get('count')} examples)")
        if save:
            if bool(nonfinite):
                raise FloatingPointError(f"loss became NaN/inf before step {step}; checkpoint not written.")
            with interval.paused(state):
                ckpt.save(step, state, train_iter, saved_config)  # refuses a non-finite state
        if stop:
            break
    bar.close()
    ckpt.close()
    writer.close()
    if stop and step < total_steps:
        if lead:
            print(f"{stop_signal.requested or 'stop signal on another host'}: saved a checkpoint at step {step} in {workdir / 'checkpoints'}; "
                  "run the same command to resume.", flush=True)
        return {"preempted_at_step": step}
    if not eval_result:  # finished, but the last eval was lost (killed after the final checkpoint)
        eval_params = state.ema_params if config.optimizer.ema_decay > 0 else state.params
        eval_result = evaluate(task, eval_fn, eval_params, eval_rest, eval_ds, batch_sharding)

    summary = {
        "model": describe_model(config.model_name, **config.model.to_dict()), "model_name": config.model_name,
        "task": config.get("task", "classification"), "tome_r": model.r,
        "tome_method": model.method, "steps": total_steps,
        **{f"eval_{k}": v for k, v in eval_result.items() if k != "count"},
        "train_images_per_sec": float(np.median(train_rate)) if train_rate else None,
        "data_wait_fraction": data_wait.fraction(),
        "gflops_per_image": tome_jax.count_flops(model) / 1e9,
        "wall_time_sec": time.time() - start_time, "devices": jax.device_count(),
        "processes": jax.process_count(),
    }
    if lead:
        workdir_lib.write_text(workdir / "summary.json", json.dumps(summary, indent=2))
        print(json.dumps(summary, indent=2))
        if data_wait.warning():
            tqdm.write("WARNING: " + data_wait.warning())
    return summary
