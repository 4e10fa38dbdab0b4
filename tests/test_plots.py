"""Plots return a Figure, drawn from a report, without showing anything."""

from conftest import make_report
from matplotlib.figure import Figure

import keras_probes as kp


def test_plot_errors_draws_a_line_per_split_and_references(tmp_path):
    report = make_report()
    fig = kp.plots.plot_errors(report, references={"model itself": 0.2})
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["val error", "test error", "model itself", "chance (10 classes)"]
    val = ax.get_lines()[0]
    assert list(val.get_ydata()) == list(report.errors("val").values())
    assert [t.get_text() for t in ax.get_xticklabels()] == report.points
    fig.savefig(tmp_path / "errors.png")
    assert (tmp_path / "errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_one_split_and_another_metric():
    fig = kp.plots.plot_errors(
        make_report(), splits=["test"], metric="top5_error", title="T", yscale="log"
    )
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert [line.get_label() for line in ax.get_lines()] == ["test top5_error"]
    assert ax.get_title() == "T"
