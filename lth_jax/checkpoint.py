"""Orbax checkpoints of a training state plus a small JSON of loop metadata.

Orbax writes each step to a temporary folder and renames it when complete, so
a crash never leaves a half-written checkpoint that a resume would read. A
checkpoint damaged afterwards (a truncated array file, a broken manifest) is
moved to `damaged/` beside the checkpoints and the previous one is used
instead, with one warning line: `restore_latest` never raises on damage.

Orbax reports a failure twice: logged (with tracebacks) from its worker
threads, then raised in the caller. lth_jax keeps only the raised one (one
line from the command line), so saving hides orbax's log, and when a
checkpoint is damaged the warning replaces what the reading threads print.
"""
from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import shutil
import sys

import jax
import orbax.checkpoint as ocp

from lth_jax import parallel
from lth_jax.files import kill_point


class Checkpointer:
    def __init__(self, directory: str, max_to_keep: int = 2, tag: str = ""):
        self.directory = os.path.abspath(directory)
        self.tag = tag  # names this checkpointer's kill points (crash tests)
        self.max_to_keep = max_to_keep
        self.manager = self._manager()

    def _manager(self):
        return ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=self.max_to_keep, create=True))

    def steps(self) -> list:
        return sorted(self.manager.all_steps())

    def latest_step(self):
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict | None = None) -> None:
        with _logs_silenced("absl"):  # a failure (a full disk) is raised here, in one exception
            self.manager.save(int(step), args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta or {})), force=True)
            kill_point(f"saving:{self.tag}:{int(step)}")
            self.manager.wait_until_finished()
        kill_point(f"checkpoint:{self.tag}:{int(step)}")

    def restore(self, like, step: int | None = None):
        """(state, meta) of `step` (default: the latest); `like` gives structure and shardings."""
        step = self.latest_step() if step is None else step
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return out["state"], out["meta"]

    def restore_latest(self, like, label: str = "checkpoint"):
        """(step, state, meta) of the newest checkpoint that reads back whole, or
        None when there is none. Damaged ones are moved aside with a warning."""
        warnings = []
        with _stderr_held() as held, _logs_silenced("asyncio"):
            found = None
            for step in reversed(self.steps()):
                try:
                    state, meta = self.restore(like, step)
                    if int(meta.get("step", -1)) != step:
                        raise ValueError(f"its metadata names step {meta.get('step')}")
                    found = step, state, meta
                    break
                except Exception as e:  # noqa: BLE001 -- any failure to read back means damage
                    reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
                    moved = self._set_aside(step)
                    warnings.append(f"warning: {label} at step {step} is damaged ({type(e).__name__}: {reason}); "
                                    f"moved to {moved}, using the one before it\n")
                gc.collect()  # the failed read's futures complain when collected: here, while silenced
        # the failed read's threads print tracebacks (even during the next read): the warning replaces them
        sys.stderr.write("".join(warnings) if warnings else held.getvalue())
        return found

    def _set_aside(self, step: int) -> str:
        target = os.path.join(os.path.dirname(self.directory), "damaged", f"{os.path.basename(self.directory)}_{step}")
        n = 0
        while os.path.exists(target + (f".{n}" if n else "")):
            n += 1
        target += f".{n}" if n else ""
        parallel.barrier(f"lth_jax: damaged checkpoint {step} found")  # every process has tried to read it
        if parallel.writes_files():
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.move(os.path.join(self.directory, str(step)), target)
        parallel.barrier(f"lth_jax: damaged checkpoint {step} moved")
        self.manager.close()
        self.manager = self._manager()
        return target

    def close(self):
        self.manager.close()

    def meta(self, step: int | None = None) -> dict:
        """Only the JSON metadata of a checkpoint (no arrays read)."""
        step = self.latest_step() if step is None else step
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


@contextlib.contextmanager
def _logs_silenced(*names):
    """Python loggers `names` (orbax logs through "absl") off meanwhile."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def _stderr_held():
    """What anyone writes to sys.stderr meanwhile, kept aside."""
    held, saved = io.StringIO(), sys.stderr
    sys.stderr = held
    try:
        yield held
    finally:
        sys.stderr = saved
