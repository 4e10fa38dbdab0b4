"""Invariant 5: bad input gets a clear error that names the fix."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_probes as kp
from keras_probes import _validation


@pytest.fixture
def probed(convnet):
    model = kp.ProbedModel(convnet, points=["relu1", "relu2"], num_classes=10)
    model.compile()
    return model


@pytest.fixture
def data(digits):
    x, y, _, _ = digits
    return x[:64], y[:64]


def test_unknown_point(convnet):
    with pytest.raises(
        ValueError, match="Unknown probe point .relu9.. Close matches: relu2, relu1"
    ):
        kp.ProbedModel(convnet, points=["relu9"], num_classes=10)


@pytest.mark.parametrize("num_classes", [None, 1, 2.5, True])
def test_bad_num_classes(convnet, num_classes):
    with pytest.raises(ValueError, match="`num_classes` must be an integer >= 2"):
        kp.ProbedModel(convnet, points=["relu1"], num_classes=num_classes)


def test_base_must_be_a_model():
    with pytest.raises(TypeError, match="`base` must be a keras.Model"):
        kp.ProbedModel(keras.layers.Dense(3), num_classes=3)


@pytest.mark.parametrize("bad", [10, -1, 255])
def test_label_out_of_range_in_arrays(probed, data, bad):
    x, y = data
    y = y.copy()
    y[5] = bad
    with pytest.raises(ValueError, match=r"Labels must lie in \[0, num_classes\) = \[0, 10\)"):
        probed.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="remap the labels"):
        probed.evaluate_probes(x, y, verbose=0)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_label_out_of_range_in_a_dataset(probed, data, jit_compile):
    """Checked in the input pipeline, so the check holds under XLA too."""
    probed.compile(jit_compile=jit_compile)
    x, y = data
    y = y.copy()
    y[5] = 12
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"Labels must lie in \[0, num_classes\) = \[0, 10\)"
    ):
        probed.fit(dataset, verbose=0)


@pytest.mark.parametrize("bad", [2.5, np.nan])
def test_non_integer_labels_in_a_dataset(probed, data, bad):
    """Float labels are checked in the pipeline too: a cast would truncate 2.5 to 2."""
    x, y = data
    y = y.astype("float32")
    y[5] = bad
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"Labels must be integer class indices.*float"
    ):
        probed.fit(dataset, verbose=0)
    whole = tf.data.Dataset.from_tensor_slices((x, data[1].astype("float32"))).batch(16)
    probed.fit(whole, verbose=0)  # whole numbers stored as floats are class indices


def test_one_hot_labels(probed, data):
    x, y = data
    with pytest.raises(ValueError, match="one-hot.*np.argmax"):
        probed.fit(x, keras.utils.to_categorical(y, 10), verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices((x, keras.utils.to_categorical(y, 10))).batch(8)
    with pytest.raises(ValueError, match="one-hot.*tf.argmax"):
        probed.fit(dataset, verbose=0)


def test_labels_of_another_length_or_kind(probed, data):
    x, y = data
    with pytest.raises(ValueError, match="64 inputs, 63 labels"):
        probed.fit(x, y[:-1], verbose=0)
    with pytest.raises(ValueError, match="integer class indices"):
        probed.fit(x, y + 0.5, verbose=0)
    with pytest.raises(ValueError, match="Labels are required"):
        probed.fit(x, verbose=0)


def test_input_shape_not_the_models(probed, data):
    x, y = data
    with pytest.raises(ValueError, match=r"Inputs of shape \(None, 28, 28, 1\).*Add the channel"):
        probed.fit(x[..., 0], y, verbose=0)
    with pytest.raises(ValueError, match=r"Received: x.shape=\(64, 32, 32, 1\)"):
        probed.predict(np.zeros((64, 32, 32, 1), "float32"), verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices((np.zeros((8, 14, 14, 1)), y[:8])).batch(4)
    with pytest.raises(ValueError, match=r"Inputs of shape \(None, 28, 28, 1\)"):
        probed.evaluate_probes(dataset, verbose=0)


def test_unbatched_dataset(probed, data):
    dataset = tf.data.Dataset.from_tensor_slices(data)
    with pytest.raises(ValueError, match=r"single examples.*dataset.batch\(32\)"):
        probed.fit(dataset, verbose=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs(probed, data, bad):
    x, y = data
    x = x.copy()
    x[3, 10, 10, 0] = bad
    with pytest.raises(
        ValueError, match=r"NaN or infinite values in 1 example\(s\), e.g. at index \[3\]"
    ):
        probed.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        probed.predict(x, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or infinite"):
        probed.evaluate(dataset, verbose=0)


def test_finite_check_reads_a_memory_mapped_array_by_chunks(tmp_path):
    x = np.zeros((300, 4, 2), "float32")
    x[[5, 130, 299], 1, 0] = [np.nan, np.inf, -np.inf]
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    with pytest.raises(
        ValueError, match=r"NaN or infinite values in 3 example\(s\), e.g. at index \[5, 130, 299\]"
    ):
        _validation.check_finite(mapped, "features", rows=64)
    _validation.check_finite(mapped[:5], "features", rows=2)


def test_empty_data(probed, data):
    x, y = data
    with pytest.raises(ValueError, match=r"`x` is empty \(0 examples\)"):
        probed.fit(x[:0], y[:0], verbose=0)
    with pytest.raises(ValueError, match="`validation_data` is empty"):
        probed.fit(x, y, validation_data=(x[:0], y[:0]), verbose=0)
    empty = tf.data.Dataset.from_tensor_slices(data).batch(8).take(0)
    with pytest.raises(ValueError, match="empty tf.data.Dataset"):
        probed.evaluate_probes(empty, verbose=0)


def test_dataset_with_separate_labels(probed, data):
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(8)
    with pytest.raises(ValueError, match="`y` must not be given"):
        probed.fit(dataset, data[1], verbose=0)


def test_dataset_of_inputs_only(probed, data):
    dataset = tf.data.Dataset.from_tensor_slices(data[0]).batch(8)
    with pytest.raises(ValueError, match=r"\(inputs, labels\) pairs.*as_supervised=True"):
        probed.fit(dataset, verbose=0)


def test_empty_dataset_of_unknown_cardinality(probed, data):
    empty = tf.data.Dataset.from_tensor_slices(data).filter(lambda x, y: y > 100).batch(8)
    with pytest.raises(ValueError, match="yielded no batch at all"):
        probed.evaluate_probes(empty, verbose=0)
    with pytest.raises(ValueError, match="yielded no batch at all"):
        probed.fit(empty, verbose=0)


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.x[16 * i : 16 * (i + 1)], self.y[16 * i : 16 * (i + 1)]


def test_generators_and_py_datasets_are_passed_to_keras(probed, data):
    x, y = data
    history = probed.fit(Batches(x, y), validation_data=Batches(x, y), epochs=1, verbose=0)
    assert "val_relu2/loss" in history.history

    def batches():
        for i in range(4):
            yield x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)]

    history = probed.fit(batches(), validation_data=batches(), epochs=1, verbose=0)
    assert "val_relu2/loss" in history.history


@pytest.mark.parametrize("labels", [np.array(["a", "b"] * 32), np.array([True, False] * 32)])
def test_labels_of_another_dtype_in_a_dataset_are_refused_up_front(probed, data, labels):
    x, _ = data
    dataset = tf.data.Dataset.from_tensor_slices((x, labels)).batch(16)
    with pytest.raises(ValueError, match="yields labels of dtype (string|bool).*integer class"):
        probed.fit(dataset, epochs=1, verbose=0)


def test_labels_as_a_python_list_are_accepted(probed, data):
    x, y = data
    labels = [int(label) for label in y]
    history = probed.fit(x, labels, validation_data=(x, labels), epochs=1, verbose=0)
    assert "val_relu2/loss" in history.history
    listed = probed.evaluate_probes(x, labels, verbose=0)
    assert listed.errors("test") == probed.evaluate_probes(x, y, verbose=0).errors("test")
