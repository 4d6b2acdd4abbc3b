"""CIFAR VGG-11/16/19 as in open_lth (models/cifar_vgg.py).

3x3 SAME conv (with bias) + BatchNorm + ReLU per plan entry, 2x2 max-pool at
each 'M', then an average pool to 1x1 (open_lth: AvgPool2d(2) on the 2x2 map
of a 32x32 input; here a global mean, identical there and defined for any
input size) and one Dense `output` layer. open_lth's defaults: kaiming-normal
kernels, BatchNorm scale ~ U[0, 1) ("uniform" batchnorm_init), zero shifts.
Parameter counts on CIFAR-10 (BN scale and shift counted, running statistics
not, as torch's `parameters()`): vgg11 9,231,114; vgg16 14,728,266;
vgg19 20,040,522.

`width` = number of filters of the first stage (open_lth: 64); every stage
scales with it.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp

from lth_jax.models import common

PLANS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512),
}


class VGG(nn.Module):
    """Layers: conv_i + bn_i for each conv of the plan, then output."""

    num_classes: int
    plan: Sequence[Union[int, str]] = PLANS[16]
    width: int = 64
    kernel_init: Callable = common.kaiming_normal
    bn_scale_init: Callable = common.uniform_scale
    fast_conv: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        i = 0
        for spec in self.plan:
            if spec == "M":
                x = common.max_pool_2x2(x)
                continue
            features = max(1, spec * self.width // 64)
            x = common.conv(
                self.fast_conv, features=features, kernel_size=(3, 3), padding="SAME",
                kernel_init=self.kernel_init, name=f"conv_{i}",
            )(x)
            x = common.batch_norm(train, scale_init=self.bn_scale_init, name=f"bn_{i}")(x)
            x = nn.relu(x)
            i += 1
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="output")(x)


def vgg11(num_classes: int, **kw) -> VGG:
    return VGG(num_classes=num_classes, plan=PLANS[11], **kw)


def vgg16(num_classes: int, **kw) -> VGG:
    return VGG(num_classes=num_classes, plan=PLANS[16], **kw)


def vgg19(num_classes: int, **kw) -> VGG:
    return VGG(num_classes=num_classes, plan=PLANS[19], **kw)
