"""Corruptions against the reference implementations they follow."""
import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from lth_jax.data import corruptions
from lth_jax.errors import LthError

KEY = jax.random.key(0)


def images(n=4, size=32, channels=3):
    return jax.random.uniform(jax.random.key(1), (n, size, size, channels))


@pytest.mark.parametrize("severity", [1, 5])
def test_gaussian_blur_matches_scipy(severity):
    x = images()
    sigma = corruptions.SEVERITIES["gaussian_blur"][severity - 1]
    want = ndimage.gaussian_filter(np.asarray(x), sigma=(0, sigma, sigma, 0), mode="nearest", truncate=4.0)
    np.testing.assert_allclose(corruptions.apply("gaussian_blur", severity, KEY, x), np.clip(want, 0, 1), atol=1e-5)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_pixelate_matches_pil_box(severity):
    x = np.asarray(images(n=2, channels=3))
    c = corruptions.SEVERITIES["pixelate"][severity - 1]
    got = np.asarray(corruptions.apply("pixelate", severity, KEY, x))
    for i in range(2):  # PIL works in 8 bits: compare after the same quantisation, within one level
        pil = Image.fromarray((x[i] * 255).round().astype(np.uint8))
        small = pil.resize((int(32 * c), int(32 * c)), Image.BOX).resize((32, 32), Image.BOX)
        ours = np.asarray(corruptions.apply("pixelate", severity, KEY, np.round(x[i:i + 1] * 255) / 255))[0]
        assert np.max(np.abs(ours * 255 - np.asarray(small, np.float64))) <= 1.0 + 1e-3
    assert got.shape == x.shape


def test_brightness_matches_hsv_and_contrast_the_image_mean():
    x = images(n=2)
    got = np.asarray(corruptions.apply("brightness", 4, KEY, x))
    px = np.asarray(x)
    for (i, r, c) in [(0, 0, 0), (0, 5, 7), (1, 31, 2), (1, 16, 16)]:
        h, s, v = colorsys.rgb_to_hsv(*px[i, r, c])
        want = colorsys.hsv_to_rgb(h, s, min(v + 0.2, 1.0))
        np.testing.assert_allclose(got[i, r, c], want, atol=1e-5)
    m = px.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(corruptions.apply("contrast", 5, KEY, x), np.clip((px - m) * 0.15 + m, 0, 1),
                               atol=1e-6)


def test_noise_rates_and_seeding():
    x = jnp.full((8, 32, 32, 3), 0.5)
    imp = np.asarray(corruptions.apply("impulse_noise", 5, KEY, x))
    assert abs(np.mean(imp != 0.5) - 0.07) < 0.01 and set(np.unique(imp)) == {0.0, 0.5, 1.0}
    g = np.asarray(corruptions.apply("gaussian_noise", 5, KEY, x)) - 0.5
    assert abs(np.std(g) - 0.10) < 0.005
    shot = np.asarray(corruptions.apply("shot_noise", 5, KEY, x))
    assert abs(shot.mean() - 0.5) < 0.01 and abs(shot.std() - np.sqrt(0.5 / 50)) < 0.01  # Poisson(25) / 50
    again = corruptions.apply("gaussian_noise", 5, KEY, x)
    other = corruptions.apply("gaussian_noise", 5, jax.random.key(9), x)
    assert bool(jnp.all(again == corruptions.apply("gaussian_noise", 5, KEY, x))) and bool(jnp.any(again != other))


def test_damage_grows_with_severity():
    x = images()
    for name in corruptions.IMAGE:
        damage = [float(jnp.mean(jnp.abs(corruptions.apply(name, s, KEY, x) - x))) for s in range(1, 6)]
        assert damage[0] < damage[-1], (name, damage)


def test_translate_shifts_whole_images_with_zeros_in():
    x = images(n=16)
    out = np.asarray(corruptions.apply("translate", 3, KEY, x))
    px = np.asarray(x)
    for i in range(16):
        found = [(dy, dx) for dy, dx in corruptions.DIRECTIONS * 3
                 if np.array_equal(out[i], np.asarray(corruptions._shift_2d(px[i], dy, dx)))]
        assert len(found) == 1
        dy, dx = found[0]
        assert (out[i][:dy] == 0).all() if dy > 0 else True


def test_signals_shift_and_scale():
    t = jnp.linspace(0, 1, 40)
    x = jnp.stack([jnp.sin(6 * t), t])  # (2, 40)
    shifted = np.asarray(corruptions.apply("signal_shift", 2, KEY, x))
    for i in range(2):  # by exactly 4 positions, one way or the other
        ok = [np.allclose(shifted[i, 4:], np.asarray(x[i, :-4]), atol=1e-6),
              np.allclose(shifted[i, :-4], np.asarray(x[i, 4:]), atol=1e-6)]
        assert any(ok)
    scaled = np.asarray(corruptions.apply("signal_scale", 5, KEY, x))
    assert scaled[1, 20] == pytest.approx(float(0.5 + (20 - 19.5) / 1.4 / 39), abs=1e-5)  # the ramp gets flatter
    noisy = corruptions.apply("signal_noise", 1, KEY, x)
    assert noisy.shape == x.shape and 0.05 < float(jnp.std(noisy - x)) < 0.15


def test_standardized_round_trip_and_errors():
    x = images()
    mean, std = jnp.array([0.4, 0.5, 0.6]), jnp.array([0.2, 0.25, 0.3])
    z = (x - mean) / std
    got = corruptions.standardized("contrast", 2, KEY, z, mean, std) * std + mean
    np.testing.assert_allclose(got, corruptions.apply("contrast", 2, KEY, x), atol=1e-5)
    with pytest.raises(LthError, match="unknown corruption"):
        corruptions.apply("fog", 1, KEY, x)
    with pytest.raises(LthError, match="severity must be an int in 1..5"):
        corruptions.apply("contrast", 6, KEY, x)
    with pytest.raises(LthError, match="corrupts images"):
        corruptions.apply("contrast", 1, KEY, x[:, :, 0, 0])
    assert corruptions.names_for((40,)) == corruptions.SIGNAL and corruptions.names_for((32, 32, 3)) == corruptions.IMAGE
