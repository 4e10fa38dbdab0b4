"""Figures of probe measurements. Each function takes data and returns a
`matplotlib.figure.Figure`; nothing is shown, nothing global is touched."""

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import animation, colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from keras_probes import _params
from keras_probes.report import ProbeHistory, ProbeReport

if TYPE_CHECKING:  # kp.attribution imports TensorFlow; `keras-probes plot` never does
    from keras_probes.attribution import TCAVReport

__all__ = [
    "animate_history",
    "plot_error_colors",
    "plot_errors",
    "plot_history",
    "plot_history_frames",
    "plot_r2",
    "plot_relevance",
    "plot_tcav",
]


def plot_errors(
    report: ProbeReport,
    splits: str | list[str] | None = None,
    metric: str = "error",
    references: Mapping[str, float] | None = None,
    chance: bool = True,
    title: str | None = None,
    yscale: str = "linear",
    intervals: bool | str = "auto",
    level: float = 0.95,
) -> Figure:
    """Probe error against depth, one line per split (Alain & Bengio, Fig. 3/4b).

    Each line has its band of uncertainty where the report has one: the
    interval of each figure (`report.interval`: Wilson's for error rates, a
    bootstrap for losses) on the held-out splits that keep their examples'
    outcomes, or the mean plus and minus one standard deviation over the runs
    of a `kp.ProbeReport.combine`d report (`report.spread`). The legend says
    which ("95% interval", "± sd over 3 runs").

    Args:
        report: the measurements.
        splits: the split or splits to draw. Defaults to all of them.
        metric: `"error"`, `"top5_error"` or `"loss"`. Defaults to `"error"`.
        references: horizontal lines to compare with, `{label: value}`, e.g.
            `{"pretrained model": 0.24}`. Defaults to none.
        chance: draw the error of guessing the most likely class uniformly,
            `1 - 1/num_classes`, when the report knows `num_classes`.
            Defaults to `True`.
        title: figure title. Defaults to the model's name.
        yscale: `"linear"` or `"log"`; a log scale keeps errors of 1% and
            50% apart on one figure. A value of 0 (a probe without a mistake)
            has no place on a log scale: it is drawn at a floor, a power of ten
            one decade below the decade of the smallest positive value, marked
            by an open triangle and named in the legend ("0 (drawn at 0.001)").
            A negative value is refused. A band's end at 0 or below is drawn
            at the floor too. Defaults to `"linear"`.
        intervals: `"auto"` draws a band wherever the report has one, `True`
            refuses a split without one, `False` draws none. Defaults to
            `"auto"`.
        level: the intervals' confidence level. Defaults to `0.95`.

    Returns:
        The figure; save it with `fig.savefig("errors.png")`. Each band is a
        `fill_between` collection of `fig.axes[0]`, labelled with what it is.

    Raises:
        ValueError: an unknown split or metric (listing the known ones), a
            negative value on a log scale, or, with `intervals=True`, a split
            without intervals.
    """
    _check_bands(intervals, level, yscale=yscale)
    splits = report.splits if splits is None else [splits] if isinstance(splits, str) else splits
    points = report.points
    curves = {split: report.values(split, metric) for split in splits}
    bands = {
        split: _bands(report, split, metric, values, intervals, level)
        for split, values in curves.items()
    }
    ends = [end for band, _ in bands.values() for bounds in band.values() for end in bounds]
    floor = _log_floor(curves, metric, ends) if yscale == "log" else None
    width = min(16.0, max(6.0, 0.45 * len(points) + 2))
    fig = Figure(figsize=(width, 4.8), layout="constrained")
    ax = fig.add_subplot()
    zeros = []
    for split, values in curves.items():
        depths = [points.index(p) for p in values]
        heights = list(values.values())
        if floor is not None:
            zeros += [depth for depth, h in zip(depths, heights, strict=True) if h == 0]
            heights = [floor if h == 0 else h for h in heights]
        (line,) = ax.plot(depths, heights, marker="o", label=f"{split} {metric}")
        band, what = bands[split]
        if band:
            lows, highs = zip(*band.values(), strict=True)
            if floor is not None:
                lows, highs = ([max(end, floor) for end in edge] for edge in (lows, highs))
            ax.fill_between(
                [points.index(p) for p in band],
                lows,
                highs,
                color=line.get_color(),
                alpha=0.2,
                linewidth=0,
                label=f"{split}: {what}" if len(curves) > 1 else what,
            )
    if zeros:
        ax.scatter(
            zeros,
            [floor] * len(zeros),
            marker="v",
            s=90,
            facecolors="none",
            edgecolors="black",
            zorder=3,
            label=f"0 (drawn at {floor:g})",
        )
    for i, (label, value) in enumerate((references or {}).items()):
        ax.axhline(value, color=f"C{len(splits) + i}", linestyle="--", label=label)
    if chance and report.num_classes and metric == "error":
        ax.axhline(
            1 - 1 / report.num_classes,
            color="grey",
            linestyle=":",
            label=f"chance ({report.num_classes} classes)",
        )
    ax.set_xticks(range(len(points)), points, rotation=60, ha="right", fontsize=8)
    ax.set_xlabel("probe point (input side first)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_yscale(yscale)
    if metric != "loss" and yscale == "linear":
        ax.set_ylim(0, 1.02 if chance else None)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title if title is not None else f"Linear probes on {report.model or 'model'}")
    return fig


def _log_floor(curves, metric, ends=()):
    """Where a log scale draws the zeros of `curves` ({split: {point: value}}): one
    decade below the decade of the smallest positive value, of the curves or of the
    bands' `ends`. Refuses negative values (a band's end below 0 goes to the floor)."""
    positive = [end for end in ends if end > 0]
    for split, values in curves.items():
        for point, value in values.items():
            if value < 0:
                raise ValueError(
                    f"{metric!r} of point {point!r} on split {split!r} is {value!r}: a log "
                    "scale cannot show a negative value. Draw it with yscale='linear' "
                    "(on the command line, without --log)."
                )
            if value > 0:
                positive.append(value)
    decade = math.floor(math.log10(min(positive))) if positive else -2
    return 10.0 ** (decade - 1)


_LEVEL = _params.Real(
    0, 1, open_low=True, open_high=True, description="a confidence level in (0, 1)"
)


def _check_bands(intervals, level, **more):
    _params.check(
        {
            "intervals": _params.Options("auto", True, False),
            "level": _LEVEL,
            "yscale": _params.Options("linear", "log"),
        },
        intervals=intervals,
        level=level,
        **more,
    )


def _uncertainty(report, split, metric, points, intervals, level):
    """`({point: bounds}, what)`: each point's `(low, high)` interval from the
    split's outcomes, or `(sd,)` over a combined report's runs; `({}, None)` where
    the report has none (refused if `intervals` is `True`)."""
    if intervals is False:
        return {}, None
    if report.runs:
        if len(report.runs) > 1:
            spread = report.spread(split, metric)
            return {p: (spread[p],) for p in points}, f"± sd over {len(report.runs)} runs"
        why, fix = "a combination of 1 run has no spread", "Pass"
    else:
        kept = report.outcomes.get(split, {})
        measured = [p for p in points if p in kept and metric in kept[p].metrics]
        if measured:
            found = report.intervals(split, metric, level)  # one bootstrap for all points
            bounds = {p: found[p] for p in measured}
            return bounds, f"{level * 100:g}% interval"
        where = sorted(report.outcomes)
        why = (
            "intervals come from the examples' outcomes, which this report "
            + (f"keeps for {where} (of the metrics they give)" if where else "does not keep")
            + ", or from the runs of kp.ProbeReport.combine"
        )
        fix = f"Pass splits={where}, or" if where and not kept else "Pass"
    if intervals is True:
        raise ValueError(
            f"No interval of {metric!r} on split {split!r}: {why}. {fix} intervals='auto' to "
            "draw them only where there are some."
        )
    return {}, None


def _bands(report, split, metric, values, intervals, level):
    """`({point: (low, high)}, what)` of the band around `values` ({point: value})."""
    bounds, what = _uncertainty(report, split, metric, list(values), intervals, level)
    band = {
        p: (values[p] - b[0], values[p] + b[0]) if len(b) == 1 else b for p, b in bounds.items()
    }
    return band, what


def plot_r2(
    reports: Mapping[float, ProbeReport],
    target: str,
    split: str = "val",
    points: Sequence[str] | None = None,
    reference: ProbeReport | None = None,
    xlabel: str = "",
    title: str | None = None,
    ax=None,
    intervals: bool | str = "auto",
    level: float = 0.95,
) -> Figure:
    """Regression probes' R^2 of one target against a condition, one line per
    point (Graziani et al., Fig. 3 and 4).

    Each line has a band, each report's interval of the point's R^2 (a
    bootstrap over the split's examples, `report.interval`), where every
    report keeps its examples' outcomes; or the standard deviation over runs
    of `kp.ProbeReport.combine`d reports, as `plot_errors` draws it.

    Args:
        reports: `{x: report}` of `kp.fit_regression_probes` or
            `RegressionProbedModel.evaluate_probes`, e.g. one per label
            corruption fraction (Fig. 4) or per training epoch (Fig. 3).
        target: the target (concept) whose `<target>_r2` is drawn.
        split: the split measured. Defaults to `"val"`.
        points: the points drawn, coloured from input to output side.
            Defaults to all of the first report's.
        reference: a report drawn as a dotted line per point, e.g. the
            random (untrained) network's. Defaults to `None`.
        xlabel: the condition's name on the axis. Defaults to none.
        title: the axes' title. Defaults to `"R^2 of <target> (<split>)"`.
        ax: a Matplotlib axes to draw in. Defaults to a new figure's.
        intervals: `"auto"` draws a point's band where every report has its
            interval, `True` refuses a report without one, `False` draws none.
            Defaults to `"auto"`.
        level: the intervals' confidence level. Defaults to `0.95`.

    Returns:
        The figure.
    """
    _check_bands(intervals, level)
    if not reports:
        raise ValueError("`reports` is empty: pass {x: ProbeReport}, e.g. one per epoch.")
    xs = list(reports)
    points = list(next(iter(reports.values())).points if points is None else points)
    if ax is None:
        ax = Figure(figsize=(6.0, 4.2), layout="constrained").add_subplot()
    colors = colormaps["viridis"](np.linspace(0, 0.9, len(points)))
    metric = f"{target}_r2"
    bands, shaded = [], set()
    for report in reports.values():
        values = report.values(split, metric)
        band, what = _bands(report, split, metric, {p: values[p] for p in points}, intervals, level)
        bands.append(band)
        shaded |= {what} if what else set()
    drawn = False
    for point, color in zip(points, colors, strict=True):
        values = [reports[x].values(split, metric)[point] for x in xs]
        ax.plot(xs, values, "o-", color=color, label=point)
        if all(point in band for band in bands):
            lows, highs = zip(*(band[point] for band in bands), strict=True)
            label = f"_{point}: {' / '.join(sorted(shaded))}"  # "_": not in the legend
            ax.fill_between(xs, lows, highs, color=color, alpha=0.15, linewidth=0, label=label)
            drawn = True
        if reference is not None:
            level = reference.values(split, f"{target}_r2")[point]
            ax.axhline(level, color=color, linewidth=0.8, linestyle=":")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("R$^2$")
    ax.set_title(title if title is not None else f"R$^2$ of {target} ({split})")
    ax.grid(alpha=0.3)
    notes = ["dotted: reference"] if reference is not None else []
    notes += [f"shaded: {' / '.join(sorted(shaded))}"] if drawn else []
    ax.legend(fontsize=8, title="; ".join(notes) or None, title_fontsize=8)
    return ax.figure


def plot_error_colors(
    report: ProbeReport,
    split: str = "val",
    references: Mapping[str, float | None] | None = None,
    title: str | None = None,
    intervals: bool | str = "auto",
    level: float = 0.95,
) -> Figure:
    """Probe errors as a row of coloured boxes along depth (Alain & Bengio, Fig. 5).

    One box per probe point, input side on the left, coloured by the probe's
    error on `split` on a fixed 0..1 scale (red is bad, green is good), with
    the error written in it and the point's name below. References, such as
    the network's own classifier (the paper's "main head"), follow as boxes
    with a heavier dashed outline. A smooth gradient from red to green is the
    paper's finding: linear separability grows steadily with depth. Under each
    error, its interval where the split keeps its examples' outcomes, or its
    standard deviation over the runs of a combined report, as in `plot_errors`.

    Args:
        report: the measurements.
        split: the split whose errors colour the boxes. Defaults to `"val"`.
        references: more boxes after the probes, `{label: error}`, e.g.
            `{"main head": 0.22}`; an error of `None` or NaN (unknown) is
            drawn grey, marked "n/a". Defaults to none.
        title: figure title. Defaults to the split and the model's name.
        intervals: `"auto"` writes the intervals where the report has them,
            `True` refuses a split without them, `False` writes none.
            Defaults to `"auto"`.
        level: the intervals' confidence level. Defaults to `0.95`.

    Returns:
        The figure. Its first axes holds one `matplotlib.patches.Rectangle`
        per box, in order, labelled with the point or reference name; the
        second is the colorbar.

    Example:

    ```python
    fig = kp.plots.plot_error_colors(report, references={"main head": 0.22})
    fig.savefig("error_colors.png")
    ```
    """
    _check_bands(intervals, level)
    errors = report.errors(split)
    bounds, what = _uncertainty(report, split, "error", list(errors), intervals, level)
    boxes = [*errors.items(), *(references or {}).items()]
    cmap, norm = colormaps["RdYlGn_r"], Normalize(vmin=0.0, vmax=1.0)
    gap = 0.5 if references else 0.0  # sets the references apart from the probes
    width = min(18.0, max(6.0, 0.62 * (len(boxes) + gap) + 2.5))
    fig = Figure(figsize=(width, 3.8), layout="constrained")
    ax = fig.add_subplot()
    centres = []
    for i, (name, value) in enumerate(boxes):
        reference = i >= len(errors)
        left = i + (gap if reference else 0.0)
        known = value is not None and bool(np.isfinite(value))
        colour = cmap(norm(value)) if known else (0.8, 0.8, 0.8, 1.0)
        ax.add_patch(
            Rectangle(
                (left + 0.06, 0.0),
                0.88,
                1.0,
                facecolor=colour,
                edgecolor="black",
                linewidth=1.8 if reference else 0.6,
                linestyle="--" if reference else "-",
                label=name,
            )
        )
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        text = f"{value:.3f}" if known else "n/a"
        bound = None if reference else bounds.get(name)
        if bound is not None:
            text += (
                f"\n± {bound[0]:.3f}" if len(bound) == 1 else f"\n[{bound[0]:.3f}, {bound[1]:.3f}]"
            )
        ax.text(
            left + 0.5,
            0.5,
            text,
            ha="center",
            va="center",
            rotation=90,
            fontsize=9,
            color="white" if luminance < 0.45 else "black",
        )
        centres.append(left + 0.5)
    ax.set_xlim(0.0, len(boxes) + gap)
    ax.set_ylim(0.0, 1.0)
    ax.set_xticks(centres, [name for name, _ in boxes], rotation=60, ha="right", fontsize=8)
    ax.tick_params(axis="x", length=0)
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    label = "probe point, input side first" + (" (dashed: references)" if references else "")
    ax.set_xlabel(label + (f"\nin each box: the error and its {what}" if bounds else ""))
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=f"probe error ({split})")
    model = report.model or "the model"
    ax.set_title(title if title is not None else f"Probe {split} error along the depth of {model}")
    return fig


def _point_ticks(points, most=24):
    """Every point's name when they fit, else every k-th (128-layer models)."""
    stride = max(1, int(np.ceil(len(points) / most)))
    return list(range(0, len(points), stride)), [points[i] for i in range(0, len(points), stride)]


def _chance(history, metric):
    if history.num_classes and metric.endswith("error"):
        return 1 - 1 / history.num_classes
    return None


def plot_history(
    history: ProbeHistory,
    metric: str = "train_error",
    title: str | None = None,
    cmap: str = "RdYlGn_r",
    ax=None,
) -> Figure:
    """Probe errors over training as a heatmap: points x measurements (Fig. 7/8).

    Rows are the probe points, input side at the top; columns are the
    measurements in order, labelled with their training step; the colour is
    the metric (red is bad, green is good for errors). A signal spreading
    from the input to the output over training shows as a diagonal front.

    Args:
        history: what `kp.callbacks.ProbeMonitor` recorded.
        metric: e.g. `"train_error"` or `"val_error"`. Defaults to `"train_error"`.
        title: figure title. Defaults to the model's name and the metric.
        cmap: a Matplotlib colormap. Defaults to `"RdYlGn_r"`.
        ax: a Matplotlib axes to draw in. Defaults to a new figure's.

    Returns:
        The figure.
    """
    values = history.matrix(metric)
    if ax is None:
        width = min(14.0, max(6.0, 0.25 * len(history.steps) + 4))
        height = min(12.0, max(4.0, 0.12 * len(history.points) + 2))
        fig = Figure(figsize=(width, height), layout="constrained")
        ax = fig.add_subplot()
    error = metric.endswith("error")
    image = ax.imshow(
        values,
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        vmin=0.0 if error else None,
        vmax=1.0 if error else None,
    )
    ax.figure.colorbar(image, ax=ax, label=metric.replace("_", " "))
    ticks, labels = _point_ticks(history.points)
    ax.set_yticks(ticks, labels, fontsize=7)
    columns, steps = _point_ticks([str(s) for s in history.steps], most=12)
    ax.set_xticks(columns, steps, rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("training step (batches) of each measurement")
    ax.set_ylabel("probe point (input at the top)")
    ax.set_title(title if title is not None else f"{metric.replace('_', ' ')}: {history.model}")
    return ax.figure


def _draw_curve(ax, history, metric, index, **style):
    values = history.matrix(metric)[:, index]
    label = f"step {history.steps[index]} (epoch {history.epochs[index]:.2f})"
    return ax.plot(range(len(history.points)), values, marker=".", label=label, **style)


def _frame_axes(ax, history, metric):
    chance = _chance(history, metric)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", label=f"chance ({chance:.2f})")
    ticks, labels = _point_ticks(history.points)
    ax.set_xticks(ticks, labels, rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("probe point (input side first)")
    ax.set_ylabel(metric.replace("_", " "))
    if metric.endswith("error"):
        ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)


def plot_history_frames(
    history: ProbeHistory,
    metric: str = "train_error",
    steps: Sequence[int] | None = None,
    title: str | None = None,
    ax=None,
) -> Figure:
    """The per-layer error curve at a few moments of training, on one axes
    (the paper's three frames of Fig. 7/8 drawn together).

    Args:
        history: what `kp.callbacks.ProbeMonitor` recorded.
        metric: e.g. `"train_error"`. Defaults to `"train_error"`.
        steps: the measured steps to draw. Defaults to the first, the middle
            and the last measurement.
        title: figure title. Defaults to the model's name.
        ax: a Matplotlib axes to draw in. Defaults to a new figure's.

    Returns:
        The figure.
    """
    if steps is None:
        n = len(history.steps)
        steps = [history.steps[i] for i in sorted({0, n // 2, n - 1})]
    missing = [s for s in steps if s not in history.steps]
    if missing:
        raise ValueError(f"No measurement at steps {missing}. Measured: {history.steps}")
    if ax is None:
        fig = Figure(figsize=(min(16.0, max(6.0, 0.1 * len(history.points) + 5)), 4.5))
        fig.set_layout_engine("constrained")
        ax = fig.add_subplot()
    for step in steps:
        _draw_curve(ax, history, metric, history.steps.index(step))
    _frame_axes(ax, history, metric)
    ax.legend(fontsize=8)
    ax.set_title(title if title is not None else f"Linear probes during training: {history.model}")
    return ax.figure


def animate_history(
    history: ProbeHistory,
    path,
    metric: str = "train_error",
    fps: int = 4,
    title: str | None = None,
) -> Path:
    """Writes a GIF of the per-layer error curve, one frame per measurement
    (the paper's videos of Fig. 5, 7 and 8).

    Args:
        history: what `kp.callbacks.ProbeMonitor` recorded.
        path: the `.gif` file to write.
        metric: e.g. `"train_error"`. Defaults to `"train_error"`.
        fps: frames per second. Defaults to `4`.
        title: title above every frame. Defaults to the model's name.

    Returns:
        The path written.
    """
    path = Path(path)
    fig = Figure(figsize=(min(12.0, max(6.0, 0.08 * len(history.points) + 5)), 4.5))
    fig.set_layout_engine("constrained")
    ax = fig.add_subplot()
    (line,) = _draw_curve(ax, history, metric, 0)
    _frame_axes(ax, history, metric)
    ax.set_title(title if title is not None else f"Linear probes during training: {history.model}")
    label = ax.text(0.01, 0.97, "", transform=ax.transAxes, va="top")
    values = history.matrix(metric)

    def frame(index):
        line.set_ydata(values[:, index])
        label.set_text(f"step {history.steps[index]}, epoch {history.epochs[index]:.2f}")
        return line, label

    movie = animation.FuncAnimation(fig, frame, frames=len(history.steps), blit=False)
    movie.save(path, writer=animation.PillowWriter(fps=fps))
    return path


def _member_colours(members):
    """A colour per member (point), input side to output side."""
    return colormaps["viridis"](np.linspace(0.1, 0.9, max(len(members), 1)))


def _grouped_bars(ax, groups, members, values, errors=None, faded=None):
    """Bars grouped by `groups` (one cluster each), a bar per member coloured input side
    to output side; returns `{(group, member): bar centre}`."""
    colours = _member_colours(members)
    width = 0.8 / max(len(members), 1)
    centres = {}
    for g, group in enumerate(groups):
        for m, member in enumerate(members):
            key = (group, member)
            if key not in values:
                continue
            x = g - 0.4 + width * (m + 0.5)
            ax.bar(
                x,
                values[key],
                width * 0.9,
                color=colours[m],
                alpha=0.35 if faded and faded.get(key) else 1.0,
                yerr=None if errors is None else errors.get(key),
                capsize=2,
                label=member if g == 0 else None,
            )
            centres[key] = x
    ax.set_xticks(range(len(groups)), groups)
    return centres, width


def plot_tcav(
    report: "TCAVReport",
    alpha: float = 0.05,
    title: str | None = None,
    class_names: Mapping[int, str] | None = None,
) -> Figure:
    """TCAV scores per concept and point, with the random CAVs' (Kim et al. 2018, Fig. 4).

    One panel per class. For each concept a cluster of bars, one per point
    (input side first): the mean TCAV score over runs with its standard
    deviation. Over each bar, the random-vs-random CAVs' scores as grey dots
    and their mean as a black dash: the null the score is tested against. A
    significant score (the report's Holm-adjusted p-value below `alpha`) is
    marked `*`; a score that is not is drawn faded, as the TCAV paper omits
    it.

    Args:
        report: a `kp.attribution.TCAVReport` (`tcav_report`, or
            `TCAVReport.from_json`).
        alpha: the significance level of the marks. Defaults to `0.05`.
        title: the figure's title. Defaults to a description.
        class_names: `{class index: name}` for the panels' titles. Defaults
            to `None`: "class K".

    Returns:
        The figure.
    """
    _params.check({"alpha": _params.Real(0.0, 1.0, open_low=True, open_high=True)}, alpha=alpha)
    class_names = dict(class_names or {})
    if not report.results:
        raise ValueError("The TCAV report holds no result: nothing to draw.")
    targets, concepts, points = report.targets, report.concepts, report.points
    fig = Figure(
        figsize=(max(4.0, 1.2 + 0.9 * len(concepts) * max(len(points), 2) / 2), 3.4 * len(targets)),
        layout="constrained",  # room for the title and the legend below the panels
    )
    axes = fig.subplots(len(targets), 1, squeeze=False)[:, 0]
    for ax, target in zip(axes, targets, strict=True):
        results = {(r.concept, r.point): r for r in report.results if r.target == target}
        centres, width = _grouped_bars(
            ax,
            concepts,
            points,
            {key: r.score for key, r in results.items()},
            errors={key: float(np.std(r.scores)) for key, r in results.items()},
            faded={key: not r.significant(alpha) for key, r in results.items()},
        )
        rng = np.random.default_rng(0)  # the dots' jitter only
        for key, r in results.items():
            x = centres[key]
            jitter = rng.uniform(-0.25, 0.25, size=len(r.random_scores)) * width
            ax.scatter(x + jitter, r.random_scores, s=6, color="0.5", zorder=3)
            ax.hlines(r.random_score, x - width / 2, x + width / 2, color="black", lw=1.5, zorder=4)
            if r.significant(alpha):
                top = min(r.score + float(np.std(r.scores)), 1.0)
                ax.text(x, top + 0.02, "*", ha="center", va="bottom", fontsize=12)
        ax.set_ylim(0.0, 1.12)
        ax.set_ylabel("TCAV score")
        name = class_names.get(target)
        ax.set_title(f"class {target}" + (f": {name}" if name else ""), fontsize=10)
        ax.axhline(0.5, color="0.8", lw=0.8, zorder=0)
    # Below the panels, where it hides no bar nor mark.
    fig.legend(
        [Rectangle((0, 0), 1, 1, color=c) for c in _member_colours(points)],  # never faded
        points,
        loc="outside lower center",
        ncols=min(len(points), 4),
        fontsize=7,
        title="point",
        title_fontsize=7,
    )
    adjusted = any(r.adjusted_pvalue is not None for r in report.results)
    default = (
        f"TCAV scores (mean ± sd over runs); grey: random CAVs, dash: their mean; "
        f"* p < {alpha}{' (Holm)' if adjusted else ''}, faded: not significant"
    )
    # About 16 characters of 9-point text per inch: wrapped to the figure's width.
    width = int(fig.get_figwidth() * 16)
    fig.suptitle(title if title is not None else textwrap.fill(default, width), fontsize=9)
    return fig


def plot_relevance(
    relevance: Mapping[str, Mapping[str, float]], title: str | None = None, ylabel: str = "Br"
) -> Figure:
    """Bidirectional relevance (Graziani et al.) per concept and point, as grouped bars.

    Args:
        relevance: `{concept: {point: Br}}` (`kp.attribution.bidirectional_relevance`
            per concept and point); points in the order first met, input side
            first.
        title: the axes' title. Defaults to a description.
        ylabel: the value's name. Defaults to `"Br"`.

    Returns:
        The figure.
    """
    if not relevance or not any(relevance.values()):
        raise ValueError("`relevance` is {concept: {point: value}} with at least one value.")
    concepts = list(relevance)
    points = list(dict.fromkeys(p for values in relevance.values() for p in values))
    fig = Figure(figsize=(max(4.0, 0.5 * len(concepts) * max(len(points), 2)), 3.6))
    ax = fig.subplots()
    values = {(c, p): float(v) for c, by_point in relevance.items() for p, v in by_point.items()}
    _grouped_bars(ax, concepts, points, values)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=7, title="point", title_fontsize=7, ncols=2)
    ax.set_title(
        title
        if title is not None
        else "Bidirectional relevance: R^2 x mean / sd of the "
        "derivatives along each concept vector",
        fontsize=9,
    )
    fig.tight_layout()
    return fig
