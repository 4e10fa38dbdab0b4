"""The reproductions of Alain & Bengio run end to end at `--quick` scale and
write what they promise: sane values under the expected keys."""

import numpy as np
import pytest
from conftest import run_reproduction

import keras_probes as kp


@pytest.mark.slow
def test_toy(tmp_path):
    payload, stdout = run_reproduction("toy", tmp_path)
    results = payload["results"]
    assert len(results["points"]) == 33  # the input and 32 layers
    test = np.array(results["test_error_per_dataset"])
    assert test.shape == (3, 33) and np.all((test >= 0) & (test <= 1))
    mean = np.array(results["test_error_mean"])
    # The input is linearly separable; 32 random layers leave close to a coin flip,
    # every layer worse than the one before (monotonicity -1: error rises with depth).
    assert mean[0] < 0.2 and mean[-1] > 0.4 and results["monotonicity"] < -0.5
    assert payload["paper_vs_ours"][0]["ours"].startswith(f"{mean[0]:.3f} [")
    assert "paper" in stdout and "ours" in stdout
    # The mean over datasets with its interval (a bootstrap over the datasets), the
    # spread as kp.ProbeReport.combine gives it, each step tested (paired t, Holm).
    for value, (low, high) in zip(mean, results["test_error_mean_interval"], strict=True):
        assert low <= value <= high
    np.testing.assert_allclose(results["test_error_std"], test.std(0, ddof=1))
    assert len(results["steps"]) == 32
    for step in results["steps"]:
        assert step["low"] <= step["difference"] <= step["high"]
        assert step["pvalue"] <= step["adjusted_pvalue"] <= 1
    low, high = results["monotonicity_interval"]
    assert low <= results["monotonicity"] <= high


@pytest.mark.slow
def test_mnist_convnet(tmp_path):
    payload, _ = run_reproduction("mnist_convnet", tmp_path)
    results = payload["results"]
    assert results["points"][0] == "input" and results["points"][-1] == "logits"
    assert "offline" in results["data_source"] or "official" in results["data_source"]
    report = kp.ProbeReport.from_dict(results["report"])
    assert report.splits == [
        "after initialisation",
        "after initialisation (validation)",
        "after initialisation, at the optimum",
        "after 1 epochs",
        "after 1 epochs (validation)",
        "after 1 epochs, at the optimum",
    ]
    for split in report.splits:
        assert all(0 <= e <= 1 for e in report.errors(split).values())
    # Both protocols: L-BFGS on the cache, its penalty chosen per point among PENALTIES.
    for rows in results["optimum"].values():
        assert list(rows) == results["points"]
        for row in rows.values():
            assert row["l2"] in (1e-2, 1e-3, 1e-4) and np.isfinite(row["grad_norm"])
            assert 0 <= row["validation_error"] <= 1
    # A linear classifier on pixels does far better than chance even from 1,000 digits.
    assert results["test_error_init"]["input"] < 0.5
    assert 0 <= results["model_test_error"] <= 1
    low, high = results["model_test_error_interval"]
    assert low <= results["model_test_error"] <= high
    # At the optimum (LBFGSProbeCV), the test outcomes are kept: intervals and paired tests.
    for split in ("after initialisation, at the optimum", "after 1 epochs, at the optimum"):
        for point, error in report.errors(split).items():
            low, high = report.interval(split, point)
            assert low <= error <= high
    better = results["comparisons"]["trained - initialisation, at the optimum"]
    assert list(better) == results["points"]
    for point, c in better.items():
        expected = results["optimum"]["after 1 epochs"][point]["error"]
        expected -= results["optimum"]["after initialisation"][point]["error"]
        assert c["difference"] == pytest.approx(expected)
        assert c["test"] == "McNemar exact" and c["pvalue"] <= c["adjusted_pvalue"]
    adjacent = results["comparisons"]["each point - the one before, trained, at the optimum"]
    assert len(adjacent) == len(results["points"]) - 1


@pytest.mark.slow
def test_pathological(tmp_path):
    payload, _ = run_reproduction("pathological", tmp_path, "--variants", "plain", "aux", "skip")
    results = payload["results"]
    for variant in ("plain", "aux", "skip"):
        history = kp.ProbeHistory.from_dict(results[variant]["history"])
        assert history.points == ["input", *(f"layer_{i}" for i in range(1, 17))]
        assert history.steps == [0, *results["schedule"]]  # before training, then the schedule
        for metric in ("train_error", "val_error"):
            errors = history.matrix(metric)
            assert np.all((errors >= 0) & (errors <= 1))
            assert np.all(errors[0] == errors[0, 0])  # the input never changes
        assert (tmp_path / f"pathological_{variant}.gif").read_bytes()[:6] == b"GIF89a"
        # The history was also written as it was measured.
        saved = kp.ProbeHistory.from_json(tmp_path / f"pathological_{variant}_history.json")
        assert saved == history
        # The main output's errors at the probes' moments.
        curve = results["model_curves"][variant]
        assert curve["steps"] == history.steps
        assert curve["train_error"][-1] == results["model_train_error"][variant]
        assert curve["val_error"][-1] == results["model_val_error"][variant]
    assert set(results["model_train_error"]) == {"plain", "aux", "skip"}
    assert set(results["model_val_error"]) == {"plain", "aux", "skip"}
    assert all(0 <= e <= 1 for e in results["model_val_error"].values())
    assert 0 <= results["skip"]["mean_train_error_layers_1_to_half"] <= 1
    assert "LeakyReLU(0.2)" not in results["architecture"]  # the setting pathological_depth chose
    # Every error with its 95% Wilson interval: the model's, and the probes' at the end,
    # train (the paper's figures) and held out.
    for split in ("train", "val"):
        for variant, (low, high) in results[f"model_{split}_error_interval"].items():
            assert low <= results[f"model_{split}_error"][variant] <= high
    assert results["probe_train_examples"] == results["probe_held_out_examples"] == 300
    for variant in ("plain", "aux", "skip"):
        for split in ("train", "val"):
            final = results[variant][f"final_{split}_error"]
            for point, (low, high) in results[variant][f"final_{split}_error_interval"].items():
                assert low - 1e-12 <= final[point] <= high + 1e-12  # Wilson's bound at 0: ~1e-18


@pytest.mark.slow
def test_pathological_sweep(tmp_path):
    payload, _ = run_reproduction("pathological_sweep", tmp_path)
    results = payload["results"]
    assert set(results["best"]) == {"plain", "aux", "skip"}
    for variant, runs in results["curves"].items():
        assert len(runs) == 2  # --quick: two learning rates, momentum 0.9
        for curve in runs.values():
            assert curve["steps"] == [10, 20]
            assert all(0 <= e <= 1 for e in curve["train_error"])
        best = results["best"][variant]
        assert best["train_error"][-1] == min(c["train_error"][-1] for c in runs.values())


@pytest.mark.slow
def test_pathological_depth(tmp_path):
    payload, _ = run_reproduction("pathological_depth", tmp_path)
    results = payload["results"]
    ladders, runs = results["ladders"], results["runs"]
    # --quick: 2 slopes x 1 learning rate, then 4 changes of one choice, then 2 refined,
    # then the chosen one trained longer.
    stages = ["coarse"] * 2 + ["choices"] * 4 + ["refine"] * 2 + ["long"]
    assert [lad["stage"] for lad in ladders] == stages
    for ladder in ladders:
        figures = [runs[name] for name in ladder["runs"]]
        assert ladder["depths"] == [r["depth"] for r in figures]
        assert ladder["depths"] == sorted(ladder["depths"]) and ladder["depths"]
        # A ladder stops at its first failure; its breakdown depth is the deepest trained.
        failed = [r["train_error"] >= results["fail_at"] for r in figures]
        assert not any(failed[:-1])
        assert ladder["first_failing"] == (ladder["depths"][-1] if failed[-1] else None)
        trained = ladder["depths"][:-1] if failed[-1] else ladder["depths"]
        assert ladder["deepest_trained"] == (trained[-1] if trained else None)
        for r in figures:
            assert r["steps"] == ladder["steps"] and r["slope"] == ladder["setting"]["slope"]
            assert r["curve"]["steps"][-1] == r["steps"] and len(r["curve"]["steps"]) == 4
            for split in ("train", "val"):
                low, high = r[f"{split}_error_interval"]
                assert 0 <= low <= r[f"{split}_error"] <= high <= 1
    assert {lad["steps"] for lad in ladders if lad["stage"] == "refine"} == {40}
    assert results["chosen"] in [lad for lad in ladders if lad["stage"] == "refine"]
    assert ladders[-1]["setting"] == results["chosen"]["setting"] and ladders[-1]["steps"] == 60
    # Every run was kept as it ended; the file is gone once the results are saved.
    assert not (tmp_path / "pathological_depth.runs.json").exists()
