"""The examples run end to end (at `--quick` scale) and write what they promise."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

import keras_probes as kp


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, num_points",
    [("quickstart", 11), ("mobilenet_imagenette", 14), ("code_tokens", 3)],
)
def test_example_runs_and_writes_its_report_and_figure(name, num_points, tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / f"{name}.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = kp.ProbeReport.from_json(tmp_path / f"{name}_report.json")
    assert len(report.points) == num_points
    for split in report.splits:
        assert all(0 <= e <= 1 for e in report.errors(split).values())
    assert (tmp_path / f"{name}_errors.png").read_bytes()[:4] == b"\x89PNG"
    assert report.points[0] in result.stdout  # the table is printed
    # Every split is held out and keeps its examples' outcomes: each error has its
    # interval, from the report alone.
    for split in report.splits:
        for point, error in report.errors(split).items():
            low, high = report.interval(split, point)
            assert low <= error <= high, (split, point, low, error, high)
    table = (tmp_path / f"{name}_table.txt").read_text()
    assert f"{report.errors(report.splits[0])[report.points[0]]:.4f} [" in table, table
    if name == "code_tokens":
        check_code_tokens(json.loads((tmp_path / "code_tokens.json").read_text()), report)


def check_code_tokens(record, report):
    """code_tokens.json: each test error's interval, the paired tests of the README's claims."""
    assert record["level"] == 0.95
    assert set(record["test_error_intervals"]) == set(report.splits)
    tau, low, high = record["monotonicity_trained"]
    assert -1 <= low <= high <= 1 and (-1 <= tau <= 1 or math.isnan(tau))
    tests = record["paired_tests"]
    assert set(tests) >= {
        "trained minus untrained error",
        "selectivity, trained",
        "selectivity, untrained",
        "trained error, each point minus the one before",
    }
    for point, comparison in tests["selectivity, trained"].items():
        # Selectivity = control task error - error, on the same characters.
        assert comparison["difference"] == pytest.approx(
            report.values("trained", "selectivity")[point], abs=1e-6
        )
        assert comparison["low"] <= comparison["difference"] <= comparison["high"]
        # Windows, not characters, are resampled: the clustered test.
        assert "cluster" in comparison["test"].lower(), comparison["test"]
        assert comparison["significant"] == (comparison["adjusted_pvalue"] < 0.05)
    # The names' roles: the probes' classes; non-names are no rows.
    assert record["roles"] == [
        "definition",
        "parameter",
        "keyword",
        "import",
        "call",
        "attribute",
        "store",
        "load",
    ]
    assert report.num_classes == len(record["roles"])
    assert sum(record["role_frequencies"]["test"]) == pytest.approx(1)
    assert record["names"]["test"] == sum(e["names"] for e in record["files"]["test"])
    # The capacity path: at every penalty, selectivity per point with its interval, and
    # the real and control task's reports.
    path = record["capacity_path"]
    assert len(path) >= 2
    for step in path.values():
        assert set(step["selectivity"]) == set(report.points)
        for comparison in step["selectivity"].values():
            assert comparison["low"] <= comparison["difference"] <= comparison["high"]
            assert "cluster" in comparison["test"].lower(), comparison["test"]
        real, control = (kp.ProbeReport.from_dict(step[task]) for task in ("real", "control"))
        for point, comparison in step["selectivity"].items():
            selectivity = control.errors("test")[point] - real.errors("test")[point]
            assert comparison["difference"] == pytest.approx(selectivity, abs=1e-6)
    assert "selectivity, each penalty minus the stronger one before" in tests
    # The online code of the real and the control task, per point.
    if hasattr(kp.controls, "description_length"):
        mdl = record["description_length"]
        for task in ("real", "control"):
            assert set(mdl[task]) == set(report.points)
            for figures in mdl[task].values():
                assert len(figures["compression"]) == len(mdl["orders"])
                ratios = np.divide(figures["uniform_codelength"], figures["codelength"])
                assert figures["compression"] == pytest.approx(ratios)


@pytest.mark.slow
def test_tcav_example_runs_and_writes_its_report_figure_and_record(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tcav_mobilenet.py"), "--quick"]
        + ["--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = kp.attribution.TCAVReport.from_json(tmp_path / "tcav_mobilenet_report.json")
    concepts = ["striped", "zigzag", "checkered", "dotted", "green", "blue", "white", "random"]
    assert report.concepts == concepts
    assert len(report.points) == 2 and len(report.targets) == 2  # --quick
    assert len(report.results) == len(concepts) * 2 * 2
    for r in report.results:  # 2 runs each; every p-value Holm-adjusted over all the tests
        assert len(r.scores) == len(r.random_scores) == 2
        assert 0 <= r.score <= 1 and 0 <= r.random_score <= 1
        assert math.isnan(r.pvalue) or r.pvalue <= r.adjusted_pvalue <= 1
    record = json.loads((tmp_path / "tcav_mobilenet.json").read_text())
    assert record["results"] == [r.to_dict() for r in report.results]
    # The real image sets are disjoint: colour concepts, the random concept, the random pool.
    sets = [record["concepts"][c]["images"] for c in ("green", "blue", "white", "random")]
    sets.append(record["random_images"])
    assert len(set().union(*sets)) == sum(len(s) for s in sets)
    for colour in ("green", "blue", "white"):
        figures = record["concepts"][colour]
        assert len(figures["images"]) == 8 and figures["lowest"] > figures["median_all"]
    sanity = record["sanity_check"]
    assert sanity["tests"] == 4
    assert sanity["significant"] == sum(
        r.significant() for r in report.results if r.concept == "random"
    )
    assert (tmp_path / "tcav_mobilenet.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "tcav_mobilenet_table.txt").read_text()
    assert "Sanity check" in table and "Sanity check" in result.stdout
    assert set(record["seconds"]) >= {"tcav_report", "total"}
