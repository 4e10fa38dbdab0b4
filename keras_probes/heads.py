"""The probes themselves: linear maps behind a gradient stop.

`ProbeHead` is a softmax linear classifier (Alain & Bengio); `RegressionHead`
a linear regression of continuous targets (Graziani et al.'s Regression
Concept Vectors). Both cast their input up to float32 after
`tf.stop_gradient`, so no loss put on a probe reaches the model it measures.
"""

import keras
import tensorflow as tf

__all__ = ["ProbeHead", "RegressionHead"]


class _LinearHead(keras.layers.Layer):
    """`stop_gradient(inputs) @ kernel + bias`, at float32, with `units` outputs."""

    def __init__(self, units, kernel_initializer="zeros", bias_initializer="zeros", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.units = int(units)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        # (batch, features), or (batch, tokens, features) for per-token probes.
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def build(self, input_shape):
        features = input_shape[-1]
        if features is None:
            raise ValueError(
                f"{type(self).__name__} needs a known number of features. "
                f"Received: input_shape={input_shape}"
            )
        self.kernel = self.add_weight(
            shape=(features, self.units), initializer=self.kernel_initializer, name="kernel"
        )
        self.bias = self.add_weight(
            shape=(self.units,), initializer=self.bias_initializer, name="bias"
        )

    def linear(self, inputs):
        """`stop_gradient(inputs) @ kernel + bias`: `(batch, units)`."""
        inputs = keras.ops.cast(tf.stop_gradient(inputs), self.compute_dtype)
        return keras.ops.matmul(inputs, self.kernel) + self.bias

    def compute_output_shape(self, input_shape):
        # (batch, units), or (batch, tokens, units): the last axis is mapped.
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


@keras.saving.register_keras_serializable(package="keras_probes")
class ProbeHead(_LinearHead):
    """A softmax linear classifier that never sends gradients back.

    The input first goes through `tf.stop_gradient`, so whatever loss is put
    on the probe's output, no gradient reaches the layers that produced its
    features: the probe measures the model without influencing it.

    Args:
        num_classes: number of classes.
        kernel_initializer: initializer of the `(features, num_classes)`
            kernel. Defaults to `"zeros"`: the probe's problem is convex, so
            it needs no symmetry breaking and starts from the same point
            every time.
        bias_initializer: initializer of the bias. Defaults to `"zeros"`.
        **kwargs: passed to `keras.layers.Layer`. The dtype defaults to
            `"float32"` whatever the global policy: a probe is a measurement,
            kept at full precision (its input is cast up).

    Input shape:
        `(batch, features)`, or `(batch, tokens, features)`.

    Output shape:
        `(batch, num_classes)` (or `(batch, tokens, num_classes)`): class
        probabilities.

    Example:

    >>> head = kp.ProbeHead(10)
    >>> head(np.zeros((2, 64))).shape
    (2, 10)
    >>> kernel, bias = head.get_weights()
    """

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(num_classes, **kwargs)
        self.num_classes = self.units

    def logits(self, inputs):
        """The unnormalised scores `stop_gradient(inputs) @ kernel + bias`."""
        return self.linear(inputs)

    def call(self, inputs):
        return keras.ops.softmax(self.linear(inputs), axis=-1)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="keras_probes")
class RegressionHead(_LinearHead):
    """A linear regression probe that never sends gradients back.

    Predicts `num_targets` continuous values (concept measures, see
    `kp.concepts`) as `stop_gradient(inputs) @ kernel + bias`. Column `j` of
    the kernel, scaled to unit length, is the layer's Regression Concept
    Vector for target `j` (`kp.RegressionProbedModel.concept_vectors`).

    Args:
        num_targets: number of targets regressed together. Defaults to `1`.
        **kwargs: as for `ProbeHead`: initializers (zeros by default) and
            `keras.layers.Layer` arguments; float32 whatever the policy.

    Input shape:
        `(batch, features)`, or `(batch, tokens, features)`.

    Output shape:
        `(batch, num_targets)` (or `(batch, tokens, num_targets)`): the
        predictions.

    Example:

    >>> head = kp.RegressionHead(3)
    >>> head(np.zeros((2, 64))).shape
    (2, 3)
    """

    def __init__(self, num_targets: int = 1, **kwargs):
        super().__init__(num_targets, **kwargs)
        self.num_targets = self.units

    def call(self, inputs):
        return self.linear(inputs)

    def get_config(self):
        return {**super().get_config(), "num_targets": self.num_targets}
