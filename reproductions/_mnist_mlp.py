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


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=512, verbose=0), axis=1) == y))


def first_epoch(epochs, values, level):
    """The first epoch at which `values` reach `level` (None if never)."""
    return next((e for e, v in zip(epochs, values, strict=True) if v >= level), None)
