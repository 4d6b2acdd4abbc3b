"""The trainer: compiled chunks of `Steps`, periodic evaluation, early-stop
tracking, divergence detection and a progress bar; and `fit`, the one call
that trains a model from a notebook (the experiments use the same `Trainer`)."""
from __future__ import annotations

import math
import sys
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from lth_jax import masks as masks_lib
from lth_jax import fit_checks, memory, parallel
from lth_jax.errors import LthError, check
from lth_jax.train import Steps, TrainState, as_module, at_step, batch_indices, compiled, create_state, pad_batches


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


DEFAULT_EVAL_BATCH = 1000  # evaluation batch where the device reports no free memory


class Trainer:
    """Trains `Steps` on one training set: compiled chunks of steps, evaluation
    every `eval_every` steps, the divergence guard, progress.

    eval_sets: {"val": (x, y), "test": (x, y)}; each is evaluated on the
    device in padded batches of `eval_batch_size`.
    device_data: keep the training set on the device and gather batches
    inside the compiled loop (fast when it fits); False gathers on the host.
    sampler: optional function (start, stop) -> (stop - start, batch) example
    indices, replacing the shuffled epochs of `seed`.
    log_activations: add the pooled dead-neuron rates of the model's ReLUs
    ("dead_dynamic", "dead_static", see `lth_jax.activations`) to every
    evaluation, measured on the first `eval_batch_size` examples of the
    "val" set (or of the first evaluation set).
    """

    def __init__(self, steps: Steps, x_train, y_train, eval_sets: dict, *, batch_size: int,
                 seed, eval_batch_size: int = 1000, device_data: bool = True, put: Callable = None,
                 log_activations: bool = False):
        n = len(x_train)
        check(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
        check(batch_size <= n, f"batch_size {batch_size} is larger than the training set ({n} examples); "
                               "lower the batch size or use more data")
        check(eval_batch_size is None or eval_batch_size >= 1,
              f"eval_batch_size must be >= 1 (or None: from the device's free memory), got {eval_batch_size}")
        self.steps, self.batch_size, self.seed = steps, batch_size, seed
        self.member_seeds, self.member_subsets, self.sampler = None, None, None
        self.n_train = n
        put = put or jnp.asarray
        self._put = put
        self.device_data = device_data
        self.x_host, self.y_host = np.asarray(x_train), self._labels(y_train)
        if device_data:
            self.x_dev, self.y_dev = put(self.x_host), put(self.y_host)
        self._raw_eval = {name: (np.asarray(x), self._labels(y)) for name, (x, y) in eval_sets.items()}
        self.eval_batch_size = eval_batch_size
        self.eval_sets = None if eval_batch_size is None else self._padded(eval_batch_size)
        fns = compiled(steps)
        self._scan, self._scan_host, self._eval = fns["scan"], fns["scan_host"], fns["evaluate"]
        self._dead = fns["dead_rates"]
        self.activation_batch = None
        if log_activations and eval_sets:
            name = "val" if "val" in eval_sets else next(iter(eval_sets))
            x = np.asarray(eval_sets[name][0])[:eval_batch_size or DEFAULT_EVAL_BATCH]
            self.activation_batch = put(x)

    def _padded(self, batch: int) -> dict:
        return {name: tuple(self._put(a) for a in pad_batches(x, y, batch)) + (len(x),)
                for name, (x, y) in self._raw_eval.items()}

    def _auto_eval_batch(self, state) -> int:
        """The evaluation batch that fits in half the device's free memory
        (DEFAULT_EVAL_BATCH where the device does not say), from the evaluation
        program's memory analysis (`memory.auto_chunk`)."""
        if not self._raw_eval:
            return DEFAULT_EVAL_BATCH
        x, y = next(iter(self._raw_eval.values()))

        def compile_at(b):
            spec = lambda a: jax.ShapeDtypeStruct((1, b) + a.shape[1:], a.dtype)
            return self._eval.lower(state.params, state.batch_stats, spec(x), spec(y),
                                    jax.ShapeDtypeStruct((1, b), np.float32)).compile()
        batch = memory.auto_chunk(compile_at, max(len(a) for a, _ in self._raw_eval.values()), DEFAULT_EVAL_BATCH)
        if self.steps.batch_sharding is not None:  # split evenly over the devices
            devices = self.steps.batch_sharding.mesh.shape["data"]
            batch = max(devices, batch // devices * devices)
        return batch

    def _labels(self, y):
        return np.asarray(y, np.int32) if self.steps.classifies else np.asarray(y)

    def reseed(self, seed) -> None:
        """Use another data-order seed (an int or tuple) for the following runs."""
        self.seed = seed

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
        self.y_host = self._labels(y_train)
        if self.device_data:
            self.y_dev = self._put(self.y_host)

    def order(self, start: int, stop: int) -> np.ndarray:
        """Example indices of steps [start, stop): (n, batch), or (n, members,
        batch) with per-member seeds or subsets."""
        if self.sampler is not None:
            index = np.asarray(self.sampler(start, stop))
            check(index.shape[:1] == (stop - start,) and index.shape[-1] == self.batch_size
                  and np.issubdtype(index.dtype, np.integer),
                  f"sampler({start}, {stop}) must return ({stop - start}, {self.batch_size}) integer indices, "
                  f"got {index.dtype} {index.shape}")
            return index.astype(np.int32)
        if self.member_seeds is None and self.member_subsets is None:
            return batch_indices(self.seed, self.n_train, self.batch_size, start, stop)
        subsets = self.member_subsets or [None] * len(self.member_seeds)
        seeds = self.member_seeds or [self.seed] * len(subsets)
        return np.stack([self._member_order(s, sub, start, stop) for s, sub in zip(seeds, subsets)], axis=1)

    def _member_order(self, seed, subset, start, stop):
        n = self.n_train if subset is None else len(subset)
        index = batch_indices(seed, n, self.batch_size, start, stop)
        return index if subset is None else subset[index].astype(np.int32)

    def run_chunk(self, state: TrainState, stop: int, key):
        """Steps from state.step to `stop` as one compiled scan (donates `state`)."""
        start = int(parallel.host(state.step).reshape(-1)[0])
        index = self.order(start, stop)
        if self.device_data:
            return self._scan(state, self.x_dev, self.y_dev, jnp.asarray(index), key)
        if self.steps.batch_sharding is not None:  # each process gathers only its devices' share
            x, y = parallel.DataParallel(self.steps.batch_sharding.mesh).batches(index, self.x_host, self.y_host)
        else:
            x, y = jnp.asarray(self.x_host[index]), jnp.asarray(self.y_host[index])
        return self._scan_host(state, x, y, key, per_member=index.ndim == 3)

    def evaluate(self, state: TrainState) -> dict:
        """{"<set>_loss"[, "<set>_accuracy"]} means over each evaluation set."""
        out = {}
        if self.eval_sets is None:
            self.eval_batch_size = self._auto_eval_batch(state)
            self.eval_sets = self._padded(self.eval_batch_size)
        for name, (xs, ys, ws, n) in self.eval_sets.items():
            with memory.names_option(f"evaluating {self.eval_batch_size} examples at a time",
                                     "train.eval_batch_size (eval_batch_size=)"):
                loss, correct = self._eval(state.params, state.batch_stats, xs, ys, ws)
            out[f"{name}_loss"] = parallel.host(loss) / n
            if self.steps.classifies:
                out[f"{name}_accuracy"] = parallel.host(correct) / n
        if self.activation_batch is not None:
            dynamic, static = self._dead(state.params, state.batch_stats, self.activation_batch)
            out["dead_dynamic"], out["dead_static"] = parallel.host(dynamic), parallel.host(static)
        return out

    def run(self, state: TrainState, stop: int, eval_every: int, key, *, on_eval: Callable = None,
            progress: bool | str = True, guard: Guard | None = None, donate: bool = False) -> TrainState:
        """Train up to step `stop`, evaluating at every multiple of `eval_every` and at `stop`.

        on_eval(state, record) is called after each evaluation (log, checkpoint);
        record = {"step", "train_loss"[, "train_accuracy"], "<set>_loss", ...}, with
        per-member arrays when the steps have members. `guard` (a fresh Guard by
        default) raises Diverged before on_eval sees a diverged chunk. Progress:
        a bar when stderr is a terminal, else one line per evaluation on stdout.
        `donate`: the compiled steps may reuse the buffers of `state` (they are
        deleted); by default `state` is copied once first and stays usable.
        """
        check(eval_every >= 1, f"eval_every must be >= 1, got {eval_every}")
        guard = Guard() if guard is None else guard
        start = int(parallel.host(state.step).reshape(-1)[0])
        if not donate and start < stop:
            state = jax.tree_util.tree_map(jnp.copy, state)
        several = self.steps.members and self.steps.batch_sharding is not None and jax.process_count() > 1
        if several and start < stop:  # each process trains its devices' members; all read the result
            state = parallel.DataParallel(self.steps.batch_sharding.mesh).members_split(state)
        desc = progress if isinstance(progress, str) else "train"
        bar_wanted = bool(progress) and sys.stderr.isatty()
        bar = tqdm(total=stop, initial=start, desc=desc, disable=not bar_wanted, leave=False,
                   unit="step", dynamic_ncols=True)
        step = start
        try:
            while step < stop:
                nxt = min(stop, (step // eval_every + 1) * eval_every)
                with memory.names_option(f"training with batches of {self.batch_size}",
                                         "train.batch_size, or train.device_data=False for a large training set"):
                    state, metrics = self.run_chunk(state, nxt, key)
                metrics = {k: parallel.host(v) for k, v in metrics.items()}
                guard.check(step, metrics["loss"])
                record = {"step": nxt, "train_loss": metrics["loss"].mean(0)}
                if "accuracy" in metrics:
                    record["train_accuracy"] = metrics["accuracy"].mean(0)
                record.update(self.evaluate(state))
                bar.update(nxt - step)
                bar.set_postfix(loss=float(np.mean(record["train_loss"])))
                if progress and not bar_wanted:
                    print(progress_line(desc, record, stop), flush=True)
                step = nxt
                if on_eval is not None:
                    on_eval(state, record)
        finally:
            bar.close()
        return parallel.replicated(state) if several else state


def fit(model, variables, tx: optax.GradientTransformation, data, steps: int, *, mask=None, key=None,
        batch_size: int = 128, seed=0, start_step: int = 0, loss="cross_entropy", rngs: tuple = ("dropout",),
        augment: Callable | None = None, eval_data: dict | None = None, eval_every: int | None = None,
        eval_batch_size: int = 1000, callbacks: tuple = (), sampler: Callable | None = None,
        members: bool = False, log_activations: bool = False, progress: bool | str = False,
        donate: bool = False, compute_dtype: str | None = None):
    """Train `model` for `steps` optimizer steps; the one training call of lth_jax.

    The steps run as jit-compiled `lax.scan` chunks (one chunk between two
    evaluations) over data kept on the device; pruned weights stay exactly 0.0
    (`masks.wrap`). The config-driven experiments train through the same
    `Steps` and `Trainer`.

    Args:
      model: a flax Module (``train=``/``training=``/``deterministic=`` passed
        only if its ``__call__`` takes one; BatchNorm statistics updated),
        its bound ``model.apply`` (trained as the module), or a function
        ``apply_fn(variables, x) -> outputs`` (run as it is: it gets the mode
        keyword and ``rngs=`` only if it takes them, and cannot update
        ``batch_stats``, which are then kept as given, with a warning).
      variables: {"params": ...[, "batch_stats": ...]} to start from, or a
        `TrainState` returned by an earlier `fit` to continue it (then `mask`
        and `start_step` come from the state).
      tx: any optax optimizer. Pass the same object again to reuse the compiled code.
      data: (x, y) arrays of the training set (numpy or jax).
      steps: how many steps to run.
      mask: boolean mask of the parameters (checked); None = dense.
      key: PRNG key for augmentation and RNG streams (default key(0)).
      batch_size: examples per step.
      seed: data-order seed (int or tuple); the order depends only on
        (seed, step), so a run continued or rewound to step k sees the batches
        an uninterrupted run would.
      start_step: the step the state starts at (rewinding to step k: the
        learning-rate schedule and the data order continue from k; optimizer
        moments start from zero).
      loss: "cross_entropy" (integer labels, accuracy reported; labels are
        checked to be in [0, number of outputs)), "squared", "l1", or a
        function (outputs, y) -> (batch,) per-example losses.
      rngs: RNG streams fed from `key` at every step (Dropout: "dropout").
      augment: optional (key, x_batch) -> x_batch, run on the device.
      eval_data: {"name": (x, y)} sets evaluated every `eval_every` steps
        and at the end (records get "<name>_loss"[, "<name>_accuracy"]).
      eval_every: default: only at the end.
      callbacks: functions (state, record) called after each evaluation.
      sampler: optional function (start, stop) -> (stop - start, batch_size)
        int array of example indices for steps [start, stop); replaces the
        shuffled epochs (a data subset, a curriculum).
      log_activations: add the dead-neuron rates of the ReLUs ("dead_dynamic",
        "dead_static", on the first `eval_batch_size` examples of the "val" or
        first eval set) to every record (see `lth_jax.activations`).
      members: `variables` are a stack of K members (`ensemble.stack`, each leaf
        with a leading K axis; `mask` stacked too), trained together in one
        compiled program on shared batches (vmapped; on a CPU in blocks of
        members, see `train.Steps.member_block`).
      progress: a tqdm bar on a terminal (a string names it); False = silent.
      donate: when `variables` is a TrainState, let the compiled steps reuse
        its buffers (saves one copy of the state; its arrays are deleted
        afterwards). By default nothing the caller passed is consumed: fit
        copies a passed state once and builds a fresh one from `variables`.
      compute_dtype: "bfloat16" for mixed precision (matmuls and convolutions
        in bfloat16; parameters, optimizer state and loss in float32; see
        `train.Steps`); None computes in the parameters' dtype.

    Returns:
      (state, history): the final `TrainState` and a list of evaluation records
      {"step", "train_loss"[, "train_accuracy"], "<set>_loss", ...} with Python
      floats (NumPy arrays over members for a stack).

    Raises:
      LthError: bad arguments (mask, labels, batch size, variables; see
        `lth_jax.fit_checks`), checked before anything compiles.
      Diverged: the training loss became non-finite or grew 1000-fold.
    """
    check(isinstance(steps, (int, np.integer)) and steps >= 0, f"fit: steps must be an int >= 0, got {steps!r}")
    check(isinstance(data, (tuple, list)) and len(data) == 2, "fit: data must be a pair (x, y) of arrays")
    x, y = (np.asarray(a) for a in data)
    check(len(x) == len(y), f"fit: x has {len(x)} examples, y {len(y)}")
    fit_checks.check_data(x, y, eval_data, loss)
    key = jax.random.key(0) if key is None else key
    steps_ = Steps(as_module(model), tx, augment=augment, members=members, loss=loss, rngs=tuple(rngs),
                   compute_dtype=compute_dtype)
    given = variables if isinstance(variables, TrainState) else None
    if given is not None:
        check(mask is None, "fit: the mask of a TrainState is its own (state.mask); pass variables to use another")
        variables, mask = given.variables, given.mask
    else:
        check(hasattr(variables, "get") and "params" in variables,
              "fit: variables must be a dict with 'params' (and optionally 'batch_stats'), or a TrainState")
        other = sorted(set(variables) - {"params", "batch_stats"})
        check(not other, f"fit: variables hold collections {other}; fit trains 'params' and updates "
                         "'batch_stats' only")
    if members:
        fit_checks.check_members(variables, mask)
    fit_checks.check_model(steps_.model, variables, {"training": (x, y), **dict(eval_data or {})}, loss=loss,
                           rngs=steps_._rngs(jax.random.key(0), 0), members=members)
    if given is not None:
        state = given
    else:
        init = jax.vmap(create_state, in_axes=(0, 0, None, 0)) if members else create_state
        params = variables["params"]
        mask = masks_lib.ones_like(params) if mask is None else mask
        state = init(params, variables.get("batch_stats", {}), tx, mask)
        if start_step:
            state = at_step(state, start_step)
    trainer = Trainer(steps_, x, y, dict(eval_data or {}), batch_size=batch_size, seed=seed,
                      eval_batch_size=eval_batch_size, log_activations=log_activations)
    if sampler is not None:
        trainer.sampler = sampler
    history = []

    def on_eval(st, record):
        history.append({k: (v if k == "step" else _plain(v)) for k, v in record.items()})
        for cb in callbacks:
            cb(st, record)
    stop = int(np.asarray(state.step).reshape(-1)[0]) + steps
    state = trainer.run(state, stop, eval_every or max(steps, 1), key, on_eval=on_eval, progress=progress,
                        donate=donate)
    return state, history


def _plain(v):
    a = np.asarray(v)
    return float(a) if a.ndim == 0 else a


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
