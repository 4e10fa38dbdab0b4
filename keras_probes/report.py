"""What the probes measured, as plain data: `ProbeReport` (per point and split)
and `ProbeHistory` (per point over the training of a model)."""

import csv
import dataclasses
import io
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from keras_probes import _files, _params, uncertainty
from keras_probes.outcomes import Examples, Outcomes, RegressionOutcomes
from keras_probes.outcomes import decode as decode_outcomes
from keras_probes.uncertainty import Comparison

__all__ = ["ProbeHistory", "ProbeReport", "log_key"]

_FORMAT = "keras_probes.ProbeReport"
_HISTORY_FORMAT = "keras_probes.ProbeHistory"
_VERSION = 1
_ORDER = ("loss", "error", "top5_error")  # columns come first in this order
_CSV_KEYS = ("split", "depth", "point")
_CSV_META = ("model", "num_classes")  # the report's, repeated on every row
# Each example's outcomes (base64) and its split's examples, for reports that keep them.
_CSV_OUTCOMES = ("outcomes", "fingerprint", "sequences")
_LEVEL = _params.Real(
    0, 1, open_low=True, open_high=True, description="a confidence level in (0, 1)"
)
_CSV_END = re.compile(r"# keras_probes\.ProbeReport end: (\d+) rows?")

# What a metric may be, by its name or its suffix (`"top5_error"`, `"area_r2"`): a
# report read from a file is refused otherwise. NaN (unknown) is always accepted;
# other metrics (solver diagnostics, ...) only need to be numbers.
_RATE = _params.Real(0, 1, description="an error rate, a number in [0, 1]")
_METRIC_RANGES = {
    "error": _RATE,
    "accuracy": _params.Real(0, 1, description="an accuracy, a number in [0, 1]"),
    "loss": _params.Real(0, description="a loss, a finite number >= 0"),
    "mspe": _params.Real(0, description="a mean squared prediction error, a finite number >= 0"),
    "r2": _params.Real(high=1, description="an R^2, a finite number <= 1"),
    "selectivity": _params.Real(
        -1, 1, description="a selectivity (accuracy minus a control's), a number in [-1, 1]"
    ),
}


def log_key(point: str, metric: str) -> str:
    """The key of one probe's metric in Keras logs: `"<point>/<metric>"`.

    The `/` makes TensorBoard (`keras.callbacks.TensorBoard`) group every
    probe's curves under its point.
    """
    return f"{point}/{metric}"


def classification_row(logs: dict, point: str) -> dict[str, float]:
    """One classification probe's loss, error and top-5 error from Keras' logs."""
    return {
        "loss": float(logs[log_key(point, "loss")]),
        "error": 1.0 - float(logs[log_key(point, "accuracy")]),
        "top5_error": 1.0 - float(logs[log_key(point, "top5_accuracy")]),
    }


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
        outcomes: `{split: {point: kp.outcomes.Outcomes}}` (or
            `RegressionOutcomes`), each example's outcome on held-out
            splits: what `interval`, `compare` and `monotonicity(level=...)`
            are computed from.
        examples: `{split: kp.outcomes.Examples}` for the splits with
            outcomes: their fingerprint, and each row's sequence for
            per-token probes.
        runs: the `results` of each run a `combine`d report averages
            (empty otherwise): what `spread` is computed from.

    Example:

    ```python
    report = probed.evaluate_probes(x_test, y_test, split="test")
    report.errors("test")            # {point: error rate}
    print(report.table())
    report.to_json("report.json")
    kp.ProbeReport.from_json("report.json") == report   # True
    report.interval("test", "conv5_block3_out")   # (low, high) of its error, 95%
    report.compare("test", "conv4_block6_out", "conv5_block3_out").pvalue
    ```
    """

    points: list[str]
    results: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    num_classes: int | None = None
    model: str | None = None
    outcomes: dict[str, dict[str, Outcomes | RegressionOutcomes]] = field(default_factory=dict)
    examples: dict[str, Examples] = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)

    @classmethod
    def from_logs(cls, logs, points, split, num_classes=None, model=None):
        """A report of one split from `ProbedModel.evaluate(..., return_dict=True)`."""
        results = {point: classification_row(logs, point) for point in points}
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
        """`{point: value}` of one metric on one split, in depth order.

        Raises:
            ValueError: the report has no such split or metric, or a point of
                the split lacks the metric that its other points have.
        """
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
        _check_complete(self.results, [split], [metric], "This report's ")
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

    def monotonicity(
        self, split: str, metric: str = "error", level: float | None = None
    ) -> float | tuple[float, float, float]:
        """How steadily `metric` falls with depth: minus Kendall's tau-b.

        `1.0` when every deeper probe does better than every shallower one
        (the paper's ResNet-50 finding), `-1.0` when every deeper probe does
        worse, about `0` when depth does not matter. NaN with fewer than two
        points or when all values are equal.

        Args:
            split: the split, e.g. `"test"`.
            metric: the figure. Defaults to `"error"`.
            level: a confidence level, e.g. `0.95`, for an interval too (a
                percentile bootstrap over the split's examples, or sequences,
                from their outcomes). Defaults to `None`: the figure alone.

        Returns:
            `tau`, or `(tau, low, high)` given `level`.
        """
        values = list(self.values(split, metric).values())
        tau = math.nan
        if len(values) >= 2 and len(set(values)) > 1:
            tau = float(-stats.kendalltau(range(len(values)), values).statistic)
        if level is None:
            return tau
        kept, units = self._kept(split, self._measured(split), metric, level)
        columns = [k.columns(metric) for k in kept]
        values = np.stack([c for c, _ in columns], axis=1)  # (n, points, k)
        _, low, high = uncertainty.kendall_interval(values, units, level, statistic=columns[0][1])
        return tau, low, high

    # -- uncertainty --------------------------------------------------------

    def interval(
        self, split: str, point: str, metric: str = "error", level: float = 0.95
    ) -> tuple[float, float]:
        """The confidence interval of one probe's figure, from its examples' outcomes.

        Error rates (`"error"`, `"top5_error"`) get Wilson's score interval;
        losses, and a regression probe's R^2 and MSPE, a percentile bootstrap
        (2000 resamples, seeded: the same report gives the same interval).
        Per-token probes resample whole sequences.

        Args:
            split: a held-out split of the report, e.g. `"test"`.
            point: the probe's point.
            metric: `"error"`, `"top5_error"` or `"loss"`; for regression
                probes `"loss"`, `"<target>_r2"` or `"<target>_mspe"`.
                Defaults to `"error"`.
            level: the confidence level. Defaults to `0.95`.

        Returns:
            `(low, high)`.

        Raises:
            ValueError: the report keeps no outcomes for `split` (e.g. the
                train split, or a report written before reports kept them).
        """
        (kept,), units = self._kept(split, [point], metric, level)
        if kept.is_rate(metric):
            return uncertainty.rate_interval(kept.values(metric), units, level)
        return uncertainty.statistic_interval(*kept.columns(metric), units, level)

    def intervals(
        self, split: str, metric: str = "error", level: float = 0.95
    ) -> dict[str, tuple[float, float]]:
        """`{point: (low, high)}` of every point with outcomes on `split`, as `interval`
        gives each (a bootstrap resamples the same examples for every point, in one
        pass: equal to `interval`'s within float rounding)."""
        points = self._measured(split)
        kept, units = self._kept(split, points, metric, level)
        if kept[0].is_rate(metric):
            found = [uncertainty.rate_interval(k.values(metric), units, level) for k in kept]
        else:
            columns = [k.columns(metric) for k in kept]
            values = np.stack([c for c, _ in columns], axis=1)  # (n, points, k)
            found = uncertainty.statistic_interval(values, columns[0][1], units, level)
        return dict(zip(points, found, strict=True))

    def compare(
        self,
        split: str,
        a: str,
        b: str | None = None,
        *,
        other: "ProbeReport | None" = None,
        metric: str = "error",
        level: float = 0.95,
    ) -> Comparison:
        """A paired test of two figures on the same examples: `a - b`.

        Either two points of this report (`b`), or one point against the same
        point of `other`, a control report on the same examples (selectivity,
        Hewitt & Liang 2019: e.g. `kp.controls.reinitialized_probes`). Error
        rates: McNemar's exact test with the Agresti-Min interval; losses (and
        R^2, MSPE): the paired bootstrap; per-token probes: whole sequences
        (see `kp.uncertainty`).

        Args:
            split: a held-out split, e.g. `"test"`.
            a: a point of this report.
            b: another point of this report. Leave out with `other`.
            other: a report of the same examples (same fingerprint). Defaults
                to `None`.
            metric: a metric with outcomes, as for `interval`. Defaults to
                `"error"`.
            level: the confidence level of the interval. Defaults to `0.95`.

        Returns:
            A `kp.uncertainty.Comparison`: `difference`, `low`, `high`, `pvalue`.

        Raises:
            ValueError: not exactly one of `b` and `other`; no outcomes for the
                split; `other` measured on other examples.
        """
        if (b is None) == (other is None):
            raise ValueError(
                "Compare two points of this report (`b`) or one point with the same point of "
                f"a control report (`other=`), one or the other. Received: b={b!r}, "
                f"other={'a report' if other is not None else None}"
            )
        if other is None:
            (first, second), units = self._kept(split, [a, b], metric, level)
            name = b
        else:
            if not isinstance(other, ProbeReport):
                raise TypeError(f"`other` must be a kp.ProbeReport. Received: {other!r}")
            (first,), units = self._kept(split, [a], metric, level)
            (second,), _ = other._kept(split, [a], metric, level, "`other` ")
            if other.examples[split] != self.examples[split]:
                raise ValueError(
                    f"`other` was measured on other examples of split {split!r} (fingerprint "
                    f"{other.examples[split].fingerprint} against this report's "
                    f"{self.examples[split].fingerprint}): a paired comparison needs the same "
                    "examples, in the same order. Measure both on the same data (cache)."
                )
            name = f"{a} (other)"
        if first.is_rate(metric):
            result = uncertainty.paired_rates(
                first.values(metric), second.values(metric), units, level
            )
        else:
            (columns, statistic), (theirs, _) = first.columns(metric), second.columns(metric)
            result = uncertainty.paired_means(columns, theirs, units, level, statistic=statistic)
        return dataclasses.replace(result, a=a, b=name, split=split, metric=metric)

    def compare_adjacent(
        self, split: str, metric: str = "error", level: float = 0.95
    ) -> list[Comparison]:
        """Which neighbouring points differ: each point against the next deeper one.

        Every pair is tested as `compare` tests it; as they are tested
        together, each `Comparison` also has Holm's `adjusted_pvalue` (the
        family-wise error rate over all pairs at most `1 - level`), which its
        `significant()` uses.

        Returns:
            `[compare(split, p[i], p[i + 1]) ...]` in depth order.
        """
        points = self._measured(split)
        pairs = [
            self.compare(split, a, b, metric=metric, level=level)
            for a, b in itertools.pairwise(points)
        ]
        adjusted = uncertainty.holm([c.pvalue for c in pairs]) if pairs else []
        return [
            dataclasses.replace(c, adjusted_pvalue=float(p))
            for c, p in zip(pairs, adjusted, strict=True)
        ]

    def _measured(self, split):
        """The points with outcomes on `split`, in depth order."""
        kept = self.outcomes.get(split, {})
        return [point for point in self.points if point in kept]

    def _kept(self, split, points, metric, level, whose="This report "):
        """`([outcomes of each point], units or None)`, checked: they give `metric`."""
        _params.check({"level": _LEVEL}, level=level)
        if split not in self.outcomes:
            kept = f"it keeps them for {sorted(self.outcomes)}" if self.outcomes else "none kept"
            raise ValueError(
                f"{whose}keeps no outcomes for split {split!r} ({kept}): intervals and tests "
                "need each example's outcome, which reports keep for held-out splits "
                "(kp.fit_probes, evaluate_probes, ...). Measure the split again."
            )
        kept = self.outcomes[split]
        missing = [p for p in points if p not in kept]
        if missing:
            raise ValueError(
                f"{whose}has no outcomes of point {missing[0]!r} on split {split!r}; it has "
                f"them for {[p for p in self.points if p in kept]}."
            )
        found = [kept[p] for p in points]
        if metric not in found[0].metrics:
            raise ValueError(
                f"The outcomes of split {split!r} give {found[0].metrics}, not {metric!r}. "
                f"Received: metric={metric!r}"
            )
        examples, n = self.examples[split], len(found[0])
        return found, None if examples.sequences is None else examples.units(n)

    # -- runs ---------------------------------------------------------------

    @classmethod
    def combine(cls, reports: list["ProbeReport"]) -> "ProbeReport":
        """One report of several runs (seeds, retrained models): each figure's mean.

        The runs' own figures are kept (`runs`), so that `spread` gives their
        standard deviation and `table(intervals=True)` shows it. Outcomes are
        not kept: runs need not share their examples.

        Args:
            reports: the runs' reports, of the same points; the splits and
                metrics every run has are combined.

        Returns:
            A `ProbeReport` of the means over runs.
        """
        reports = list(reports)
        if not reports or not all(isinstance(r, ProbeReport) for r in reports):
            raise ValueError(
                f"`reports` must be a non-empty list of kp.ProbeReport. Received: {reports!r}"
            )
        points = reports[0].points
        for report in reports[1:]:
            if report.points != points:
                raise ValueError(
                    "Reports of different probe points cannot be combined. "
                    f"Received: {points} and {report.points}"
                )
        results = {}
        for split in [s for s in reports[0].splits if all(s in r.results for r in reports)]:
            metrics = [
                m
                for m in reports[0].metrics
                if all(m in _metric_names({split: r.results[split]}) for r in reports)
            ]
            results[split] = {
                point: {
                    m: float(np.mean([r.results[split][point][m] for r in reports]))
                    for m in metrics
                }
                for point in points
                if all(point in r.results[split] for r in reports)
            }
        first = reports[0]
        return cls(
            list(points), results, first.num_classes, first.model, runs=[r.results for r in reports]
        )

    def spread(self, split: str, metric: str = "error") -> dict[str, float]:
        """`{point: standard deviation over runs}` of a `combine`d report (ddof=1: NaN
        for one run)."""
        if not self.runs:
            raise ValueError(
                "This report is not a combination of runs: spread is over the runs of "
                "kp.ProbeReport.combine([report_seed0, report_seed1, ...])."
            )
        self.values(split, metric)  # refuses an unknown split or metric
        return {
            point: float(np.std([run[split][point][metric] for run in self.runs], ddof=1))
            if len(self.runs) > 1
            else math.nan
            for point in self.values(split, metric)
        }

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
        return dataclasses.replace(self, points=list(self.points), results=results)

    def merge(self, other: "ProbeReport") -> "ProbeReport":
        """A report with the splits of both; `other` wins where a split is in both."""
        if other.points != self.points:
            raise ValueError(
                "Reports of different probe points cannot be merged. "
                f"Received: {self.points} and {other.points}"
            )
        # A split's outcomes go with its figures: those of the report it is taken from.
        taken = {split: other if split in other.results else self for split in self.results}
        taken.update({split: other for split in other.results})
        return ProbeReport(
            list(self.points),
            {**self.results, **other.results},
            self.num_classes if self.num_classes is not None else other.num_classes,
            self.model if self.model is not None else other.model,
            {s: r.outcomes[s] for s, r in taken.items() if s in r.outcomes},
            {s: r.examples[s] for s, r in taken.items() if s in r.examples},
        )

    # -- text --------------------------------------------------------------

    def table(
        self,
        splits: str | list[str] | None = None,
        metrics: str | list[str] | None = None,
        intervals: bool = False,
        level: float = 0.95,
    ) -> str:
        """A text table per split: one row per point, one column per metric.

        Each split's block is headed `split <name>`; blocks are apart by an empty
        line. A split with an `"error"` ends with its monotonicity with depth.

        Args:
            splits: the split or splits to show. Defaults to all of them.
            metrics: the metric or metrics to show, in this order, e.g.
                `"error"` or `["error", "loss"]`; a split shows those it has.
                Defaults to all, loss, error and top-5 error first.
            intervals: show each figure's interval, `value [low, high]`, where
                the split keeps its examples' outcomes (and the monotonicity's),
                or `mean ± sd` over the runs of a `combine`d report. Defaults
                to `False`.
            level: the intervals' confidence level. Defaults to `0.95`.

        Raises:
            ValueError: a split, or a metric, that none of `splits` has; the
                message lists the valid ones.
        """
        splits = _chosen("splits", splits, self.splits, "in this report; it has")
        known = _metric_names({s: self.results[s] for s in splits})
        metrics = _chosen("metrics", metrics, known, f"on splits {splits}; they have")
        blocks = []
        for split in splits:
            rows = self.results[split]
            columns = [m for m in metrics if m in _metric_names({split: rows})]
            if not columns:
                continue  # e.g. the solver's diagnostics, on the train split only
            _check_complete(self.results, [split], columns, "This report's ")
            bounds = self._bounds(split, columns, level) if intervals else {}
            cells = [
                [
                    str(depth),
                    point,
                    *(_cell(rows[point][m], bounds.get((point, m))) for m in columns),
                ]
                for depth, point in enumerate(self.points)
                if point in rows
            ]
            names = ["depth", "point", *columns]
            widths = [max(len(c) for c in column) for column in zip(names, *cells, strict=True)]
            header = _table_line(names, widths)
            lines = [f"split {split}", header, "-" * len(header)]
            lines += [_table_line(row, widths) for row in cells]
            if "error" in columns:
                line = (
                    f"monotonicity of {split} error with depth (-Kendall tau): "
                    f"{self.monotonicity(split):.3f}"
                )
                if intervals and len(self._measured(split)) == len(rows):
                    _, low, high = self.monotonicity(split, level=level)
                    line += f" [{low:.3f}, {high:.3f}] ({level:.0%}, bootstrap)"
                lines.append(line)
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)

    def __str__(self):
        return self.table()

    def _bounds(self, split, metrics, level):
        """`{(point, metric): (low, high)}` of a table's interval cells, or `(sd,)` for runs."""
        if self.runs:
            return {
                (point, m): (sd,)
                for m in metrics
                for point, sd in self.spread(split, m).items()
                if not math.isnan(sd)
            }
        kept = self.outcomes.get(split, {})
        known = next(iter(kept.values())).metrics if kept else []
        return {
            (point, m): bound
            for m in metrics
            if m in known
            for point, bound in self.intervals(split, m, level).items()
        }

    # -- files -------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain data: the header, `results`, and when there are some, `outcomes`
        (`{split: {"fingerprint", "sequences", "points": {point: base64}}}`, see
        `kp.outcomes`) and the `runs` of a combined report."""
        data = {**_header(_FORMAT, self), "results": self.results}
        if self.outcomes:
            data["outcomes"] = {
                split: {
                    "fingerprint": self.examples[split].fingerprint,
                    "sequences": self.examples[split].encode_sequences(),
                    "points": {point: kept.encode() for point, kept in by_point.items()},
                }
                for split, by_point in self.outcomes.items()
            }
        if self.runs:
            data["runs"] = self.runs
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ProbeReport":
        """A report from `to_dict`'s data, checked: a `ValueError` says what is
        missing or wrong. `None` values are read as NaN (strict JSON's NaN)."""
        _check_header(data, _FORMAT, "ProbeReport")
        points, results = _checked_points(data), _checked_results(data)
        _check_complete(results, list(results), None, "", "(null if unknown)")
        unknown = [(s, p) for s, rows in results.items() for p in rows if p not in points]
        if unknown:
            split, point = unknown[0]
            raise ValueError(
                f"'results' holds unknown point {point!r} on split {split!r}; the report's "
                f"points are {points}."
            )
        num_classes, model = data.get("num_classes"), data.get("model")
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int)
        ):
            raise ValueError(
                f"'num_classes' must be an integer or null. Received: num_classes={num_classes!r}"
            )
        if model is not None and not isinstance(model, str):
            raise ValueError(f"'model' must be a string or null. Received: model={model!r}")
        outcomes, examples = _checked_outcomes(data.get("outcomes", {}), points, results)
        runs = data.get("runs", [])
        if not isinstance(runs, list):
            raise ValueError(f"'runs' must be a list of results. Received: {type(runs).__name__}")
        runs = [_checked_results({"results": run}) for run in runs]
        return cls(points, results, num_classes, model, outcomes, examples, runs)

    def to_json(self, path) -> None:
        """Writes the report as strict JSON: floats exactly, NaN as `null`."""
        data = self.to_dict()
        data["results"] = _map_floats(data["results"], _null_nan)
        if "runs" in data:
            data["runs"] = [_map_floats(run, _null_nan) for run in data["runs"]]
        _write_json(path, data)

    @classmethod
    def from_json(cls, path) -> "ProbeReport":
        """Reads a report written by `to_json`.

        Raises:
            ValueError: the file is not JSON, or not a report; the message
                names the file and what is missing or wrong.
        """
        path = Path(path)
        data = _files.read_json(
            path, "The report file", "A report file is written by ProbeReport.to_json."
        )
        try:
            return cls.from_dict(data)
        except ValueError as error:
            raise ValueError(f"{path} is not a readable ProbeReport: {error}") from None

    def to_csv(self, path) -> None:
        """Writes one row per (split, point): `split, depth, point, <metrics>,
        model, num_classes`, then an end line,
        `# keras_probes.ProbeReport end: <rows> rows`.

        A metric a split does not have is an empty cell, NaN is `nan`; the
        model's name and the number of classes are repeated on every row (empty
        if unknown), so reports of several models concatenate into one table.
        The end line lets `from_csv` refuse a file cut short anywhere, even at a
        line boundary. Spreadsheets show it as a last row; pandas skips it with
        `pandas.read_csv(path, comment="#")` (or, exact even for point names
        holding a `#`, `skipfooter=1, engine="python"`). Written under a
        temporary name, then renamed: an interrupted write leaves no half file.

        Raises:
            ValueError: a metric is named like one of the other columns.
        """
        metrics, rows = self.metrics, []
        kept = _CSV_OUTCOMES if self.outcomes else ()
        clash = [m for m in metrics if m in (*_CSV_KEYS, *_CSV_META, *_CSV_OUTCOMES)]
        if clash:
            raise ValueError(
                f"This report's metric {clash[0]!r} has the name of a CSV column "
                f"({', '.join((*_CSV_KEYS, *_CSV_META, *_CSV_OUTCOMES))}): rename the metric, "
                "or write JSON (to_json)."
            )
        meta = ["" if v is None else str(v) for v in (self.model, self.num_classes)]
        for split, by_point in self.results.items():
            examples = self.examples.get(split)
            sequences = examples.encode_sequences() if examples is not None else None
            for depth, point in enumerate(self.points):
                if point in by_point:
                    values = [by_point[point].get(m, "") for m in metrics]
                    row = [split, depth, point, *map(_repr_or_blank, values), *meta]
                    if kept:
                        outcome = self.outcomes.get(split, {}).get(point)
                        row += [
                            "" if outcome is None else outcome.encode(),
                            "" if examples is None else examples.fingerprint,
                            sequences or "",
                        ]
                    rows.append(row)
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow([*_CSV_KEYS, *metrics, *_CSV_META, *kept])
        writer.writerows(rows)
        writer.writerow([_csv_end_line(len(rows))])
        _files.atomic_write(path, text.getvalue())

    @classmethod
    def from_csv(
        cls, path, num_classes: int | None = None, model: str | None = None
    ) -> "ProbeReport":
        """Reads a report written by `to_csv`, checked as `from_json` checks JSON.

        The file must end with its complete end line, whose row count must match:
        a CSV cut short anywhere is refused. So is a CSV without an end line,
        as written by keras-probes before it had one: re-create it from the JSON
        report (`ProbeReport.from_json(json_path).to_csv(path)`), or, once you
        know it is whole, append the end line the error message gives. A
        byte-order mark (Excel's "CSV UTF-8") is skipped.

        Args:
            path: the CSV file.
            num_classes: the number of classes, for a CSV that does not say it
                (written before CSVs had a `num_classes` column, or unknown);
                a different value than the file's is refused. Defaults to `None`.
            model: the model's name, likewise. Defaults to `None`.

        Raises:
            ValueError: the file is truncated, or not a report CSV, or a value
                is out of its metric's range; the message names the file (and
                the line) and what is wrong.
        """
        path = Path(path)
        try:
            with open(path, newline="", encoding="utf-8-sig") as file:
                text = file.read()
        except UnicodeDecodeError as error:
            raise ValueError(f"{path} is not a text CSV ({error}).") from None
        if not text:
            raise ValueError(f"{path} is empty; a report CSV is written by ProbeReport.to_csv.")
        if not text.endswith("\n"):
            raise ValueError(
                f"{path} is truncated: its last line is incomplete (no line end), and a "
                f"report CSV ends with its end line '{_csv_end_line('<n>')}'."
            )
        try:
            reader = csv.reader(io.StringIO(text))
            # Blank lines (a hand edit) are no rows.
            records = [(reader.line_num, record) for record in reader if record]
        except csv.Error as error:
            raise ValueError(f"{path} is not a readable CSV: {error}") from None
        header = records[0][1]
        if header[: len(_CSV_KEYS)] != list(_CSV_KEYS) or len(set(header)) != len(header):
            raise ValueError(
                f"{path} is not a report CSV: its first line must start with the columns "
                f"{','.join(_CSV_KEYS)}, then one distinct column per metric. "
                f"Received: {','.join(header)}"
            )
        rows = records[1:]
        end = _csv_end_count(rows[-1][1]) if rows else None
        if end is None:
            data = [row for _, row in rows if not row[0].lstrip().startswith("#")]
            raise ValueError(
                f"{path} has no end line '{_csv_end_line('<n>')}', so it may be truncated. "
                "A report CSV written by an older keras-probes lacks it too: re-create the "
                "CSV from its JSON report (ProbeReport.from_json(...).to_csv(...)), or, if "
                f"you know it is whole, append the line '{_csv_end_line(len(data))}'."
            )
        rows = rows[:-1]
        if end != len(rows):
            raise ValueError(
                f"{path} is truncated or altered: its end line says {end} rows, but it "
                f"holds {len(rows)}."
            )
        points, results, lines, meta, kept = {}, {}, {}, {}, {}
        for line, row in rows:
            split, depth, point, values, row_meta, row_kept = _csv_row(path, line, header, row)
            if row_kept.get("fingerprint"):
                split_kept = kept.setdefault(
                    split, (line, row_kept["fingerprint"], row_kept.get("sequences") or None, {})
                )
                if split_kept[1:3] != (row_kept["fingerprint"], row_kept.get("sequences") or None):
                    raise ValueError(
                        f"{path}, line {line}: the fingerprint or sequences of split {split!r} "
                        f"contradict line {split_kept[0]}'s; a split has one set of examples."
                    )
                if row_kept.get("outcomes"):
                    split_kept[3][point] = row_kept["outcomes"]
            if points.setdefault(depth, point) != point or point in results.get(split, {}):
                raise ValueError(
                    f"{path}, line {line}: point {point!r} at depth {depth} on split "
                    f"{split!r} contradicts an earlier row (depth {depth} is "
                    f"{points[depth]!r}; a point appears once per split)."
                )
            for name, value in row_meta.items():
                first_line, first = meta.setdefault(name, (line, value))
                if value != first:
                    raise ValueError(
                        f"{path}, line {line}: {name} {value!r} contradicts {name} {first!r} "
                        f"on line {first_line}; a report has one {name}."
                    )
            results.setdefault(split, {})[point] = values
            lines[split, point] = line
        if len(set(points.values())) != len(points):
            raise ValueError(f"{path}: a point appears at two depths: {points}")
        missing = _missing_metric(results, list(results))
        if missing is not None:
            split, point, _ = missing
            message = _missing_message(*missing, unknown="(nan if unknown) in its empty cell")
            raise ValueError(f"{path}, line {lines[split, point]}: {message}")
        given = {"model": model, "num_classes": num_classes}
        for name, value in given.items():
            said = meta.get(name, (None, None))[1]
            if said is not None and value is not None and value != said:
                raise ValueError(
                    f"{path} says {name}={said!r} (its {name} column): leave `{name}` out, or "
                    f"pass the same. Received: {name}={value!r}"
                )
            given[name] = said if said is not None else value
        ordered = [points[d] for d in sorted(points)]
        outcomes, examples = {}, {}
        for split, (line, fingerprint, sequences, encoded) in kept.items():
            try:
                examples[split], outcomes[split] = _split_outcomes(
                    split, fingerprint, sequences, encoded, ordered, results
                )
            except ValueError as error:
                raise ValueError(f"{path}, line {line}: {error}") from None
        return cls(ordered, results, **given, outcomes=outcomes, examples=examples)


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
        """Reads a history written by `to_json`.

        Raises:
            ValueError: the file is not JSON, or not a history; the message
                names the file.
        """
        fix = "A history file is written by ProbeHistory.to_json (or ProbeMonitor(path=...))."
        data = _files.read_json(path, "The history file", fix)
        try:
            return cls.from_dict(data)
        except ValueError as error:
            raise ValueError(f"{path} is not a readable ProbeHistory: {error}") from None


def _header(format, measurements):
    return {
        "format": format,
        "version": _VERSION,
        "model": measurements.model,
        "num_classes": measurements.num_classes,
        "points": list(measurements.points),
    }


def _check_header(data, format, kind):
    if not isinstance(data, dict):
        raise ValueError(
            f"Not a {kind}: a {kind} is a JSON object with format {format!r}. "
            f"Received: a JSON {type(data).__name__}, not a JSON object"
        )
    if data.get("format") != format or data.get("version") != _VERSION:
        raise ValueError(
            f"Not a {kind} (format {format!r}, version {_VERSION}). "
            f"Received: format={data.get('format')!r}, version={data.get('version')!r}"
        )


def _is_number(value):
    return isinstance(value, int | float) and not isinstance(value, bool)


def _checked_points(data):
    if "points" not in data:
        raise ValueError(f"it has no 'points' (the probe points). Keys: {sorted(data)}")
    points = data["points"]
    if not isinstance(points, list) or not all(isinstance(p, str) for p in points):
        raise ValueError(f"'points' must be a list of strings. Received: points={points!r}")
    if len(set(points)) != len(points):
        raise ValueError(f"'points' must be distinct. Received: points={points!r}")
    return list(points)


def _checked_results(data):
    """`{split: {point: {metric: float}}}` from `data["results"]`, null read as NaN."""
    if "results" not in data:
        raise ValueError(f"it has no 'results' (the metrics per split). Keys: {sorted(data)}")
    results = data["results"]
    if not isinstance(results, dict):
        raise ValueError(
            "'results' must be an object {split: {point: {metric: number}}}. "
            f"Received: {type(results).__name__}"
        )
    checked = {}
    for split, rows in results.items():
        if not isinstance(rows, dict):
            raise ValueError(
                f"split {split!r} must be an object {{point: {{metric: number}}}}. "
                f"Received: {type(rows).__name__}"
            )
        checked[split] = {}
        for point, metrics in rows.items():
            if not isinstance(metrics, dict):
                raise ValueError(
                    f"point {point!r} on split {split!r} must be an object {{metric: number}}. "
                    f"Received: {type(metrics).__name__}"
                )
            for metric, value in metrics.items():
                if value is not None and not _is_number(value):
                    raise ValueError(
                        f"{metric!r} of point {point!r} on split {split!r} must be a number "
                        f"or null. Received: {value!r}"
                    )
                refusal = value is not None and _out_of_range(metric, value, point, split, "null")
                if refusal:
                    raise ValueError(refusal)
            checked[split][point] = {m: float(_nan_null(v)) for m, v in metrics.items()}
    return checked


def _checked_outcomes(data, points, results):
    """`({split: {point: Outcomes}}, {split: Examples})` from `to_dict`'s `outcomes`."""
    if not isinstance(data, dict):
        raise ValueError(
            "'outcomes' must be an object {split: {fingerprint, sequences, points}}. "
            f"Received: {type(data).__name__}"
        )
    outcomes, examples = {}, {}
    for split, kept in data.items():
        if not isinstance(kept, dict) or not {"fingerprint", "points"} <= set(kept):
            raise ValueError(
                f"'outcomes' of split {split!r} must be an object with 'fingerprint', "
                "'sequences' and 'points'."
            )
        examples[split], outcomes[split] = _split_outcomes(
            split, kept["fingerprint"], kept.get("sequences"), kept["points"], points, results
        )
    return outcomes, examples


def _split_outcomes(split, fingerprint, sequences, encoded, points, results):
    """One split's `(Examples, {point: Outcomes})`, checked against the report's points."""
    try:
        examples = Examples.decode(fingerprint, sequences)
        by_point = {point: decode_outcomes(text) for point, text in encoded.items()}
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"the outcomes of split {split!r} are unreadable: {error}") from None
    unknown = [p for p in by_point if p not in results.get(split, {}) or p not in points]
    if unknown:
        raise ValueError(
            f"'outcomes' holds point {unknown[0]!r} on split {split!r}, which has no figures there."
        )
    sizes = {len(kept) for kept in by_point.values()}
    if examples.sequences is not None:
        sizes.add(len(examples.sequences))
    if len(sizes) > 1:
        raise ValueError(
            f"The outcomes of split {split!r} hold different numbers of examples {sorted(sizes)}: "
            "the file was altered. Write the report again."
        )
    return examples, by_point


def _csv_end_line(rows):
    return f"# {_FORMAT} end: {rows} {'row' if rows == 1 else 'rows'}"


def _csv_end_count(record):
    """The row count of a CSV end line (trailing empty cells allowed), else `None`."""
    while len(record) > 1 and record[-1] == "":
        record = record[:-1]
    found = len(record) == 1 and _CSV_END.fullmatch(record[0].strip())
    return int(found.group(1)) if found else None


def _csv_row(path, line, header, row):
    """`(split, depth, point, {metric: value}, {model/num_classes: value},
    {outcomes/fingerprint/sequences: text})` of one CSV row, checked."""
    if len(row) != len(header):
        raise ValueError(
            f"{path}, line {line}: expected {len(header)} fields ({','.join(header)}), "
            f"found {len(row)}. Received: {','.join(row)}"
        )
    split, depth, point, *values = row
    if not depth.isdigit():
        raise ValueError(
            f"{path}, line {line}: the depth must be an integer >= 0. Received: {depth!r}"
        )
    metrics, meta, kept = {}, {}, {}
    for metric, value in zip(header[len(_CSV_KEYS) :], values, strict=True):
        if metric in _CSV_META:
            meta[metric] = _csv_meta(path, line, metric, value)
            continue
        if metric in _CSV_OUTCOMES:
            kept[metric] = value
            continue
        if value == "":
            continue
        try:
            metrics[metric] = float(value)
        except ValueError:
            raise ValueError(
                f"{path}, line {line}: {metric!r} must be a number or empty. Received: {value!r}"
            ) from None
        refusal = _out_of_range(metric, metrics[metric], point, split, "nan")
        if refusal:
            raise ValueError(f"{path}, line {line}: {refusal}")
    return split, int(depth), point, metrics, meta, kept


def _csv_meta(path, line, name, value):
    """The model's name or the number of classes in a CSV cell; empty is `None`."""
    if value == "":
        return None
    if name == "model":
        return value
    if not re.fullmatch(r"\s*[0-9]+\s*", value):
        raise ValueError(
            f"{path}, line {line}: num_classes must be an integer or empty. Received: {value!r}"
        )
    return int(value)


def _write_json(path, data):
    _files.atomic_write(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


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


def _chosen(argument, value, known, where):
    """`value` (a name, a list of names, or `None` for all) as a list of names in `known`."""
    names = list(known) if value is None else [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"`{argument}` must be a name or a list of names from {list(known)}. "
            f"Received: {argument}={value!r}"
        )
    if not names:
        raise ValueError(
            f"`{argument}` must name at least one {argument[:-1]} of {list(known)}, or be None "
            f"for all. Received: {argument}={value!r}"
        )
    for name in names:
        if name not in known:
            raise ValueError(
                f"No {argument[:-1]} {name!r} {where} {list(known)}. Received: {argument}={value!r}"
            )
    return list(names)


def _missing_metric(results, splits, metrics=None):
    """The first `(split, point, metric)` where a point lacks one of its split's
    `metrics` (default: every metric some point of the split has), else `None`."""
    for split in splits:
        rows = results[split]
        wanted = _metric_names({split: rows}) if metrics is None else metrics
        for point, values in rows.items():
            for metric in wanted:
                if metric not in values:
                    return split, point, metric
    return None


def _check_complete(results, splits, metrics=None, prefix="", unknown="(NaN if unknown)"):
    """Refuses a split on which a point lacks a metric its other points have."""
    missing = _missing_metric(results, splits, metrics)
    if missing is not None:
        raise ValueError(_missing_message(*missing, prefix, unknown))


def _missing_message(split, point, metric, prefix="", unknown="(NaN if unknown)"):
    return (
        f"{prefix}point {point!r} on split {split!r} has no {metric!r}, which the split's "
        f"other points have: every point of a split holds each of its metrics. Give it a "
        f"value {unknown}."
    )


def _metric_range(metric):
    """The declared constraint of `metric` (by name or `_<name>` suffix), else `None`."""
    for name, constraint in _METRIC_RANGES.items():
        if metric == name or metric.endswith(f"_{name}"):
            return constraint
    return None


def _out_of_range(metric, value, point, split, unknown):
    """The message refusing `value` of `metric`, or `None` if it is in range (or NaN)."""
    constraint = _metric_range(metric)
    if constraint is None or math.isnan(value) or constraint.accepts(value):
        return None
    return (
        f"{metric!r} of point {point!r} on split {split!r} must be {constraint.describe()}, "
        f"or {unknown} if unknown. Received: {value!r}"
    )


def _cell(value, bounds=None):
    # Small figures such as gradient norms keep their digits.
    text = f"{value:.2e}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"
    if bounds is None:
        return text
    if len(bounds) == 1:
        return f"{text} ± {bounds[0]:.4f}"
    return f"{text} [{bounds[0]:.4f}, {bounds[1]:.4f}]"


def _table_line(cells, widths):
    depth, point, *values = cells
    line = [f"{depth:>{widths[0]}}", f"{point:<{widths[1]}}"]
    line += [f"{v:>{w}}" for v, w in zip(values, widths[2:], strict=True)]
    return "  ".join(line).rstrip()
