"""The training loop: compiled chunks of steps, periodic evaluation, early-stop
tracking, divergence detection and a progress bar."""
from __future__ import annotations

import math
import sys
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from lth_jax.errors import LthError, check
from lth_jax.train import Trainer, TrainState, batch_indices, pad_batches


class Diverged(RuntimeError):
    """Training stopped: the loss became non-finite or grew beyond `Guard.FACTOR`
    times the loss of the first step. `step` is the last step whose evaluation
    was completed (the start of the chunk that diverged)."""

    def __init__(self, step: int, reason: str):
        super().__init__(f"training diverged after step {step} ({reason})")
        self.step, self.reason = step, reason


class Guard:
    """Stops a run whose training loss is non-finite, or larger than FACTOR x
    max(1, the loss of its first step), per member. `reference` is that first
    loss (kept in checkpoints so a resumed run applies the same bound)."""

    FACTOR = 1e3

    def __init__(self, reference=None):
        self.reference = None if reference is None else np.asarray(reference, np.float64)

    def check(self, step: int, losses) -> None:
        losses = np.asarray(losses, np.float64)
        if not np.all(np.isfinite(losses)):
            raise Diverged(step, "the training loss is not finite")
        if self.reference is None:
            self.reference = losses[0]
        bound = self.FACTOR * np.maximum(np.abs(self.reference), 1.0)
        if np.any(losses > bound):
            worst = float(losses.max())
            raise Diverged(step, f"the training loss reached {worst:.3g}, over {self.FACTOR:g} x the first "
                                 f"step's {float(np.max(self.reference)):.3g}")


class Loop:
    """Runs a Trainer over a training set, evaluating every `eval_every` steps.

    eval_sets: {"val": (x, y), "test": (x, y)}; each is evaluated on the
    device in padded batches of `eval_batch_size`.
    device_data: keep the training set on the device and gather batches
    inside the compiled loop (fast when it fits); False gathers on the host.
    member_seeds: with a members trainer, one data-order seed per member
    (each an int or tuple); by default all members share the order of `seed`.
    """

    def __init__(self, trainer: Trainer, x_train, y_train, eval_sets: dict, *, batch_size: int,
                 seed, eval_batch_size: int = 1000, device_data: bool = True, put: Callable = None,
                 member_seeds: list | None = None):
        n = len(x_train)
        check(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
        check(batch_size <= n, f"batch_size {batch_size} is larger than the training set ({n} examples); "
                               "lower the batch size or use more data")
        self.trainer, self.batch_size, self.seed = trainer, batch_size, seed
        self.member_seeds, self.member_subsets = member_seeds, None
        self.n_train = n
        put = put or jnp.asarray
        self._put = put
        self.device_data = device_data
        self.x_host, self.y_host = x_train, y_train
        if device_data:
            self.x_dev, self.y_dev = put(x_train), put(np.asarray(y_train, np.int32))
        self.eval_sets = {name: tuple(put(a) for a in pad_batches(x, np.asarray(y, np.int32), eval_batch_size))
                          + (len(x),) for name, (x, y) in eval_sets.items()}
        self._scan = jax.jit(trainer.scan_steps, donate_argnums=0)
        self._scan_host = jax.jit(trainer.scan_batches, donate_argnums=0)
        self._eval = jax.jit(trainer.evaluate_padded)

    def steps_per_epoch(self) -> int:
        return self.n_train // self.batch_size

    def set_members(self, seeds: list | None = None, subsets: list | None = None) -> None:
        """Per-member data: `seeds` (data-order seed of each member) and `subsets`
        (each an index array into the training set that member trains on, all
        of the same length; None = the whole set). Epochs then run over the subset."""
        if subsets is not None:
            for s in subsets:
                check(self.batch_size <= len(s), f"batch_size {self.batch_size} is larger than a training subset "
                                                 f"({len(s)} examples); keep more examples or lower the batch size")
            check(len({len(s) for s in subsets}) == 1, "member subsets must have the same size to train together")
            if seeds is not None:
                check(len(seeds) == len(subsets), "one data seed per member subset")
        self.member_seeds = seeds
        self.member_subsets = None if subsets is None else [np.asarray(s, np.int64) for s in subsets]

    def replace_labels(self, y_train) -> None:
        """Train on other labels (e.g. noisy ones) for the same examples."""
        check(len(y_train) == self.n_train, "replace_labels needs one label per training example")
        self.y_host = np.asarray(y_train, np.int32)
        if self.device_data:
            self.y_dev = self._put(self.y_host)

    def _order(self, seed, subset, start, stop):
        n = self.n_train if subset is None else len(subset)
        index = batch_indices(seed, n, self.batch_size, start, stop)
        return index if subset is None else subset[index].astype(np.int32)

    def run_chunk(self, state: TrainState, stop: int, key):
        start = int(np.asarray(state.step).reshape(-1)[0])
        if self.member_seeds is None and self.member_subsets is None:
            index = batch_indices(self.seed, self.n_train, self.batch_size, start, stop)
        else:
            subsets = self.member_subsets or [None] * len(self.member_seeds)
            seeds = self.member_seeds or [self.seed] * len(subsets)
            index = np.stack([self._order(s, sub, start, stop) for s, sub in zip(seeds, subsets)], axis=1)
        if self.device_data:
            return self._scan(state, self.x_dev, self.y_dev, jnp.asarray(index), key)
        return self._scan_host(state, jnp.asarray(self.x_host[index]), jnp.asarray(self.y_host[index]), key)

    def evaluate(self, state: TrainState) -> dict:
        out = {}
        for name, (xs, ys, ws, n) in self.eval_sets.items():
            loss, correct = self._eval(state.params, state.batch_stats, xs, ys, ws)
            out[f"{name}_loss"] = np.asarray(loss) / n
            out[f"{name}_accuracy"] = np.asarray(correct) / n
        return out

    def run(self, state: TrainState, stop: int, eval_every: int, key, *, on_eval: Callable = None,
            progress: bool | str = True, guard: Guard | None = None) -> TrainState:
        """Train up to step `stop`, evaluating at every multiple of `eval_every` and at `stop`.

        on_eval(state, record) is called after each evaluation (log, checkpoint);
        record = {"step", "train_loss", "train_accuracy", "<set>_loss", ...}, with
        per-member arrays when the trainer has members. `guard` (a fresh Guard by
        default) raises Diverged before on_eval sees a diverged chunk. Progress:
        a bar when stderr is a terminal, else one line per evaluation on stdout.
        The input `state` is donated (its buffers are reused): keep a copy if you need it.
        """
        check(eval_every >= 1, f"eval_every must be >= 1, got {eval_every}")
        guard = Guard() if guard is None else guard
        start = int(np.asarray(state.step).reshape(-1)[0])
        desc = progress if isinstance(progress, str) else "train"
        bar_wanted = bool(progress) and sys.stderr.isatty()
        bar = tqdm(total=stop, initial=start, desc=desc, disable=not bar_wanted, leave=False,
                   unit="step", dynamic_ncols=True)
        step = start
        try:
            while step < stop:
                nxt = min(stop, (step // eval_every + 1) * eval_every)
                state, metrics = self.run_chunk(state, nxt, key)
                guard.check(step, metrics["loss"])
                losses = np.asarray(metrics["loss"])
                record = {"step": nxt, "train_loss": losses.mean(0), "train_accuracy":
                          np.asarray(metrics["accuracy"]).mean(0), **self.evaluate(state)}
                bar.update(nxt - step)
                bar.set_postfix(loss=float(np.mean(record["train_loss"])))
                if progress and not bar_wanted:
                    print(progress_line(desc, record, stop), flush=True)
                step = nxt
                if on_eval is not None:
                    on_eval(state, record)
        finally:
            bar.close()
        return state


def progress_line(desc: str, record: dict, stop: int) -> str:
    """One log line for an evaluation (means over members)."""
    shown = ", ".join(f"{k} {float(np.mean(v)):.4f}" for k, v in record.items()
                      if k.endswith(("_loss", "_accuracy")))
    return f"{desc}: step {record['step']}/{stop}: {shown}"


def early_stop(records: list, key: str = "val_loss") -> dict:
    """The record with the minimum `key` (the early-stopping iteration of the
    lottery papers); ties go to the earliest."""
    valid = [r for r in records if key in r and math.isfinite(float(np.mean(r[key])))]
    if not valid:
        raise LthError(f"no evaluation recorded {key}; add a validation split (data.validation_size > 0)")
    return min(valid, key=lambda r: float(np.mean(r[key])))
