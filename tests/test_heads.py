"""ProbeHead: a softmax linear classifier behind a gradient stop."""

import keras
import numpy as np
import tensorflow as tf
from conftest import serialization_round_trip

import keras_probes as kp


def test_outputs_probabilities_and_has_kernel_and_bias():
    head = kp.ProbeHead(7)
    x = np.random.default_rng(0).random((4, 12)).astype("float32")
    probabilities = head(x)
    assert tuple(probabilities.shape) == (4, 7)
    np.testing.assert_allclose(np.sum(probabilities, axis=1), 1, rtol=1e-6)
    kernel, bias = head.get_weights()
    assert kernel.shape == (12, 7) and bias.shape == (7,)
    head.set_weights([np.ones((12, 7)), np.arange(7.0)])
    expected = keras.ops.softmax(x @ np.ones((12, 7)) + np.arange(7.0))
    np.testing.assert_allclose(head(x), expected, rtol=1e-5)


def test_no_gradient_flows_to_the_features():
    head = kp.ProbeHead(3)
    x = tf.Variable(np.random.default_rng(0).random((4, 5)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        loss = keras.ops.sum(head(x) * np.arange(3.0))
    assert tape.gradient(loss, x) is None
    assert all(g is not None for g in tape.gradient(loss, head.trainable_variables))


def test_serialization():
    restored = serialization_round_trip(kp.ProbeHead(5, kernel_initializer="glorot_uniform"))
    assert restored.num_classes == 5


def test_computes_in_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        head = kp.ProbeHead(3)
        out = head(np.ones((2, 4), dtype="float16"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert head.kernel.dtype == "float32"
    assert out.dtype == "float32"
    assert tuple(out.shape) == (2, 3)


def test_regression_head_is_linear_float32_and_stops_gradients():
    head = kp.RegressionHead(3)
    x = tf.Variable(np.random.default_rng(0).random((4, 5)).astype("float32"))
    head.build((None, 5))
    kernel, bias = np.arange(15.0).reshape(5, 3) / 10, np.array([1.0, -1.0, 0.5])
    head.set_weights([kernel, bias])
    np.testing.assert_allclose(head(x), x.numpy() @ kernel + bias, rtol=1e-6)
    with tf.GradientTape() as tape:
        loss = keras.ops.sum(head(x) ** 2)
    assert tape.gradient(loss, x) is None
    assert head.kernel.dtype == "float32"
    assert serialization_round_trip(head).num_targets == 3
