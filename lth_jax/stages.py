"""A run is a sequence of stages; this is the only place that knows how to resume.

A stage (the dense level, a pruned level, the scoring ensemble, a data
fraction) has its own folder: `checkpoints/`, `metrics.jsonl` and a `done`
marker written last. Whatever a later stage reads (the rewind point, a
ticket, scores) is written inside the stage that makes it, before `done`,
with `write_once`, and never rewritten by a resume. Resuming a stage
restores its newest checkpoint that reads back whole (damaged ones are set
aside with a warning) and cuts its metrics back to that step; with no usable
checkpoint the stage starts over. An experiment lists its stages and what
each computes; it writes no resume logic of its own.

Ctrl-C (SIGINT) while a stage trains stops at the end of the current chunk:
the state is checkpointed at that evaluation and `Interrupted` is raised. A
second Ctrl-C stops at once: from the command line (`HARD_STOP`) the process
ends there with exit code 130, as if killed, and resumes from its last
checkpoint; elsewhere (a notebook) KeyboardInterrupt is raised.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import threading

import numpy as np

from lth_jax import npz, parallel
from lth_jax.checkpoint import Checkpointer
from lth_jax.files import append_jsonl, dumps, kill_point, read_jsonl, write_json, write_jsonl
from lth_jax.trainer import Diverged, Guard

# Where the run is (stage label, last evaluated step): for the Ctrl-C message.
POSITION = {"label": None, "step": None}
# Set by the command line: a second Ctrl-C ends the process at once, before library threads
# (checkpoint saves, TensorBoard) can fill the terminal with their tracebacks.
HARD_STOP = False


def interrupted_message() -> str:
    """The one line for a Ctrl-C, saying where the run was."""
    label, step = POSITION["label"], POSITION["step"]
    if label is None:
        where = "before training started"
    else:
        where = f"during {label}" + (f" (last evaluation: step {step})" if step is not None else "")
    return f"interrupted {where}; run the same command to resume"


class Interrupted(Exception):
    """Ctrl-C during training; the state of the last evaluation is checkpointed."""

    def __init__(self, label: str, step: int):
        super().__init__(f"interrupted at {label} step {step}; run the same command to resume")


class Stage:
    """One stage of a run, in `rundir/name` ("" = the workdir itself).

    label: how messages name it ("level 2", "fraction 0.5").
    keep_checkpoints: keep the checkpoints once the stage is done (by default
    they are removed then: the stage's artefacts hold what later stages need).
    """

    def __init__(self, rundir, name: str, label: str, *, keep_checkpoints: bool = False):
        self.rundir, self.name, self.label = rundir, name, label
        self.path = rundir.file(name) if name else rundir.path
        self.keep_checkpoints = keep_checkpoints
        self.records: list = []
        self.guard = Guard()
        self._ckpt = None

    def file(self, *parts) -> str:
        return os.path.join(self.path, *parts)

    @property
    def done(self) -> bool:
        return os.path.exists(self.file("done"))

    @property
    def checkpointer(self) -> Checkpointer:
        if self._ckpt is None:
            self._ckpt = Checkpointer(self.file("checkpoints"), tag=self.name or "run")
        return self._ckpt

    def close(self) -> None:
        if self._ckpt is not None:
            self._ckpt.close()
            self._ckpt = None

    # ---- resume --------------------------------------------------------------------------------
    def begin(self, fresh):
        """The stage's starting state: its newest readable checkpoint (restored
        into the structure and shardings of `fresh`), or `fresh` itself when
        there is none. The stage's metrics are cut back to match."""
        os.makedirs(self.path, exist_ok=True)
        found = self.checkpointer.restore_latest(fresh, label=f"{self.label} checkpoint")
        on_disk = read_jsonl(self.file("metrics.jsonl"))
        if found is None:
            state, self.records, self.guard = fresh, [], Guard()
        else:
            step, state, meta = found
            self.records = [r for r in on_disk if r["step"] <= step]
            self.guard = Guard(meta.get("reference_loss"))
            POSITION.update(label=self.label, step=step)
            print(f"resuming {self.label} from step {step}", flush=True)
        if self.records != on_disk or (on_disk and not found):
            write_jsonl(self.file("metrics.jsonl"), self.records)
        return state

    def write_once(self, name: str, tree, dtype=None) -> str:
        """Write an artefact of this stage (.npz of a pytree) unless it exists:
        what a later stage reads is never rewritten by a resume."""
        path = self.file(name)
        if not os.path.exists(path):
            npz.save(path, tree, dtype=dtype)
        parallel.barrier(f"lth_jax: wrote {self.name}/{name}")  # another process may read it next
        return path

    def finish(self, result: dict | None = None) -> None:
        """Write result.json (if given), then the `done` marker, then drop the
        checkpoints unless they are kept."""
        if result is not None:
            write_json(self.file("result.json"), result)
        write_json(self.file("done"), {"stage": self.name or "run"})
        parallel.barrier(f"lth_jax: finished {self.name}")
        self.cleanup()

    def cleanup(self) -> None:
        self.close()
        if self.done and not self.keep_checkpoints and parallel.writes_files():
            shutil.rmtree(self.file("checkpoints"), ignore_errors=True)

    # ---- training ------------------------------------------------------------------------------
    def train(self, trainer, state, stop: int, key, *, eval_every: int, checkpoint_every: int,
              members: list | None = None, progress=True, tb_prefix: str = "", after_eval=None):
        """Train `state` to step `stop` with `trainer`: every evaluation is appended
        to the stage's metrics (and TensorBoard), a checkpoint is saved at every
        multiple of `checkpoint_every` and at `stop`. Raises Diverged (naming the
        last checkpoint with a finite validation loss) or Interrupted.
        after_eval(state, record), if given, runs after each evaluation is logged
        and before its checkpoint (to write per-evaluation artefacts)."""
        os.makedirs(self.path, exist_ok=True)
        if POSITION["label"] != self.label:  # a Ctrl-C before the first evaluation names this stage
            POSITION.update(label=self.label, step=None)

        def on_eval(st, record):
            record = json.loads(dumps(record))  # the form a resumed run reads back
            self.records.append(record)
            append_jsonl(self.file("metrics.jsonl"), record)
            kill_point(f"metrics:{self.name or 'run'}:{record['step']}")
            self.rundir.log_tensorboard(record, tb_prefix, members)
            if after_eval is not None:
                after_eval(parallel.replicated(st), record)
            POSITION.update(label=self.label, step=record["step"])
            step = record["step"]
            if step % checkpoint_every == 0 or step == stop or stopping["requested"]:
                self.checkpointer.save(step, st, {"step": step, "reference_loss": self.guard.reference.tolist()})
            if stopping["requested"]:
                raise Interrupted(self.label, step)

        with deferred_interrupt() as stopping:
            try:
                state = trainer.run(state, stop, eval_every, key, on_eval=on_eval, progress=progress,
                                    guard=self.guard, donate=True)
            except Diverged as e:
                raise Diverged(e.step, f"{e.reason}; {self._last_finite_checkpoint()}") from None
            if stopping["requested"]:  # Ctrl-C after the last evaluation: `stop` is checkpointed
                raise Interrupted(self.label, POSITION["step"])
            return state

    def _last_finite_checkpoint(self) -> str:
        by_step = {r["step"]: r for r in self.records}
        for step in reversed(self.checkpointer.steps()):
            r = by_step.get(step, {})
            loss = r.get("val_loss", r.get("test_loss"))
            if loss is not None and all(v is not None and math.isfinite(v) for v in np.ravel(loss).tolist()):
                return f"the last checkpoint with a finite validation loss is {self.checkpointer.directory}/{step}"
        return f"{self.label} has no checkpoint with a finite validation loss to go back to"


@contextlib.contextmanager
def deferred_interrupt():
    """While training, the first Ctrl-C asks to stop at the next evaluation; a
    second one stops at once."""
    stopping = {"requested": False}
    if threading.current_thread() is not threading.main_thread():
        yield stopping
        return

    def handler(signum, frame):
        if stopping["requested"]:
            if HARD_STOP:
                print(interrupted_message(), file=sys.stderr, flush=True)
                sys.stdout.flush()
                os._exit(130)
            raise KeyboardInterrupt
        stopping["requested"] = True
        print("Ctrl-C: stopping at the next evaluation (press again to stop at once)", flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stopping
    finally:
        signal.signal(signal.SIGINT, previous)
