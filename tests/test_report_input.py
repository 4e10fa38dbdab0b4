"""ProbeReport on careless input: hand-edited files and reports built in code are refused
in one line naming the file (and line), split, point and metric; wrong arguments name the
valid ones."""

import json
import math

import pytest
from conftest import make_report

import keras_probes as kp


def _json_report(path, split_rows, num_classes=10, model="m"):
    points = list(next(iter(split_rows.values())))
    data = {
        "format": "keras_probes.ProbeReport",
        "version": 1,
        "model": model,
        "num_classes": num_classes,
        "points": points,
        "results": split_rows,
    }
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "metric, value, accepted",
    [
        ("error", 1.5, "an error rate"),
        ("error", -0.2, "an error rate"),
        ("top5_error", 1.01, "an error rate"),
        ("full_error", 2.0, "an error rate"),
        ("loss", -0.5, "a loss"),
        ("area_mspe", -1.0, "a mean squared prediction error"),
        ("area_r2", 1.5, "an R^2"),
        ("selectivity", 1.5, "a selectivity"),
    ],
)
def test_json_out_of_range_metrics_are_refused_naming_everything(tmp_path, metric, value, accepted):
    rows = {"a": {metric: 0.0}, "b": {metric: value}}
    path = _json_report(tmp_path / "r.json", {"val": rows})
    with pytest.raises(ValueError) as error:
        kp.ProbeReport.from_json(path)
    message = str(error.value)
    for part in (str(path), f"{metric!r}", "point 'b'", "split 'val'", accepted, repr(value)):
        assert part in message, (part, message)
    assert "\n" not in message


@pytest.mark.parametrize(
    "metric, value",
    [
        ("area_r2", -3.0),  # worse than predicting the mean: still an R^2
        ("selectivity", -0.4),
        ("error", 0.0),
        ("error", 1.0),
        ("error", None),  # unknown
        ("loss", 0.0),
        ("grad_norm", 1e6),
    ],
)
def test_json_in_range_metrics_are_read(tmp_path, metric, value):
    path = _json_report(tmp_path / "r.json", {"val": {"a": {metric: value}}})
    read = kp.ProbeReport.from_json(path).values("val", metric)["a"]
    assert read == value or (value is None and math.isnan(read))


@pytest.mark.parametrize(
    "cell, message",
    [
        ("1.5", "'error' of point 'b' on split 'val' must be an error rate"),
        ("-0.2", "'error' of point 'b' on split 'val' must be an error rate"),
        ("inf", "'error' of point 'b' on split 'val' must be an error rate"),
    ],
)
def test_csv_out_of_range_metrics_are_refused_naming_the_line(tmp_path, cell, message):
    path = tmp_path / "r.csv"
    path.write_text(
        "split,depth,point,loss,error\nval,0,a,1.0,0.5\nval,1,b,1.0," + cell + "\n"
        "# keras_probes.ProbeReport end: 2 rows\n"
    )
    with pytest.raises(ValueError) as error:
        kp.ProbeReport.from_csv(path)
    assert f"{path}, line 3" in str(error.value) and message in str(error.value), error.value


def test_csv_infinite_loss_is_refused(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("split,depth,point,loss\nval,0,a,inf\n# keras_probes.ProbeReport end: 1 row\n")
    with pytest.raises(ValueError, match=r"line 2: 'loss' of point 'a' on split 'val' must be a"):
        kp.ProbeReport.from_csv(path)


def test_json_point_missing_a_metric_is_refused_on_load(tmp_path):
    rows = {"a": {"loss": 1.0, "error": 0.5}, "b": {"loss": 1.0}}
    path = _json_report(tmp_path / "r.json", {"val": rows})
    with pytest.raises(ValueError) as error:
        kp.ProbeReport.from_json(path)
    message = str(error.value)
    for part in (str(path), "point 'b'", "split 'val'", "'error'"):
        assert part in message, (part, message)


def test_csv_point_missing_a_metric_is_refused_on_load(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(
        "split,depth,point,loss,error\nval,0,a,1.0,0.5\nval,1,b,1.0,\n"
        "# keras_probes.ProbeReport end: 2 rows\n"
    )
    with pytest.raises(ValueError, match=r"r.csv, line 3: point 'b' on split 'val' has no 'error'"):
        kp.ProbeReport.from_csv(path)


def test_a_metric_of_one_split_only_is_no_missing_metric(tmp_path):
    # Solver diagnostics are on the train split alone: blank elsewhere, and read back.
    report = kp.ProbeReport(
        ["a", "b"],
        {
            "train": {p: {"error": 0.1, "grad_norm": 1e-7} for p in "ab"},
            "val": {p: {"error": 0.2} for p in "ab"},
        },
    )
    report.to_csv(tmp_path / "r.csv")
    assert kp.ProbeReport.from_csv(tmp_path / "r.csv") == report


def test_a_report_built_in_code_missing_a_metric_gives_a_value_error():
    report = kp.ProbeReport(
        ["a", "b"], {"val": {"a": {"loss": 1.0, "error": 0.5}, "b": {"loss": 1.0}}}
    )
    assert report.losses("val") == {"a": 1.0, "b": 1.0}
    for call in (lambda: report.errors("val"), report.table, lambda: report.monotonicity("val")):
        with pytest.raises(ValueError, match=r"point 'b' on split 'val' has no 'error'"):
            call()


def test_csv_with_a_byte_order_mark_loads(tmp_path):
    # Excel's "CSV UTF-8" starts the file with a BOM.
    report = make_report()
    report.to_csv(tmp_path / "r.csv")
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "r.csv").read_bytes())
    assert kp.ProbeReport.from_csv(tmp_path / "bom.csv") == report


def test_json_with_a_byte_order_mark_loads(tmp_path):
    # An editor's "UTF-8 with BOM" (Notepad's default for years).
    report = make_report()
    report.to_json(tmp_path / "r.json")
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "r.json").read_bytes())
    assert kp.ProbeReport.from_json(tmp_path / "bom.json") == report


def test_table_takes_one_split_or_metric_as_a_string():
    report = make_report()
    assert report.table(splits="val") == report.table(splits=["val"])
    assert report.table(metrics="error") == report.table(metrics=["error"])
    assert "test" not in report.table(splits="val")


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"splits": ["train"]}, r"No split 'train' in this report; it has \['val', 'test'\]"),
        ({"splits": "vall"}, r"No split 'vall' in this report; it has \['val', 'test'\]"),
        (
            {"metrics": ["f1"]},
            r"No metric 'f1' on splits \['val', 'test'\]; they have \['loss', 'error', "
            r"'top5_error'\]",
        ),
        ({"splits": [], "metrics": None}, r"`splits` must name at least one split"),
    ],
)
def test_table_refuses_unknown_splits_and_metrics_listing_the_valid_ones(arguments, message):
    with pytest.raises(ValueError, match=message):
        make_report().table(**arguments)
