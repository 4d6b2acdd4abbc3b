"""What `fit` checks before it compiles anything.

Each mistake a notebook user makes with fit's arguments (an empty training
set, inputs of another width, labels shaped (n, 1), a stack of members
without members=True or with one member's mask) is one LthError naming what
is wrong and how to fix it, instead of an error from inside jax or flax. The
model checks run the model abstractly (`jax.eval_shape`) on one example, so
they cost a trace, no computation.
"""
from __future__ import annotations

import warnings

import flax
import flax.linen as nn
import jax
import numpy as np

from lth_jax.errors import LthError, check
from lth_jax.train import call_model, mode_kwargs
from lth_jax.trees import named_leaves

SHAPED_LOSSES = ("squared", "l1")  # per-example losses of outputs - y: a shape mismatch broadcasts silently


def check_data(x, y, eval_data, loss) -> None:
    """Non-empty sets of (x, y) pairs; one integer label per example for cross-entropy."""
    check(len(x) >= 1, f"fit: the training set is empty (x has shape {np.shape(x)}); pass at least "
                       "batch_size examples")
    for name, pair in (eval_data or {}).items():
        check(isinstance(pair, (tuple, list)) and len(pair) == 2, f"fit: eval_data[{name!r}] must be a pair (x, y)")
        ex, ey = (np.asarray(a) for a in pair)
        check(len(ex) >= 1, f"fit: eval_data[{name!r}] is empty; pass at least one example or leave it out")
        check(len(ex) == len(ey), f"fit: eval_data[{name!r}] has {len(ex)} inputs and {len(ey)} labels")
    if loss == "cross_entropy":
        for name, labels in [("training", y), *((n, np.asarray(p[1])) for n, p in (eval_data or {}).items())]:
            check(np.ndim(labels) == 1,
                  f"fit: {name} labels have shape {np.shape(labels)}; cross-entropy needs one integer label per "
                  f"example, shape ({len(labels)},): pass y.reshape(-1) if each row holds one label, or loss= "
                  "for other targets")


def check_members(variables, mask) -> None:
    """members=True: every leaf of the variables and the mask has the same
    leading member axis (vmap would otherwise stop on inconsistent sizes)."""
    params = named_leaves(variables["params"])
    check(params, "fit(members=True): variables['params'] holds no arrays")
    first, leaf = next(iter(params.items()))
    check(np.ndim(leaf) >= 1, f"fit(members=True): parameter {first!r} is a scalar; stack the members' "
                              "variables on a leading axis (ensemble.stack)")
    k = np.shape(leaf)[0]
    trees = [("parameter", variables["params"]), ("batch_stats", variables.get("batch_stats", {}))]
    for what, tree in trees + ([("mask", mask)] if mask is not None else []):
        for name, a in named_leaves(tree).items():
            if np.ndim(a) >= 1 and np.shape(a)[0] == k:
                continue
            one_members = what == "mask" and name in params and np.shape(a) == np.shape(params[name])[1:]
            hint = (f"the mask is one member's; stack one per member: ensemble.stack([mask] * {k})" if one_members
                    else "stack every member's variables (and masks) with ensemble.stack")
            raise LthError(f"fit(members=True): {what} leaf {name!r} has shape {np.shape(a)}, but the parameters "
                           f"are stacked on a member axis of {k} ({first!r} has shape {np.shape(leaf)}); {hint}")


def check_model(model, variables, sets: dict, *, loss, rngs, members: bool) -> None:
    """The model runs on these inputs with these variables (as a training step
    calls it) and its outputs fit the labels of `sets` ({"training": (x, y),
    **eval_data}); a plain function given BatchNorm statistics is warned that
    they stay frozen."""
    x = sets["training"][0]
    one = jax.tree_util.tree_map(lambda a: a[0], variables) if members else variables
    sample = jax.ShapeDtypeStruct((1, *np.shape(x)[1:]), np.asarray(x).dtype)
    try:
        out = jax.eval_shape(lambda v, xb: call_model(model, v, xb, train=True, rngs=rngs)[0], one, sample)
    except flax.errors.ScopeParamShapeError as e:
        raise _shape_error(model, one, sample, rngs, members, _first_sentence(e)) from None
    except flax.errors.ModifyScopeVariableError as e:
        raise LthError(f"fit: the model function updates variables ({_first_sentence(e)}), which a plain function "
                       "cannot hand back; pass the flax Module itself: fit(model, ...)") from None
    if not isinstance(model, nn.Module) and variables.get("batch_stats"):
        warnings.warn("fit: the model is a plain function, so variables['batch_stats'] stay as given (BatchNorm "
                      "trains on frozen statistics); pass the flax Module itself, fit(model, ...), to train it as "
                      "the module does", stacklevel=3)
    if loss == "cross_entropy":
        _check_labels(out, sets)
    elif loss in SHAPED_LOSSES:
        for name, (_, targets) in sets.items():
            got, want = tuple(np.shape(targets)[1:]), tuple(out.shape[1:])
            check(got == want, f"fit: {name} targets have shape {got} per example, the model outputs {want}; the "
                               f"{loss} loss needs the same (else outputs - y broadcasts): reshape the targets")


def _first_sentence(error) -> str:
    """A flax error's message without the link flax appends."""
    return str(error).split(" (https://")[0].rstrip(".")


def _check_labels(out, sets: dict) -> None:
    """Integer labels in [0, number of outputs), for every set."""
    check(hasattr(out, "shape") and len(out.shape) == 2,
          f"fit: cross-entropy needs (batch, classes) logits, the model returns {out}; pass loss=")
    classes = out.shape[-1]
    for name, (_, labels) in sets.items():
        labels = np.asarray(labels)
        check(np.issubdtype(labels.dtype, np.integer), f"fit: {name} labels must be integers for "
                                                       f"cross-entropy, got {labels.dtype}; pass loss= for regression")
        check(labels.min() >= 0 and labels.max() < classes,
              f"fit: {name} labels span [{labels.min()}, {labels.max()}], the model has {classes} outputs; "
              f"labels must be in [0, {classes})")


def _shape_error(model, variables, sample, rngs, members: bool, flax_says: str) -> LthError:
    """One line for variables that don't fit the model on these inputs: a
    stack without members=True, or the first parameter whose shape the
    inputs don't give (compared with an abstract init of a Module)."""
    per_example = tuple(sample.shape[1:])
    generic = LthError(f"fit: the variables don't fit the model on inputs of shape {per_example} per example "
                       f"({flax_says}); pass inputs of the shape the variables were made for, or members=True for "
                       "variables stacked with ensemble.stack")
    if not isinstance(model, nn.Module):
        return generic
    keys = {"params": jax.random.key(0), **(rngs or {})}
    try:
        want = jax.eval_shape(lambda xb: model.init(keys, xb, **mode_kwargs(model.__call__, False)), sample)
    except Exception:  # noqa: BLE001  (a module that can't init abstractly: flax's own sentence still names the leaf)
        return generic
    want, got = named_leaves(want["params"]), named_leaves(variables["params"])
    if set(want) != set(got):
        return LthError(f"fit: the variables' parameters are not the model's: missing "
                        f"{sorted(set(want) - set(got))[:3]}, unexpected {sorted(set(got) - set(want))[:3]}")
    k = {np.shape(got[n])[0] if np.shape(got[n])[1:] == want[n].shape else None for n in want}
    if not members and len(k) == 1 and None not in k:
        return LthError(f"fit: the variables are a stack of {k.pop()} members (every parameter has a leading member "
                        "axis); pass members=True to train them together, or one member: ensemble.take(variables, i)")
    wrong = [n for n in want if np.shape(got[n]) != want[n].shape] or [next(iter(want))]
    name = wrong[0]
    return LthError(f"fit: parameter {name!r} has shape {np.shape(got[name])}, but inputs of shape {per_example} per "
                    f"example make it {want[name].shape}; pass inputs of the shape the variables were made for (or "
                    "variables made for these inputs: model.init(key, x[:1]))")
