"""Orbax checkpoints of a training state plus a small JSON of loop metadata.

Orbax writes each step to a temporary folder and renames it when complete, so
a crash never leaves a half-written checkpoint that a resume would read.
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

    def latest_step(self):
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict | None = None) -> None:
        self.manager.save(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta or {})), force=True)
        self.manager.wait_until_finished()

    def restore(self, like, step: int | None = None):
        """(state, meta) of `step` (default: the latest); `like` gives structure and shardings."""
        step = self.latest_step() if step is None else step
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return out["state"], out["meta"]

    def close(self):
        self.manager.close()

    def meta(self, step: int | None = None) -> dict:
        """Only the JSON metadata of a checkpoint (no arrays read)."""
        step = self.latest_step() if step is None else step
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
