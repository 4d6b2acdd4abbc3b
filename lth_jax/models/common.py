"""Pieces shared by the zoo: initialisers, the conv layer, BatchNorm."""

from __future__ import annotations

import functools

import flax.linen as nn

from lth_jax.models import fast_conv

# torch.nn.init.kaiming_normal_ (fan_in, gain sqrt(2), untruncated normal),
# the default initialiser of open_lth's CIFAR models.
kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
# open_lth's default `batchnorm_init='uniform'`: BN scale ~ U[0, 1), shift 0.
uniform_scale = nn.initializers.uniform(scale=1.0)


def conv(fast: bool = True, **kw) -> nn.Conv:
    """`nn.Conv` whose gradient uses `fast_conv` (see fast_conv.py) if `fast`."""
    if fast:
        kw["conv_general_dilated"] = fast_conv.conv_general_dilated
    return nn.Conv(**kw)


def batch_norm(train: bool, **kw) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, **kw)


max_pool_2x2 = functools.partial(nn.max_pool, window_shape=(2, 2), strides=(2, 2), padding="VALID")
