"""Concept measures against images whose answer is known by hand."""

import numpy as np
import pytest

from keras_probes import concepts


def _solid(rgb, size=16, n=1):
    return np.broadcast_to(np.array(rgb, np.uint8), (n, size, size, 3)).copy()


def test_pure_colours_fill_their_hue_bin():
    images = np.concatenate(
        [_solid(c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]]
    )
    ratios = concepts.hue_ratios(images)
    np.testing.assert_array_equal(ratios["red"], [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(ratios["green"], [0, 1, 0, 0, 0])
    np.testing.assert_array_equal(ratios["blue"], [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(ratios["yellow"], [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(ratios["cyan"], [0, 0, 0, 0, 1])
    np.testing.assert_allclose(sum(ratios.values()), 1.0)
    # Half orange (hue 30), half magenta (hue 300).
    half = np.concatenate([_solid((255, 128, 0)), _solid((255, 0, 255))], axis=1)
    ratios = concepts.hue_ratios(half)
    assert ratios["orange"][0] == ratios["magenta"][0] == 0.5


def test_colorfulness_follows_hasler_and_susstrunk():
    # Pure red: rg = 255, yb = 127.5 everywhere, no spread: M = 0.3 * sqrt(255^2 + 127.5^2).
    np.testing.assert_allclose(
        concepts.colorfulness(_solid((255, 0, 0))), [0.3 * np.hypot(255, 127.5)]
    )
    assert concepts.colorfulness(_solid((128, 128, 128)))[0] == 0  # grey has no colour
    # Half red, half green: rg is +-255 (std 255, mean 0), yb is 127.5 (std 0).
    split = np.concatenate([_solid((255, 0, 0)), _solid((0, 255, 0))], axis=1)
    np.testing.assert_allclose(concepts.colorfulness(split), [255 + 0.3 * 127.5])


def test_whiteness_and_blackness():
    image = np.concatenate(
        [_solid((255, 255, 255)), _solid((0, 0, 0)), _solid((255, 0, 0)), _solid((10, 10, 10))],
        axis=1,
    )
    assert concepts.whiteness(image)[0] == 0.25
    assert concepts.blackness(image)[0] == 0.5


def _disk(radius, size=64):
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    return ((xx**2 + yy**2) <= radius**2).astype(np.uint8) * 255


def test_shape_of_a_disk_and_an_ellipse():
    radius = 20
    values = concepts.shape_measures(_disk(radius)[None])
    assert values["area"][0] == pytest.approx(np.pi * radius**2, rel=0.02)
    assert values["perimeter"][0] == pytest.approx(2 * np.pi * radius, rel=0.05)
    assert values["eccentricity"][0] < 0.05
    yy, xx = np.mgrid[:64, :64] - 31.5
    a, b = 25, 10
    ellipse = ((xx / a) ** 2 + (yy / b) ** 2 <= 1).astype(np.float32)  # [0, 1] floats
    values = concepts.shape_measures(ellipse[None, ..., None])
    assert values["eccentricity"][0] == pytest.approx(np.sqrt(1 - (b / a) ** 2), abs=0.02)
    assert values["area"][0] == pytest.approx(np.pi * a * b, rel=0.02)
    # The largest region only; an empty image measures 0.
    two = np.maximum(_disk(20), np.roll(_disk(3), 28, axis=1))[None]
    assert concepts.shape_measures(two)["area"][0] == pytest.approx(np.pi * 400, rel=0.02)
    assert concepts.shape_measures(np.zeros((1, 8, 8)))["area"][0] == 0


def test_texture_of_flat_and_striped_images():
    flat = np.full((1, 16, 16), 100, np.uint8)
    stripes = np.tile(np.array([0, 255], np.uint8), (16, 8))[None]  # vertical stripes
    values = concepts.texture(np.concatenate([flat, stripes]), angles=(0.0,))
    # A flat image: one co-occurrence only, energy 1 and no contrast.
    assert values["energy"][0] == 1 and values["ASM"][0] == 1 and values["contrast"][0] == 0
    # Horizontal neighbours always differ by 255.
    assert values["contrast"][1] == 255**2 and values["dissimilarity"][1] == 255
    assert values["correlation"][1] == pytest.approx(-1)


def test_measure_computes_groups_once_and_refuses_unknown_names():
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    values = concepts.measure(images, ["colorfulness", "red", "blue", "contrast", "area"])
    assert list(values) == ["colorfulness", "red", "blue", "contrast", "area"]
    assert all(v.shape == (3,) for v in values.values())
    np.testing.assert_array_equal(values["red"], concepts.hue_ratios(images)["red"])
    with pytest.raises(ValueError, match="Unknown concepts \\['redness'\\]"):
        concepts.measure(images, ["redness"])
    with pytest.raises(ValueError, match="RGB images of shape"):
        concepts.colorfulness(np.zeros((2, 8, 8)))
