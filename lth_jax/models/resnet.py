"""Residual networks with basic blocks (two 3x3 convs, no conv biases).

- resnet20 / resnet56: the CIFAR ResNets of He et al. (2016) as implemented in
  open_lth (models/cifar_resnet.py): 3x3 stem conv (16 filters) + BN + ReLU,
  three stages of (depth-2)/6 blocks with 16/32/64 filters, stride 2 at the
  start of stages 2 and 3, where the shortcut is a 1x1 conv (stride 2) + BN
  (He et al.'s option B; option A would be a parameter-free zero-padded
  identity); global average pool; Dense `output`. open_lth's defaults:
  kaiming-normal kernels, BN scale ~ U[0, 1), zero shifts.
  Parameters (10 classes): resnet20 272,474 (= open_lth cifar_resnet_20);
  resnet56 855,770.
- resnet18: the low-resolution ResNet-18 of the data-diet paper (Paul et al.
  2021, mansheej/data_diet models.py): 3x3 stride-1 stem conv (64) + BN +
  ReLU, no max-pool, stages [2, 2, 2, 2] with 64/128/256/512 filters, 1x1
  conv + BN projection shortcut where the shape changes, global average pool,
  Dense `output`; flax default initialisers (lecun normal, BN scale 1).
  11,173,962 parameters for 10 classes (the same count as the common
  PyTorch CIFAR ResNet-18, kuangliu/pytorch-cifar).

Names: stem_conv, stem_bn, block_{stage}_{index}/{conv_0,bn_0,conv_1,bn_1,
shortcut_conv,shortcut_bn}, output. `width` = filters of the first stage.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from lth_jax.models import common


class BasicBlock(nn.Module):
    features: int
    strides: int = 1
    kernel_init: Callable = nn.initializers.lecun_normal()
    bn_scale_init: Callable = nn.initializers.ones
    fast_conv: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        def conv(features, kernel, strides, name):
            return common.conv(
                self.fast_conv, features=features, kernel_size=(kernel, kernel),
                strides=(strides, strides), padding="SAME", use_bias=False,
                kernel_init=self.kernel_init, name=name,
            )

        def bn(name):
            return common.batch_norm(train, scale_init=self.bn_scale_init, name=name)

        y = nn.relu(bn("bn_0")(conv(self.features, 3, self.strides, "conv_0")(x)))
        y = bn("bn_1")(conv(self.features, 3, 1, "conv_1")(y))
        shortcut = x
        if self.strides != 1 or x.shape[-1] != self.features:
            shortcut = bn("shortcut_bn")(conv(self.features, 1, self.strides, "shortcut_conv")(x))
        return nn.relu(y + shortcut)


class ResNet(nn.Module):
    """Stem conv, stages of BasicBlocks (filters double, stride 2 at each new
    stage), global average pool, Dense `output`."""

    num_classes: int
    stage_sizes: Sequence[int] = (3, 3, 3)
    width: int = 16
    kernel_init: Callable = nn.initializers.lecun_normal()
    bn_scale_init: Callable = nn.initializers.ones
    fast_conv: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = common.conv(
            self.fast_conv, features=self.width, kernel_size=(3, 3), padding="SAME",
            use_bias=False, kernel_init=self.kernel_init, name="stem_conv",
        )(x)
        x = common.batch_norm(train, scale_init=self.bn_scale_init, name="stem_bn")(x)
        x = nn.relu(x)
        for stage, size in enumerate(self.stage_sizes):
            for index in range(size):
                x = BasicBlock(
                    features=self.width * 2**stage,
                    strides=2 if stage > 0 and index == 0 else 1,
                    kernel_init=self.kernel_init,
                    bn_scale_init=self.bn_scale_init,
                    fast_conv=self.fast_conv,
                    name=f"block_{stage}_{index}",
                )(x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="output")(x)


def _cifar(depth: int, num_classes: int, **kw) -> ResNet:
    n = (depth - 2) // 6
    kw.setdefault("kernel_init", common.kaiming_normal)
    kw.setdefault("bn_scale_init", common.uniform_scale)
    return ResNet(num_classes=num_classes, stage_sizes=(n, n, n), **kw)


def resnet20(num_classes: int, **kw) -> ResNet:
    return _cifar(20, num_classes, **kw)


def resnet56(num_classes: int, **kw) -> ResNet:
    return _cifar(56, num_classes, **kw)


def resnet18(num_classes: int, **kw) -> ResNet:
    kw.setdefault("width", 64)
    return ResNet(num_classes=num_classes, stage_sizes=(2, 2, 2, 2), **kw)
