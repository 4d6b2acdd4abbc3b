"""Example difficulty scores: EL2N, GraNd, input norm, forgetting events.

All scores are pure functions of (apply_fn, variables, x, y) that compose with
`jax.jit` and `jax.vmap`; `apply_fn(variables, x) -> logits` runs the model in
evaluation mode (BatchNorm on running statistics), `y` holds integer labels.

    apply_fn = lambda v, x: model.apply(v, x, train=False)
    s = scores.el2n(apply_fn, variables, x, y)                       # (N,)
    g = scores.grand(apply_fn, variables, x, y, model=model)         # (N,)
    s = scores.ensemble(scores.el2n, apply_fn, stacked, x, y)        # (K, N)
    paper_score = s.mean(0)

GraNd (Paul et al. 2021) is the L2 norm, over every leaf of
variables["params"] (kernels, biases, BatchNorm scales and shifts), of the
gradient of one example's cross-entropy. Two implementations:

- "fast" (ghost norms, scores/ghost.py): one forward and one backward pass of
  the summed loss over the batch; per-example norms are assembled from each
  layer's inputs and output gradients, never forming per-example gradients of
  the whole model. Available when `model=` (the flax Module that apply_fn
  runs) is given and every parameter leaf belongs to exactly one call of an
  `nn.Dense`, `nn.Conv` (ungrouped, no input dilation, SAME/VALID/explicit
  padding, no mask) or evaluation-mode `nn.BatchNorm` (last-axis features).
  Every model of lth_jax.models qualifies.
- "vmap": jax.vmap over examples of jax.grad of the single-example loss, the
  squares summed leaf by leaf inside the vmap (no (batch x params) matrix).
  Works for any differentiable apply_fn.

method="auto" (default) takes "fast" when model is given and it covers all
parameters, else "vmap" (a black-box apply_fn without `model` always gets
"vmap"); method="fast" raises LthError (one line, naming what is not covered)
when it can't; method="vmap" forces the fallback. `grand_method(...)` says
which one a call gets, and why. The choice is made at trace time from shapes
(two abstract traces of apply_fn) and adds nothing to the compiled
computation. `model` only opts in: the layers are found by intercepting the
flax calls apply_fn makes, so apply_fn must call the model directly (a
jax.jit-wrapped apply_fn falls back to "vmap"). The fast path assumes that
examples don't interact (evaluation mode); see scores/ghost.py.

Speed on 2 CPU cores (bench/grand.py): LeNet-300-100 ~30x faster than the
vmap fallback, Conv-6 ~2x; both several times faster than torch.func.

Forgetting events (Toneva et al. 2019) count correct -> incorrect transitions
over a training run's history; see `forgetting_events` for the convention on
never-learned examples.
"""

from __future__ import annotations

import functools
import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from lth_jax import errors, memory
from lth_jax.scores import ghost

__all__ = ["el2n", "grand", "grand_method", "input_norm", "ensemble", "forgetting_events", "member_count"]

METHODS = ("auto", "fast", "vmap")


def _check_xy(name, x, y):
    errors.check(
        np.ndim(x) >= 1 and np.ndim(y) == 1 and np.shape(x)[0] == np.shape(y)[0],
        f"{name}: x must be (N, ...) and y (N,) integer labels with the same N; "
        f"got x {np.shape(x)} and y {np.shape(y)}",
    )
    errors.check(
        jnp.issubdtype(jnp.result_type(y), jnp.integer),
        f"{name}: y must hold integer class labels, got dtype {jnp.result_type(y)}",
    )


def member_count(model, variables, x):
    """K when `variables` are K members of `model` stacked on a leading axis
    (`lth_jax.ensemble.stack`), None when they are one member's. Decided from
    shapes only (an abstract `model.init`); LthError when they are neither."""
    from lth_jax.train import mode_kwargs
    from lth_jax.trees import named_leaves
    errors.check(hasattr(variables, "get") and variables.get("params") is not None,
                 "the variables must be a dict with a 'params' collection")
    sample = jax.ShapeDtypeStruct((1, *np.shape(x)[1:]), jnp.result_type(x))
    want = jax.eval_shape(lambda xs: model.init(jax.random.key(0), xs, **mode_kwargs(model.__call__, False)),
                          sample)["params"]
    want, got = named_leaves(want), named_leaves(variables["params"])
    errors.check(set(want) == set(got), "the variables' parameters are not the model's: missing "
                                        f"{sorted(set(want) - set(got))[:3]}, unexpected {sorted(set(got) - set(want))[:3]}")
    if all(np.shape(got[n]) == want[n].shape for n in want):
        return None
    ks = {np.shape(got[n])[0] if np.shape(got[n])[1:] == want[n].shape else None for n in want}
    errors.check(len(ks) == 1 and None not in ks, "the variables' shapes are neither the model's nor a stack of "
                                                  "members of it (ensemble.stack)")
    return ks.pop()


def _stacked(score_fn, apply_fn, variables, x, y, model):
    """Scores of a stacked ensemble (K, N), or None for a single member."""
    if model is None:
        return None
    k = member_count(model, variables, x)
    return None if k is None else ensemble(score_fn, apply_fn, variables, x, y, model=model)


def _single(name, fn):
    """Run fn; a flax shape error from stacked variables without `model` gets one line."""
    import flax
    try:
        return fn()
    except flax.errors.ScopeParamShapeError:
        raise errors.LthError(f"{name}: the variables don't fit the model; for a stacked ensemble pass model= "
                              "(the member axis is then handled inside) or use scores.ensemble") from None


def el2n(apply_fn, variables, x, y, *, model=None):
    """(N,) EL2N: || softmax(logits) - onehot(y) ||_2 per example.

    With `model` (the flax Module apply_fn runs), variables stacked on a
    leading member axis give (K, N): one row per member (see `ensemble`)."""
    _check_xy("el2n", x, y)
    stacked = _stacked(el2n, apply_fn, variables, x, y, model)
    if stacked is not None:
        return stacked
    logits = _single("el2n", lambda: apply_fn(variables, x))
    p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    err = p - jax.nn.one_hot(y, logits.shape[-1], dtype=p.dtype)
    return jnp.sqrt(jnp.sum(jnp.square(err), axis=-1))


def input_norm(x):
    """(N,) L2 norm of each flattened input (Kirsch 2023's baseline for GraNd)."""
    errors.check(np.ndim(x) >= 1, f"input_norm: x must be (N, ...), got shape {np.shape(x)}")
    x = jnp.asarray(x, jnp.float32)
    return jnp.sqrt(jnp.sum(jnp.square(x.reshape(x.shape[0], -1)), axis=-1))


def _vmap_sq_norms(apply_fn, variables, x, y):
    params = variables["params"]

    def one(xi, yi):
        def loss(p):
            logits = apply_fn({**variables, "params": p}, xi[None])
            return optax.softmax_cross_entropy_with_integer_labels(logits, yi[None])[0]

        g = jax.grad(loss)(params)
        return sum(jnp.sum(jnp.square(leaf.astype(jnp.float32))) for leaf in jax.tree_util.tree_leaves(g))

    return jax.vmap(one)(x, y)


def grand_method(apply_fn, variables, x, *, model=None, method="auto"):
    """Which implementation `grand` uses for these arguments: ("fast", layers)
    or ("vmap", reason). Raises LthError where method="fast" is impossible.

    With `model`, variables stacked on a leading member axis are accepted as
    `grand` accepts them: the answer is the one every member gets (they share
    their shapes), found on the first member."""
    errors.check(method in METHODS, f"grand: method must be one of {', '.join(METHODS)}; got {method!r}")
    if method == "vmap":
        return "vmap", "method='vmap' asked for"
    if model is None:
        errors.check(
            method != "fast",
            "grand(method='fast') needs model= (the flax Module that apply_fn runs); "
            "pass it or use method='auto'/'vmap'",
        )
        return "vmap", "no model given (black-box apply_fn)"
    if member_count(model, variables, x) is not None:
        variables = jax.tree_util.tree_map(lambda a: a[0], variables)
    layers = ghost.plan(apply_fn, variables, x)
    if isinstance(layers, str):
        errors.check(
            method != "fast",
            f"grand(method='fast') can't cover all parameters: {layers}; use method='auto' or 'vmap'",
        )
        return "vmap", layers
    return "fast", layers


_WARNED = set()


def _warn_fallback(reason: str) -> None:
    """Once per reason: model= asked for the fast path, and it silently costing
    30-130x (a new layer type, a flax release the interceptor misses) is worse
    than one line."""
    if reason not in _WARNED:
        _WARNED.add(reason)
        warnings.warn(f"scores.grand: the fast path does not cover this model ({reason}); using vmap(grad) "
                      "instead: the same numbers, many times slower. Pass method='vmap' to silence this.",
                      stacklevel=2)


def grand(apply_fn, variables, x, y, *, model=None, method="auto"):
    """(N,) GraNd: L2 norm over all parameters of the gradient of each
    example's cross-entropy (see the module docstring for `method`).

    With `model`, variables stacked on a leading member axis give (K, N), one
    row per member, each on the fast path (see `ensemble`)."""
    _check_xy("grand", x, y)
    errors.check(
        hasattr(variables, "get") and variables.get("params") is not None,
        "grand: variables must be a dict with a 'params' collection",
    )
    if model is not None and member_count(model, variables, x) is not None:
        return ensemble(functools.partial(grand, method=method), apply_fn, variables, x, y, model=model)
    def single():
        how, layers = grand_method(apply_fn, variables, x, model=model, method=method)
        if how == "fast":
            return ghost.sq_norms(apply_fn, variables, x, y, layers)
        if model is not None and method == "auto":
            _warn_fallback(layers)
        return _vmap_sq_norms(apply_fn, variables, x, y)
    return jnp.sqrt(jnp.maximum(_single("grand", single), 0.0))


def _takes_model(score_fn) -> bool:
    try:
        params = inspect.signature(score_fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "model" or p.kind is p.VAR_KEYWORD for p in params)


@functools.partial(jax.jit, static_argnames=("score_fn", "apply_fn", "chunk_size", "model"))
def _ensemble(stacked_variables, x, y, *, score_fn, apply_fn, chunk_size, model):
    kw = {} if model is None or not _takes_model(score_fn) else {"model": model}
    n = x.shape[0]

    k = jax.tree_util.tree_leaves(stacked_variables)[0].shape[0]

    def members(xc, yc):
        if k == 1:  # no member axis to vectorise over: skip vmap's batching rules
            one = jax.tree_util.tree_map(lambda a: a[0], stacked_variables)
            return score_fn(apply_fn, one, xc, yc, **kw)[None]
        return jax.vmap(lambda v: score_fn(apply_fn, v, xc, yc, **kw))(stacked_variables)

    c = min(chunk_size, n)
    chunks = -(-n // c)
    if chunks == 1:
        return members(x, y)
    pad = chunks * c - n
    xp = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
    yp = jnp.concatenate([y, jnp.zeros((pad,), y.dtype)]) if pad else y
    out = lax.map(
        lambda b: members(*b),
        (xp.reshape((chunks, c) + x.shape[1:]), yp.reshape(chunks, c)),
    )  # (chunks, K, c)
    return jnp.moveaxis(out, 1, 0).reshape(k, chunks * c)[:, :n]


def ensemble(score_fn, apply_fn, stacked_variables, x, y, *, chunk_size=None, model=None):
    """(K, N) scores of each of K ensemble members (stacked on the leading
    axis of every leaf of `stacked_variables`), computed `chunk_size`
    examples at a time (the last chunk is zero-padded, the padding dropped).
    chunk_size=None: the largest chunk that fits in half the device's free
    memory, from the compiled program's memory analysis (1024 on devices that
    report no memory, such as the CPU; see `lth_jax.memory`). Out of device
    memory is one LthError naming chunk_size.
    score_fn(apply_fn, variables, x, y[, model=...]) -> (N,), e.g. el2n or
    grand; `model` is passed on when given and score_fn takes it (so the
    same call works for el2n and grand). The paper's score is the mean
    over axis 0. Jit-compiled; pass the same apply_fn object on later calls
    to reuse the compilation (a fresh lambda recompiles)."""
    errors.check(
        chunk_size is None
        or (isinstance(chunk_size, (int, np.integer)) and not isinstance(chunk_size, bool) and chunk_size >= 1),
        f"ensemble: chunk_size must be a positive integer or None (from the free memory), got {chunk_size!r}",
    )
    _check_xy("ensemble", x, y)
    leaves = jax.tree_util.tree_leaves(stacked_variables)
    errors.check(leaves, "ensemble: stacked_variables has no arrays")
    k = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    errors.check(
        len(k) == 1 and None not in k,
        f"ensemble: every leaf of stacked_variables needs the same leading member axis; got sizes {sorted(map(str, k))}",
    )
    x, y = jnp.asarray(x), jnp.asarray(y)
    static = dict(score_fn=score_fn, apply_fn=apply_fn, model=model)
    if chunk_size is None:
        chunk_size = memory.auto_chunk(
            lambda c: _ensemble.lower(stacked_variables, x, y, chunk_size=c, **static).compile(), int(x.shape[0]), 1024)
    with memory.names_option(f"scoring {int(chunk_size)} examples at a time", "chunk_size (diet.chunk_size)"):
        return _ensemble(stacked_variables, x, y, chunk_size=int(chunk_size), **static)


def forgetting_events(correct_history):
    """(N,) int32 forgetting events (Toneva et al. 2019) from a (T, N) bool
    array, row t = whether each example was classified correctly at
    (mini-batch) presentation t.

    Count = number of t with correct[t-1] and not correct[t]. Examples never
    classified correctly in the whole history count T, more than any learned
    example can have (at most T // 2 events), so they sort as the most
    forgettable (Toneva et al. treat never-learned examples as forgotten
    infinitely often). Unforgettable = learned and never forgotten = 0.
    """
    h = jnp.asarray(correct_history)
    errors.check(
        h.ndim == 2 and h.dtype == jnp.bool_,
        f"forgetting_events: correct_history must be a (T, N) bool array, got {h.dtype} {h.shape}",
    )
    t = h.shape[0]
    events = jnp.sum(h[:-1] & ~h[1:], axis=0, dtype=jnp.int32)
    return jnp.where(jnp.any(h, axis=0), events, jnp.int32(t))
