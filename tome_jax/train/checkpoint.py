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


class CheckpointMismatchError(ValueError):
    """The checkpoint in the workdir was written for a different model or optimizer."""


def _shapes_by_path(tree) -> dict[str, tuple]:
    """{"params/blocks/0/attn/qkv/kernel/value": shape}: the same string for a live tree and for
    orbax's metadata of it (which turns list indices, attributes and dict keys all into keys)."""
    def name(key):
        return str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key))))

    return {"/".join(name(k) for k in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0] if hasattr(leaf, "shape")}


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
        saved = _shapes_by_path(self.manager.item_metadata(step)["state"])
        ours = _shapes_by_path(abstract_state)
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

    def close(self) -> None:
        self.manager.close()
