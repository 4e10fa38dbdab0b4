"""Intentionally flawed models (Graziani et al., 2019): labels corrupted at a
fraction N (N-memorizing networks), randomly re-initialised networks, and the
accuracy of a training run split into its true-label and corrupted parts."""

import zlib

import keras
import numpy as np

from keras_probes import _params, _validation

__all__ = ["CorruptionMonitor", "corrupt_labels", "reinitialize"]


def corrupt_labels(y, fraction: float, num_classes: int, seed: int = 0):
    """Replaces a fraction of the labels, each by another class drawn at random.

    Exactly `round(fraction * n)` labels change, at positions drawn without
    replacement, each to one of the `num_classes - 1` other classes, uniformly.
    The same `seed` gives the same corruption.

    Args:
        y: integer labels, `(n,)`.
        fraction: `N`, in `[0, 1]`: `0` keeps every label, `1` changes them all.
        num_classes: number of classes (`>= 2`).
        seed: seed of the draw. Defaults to `0`.

    Returns:
        `(new_y, corrupted)`: the labels (same dtype as `y`) and the boolean
        mask of the changed ones.

    Example:

    >>> new_y, corrupted = kp.flawed.corrupt_labels(y, fraction=0.4, num_classes=10)
    >>> corrupted.sum() == round(0.4 * len(y))
    True
    """
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"`y` must be integer labels of shape (n,). Received: {y.dtype} {y.shape}")
    num_classes = _validation.check_num_classes(num_classes)
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"Labels must lie in [0, {num_classes}). Received: labels from {y.min()} to {y.max()}"
        )
    _params.check({"fraction": _params.Real(0, 1, description="in [0, 1]")}, fraction=fraction)
    rng = np.random.default_rng(seed)
    corrupted = np.zeros(len(y), bool)
    corrupted[rng.choice(len(y), size=round(fraction * len(y)), replace=False)] = True
    new_y = y.copy()
    # A shift of 1..num_classes-1 lands on each other class with equal chance.
    shift = rng.integers(1, num_classes, size=int(corrupted.sum()))
    new_y[corrupted] = (y[corrupted] + shift) % num_classes
    return new_y, corrupted


def reinitialize(model: keras.Model, seed: int = 0) -> keras.Model:
    """The same architecture with fresh random weights: a "random network".

    The model is cloned (`keras.models.clone_model`, nested models included)
    and every layer's weights are drawn again from its own initializers, each
    initializer seeded from `seed`, the layer's position and the argument
    name, so that the result is reproducible and the global random state is
    not touched. BatchNorm statistics restart from their initial values. The
    original model is left as it is.

    Args:
        model: a Functional or Sequential model.
        seed: seed of the new weights. Defaults to `0`.

    Returns:
        A new, uncompiled model.
    """
    positions = iter(range(1 << 30))

    def clone(layer):
        config = layer.get_config()
        position = next(positions)
        for key, value in config.items():
            inner = value.get("config") if isinstance(value, dict) else None
            if key.endswith("initializer") and isinstance(inner, dict) and "seed" in inner:
                inner["seed"] = _derived_seed(seed, position, key)
        return layer.__class__.from_config(config)

    fresh = keras.models.clone_model(model, clone_function=clone, recursive=True)
    if not fresh.built:
        fresh.build(model.input_shape)
    return fresh


def _derived_seed(seed, position, key):
    """A reproducible seed per (model seed, layer position, initializer argument)."""
    entropy = [seed, position, zlib.crc32(key.encode())]
    return int(np.random.default_rng(entropy).integers(1 << 31))


class CorruptionMonitor(keras.callbacks.Callback):
    """Accuracy on the true-label part and on the corrupted part of a training
    set, every epoch (Graziani et al., Fig. 5: true labels are learned first).

    Args:
        x: the training inputs (or a subset of them).
        y: the labels trained on, corrupted ones included.
        corrupted: the mask `corrupt_labels` returned.
        true_y: the original labels, for the corrupted part's true-label
            accuracy. Defaults to `None` (not measured).
        batch_size: prediction batch size. Defaults to `256`.

    Attributes:
        history: `{"epoch", "clean_accuracy", "corrupted_accuracy",
            "corrupted_true_accuracy"}` lists: accuracy on the uncorrupted
            examples, on the corrupted ones against the labels trained on
            (memorisation), and against their true labels.

    Example:

    ```python
    y_noisy, mask = kp.flawed.corrupt_labels(y, 0.5, num_classes=10)
    monitor = kp.flawed.CorruptionMonitor(x, y_noisy, mask, true_y=y)
    model.fit(x, y_noisy, epochs=20, callbacks=[monitor])
    ```
    """

    def __init__(self, x, y, corrupted, true_y=None, batch_size: int = 256):
        super().__init__()
        self.x, self.y = x, np.asarray(y)
        self.corrupted = np.asarray(corrupted, bool)
        self.true_y = None if true_y is None else np.asarray(true_y)
        if len(self.y) != len(self.corrupted):
            raise ValueError(
                f"`y` and `corrupted` must have the same length. Received: {len(self.y)} "
                f"and {len(self.corrupted)}"
            )
        self.batch_size = batch_size
        self.history = {
            "epoch": [],
            "clean_accuracy": [],
            "corrupted_accuracy": [],
            "corrupted_true_accuracy": [],
        }

    def _record(self, epoch):
        scores = self.model.predict(self.x, batch_size=self.batch_size, verbose=0)
        if isinstance(scores, list | tuple):
            scores = scores[0]
        predicted = np.argmax(scores, axis=-1)
        clean, dirty = ~self.corrupted, self.corrupted
        mean = lambda hits: float(hits.mean()) if hits.size else float("nan")  # noqa: E731
        self.history["epoch"].append(epoch)
        self.history["clean_accuracy"].append(mean(predicted[clean] == self.y[clean]))
        self.history["corrupted_accuracy"].append(mean(predicted[dirty] == self.y[dirty]))
        true = float("nan") if self.true_y is None else mean(predicted[dirty] == self.true_y[dirty])
        self.history["corrupted_true_accuracy"].append(true)

    def on_train_begin(self, logs=None):
        if not self.history["epoch"]:
            self._record(0)

    def on_epoch_end(self, epoch, logs=None):
        self._record(epoch + 1)
