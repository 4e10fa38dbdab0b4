"""The probe itself: a softmax linear classifier behind a gradient stop."""

import keras
import tensorflow as tf

__all__ = ["ProbeHead"]


@keras.saving.register_keras_serializable(package="keras_probes")
class ProbeHead(keras.layers.Layer):
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
        `(batch, features)`.

    Output shape:
        `(batch, num_classes)`: class probabilities.

    Example:

    >>> head = kp.ProbeHead(10)
    >>> head(np.zeros((2, 64))).shape
    (2, 10)
    >>> kernel, bias = head.get_weights()
    """

    def __init__(
        self,
        num_classes: int,
        kernel_initializer="zeros",
        bias_initializer="zeros",
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=2)

    def build(self, input_shape):
        features = input_shape[-1]
        if features is None:
            raise ValueError(
                f"ProbeHead needs a known number of features. Received: input_shape={input_shape}"
            )
        self.kernel = self.add_weight(
            shape=(features, self.num_classes),
            initializer=self.kernel_initializer,
            name="kernel",
        )
        self.bias = self.add_weight(
            shape=(self.num_classes,), initializer=self.bias_initializer, name="bias"
        )

    def logits(self, inputs):
        """The unnormalised scores `stop_gradient(inputs) @ kernel + bias`."""
        inputs = keras.ops.cast(tf.stop_gradient(inputs), self.compute_dtype)
        return keras.ops.matmul(inputs, self.kernel) + self.bias

    def call(self, inputs):
        return keras.ops.softmax(self.logits(inputs), axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }
