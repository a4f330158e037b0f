"""Checkpoints with orbax: train state + the data iterator's position, saved atomically.

Orbax writes each step into a temporary directory and renames it only when complete, so a run
killed mid-save leaves the previous checkpoint as the latest; `latest_step()` never sees the
half-written one. Restoring takes the target's shardings, so a checkpoint written on one mesh
loads onto another.
"""

from __future__ import annotations

import os

import grain
import jax
import orbax.checkpoint as ocp
from flax import nnx


class CheckpointMismatchError(ValueError):
    """The checkpoint in the workdir was written for a different model or optimizer."""


def _leaves_by_path(tree) -> dict:
    """{"blocks/0/attn/qkv/kernel": leaf}: the same string for a live tree (nnx Variables count as
    leaves) and for orbax's restored dicts or metadata (which turn list indices, attributes and
    dict keys all into keys, and store a Variable's array under "value")."""
    def name(key):
        return str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key))))

    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
    out = {}
    for path, leaf in flat:
        names = [name(k) for k in path]
        out["/".join(names[:-1] if names[-1] == "value" else names)] = leaf
    return out


def _shapes_by_path(tree) -> dict[str, tuple]:
    return {path: tuple(leaf.shape) for path, leaf in _leaves_by_path(tree).items() if hasattr(leaf, "shape")}


class Checkpointer:
    def __init__(self, directory: str, *, keep: int):
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": grain.checkpoint.CheckpointHandler()},
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 enable_async_checkpointing=False),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_iterator) -> None:
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator)))
        self.manager.wait_until_finished()

    def check_compatible(self, step: int, abstract_state) -> None:
        """Compare the saved tree's paths and shapes with ours before touching any array."""
        self._compare(step, _shapes_by_path(self.manager.item_metadata(step)["state"]),
                      _shapes_by_path(abstract_state))

    def _compare(self, step: int, saved: dict, ours: dict) -> None:
        problems = [f"{k}: saved {saved.get(k, 'absent')} vs now {ours.get(k, 'absent')}"
                    for k in sorted(set(saved) | set(ours)) if saved.get(k) != ours.get(k)]
        if problems:
            raise CheckpointMismatchError(
                f"the checkpoint at step {step} in {self.manager.directory} was written for a different "
                f"model or optimizer ({len(problems)} differences, e.g. {problems[:5]}). Use a new "
                "--workdir for a new model; nothing in the old workdir was changed.")

    def restore(self, step: int, abstract_state, data_iterator):
        """abstract_state: jax.ShapeDtypeStruct leaves with the target shardings."""
        self.check_compatible(step, abstract_state)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=grain.checkpoint.CheckpointRestore(data_iterator)))
        return restored["state"]

    def restore_params(self, step: int, params, *, ema: bool = False):
        """Only the (EMA) parameters, into `params` (an nnx.State of the model's Params), e.g. for
        evaluation without building the optimizer."""
        self.check_compatible_params(step, params, ema)
        saved = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
        saved = _leaves_by_path(saved["state"]["ema_params" if ema else "params"])
        for path, leaf in _leaves_by_path(params).items():
            leaf.set_value(jax.numpy.asarray(saved[path], leaf.dtype))
        return params

    def check_compatible_params(self, step: int, params, ema: bool) -> None:
        key = "ema_params" if ema else "params"
        saved = self.manager.item_metadata(step)["state"][key]
        self._compare(step, _shapes_by_path(saved), _shapes_by_path(params))

    def close(self) -> None:
        self.manager.close()
