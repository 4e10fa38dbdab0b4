"""Feature reducers: turn one layer's output into a vector per example.

A probe is a linear classifier on a vector, so every point's output of shape
`(batch, *dims)` is reduced to `(batch, features)` first. Alain & Bengio
(Sec. 3.4) pool spatial maps over height and width (ResNet-50) or keep a fixed
random subset of the features (Inception v3); both are here, as registered,
serializable Keras layers without weights.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_probes import _graph, _params

__all__ = ["GlobalAveragePooling", "RandomSubset", "resolve"]


@keras.saving.register_keras_serializable(package="keras_probes")
class GlobalAveragePooling(keras.layers.Layer):
    """Averages a channels-last feature map over every axis but batch and channels.

    Works for any rank: `(batch, steps, channels)`, `(batch, height, width,
    channels)`, `(batch, depth, height, width, channels)`; a
    `(batch, features)` input passes through unchanged. Always one row per
    example, the mean over the whole map, whatever the map's size: a graph
    fed a larger map than it was traced for (as a loaded SavedModel
    signature allows) gets the true mean, never one row per window.

    Input shape:
        `(batch, ..., channels)`.

    Output shape:
        `(batch, channels)`.
    """

    def call(self, inputs):
        spatial = tuple(inputs.shape[1:-1])
        if not spatial:
            return inputs
        axes = tuple(range(1, len(inputs.shape) - 1))
        if None in spatial or len(spatial) > 3:
            return keras.ops.mean(inputs, axis=axes)

        def pooled():
            # One pooling window spanning the whole map: the backends' pooling
            # kernels (oneDNN, cuDNN) do this 1.1-3x faster than a generic mean,
            # which matters when 17 large maps are pooled per batch.
            window = keras.ops.average_pool(inputs, pool_size=spatial, strides=1, padding="valid")
            return keras.ops.reshape(window, (-1, inputs.shape[-1]))

        if tf.executing_eagerly():
            return pooled()  # the static shape is the tensor's own
        # In a graph, the map fed at run time may be larger than the static
        # shape says (a loaded SavedModel signature does not check the shapes
        # it is fed): a window of the static size would then give several rows
        # per example. Such a map gets the true mean; the usual one, the
        # pooling kernel (the check costs a few scalar ops per call). With a
        # fully static shape (a fixed batch size too) Grappler may fold the
        # check away; exported signatures refuse such inputs before this.
        fed = tf.raw_ops.Shape(input=inputs)[1:-1]
        return tf.cond(
            tf.reduce_all(tf.equal(fed, spatial)),
            pooled,
            lambda: keras.ops.mean(inputs, axis=axes),
        )

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


@keras.saving.register_keras_serializable(package="keras_probes")
class RandomSubset(keras.layers.Layer):
    """Keeps a fixed random subset of `k` of the flattened features.

    The indices are drawn once, without replacement, from `seed` and the
    input's shape, and rebuilt the same way after loading: no weight of the
    full flattened size is ever created, which is what makes probes on
    millions of features (early Inception v3 layers) fit in memory. A point
    with `k` or fewer features keeps all of them.

    Args:
        k: number of features to keep.
        seed: seed of the draw. Defaults to `0`.

    Input shape:
        `(batch, *dims)`.

    Output shape:
        `(batch, min(k, prod(dims)))`.

    Example:

    >>> kp.ProbedModel(base, points="inception_v3", num_classes=1000,
    ...                reducers=kp.RandomSubset(1000, seed=0))
    """

    def __init__(self, k: int, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        _params.check(
            {
                "k": _params.Integer(1, description="a positive integer"),
                # The indices are rebuilt from the seed after loading.
                "seed": _params.Integer(),
            },
            k=k,
            seed=seed,
        )
        self.k = int(k)
        self.seed = int(seed)

    def build(self, input_shape):
        dims = input_shape[1:]
        if any(d is None for d in dims):
            raise ValueError(
                "RandomSubset needs a fully defined feature shape to fix its indices. "
                f"Received: input_shape={input_shape}"
            )
        size = int(np.prod(dims))
        if self.k >= size:
            indices = np.arange(size)
        else:
            rng = np.random.default_rng(self.seed)
            indices = np.sort(rng.choice(size, self.k, replace=False))
        self.indices = indices.astype("int64")  # a constant of the graph, not a weight

    def call(self, inputs):
        flat = keras.ops.reshape(inputs, (keras.ops.shape(inputs)[0], -1))
        return keras.ops.take(flat, self.indices, axis=1)

    def compute_output_shape(self, input_shape):
        size = int(np.prod(input_shape[1:]))
        return (input_shape[0], min(self.k, size))

    def get_config(self):
        return {**super().get_config(), "k": self.k, "seed": self.seed}


def _auto(shape, name):
    if len(shape) <= 2:
        return keras.layers.Flatten(name=name)
    return GlobalAveragePooling(name=name)


_BY_NAME = {
    "auto": _auto,
    "gap": lambda shape, name: GlobalAveragePooling(name=name),
    "flatten": lambda shape, name: keras.layers.Flatten(name=name),
}


def resolve(reducers, shapes: dict[str, tuple]) -> dict[str, keras.Layer]:
    """One fresh reducer layer per point.

    Args:
        reducers: `"auto"` (average pooling for spatial outputs, flatten for
            vectors), `"gap"`, `"flatten"`, a reducer layer (copied for each
            point through its config), or a dict `{point: any of these}` where
            points left out get `"auto"`.
        shapes: the output shape of each point, in depth order.

    Returns:
        `{point: unbuilt reducer layer}`.
    """
    if isinstance(reducers, dict):
        unknown = sorted(set(reducers) - set(shapes))
        if unknown:
            raise ValueError(
                f"Reducers were given for {unknown}, which are not probe points. "
                f"The points are: {list(shapes)}. Received: reducers={reducers!r}"
            )
        specs = {point: reducers.get(point, "auto") for point in shapes}
    else:
        specs = dict.fromkeys(shapes, reducers)
    return {
        point: _make(spec, shapes[point], f"reducer_{_graph.safe_name(point)}", reducers)
        for point, spec in specs.items()
    }


def _make(spec, shape, name, reducers):
    if isinstance(spec, str) and spec in _BY_NAME:
        return _BY_NAME[spec](shape, name)
    if isinstance(spec, keras.Layer):
        return spec.__class__.from_config({**spec.get_config(), "name": name})
    raise ValueError(
        f"Unknown reducer {spec!r}. Pass 'auto', 'gap', 'flatten', a reducer layer "
        "such as kp.RandomSubset(1000, seed=0), or a dict {point: reducer}. "
        f"Received: reducers={reducers!r}"
    )
