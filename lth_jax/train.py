"""Masked training: a pure train step, a compiled multi-step loop, evaluation.

Invariant: after every step each pruned weight is exactly 0.0, whatever the
optimizer. The gradient is masked before the optimizer (so momentum and Adam
moments of pruned weights stay 0) and the mask is re-applied to the
parameters after the update (so weight decay or any other term cannot revive
them).

Steps run in chunks: `run_steps` is one jit-compiled `lax.scan` over a chunk of
batches. With device-resident data (the default when the data fit) the scan
gathers each batch from the full arrays on the device by index, so a chunk
costs one dispatch; otherwise the batches are gathered on the host.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lth_jax import masks as masks_lib


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    mask: Any

    @property
    def variables(self):
        return variables_of(self.params, self.batch_stats)


def variables_of(params, batch_stats):
    return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


def init_variables(model, key, input_shape):
    """Model variables for per-example `input_shape` (no batch axis)."""
    variables = model.init(key, jnp.zeros((1, *input_shape), jnp.float32), train=False)
    return flax.core.unfreeze(variables)


def create_state(params, batch_stats, tx, mask=None) -> TrainState:
    mask = masks_lib.ones_like(params) if mask is None else mask
    params = masks_lib.apply(params, mask)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats or {},
                      opt_state=tx.init(params), mask=mask)


def cross_entropy(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


@dataclasses.dataclass(frozen=True)
class Trainer:
    """The compiled pieces for one model, optimizer and augmentation.

    augment: None or a function (key, x_batch) -> x_batch run on device.
    batch_sharding: optional jax.sharding for a batch (data parallelism).
    """
    model: Any
    tx: optax.GradientTransformation
    augment: Callable | None = None
    batch_sharding: Any = None
    members: bool = False  # state has a leading member axis (vmapped ensembles)

    def _step(self, per_member: bool = False):
        """The step, vmapped over members when there are members; batches are
        shared by all members unless `per_member` (one batch per member)."""
        if not self.members:
            return self.step
        return jax.vmap(self.step, in_axes=(0, 0, 0, None) if per_member else (0, None, None, None))

    def _eval(self):
        return jax.vmap(self.eval_batch, in_axes=(0, 0, None, None, None)) if self.members else self.eval_batch

    def apply(self, params, batch_stats, x, train: bool):
        variables = variables_of(params, batch_stats)
        if train and batch_stats:
            logits, updates = self.model.apply(variables, x, train=True, mutable=["batch_stats"])
            return logits, updates["batch_stats"]
        return self.model.apply(variables, x, train=train), batch_stats

    def step(self, state: TrainState, x, y, key):
        """One masked optimizer step on batch (x, y); pure, vmappable over state."""
        if self.augment is not None:
            x = self.augment(jax.random.fold_in(key, state.step), x)

        def loss_fn(params):
            logits, new_stats = self.apply(params, state.batch_stats, x, train=True)
            loss = jnp.mean(cross_entropy(logits, y))
            return loss, (logits, new_stats)

        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grads = masks_lib.apply(grads, state.mask)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = masks_lib.apply(optax.apply_updates(state.params, updates), state.mask)
        acc = jnp.mean(jnp.argmax(logits, -1) == y)
        new = state.replace(step=state.step + 1, params=params, batch_stats=new_stats, opt_state=opt_state)
        return new, {"loss": loss, "accuracy": acc}

    def scan_steps(self, state, x_all, y_all, index, key):
        """Steps over the rows of `index` into device-resident x_all, y_all:
        (n, batch) shared by all members, or (n, members, batch) one order per member."""
        def body(st, idx):
            return step(st, self.shard(x_all[idx], per_member), self.shard(y_all[idx], per_member), key)
        per_member = index.ndim == 3
        step = self._step(per_member)
        return jax.lax.scan(body, state, index)

    def scan_batches(self, state, xs, ys, key):
        """Steps over host-gathered batches xs (n, batch, ...), ys (n, batch)."""
        per_member = ys.ndim == 3
        step = self._step(per_member)
        return jax.lax.scan(lambda st, b: step(st, self.shard(b[0], per_member), self.shard(b[1], per_member), key),
                            state, (xs, ys))

    def shard(self, x, member_axis: bool = False):
        """Constrain a batch to the device mesh: per-member batches (K, B, ...) are
        split over members when K divides by the device count (each device trains
        whole members: the ensemble layout), else over the batch axis; a shared
        batch is split over its batch axis (data parallelism)."""
        if self.batch_sharding is None:
            return x
        P = jax.sharding.PartitionSpec
        devices = self.batch_sharding.mesh.shape["data"]
        spec = (P("data") if x.shape[0] % devices == 0 else P(None, "data")) if member_axis else P("data")
        return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(self.batch_sharding.mesh, spec))

    def eval_batch(self, params, batch_stats, x, y, weight):
        x, y, weight = self.shard(x), self.shard(y), self.shard(weight)
        logits, _ = self.apply(params, batch_stats, x, train=False)
        losses = cross_entropy(logits, y)
        correct = jnp.argmax(logits, -1) == y
        return jnp.sum(losses * weight), jnp.sum(correct * weight)

    def evaluate_padded(self, params, batch_stats, xs, ys, ws):
        """Summed loss and correct count over padded batches (n, batch, ...)."""
        evaluate = self._eval()

        def body(carry, b):
            loss, correct = evaluate(params, batch_stats, *b)
            return (carry[0] + loss, carry[1] + correct), None
        zero = jnp.zeros(jax.tree_util.tree_leaves(params)[0].shape[:1] if self.members else ())
        (loss, correct), _ = jax.lax.scan(body, (zero, zero), (xs, ys, ws))
        return loss, correct


def batch_indices(seed, num_examples: int, batch_size: int, start: int, stop: int) -> np.ndarray:
    """Example indices of steps [start, stop): (stop - start, batch_size) int32.

    `seed` is an int or a tuple of ints (e.g. (run seed, replicate)). Each
    epoch is a fresh permutation drawn from (*seed, epoch); the last
    incomplete batch of an epoch is dropped. The order depends only on
    (seed, step), so resuming or rewinding to step k continues the same order.
    """
    per_epoch = num_examples // batch_size
    out = np.empty((stop - start, batch_size), np.int32)
    cache = {}
    for row, s in enumerate(range(start, stop)):
        epoch, pos = divmod(s, per_epoch)
        if epoch not in cache:
            cache = {epoch: np.random.default_rng([*np.atleast_1d(seed), epoch]).permutation(num_examples)}
        out[row] = cache[epoch][pos * batch_size:(pos + 1) * batch_size]
    return out


def pad_batches(x, y, batch_size):
    """(n, batch, ...) arrays with zero padding and a 0/1 weight per example."""
    n = len(x)
    total = -(-n // batch_size) * batch_size
    pad = total - n
    w = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    y = np.concatenate([y, np.zeros(pad, y.dtype)])
    shape = (total // batch_size, batch_size)
    return x.reshape(shape + x.shape[1:]), y.reshape(shape), w.reshape(shape)


def at_step(state: TrainState, step: int) -> TrainState:
    """A fresh state moved to `step` (rewinding): the learning-rate schedule
    continues from `step`; optimizer moments (momentum, Adam) start from zero."""
    def move(x):
        if isinstance(x, optax.ScaleByScheduleState):
            return x._replace(count=jnp.full_like(x.count, step))
        return x
    opt_state = jax.tree_util.tree_map(move, state.opt_state,
                                       is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState))
    return state.replace(step=jnp.full_like(state.step, step), opt_state=opt_state)
