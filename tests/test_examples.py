"""The examples run end to end (at `--quick` scale) and write what they promise."""

import json
import math
import subprocess
import sys

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
