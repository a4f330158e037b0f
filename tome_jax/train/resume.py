"""Start-up and restart bookkeeping of a training run, called by the loop.

`open_checkpoints`: the workdir is writable and has room, leftover temporary folders of an
interrupted save are removed, then the checkpoints are opened. `restore_or_init`: the newest
readable step with the config saved in it (falling back past unreadable ones, which are renamed
"<step>.unreadable-<time>" and kept; transient read errors are retried, never a reason to fall
back) or a fresh state. `check_config`: a restart that changes a field that makes it a different
run is refused with a diff; config.json is never silently replaced. `finished_summary`: a finished
run restarted leaves summary.json as it was.
"""

from __future__ import annotations

import json
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from tome_jax.train import workdir as workdir_lib
from tome_jax.train.checkpoint import Checkpointer, Restored


def _nbytes(abstract_state) -> int:
    return int(sum(np.prod(a.shape) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(abstract_state)))


def open_checkpoints(workdir: epath.Path, abstract_state, *, keep: int) -> Checkpointer:
    """Checks (writable, room for two checkpoints), cleans temporary folders, opens `workdir/checkpoints`."""
    ckpt_dir = workdir / "checkpoints"
    if jax.process_index() == 0:
        workdir_lib.check_writable(workdir, needed_bytes=2 * _nbytes(abstract_state))
        removed = workdir_lib.clean_temporaries(ckpt_dir)
        if removed:
            logging.warning("removed unfinished checkpoint folders of an interrupted save in %s: %s", ckpt_dir, removed)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("tome_jax_open_checkpoints")
    return Checkpointer(ckpt_dir, keep=keep)


def restore_or_init(ckpt: Checkpointer, abstract_state, data_iterator, init_fn) -> Restored:
    """`Restored(step or None, state, saved config or None)`: the newest readable checkpoint, else
    `init_fn()`. Unreadable newer steps are renamed aside (kept, never deleted) so that the run can
    write those steps again."""
    steps = ckpt.all_steps()
    step, state, saved_config = ckpt.restore_latest(abstract_state, data_iterator)
    broken = [s for s in steps if step is not None and s > step]
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("tome_jax_restored")
    if broken and jax.process_index() == 0:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for s in broken:
            dst = ckpt.set_aside(s, f"{s}.unreadable-{stamp}")
            logging.warning("kept the unreadable checkpoint step %d as %s; resuming from step %d.", s, dst, step)
    return Restored(step, state if step is not None else init_fn(), saved_config)


def check_config(workdir: epath.Path, config: ml_collections.ConfigDict, saved: dict | None,
                 step: int | None) -> None:
    """Refuse a restart whose config changes a `workdir.BREAKING_FIELDS` field (unless
    `config.allow_config_change`), then write config.json; an older, different config.json is kept
    as config.until_step_<step>.json. saved: the config stored in checkpoint `step` (`Restored.config`);
    None falls back to the workdir's config.json (checkpoints written before configs were saved)."""
    new = json.loads(config.to_json_best_effort())
    path = workdir / "config.json"
    old = saved if saved is not None else (workdir_lib.read_json(path) if step is not None else None)
    diff = workdir_lib.config_diff(old, new) if old is not None else []
    diff = [d for d in diff if d[0] != "allow_config_change"]
    breaking = workdir_lib.breaking_changes(diff)
    if breaking and not config.get("allow_config_change", False):
        raise workdir_lib.ConfigChangeError(
            f"the run in {workdir} (checkpoint step {step}) was started with another config; these changes "
            f"would make the resumed run a different run:\n{workdir_lib.format_diff(breaking)}\n"
            "Use a new --workdir, or pass --config.allow_config_change=True to resume anyway.")
    if jax.process_index() != 0:
        return
    if diff:
        logging.warning("resuming at step %s with config changes:\n%s", step, workdir_lib.format_diff(diff))
        if path.exists():
            workdir_lib.write_text(workdir / f"config.until_step_{step}.json", path.read_text())
    if diff or not path.exists():
        workdir_lib.write_text(path, config.to_json_best_effort(indent=2))


def finished_summary(workdir: epath.Path, step: int | None, total_steps: int) -> dict | None:
    """The existing summary of a run that already reached `total_steps`, else None."""
    if step is None or step < total_steps:
        return None
    summary = workdir_lib.read_json(workdir / "summary.json")
    if summary is not None and jax.process_index() == 0:
        print(f"This run already finished at step {step} (total_steps={total_steps}); {workdir / 'summary.json'} "
              "is left as it was. To train further, raise total_steps and pass --config.allow_config_change=True.")
    return summary
