"""The MNIST MLPs of Graziani et al. (2019), shared by flawed_mlp_mnist.py and
true_vs_corrupted.py: the data as flat vectors and the network (trained by
`_common.train`), and what seeds.py reads of their runs.

The paper: fc(4096) layers with ReLU, trained 1,000 epochs with SGD (learning
rate 0.01) to a full overfit of the (corrupted) training labels; six hidden
layers for the shape-concept experiment. Here: six hidden layers of
`width` units (512 by default), Adam(1e-3), `epochs` epochs (100 by default),
which fits even fully random labels (>= 0.98 train accuracy) in 2 CPU minutes.

Keras and keras_probes are imported where they are used: seeds.py, which
trains nothing, imports `SHAPES` and `first_epoch` without TensorFlow.
"""

import numpy as np

SHAPES = ["area", "perimeter", "eccentricity"]


def data(seed: int, quick: bool):
    """`(splits, source)`: `{"train", "val", "test"}` of `(x (n, 784) float32, y, images)`."""
    import keras_probes as kp

    splits = kp.datasets.mnist(seed=seed)
    parts = {"train": splits.train, "val": splits.val, "test": splits.test}
    if quick:
        parts = {
            name: (x[:n], y[:n])
            for (name, (x, y)), n in zip(parts.items(), (800, 300, 300), strict=True)
        }
    flat = {
        name: ((x.reshape(len(x), -1) / 255.0).astype("float32"), y.astype("int64"), x)
        for name, (x, y) in parts.items()
    }
    return flat, splits.source


def mlp(width: int, depth: int, seed: int):
    """`depth` ReLU layers of `width` units (`hidden1`...) and linear `logits`: a `keras.Model`."""
    import keras

    x = inputs = keras.Input((784,), name="input")
    for i in range(depth):
        init = keras.initializers.GlorotUniform(seed * 100 + i)
        x = keras.layers.Dense(width, "relu", kernel_initializer=init, name=f"hidden{i + 1}")(x)
    outputs = keras.layers.Dense(
        10, kernel_initializer=keras.initializers.GlorotUniform(seed * 100 + 99), name="logits"
    )(x)
    return keras.Model(inputs, outputs, name=f"mlp_{depth}x{width}")


def correct(model, x, y) -> np.ndarray:
    """Whether the model's class is the label, per example: `(n,)` bool."""
    return np.argmax(model.predict(x, batch_size=512, verbose=0), axis=1) == y


def accuracy(model, x, y) -> float:
    return float(np.mean(correct(model, x, y)))


def compare_losses(metric: str, lost, than, split: str = "val"):
    """Is a figure lost more in one place than in another: `(a0 - a1) - (b0 - b1)`.

    Each of `lost` and `than` is a pair `((report, point), (report, point))`: the
    figure (e.g. `"area_r2"`) of the first minus that of the second, e.g. a point's
    R^2 at N = 0 minus at N = 1. All four are measured on the same held-out examples
    (same fingerprint), so the difference is tested by the paired bootstrap over them
    (`kp.uncertainty.paired_means`).

    Returns:
        A `kp.uncertainty.Comparison`.
    """
    import dataclasses

    from keras_probes import uncertainty

    pairs = [*lost, *than]
    examples = pairs[0][0].examples[split]
    if any(report.examples[split] != examples for report, _ in pairs):
        raise ValueError(f"The reports were measured on other examples of split {split!r}.")
    columns = [report.outcomes[split][point].columns(metric) for report, point in pairs]
    figure, k = columns[0][1], columns[0][0].shape[1]

    def loss(means):  # the figure of the first k columns' means minus the next k's
        return figure(means[..., :k]) - figure(means[..., k:])

    first = np.concatenate([columns[0][0], columns[1][0]], axis=1)
    second = np.concatenate([columns[2][0], columns[3][0]], axis=1)
    result = uncertainty.paired_means(first, second, statistic=loss)
    return dataclasses.replace(result, split=split, metric=f"{metric} lost")


def first_epoch(epochs, values, level):
    """The first epoch at which `values` reach `level` (None if never)."""
    return next((e for e, v in zip(epochs, values, strict=True) if v >= level), None)
