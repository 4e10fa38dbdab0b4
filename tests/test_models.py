"""Whole models: `.keras` archives and SavedModels opened, made probe-ready, and their own
classifier scored on a subset of its classes."""

import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import small_convnet

import keras_probes as kp


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small convnet saved as a `.keras` archive and exported as a SavedModel."""
    root = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(0)
    model = small_convnet()
    model.save(root / "convnet.keras")
    model.export(str(root / "savedmodel"), verbose=False)
    return root, model


def test_load_model_opens_a_keras_archive_and_a_probed_model(saved, digits, tmp_path):
    root, model = saved
    x = digits[2][:16]
    loaded = kp.models.load_model(root / "convnet.keras")
    assert isinstance(loaded, keras.Model) and not isinstance(loaded, kp.ProbedModel)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    probed = kp.ProbedModel(model, points=["relu1", "gap"], num_classes=10)
    probed.save(tmp_path / "probed.keras")
    again = kp.models.load_model(str(tmp_path / "probed.keras"))
    assert isinstance(again, kp.ProbedModel) and again.points == ["relu1", "gap"]


def test_load_model_wraps_a_savedmodel_to_probe_its_input_and_outputs(saved, digits):
    root, model = saved
    x = digits[2][:16]
    opaque = kp.models.load_model(root / "savedmodel")
    assert opaque.name == "savedmodel"
    assert kp.points.available(opaque)[0] == "image"  # the signature's input name
    np.testing.assert_allclose(
        opaque.predict(x, verbose=0)["output_0"], model.predict(x, verbose=0), atol=1e-6
    )
    probed = kp.ProbedModel(opaque, points="all", num_classes=10)
    assert probed.points == ["image", "output_0"]
    np.testing.assert_allclose(
        probed.extract_features(x)["output_0"], model.predict(x, verbose=0), atol=1e-6
    )


def test_load_saved_model_refuses_a_signature_of_two_inputs(tmp_path):
    class TwoInputs(tf.Module):
        @tf.function(
            input_signature=[tf.TensorSpec((None, 2), "float32", name=n) for n in ("a", "b")]
        )
        def serve(self, a, b):
            return {"sum": a + b}

    module = TwoInputs()
    tf.saved_model.save(module, str(tmp_path / "two"), signatures={"serving_default": module.serve})
    with pytest.raises(ValueError, match=r"takes 2 inputs \(\['a', 'b'\]\); only models of one"):
        kp.models.load_saved_model(tmp_path / "two")


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda p: p / "missing.keras", FileNotFoundError, "No model file at .*missing.keras"),
        (lambda p: p, FileNotFoundError, "No model file at .*: it is a directory without saved"),
        (
            lambda p: p / "garbage.keras",
            ValueError,
            r"garbage.keras exists but is not a readable .keras archive \(File is not a zip",
        ),
        (
            lambda p: p / "noconfig.keras",
            ValueError,
            r"noconfig.keras exists but is not a readable .keras archive \(no config.json",
        ),
    ],
)
def test_load_model_errors_say_what_the_path_holds(tmp_path, make, error, message):
    (tmp_path / "garbage.keras").write_bytes(b"not a zip archive")
    with zipfile.ZipFile(tmp_path / "noconfig.keras", "w") as archive:
        archive.writestr("metadata.json", "{}")
    with pytest.raises(error, match=message):
        kp.models.load_model(make(tmp_path))


def lambda_model():
    """A model whose `.keras` file holds Python code: a `Lambda` layer's lambda."""
    inputs = keras.Input((4,), name="x")
    doubled = keras.layers.Lambda(lambda x: x * 2.0, name="double")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="dense")(doubled))


def test_load_model_refuses_python_code_unless_trusted(tmp_path):
    path = tmp_path / "lambda.keras"
    model = lambda_model()
    model.save(path)
    with pytest.raises(ValueError) as info:
        kp.models.load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path} holds Python code"), message
    assert "Lambda" in message and "if you trust the file, pass safe_mode=False" in message
    assert "enable_unsafe_deserialization" not in message and "\n" not in message
    loaded = kp.models.load_model(path, safe_mode=False)
    x = np.arange(8, dtype="float32").reshape(2, 4)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_as_probed_keeps_a_probed_model_and_probes_a_plain_one(saved):
    _, model = saved
    probed = kp.models.as_probed(model, ["conv1", "gap"], num_classes=4, reducers="gap")
    assert isinstance(probed, kp.ProbedModel) and probed.base is model
    assert probed.points == ["conv1", "gap"] and probed.num_classes == 4
    assert kp.models.as_probed(probed, "all", num_classes=7) is probed
    with pytest.raises(ValueError, match="`num_classes` must be an integer >= 2"):
        kp.models.as_probed(model)


@pytest.fixture(scope="module")
def digit_classifier(digits):
    """A real 10-digit classifier (trained on 2000 MNIST digits) and 1000 held-out digits."""
    x, y, xt, yt = digits
    keras.utils.set_random_seed(0)
    model = small_convnet(batchnorm=False)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=8, batch_size=64, verbose=0)  # test error about 0.5: no chance
    return model, xt, yt


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
def test_classifier_errors_among_some_of_its_classes(digit_classifier):
    model, xt, yt = digit_classifier
    digits = np.array([7, 1, 4])  # the dataset's labels 0, 1, 2 are these digits
    keep = np.isin(yt, digits)
    x, labels = xt[keep], np.array([list(digits).index(d) for d in yt[keep]])
    data = tf.data.Dataset.from_tensor_slices((x, labels)).batch(50)
    errors = kp.models.classifier_errors(model, data, digits)
    scores = model.predict(x, verbose=0)
    among = np.argmax(scores[:, digits], axis=1)
    assert errors["error"] == pytest.approx(np.mean(among != labels), abs=1e-12)
    assert errors["full_error"] == pytest.approx(np.mean(scores.argmax(1) != yt[keep]), abs=1e-12)
    # Three classes: the label is always among the top 5 of them.
    assert errors["top5_error"] == 0.0
    in_top5 = [label in np.argsort(-row)[:5] for row, label in zip(scores, yt[keep], strict=True)]
    assert errors["full_top5_error"] == pytest.approx(1 - np.mean(in_top5), abs=1e-12)
    # Restricted to fewer classes, the classifier can only do better; chance is 0.9.
    assert errors["error"] <= errors["full_error"] < 0.7
    # Arrays give the same as a dataset.
    assert kp.models.classifier_errors(model, (x, labels), digits, batch_size=64) == errors


@pytest.mark.parametrize(
    "indices, kwargs, message",
    [
        ([[0, 1]], {}, "`class_indices` must be a non-empty 1-D array of class indices"),
        ([0.5, 1.0], {}, "`class_indices` must be a non-empty 1-D array"),
        ([0, 10], {}, r"`class_indices` must be indices into the classifier's \(10,\) outputs"),
        ([0], {}, r"Labels must lie in \[0, 1\)"),
        ([0, 1], {"batch_size": 0}, "`batch_size` must be an integer >= 1"),
    ],
)
def test_classifier_errors_refuse_indices_that_do_not_fit(
    digit_classifier, indices, kwargs, message
):
    model, xt, _ = digit_classifier
    with pytest.raises(ValueError, match=message):
        kp.models.classifier_errors(model, (xt[:8], np.array([0, 1] * 4)), indices, **kwargs)


@pytest.mark.slow
def test_pretrained_mobilenet_errors_on_imagenette_classes():
    """The real pretrained ImageNet MobileNet, restricted to Imagenette's 10 classes."""
    base = keras.applications.MobileNet(alpha=0.75, weights="imagenet")
    folder = kp.datasets.balanced_subset(kp.datasets.imagenette_dir() / "val", 5)
    val, names = kp.datasets.images_for_model(base, folder, preset="mobilenet")
    errors = kp.models.classifier_errors(base, val, kp.datasets.imagenet_indices(names))
    # The shared data's README: top-1 among the 10 classes 0.981, 1000-way 0.679 on val.
    assert errors["error"] <= 0.1 and errors["top5_error"] <= errors["error"]
    assert errors["error"] < errors["full_error"] < 0.6
    assert errors["full_top5_error"] <= errors["full_error"]
