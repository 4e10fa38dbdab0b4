"""`reproductions/seeds.py`: each study at every seed, claims counted over them; a
second run reads what the first wrote instead of training again, and a run of one
study keeps the other studies' summaries."""

import importlib.util
import json
import sys

import numpy as np
import pytest
from conftest import ROOT, run_reproduction
from scipy import stats

import keras_probes as kp


def load_seeds():
    """reproductions/seeds.py as a module (its main not run)."""
    sys.path.insert(0, str(ROOT / "reproductions"))
    spec = importlib.util.spec_from_file_location(
        "reproduction_seeds", ROOT / "reproductions" / "seeds.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probe_figures_are_combined_reports_and_claims_are_tested():
    seeds = load_seeds()
    rng = np.random.default_rng(0)
    # Four toy datasets of 9 points: the error rises with depth, noisily.
    errors = np.clip(np.linspace(0.02, 0.45, 9) + rng.normal(0, 0.03, (4, 9)), 0, 1)
    points = ["x", *(f"layer_{i}" for i in range(1, 9))]
    results = {"points": points, "test_error_per_dataset": errors.tolist()}
    summary = seeds.summarize(seeds.STUDIES["toy"], {0: {"command": "toy", "results": results}})

    reports = [
        kp.ProbeReport(
            points, {"test": {p: {"error": e} for p, e in zip(points, row, strict=True)}}
        )
        for row in errors.tolist()
    ]
    combined = kp.ProbeReport.combine(reports)
    for name, point in (("error at the input", "x"), ("error at the last layer", "layer_8")):
        figure = summary["figures"][name]
        assert figure["mean"] == combined.errors("test")[point]
        assert figure["std"] == combined.spread("test")[point]
        assert figure["values"] == [row[points.index(point)] for row in errors.tolist()]

    # Each claim: the paired t-test of its two figures over the replicates, and the sign test.
    claim = summary["claims"][0]  # the input's error below a quarter of the depth's
    test = claim["over_replicates"]
    lower, higher = errors[:, 0], errors[:, 2]
    expected = stats.ttest_rel(higher, lower)
    assert test["pvalue"] == pytest.approx(expected.pvalue)
    assert test["statistic"] == pytest.approx(expected.statistic)
    interval = expected.confidence_interval(0.95)
    assert (test["low"], test["high"]) == pytest.approx((interval.low, interval.high))
    assert test["sign_pvalue"] == pytest.approx(stats.binomtest(4, 4).pvalue)  # 0.125
    assert test["significant"] == (expected.pvalue < 0.05)


@pytest.mark.slow
def test_seeds_spread_and_resume(tmp_path):
    only = ["--only", "toy", "true_vs_corrupted", "--seeds", "3", "4"]
    payload, stdout = run_reproduction("seeds", tmp_path, *only)
    studies = payload["results"]["studies"]
    assert list(studies) == ["toy", "true_vs_corrupted"]

    # The toy's replicates are the datasets of one run (its first seed); the
    # MLP's are its seeds, each run with its own seed into its own folder.
    toy, mlp = studies["toy"], studies["true_vs_corrupted"]
    assert toy["seeds"] == [3] and toy["replicates"] == 3
    assert mlp["seeds"] == [3, 4] and mlp["replicates"] == 2
    for seed in (3, 4):
        run = json.loads(
            (tmp_path / "seeds" / "true_vs_corrupted" / f"seed{seed}" / "true_vs_corrupted.json")
            .read_text()
        )  # fmt: skip
        assert run["seed"] == seed and run["quick"] is True
        curves = run["results"]["curves"]
        epoch = next((e for e, v in enumerate(curves["clean_accuracy"]) if v >= 0.5), 4)
        values = mlp["figures"]["epoch at 50%, true-label part"]["values"]
        assert values[seed - 3] == epoch

    for study in studies.values():
        for figure in study["figures"].values():
            values = np.array(figure["values"])
            assert len(values) == study["replicates"]
            assert figure["min"] <= figure["mean"] <= figure["max"]
            assert figure["mean"] == pytest.approx(values.mean())
        for claim in study["claims"]:
            margins = np.array(claim["margin"]["values"])
            assert claim["of"] == study["replicates"] and claim["holds"] == np.sum(margins > 0)
            lower, higher = (study["figures"][claim[k]]["values"] for k in ("lower", "higher"))
            np.testing.assert_allclose(margins, np.subtract(higher, lower))
    # 500 separable points: every toy dataset's error rises over depth.
    assert studies["toy"]["claims"][0]["holds"] == 3

    # Again: every run is read back, none retrained; the same summary.
    again, stdout = run_reproduction("seeds", tmp_path, *only, timeout=300)
    assert "running" not in stdout and stdout.count(": read ") == 3
    assert again["results"] == payload["results"]
    # One study alone updates its summary and keeps the others'.
    alone, stdout = run_reproduction("seeds", tmp_path, "--only", "toy", "--seeds", 3, timeout=300)
    assert "running" not in stdout and stdout.count(": read ") == 1
    assert alone["results"] == payload["results"]
