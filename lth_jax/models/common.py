"""Pieces shared by the zoo: initialisers, the conv layer, BatchNorm."""

from __future__ import annotations

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


def max_pool_2x2(x):
    """2x2 max-pool, stride 2, VALID (odd edges dropped), as nn.max_pool.

    Written as reshape-then-max because XLA:CPU's gradient of reduce_window
    (select-and-scatter) was 3.3x slower here (269 vs 82 ms on
    (128, 32, 32, 64)). Where several inputs tie for the maximum the gradient
    is shared among them instead of going to one (both are subgradients)."""
    n, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
