"""Intentionally flawed models: label corruption, re-initialisation, split accuracy."""

import keras
import numpy as np
import pytest
from conftest import small_convnet

import keras_probes as kp


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.37, 1.0])
def test_corrupt_labels_changes_exactly_that_many_each_to_another_class(fraction):
    y = np.random.default_rng(1).integers(0, 10, 1001)
    new_y, corrupted = kp.flawed.corrupt_labels(y, fraction, num_classes=10, seed=3)
    assert corrupted.sum() == round(fraction * 1001)
    np.testing.assert_array_equal(new_y != y, corrupted)  # every changed label is another class
    np.testing.assert_array_equal(new_y[~corrupted], y[~corrupted])
    assert new_y.dtype == y.dtype and new_y.min() >= 0 and new_y.max() < 10
    again = kp.flawed.corrupt_labels(y, fraction, num_classes=10, seed=3)
    np.testing.assert_array_equal(again[0], new_y)
    if 0 < fraction < 1:
        other = kp.flawed.corrupt_labels(y, fraction, num_classes=10, seed=4)
        assert not np.array_equal(other[1], corrupted)


def test_corrupt_labels_spreads_over_the_other_classes():
    y = np.zeros(9000, int)
    new_y, _ = kp.flawed.corrupt_labels(y, 1.0, num_classes=10, seed=0)
    counts = np.bincount(new_y, minlength=10)
    assert counts[0] == 0 and np.all(np.abs(counts[1:] - 1000) < 120)


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.array([0, 1, 10]), 0.5, 10), r"\[0, 10\)"),
        ((np.array([0, 1]), 1.5, 10), "`fraction` must be in"),
        ((np.array([0.0, 1.0]), 0.5, 10), "integer labels"),
        ((np.array([0, 1]), 0.5, 1), "`num_classes`"),
    ],
)
def test_corrupt_labels_refuses_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        kp.flawed.corrupt_labels(*args)


def test_reinitialize_changes_every_weight_and_keeps_the_architecture(digits):
    x, y, _, _ = digits
    keras.utils.set_random_seed(0)
    model = small_convnet()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x[:512], y[:512], epochs=1, verbose=0)  # trained: no weight at its initial value
    before = [w.copy() for w in model.get_weights()]
    fresh = kp.flawed.reinitialize(model, seed=0)
    assert [layer.name for layer in fresh.layers] == [layer.name for layer in model.layers]
    assert [type(layer) for layer in fresh.layers] == [type(layer) for layer in model.layers]
    assert [w.shape for w in fresh.get_weights()] == [w.shape for w in before]
    for old, new in zip(before, fresh.get_weights(), strict=True):
        assert not np.any(old == new)  # every entry, biases and BatchNorm statistics too
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)  # the original is untouched
    # Reproducible by seed, different across seeds; the outputs have the same shape.
    same = kp.flawed.reinitialize(model, seed=0)
    other = kp.flawed.reinitialize(model, seed=1)
    np.testing.assert_array_equal(same.get_weights()[0], fresh.get_weights()[0])
    assert not np.array_equal(other.get_weights()[0], fresh.get_weights()[0])
    assert fresh.predict(x[:4], verbose=0).shape == (4, 10)


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
def test_corruption_monitor_splits_accuracy(digits):
    x, y, _, _ = digits
    x, y = x[:600], y[:600].astype(int)
    noisy, corrupted = kp.flawed.corrupt_labels(y, 0.5, num_classes=10, seed=0)
    keras.utils.set_random_seed(0)
    model = small_convnet(batchnorm=False)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    monitor = kp.flawed.CorruptionMonitor(x, noisy, corrupted, true_y=y)
    model.fit(x, noisy, epochs=3, batch_size=64, verbose=0, callbacks=[monitor])
    history = monitor.history
    assert history["epoch"] == [0, 1, 2, 3]
    predicted = model.predict(x, verbose=0).argmax(1)
    assert history["clean_accuracy"][-1] == np.mean(predicted[~corrupted] == y[~corrupted])
    assert history["corrupted_accuracy"][-1] == np.mean(predicted[corrupted] == noisy[corrupted])
    assert history["corrupted_true_accuracy"][-1] == np.mean(predicted[corrupted] == y[corrupted])
    with pytest.raises(ValueError, match="same length"):
        kp.flawed.CorruptionMonitor(x, noisy, corrupted[:10])
