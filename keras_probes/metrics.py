"""How a probe is scored: each metric defined once, as a Keras metric.

The metrics of a probe are Keras metric objects (`trackers`), the same in
both places a probe is scored:

- streamed batch by batch inside Keras' `fit` and `evaluate` of a
  `kp.ProbedModel`, in float32, as Keras' logs;
- over a whole split at once, in float64, for every probe fitted outside
  Keras' loop (`kp.fit_probes`, the controls, `ProbeMonitor`,
  `kp.fit_regression_probes`): `measure` feeds fresh float64 trackers.

Class probes: the mean cross-entropy, `SparseCategoricalAccuracy` and
`top_k_hits` (top-5, as Keras' `SparseTopKCategoricalAccuracy`: a label
counts in when fewer than 5 classes score above it). Regression probes: the mean squared error, and
`RegressionStats` for each target's R^2 and MSPE. `r2` and `mspe` are the
latter on arrays.
"""

import keras
import numpy as np

__all__ = [
    "RegressionStats",
    "classification_trackers",
    "columns",
    "measure",
    "mspe",
    "r2",
    "regression_trackers",
    "top_k_hits",
]


def classification_trackers(num_classes: int, prefix: str, dtype=None) -> dict:
    """`{name: metric}` of one class probe: `loss` (fed the per-example losses),
    `accuracy` and `top5_accuracy` (fed labels and logits)."""
    return {
        "loss": keras.metrics.Mean(name=f"{prefix}_loss", dtype=dtype),
        "accuracy": keras.metrics.SparseCategoricalAccuracy(name=f"{prefix}_accuracy", dtype=dtype),
        "top5_accuracy": keras.metrics.MeanMetricWrapper(
            top_k_hits, name=f"{prefix}_top5_accuracy", dtype=dtype, k=min(5, num_classes)
        ),
    }


def top_k_hits(labels, logits, k: int = 5):
    """1 where the label is among the `k` best classes, else 0: `(n,)`.

    As `tf.math.in_top_k` (Keras' `SparseTopKCategoricalAccuracy`): the label
    counts in when fewer than `k` classes score strictly above it, so ties at
    the boundary count in, and a row with a non-finite score is a miss.
    Unlike it, any float dtype (float64 included).
    """
    ops = keras.ops
    logits = ops.convert_to_tensor(logits)
    labels = ops.cast(ops.reshape(labels, (-1, 1)), "int32")
    true = ops.take_along_axis(logits, labels, axis=1)
    above = ops.sum(ops.cast(logits > true, "int32"), axis=1)
    finite = ops.all(ops.isfinite(logits), axis=1)
    return ops.cast(ops.logical_and(above < k, finite), logits.dtype)


def regression_trackers(targets, prefix: str, dtype=None) -> dict:
    """`{name: metric}` of one regression probe: `loss` (fed the per-example losses)
    and `stats`, whose result is `<target>_r2` and `<target>_mspe` per target."""
    return {
        "loss": keras.metrics.Mean(name=f"{prefix}_loss", dtype=dtype),
        "stats": RegressionStats(targets, name=f"{prefix}_stats", dtype=dtype),
    }


def measure(trackers: dict, y, outputs, losses) -> dict[str, float]:
    """Feeds one whole set to fresh `trackers`; returns every figure by its log name.

    Args:
        trackers: `{name: metric}` as `classification_trackers` makes them.
        y: the labels or targets.
        outputs: the probe's raw outputs (logits, or predictions).
        losses: each example's loss, `(n,)`.

    Returns:
        `{name: value}`, e.g. `{"loss": ..., "accuracy": ..., "top5_accuracy": ...}`.
    """
    values = {}
    for key, tracker in trackers.items():
        if key == "loss":
            tracker.update_state(losses)
        else:
            tracker.update_state(y, outputs)
        result = tracker.result()
        # A metric of several figures (one per regression target) gives each.
        for name, value in (result if isinstance(result, dict) else {key: result}).items():
            values[name] = float(value)
    return values


def r2(targets, predictions) -> np.ndarray:
    """Coefficient of determination per target column: `1 - SS_res / SS_tot`, float64."""
    return _stats(targets, predictions)[0]


def mspe(targets, predictions) -> np.ndarray:
    """Mean squared prediction error per target column, float64."""
    return _stats(targets, predictions)[1]


def _stats(targets, predictions):
    targets, predictions = columns(targets), columns(predictions)
    names = [str(i) for i in range(targets.shape[1])]
    stats = RegressionStats(names, dtype="float64")
    stats.update_state(targets, predictions)
    result = stats.result()
    fits = np.array([float(result[f"{n}_r2"]) for n in names])
    errors = np.array([float(result[f"{n}_mspe"]) for n in names])
    return fits, errors


def columns(values) -> np.ndarray:
    """`values` in float64 as `(n, columns)`: a vector becomes one column."""
    values = np.asarray(values, np.float64)
    return values[:, None] if values.ndim == 1 else values


@keras.saving.register_keras_serializable(package="keras_probes")
class RegressionStats(keras.metrics.Metric):
    """R^2 and MSPE of every target over all examples seen (weighted), exactly.

    Accumulates the weighted count, the sums and the sums of squares of the
    targets and the squared residuals per target, so that `result()` is the
    R^2 and MSPE of everything seen, however it was batched. Its result is
    `{<target>_r2: ..., <target>_mspe: ...}`; R^2 is NaN for a constant target.

    Args:
        targets: the target names, in column order.
        name: the metric's name. Defaults to `"regression_stats"`.
        dtype: the accumulators' dtype. Defaults to Keras' float type.
    """

    def __init__(self, targets, name="regression_stats", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.targets = list(targets)
        k = len(self.targets)
        # In the metric's dtype: float64 sums when asked for (Keras' default is float32).
        zeros = {"initializer": "zeros", "dtype": self.dtype}
        self.count = self.add_variable((), name="count", **zeros)
        self.total = self.add_variable((k,), name="total", **zeros)
        self.squares = self.add_variable((k,), name="squares", **zeros)
        self.residuals = self.add_variable((k,), name="residuals", **zeros)

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        k = len(self.targets)
        y = ops.reshape(ops.cast(y_true, self.dtype), (-1, k))
        prediction = ops.cast(y_pred, self.dtype)
        if sample_weight is None:
            weight = ops.ones_like(y[:, :1])
        else:
            weight = ops.reshape(ops.cast(sample_weight, self.dtype), (-1, 1))
        self.count.assign_add(ops.sum(weight))
        self.total.assign_add(ops.sum(weight * y, axis=0))
        self.squares.assign_add(ops.sum(weight * y**2, axis=0))
        self.residuals.assign_add(ops.sum(weight * (y - prediction) ** 2, axis=0))

    def result(self):
        ops = keras.ops
        spread = self.squares - ops.divide_no_nan(self.total**2, self.count)
        fit = ops.where(spread > 0, 1.0 - ops.divide_no_nan(self.residuals, spread), float("nan"))
        error = ops.divide_no_nan(self.residuals, self.count)
        results = {}
        for i, target in enumerate(self.targets):
            results[f"{target}_r2"] = fit[i]
            results[f"{target}_mspe"] = error[i]
        return results

    def get_config(self):
        return {**super().get_config(), "targets": self.targets}
