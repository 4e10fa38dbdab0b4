"""What the probes measured, as plain data: `ProbeReport` (per point and split)
and `ProbeHistory` (per point over the training of a model)."""

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

__all__ = ["ProbeHistory", "ProbeReport", "log_key"]

_FORMAT = "keras_probes.ProbeReport"
_HISTORY_FORMAT = "keras_probes.ProbeHistory"
_VERSION = 1
_ORDER = ("loss", "error", "top5_error")  # columns come first in this order


def log_key(point: str, metric: str) -> str:
    """The key of one probe's metric in Keras logs: `"<point>/<metric>"`.

    The `/` makes TensorBoard (`keras.callbacks.TensorBoard`) group every
    probe's curves under its point.
    """
    return f"{point}/{metric}"


@dataclass
class ProbeReport:
    """Metrics of every probe on every split, in depth order.

    Plain data: JSON and CSV round-trip exactly, nothing refers back to a model.

    Attributes:
        points: the probe points, input side first.
        results: `{split: {point: {metric: value}}}`; metrics are `"loss"`
            (mean cross-entropy), `"error"` (top-1) and `"top5_error"`.
        num_classes: number of classes of the probes, if known.
        model: name of the probed model, if known.

    Example:

    ```python
    report = probed.evaluate_probes(x_test, y_test, split="test")
    report.errors("test")            # {point: error rate}
    print(report.table())
    report.to_json("report.json")
    kp.ProbeReport.from_json("report.json") == report   # True
    ```
    """

    points: list[str]
    results: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    num_classes: int | None = None
    model: str | None = None

    @classmethod
    def from_logs(cls, logs, points, split, num_classes=None, model=None):
        """A report of one split from `ProbedModel.evaluate(..., return_dict=True)`."""
        results = {
            point: {
                "loss": float(logs[log_key(point, "loss")]),
                "error": 1.0 - float(logs[log_key(point, "accuracy")]),
                "top5_error": 1.0 - float(logs[log_key(point, "top5_accuracy")]),
            }
            for point in points
        }
        return cls(list(points), {split: results}, num_classes, model)

    @property
    def splits(self) -> list[str]:
        """The splits measured, in the order they were added."""
        return list(self.results)

    @property
    def metrics(self) -> list[str]:
        """The metrics measured on any split: loss, error, top-5 error first."""
        return _metric_names(self.results)

    def values(self, split: str, metric: str) -> dict[str, float]:
        """`{point: value}` of one metric on one split, in depth order."""
        if split not in self.results:
            raise ValueError(
                f"No split {split!r} in this report; it has {self.splits}. "
                f"Received: split={split!r}"
            )
        rows = self.results[split]
        if not rows:
            return {}
        metrics = _metric_names({split: rows})
        if metric not in metrics:
            raise ValueError(
                f"No metric {metric!r} for split {split!r}; it has {metrics}. "
                f"Received: metric={metric!r}"
            )
        return {point: rows[point][metric] for point in self.points if point in rows}

    def errors(self, split: str) -> dict[str, float]:
        """`{point: top-1 error rate}` on `split`."""
        return self.values(split, "error")

    def losses(self, split: str) -> dict[str, float]:
        """`{point: mean cross-entropy}` on `split`."""
        return self.values(split, "loss")

    def top5_errors(self, split: str) -> dict[str, float]:
        """`{point: top-5 error rate}` on `split`."""
        return self.values(split, "top5_error")

    def monotonicity(self, split: str, metric: str = "error") -> float:
        """How steadily `metric` falls with depth: minus Kendall's tau-b.

        `1.0` when every deeper probe does better than every shallower one
        (the paper's ResNet-50 finding), `-1.0` when every deeper probe does
        worse, about `0` when depth does not matter. NaN with fewer than two
        points or when all values are equal.
        """
        values = list(self.values(split, metric).values())
        if len(values) < 2 or len(set(values)) == 1:
            return math.nan
        return float(-stats.kendalltau(range(len(values)), values).statistic)

    def with_selectivity(self, control: "ProbeReport", split: str) -> "ProbeReport":
        """This report with a `selectivity` metric on `split`: each probe's accuracy
        minus the accuracy of the same probe in `control` (Hewitt & Liang, 2019),
        e.g. trained on shuffled labels or on a re-initialised network
        (`kp.controls`). High selectivity: the layer, not the probe's own
        capacity, makes the task linearly separable.

        Args:
            control: the control probes' report, with the same points and `split`.
            split: the split both are measured on, e.g. `"val"`.

        Returns:
            A new report; this one is left unchanged.
        """
        if control.points != self.points:
            raise ValueError(
                "The control report must probe the same points. "
                f"Received: {self.points} and {control.points}"
            )
        mine, theirs = self.errors(split), control.errors(split)
        results = {s: {p: dict(m) for p, m in rows.items()} for s, rows in self.results.items()}
        for point in self.points:
            results[split][point]["selectivity"] = theirs[point] - mine[point]
        return ProbeReport(list(self.points), results, self.num_classes, self.model)

    def merge(self, other: "ProbeReport") -> "ProbeReport":
        """A report with the splits of both; `other` wins where a split is in both."""
        if other.points != self.points:
            raise ValueError(
                "Reports of different probe points cannot be merged. "
                f"Received: {self.points} and {other.points}"
            )
        return ProbeReport(
            list(self.points),
            {**self.results, **other.results},
            self.num_classes if self.num_classes is not None else other.num_classes,
            self.model if self.model is not None else other.model,
        )

    # -- text --------------------------------------------------------------

    def table(self, splits: list[str] | None = None, metrics: list[str] | None = None) -> str:
        """A text table: one row per point, one column per split and metric.

        Args:
            splits: the splits to show. Defaults to all of them.
            metrics: the metrics to show, e.g. `["error"]`. Defaults to all.
        """
        splits = self.splits if splits is None else list(splits)
        width = max([len("point"), *(len(p) for p in self.points)])
        header = f"{'depth':>5}  {'point':<{width}}"
        columns = [
            (s, m)
            for s in splits
            for m in _metric_names({s: self.results[s]})
            if metrics is None or m in metrics
        ]
        for split, metric in columns:
            header += f"  {f'{split} {metric}':>{max(12, len(split) + len(metric) + 1)}}"
        lines = [header, "-" * len(header)]
        for depth, point in enumerate(self.points):
            line = f"{depth:>5}  {point:<{width}}"
            for split, metric in columns:
                value = self.results[split].get(point, {}).get(metric, math.nan)
                # Small figures such as gradient norms keep their digits.
                style = ".2e" if 0 < abs(value) < 1e-3 else ".4f"
                line += f"  {value:>{max(12, len(split) + len(metric) + 1)}{style}}"
            lines.append(line)
        for split in splits:
            if (split, "error") in columns:
                lines.append(
                    f"monotonicity of {split} error with depth (-Kendall tau): "
                    f"{self.monotonicity(split):.3f}"
                )
        return "\n".join(lines)

    def __str__(self):
        return self.table()

    # -- files -------------------------------------------------------------

    def to_dict(self) -> dict:
        return {**_header(_FORMAT, self), "results": self.results}

    @classmethod
    def from_dict(cls, data: dict) -> "ProbeReport":
        _check_header(data, _FORMAT, "ProbeReport")
        return cls(data["points"], data["results"], data["num_classes"], data["model"])

    def to_json(self, path) -> None:
        """Writes the report as strict JSON: floats exactly, NaN as `null`."""
        data = self.to_dict()
        data["results"] = _map_floats(data["results"], _null_nan)
        _write_json(path, data)

    @classmethod
    def from_json(cls, path) -> "ProbeReport":
        """Reads a report written by `to_json`."""
        data = json.loads(Path(path).read_text())
        data["results"] = _map_floats(data.get("results", {}), _nan_null)
        return cls.from_dict(data)

    def to_csv(self, path) -> None:
        """Writes one row per (split, point): `split, depth, point, <metrics>`."""
        metrics = self.metrics
        with open(path, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["split", "depth", "point", *metrics])
            for split, rows in self.results.items():
                for depth, point in enumerate(self.points):
                    if point in rows:
                        values = [rows[point].get(m, "") for m in metrics]
                        writer.writerow([split, depth, point, *map(_repr_or_blank, values)])

    @classmethod
    def from_csv(cls, path, num_classes=None, model=None) -> "ProbeReport":
        """Reads a report written by `to_csv` (the CSV holds no model name or class count)."""
        points, results = {}, {}
        with open(path, newline="") as file:
            for row in csv.DictReader(file):
                split, depth, point = row.pop("split"), int(row.pop("depth")), row.pop("point")
                points[depth] = point
                results.setdefault(split, {})[point] = {
                    metric: float(value) for metric, value in row.items() if value != ""
                }
        return cls([points[d] for d in sorted(points)], results, num_classes, model)


@dataclass
class ProbeHistory:
    """Probe measurements over the training of a model: a points x steps matrix
    per metric (Alain & Bengio, Fig. 7/8), as `kp.callbacks.ProbeMonitor` records.

    Attributes:
        points: the probe points, input side first.
        steps: the training step (batches seen) of each measurement.
        epochs: the epoch of each measurement (`0` before training, `e` after
            `e` epochs; fractional between epochs).
        metrics: `{metric: [[value per step] per point]}`, e.g. `"train_error"`,
            `"val_error"`, `"train_loss"`, `"grad_norm"`.
        num_classes: number of classes of the probes, if known.
        model: name of the probed model, if known.

    Example:

    ```python
    history = kp.ProbeHistory.from_json("history.json")
    history.matrix("val_error").shape     # (len(history.points), len(history.steps))
    kp.plots.plot_history(history, "val_error").savefig("heatmap.png")
    ```
    """

    points: list[str]
    steps: list[int] = field(default_factory=list)
    epochs: list[float] = field(default_factory=list)
    metrics: dict[str, list[list[float]]] = field(default_factory=dict)
    num_classes: int | None = None
    model: str | None = None

    def append(self, step: int, epoch: float, values: dict[str, dict[str, float]]) -> None:
        """Adds one measurement: `values` is `{metric: {point: value}}` for every point."""
        if self.steps and step <= self.steps[-1]:
            raise ValueError(
                f"Steps must increase: the last one is {self.steps[-1]}. Received: step={step}"
            )
        if self.steps and set(values) != set(self.metrics):
            raise ValueError(
                f"Every measurement must hold the same metrics {sorted(self.metrics)}. "
                f"Received: {sorted(values)}"
            )
        for metric, by_point in values.items():
            rows = self.metrics.setdefault(metric, [[] for _ in self.points])
            for row, point in zip(rows, self.points, strict=True):
                row.append(float(by_point[point]))
        self.steps.append(int(step))
        self.epochs.append(float(epoch))

    def matrix(self, metric: str) -> np.ndarray:
        """`metric` as an array of shape `(points, steps)`."""
        if metric not in self.metrics:
            raise ValueError(
                f"No metric {metric!r} in this history. Available: {sorted(self.metrics)}"
            )
        return np.array(self.metrics[metric], dtype=float).reshape(len(self.points), -1)

    def at(self, step: int, metric: str) -> dict[str, float]:
        """`{point: value}` of `metric` at the measurement of `step`."""
        if step not in self.steps:
            raise ValueError(f"No measurement at step {step}. Steps: {self.steps}")
        column = self.matrix(metric)[:, self.steps.index(step)]
        return dict(zip(self.points, column.tolist(), strict=True))

    def to_dict(self) -> dict:
        return {
            **_header(_HISTORY_FORMAT, self),
            "steps": list(self.steps),
            "epochs": list(self.epochs),
            "metrics": {
                m: [[_null_nan(v) for v in row] for row in rows] for m, rows in self.metrics.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ProbeHistory":
        _check_header(data, _HISTORY_FORMAT, "ProbeHistory")
        metrics = {
            m: [[_nan_null(v) for v in row] for row in rows] for m, rows in data["metrics"].items()
        }
        return cls(
            data["points"],
            data["steps"],
            data["epochs"],
            metrics,
            data["num_classes"],
            data["model"],
        )

    def to_json(self, path) -> None:
        """Writes the history as strict JSON (NaN as `null`), atomically: a run
        interrupted while writing leaves the previous file whole."""
        _write_json(path, self.to_dict())

    @classmethod
    def from_json(cls, path) -> "ProbeHistory":
        """Reads a history written by `to_json`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def _header(format, measurements):
    return {
        "format": format,
        "version": _VERSION,
        "model": measurements.model,
        "num_classes": measurements.num_classes,
        "points": list(measurements.points),
    }


def _check_header(data, format, kind):
    if data.get("format") != format or data.get("version") != _VERSION:
        raise ValueError(
            f"Not a {kind} (format {format!r}, version {_VERSION}). "
            f"Received: format={data.get('format')!r}, version={data.get('version')!r}"
        )


def _write_json(path, data):
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    partial.replace(path)


def _null_nan(value):
    return None if math.isnan(value) else value


def _nan_null(value):
    return math.nan if value is None else value


def _map_floats(results, fn):
    return {
        split: {point: {m: fn(v) for m, v in metrics.items()} for point, metrics in rows.items()}
        for split, rows in results.items()
    }


def _repr_or_blank(value):
    return "" if value == "" else repr(float(value))


def _metric_names(results):
    names = {m for rows in results.values() for metrics in rows.values() for m in metrics}
    return [m for m in _ORDER if m in names] + sorted(names - set(_ORDER))
