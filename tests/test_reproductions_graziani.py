"""The reproductions of Graziani et al. (2019) run end to end at `--quick` scale
and write what they promise: sane values under the expected keys."""

import numpy as np
import pytest
from conftest import run_reproduction

import keras_probes as kp


@pytest.mark.slow
def test_flawed_mlp_mnist(tmp_path):
    payload, stdout = run_reproduction("flawed_mlp_mnist", tmp_path)
    results = payload["results"]
    assert results["points"] == ["input", *(f"hidden{i}" for i in range(1, 7))]
    assert results["concepts"] == ["area", "perimeter", "eccentricity"]
    networks = ["random", *(str(f) for f in results["fractions"])]
    assert list(results["val_r2"]) == networks
    for network in networks:
        for concept in results["concepts"]:
            values = np.array(list(results["val_r2"][network][concept].values()))
            assert values.shape == (7,) and np.all(values <= 1)
        # The pixels are the same for every network: so is the input's R^2.
        assert results["val_r2"][network]["area"]["input"] == pytest.approx(
            results["val_r2"]["random"]["area"]["input"]
        )
    # The pixels hold a digit's area: R^2 well above 0 even from 800 digits.
    assert results["val_r2"]["random"]["area"]["input"] > 0.5
    curves = results["probe_accuracy"]
    assert set(curves) == {"random", "0.4-memorizing", "generalizing"}
    for curve in curves.values():
        accuracy = np.array(curve["val_accuracy"])
        assert accuracy.shape == (7, len(curve["epochs"]))
        assert np.all((accuracy >= 0) & (accuracy <= 1))
    controls = results["controls"]
    report = kp.ProbeReport.from_dict(controls["report"])
    shuffled = kp.ProbeReport.from_dict(controls["shuffled_labels"])
    selectivity = report.with_selectivity(shuffled, "train").values("train", "selectivity")
    assert set(selectivity) == set(results["points"])
    assert "paper" in stdout and "unaffected" in stdout


@pytest.mark.slow
def test_true_vs_corrupted(tmp_path):
    payload, _ = run_reproduction("true_vs_corrupted", tmp_path)
    results = payload["results"]
    assert results["corrupted"] == round(0.5 * results["examples"])
    curves = results["curves"]
    assert curves["epoch"] == [0, 1, 2, 3]
    for key in ("clean_accuracy", "corrupted_accuracy", "corrupted_true_accuracy"):
        assert len(curves[key]) == 4 and all(0 <= v <= 1 for v in curves[key])
    assert len(curves["val_accuracy"]) == 4


@pytest.mark.slow
def test_rcv_textures(tmp_path):
    payload, _ = run_reproduction("rcv_textures", tmp_path)
    results = payload["results"]
    assert len(results["concepts"]) == 17 and results["points"] == [
        "block1",
        "block2",
        "fc1",
        "fc2",
    ]
    assert set(results["mspe_block1"]) == {"random", "1-memorizing", "generalizing"}
    for name, curve in results["curves"].items():
        assert curve["epochs"] == [0, 1, 2], name
        for measurement in curve["r2"]:
            for point in results["points"]:
                values = np.array(list(measurement[point].values()))
                assert values.shape == (17,) and np.all(values <= 1)
    # The random network is the generalizing one before training: the same start.
    assert results["curves"]["1-memorizing"]["r2"][0] == results["curves"]["generalizing"]["r2"][0]
    for row in results["mspe_block1"].values():
        assert all(value >= 0 for value in row.values())


@pytest.mark.slow
def test_rcv_mspe(tmp_path):
    payload, _ = run_reproduction("rcv_mspe", tmp_path)
    results = payload["results"]
    assert results["concepts"] == ["cyan", "energy", "orange", "correlation"]
    assert set(results["mspe"]) == {"random", "1-memorizing", "generalizing"}
    held = f"{results['held_out']} held-out"
    for fits in results["mspe"].values():
        protocols = {fit.split(",")[0] for fit in fits}
        assert protocols == {"loo", "ridge1", "ols"} and len(fits) == 9
        for splits in fits.values():
            assert set(splits) == {"held-out", held, "train"}
            for errors in splits.values():
                assert all(np.isfinite(v) and v >= 0 for v in errors.values())
    # Leave-one-out ridge fits its training images no worse than it predicts new ones.
    for fits in results["mspe"].values():
        ours = next(v for k, v in fits.items() if k.startswith("loo"))
        assert np.mean(list(ours["train"].values())) <= np.mean(list(ours["held-out"].values()))
    assert all(v > 0 for v in results["mean_abs_activation"].values())


@pytest.mark.slow
def test_first_layer_width(tmp_path):
    payload, _ = run_reproduction("first_layer_width", tmp_path)
    results = payload["results"]
    assert list(results["results"]) == ["adam:32:2", "sgd:64:2"]
    for config in results["results"].values():
        for fraction in ("0.0", "0.2"):
            row = config[fraction]
            assert set(row["r2"]) == {"area", "perimeter", "eccentricity"}
            assert list(row["r2"]["area"]) == ["input", *(f"hidden{i}" for i in range(1, 7))]
            assert row["first_layer_moved"] > 0
        losses = config["first_layer_loss"]
        assert all(abs(v) <= 2 for v in losses.values())
