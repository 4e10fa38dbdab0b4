"""Every layer the package registers, tested as Keras tests its own layers.

For each supported input rank: `compute_output_shape` is the shape the layer
really returns, eagerly and symbolically; a layer with weights trains (a step
changes them); the config round-trips and the restored layer computes the same.
"""

import keras
import numpy as np
import pytest
from conftest import serialization_round_trip

import keras_probes as kp

TOKENS = 5
# (factory, input shapes without the batch axis): every rank the layer supports.
CASES = {
    "ProbeHead": (lambda: kp.ProbeHead(3), [(6,), (TOKENS, 6)]),
    "RegressionHead": (lambda: kp.RegressionHead(2), [(6,), (TOKENS, 6)]),
    "GlobalAveragePooling": (
        lambda: kp.GlobalAveragePooling(),
        [(6,), (TOKENS, 6), (4, TOKENS, 6), (3, 4, TOKENS, 6)],
    ),
    "RandomSubset": (lambda: kp.RandomSubset(7, seed=1), [(6,), (TOKENS, 6), (4, TOKENS, 6)]),
    "TokenPooling-mean": (lambda: kp.TokenPooling("mean"), [(TOKENS, 6)]),
    "TokenPooling-first": (lambda: kp.TokenPooling("first"), [(TOKENS, 6)]),
    "TokenPooling-last": (lambda: kp.TokenPooling("last"), [(TOKENS, 6)]),
    "TokenFeatures": (lambda: kp.TokenFeatures(), [(TOKENS, 6)]),
}
PARAMETERS = [(name, shape) for name, (_, shapes) in CASES.items() for shape in shapes]


def _call(layer, x, mask):
    """The layer applied as a probed model applies it: masked reducers get the padding mask."""
    if getattr(layer, "uses_padding_mask", False):
        return layer(x, padding_mask=mask)
    return layer(x)


def _data(shape, batch=4):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, *shape)).astype("float32")
    mask = np.arange(TOKENS)[None] < np.array([1, 3, 5, 2])[:batch, None]
    return x, mask


def _output_shape(layer, shape):
    if getattr(layer, "uses_padding_mask", False):
        return tuple(layer.compute_output_shape(shape, shape[:2]))
    return tuple(layer.compute_output_shape(shape))


def test_every_registered_layer_is_tested_here():
    registered = {
        obj
        for name, obj in keras.saving.get_custom_objects().items()
        if name.startswith("keras_probes>")
        and isinstance(obj, type)
        and issubclass(obj, keras.layers.Layer)
        and not issubclass(obj, keras.Model)
    }
    tested = {type(factory()) for factory, _ in CASES.values()}
    assert registered == tested, sorted(c.__name__ for c in registered ^ tested)


@pytest.mark.parametrize("name, shape", PARAMETERS)
def test_compute_output_shape_is_the_real_output_shape(name, shape):
    factory, _ = CASES[name]
    x, mask = _data(shape)
    layer = factory()
    eager = tuple(_call(layer, x, mask).shape)
    assert _output_shape(layer, x.shape) == eager
    # Symbolically, with an unknown batch size: what a functional model is built from.
    layer = factory()
    inputs = keras.Input(shape)
    symbolic = _call(layer, inputs, keras.Input((TOKENS,), dtype="bool"))
    assert tuple(symbolic.shape) == _output_shape(layer, (None, *shape)) == (None, *eager[1:])


@pytest.mark.parametrize("name, shape", PARAMETERS)
def test_serialization_round_trip_computes_the_same(name, shape):
    factory, _ = CASES[name]
    x, mask = _data(shape)
    layer = factory()
    _call(layer, x, mask)  # built
    if layer.weights:
        rng = np.random.default_rng(1)
        layer.set_weights([rng.normal(size=w.shape) for w in layer.get_weights()])
    restored = serialization_round_trip(layer)
    _call(restored, x, mask)
    restored.set_weights(layer.get_weights())
    np.testing.assert_array_equal(_call(restored, x, mask), _call(layer, x, mask))


@pytest.mark.parametrize(
    "name, shape", [(name, shape) for name, shape in PARAMETERS if name.endswith("Head")]
)
def test_a_training_step_updates_the_weights(name, shape):
    factory, _ = CASES[name]
    x, _ = _data(shape)
    head = factory()
    model = keras.Sequential([keras.Input(shape), head])
    classes = name == "ProbeHead"
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="sparse_categorical_crossentropy" if classes else "mse",
    )
    y = (
        np.arange(int(np.prod(x.shape[:-1]))).reshape(x.shape[:-1]) % 3
        if classes
        else np.ones((*x.shape[:-1], 2), "float32")
    )
    before = [w.copy() for w in head.get_weights()]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    for old, new in zip(before, head.get_weights(), strict=True):
        assert not np.array_equal(old, new)
