"""Masked training: a pure train step, a compiled multi-step scan, evaluation.

Invariant: after every step each pruned weight is exactly 0.0, whatever the
optimizer: the gradient is masked before the optimizer
(`masks.masked_update`, so momentum and Adam moments of pruned weights stay
0) and the mask is re-applied to the new parameters (so weight decay cannot
revive them). `masks.wrap(tx, mask)` packs the same rule as an optax
optimizer for a notebook user's own loop.

Any flax module trains (or its bound ``model.apply``, called as the module, or
a plain ``apply_fn(variables, x)``): the step passes
``train=`` (or ``training=``, ``is_training=``, ``deterministic=not train``)
only when the module's ``__call__`` takes it, feeds the RNG streams named in
`rngs` (Dropout's "dropout" by default) from the step key, and updates the
"batch_stats" collection when the model has one. The loss is cross-entropy
over integer labels, or "squared" / "l1" for regression, or any function
``loss(outputs, y) -> (batch,)`` per-example losses.

Steps run in chunks: `Steps.scan_steps` is one jit-compiled `lax.scan` over a
chunk of batches. With device-resident data (the default when the data fit)
the scan gathers each batch from the full arrays on the device by index, so a
chunk costs one dispatch; otherwise the batches are gathered on the host.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lth_jax import masks as masks_lib
from lth_jax.errors import LthError


@flax.struct.dataclass
class TrainState:
    """What a step reads and writes. `batch_stats` is the model's BatchNorm
    collection ({} without one); `mask` is the weight mask (all True = dense)."""
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


# ---- calling any model ---------------------------------------------------------------------------
MODE_KEYWORDS = ("train", "training", "is_training")


def mode_kwargs(fn, train: bool) -> dict:
    """The keyword that tells `fn` (a module's __call__ or an apply_fn) whether
    it trains: ``train=``, ``training=`` or ``is_training=`` set to `train`, or
    ``deterministic=not train``; {} when it takes none of them."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    for name in MODE_KEYWORDS:
        if name in params:
            return {name: train}
    return {"deterministic": not train} if "deterministic" in params else {}


def _takes(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def as_module(model):
    """The flax Module itself for its bound ``model.apply``, else `model`.

    A bound apply is the module: calling it as a plain function would pass no
    ``train=`` (its signature takes only ``**kwargs``) and no
    mutable=["batch_stats"], so a model with BatchNorm and Dropout would
    train in evaluation mode without a word."""
    owner = getattr(model, "__self__", None)
    if isinstance(owner, nn.Module) and getattr(model, "__func__", None) is nn.Module.apply:
        return owner
    return model


def call_model(model, variables, x, *, train: bool, rngs=None):
    """(outputs, new batch_stats or None) of a flax Module or an apply_fn.

    A Module (or its bound ``model.apply``, see `as_module`) gets its mode
    keyword (see `mode_kwargs`), `rngs`, and, when training with a
    "batch_stats" collection, mutable=["batch_stats"]. A plain
    ``apply_fn(variables, x, ...)`` gets the mode keyword and ``rngs=`` only if
    its signature takes them, and has no mutable state."""
    model = as_module(model)
    if isinstance(model, nn.Module):
        kw = mode_kwargs(model.__call__, train)
        if rngs:
            kw["rngs"] = rngs
        if train and "batch_stats" in variables:
            out, updates = model.apply(variables, x, mutable=["batch_stats"], **kw)
            return out, updates["batch_stats"]
        return model.apply(variables, x, **kw), None
    kw = mode_kwargs(model, train)
    if rngs and _takes(model, "rngs"):
        kw["rngs"] = rngs
    return model(variables, x, **kw), None


def init_variables(model, key, input_shape, rngs: tuple = ("dropout",)):
    """Variables of a flax Module for per-example `input_shape` (no batch axis),
    as a plain dict. The mode keyword, if the module takes one, is False."""
    kw = {"params": key, **{name: jax.random.fold_in(key, i + 1) for i, name in enumerate(rngs)}}
    variables = model.init(kw, jnp.zeros((1, *input_shape), jnp.float32), **mode_kwargs(model.__call__, False))
    return flax.core.unfreeze(variables)


def create_state(params, batch_stats, tx, mask=None) -> TrainState:
    """A step-0 TrainState: the masked parameters and `tx`'s state for them.

    mask: a boolean mask of `params` (checked, see `masks.check`); None = dense.
    The arrays are used as they are (no copy); training never overwrites
    them unless asked to (`fit(donate=True)`)."""
    mask = masks_lib.ones_like(params) if mask is None else mask
    masks_lib.check(mask, params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=masks_lib.apply(params, mask),
                      batch_stats=batch_stats or {}, opt_state=masks_lib.wrap(tx, mask).init(params), mask=mask)


# ---- losses --------------------------------------------------------------------------------------
def cross_entropy(logits, y):
    """Per-example softmax cross-entropy of integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def squared_error(outputs, y):
    """Per-example mean over output dimensions of (outputs - y)^2 (PyTorch's MSELoss)."""
    d = jnp.reshape(outputs - y, (outputs.shape[0], -1))
    return jnp.mean(jnp.square(d), axis=1)


def absolute_error(outputs, y):
    """Per-example mean over output dimensions of |outputs - y| (PyTorch's L1Loss)."""
    d = jnp.reshape(outputs - y, (outputs.shape[0], -1))
    return jnp.mean(jnp.abs(d), axis=1)


LOSSES = {"cross_entropy": cross_entropy, "squared": squared_error, "l1": absolute_error}


def loss_function(loss) -> Callable:
    """"cross_entropy" | "squared" | "l1" | a function (outputs, y) -> (batch,)."""
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise LthError(f"unknown loss {loss!r}; valid: {', '.join(LOSSES)} or a function (outputs, y) -> per-example losses")
    return LOSSES[loss]


# ---- the step ------------------------------------------------------------------------------------
COMPUTE_DTYPES = (None, "float32", "bfloat16")


def _floats_as(tree, dtype):
    return jax.tree_util.tree_map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


@dataclasses.dataclass(frozen=True)
class Steps:
    """The pure, compilable pieces for one model, optimizer, loss and augmentation.

    model: a flax Module or an apply_fn (see `call_model`).
    tx: the optax optimizer (wrapped with the state's mask at every step).
    loss: "cross_entropy" (integer labels; accuracy is reported too) |
      "squared" | "l1" | a function (outputs, y) -> (batch,) losses.
    rngs: names of the RNG streams fed from the step key (Dropout's
      "dropout"); every member of a stack gets the same stream at a step.
    augment: None or a function (key, x_batch) -> x_batch run on device.
    batch_sharding: optional jax.sharding for a batch (data parallelism).
    members: the state has a leading member axis (a stacked ensemble, see
      `lth_jax.ensemble`); steps and evaluation are vmapped over it.
    member_block: how a stack trains inside its one compiled chunk. None:
      every step is vmapped over all members. B >= 1: the members run B at a
      time (`lax.map(..., batch_size=B)`), each block through all the chunk's
      steps before the next, so one block's weights and optimizer state stay
      in the caches; B = 1 runs each member's chunk as the unstacked step
      does (bit-identical to training it alone). "auto" (the default): on one
      CPU device, 1 for stacks of up to 4 members and 4 above (the layouts
      measured fastest there, docs/benchmarks.md: a plain vmap was up to 20%
      slower than training the members one by one); None on GPU/TPU or with
      several devices (members may be sharded over them). Same results up
      to float reordering either way; only speed differs.
    compute_dtype: None (or "float32") computes in the parameters' dtype;
      "bfloat16" casts the parameters and the inputs to bfloat16 for the
      forward and backward pass (every matmul and convolution in bfloat16),
      while the parameters, their gradients, the optimizer state, the masks
      and the BatchNorm statistics stay float32 and the loss is taken on
      float32 outputs (mixed precision; pruned weights stay exactly 0).

    Equal `Steps` (same model, tx object, loss, ...) share their compiled code
    (see `compiled`).
    """
    model: Any
    tx: optax.GradientTransformation
    augment: Callable | None = None
    batch_sharding: Any = None
    members: bool = False
    loss: Any = "cross_entropy"
    rngs: tuple = ("dropout",)
    member_block: Any = "auto"
    compute_dtype: Any = None

    def __post_init__(self):
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise LthError(f"compute_dtype must be one of {', '.join(map(str, COMPUTE_DTYPES))}, "
                           f"got {self.compute_dtype!r}")
        b = self.member_block
        if b != "auto" and b is not None and (isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1):
            raise LthError(f"member_block must be 'auto', None (vmap all members) or an int >= 1, got {b!r}")

    def block_of(self, state) -> int | None:
        """The member block a stacked `state` trains in (see `member_block`);
        None = all members vmapped at every step."""
        if self.member_block != "auto":
            return self.member_block
        if self.batch_sharding is not None or jax.local_device_count() > 1 or jax.default_backend() != "cpu":
            return None
        members = jax.tree_util.tree_leaves(state.params)[0].shape[0]
        return 1 if members <= 4 else 4

    @property
    def classifies(self) -> bool:
        """Integer labels and accuracy (the cross-entropy loss)."""
        return self.loss == "cross_entropy"

    def _step(self, per_member: bool = False):
        """The step, vmapped over members when there are members; batches are
        shared by all members unless `per_member` (one batch per member)."""
        if not self.members:
            return self.step
        return jax.vmap(self.step, in_axes=(0, 0, 0, None) if per_member else (0, None, None, None))

    def _eval(self):
        return jax.vmap(self.eval_batch, in_axes=(0, 0, None, None, None)) if self.members else self.eval_batch

    def _rngs(self, key, step):
        if not self.rngs:
            return None
        key = jax.random.fold_in(key, step)
        return {name: jax.random.fold_in(key, i + 1) for i, name in enumerate(self.rngs)}

    def apply(self, params, batch_stats, x, train: bool, rngs=None):
        low = self.compute_dtype == "bfloat16"
        if low:
            params, x = _floats_as(params, jnp.bfloat16), _floats_as(x, jnp.bfloat16)
        out, new_stats = call_model(self.model, variables_of(params, batch_stats), x, train=train, rngs=rngs)
        if low:  # the loss and the running statistics in float32
            out = _floats_as(out, jnp.float32)
            new_stats = None if new_stats is None else _floats_as(new_stats, jnp.float32)
        return out, batch_stats if new_stats is None else new_stats

    def step(self, state: TrainState, x, y, key):
        """One masked optimizer step on batch (x, y); pure, vmappable over state.
        Returns the new state and {"loss"[, "accuracy"]} of the batch."""
        if self.augment is not None:
            x = self.augment(jax.random.fold_in(key, state.step), x)
        rngs = self._rngs(key, state.step)
        loss_of = loss_function(self.loss)

        def loss_fn(params):
            out, new_stats = self.apply(params, state.batch_stats, x, train=True, rngs=rngs)
            return jnp.mean(loss_of(out, y)), (out, new_stats)

        (loss, (out, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = masks_lib.masked_update(self.tx, state.mask, grads, state.opt_state, state.params)
        params = masks_lib.apply(optax.apply_updates(state.params, updates), state.mask)
        new = state.replace(step=state.step + 1, params=params, batch_stats=new_stats, opt_state=opt_state)
        metrics = {"loss": loss}
        if self.classifies:
            metrics["accuracy"] = jnp.mean(jnp.argmax(out, -1) == y)
        return new, metrics

    def scan_steps(self, state, x_all, y_all, index, key):
        """Steps over the rows of `index` into device-resident x_all, y_all:
        (n, batch) shared by all members, or (n, members, batch) one order per member."""
        def body(st, idx):
            return step(st, self.shard(x_all[idx], per_member), self.shard(y_all[idx], per_member), key)
        per_member = index.ndim == 3
        block = self.members and self.block_of(state)
        if block:
            def one(st, idx):
                return jax.lax.scan(lambda s, i: self.step(s, self.shard(x_all[i]), self.shard(y_all[i]), key),
                                    st, index if idx is None else idx)
            return self._in_blocks(one, state, jnp.moveaxis(index, 1, 0) if per_member else None, block)
        step = self._step(per_member)
        return jax.lax.scan(body, state, index)

    @staticmethod
    def _in_blocks(run, state, member_xs, block: int):
        """`run(one member's state, its xs or None) -> (state, metrics over steps)`
        for every member, `block` at a time; metrics come back (steps, members)
        as the vmapped scan returns them."""
        batch = None if block == 1 else int(block)  # lax.map without batch_size: a plain loop, no vmap of 1
        new, metrics = jax.lax.map(lambda a: run(*a), (state, member_xs), batch_size=batch)
        return new, jax.tree_util.tree_map(lambda m: jnp.moveaxis(m, 0, 1), metrics)

    def scan_batches(self, state, xs, ys, key, per_member: bool = False):
        """Steps over host-gathered batches xs (n, batch, ...), ys (n, batch, ...),
        or (n, members, batch, ...) with `per_member`."""
        block = self.members and self.block_of(state)
        if block:
            def one(st, b):
                b = (xs, ys) if b is None else b
                return jax.lax.scan(lambda s, xy: self.step(s, self.shard(xy[0]), self.shard(xy[1]), key), st, b)
            moved = (jnp.moveaxis(xs, 1, 0), jnp.moveaxis(ys, 1, 0)) if per_member else None
            return self._in_blocks(one, state, moved, block)
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
        """(summed loss, summed correct) of a padded batch; `weight` is 0 on padding.
        Without classification the correct count is 0."""
        x, y, weight = self.shard(x), self.shard(y), self.shard(weight)
        out, _ = self.apply(params, batch_stats, x, train=False, rngs=self._rngs(jax.random.key(0), 0))
        losses = loss_function(self.loss)(out, y)
        correct = (jnp.argmax(out, -1) == y) if self.classifies else jnp.zeros_like(weight)
        return jnp.sum(losses * weight), jnp.sum(correct * weight)

    def dead_rates(self, params, batch_stats, x):
        """Pooled (dynamic, static) dead-neuron rates of the model's ReLUs on
        the batch x in evaluation mode (see `lth_jax.activations`), per member
        for a stack."""
        from lth_jax import activations

        def one(p, b):
            r = activations.dead_rates(lambda v, xb: self.apply(v[0], v[1], xb, train=False)[0], (p, b), x)
            return r["dynamic_all"], r["static_all"]
        return jax.vmap(one)(params, batch_stats) if self.members else one(params, batch_stats)

    def evaluate_padded(self, params, batch_stats, xs, ys, ws):
        """Summed loss and correct count over padded batches (n, batch, ...)."""
        evaluate = self._eval()

        def body(carry, b):
            loss, correct = evaluate(params, batch_stats, *b)
            return (carry[0] + loss, carry[1] + correct), None
        zero = jnp.zeros(jax.tree_util.tree_leaves(params)[0].shape[:1] if self.members else ())
        (loss, correct), _ = jax.lax.scan(body, (zero, zero), (xs, ys, ws))
        return loss, correct


@functools.lru_cache(maxsize=32)
def compiled(steps: Steps) -> dict:
    """The jit-compiled scans and evaluation of `steps`, made once per equal
    `Steps` (so repeated `fit` calls with the same model and tx object compile
    once). The scans donate their input state: callers pass a state they own."""
    return {"scan": jax.jit(steps.scan_steps, donate_argnums=0),
            "scan_host": jax.jit(steps.scan_batches, donate_argnums=0, static_argnames=("per_member",)),
            "evaluate": jax.jit(steps.evaluate_padded), "dead_rates": jax.jit(steps.dead_rates)}


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
    y = np.concatenate([y, np.zeros((pad, *y.shape[1:]), y.dtype)])
    shape = (total // batch_size, batch_size)
    return x.reshape(shape + x.shape[1:]), y.reshape(shape + y.shape[1:]), w.reshape(shape)


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
