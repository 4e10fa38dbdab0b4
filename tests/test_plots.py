"""Plots return a Figure, drawn from a report, without showing anything."""

import numpy as np
import pytest
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


def test_plot_error_colors_draws_one_box_per_point_coloured_by_its_error(tmp_path):
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    report = make_report()  # val errors 0.5, 0.4, 0.3 along depth
    references = {"main head": 0.1, "unknown head": None}
    fig = kp.plots.plot_error_colors(report, references=references)
    assert isinstance(fig, Figure)
    ax, colorbar = fig.axes
    boxes = [p for p in ax.patches if isinstance(p, Rectangle)]
    names = [*report.points, "main head", "unknown head"]
    assert [box.get_label() for box in boxes] == names
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    # Colours on a fixed 0..1 scale, red is bad: each box is the colormap at its error.
    errors = [*report.errors("val").values(), 0.1]
    for box, error in zip(boxes, errors, strict=False):
        np.testing.assert_allclose(box.get_facecolor(), colormaps["RdYlGn_r"](error))
    np.testing.assert_allclose(boxes[-1].get_facecolor(), (0.8, 0.8, 0.8, 1.0))  # unknown: grey
    greenness = [box.get_facecolor()[1] - box.get_facecolor()[0] for box in boxes[:4]]
    assert greenness == sorted(greenness) and greenness[0] < greenness[-1]  # lower error: greener
    assert [t.get_text() for t in ax.texts] == ["0.500", "0.400", "0.300", "0.100", "n/a"]
    assert [box.get_linestyle() for box in boxes].count("--") == 2  # references stand apart
    assert colorbar.get_ylim() == (0.0, 1.0) and colorbar.get_ylabel() == "probe error (val)"
    assert "val" in ax.get_title() and "convnet" in ax.get_title()
    fig.savefig(tmp_path / "colors.png")
    assert (tmp_path / "colors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_error_colors_of_another_split_without_references():
    report = make_report()  # test errors all 0.3
    fig = kp.plots.plot_error_colors(report, split="test", title="T")
    ax = fig.axes[0]
    assert len(ax.patches) == len(report.points)
    assert len({tuple(p.get_facecolor()) for p in ax.patches}) == 1  # equal errors, equal colours
    assert ax.get_title() == "T" and fig.axes[1].get_ylabel() == "probe error (test)"


def test_plot_r2_draws_a_line_per_point_against_the_condition(tmp_path):
    points = ["hidden1", "hidden2"]

    def report(level):
        rows = {
            p: {"area_r2": level - 0.1 * i, "area_mspe": 1 - level} for i, p in enumerate(points)
        }
        return kp.ProbeReport(points, {"val": rows})

    reports = {0.0: report(0.9), 0.5: report(0.7), 1.0: report(0.5)}
    figure = kp.plots.plot_r2(reports, "area", reference=report(0.95), xlabel="corruption")
    assert isinstance(figure, Figure)
    ax = figure.axes[0]
    curves = [line for line in ax.lines if line.get_label() in points]
    assert [line.get_label() for line in curves] == points
    np.testing.assert_allclose(curves[1].get_xdata(), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(curves[1].get_ydata(), [0.8, 0.6, 0.4])
    assert len(ax.lines) == 4  # and a dotted reference level per point
    assert ax.get_xlabel() == "corruption"
    figure.savefig(tmp_path / "r2.png")
    with pytest.raises(ValueError, match="`reports` is empty"):
        kp.plots.plot_r2({}, "area")
    with pytest.raises(ValueError, match="No metric 'size_r2'"):
        kp.plots.plot_r2(reports, "size")


def test_plot_of_a_report_read_back_from_csv_keeps_its_chance_line_and_title(tmp_path):
    report = make_report()
    report.to_json(tmp_path / "r.json")
    report.to_csv(tmp_path / "r.csv")
    figures = [
        kp.plots.plot_errors(kp.ProbeReport.from_json(tmp_path / "r.json")),
        kp.plots.plot_errors(kp.ProbeReport.from_csv(tmp_path / "r.csv")),
    ]
    for fig in figures:
        ax = fig.axes[0]
        assert [line.get_label() for line in ax.get_lines()][-1] == "chance (10 classes)"
        assert ax.get_lines()[-1].get_ydata()[0] == pytest.approx(0.9)
        assert ax.get_title() == "Linear probes on convnet"


def test_log_scale_draws_zero_errors_at_a_marked_floor():
    points = ["input", "hidden", "output"]
    errors = {"input": 0.0, "hidden": 0.012, "output": 0.3}
    report = kp.ProbeReport(points, {"val": {p: {"error": e} for p, e in errors.items()}}, 10)
    ax = kp.plots.plot_errors(report, yscale="log").axes[0]
    line = ax.get_lines()[0]
    heights = np.asarray(line.get_ydata(), float)
    # Every point is on the log axis: the zero at a floor a decade below 0.012's decade.
    assert np.all(heights > 0) and list(line.get_xdata()) == [0, 1, 2]
    assert heights.tolist() == [1e-3, 0.012, 0.3]
    assert ax.get_ylim()[0] < 1e-3
    # ... marked as a floor, and the legend says what the floor is.
    (zeros,) = [c for c in ax.collections if c.get_label().startswith("0 (")]
    assert zeros.get_offsets().tolist() == [[0.0, 1e-3]]
    assert zeros.get_label() == "0 (drawn at 0.001)"
    assert "0 (drawn at 0.001)" in [t.get_text() for t in ax.get_legend().get_texts()]
    # Without zeros, nothing is added; on a linear scale the zero stays 0.
    linear = kp.plots.plot_errors(report).axes[0]
    assert list(linear.get_lines()[0].get_ydata()) == [0.0, 0.012, 0.3]
    assert not linear.collections


def test_log_scale_refuses_negative_values_naming_the_fix():
    report = kp.ProbeReport(["a", "b"], {"val": {"a": {"gap": -0.1}, "b": {"gap": 0.2}}})
    with pytest.raises(ValueError, match=r"'gap' of point 'a' on split 'val' is -0.1.*yscale"):
        kp.plots.plot_errors(report, metric="gap", yscale="log")
    with pytest.raises(ValueError, match=r"`yscale` must be one of 'linear', 'log'"):
        kp.plots.plot_errors(make_report(), yscale="logarithmic")


def test_plot_errors_takes_one_split_as_a_string():
    ax = kp.plots.plot_errors(make_report(), splits="test").axes[0]
    assert [line.get_label() for line in ax.get_lines()][0] == "test error"
