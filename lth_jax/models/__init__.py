"""flax.linen model zoo and registry.

    model = models.get("conv6", num_classes=10)
    variables = model.init(key, x, train=False)
    logits = model.apply(variables, x, train=False)
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])  # BN models

Inputs are NHWC images for conv nets; MLPs flatten any (N, ...) input. Every
model's classifier is the Dense layer `output` (kernel path `output/kernel`);
all weights are `nn.Dense` / `nn.Conv` leaves named `kernel` (and `bias`).
Conv nets take `fast_conv=True` (default): gradients go through
`fast_conv.conv_general_dilated` (fast in `lax.scan` on CPU; reverse mode
only). Pass `fast_conv=False` for forward-mode autodiff (jvp, jacfwd).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import numpy as np

from lth_jax import errors
from lth_jax.models import conv, fast_conv, mlp, resnet, vgg

__all__ = ["get", "names", "has_batch_norm", "num_params", "fast_conv"]

# name -> (factory(num_classes, **kw), module class for the allowed keywords,
#          keywords the factory fixes)
_REGISTRY: dict[str, tuple[Callable[..., nn.Module], type, frozenset]] = {
    "mlp": (lambda num_classes, **kw: mlp.MLP(num_classes=num_classes, **kw), mlp.MLP, frozenset()),
    "lenet_300_100": (mlp.lenet_300_100, mlp.MLP, frozenset({"widths"})),
    "conv2": (conv.conv2, conv.ConvNet, frozenset({"filters"})),
    "conv4": (conv.conv4, conv.ConvNet, frozenset({"filters"})),
    "conv6": (conv.conv6, conv.ConvNet, frozenset({"filters"})),
    "vgg11": (vgg.vgg11, vgg.VGG, frozenset({"plan"})),
    "vgg16": (vgg.vgg16, vgg.VGG, frozenset({"plan"})),
    "vgg19": (vgg.vgg19, vgg.VGG, frozenset({"plan"})),
    "resnet20": (resnet.resnet20, resnet.ResNet, frozenset({"stage_sizes"})),
    "resnet56": (resnet.resnet56, resnet.ResNet, frozenset({"stage_sizes"})),
    "resnet18": (resnet.resnet18, resnet.ResNet, frozenset({"stage_sizes"})),
}

_BATCH_NORM = frozenset({"vgg11", "vgg16", "vgg19", "resnet20", "resnet56", "resnet18"})


def names() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def has_batch_norm(name: str) -> bool:
    """Whether the model keeps `batch_stats` (apply with mutable=["batch_stats"] when training)."""
    if name not in _REGISTRY:
        raise errors.unknown("model", name, names())
    return name in _BATCH_NORM


def _allowed(name: str) -> list[str]:
    _, cls, fixed = _REGISTRY[name]
    skip = {"parent", "name", "num_classes"} | set(fixed)
    return sorted(f.name for f in dataclasses.fields(cls) if f.name not in skip)


def _positive_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


def get(name: str, num_classes: int, **kw) -> nn.Module:
    """Build the model `name` with a `num_classes`-way `output` layer.

    Keywords go to the module (e.g. `widths=(300, 100)` for mlp, `width=32`
    for vgg/resnet, `fast_conv=False`); unknown ones raise LthError.
    """
    if name not in _REGISTRY:
        raise errors.unknown("model", name, names())
    errors.check(
        _positive_int(num_classes),
        f"model {name!r}: num_classes must be a positive integer, got {num_classes!r}",
    )
    allowed = _allowed(name)
    bad = sorted(set(kw) - set(allowed))
    errors.check(
        not bad,
        f"model {name!r} does not take {', '.join(bad)}; allowed keywords: {', '.join(allowed)}",
    )
    if "widths" in kw:
        widths = kw["widths"]
        ok = isinstance(widths, (list, tuple)) and all(_positive_int(w) for w in widths)
        errors.check(ok, f"model {name!r}: widths must be a list of positive integers, got {widths!r}")
        kw["widths"] = tuple(int(w) for w in widths)
    if "width" in kw:
        errors.check(
            _positive_int(kw["width"]),
            f"model {name!r}: width must be a positive integer, got {kw['width']!r}",
        )
    factory, _, _ = _REGISTRY[name]
    return factory(int(num_classes), **kw)


def num_params(tree) -> int:
    """Number of scalars in a pytree (pass `variables["params"]`)."""
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(tree)))
