"""Shared fixtures. Keras reads KERAS_HOME once, at import, so the offline cache is
set up here, before any test module imports keras."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import _offline  # noqa: E402  (imports neither keras nor keras_probes)

# The real `weights="imagenet"` loading code runs in the tests, and finds its
# files offline in the shared cache.
_offline.use_shared_keras_cache()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.special import logsumexp  # noqa: E402

import keras_probes as kp  # noqa: E402


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST digits (offline: a split of the 10,000 official test images)."""
    return kp.datasets.mnist(seed=0)


@pytest.fixture(scope="session")
def digits(mnist):
    """A small real-digit task: `(x_train, y_train, x_test, y_test)`, float images
    of shape (n, 28, 28, 1) in [0, 1]; 2000 train and 1000 test images."""
    (x, y), (xt, yt) = mnist.train, mnist.test
    scale = lambda a: (a[..., None] / 255.0).astype("float32")  # noqa: E731
    return scale(x[:2000]), y[:2000], scale(xt[:1000]), yt[:1000]


def small_convnet(batchnorm=True, name="convnet"):
    """A small MNIST convnet with BatchNorm and Dropout, as a probing target."""
    layers = keras.layers
    inputs = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(8, 3, name="conv1")(inputs)
    if batchnorm:
        x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(16, 3, name="conv2")(x)
    if batchnorm:
        x = layers.BatchNormalization(name="bn2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    outputs = layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def trained_convnet(x, y, epochs=1, optimizer="adam"):
    """The small convnet after `epochs` real epochs on `(x, y)`, seed 0."""
    keras.utils.set_random_seed(0)
    base = small_convnet()
    base.compile(optimizer, "sparse_categorical_crossentropy")
    base.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return base


@pytest.fixture(scope="session")
def digit_convnet(digits):
    """The small convnet after one real epoch on `digits`, trained once for the session.

    Shared: a test may probe it, save it or export it, never change it (probes never do,
    invariant 1; the tests that check so compare its weights before and after)."""
    x, y, _, _ = digits
    return trained_convnet(x, y)


@pytest.fixture
def convnet():
    keras.utils.set_random_seed(0)
    return small_convnet()


@keras.saving.register_keras_serializable(package="keras_probes_tests")
class CallCounter(keras.layers.Layer):
    """Identity that counts how many batches went through it."""

    def build(self, input_shape):
        self.calls = self.add_weight(
            shape=(), initializer="zeros", dtype="int64", trainable=False, name="calls"
        )

    def call(self, inputs):
        self.calls.assign_add(1)
        return inputs


def counted_convs(convs):
    """`(model, counter)`: a `CallCounter` on the digit input, then `convs` small convolutions
    named `conv0`...: the counter says how many batches went through the model."""
    inputs = keras.Input((28, 28, 1))
    counter = CallCounter(name="counter")
    h = counter(inputs)
    for i in range(convs):
        h = keras.layers.Conv2D(4, 3, activation="relu", name=f"conv{i}")(h)
    return keras.Model(inputs, h), counter


def assert_weights_equal(a, b):
    """Every array of `a` equals the one of `b`, bit for bit."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_error_rate(error, probabilities, labels, tie=1e-4):
    """`error` is the error rate of `probabilities` on `labels`, up to near-ties.

    Probabilities computed in another graph or with another batch size differ by float32
    rounding (about 1e-6 here): an example whose two top probabilities lie within `tie` may
    then change its predicted class, and only such examples may.
    """
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    top = np.sort(probabilities, axis=1)
    ties = np.sum(top[:, -1] - top[:, -2] < tie)
    expected = np.mean(np.argmax(probabilities, axis=1) != labels)
    assert abs(error - expected) <= (ties + 1e-3) / len(labels), (error, expected, ties)


def serialization_round_trip(layer):
    """`get_config` -> `from_config` and `serialize` -> `deserialize` keep the config."""
    config = layer.get_config()
    assert layer.__class__.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer)
    assert restored.get_config() == config
    return restored


def make_report():
    """A report of three points on two splits, with an exact-float edge (1e-9)."""
    points = ["conv1", "block/relu", "dense"]
    results = {
        "val": {
            p: {"loss": 2.0 - i / 3, "error": 0.5 - i * 0.1 + 1e-9, "top5_error": 0.2 / (i + 1)}
            for i, p in enumerate(points)
        },
        "test": {p: {"loss": 1.0, "error": 0.3, "top5_error": 0.1} for p in points},
    }
    return kp.ProbeReport(points, results, num_classes=10, model="convnet")


def run_reproduction(name, out, *args, timeout=900):
    """Runs `reproductions/<name>.py --quick --out <out> *args`; returns (its JSON, stdout)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "reproductions" / f"{name}.py"), "--quick", "--out", str(out)]
        + [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    payload = json.loads((Path(out) / f"{name}.json").read_text())
    assert payload["name"] == name and payload["quick"] is True
    assert (Path(out) / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    return payload, result.stdout


def objective(features, labels, kernel, bias, l2):
    """The probe objective in float64: mean cross-entropy + l2 / 2 * ||kernel||^2."""
    logits = features.astype(np.float64) @ kernel + bias
    cross_entropy = logsumexp(logits, axis=1) - logits[np.arange(len(labels)), labels]
    return cross_entropy.mean() + l2 / 2 * np.sum(kernel.astype(np.float64) ** 2)


def tiny_bert(vocabulary_size=40, hidden_dim=16, max_sequence_length=12):
    """keras-hub's BertBackbone built from a small config (no download): 2 blocks."""
    import keras_hub

    keras.utils.set_random_seed(0)
    return keras_hub.models.BertBackbone(
        vocabulary_size=vocabulary_size,
        num_layers=2,
        num_heads=2,
        hidden_dim=hidden_dim,
        intermediate_dim=2 * hidden_dim,
        max_sequence_length=max_sequence_length,
    )


def tiny_gemma(vocabulary_size=40):
    """keras-hub's GemmaBackbone (a decoder) built from a small config: 2 blocks."""
    import keras_hub

    keras.utils.set_random_seed(0)
    return keras_hub.models.GemmaBackbone(
        vocabulary_size=vocabulary_size,
        num_layers=2,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=16,
        intermediate_dim=32,
        head_dim=8,
    )
