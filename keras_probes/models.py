"""Whole models: opened from a file, made probe-ready, and scored by their own classifier.

`load_model` opens what a user has on disk: a `.keras` archive (a saved
`kp.ProbedModel`, or any Keras model) or a TensorFlow SavedModel directory,
wrapped by `load_saved_model` as a Keras model whose serving outputs can be
probed. `as_probed` turns either into a `kp.ProbedModel`. `classifier_errors`
scores a pretrained classifier's own head on the probes' task: its scores
restricted to the dataset's classes, the reference a probe is compared with.

Example:

```python
model = kp.models.load_model("resnet50.keras")       # or "export/resnet50/1"
probed = kp.models.as_probed(model, points="resnet50", num_classes=10)
indices = kp.datasets.imagenet_indices(class_names)  # ImageNet index of each class
kp.models.classifier_errors(model, val_images, indices)["error"]
```
"""

import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_probes import _params, metrics
from keras_probes.model import ProbedModel

__all__ = ["as_probed", "classifier_errors", "load_model", "load_saved_model"]


def load_model(path, *, safe_mode: bool = True) -> keras.Model:
    """Opens a `.keras` archive or a SavedModel directory, without compiling it.

    A `.keras` archive is read by `keras.models.load_model` (a saved
    `kp.ProbedModel` comes back as one). A directory holding `saved_model.pb`
    is opened by `load_saved_model`. Anything else is a clear error: a missing
    path or a directory without `saved_model.pb` is a `FileNotFoundError`
    ("No model file at ..."), a `.keras` file that is not a whole zip archive
    with a `config.json` is a `ValueError` ("... exists but is not a readable
    .keras archive (...)"), never Keras' own "File not found" for a file that
    is there. A `.keras` file holding Python code (a `Lambda` layer's
    function) is refused with a `ValueError` ("... holds Python code ...")
    unless `safe_mode=False`: loading it runs that code.

    Args:
        path: a `.keras` file or a SavedModel directory.
        safe_mode: whether to refuse Python code in a `.keras` file, as
            `keras.models.load_model` does; pass `False` only for a file you
            trust. Defaults to `True`.

    Returns:
        The model: a `kp.ProbedModel`, any Keras model, or a SavedModel wrapped
        as a Keras model.

    Example:

    ```python
    probed = kp.models.load_model("out/probed.keras")
    opaque = kp.models.load_model("serving/classifier/1")
    ```
    """
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return load_saved_model(path)
        raise FileNotFoundError(
            f"No model file at {path}: it is a directory without saved_model.pb; pass a .keras "
            "file or a SavedModel directory."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"No model file at {path} (a .keras file or a SavedModel directory)."
        )
    if path.suffix == ".keras":
        _check_keras_archive(path)
    try:
        return keras.models.load_model(path, compile=False, safe_mode=safe_mode)
    except (KeyError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        raise ValueError(_unreadable(path, error)) from None
    except ValueError as error:
        if "safe_mode=False" not in str(error):
            raise
        # Keras' own words name `keras.config.enable_unsafe_deserialization()` as well:
        # keep what it found, and the one switch of this function.
        found = str(error).split(". ")[0].removeprefix("Requested the deserialization of ")
        raise ValueError(
            f"{path} holds Python code ({found}): loading it runs that code, so it is "
            "refused by default; if you trust the file, pass safe_mode=False."
        ) from None


def _check_keras_archive(path):
    """Refuses a `.keras` file that is not a whole zip archive with a `config.json`
    (Keras itself answers "File not found" for one that is not a zip)."""
    try:
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                raise ValueError(_unreadable(path, "no config.json in it"))
            damaged = archive.testzip()
    except (zipfile.BadZipFile, EOFError) as error:
        raise ValueError(_unreadable(path, error)) from None
    if damaged is not None:
        raise ValueError(_unreadable(path, f"{damaged} in it is damaged (bad CRC)"))


def _unreadable(path, reason):
    reason = str(reason).strip().strip('"') or type(reason).__name__
    return (
        f"{path} exists but is not a readable .keras archive ({reason}); save the model "
        "again with model.save(path)."
    )


def load_saved_model(path) -> keras.Model:
    """A SavedModel's `serving_default` signature as a Functional Keras model.

    The model has the signature's one input, and an identity layer named after
    each output, so that `kp.ProbedModel` can probe the input and the outputs.
    A SavedModel is opaque: its inner layers cannot be probed.

    Args:
        path: a SavedModel directory (holding `saved_model.pb`) whose
            `serving_default` signature takes one input.

    Returns:
        A `keras.Model` named after the directory, its outputs a dict by
        output name.

    Example:

    ```python
    model = kp.models.load_saved_model("serving/classifier/1")
    probed = kp.ProbedModel(model, points="all", num_classes=10)
    ```
    """
    path = Path(path)
    signature = tf.saved_model.load(str(path)).signatures.get("serving_default")
    if signature is None:
        raise ValueError(f"The SavedModel at {path} has no serving_default signature.")
    specs = signature.structured_input_signature[1]
    if len(specs) != 1:
        raise ValueError(
            f"The SavedModel at {path} takes {len(specs)} inputs ({sorted(specs)}); only "
            "models of one image input can be probed from a SavedModel."
        )
    ((name, spec),) = specs.items()
    inputs = keras.Input(spec.shape[1:], dtype=spec.dtype.name, name=name)
    outputs = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")(inputs)
    outputs = {key: keras.layers.Identity(name=key)(value) for key, value in outputs.items()}
    return keras.Model(inputs, outputs, name=path.resolve().name)


def as_probed(
    model: keras.Model, points="all", num_classes: int | None = None, reducers="auto"
) -> ProbedModel:
    """`model` itself if it is a `kp.ProbedModel`, else a new one probing it.

    What `load_model` returns can be either: a saved `kp.ProbedModel` (with
    its fitted probes) keeps its own points, classes and reducers, and the
    other arguments only say how to probe a plain model.

    Args:
        model: a `kp.ProbedModel`, or a Keras model to probe.
        points: for a plain model, the probe points, as `kp.ProbedModel`
            takes them. Defaults to `"all"`.
        num_classes: for a plain model, the classes of the probes (required
            there).
        reducers: for a plain model, as `kp.ProbedModel` takes them. Defaults
            to `"auto"`.

    Returns:
        A `kp.ProbedModel`.

    Example:

    ```python
    probed = kp.models.as_probed(kp.models.load_model(path), "resnet50", num_classes=10)
    ```
    """
    if isinstance(model, ProbedModel):
        return model
    return ProbedModel(model, points=points, num_classes=num_classes, reducers=reducers)


def classifier_errors(
    model: keras.Model, data, class_indices, *, batch_size: int = 32
) -> dict[str, float]:
    """A pretrained classifier's own errors on a dataset of some of its classes.

    The dataset's label `i` is the classifier's class `class_indices[i]` (e.g.
    `kp.datasets.imagenet_indices(class_names)` for an ImageNet network on
    Imagenette). Restricted to those classes, the classifier does the probes'
    task: its scores at `class_indices` only, best first. This is the
    reference a probe's error is compared with. The full errors rank all its
    classes, e.g. plain 1000-way ImageNet top-1. The model runs once over
    `data`, with `training=False`. In a top-5 error, classes scored exactly
    like the label do not push it out.

    Args:
        model: a classifier whose output is `(batch, classes)` scores.
        data: a `tf.data.Dataset` of `(images, labels)` batches, or an
            `(x, y)` tuple of arrays.
        class_indices: the classifier's class index of each label, 1-D.
        batch_size: batch size for `(x, y)` arrays. Defaults to `32`.

    Returns:
        `{"error", "top5_error"}` among the dataset's classes and
        `{"full_error", "full_top5_error"}` among all the classifier's
        classes, each a fraction of the examples.

    Example:

    ```python
    base = keras.applications.MobileNet(alpha=0.75, weights="imagenet")
    val, names = kp.datasets.images(kp.datasets.imagenette_dir() / "val", (224, 224),
                                    preprocess="tf")
    kp.models.classifier_errors(base, val, kp.datasets.imagenet_indices(names))
    # on all 1000 val images: error 0.019 among the 10 classes, full_error 0.321 (1000-way)
    ```
    """
    _params.check({"batch_size": _params.Integer(1)}, batch_size=batch_size)
    indices = np.asarray(class_indices)
    if indices.ndim != 1 or not len(indices) or not np.issubdtype(indices.dtype, np.integer):
        _params.refuse("class_indices", class_indices, "a non-empty 1-D array of class indices")
    if isinstance(data, tuple | list):
        data = tf.data.Dataset.from_tensor_slices(tuple(data)).batch(batch_size)
    infer = tf.function(lambda x: model(x, training=False))
    scores, labels = [], []
    for x, y in data:
        scores.append(infer(x).numpy())
        labels.append(y.numpy())
    if not scores:
        raise ValueError("The data yielded no batch: classifier errors need examples.")
    scores, labels = np.concatenate(scores), np.concatenate(labels).astype("int64")
    if scores.ndim != 2 or indices.min() < 0 or indices.max() >= scores.shape[1]:
        _params.refuse(
            "class_indices",
            class_indices,
            f"indices into the classifier's {scores.shape[1:]} outputs",
        )
    if labels.min() < 0 or labels.max() >= len(indices):
        raise ValueError(
            f"Labels must lie in [0, {len(indices)}), one class index each; the data has "
            f"labels from {labels.min()} to {labels.max()}."
        )
    among = scores[:, indices]
    return {
        "error": float(np.mean(np.argmax(among, axis=1) != labels)),
        "top5_error": _top_k_error(among, labels, 5),
        "full_error": float(np.mean(np.argmax(scores, axis=1) != indices[labels])),
        "full_top5_error": _top_k_error(scores, indices[labels], 5),
    }


def _top_k_error(scores, labels, k):
    """The fraction of rows whose label is not among the `k` best (`kp.metrics.top_k_hits`)."""
    hits = metrics.top_k_hits(labels, np.asarray(scores, np.float64), k)
    return 1.0 - float(np.mean(keras.ops.convert_to_numpy(hits)))
