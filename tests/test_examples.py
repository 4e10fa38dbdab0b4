"""The examples run end to end (at `--quick` scale) and write what they promise."""

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
