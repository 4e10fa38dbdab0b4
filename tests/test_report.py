"""ProbeReport: plain data with exact JSON and CSV round trips."""

import functools
import math

import numpy as np
import pytest
from conftest import make_report
from scipy import stats

import keras_probes as kp


def test_from_logs_turns_accuracies_into_errors():
    logs = {"a/loss": 1.5, "a/accuracy": 0.75, "a/top5_accuracy": 0.875, "loss": 1.5}
    report = kp.ProbeReport.from_logs(logs, ["a"], split="val", num_classes=4)
    assert report.errors("val") == {"a": 0.25}
    assert report.top5_errors("val") == {"a": 0.125}
    assert report.losses("val") == {"a": 1.5}


def test_json_round_trip_is_exact(tmp_path):
    report = make_report()
    report.to_json(tmp_path / "r.json")
    assert kp.ProbeReport.from_json(tmp_path / "r.json") == report


def test_csv_round_trip_is_exact(tmp_path):
    report = make_report()
    report.to_csv(tmp_path / "r.csv")
    header = (tmp_path / "r.csv").read_text().splitlines()[0]
    assert header == "split,depth,point,loss,error,top5_error,model,num_classes"
    assert kp.ProbeReport.from_csv(tmp_path / "r.csv") == report
    restored = kp.ProbeReport.from_csv(tmp_path / "r.csv", num_classes=10, model="convnet")
    assert restored == report


def test_json_csv_report_round_trip_keeps_model_and_num_classes(tmp_path):
    report = make_report()
    report.to_json(tmp_path / "r.json")
    kp.ProbeReport.from_json(tmp_path / "r.json").to_csv(tmp_path / "r.csv")
    restored = kp.ProbeReport.from_csv(tmp_path / "r.csv")
    assert (restored.points, restored.results) == (report.points, report.results)
    assert (restored.model, restored.num_classes) == ("convnet", 10)
    assert restored == report
    # Any model name survives the CSV's quoting; unknown ones stay unknown.
    odd = kp.ProbeReport(["a"], {"val": {"a": {"error": 0.5}}}, model='res,"net"\n#1')
    odd.to_csv(tmp_path / "odd.csv")
    assert kp.ProbeReport.from_csv(tmp_path / "odd.csv") == odd
    unknown = kp.ProbeReport(["a"], {"val": {"a": {"error": 0.5}}})
    unknown.to_csv(tmp_path / "unknown.csv")
    assert kp.ProbeReport.from_csv(tmp_path / "unknown.csv") == unknown


def test_from_csv_arguments_fill_in_only_what_the_csv_does_not_say(tmp_path):
    make_report().to_csv(tmp_path / "r.csv")
    with pytest.raises(ValueError, match=r"r.csv says model='convnet'.*Received: model='resnet'"):
        kp.ProbeReport.from_csv(tmp_path / "r.csv", model="resnet")
    with pytest.raises(ValueError, match=r"r.csv says num_classes=10.*Received: num_classes=5"):
        kp.ProbeReport.from_csv(tmp_path / "r.csv", num_classes=5)
    unknown = kp.ProbeReport(["a"], {"val": {"a": {"error": 0.5}}})
    unknown.to_csv(tmp_path / "u.csv")
    filled = kp.ProbeReport.from_csv(tmp_path / "u.csv", num_classes=2, model="m")
    assert (filled.num_classes, filled.model) == (2, "m")


def test_from_csv_refuses_rows_that_disagree_on_the_model(tmp_path):
    make_report().to_csv(tmp_path / "r.csv")
    text = (tmp_path / "r.csv").read_text()
    (tmp_path / "edited.csv").write_text(text.replace("convnet,10", "other,10", 1))
    with pytest.raises(ValueError, match=r"edited.csv, line 3: model 'convnet'.*line 2"):
        kp.ProbeReport.from_csv(tmp_path / "edited.csv")
    for cell in ("ten", "\u00b2", "10.5"):
        (tmp_path / "edited.csv").write_text(text.replace("convnet,10", f"convnet,{cell}", 1))
        with pytest.raises(ValueError, match=r"edited.csv, line 2: num_classes must be an integ"):
            kp.ProbeReport.from_csv(tmp_path / "edited.csv")


def test_to_csv_refuses_a_metric_named_like_a_column(tmp_path):
    report = kp.ProbeReport(["a"], {"val": {"a": {"model": 0.5}}})
    with pytest.raises(ValueError, match=r"metric 'model'.*column"):
        report.to_csv(tmp_path / "r.csv")
    assert not (tmp_path / "r.csv").exists()


def test_json_is_strict_and_keeps_nan(tmp_path):
    report = kp.ProbeReport(["a"], {"s": {"a": {"loss": math.nan, "error": 0.5}}})
    report.to_json(tmp_path / "r.json")
    assert "NaN" not in (tmp_path / "r.json").read_text()
    restored = kp.ProbeReport.from_json(tmp_path / "r.json")
    assert math.isnan(restored.losses("s")["a"]) and restored.errors("s") == {"a": 0.5}


def test_from_json_refuses_other_files(tmp_path):
    (tmp_path / "x.json").write_text('{"format": "something"}')
    with pytest.raises(ValueError, match="Not a ProbeReport"):
        kp.ProbeReport.from_json(tmp_path / "x.json")


def test_table_lists_every_point_in_depth_order():
    table = make_report().table()
    blocks = table.split("\n\n")  # one block per split, in order
    assert [block.splitlines()[0] for block in blocks] == ["split val", "split test"]
    lines = blocks[0].splitlines()
    assert lines[1].split() == ["depth", "point", "loss", "error", "top5_error"]
    assert [line.split()[1] for line in lines[3:6]] == ["conv1", "block/relu", "dense"]
    assert lines[3].split() == ["0", "conv1", "2.0000", "0.5000", "0.2000"]
    assert "monotonicity of val error with depth" in lines[6]
    assert blocks[1].splitlines()[1].split()[2:] == ["loss", "error", "top5_error"]
    assert str(make_report()) == table
    errors_only = make_report().table(splits=["val"], metrics=["error"])
    assert errors_only.splitlines()[0] == "split val"
    assert errors_only.splitlines()[1].split() == ["depth", "point", "error"]


def test_table_of_a_typical_report_fits_100_columns():
    # MobileNet's 14 points, three splits, three metrics: was 146 characters wide.
    points = ["conv1_relu", *(f"conv_pw_{i}_relu" for i in range(1, 14))]
    rows = {p: {"loss": 12.3456 / (i + 1), "error": 0.9 - 0.05 * i, "top5_error": 0.5 / (i + 1)}
            for i, p in enumerate(points)}  # fmt: skip
    report = kp.ProbeReport(points, {s: rows for s in ("train", "val", "test")}, 10, "mobilenet")
    table = report.table()
    assert max(len(line) for line in table.splitlines()) <= 100, table
    for point in points:
        assert table.count(f" {point} ") == 3  # a row per split
    assert "12.3456" in table and "0.0357" in table  # every figure, with its digits


def test_monotonicity():
    report = make_report()
    assert report.monotonicity("val") == pytest.approx(1.0)
    assert math.isnan(report.monotonicity("test"))  # all equal: undefined
    rising = kp.ProbeReport(
        ["a", "b", "c"],
        {"s": {p: {"error": e} for p, e in zip("abc", [0.1, 0.2, 0.3], strict=True)}},
    )
    assert rising.monotonicity("s") == pytest.approx(-1.0)
    kink = kp.ProbeReport(
        list("abcd"),
        {"s": {p: {"error": e} for p, e in zip("abcd", [0.4, 0.2, 0.3, 0.1], strict=True)}},
    )
    assert 0 < kink.monotonicity("s") < 1


def test_merge_adds_splits():
    report = make_report()
    other = kp.ProbeReport(report.points, {"train": report.results["val"]})
    merged = report.merge(other)
    assert merged.splits == ["val", "test", "train"]
    assert merged.num_classes == 10
    with pytest.raises(ValueError, match="different probe points"):
        report.merge(kp.ProbeReport(["x"], {}))


def test_unknown_split_or_metric():
    report = make_report()
    with pytest.raises(ValueError, match=r"No split 'train'.*\['val', 'test'\]"):
        report.errors("train")
    with pytest.raises(ValueError, match="No metric 'f1'"):
        report.values("val", "f1")


def test_evaluate_probes_report(convnet, digits):
    _, _, xt, yt = digits
    probed = kp.ProbedModel(convnet, points=["relu1", "relu2"], num_classes=10)
    report = probed.evaluate_probes(xt[:100], yt[:100], split="test", verbose=0)
    assert report.points == probed.points and report.splits == ["test"]
    assert report.model == convnet.name and report.num_classes == 10
    for point in report.points:
        # Untrained zero-initialised probes predict uniformly: loss log(10).
        assert report.losses("test")[point] == pytest.approx(math.log(10), rel=1e-5)
        assert 0 <= report.top5_errors("test")[point] <= report.errors("test")[point] <= 1


@pytest.mark.parametrize(
    "text, message",
    [
        ("[1, 2]", "not a JSON object"),
        ('{"format": "keras_probes.ProbeReport", "version": 1}', "'points'"),
        ('{"format": "keras_probes.ProbeReport", "version": 1, "points": "ab", "results": {},'
         ' "model": null, "num_classes": null}', "'points' must be a list of strings"),
        ('{"format": "keras_probes.ProbeReport", "version": 1, "points": ["a"], "model": null,'
         ' "num_classes": null, "results": {"val": {"b": {"error": 0.5}}}}', "unknown point 'b'"),
        ('{"format": "keras_probes.ProbeReport", "version": 1, "points": ["a"], "model": null,'
         ' "num_classes": null, "results": {"val": {"a": {"error": "high"}}}}',
         "'error' of point 'a' on split 'val' must be a number"),
        ('{"format": "keras_probes.ProbeReport", "version": 1, "points": ["a"], "model": null,'
         ' "num_classes": 2.5, "results": {}}', "'num_classes' must be an integer"),
        ('{"format": "keras_probes.ProbeReport", "version": 1, "points": ["a"], "model": null,'
         ' "num_classes": null, "results": {"val": []}}', "split 'val' must be an object"),
        ("{not json", "not valid JSON"),
    ],
)  # fmt: skip
def test_from_json_names_the_file_and_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        kp.ProbeReport.from_json(path)
    assert str(path) in str(error.value) and message in str(error.value), str(error.value)


def _csv_prefixes(text):
    """Every strict prefix of `text` worth trying: each line boundary and mid-line cuts."""
    cuts = {len(text) - 1, len(text) - 2}
    position = 0
    for line in text.splitlines(keepends=True):
        cuts.update({position, position + 1, position + len(line) // 2})
        position += len(line)
    return sorted(c for c in cuts if 0 <= c < len(text))


def test_from_csv_refuses_a_csv_truncated_anywhere(tmp_path):
    report = make_report()
    report.to_csv(tmp_path / "r.csv")
    text = (tmp_path / "r.csv").read_bytes().decode()
    assert kp.ProbeReport.from_csv(tmp_path / "r.csv", 10, "convnet") == report
    boundary = text.index("\ntest,") + 1  # exactly where the second split starts
    assert boundary in _csv_prefixes(text)
    for cut in _csv_prefixes(text):
        (tmp_path / "cut.csv").write_text(text[:cut], newline="")
        with pytest.raises(ValueError, match="cut.csv") as error:
            kp.ProbeReport.from_csv(tmp_path / "cut.csv")
        assert "truncated" in str(error.value) or "empty" in str(error.value), (cut, error)


def test_csv_stays_readable_by_pandas(tmp_path):
    import pandas

    make_report().to_csv(tmp_path / "r.csv")
    frame = pandas.read_csv(tmp_path / "r.csv", comment="#")
    assert list(frame.columns) == [
        *["split", "depth", "point", "loss", "error", "top5_error", "model", "num_classes"]
    ]
    assert len(frame) == 6 and frame["error"].notna().all()
    assert set(frame["model"]) == {"convnet"} and set(frame["num_classes"]) == {10}


def test_from_csv_refuses_a_csv_without_the_end_line(tmp_path):
    # As written before reports carried one: refused, with the line that completes it.
    old = tmp_path / "old.csv"
    old.write_text("split,depth,point,error\r\nval,0,a,0.5\r\n", newline="")
    with pytest.raises(ValueError, match=r"old.csv has no end line") as error:
        kp.ProbeReport.from_csv(old)
    end_line = str(error.value).rsplit("append the line ", 1)[1].strip("'.")
    assert end_line == "# keras_probes.ProbeReport end: 1 row"
    old.write_text(old.read_text() + end_line + "\n")
    assert kp.ProbeReport.from_csv(old) == kp.ProbeReport(["a"], {"val": {"a": {"error": 0.5}}})


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("a,b\r\n# keras_probes.ProbeReport end: 0 rows\r\n", "must start with the columns"),
        ("split,depth,point,error\r\nval,x,a,0.5\r\n# keras_probes.ProbeReport end: 1 row\r\n",
         "line 2"),
        ("split,depth,point,error\r\nval,0,a,bad\r\n# keras_probes.ProbeReport end: 1 row\r\n",
         "line 2"),
        ("split,depth,point,error\r\nval,0,a,0.5\r\n# keras_probes.ProbeReport end: 2 rows\r\n",
         "truncated"),
    ],
)  # fmt: skip
def test_from_csv_names_the_line_that_is_wrong(tmp_path, text, message):
    (tmp_path / "r.csv").write_text(text, newline="")
    with pytest.raises(ValueError, match=message):
        kp.ProbeReport.from_csv(tmp_path / "r.csv")


def test_from_csv_advice_works_on_a_hand_edited_csv(tmp_path):
    # A blank line, a comment, and the end line with a trailing space: still read, and the
    # row count the advice gives is the number of data rows.
    make_report().to_csv(tmp_path / "r.csv")
    lines = (tmp_path / "r.csv").read_text().splitlines()
    spaced = "\n".join([*lines[:2], "", *lines[2:-1], lines[-1] + " "]) + "\n"
    (tmp_path / "spaced.csv").write_text(spaced)
    assert kp.ProbeReport.from_csv(tmp_path / "spaced.csv").results == make_report().results
    commented = "\n".join([*lines[:-1], "# my note"]) + "\n"
    (tmp_path / "commented.csv").write_text(commented)
    with pytest.raises(ValueError, match="append the line") as error:
        kp.ProbeReport.from_csv(tmp_path / "commented.csv")
    end_line = str(error.value).rsplit("append the line ", 1)[1].strip("'.")
    (tmp_path / "commented.csv").write_text("\n".join(lines[:-1]) + "\n" + end_line + "\n")
    assert kp.ProbeReport.from_csv(tmp_path / "commented.csv").results == make_report().results


def test_history_files_that_are_not_histories_are_refused_naming_the_file(tmp_path):
    history = kp.ProbeHistory(["a", "b"], num_classes=10, model="m")
    history.append(0, 0.0, {"val_error": {"a": 0.5, "b": 0.25}})
    history.to_json(tmp_path / "h.json")
    text = (tmp_path / "h.json").read_text()
    (tmp_path / "cut.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"history file .*cut.json is corrupt: it is not valid"):
        kp.ProbeHistory.from_json(tmp_path / "cut.json")
    make_report().to_json(tmp_path / "report.json")
    with pytest.raises(ValueError, match=r"report.json is not a readable ProbeHistory"):
        kp.ProbeHistory.from_json(tmp_path / "report.json")
    assert kp.ProbeHistory.from_json(tmp_path / "h.json") == history


# -- each held-out example's outcome: intervals, paired tests, runs ---------------


@functools.cache
def _fitted(seed=0, n_test=400, tokens_per_sequence=None):
    """A report of two probes fitted by fit_each on simulated features: the deeper one
    ("noisy") sees the signal through noise. (Cached: tests only read it.)"""
    from keras_probes.fitting import fit_each
    from keras_probes.tasks import Classification

    rng = np.random.default_rng(seed)
    sizes = {"train": 300, "test": n_test}
    x = {s: rng.normal(size=(n, 4)) for s, n in sizes.items()}
    y = {s: (x[s][:, 0] + 0.5 * rng.normal(size=len(x[s])) > 0).astype(int) for s in x}
    noise = {s: 2 * rng.normal(size=x[s].shape) for s in x}
    features = {"clean": x, "noisy": {s: x[s] + noise[s] for s in x}}
    examples = None
    if tokens_per_sequence is not None:
        sequences = np.arange(n_test) // tokens_per_sequence
        examples = {"test": kp.outcomes.Examples("simulated", sequences)}.get
    return fit_each(
        kp.solvers.LBFGSProbe(),
        Classification(2),
        ["clean", "noisy"],
        lambda split, point: features[point][split],
        y,
        examples=examples,
        verbose=0,
    )


def test_held_out_splits_keep_each_examples_outcome_and_the_figures_are_their_means():
    report = _fitted()
    assert list(report.outcomes) == ["test"]  # not the train split
    for point in report.points:
        kept = report.outcomes["test"][point]
        assert len(kept) == 400
        # The report's error is 1 - accuracy: the count's mean up to one rounding.
        assert report.errors("test")[point] == pytest.approx(np.mean(~kept.correct), abs=1e-15)
        assert report.top5_errors("test")[point] == pytest.approx(np.mean(~kept.top5), abs=1e-15)
        assert report.losses("test")[point] == pytest.approx(kept.loss.mean(), rel=1e-6)
    assert report.examples["test"].fingerprint  # from the labels and the first point's rows


def test_interval_compare_and_monotonicity_read_from_the_outcomes():
    report = _fitted()
    low, high = report.interval("test", "clean")
    assert low < report.errors("test")["clean"] < high
    errors = ~report.outcomes["test"]["clean"].correct
    wilson = stats.binomtest(int(errors.sum()), len(errors)).proportion_ci(method="wilson")
    assert (low, high) == pytest.approx((wilson.low, wilson.high), abs=1e-12)
    c = report.compare("test", "clean", "noisy")
    difference = report.errors("test")["clean"] - report.errors("test")["noisy"]
    assert c.difference == pytest.approx(difference, abs=1e-15)
    assert c.low < c.difference < c.high and c.pvalue < 1e-3 and c.significant()
    assert c.test == "McNemar exact" and (c.a, c.b, c.split, c.metric) == (
        "clean",
        "noisy",
        "test",
        "error",
    )
    loss = report.compare("test", "clean", "noisy", metric="loss")
    assert loss.test == "paired bootstrap" and loss.high < 0
    tau, low, high = report.monotonicity("test", level=0.95)
    assert tau == report.monotonicity("test") == -1.0 and low <= tau <= high
    (pair,) = report.compare_adjacent("test")
    assert pair.adjusted_pvalue == pair.pvalue  # one pair: Holm changes nothing
    # The same report gives the same bootstrap interval (seeded).
    assert report.interval("test", "noisy", "loss") == _fitted().interval("test", "noisy", "loss")


def test_intervals_of_every_point_at_once_equal_each_points_interval():
    report = _fitted(tokens_per_sequence=4)
    for metric in ("error", "loss"):
        intervals = report.intervals("test", metric)
        assert list(intervals) == report.points
        for point in report.points:
            expected = report.interval("test", point, metric)
            assert intervals[point] == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_compare_with_a_control_needs_the_same_examples():
    report, control = _fitted(seed=0), _fitted(seed=0)
    c = report.compare("test", "clean", other=control)
    assert (c.difference, c.pvalue) == (0.0, 1.0) and c.b == "clean (other)"
    with pytest.raises(ValueError, match="other examples of split 'test'.*same data"):
        report.compare("test", "clean", other=_fitted(seed=1))
    with pytest.raises(ValueError, match="one or the other"):
        report.compare("test", "clean", "noisy", other=control)
    with pytest.raises(ValueError, match="one or the other"):
        report.compare("test", "clean")


def test_figures_without_outcomes_are_refused_in_one_line():
    report = _fitted()
    with pytest.raises(ValueError, match="keeps no outcomes for split 'train'.*held-out"):
        report.interval("train", "clean")
    with pytest.raises(ValueError, match="keeps no outcomes for split 'val' \\(none kept\\)"):
        make_report().interval("val", "conv1")
    with pytest.raises(ValueError, match="give \\['loss', 'error', 'top5_error'\\], not 'r2'"):
        report.interval("test", "clean", metric="r2")
    with pytest.raises(ValueError, match="no outcomes of point 'dense'"):
        report.interval("test", "dense")
    with pytest.raises(ValueError, match="`level` must be a confidence level in \\(0, 1\\)"):
        report.interval("test", "clean", level=95)
    with pytest.raises(ValueError, match="Received: level=1.0"):
        report.interval("test", "clean", level=1.0)


def test_per_token_outcomes_resample_whole_sequences():
    # 100 sequences of 4 tokens: the interval of a sequence-level figure is wider
    # than one that takes the 400 tokens as independent.
    report = _fitted(tokens_per_sequence=4)
    tokens = _fitted()
    assert report.outcomes["test"] == tokens.outcomes["test"]
    low, high = report.interval("test", "noisy", "loss")
    token_low, token_high = tokens.interval("test", "noisy", "loss")
    assert (low, high) != (token_low, token_high)
    assert report.compare("test", "clean", "noisy").test == "clustered z"


def test_outcomes_round_trip_through_json_and_csv(tmp_path):
    report = _fitted(tokens_per_sequence=5)
    report.to_json(tmp_path / "r.json")
    report.to_csv(tmp_path / "r.csv")
    for back in (
        kp.ProbeReport.from_json(tmp_path / "r.json"),
        kp.ProbeReport.from_csv(tmp_path / "r.csv"),
    ):
        assert back == report
        assert back.interval("test", "noisy") == report.interval("test", "noisy")
        assert back.compare("test", "clean", "noisy") == report.compare("test", "clean", "noisy")
    header = (tmp_path / "r.csv").read_text().splitlines()[0]
    assert header.endswith("model,num_classes,outcomes,fingerprint,sequences")


def test_altered_outcomes_are_refused_on_load(tmp_path):
    report = _fitted()
    data = report.to_dict()
    text = data["outcomes"]["test"]["points"]["clean"]
    data["outcomes"]["test"]["points"]["clean"] = text[:-8]
    with pytest.raises(ValueError, match="outcomes of split 'test' are unreadable"):
        kp.ProbeReport.from_dict(data)
    data["outcomes"]["test"]["points"]["clean"] = "not base64!"
    with pytest.raises(ValueError, match="not base64"):
        kp.ProbeReport.from_dict(data)


def test_merge_and_selectivity_keep_the_outcomes():
    report = _fitted()
    bare = kp.ProbeReport(report.points, {"val": report.results["test"]})
    merged = bare.merge(report)
    assert merged.outcomes == report.outcomes and merged.examples == report.examples
    assert report.merge(bare).outcomes == report.outcomes
    replaced = kp.ProbeReport(report.points, {"test": report.results["test"]})
    assert report.merge(replaced).outcomes == {}  # the split's figures come from `replaced`
    assert report.with_selectivity(report, "test").outcomes == report.outcomes


def test_combine_gives_the_mean_and_spread_over_runs(tmp_path):
    runs = [_fitted(seed=s) for s in range(3)]
    combined = kp.ProbeReport.combine(runs)
    for point in combined.points:
        values = [r.errors("test")[point] for r in runs]
        assert combined.errors("test")[point] == pytest.approx(np.mean(values), abs=1e-15)
        assert combined.spread("test")[point] == pytest.approx(np.std(values, ddof=1))
    assert "±" in combined.table(intervals=True)
    combined.to_json(tmp_path / "c.json")
    assert kp.ProbeReport.from_json(tmp_path / "c.json") == combined
    assert math.isnan(kp.ProbeReport.combine(runs[:1]).spread("test")["clean"])
    with pytest.raises(ValueError, match="not a combination of runs"):
        runs[0].spread("test")
    with pytest.raises(ValueError, match="different probe points"):
        kp.ProbeReport.combine([runs[0], make_report()])


def test_table_shows_the_intervals_where_outcomes_are_kept():
    report = _fitted()
    low, high = report.interval("test", "clean")
    table = report.table(intervals=True)
    assert f"{report.errors('test')['clean']:.4f} [{low:.4f}, {high:.4f}]" in table
    assert "(95%, bootstrap)" in table
    assert "[" not in report.table(splits="train", intervals=True)  # no outcomes there


def test_regression_reports_keep_targets_and_predictions():
    from keras_probes.fitting import fit_each
    from keras_probes.tasks import Regression

    rng = np.random.default_rng(0)
    x = {s: rng.normal(size=(n, 3)) for s, n in (("train", 200), ("test", 150))}
    y = {s: x[s][:, 0] + rng.normal(size=len(x[s])) for s in x}
    report = fit_each(
        kp.solvers.RidgeProbe(1.0),
        Regression(["area"]),
        ["a"],
        lambda split, point: x[split],
        y,
        verbose=0,
    )
    kept = report.outcomes["test"]["a"]
    columns, statistic = kept.columns("area_r2")
    assert statistic(columns.mean(0)) == pytest.approx(report.values("test", "area_r2")["a"])
    low, high = report.interval("test", "a", "area_r2")
    assert low < report.values("test", "area_r2")["a"] < high
