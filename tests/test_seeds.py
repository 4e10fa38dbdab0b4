"""`reproductions/seeds.py`: each study at every seed, claims counted over them; a
second run reads what the first wrote instead of training again, and a run of one
study keeps the other studies' summaries."""

import json

import numpy as np
import pytest
from conftest import run_reproduction


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
