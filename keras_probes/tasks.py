"""What the probes predict: the task, one class per kind of target.

A task owns everything that depends on what is predicted: the head, each
example's loss, the metrics Keras streams and the names a callback may
monitor, turning logs into a report row, checking targets, scoring a fitted
probe on a whole split, and the outputs a served probe returns. The models
(`kp.ProbedModel`), the fitting loop and the export ask the task what to do
rather than test which task it is, so a new kind of probe is mostly one new
class here (plus, for its own constructor arguments, a thin model subclass
such as `kp.RegressionProbedModel`).

- `Classification(num_classes)`: softmax linear classifiers on integer
  labels (Alain & Bengio). Metrics: loss, error (accuracy in Keras' logs),
  top-5 error.
- `Regression(targets)`: linear regressions of continuous targets
  (Graziani et al.'s Regression Concept Vectors). Metrics: loss (mean squared
  error averaged over the targets), and per target R^2 and MSPE.
"""

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_probes import _validation, metrics
from keras_probes.heads import ProbeHead, RegressionHead
from keras_probes.outcomes import Outcomes, RegressionOutcomes
from keras_probes.report import classification_row, log_key

__all__ = ["Classification", "Regression", "Task"]


class Task:
    """The interface every task implements; see `Classification` for one.

    Attributes:
        num_classes: the number of classes, or `None` for a task without
            classes (recorded in reports and caches).
    """

    num_classes: int | None = None
    #: The kind of solver that fits this task's probes: `"classifier"` or `"regressor"`.
    solver_kind: str = "classifier"

    def columns(self) -> list[str]:
        """The names of the heads' output columns."""
        raise NotImplementedError

    def fit_params(self) -> dict:
        """What a solver's `fit(X, y, **fit_params)` needs to know of the task."""
        return {}

    def diagnostic_row(self, diagnostics: dict) -> dict[str, float]:
        """A solver's diagnostics as report columns: a value per output column is
        named after it (`area_alpha`), a single value keeps its name."""
        row = {}
        for name, value in diagnostics.items():
            if np.ndim(value) == 0:
                row[name] = float(value)
            else:
                columns = self.columns()
                row.update({f"{c}_{name}": float(v) for c, v in zip(columns, value, strict=True)})
        return row

    def new_head(self, name: str) -> keras.layers.Layer:
        """A fresh, unbuilt head layer named `name`; `head.linear(x)` its raw outputs."""
        raise NotImplementedError

    def example_losses(self, y, outputs):
        """Each example's loss `(batch,)` from the heads' linear outputs (keras.ops)."""
        raise NotImplementedError

    def new_trackers(self, prefix: str, dtype=None) -> dict:
        """`{name: keras metric}` of one probe; `"loss"` takes the loss, the rest `(y, outputs)`
        (see `kp.metrics`)."""
        raise NotImplementedError

    def monitorable(self) -> list[str]:
        """The per-probe log names a callback may monitor (without point or `val_`)."""
        raise NotImplementedError

    def higher_is_better(self, metric: str) -> bool:
        """Whether a larger value of the monitorable `metric` is an improvement."""
        raise NotImplementedError

    def report_row(self, logs: dict, point: str) -> dict[str, float]:
        """One point's report metrics from Keras' logs of `evaluate`."""
        raise NotImplementedError

    def check_targets(self, y, num_examples: int | None = None) -> np.ndarray:
        """`y` checked and converted, or a `ValueError` that names the fix."""
        raise NotImplementedError

    def check_data(self, x, y, input_spec, *, labels=True, argument="x", tokens=False):
        """`x` (and `y`) checked against the model's input, as `keras.Model.fit` takes them;
        with `tokens`, `y` holds a label per token `(batch, tokens)`."""
        raise NotImplementedError

    def scores(self, y, outputs) -> dict[str, float]:
        """The report metrics of raw outputs `(n, units)` against checked targets `y`.

        The same metrics as `fit`'s logs (`new_trackers`), fed the whole set at
        once in float64.
        """
        outputs = keras.ops.convert_to_tensor(np.asarray(outputs, np.float64))
        trackers = self.new_trackers("probe", dtype="float64")
        values = metrics.measure(trackers, y, outputs, self.example_losses(y, outputs))
        return self.report_row({log_key("probe", k): v for k, v in values.items()}, "probe")

    def outcomes(self, y, outputs) -> Outcomes | RegressionOutcomes:
        """Each example's outcome from raw outputs `(n, units)` against checked targets
        `y`, kept by a report for intervals and paired tests."""
        raise NotImplementedError

    def scores_names(self) -> list[str]:
        """The names `scores` returns, in order."""
        raise NotImplementedError

    def history_metrics(self) -> list[str]:
        """The scores a `ProbeMonitor` records per split, the headline first."""
        raise NotImplementedError

    def serving_outputs(self, head, features, prefix: str) -> dict:
        """`{prefix + name: tensor}`: what a served probe returns for `features`."""
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self):
        return hash((type(self).__name__, repr(sorted(self.get_config().items()))))

    def __repr__(self):
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


class Classification(Task):
    """Softmax linear classifiers of `num_classes` classes, on integer labels.

    Args:
        num_classes: the number of classes, an integer >= 2.
    """

    def __init__(self, num_classes: int):
        self.num_classes = _validation.check_num_classes(num_classes)

    def columns(self):
        return [f"class{i}" for i in range(self.num_classes)]

    def fit_params(self):
        return {"num_classes": self.num_classes}

    def new_head(self, name):
        return ProbeHead(self.num_classes, name=name)

    def example_losses(self, y, outputs):
        return keras.losses.sparse_categorical_crossentropy(y, outputs, from_logits=True)

    def new_trackers(self, prefix, dtype=None):
        return metrics.classification_trackers(self.num_classes, prefix, dtype)

    def monitorable(self):
        return ["loss", "accuracy", "top5_accuracy"]

    def higher_is_better(self, metric):
        return metric.endswith("accuracy")

    def report_row(self, logs, point):
        return classification_row(logs, point)

    def check_targets(self, y, num_examples=None):
        return _validation.check_labels(y, self.num_classes, num_examples=num_examples)

    def check_data(self, x, y, input_spec, *, labels=True, argument="x", tokens=False):
        return _validation.check_data(
            x, y, input_spec, self.num_classes, labels=labels, argument=argument, tokens=tokens
        )

    def outcomes(self, y, outputs):
        logits = np.asarray(outputs, np.float64)
        return Outcomes(
            correct=np.argmax(logits, axis=1) == y,
            top5=keras.ops.convert_to_numpy(metrics.top_k_hits(y, logits, min(5, logits.shape[1]))),
            loss=keras.ops.convert_to_numpy(self.example_losses(y, logits)),
        )

    def scores_names(self):
        return ["loss", "error", "top5_error"]

    def history_metrics(self):
        return ["error", "loss"]

    def serving_outputs(self, head, features, prefix):
        probabilities = head(features)
        return {
            f"{prefix}probabilities": probabilities,
            f"{prefix}class": tf.argmax(probabilities, axis=-1, output_type=tf.int64),
        }

    def get_config(self):
        return {"num_classes": self.num_classes}


class Regression(Task):
    """Linear regressions of continuous targets, each scored by R^2 and MSPE.

    Args:
        targets: the target names (e.g. concept names of `kp.concepts`), or
            their number (`1` names the one target `"target"`, more name them
            `"target0"`, `"target1"`, ...).
    """

    solver_kind = "regressor"

    def __init__(self, targets: int | str | Sequence[str] = 1):
        self.targets = _target_names(targets)

    def columns(self):
        return list(self.targets)

    def new_head(self, name):
        return RegressionHead(len(self.targets), name=name)

    def example_losses(self, y, outputs):
        y = keras.ops.reshape(keras.ops.cast(y, outputs.dtype), (-1, len(self.targets)))
        return keras.ops.mean((y - outputs) ** 2, axis=-1)

    def new_trackers(self, prefix, dtype=None):
        return metrics.regression_trackers(self.targets, prefix, dtype)

    def monitorable(self):
        return ["loss", *self.scores_names()]

    def higher_is_better(self, metric):
        return metric.endswith("_r2")

    def report_row(self, logs, point):
        return {name: float(logs[log_key(point, name)]) for name in self.scores_names()}

    def check_targets(self, y, num_examples=None):
        return _validation.check_targets(y, len(self.targets), num_examples=num_examples)

    def check_data(self, x, y, input_spec, *, labels=True, argument="x", tokens=False):
        return _validation.check_data(
            x,
            y,
            input_spec,
            None,
            labels=labels,
            argument=argument,
            num_targets=len(self.targets),
            tokens=tokens,
        )

    def outcomes(self, y, outputs):
        return RegressionOutcomes(self.targets, metrics.columns(y), np.asarray(outputs))

    def scores_names(self):
        return [f"{t}_{m}" for t in self.targets for m in ("r2", "mspe")]

    def history_metrics(self):
        return self.scores_names()

    def serving_outputs(self, head, features, prefix):
        return {f"{prefix}predictions": head(features)}

    def get_config(self):
        return {"targets": list(self.targets)}


def _target_names(targets) -> tuple[str, ...]:
    if isinstance(targets, int) and not isinstance(targets, bool) and targets >= 1:
        return ("target",) if targets == 1 else tuple(f"target{i}" for i in range(targets))
    if isinstance(targets, str):
        targets = [targets]
    names = tuple(targets) if isinstance(targets, Sequence) else ()
    if (
        not names
        or not all(isinstance(t, str) and t for t in names)
        or len(set(names)) < len(names)
    ):
        raise ValueError(
            "`targets` must be a number of targets >= 1 or a list of distinct target "
            f"names, e.g. ['area', 'perimeter']. Received: targets={targets!r}"
        )
    return names
