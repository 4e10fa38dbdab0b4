"""Plots return a Figure, drawn from a report, without showing anything."""

import numpy as np
import pytest
from conftest import make_report
from matplotlib.colors import to_rgb
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


def _measured_report(n=120, seed=0, all_right=None):
    """A report whose test split keeps each example's outcome (train: figures only)."""
    points = ["conv1", "block/relu", "dense"]
    rng = np.random.default_rng(seed)
    outcomes, rows = {}, {}
    for i, point in enumerate(points):
        correct = rng.random(n) > 0.6 - 0.2 * i
        if point == all_right:
            correct[:] = True
        top5 = correct | (rng.random(n) > 0.3)
        loss = rng.gamma(2.0, 0.6 - 0.15 * i, n).astype(np.float32)
        outcomes[point] = kp.outcomes.Outcomes(correct, top5, loss)
        rows[point] = {
            "loss": float(loss.astype(np.float64).mean()),
            "error": float(1 - correct.mean()),
            "top5_error": float(1 - top5.mean()),
        }
    results = {"train": {p: {"loss": 0.1, "error": 0.05, "top5_error": 0.0} for p in points}}
    results["test"] = rows
    return kp.ProbeReport(
        points,
        results,
        num_classes=10,
        model="convnet",
        outcomes={"test": outcomes},
        examples={"test": kp.outcomes.Examples("f" * 16)},
    )


def _bands(ax):
    from matplotlib.collections import PolyCollection

    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def _band_edges(band):
    """`{x: (low, high)}` of a fill_between band."""
    edges = {}
    for x, y in band.get_paths()[0].vertices:
        low, high = edges.get(float(x), (np.inf, -np.inf))
        edges[float(x)] = (min(low, float(y)), max(high, float(y)))
    return edges


@pytest.mark.parametrize("metric, level", [("error", 0.95), ("loss", 0.9), ("top5_error", 0.99)])
def test_plot_errors_draws_the_interval_of_each_split_with_outcomes_as_a_band(
    tmp_path, metric, level
):
    report = _measured_report()
    fig = kp.plots.plot_errors(report, metric=metric, level=level)
    ax = fig.axes[0]
    (band,) = _bands(ax)  # the test split's; train keeps no outcomes
    what = f"{level * 100:g}% interval"
    assert band.get_label() == f"test: {what}"
    assert f"test: {what}" in [t.get_text() for t in ax.get_legend().get_texts()]
    # The band is the report's interval at each point, in the colour of the split's line.
    intervals = report.intervals("test", metric, level)
    expected = {float(depth): intervals[point] for depth, point in enumerate(report.points)}
    assert _band_edges(band) == expected
    (test_line,) = [line for line in ax.get_lines() if line.get_label() == f"test {metric}"]
    np.testing.assert_allclose(band.get_facecolor()[0][:3], to_rgb(test_line.get_color()))
    fig.savefig(tmp_path / "bands.png")
    # One split drawn: the legend says what the band is, without the split's name.
    (band,) = _bands(
        kp.plots.plot_errors(report, splits="test", metric=metric, level=level).axes[0]
    )
    assert band.get_label() == what


def test_plot_errors_draws_no_band_without_outcomes_or_when_asked_not_to():
    assert not _bands(kp.plots.plot_errors(make_report()).axes[0])
    assert not _bands(kp.plots.plot_errors(_measured_report(), intervals=False).axes[0])
    # ... nor for a metric that outcomes do not give.
    report = _measured_report()
    report = report.with_selectivity(report, "test")
    assert not _bands(kp.plots.plot_errors(report, splits="test", metric="selectivity").axes[0])


def test_plot_errors_with_intervals_true_refuses_a_split_without_them():
    report = _measured_report()
    (band,) = _bands(kp.plots.plot_errors(report, splits="test", intervals=True).axes[0])
    with pytest.raises(ValueError, match=r"No interval of 'error' on split 'train'.*"
                       r"keeps for \['test'\].*splits=\['test'\].*intervals='auto'"):  # fmt: skip
        kp.plots.plot_errors(report, intervals=True)
    with pytest.raises(ValueError, match=r"`intervals` must be one of 'auto', True, False"):
        kp.plots.plot_errors(report, intervals="yes")
    with pytest.raises(ValueError, match=r"`level` must be a confidence level in \(0, 1\)"):
        kp.plots.plot_errors(report, level=1.0)


def test_plot_errors_of_combined_runs_draws_mean_plus_minus_sd():
    runs = [_measured_report(seed=seed) for seed in range(3)]
    combined = kp.ProbeReport.combine(runs)
    ax = kp.plots.plot_errors(combined, splits="test").axes[0]
    (band,) = _bands(ax)
    assert band.get_label() == "± sd over 3 runs"
    means, sds = combined.errors("test"), combined.spread("test")
    expected = {
        float(depth): (means[p] - sds[p], means[p] + sds[p])
        for depth, p in enumerate(combined.points)
    }
    for depth, (low, high) in _band_edges(band).items():
        assert (low, high) == pytest.approx(expected[depth], abs=1e-15)
    # Both splits of a combination have their spread.
    assert len(_bands(kp.plots.plot_errors(combined).axes[0])) == 2
    # One run has no spread: no band, or a refusal when asked for one.
    one = kp.ProbeReport.combine(runs[:1])
    assert not _bands(kp.plots.plot_errors(one).axes[0])
    with pytest.raises(ValueError, match="a combination of 1 run has no spread"):
        kp.plots.plot_errors(one, intervals=True)


def test_log_scale_bands_reach_down_to_the_floor_at_zero():
    report = _measured_report(all_right="dense")  # error 0 at "dense": its interval is [0, x]
    ax = kp.plots.plot_errors(report, splits="test", yscale="log").axes[0]
    (band,) = _bands(ax)
    heights = ax.get_lines()[0].get_ydata()
    floor = heights[2]
    (zeros,) = [c for c in ax.collections if c.get_label().startswith("0 (")]
    assert zeros.get_label() == f"0 (drawn at {floor:g})"
    low, high = report.interval("test", "dense")
    assert low == 0.0 and high > 0
    edges = _band_edges(band)
    assert edges[2.0] == (floor, high)  # the zero end of the band at the floor
    # Every other edge is the interval itself, above the floor.
    assert edges[0.0] == report.interval("test", "conv1") and min(edges[0.0]) > floor


def test_plot_error_colors_writes_each_boxes_interval():
    report = _measured_report()
    ax = kp.plots.plot_error_colors(report, split="test", references={"main head": 0.1}).axes[0]
    texts = [t.get_text() for t in ax.texts]
    for text, point in zip(texts, report.points, strict=False):
        low, high = report.interval("test", point)
        assert text == f"{report.errors('test')[point]:.3f}\n[{low:.3f}, {high:.3f}]"
    assert texts[-1] == "0.100"  # a reference has no interval
    assert "95% interval" in ax.get_xlabel()
    plain = kp.plots.plot_error_colors(report, split="test", intervals=False).axes[0]
    assert "\n" not in "".join(t.get_text() for t in plain.texts)
    runs = kp.ProbeReport.combine([_measured_report(seed=s) for s in range(3)])
    ax = kp.plots.plot_error_colors(runs, split="test").axes[0]
    sd = runs.spread("test")["conv1"]
    assert ax.texts[0].get_text() == f"{runs.errors('test')['conv1']:.3f}\n± {sd:.3f}"
    assert "± sd over 3 runs" in ax.get_xlabel()


def _regression_report(noise, n=80, seed=0):
    """A regression report whose val split keeps each example's target and prediction."""
    points = ["hidden1", "hidden2"]
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(n, 1)).astype(np.float32)
    outcomes, rows = {}, {}
    for i, point in enumerate(points):
        predictions = (y + (noise + 0.2 * i) * rng.normal(size=(n, 1))).astype(np.float32)
        outcomes[point] = kp.outcomes.RegressionOutcomes(("area",), y, predictions)
        mspe = float(np.mean((predictions - y) ** 2))
        rows[point] = {"loss": mspe, "area_r2": 1 - mspe / float(np.var(y)), "area_mspe": mspe}
    return kp.ProbeReport(
        points,
        {"val": rows},
        outcomes={"val": outcomes},
        examples={"val": kp.outcomes.Examples("r" * 16)},
    )


def test_plot_r2_draws_each_points_interval_as_a_band():
    reports = {
        0.0: _regression_report(0.2),
        0.5: _regression_report(0.5),
        1.0: _regression_report(0.9),
    }
    ax = kp.plots.plot_r2(reports, "area", level=0.9).axes[0]
    bands = _bands(ax)
    assert [band.get_label() for band in bands] == [
        "_hidden1: 90% interval",
        "_hidden2: 90% interval",
    ]
    for band, point in zip(bands, ["hidden1", "hidden2"], strict=True):
        expected = {x: r.interval("val", point, "area_r2", 0.9) for x, r in reports.items()}
        assert _band_edges(band) == expected
    assert "shaded: 90% interval" in ax.get_legend().get_title().get_text()
    assert not _bands(kp.plots.plot_r2(reports, "area", intervals=False).axes[0])
    # Reports without outcomes: no band, or a refusal when asked for one.
    plain = {x: kp.ProbeReport(r.points, r.results) for x, r in reports.items()}
    assert not _bands(kp.plots.plot_r2(plain, "area").axes[0])
    with pytest.raises(ValueError, match="No interval of 'area_r2' on split 'val'"):
        kp.plots.plot_r2(plain, "area", intervals=True)


def test_plot_errors_draws_bands_of_regression_figures():
    report = _regression_report(0.3)
    (band,) = _bands(kp.plots.plot_errors(report, metric="area_mspe").axes[0])
    # One bootstrap for every point (report.intervals): interval's within float rounding.
    intervals = report.intervals("val", "area_mspe")
    assert _band_edges(band) == {float(i): intervals[p] for i, p in enumerate(report.points)}
    for point in report.points:
        assert intervals[point] == pytest.approx(report.interval("val", point, "area_mspe"))
