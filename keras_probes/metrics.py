"""How a probe is scored: each metric defined once.

Two forms of the same figures:

- on a fitted probe's outputs over a whole split, in float64 NumPy:
  `classification_scores` (loss, error, top-5 error), `r2` and `mspe`. Every
  probe fitted outside Keras' loop (`kp.fit_probes`, the controls,
  `ProbeMonitor`, `kp.fit_regression_probes`) is scored by these;
- streamed batch by batch inside Keras' `fit`/`evaluate` (`ProbedModel`):
  Keras' own accuracy metrics, and `RegressionStats` for R^2 and MSPE, which
  accumulates the sums the float64 formulas use.
"""

import keras
import numpy as np
import scipy.special

__all__ = ["RegressionStats", "classification_scores", "mspe", "r2"]


def classification_scores(labels, logits) -> dict[str, float]:
    """Mean cross-entropy, top-1 and top-5 error of `logits` `(n, classes)`, in float64.

    As Keras' metrics: top-1 is the argmax (the first of tied classes); top-5
    counts the label in when fewer than 5 classes score above it.
    """
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels).astype(np.int64)
    true = logits[np.arange(len(labels)), labels]
    above = (logits > true[:, None]).sum(axis=1)
    return {
        "loss": float(np.mean(scipy.special.logsumexp(logits, axis=1) - true)),
        "error": float(np.mean(np.argmax(logits, axis=1) != labels)),
        "top5_error": float(np.mean(above >= min(5, logits.shape[1]))),
    }


def r2(targets, predictions) -> np.ndarray:
    """Coefficient of determination per target column: `1 - SS_res / SS_tot`."""
    targets, predictions = columns(targets), columns(predictions)
    residual = ((targets - predictions) ** 2).sum(axis=0)
    total = ((targets - targets.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, 1.0 - residual / total, np.nan)


def mspe(targets, predictions) -> np.ndarray:
    """Mean squared prediction error per target column."""
    return ((columns(targets) - columns(predictions)) ** 2).mean(axis=0)


def columns(values) -> np.ndarray:
    """`values` in float64 as `(n, columns)`: a vector becomes one column."""
    values = np.asarray(values, np.float64)
    return values[:, None] if values.ndim == 1 else values


@keras.saving.register_keras_serializable(package="keras_probes")
class RegressionStats(keras.metrics.Metric):
    """R^2 and MSPE of every target over all examples seen (weighted), exactly.

    Accumulates the weighted count, sums, sums of squares and squared
    residuals per target, so that `result()` is `r2`/`mspe` of everything seen,
    however it was batched. Logs `<target>_r2` and `<target>_mspe`.

    Args:
        targets: the target names, in column order.
        name: the metric's name. Defaults to `"regression_stats"`.
        dtype: the accumulators' dtype. Defaults to Keras' float type.
    """

    def __init__(self, targets, name="regression_stats", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.targets = list(targets)
        k = len(self.targets)
        self.count = self.add_variable((), initializer="zeros", name="count")
        self.total = self.add_variable((k,), initializer="zeros", name="total")
        self.squares = self.add_variable((k,), initializer="zeros", name="squares")
        self.residuals = self.add_variable((k,), initializer="zeros", name="residuals")

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
