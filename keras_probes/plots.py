"""Figures of probe measurements. Each function takes data and returns a
`matplotlib.figure.Figure`; nothing is shown, nothing global is touched."""

from collections.abc import Mapping

from matplotlib.figure import Figure

from keras_probes.report import ProbeReport

__all__ = ["plot_errors"]


def plot_errors(
    report: ProbeReport,
    splits: list[str] | None = None,
    metric: str = "error",
    references: Mapping[str, float] | None = None,
    chance: bool = True,
    title: str | None = None,
    yscale: str = "linear",
) -> Figure:
    """Probe error against depth, one line per split (Alain & Bengio, Fig. 3/4b).

    Args:
        report: the measurements.
        splits: which splits to draw. Defaults to all of them.
        metric: `"error"`, `"top5_error"` or `"loss"`. Defaults to `"error"`.
        references: horizontal lines to compare with, `{label: value}`, e.g.
            `{"pretrained model": 0.24}`. Defaults to none.
        chance: draw the error of guessing the most likely class uniformly,
            `1 - 1/num_classes`, when the report knows `num_classes`.
            Defaults to `True`.
        title: figure title. Defaults to the model's name.
        yscale: `"linear"` or `"log"`; a log scale keeps errors of 1% and
            50% apart on one figure. Defaults to `"linear"`.

    Returns:
        The figure; save it with `fig.savefig("errors.png")`.
    """
    splits = report.splits if splits is None else list(splits)
    points = report.points
    width = min(16.0, max(6.0, 0.45 * len(points) + 2))
    fig = Figure(figsize=(width, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for split in splits:
        values = report.values(split, metric)
        depths = [points.index(p) for p in values]
        ax.plot(depths, list(values.values()), marker="o", label=f"{split} {metric}")
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
