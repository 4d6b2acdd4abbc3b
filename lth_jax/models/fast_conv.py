"""A drop-in `lax.conv_general_dilated` whose gradient is fast on XLA:CPU in loops.

Why: XLA:CPU runs a convolution through its fast (Eigen) path only when the
operands are in the channels-last layout (batch first, features last). JAX's
transpose rules express the gradients of a convolution as convolutions with
*permuted dimension numbers* (the weight gradient treats the batch axis as the
feature axis). Outside a loop XLA inserts copies to fix the layouts; inside the
body of a `while` (so `lax.scan`, `fori_loop`) it does not, and the weight
gradient falls back to a naive loop: a Conv-6 SGD step inside `lax.scan` runs
tens of times slower (jax-ml/jax issue 12868).

Fix: a `jax.custom_vjp` whose backward pass transposes the operands
explicitly and computes both gradients as ordinary NHWC x HWIO -> NHWC
convolutions, the case that is always fast. The forward pass is the plain lax
call. On other backends (GPU, TPU) the backward pass is JAX's own
(`lax.platform_dependent`), so nothing changes there.

Supported: channels-last dimension numbers (what `flax.linen.Conv` passes:
input (N, *spatial, C), kernel (*spatial, I, O)), any number of spatial dims,
any window strides, explicit or 'SAME'/'VALID' padding, any kernel (rhs)
dilation, `lhs_dilation` of 1, `feature_group_count == batch_group_count == 1`.
Anything else is passed to `lax.conv_general_dilated` unchanged.

Limitation of custom_vjp: forward-mode differentiation (`jax.jvp`,
`jax.jacfwd`, `jax.hessian`) is not defined; build the model with
`fast_conv=False` for that.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import numpy as np
from jax import lax

__all__ = ["conv_general_dilated"]


def conv_general_dilated(
    lhs,
    rhs,
    window_strides: Sequence[int],
    padding,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
    out_sharding=None,
):
    """Same signature and result as `jax.lax.conv_general_dilated`; a custom
    gradient for the channels-last case (see the module docstring)."""
    reference = functools.partial(
        lax.conv_general_dilated,
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count,
        precision=precision,
        preferred_element_type=preferred_element_type,
        out_sharding=out_sharding,
    )
    nd = np.ndim(lhs) - 2
    if (
        nd < 1
        or np.ndim(rhs) != nd + 2
        or feature_group_count != 1
        or batch_group_count != 1
        or out_sharding is not None
        or (lhs_dilation is not None and any(d != 1 for d in lhs_dilation))
        or not _channels_last(np.shape(lhs), np.shape(rhs), dimension_numbers)
    ):
        return reference()

    in_spatial = tuple(np.shape(lhs)[1:-1])
    kernel_spatial = tuple(np.shape(rhs)[:-2])
    strides = tuple(int(s) for s in window_strides)
    dilation = tuple(int(d) for d in (rhs_dilation or (1,) * nd))
    if isinstance(padding, str):
        dilated_kernel = tuple((k - 1) * d + 1 for k, d in zip(kernel_spatial, dilation))
        pads = lax.padtype_to_pads(in_spatial, dilated_kernel, strides, padding)
    else:
        pads = padding
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    if len(strides) != nd or len(dilation) != nd or len(pads) != nd:
        return reference()
    static = (strides, pads, dilation, precision, preferred_element_type)
    return _conv(static, lhs, rhs)


def _channels_last(lhs_shape, rhs_shape, dimension_numbers) -> bool:
    nd = len(lhs_shape) - 2
    if dimension_numbers is None:  # lax default is NCHW / OIHW
        return False
    try:
        dn = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
    except (TypeError, ValueError):
        return False
    spatial = tuple(range(1, nd + 1))
    nhwc = (0, nd + 1) + spatial
    hwio = (nd + 1, nd) + tuple(range(nd))
    return (
        tuple(dn.lhs_spec) == nhwc
        and tuple(dn.rhs_spec) == hwio
        and tuple(dn.out_spec) == nhwc
    )


def channels_last_dn(nd: int):
    """Dimension numbers of an NHWC / HWIO / NHWC convolution with `nd` spatial axes."""
    spatial = "DHW"[-nd:] if nd <= 3 else None
    if spatial is None:  # > 3 spatial dims: spell out the specs
        lhs = (0, nd + 1) + tuple(range(1, nd + 1))
        rhs = (nd + 1, nd) + tuple(range(nd))
        return lax.ConvDimensionNumbers(lhs, rhs, lhs)
    return ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")


def _forward(static, lhs, rhs):
    strides, pads, dilation, precision, pref = static
    return lax.conv_general_dilated(
        lhs,
        rhs,
        strides,
        pads,
        rhs_dilation=dilation,
        dimension_numbers=channels_last_dn(lhs.ndim - 2),
        precision=precision,
        preferred_element_type=pref,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _conv(static, lhs, rhs):
    return _forward(static, lhs, rhs)


def _conv_fwd(static, lhs, rhs):
    return _forward(static, lhs, rhs), (lhs, rhs)


def _split_pads(pads):
    """(lo, hi) pairs -> (crop-or-pad config for lax.pad, non-negative pads)."""
    crop = [(min(lo, 0), min(hi, 0), 0) for lo, hi in pads]
    keep = [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
    return crop, keep


def _fast_bwd(static, lhs, rhs, g):
    """Both gradients as plain channels-last convolutions.

    Per spatial axis: input size H, kernel K, dilation d, stride s, pads
    (lo, hi), output size H'; y[i] = sum_k xpad[i*s + k*d] w[k].
    """
    strides, pads, dilation, precision, pref = static
    if g.size == 0 or lhs.size == 0:
        return _lax_bwd(static, lhs, rhs, g)
    nd = lhs.ndim - 2
    dn = channels_last_dn(nd)
    in_spatial = lhs.shape[1:-1]
    k_spatial = rhs.shape[:-2]
    out_spatial = g.shape[1:-1]
    zero = np.zeros((), g.dtype)

    # Input gradient: dilate g by the stride (interior padding), pad by
    # (Kd-1-lo, H+lo-(H'-1)s-1), then a stride-1 conv with the kernel flipped
    # in space and its in/out axes swapped (still HWIO).
    g_pads, interior = [], []
    for h, k, d, s, (lo, _), ho in zip(in_spatial, k_spatial, dilation, strides, pads, out_spatial):
        g_pads.append(((k - 1) * d - lo, h + lo - (ho - 1) * s - 1))
        interior.append(s - 1)
    crop, keep = _split_pads(g_pads)
    g_dil = g
    if any(interior) or any(c != (0, 0, 0) for c in crop):
        config = [(c_lo, c_hi, i) for (c_lo, c_hi, _), i in zip(crop, interior)]
        g_dil = lax.pad(g, zero, [(0, 0, 0)] + config + [(0, 0, 0)])
    w_t = lax.rev(rhs, tuple(range(nd)))
    w_t = jax.numpy.swapaxes(w_t, nd, nd + 1)
    dlhs = lax.conv_general_dilated(
        g_dil,
        w_t.astype(g_dil.dtype),
        (1,) * nd,
        keep,
        rhs_dilation=dilation,
        dimension_numbers=dn,
        precision=precision,
        preferred_element_type=pref,
    )

    # Kernel gradient: batch <-> channel swap makes it a channels-last conv:
    # lhs x^T (C, *H, N), kernel g^T (*H', N, O) dilated by the stride,
    # window stride = the kernel dilation, output (C, *K, O) -> (*K, C, O).
    x_t = jax.numpy.moveaxis(lhs, (0, nd + 1), (nd + 1, 0))
    g_t = jax.numpy.moveaxis(g, 0, nd)
    x_pads = []
    for h, k, d, s, (lo, _), ho in zip(in_spatial, k_spatial, dilation, strides, pads, out_spatial):
        x_pads.append((lo, (k - 1) * d + (ho - 1) * s + 1 - h - lo))
    crop, keep = _split_pads(x_pads)
    if any(c != (0, 0, 0) for c in crop):
        x_t = lax.pad(x_t, np.zeros((), x_t.dtype), [(0, 0, 0)] + crop + [(0, 0, 0)])
    drhs_t = lax.conv_general_dilated(
        x_t.astype(g_t.dtype),
        g_t,
        dilation,
        keep,
        rhs_dilation=strides,
        dimension_numbers=dn,
        precision=precision,
        preferred_element_type=pref,
    )
    drhs = jax.numpy.moveaxis(drhs_t, 0, nd)
    return dlhs.astype(lhs.dtype), drhs.astype(rhs.dtype)


def _lax_bwd(static, lhs, rhs, g):
    _, vjp = jax.vjp(functools.partial(_forward, static), lhs, rhs)
    return vjp(g)


def _conv_bwd(static, res, g):
    lhs, rhs = res
    return lax.platform_dependent(
        lhs,
        rhs,
        g,
        cpu=functools.partial(_fast_bwd, static),
        default=functools.partial(_lax_bwd, static),
    )


_conv.defvjp(_conv_fwd, _conv_bwd)
