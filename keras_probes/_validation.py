"""Checks on the data given to a probed model, with errors that name the fix.

Arrays are checked up front, before any work starts (`ValueError`). Streams
(`tf.data.Dataset`) are checked on their element spec up front, and batch by
batch in the input pipeline (`tf.errors.InvalidArgumentError`): there, unlike
inside a step compiled with XLA, assertions always run, and a bad label
cannot turn silently into a NaN loss.
"""

import contextlib
import re
from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf

from keras_probes.reducers import PADDING_MASK, input_of


def check_data(
    x, y, input_spec, num_classes, *, labels=True, argument="x", num_targets=None, tokens=False
):
    """Validates `(x, y)` as given to `fit`, `evaluate` or `predict`.

    With `num_targets`, `y` holds regression targets, not class labels. With
    `tokens`, `y` holds a label per token, `(batch, tokens)`, checked only at
    the tokens the `padding_mask` input keeps.

    Returns:
        `x`, or for a `tf.data.Dataset` the same dataset with its batches
        checked as they stream by.
    """
    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise ValueError(
                f"`y` must not be given when `{argument}` is a tf.data.Dataset: the "
                "dataset yields (inputs, labels) pairs itself. Received: y of type "
                f"{type(y).__name__}"
            )
        _check_dataset(x, input_spec, num_classes, labels, argument, num_targets, tokens)
        names = [spec.name for spec in keras.tree.flatten(input_spec)]
        kept = (lambda x: input_of(x, names, PADDING_MASK)) if tokens else None
        return x.map(
            lambda *batch: _checked_batch(batch, num_classes, labels, num_targets, kept),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        ).prefetch(tf.data.AUTOTUNE)
    if isinstance(x, keras.utils.PyDataset | Iterator):
        return x  # generators and PyDatasets are read by Keras' own adapters only
    if x is None:
        raise ValueError(f"No input data: `{argument}` is None.")
    arrays, specs = _paired(x, input_spec, argument)
    n = len(arrays[0])
    if n == 0:
        raise ValueError(
            f"`{argument}` is empty (0 examples). Probes need data to be fitted or "
            "evaluated: pass at least one example."
        )
    for array, spec in zip(arrays, specs, strict=True):
        array = np.asarray(array)
        _check_shape(array.shape, spec, argument)
        check_finite(array, argument)
    if labels and num_targets:
        check_targets(y, num_targets, num_examples=n)
    elif labels and tokens:
        check_token_labels(y, arrays[[s.name for s in specs].index(PADDING_MASK)], num_classes)
    elif labels:
        check_labels(y, num_classes, num_examples=n)
    return x


def as_labels(y):
    """`y` as Keras' `fit` and `evaluate` take labels: a Python list or tuple of labels
    becomes a NumPy array (Keras' data adapters refuse lists); anything else is returned
    as it is (arrays, tensors, `None`)."""
    return np.asarray(y) if isinstance(y, list | tuple) else y


def check_token_labels(y, kept, num_classes) -> np.ndarray:
    """Per-token labels: `(batch, tokens)` like the padding mask `kept`, valid where kept.

    Returns:
        The labels at the kept tokens, an int64 array `(kept tokens,)`.
    """
    if y is None:
        raise ValueError(
            "Labels are required: pass `y` (batch, tokens), or a tf.data.Dataset of "
            "(inputs, labels)."
        )
    y, kept = np.asarray(y), np.asarray(kept).astype(bool)
    if y.shape != kept.shape:
        raise ValueError(
            "Per-token probes (reducers='tokens') take one label per token: labels of shape "
            f"(batch, tokens) = {kept.shape}, the shape of the `{PADDING_MASK}` input, with "
            f"any value (-1, say) at padded tokens. Received: y.shape={y.shape}"
        )
    return check_labels(y[kept], num_classes)


def check_targets(y, num_targets, num_examples=None) -> np.ndarray:
    """Regression targets must be finite numbers, `(n,)` for one target or `(n, num_targets)`.

    Returns:
        The targets as a float64 array `(n, num_targets)`.
    """
    if y is None:
        raise ValueError(
            "Targets are required: pass `y` (n, targets), or a tf.data.Dataset of "
            "(inputs, targets)."
        )
    y = np.asarray(y)
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
        raise ValueError(f"Targets must be numbers. Received: y of dtype {y.dtype}")
    if y.ndim == 1 and num_targets == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[1] != num_targets:
        raise ValueError(
            f"Targets must have shape (n, {num_targets}), one column per target"
            f"{' (or (n,) for one)' if num_targets == 1 else ''}. Received: y.shape={y.shape}"
        )
    if num_examples is not None and len(y) != num_examples:
        raise ValueError(
            f"Inputs and targets differ in length: {num_examples} inputs, {len(y)} targets."
        )
    y = y.astype(np.float64)
    if not np.isfinite(y).all():
        bad = np.argwhere(~np.isfinite(y).all(axis=1))[:, 0]
        raise ValueError(
            f"Targets hold NaN or infinite values in {len(bad)} example(s), e.g. at "
            f"index {bad[:3].tolist()}. Drop or repair them first."
        )
    return y


def check_num_classes(num_classes) -> int:
    """`num_classes` must be an integer >= 2; returns it as an `int`."""
    integer = isinstance(num_classes, int | np.integer) and not isinstance(num_classes, bool)
    if not integer or num_classes < 2:
        raise ValueError(
            "`num_classes` must be an integer >= 2, the number of classes the probes "
            f"predict. Received: num_classes={num_classes!r}"
        )
    return int(num_classes)


def check_labels(y, num_classes, num_examples=None) -> np.ndarray:
    """Labels must be integer class indices in `[0, num_classes)` (`>= 0` if it is None).

    Returns:
        The labels as an int64 array `(n,)`.
    """
    if y is None:
        raise ValueError("Labels are required: pass `y`, or a tf.data.Dataset of (inputs, labels).")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2 and num_classes is not None and y.shape[1] == num_classes > 1:
        raise ValueError(
            f"Labels look one-hot encoded (shape {y.shape}). Probes take integer "
            "class indices: pass `np.argmax(y, axis=-1)`."
        )
    if y.ndim != 1:
        raise ValueError(
            f"Labels must be a 1-D array of class indices. Received: y.shape={y.shape}"
        )
    if num_examples is not None and len(y) != num_examples:
        raise ValueError(
            f"Inputs and labels differ in length: {num_examples} inputs, {len(y)} labels."
        )
    integral = np.issubdtype(y.dtype, np.integer) or (
        np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)
    )
    if not integral:
        raise ValueError(
            "Labels must be integer class indices. Received: y of dtype "
            f"{y.dtype}, e.g. {y[:3].tolist()}"
        )
    upper = np.inf if num_classes is None else num_classes
    if len(y) and (y.min() < 0 or y.max() >= upper):
        bad = y[(y < 0) | (y >= upper)]
        raise ValueError(
            f"Labels must lie in [0, num_classes) = [0, {num_classes}). Found "
            f"{len(bad)} outside it, e.g. {bad[:3].tolist()}. Pass the right "
            "`num_classes` or remap the labels."
        )
    return y.astype(np.int64)


def _paired(x, input_spec, argument):
    """The inputs in `x` lined up with the model's inputs: `(values, specs)`.

    A dict given to a model of list inputs is matched by input name, as Keras does.
    """
    specs = keras.tree.flatten(input_spec)
    if isinstance(x, dict) and not isinstance(input_spec, dict):
        names = [spec.name for spec in specs]
        if sorted(x) != sorted(names):
            raise ValueError(
                f"The model's inputs are named {names}; `{argument}` has keys {sorted(x)}."
            )
        return [x[name] for name in names], specs
    values = keras.tree.flatten(x)
    if len(values) != len(specs):
        raise ValueError(
            f"The model takes {len(specs)} input(s); received {len(values)} in `{argument}`."
        )
    return values, specs


def _check_shape(shape, spec, argument):
    expected = tuple(spec.shape)
    compatible = len(shape) == len(expected) and all(
        e is None or e == s for s, e in zip(shape[1:], expected[1:], strict=True)
    )
    if compatible:
        return
    hint = ""
    if len(shape) == len(expected) - 1 and tuple(shape[1:]) == expected[1:-1]:
        hint = " Add the channel axis, e.g. `x[..., None]`."
    raise ValueError(
        f"Inputs of shape {expected} (batch first) are expected by the model's "
        f"input '{spec.name}'. Received: {argument}.shape={tuple(shape)}.{hint}"
    )


def check_finite(array, argument, rows=1 << 16):
    """`array` `(n, ...)` must hold no NaN or infinity.

    Read `rows` examples at a time: a memory-mapped array is never loaded whole.
    """
    if not np.issubdtype(array.dtype, np.floating):
        return
    bad = []
    for start in range(0, len(array), rows):
        chunk = np.asarray(array[start : start + rows])
        finite = np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1)
        bad.append(start + np.flatnonzero(~finite))
    bad = np.concatenate(bad) if bad else []
    if len(bad):
        raise ValueError(
            f"`{argument}` holds NaN or infinite values in {len(bad)} example(s), "
            f"e.g. at index {bad[:3].tolist()}. Drop or repair them first."
        )


def _check_dataset(
    dataset, input_spec, num_classes, labels, argument, num_targets=None, tokens=False
):
    if dataset.cardinality() == 0:
        raise ValueError(
            f"`{argument}` is an empty tf.data.Dataset (cardinality 0). Check the "
            "split name and any filter or take() applied to it."
        )
    spec = dataset.element_spec
    if labels and not (isinstance(spec, tuple) and len(spec) in (2, 3)):
        raise ValueError(
            f"`{argument}` must yield (inputs, labels) pairs. Received elements of "
            f"spec {spec}. For TFDS, load with `as_supervised=True`."
        )
    x_spec = spec[0] if isinstance(spec, tuple) else spec
    for tensor, reference in zip(*_paired(x_spec, input_spec, argument), strict=True):
        if tensor.shape.rank == len(reference.shape) - 1:
            raise ValueError(
                f"`{argument}` yields single examples of shape {tensor.shape}; the "
                "model takes batches. Batch the dataset first, e.g. "
                "`dataset.batch(32)`."
            )
        if tensor.shape.rank is not None:
            _check_shape(tensor.shape.as_list(), reference, argument)
    if labels and num_targets:
        y_spec = spec[1]
        width = 1 if y_spec.shape.rank == 1 else y_spec.shape[-1]
        if y_spec.shape.rank not in (None, 1, 2) or width not in (None, num_targets):
            raise ValueError(
                f"`{argument}` yields targets of shape {y_spec.shape}; the probes regress "
                f"{num_targets} target(s): batches of shape (batch, {num_targets})."
            )
    elif labels:
        y_spec = spec[1]
        if not (y_spec.dtype.is_integer or y_spec.dtype.is_floating):
            raise ValueError(
                f"`{argument}` yields labels of dtype {y_spec.dtype.name}. Labels must be "
                "integer class indices: map the class names to indices over the dataset, "
                "e.g. with a keras.layers.StringLookup or tf.lookup.StaticHashTable."
            )
        if tokens and y_spec.shape.rank not in (None, 2):
            raise ValueError(
                f"`{argument}` yields labels of shape {y_spec.shape}; per-token probes "
                "(reducers='tokens') take one label per token: batches of shape (batch, "
                f"tokens), like the `{PADDING_MASK}` input, -1 or any value at padded tokens."
            )
        if not tokens and y_spec.shape.rank == 2 and y_spec.shape[-1] not in (1, None):
            raise ValueError(
                f"`{argument}` yields labels of shape {y_spec.shape}, which look "
                "one-hot encoded. Probes take integer class indices: map "
                "`lambda x, y: (x, tf.argmax(y, axis=-1))` over the dataset."
            )


def _checked_batch(batch, num_classes, labels, num_targets=None, kept=None):
    """A batch `(x, y[, w])` or `(x,)` with in-graph assertions on x and y.

    `kept(x)`, for per-token labels, gives the padding mask: labels must have
    its shape, and only the kept ones are checked.
    """
    x, *rest = batch
    checks = []
    if labels and kept is not None:
        mask = tf.cast(kept(x), "bool")
        y = rest[0]
        checks.append(
            tf.debugging.assert_equal(
                tf.shape(y),
                tf.shape(mask),
                message=(
                    "Per-token probes take one label per token: labels of shape (batch, "
                    f"tokens), like the `{PADDING_MASK}` input."
                ),
            )
        )
        with tf.control_dependencies(checks):
            rest = [tf.where(mask, y, tf.zeros_like(y)), *rest[1:]]
    checks += [
        tf.debugging.assert_all_finite(
            t, "Inputs hold NaN or infinite values. Drop or repair those examples."
        )
        for t in keras.tree.flatten(x)
        if t.dtype.is_floating
    ]
    if labels and num_targets:
        checks.append(
            tf.debugging.assert_all_finite(
                tf.cast(rest[0], "float32"),
                "Targets hold NaN or infinite values. Drop or repair those examples.",
            )
        )
    elif labels and rest[0].dtype.is_floating:
        # A cast to int64 would truncate 2.5 to 2 silently: as `check_labels`
        # refuses such arrays, the stream refuses such batches.
        y = rest[0]
        whole = tf.equal(tf.math.floormod(y, tf.ones_like(y)), 0)
        checks.append(
            tf.debugging.Assert(
                tf.reduce_all(whole),
                [
                    "Labels must be integer class indices. Received: labels of dtype "
                    f"{y.dtype.name} with a fractional or non-finite value, e.g.",
                    tf.boolean_mask(y, tf.logical_not(whole)),
                ],
                summarize=3,
            )
        )
    if labels and not num_targets and num_classes is not None:
        y = tf.cast(rest[0], "int64")
        checks += [
            tf.debugging.assert_non_negative(
                y, message="Labels must be >= 0; found a negative one."
            ),
            tf.debugging.assert_less(
                y,
                tf.constant(num_classes, "int64"),
                message=(
                    f"Labels must lie in [0, num_classes) = [0, {num_classes}); found a larger "
                    "one. Pass the right `num_classes` or remap the labels."
                ),
            ),
        ]
    with tf.control_dependencies(checks):
        x = keras.tree.map_structure(tf.identity, x)
    return (x, *rest) if rest else x


@contextlib.contextmanager
def one_line_assertions():
    """A failed assertion of the input pipeline or the graph, as one line of its own words.

    TensorFlow wraps the message in its frames (`Graph execution error`,
    `[[{{node ...}}]]`, the op); the type stays `InvalidArgumentError`, as the
    checks of streams document it, with the assertion's text only (the
    pieces of its data joined by spaces, unescaped).
    """
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        found = re.search(r"assertion failed: (.*)", error.message)
        if found is None:
            raise
        text = re.sub(r"^\[|\]$", "", found.group(1).strip()).replace("] [", " ")
        text = re.sub(r"\\(['\"\\])", r"\1", text)  # TF escapes quotes in the data it prints
        raise type(error)(error.node_def, error.op, text) from None
