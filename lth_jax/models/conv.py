"""Conv-2 / Conv-4 / Conv-6 of Frankle & Carbin (2019), Figure 2 / Table 1.

Pairs of 3x3 SAME convolutions (ReLU) each followed by a 2x2 max-pool, then
fully connected 256-256 (ReLU) and the `output` layer; Gaussian Glorot init.
On CIFAR-10 (32x32x3) the parameter counts (weights + biases) are
4,301,642 / 2,425,930 / 2,262,602. The paper's Table 1 gives 4.3M / 2.4M /
1.7M: the first two match; for Conv-6 the architecture as described (fc input
4x4x256 = 4096) gives 2.26M, and we follow the described architecture.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn

from lth_jax.models import common


class ConvNet(nn.Module):
    """Layers: conv_0 .. conv_{k-1}, dense_0, dense_1, output."""

    num_classes: int
    filters: Sequence[int] = (64, 64)
    fc_widths: Sequence[int] = (256, 256)
    kernel_init: Callable = nn.initializers.glorot_normal()
    fast_conv: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i, f in enumerate(self.filters):
            x = common.conv(
                self.fast_conv, features=f, kernel_size=(3, 3), padding="SAME",
                kernel_init=self.kernel_init, name=f"conv_{i}",
            )(x)
            x = nn.relu(x)
            if i % 2 == 1:
                x = common.max_pool_2x2(x)
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.fc_widths):
            x = nn.Dense(width, kernel_init=self.kernel_init, name=f"dense_{i}")(x)
            x = nn.relu(x)
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="output")(x)


def conv2(num_classes: int, **kw) -> ConvNet:
    return ConvNet(num_classes=num_classes, filters=(64, 64), **kw)


def conv4(num_classes: int, **kw) -> ConvNet:
    return ConvNet(num_classes=num_classes, filters=(64, 64, 128, 128), **kw)


def conv6(num_classes: int, **kw) -> ConvNet:
    return ConvNet(num_classes=num_classes, filters=(64, 64, 128, 128, 256, 256), **kw)
