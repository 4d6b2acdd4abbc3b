"""Common corruptions applied on the device: pure, seeded, jit-compatible, each
at severities 1-5.

Images are (N, H, W, C) floats in [0, 1] (the pixel range lth_jax's loaders
produce before standardising; `standardized` wraps a corruption for
standardised arrays). The image corruptions and their severity tables are
those of CIFAR-10-C (Hendrycks & Dietterich 2019, ``make_cifar_c.py`` in
github.com/hendrycks/robustness), re-implemented in JAX:

| name | what | severities 1-5 |
|---|---|---|
| gaussian_noise | x + N(0, c^2) | c = 0.04, 0.06, 0.08, 0.09, 0.10 |
| shot_noise | Poisson(c x) / c | c = 500, 250, 100, 75, 50 |
| impulse_noise | each value set to 0 or 1 (half each) with probability c (skimage "s&p") | c = 0.01, 0.02, 0.03, 0.05, 0.07 |
| gaussian_blur | Gaussian filter, std c pixels, truncated at 4 std, edge values repeated (scipy "nearest") | c = 0.4, 0.6, 0.7, 0.8, 1.0 |
| contrast | (x - m) c + m, m the image's mean per channel | c = 0.75, 0.5, 0.4, 0.3, 0.15 |
| brightness | HSV value + c (the RGB values scaled by V'/V; gray images: x + c) | c = 0.05, 0.1, 0.15, 0.2, 0.3 |
| pixelate | resized to int(s c) then back to s with PIL's BOX filter (s = 32 in CIFAR-10-C; here the image's own size) | c = 0.95, 0.9, 0.85, 0.75, 0.65 |
| translate | shifted by c pixels in a random one of 8 directions, zeros shifted in (lth_jax's own; not in CIFAR-10-C) | c = 1, 2, 3, 4, 5 |

Every result is clipped to [0, 1], as in the reference.

1-D signals (N, L, C) or (N, L) (MNIST-1D), lth_jax's own tables, for
standardised signals (the loaders' output):

| name | what | severities 1-5 |
|---|---|---|
| signal_noise | x + N(0, c^2) | c = 0.1, 0.2, 0.3, 0.5, 0.8 |
| signal_shift | shifted by c positions (random sign), edge values repeated | c = 2, 4, 6, 8, 10 |
| signal_scale | time axis stretched by c about the centre (linear interpolation, edges repeated) | c = 1.05, 1.1, 1.2, 1.3, 1.4 |

    x_c = corruptions.apply("gaussian_noise", 3, key, x)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax.errors import check, unknown

SEVERITIES = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "translate": (1, 2, 3, 4, 5),
    "signal_noise": (0.1, 0.2, 0.3, 0.5, 0.8),
    "signal_shift": (2, 4, 6, 8, 10),
    "signal_scale": (1.05, 1.1, 1.2, 1.3, 1.4),
}
IMAGE = ("gaussian_noise", "shot_noise", "impulse_noise", "gaussian_blur", "contrast", "brightness", "pixelate",
         "translate")
SIGNAL = ("signal_noise", "signal_shift", "signal_scale")


def names_for(x_shape) -> tuple:
    """The corruptions that apply to examples of this shape (no batch axis)."""
    return IMAGE if len(x_shape) == 3 else SIGNAL


# ---- images ----------------------------------------------------------------------------------------
def _gaussian_noise(key, x, c):
    return x + c * jax.random.normal(key, x.shape, x.dtype)


def _shot_noise(key, x, c):
    return jax.random.poisson(key, jnp.clip(x, 0, 1) * c, x.shape).astype(x.dtype) / c


def _impulse_noise(key, x, c):
    k1, k2 = jax.random.split(key)
    hit = jax.random.uniform(k1, x.shape) < c
    salt = jax.random.uniform(k2, x.shape) < 0.5
    return jnp.where(hit, salt.astype(x.dtype), x)


def _gaussian_kernel(sigma):
    radius = int(4.0 * sigma + 0.5)  # scipy.ndimage's truncate = 4.0
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return jnp.asarray(k / k.sum(), jnp.float32), radius


def _blur_axis(x, kernel, radius, axis):
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    xp = jnp.pad(x, pad, mode="edge")
    n = x.shape[axis]
    return sum(kernel[i] * jax.lax.slice_in_dim(xp, i, i + n, axis=axis) for i in range(2 * radius + 1))


def _gaussian_blur(key, x, c):
    kernel, radius = _gaussian_kernel(c)
    return _blur_axis(_blur_axis(x, kernel, radius, 1), kernel, radius, 2)


def _contrast(key, x, c):
    m = jnp.mean(x, axis=(1, 2), keepdims=True)
    return (x - m) * c + m


def _brightness(key, x, c):
    if x.shape[-1] == 1:
        return x + c
    v = jnp.max(x, axis=-1, keepdims=True)
    v_new = jnp.clip(v + c, 0, 1)
    return jnp.where(v > 0, x * v_new / jnp.where(v > 0, v, 1.0), v_new)


def box_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of PIL's BOX resampling along one axis: output
    pixel i averages the input pixels whose centres fall in its footprint
    [i * s, (i + 1) * s), s = n_in / n_out, widened to one pixel when upsampling."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = (i + 0.5) * scale
        for j in range(n_in):
            u = (j + 0.5 - centre) / support
            w[i, j] = 1.0 if -0.5 <= u < 0.5 else 0.0
        w[i] /= w[i].sum()
    return w


def _pixelate(key, x, c):
    h, w = x.shape[1:3]
    small_h, small_w = int(h * c), int(w * c)
    rows = jnp.asarray(box_resize_matrix(small_h, h) @ box_resize_matrix(h, small_h), x.dtype)
    cols = jnp.asarray(box_resize_matrix(small_w, w) @ box_resize_matrix(w, small_w), x.dtype)
    return jnp.einsum("ih,nhwc,jw->nijc", rows, x, cols)


DIRECTIONS = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)])


def _shift_2d(img, dy, dx):
    """One (H, W, C) image shifted by (dy, dx), zeros shifted in (traced shifts)."""
    h, w = img.shape[:2]
    padded = jnp.pad(img, ((h, h), (w, w), (0, 0)))
    return jax.lax.dynamic_slice(padded, (h - dy, w - dx, 0), img.shape)


def _translate(key, x, c):
    d = jnp.asarray(DIRECTIONS)[jax.random.randint(key, (x.shape[0],), 0, len(DIRECTIONS))] * int(c)
    return jax.vmap(_shift_2d)(x, d[:, 0], d[:, 1])


# ---- 1-D signals -------------------------------------------------------------------------------
def _as_nlc(x):
    return x[..., None] if x.ndim == 2 else x


def _signal_noise(key, x, c):
    return x + c * jax.random.normal(key, x.shape, x.dtype)


def _resample(sig, positions):
    """(L, C) signal read at fractional `positions` by linear interpolation, edges repeated."""
    n = sig.shape[0]
    p = jnp.clip(positions, 0, n - 1)
    lo = jnp.floor(p).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, n - 1)
    t = (p - lo)[:, None]
    return sig[lo] * (1 - t) + sig[hi] * t


def _signal_shift(key, x, c):
    x3 = _as_nlc(x)
    sign = jnp.where(jax.random.bernoulli(key, 0.5, (x3.shape[0],)), 1.0, -1.0)
    n = x3.shape[1]
    out = jax.vmap(lambda s, d: _resample(s, jnp.arange(n) - d))(x3, sign * c)
    return out.reshape(x.shape)


def _signal_scale(key, x, c):
    x3 = _as_nlc(x)
    n = x3.shape[1]
    centre = (n - 1) / 2
    out = jax.vmap(lambda s: _resample(s, centre + (jnp.arange(n) - centre) / c))(x3)
    return out.reshape(x.shape)


_FUNCTIONS = {name: globals()[f"_{name}"] for name in SEVERITIES}
_CLIPPED = set(IMAGE)


def apply(name: str, severity: int, key, x):
    """`x` corrupted by `name` at `severity` (1-5), drawn from `key`. Pure;
    jit it with name and severity static."""
    if name not in SEVERITIES:
        raise unknown("corruption", name, tuple(SEVERITIES))
    check(isinstance(severity, (int, np.integer)) and 1 <= severity <= 5,
          f"corruption severity must be an int in 1..5, got {severity!r}")
    x = jnp.asarray(x, jnp.float32)
    if name in IMAGE:
        check(x.ndim == 4, f"{name} corrupts images (N, H, W, C); got shape {x.shape}")
    else:
        check(x.ndim in (2, 3), f"{name} corrupts 1-D signals (N, L) or (N, L, C); got shape {x.shape}")
    out = _FUNCTIONS[name](key, x, SEVERITIES[name][severity - 1])
    return jnp.clip(out, 0.0, 1.0) if name in _CLIPPED else out


def standardized(name: str, severity: int, key, x, mean, std):
    """`apply` for arrays standardised as (pixel - mean) / std (the loaders'
    output): images are mapped back to [0, 1], corrupted and standardised
    again; 1-D signals are corrupted as they are."""
    if name not in IMAGE:
        return apply(name, severity, key, x)
    pixels = jnp.asarray(x, jnp.float32) * std + mean
    return (apply(name, severity, key, pixels) - mean) / std
