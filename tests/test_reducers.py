"""Reducers: shapes, the fixed random subset, serialization and resolution."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import serialization_round_trip

import keras_probes as kp


@pytest.mark.parametrize(
    "shape, expected",
    [((2, 5), (2, 5)), ((2, 7, 5), (2, 5)), ((2, 6, 7, 5), (2, 5)), ((2, 3, 6, 7, 5), (2, 5))],
)
def test_global_average_pooling_any_rank(shape, expected):
    x = np.random.default_rng(0).random(shape).astype("float32")
    layer = kp.GlobalAveragePooling()
    out = layer(x)
    assert tuple(out.shape) == expected
    assert layer.compute_output_shape(shape) == expected
    axes = tuple(range(1, len(shape) - 1))
    np.testing.assert_allclose(out, x.mean(axis=axes) if axes else x, rtol=1e-6)
    serialization_round_trip(layer)


def test_global_average_pooling_gives_one_row_per_example_when_the_map_is_larger(tmp_path):
    """A graph built for 26x26 maps fed a 27x27 one (what a loaded SavedModel signature allows:
    it does not check shapes) still gives one row per example, the true mean."""
    layer = kp.GlobalAveragePooling()

    class Pool(tf.Module):
        def __init__(self):
            self.layer = layer

        @tf.function(input_signature=[tf.TensorSpec((None, 26, 26, 8), tf.float32)])
        def __call__(self, x):
            return {"pooled": self.layer(x)}

    tf.saved_model.save(Pool(), str(tmp_path / "pool"))
    served = tf.saved_model.load(str(tmp_path / "pool")).signatures["serving_default"]
    for shape in [(3, 26, 26, 8), (3, 27, 27, 8), (1, 40, 30, 8)]:
        x = np.random.default_rng(0).random(shape).astype("float32")
        pooled = served(x=tf.constant(x))["pooled"].numpy()
        assert pooled.shape == (shape[0], 8)
        np.testing.assert_allclose(pooled, x.mean(axis=(1, 2)), rtol=1e-5)


def test_global_average_pooling_keeps_the_pooling_kernel_for_static_maps():
    """The fast path (one pooling window over the whole map) stays in the graph."""
    function = tf.function(kp.GlobalAveragePooling())
    graph = function.get_concrete_function(tf.TensorSpec((None, 7, 7, 32))).graph.as_graph_def()
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    assert "AvgPool" in ops


def test_random_subset_keeps_fixed_features_without_a_full_size_weight():
    x = np.random.default_rng(0).random((3, 20, 20, 16)).astype("float32")
    layer = kp.RandomSubset(100, seed=7)
    out = layer(x)
    assert tuple(out.shape) == (3, 100)
    assert layer.weights == []
    assert layer.indices.shape == (100,)
    assert len(set(layer.indices.tolist())) == 100
    np.testing.assert_array_equal(out, x.reshape(3, -1)[:, layer.indices])
    # The same seed and shape give the same features after a round trip.
    restored = serialization_round_trip(layer)
    np.testing.assert_array_equal(restored(x), out)
    other = kp.RandomSubset(100, seed=8)
    other(x)
    assert not np.array_equal(other.indices, layer.indices)


def test_random_subset_of_a_huge_layer_stays_small():
    # 147x147x64 (an early InceptionV3 layer): 1.38M features, 1000 kept.
    layer = kp.RandomSubset(1000, seed=0)
    layer.build((None, 147, 147, 64))
    assert layer.indices.nbytes == 8000
    assert layer.compute_output_shape((None, 147, 147, 64)) == (None, 1000)


def test_random_subset_keeps_everything_of_a_small_layer():
    layer = kp.RandomSubset(1000)
    x = np.arange(12, dtype="float32").reshape(1, 3, 4)
    np.testing.assert_array_equal(layer(x), x.reshape(1, -1))


@pytest.mark.parametrize("k", [0, True, 2.5])
def test_random_subset_rejects_bad_k(k):
    with pytest.raises(ValueError, match="positive integer"):
        kp.RandomSubset(k)


def test_random_subset_rejects_an_unseeded_draw():
    with pytest.raises(ValueError, match="`seed` must be an integer"):
        kp.RandomSubset(5, seed=None)


def test_resolve_auto_per_point_dict_and_copies():
    shapes = {"a": (None, 8, 8, 4), "b": (None, 10), "c": (None, 8, 8, 4)}
    subset = kp.RandomSubset(5, seed=1)
    reducers = kp.reducers.resolve({"c": subset}, shapes)
    assert isinstance(reducers["a"], kp.GlobalAveragePooling)
    assert isinstance(reducers["b"], keras.layers.Flatten)
    assert isinstance(reducers["c"], kp.RandomSubset) and reducers["c"] is not subset
    assert reducers["c"].get_config()["seed"] == 1
    assert reducers["a"].name == "reducer_a"
    everywhere = kp.reducers.resolve(subset, shapes)
    assert len({id(r) for r in everywhere.values()}) == 3


@pytest.mark.parametrize(
    "spec, match",
    [
        ("max", "Unknown reducer 'max'"),
        ({"zzz": "gap"}, r"not probe points.*\['a'\]"),
        (3, "Unknown reducer 3"),
    ],
)
def test_resolve_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        kp.reducers.resolve(spec, {"a": (None, 4, 4, 2)})


def test_reducer_that_leaves_a_spatial_map_is_refused():
    inputs = keras.Input((6, 6, 2))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1, name="conv")(inputs))
    with pytest.raises(ValueError, match="a probe needs \\(batch, features\\)"):
        kp.ProbedModel(
            model, points=["conv"], num_classes=2, reducers={"conv": keras.layers.ReLU()}
        )
