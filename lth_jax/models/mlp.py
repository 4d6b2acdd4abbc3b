"""Fully connected networks: `mlp` (any widths) and LeNet-300-100."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn


class MLP(nn.Module):
    """Flatten, then Dense+ReLU per entry of `widths`, then Dense `output`.

    Layers are named dense_0, dense_1, ..., output. Any input (N, ...) is
    flattened to (N, -1). `train` is accepted for a uniform call signature.
    """

    num_classes: int
    widths: Sequence[int] = (100, 100)
    kernel_init: Callable = nn.initializers.glorot_normal()

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.widths):
            x = nn.Dense(width, kernel_init=self.kernel_init, name=f"dense_{i}")(x)
            x = nn.relu(x)
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="output")(x)


def lenet_300_100(num_classes: int, **kw) -> MLP:
    """LeNet-300-100 of Frankle & Carbin (2019): 784-300-100-10, Gaussian
    Glorot init; 266,610 parameters on 28x28 inputs with 10 classes."""
    return MLP(num_classes=num_classes, widths=(300, 100), **kw)
