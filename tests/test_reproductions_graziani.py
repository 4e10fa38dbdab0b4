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

    # Every held-out figure with its interval: R^2 by the bootstrap, accuracies by Wilson.
    for network, by_concept in results["val_r2_interval"].items():
        for concept, by_point in by_concept.items():
            for point, (low, high) in by_point.items():
                assert low <= results["val_r2"][network][concept][point] <= high
    for fit in results["fits"].values():
        low, high = fit["val_accuracy_interval"]
        assert low <= fit["val_accuracy"] <= high
    for curve in curves.values():
        for row, bounds in zip(curve["val_accuracy"], curve["val_accuracy_interval"], strict=True):
            assert all(lo <= a <= hi for a, (lo, hi) in zip(row, bounds, strict=True))
    # The class probes at the end, kept with their outcomes, are the monitor's last ones
    # (warm-started from them); the untrained network's start afresh: within L-BFGS's tol.
    for name in ("random", "0.4-memorizing", "generalizing"):
        end = results["probe_accuracy_end"][name]
        last = [row[-1] for row in curves[name]["val_accuracy"]]
        within = 0.01 if name == "random" else 1e-9
        assert [end[p]["accuracy"] for p in results["points"]] == pytest.approx(last, abs=within)
    # Every comparison: a paired test, Holm-adjusted within its family.
    families = results["comparisons"]
    assert set(families) == {
        "area R^2", "perimeter R^2", "eccentricity R^2", "class probes at the end", "selectivity"
    }  # fmt: skip
    for tests in families.values():
        for c in tests.values():
            assert c["low"] <= c["difference"] <= c["high"]
            assert c["pvalue"] <= c["adjusted_pvalue"] <= 1
            assert c["significant"] == (c["adjusted_pvalue"] < 0.05)
    lost = families["area R^2"]["area R^2 lost N=0 -> 1: hidden6 - hidden1"]
    r2 = results["val_r2"]
    expected = (r2["0.0"]["area"]["hidden6"] - r2["1.0"]["area"]["hidden6"]) - (
        r2["0.0"]["area"]["hidden1"] - r2["1.0"]["area"]["hidden1"]
    )
    assert lost["difference"] == pytest.approx(expected, abs=1e-5)
    assert lost["test"] == "paired bootstrap"
    selectivity = families["selectivity"]["selectivity hidden6 vs re-initialised net"]
    random = kp.ProbeReport.from_dict(controls["reinitialized"])
    assert selectivity["difference"] == pytest.approx(
        random.errors("val")["hidden6"] - report.errors("val")["hidden6"]
    )
    assert selectivity["test"] == "McNemar exact"


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
    # Each accuracy with its Wilson interval; the held-out one from each digit's outcome.
    for key in ("clean", "corrupted", "corrupted_true", "val"):
        for value, (low, high) in list(
            zip(curves[f"{key}_accuracy"], curves[f"{key}_accuracy_interval"], strict=True)
        )[key == "val" :]:
            assert low <= value <= high
    tests = results["comparisons"]
    assert len(tests) == 2
    for c in tests.values():
        assert c["low"] <= c["difference"] <= c["high"] and c["pvalue"] <= c["adjusted_pvalue"]
    parts = next(c for name, c in tests.items() if name.startswith("epoch 3"))
    assert parts["test"] == "Fisher exact, two groups"
    assert parts["difference"] == pytest.approx(
        curves["clean_accuracy"][3] - curves["corrupted_accuracy"][3]
    )


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
    # The end's RCVs, refitted with each image's outcome, are the monitor's: every figure
    # with its interval; the comparisons paired on the same images, Holm per family.
    for name, by_point in results["end_intervals"].items():
        for concept in results["concepts"]:
            low, high = by_point["block1"][f"{concept}_r2"]
            assert low <= results["r2_block1"][name][concept] + 1e-9
            assert results["r2_block1"][name][concept] <= high + 1e-9
    families = results["comparisons"]
    assert [len(tests) for tests in families.values()] == [17, 17, 4, 8]
    for tests in families.values():
        for c in tests.values():
            assert c["test"] == "paired bootstrap" and c["pvalue"] <= c["adjusted_pvalue"]
    gap = families["block1 R^2, 1-memorizing - generalizing"]["orange"]
    r2 = results["r2_block1"]
    assert gap["difference"] == pytest.approx(
        r2["1-memorizing"]["orange"] - r2["generalizing"]["orange"], abs=1e-6
    )
    # RCV sensitivities: Br = R^2 * mean / sd of the derivatives per network, point and
    # concept, equal to kp.attribution.bidirectional_relevance's; the tests paired, Holm.
    relevance = results["relevance"]
    assert list(relevance["networks"]) == ["random", "generalizing", "1-memorizing"]
    for name, by_point in relevance["networks"].items():
        assert list(by_point) == results["points"]
        for point, by_concept in by_point.items():
            assert list(by_concept) == results["concepts"]
            for found in by_concept.values():
                assert found["sd"] > 0 and 0 <= found["positive"] <= 1
                br = found["r2"] * found["mean"] / found["sd"]
                assert found["br"] == pytest.approx(br, rel=1e-4, abs=1e-6)
                low, high = found["br_interval"]
                assert low <= high
            assert results["end_intervals"][name][point]  # the same RCVs' R^2
    assert relevance["library_check_relative_difference"] < 1e-3
    families = relevance["comparisons"]
    assert [len(tests) for tests in families.values()] == [8, 8, 8]
    for tests in families.values():
        for c in tests.values():
            assert c["test"] == "paired bootstrap" and c["pvalue"] <= c["adjusted_pvalue"]
    mean_abs = relevance["mean_abs_br"]["generalizing"]["block1"]["colour"]
    colour = results["concepts"][:11]
    by_concept = relevance["networks"]["generalizing"]["block1"]
    assert mean_abs == pytest.approx(np.mean([abs(by_concept[c]["br"]) for c in colour]))
    assert families["mean |Br|, generalizing - 1-memorizing"]["block1, colour"][
        "difference"
    ] == pytest.approx(mean_abs - relevance["mean_abs_br"]["1-memorizing"]["block1"]["colour"])
    assert (tmp_path / "rcv_textures_relevance.png").read_bytes()[:4] == b"\x89PNG"


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
    # Every held-out MSPE with its bootstrap interval; each protocol tested against ours.
    for name, fits in results["mspe_interval"].items():
        for fit, splits in fits.items():
            assert set(splits) == {"held-out", held}
            for split, bounds in splits.items():
                for concept, (low, high) in bounds.items():
                    assert low <= results["mspe"][name][fit][split][concept] <= high
    families = results["comparisons"]
    # Per network, its 6 other fits against ours; per fit, random against both trained.
    assert [len(tests) for tests in families.values()] == [6, 6, 6, 18]
    for tests in families.values():
        for c in tests.values():
            assert c["test"] == "paired bootstrap" and c["low"] <= c["difference"] <= c["high"]
            assert c["pvalue"] <= c["adjusted_pvalue"] <= 1


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
        for fraction in ("0.0", "0.2"):
            for concept, bounds in config[fraction]["r2_interval"].items():
                for point, (low, high) in bounds.items():
                    assert low <= config[fraction]["r2"][concept][point] <= high
    tests = results["comparisons"]
    assert list(tests) == [
        "adam:32:2: area R^2 hidden1, N=0 - N=0.2",
        "sgd:64:2: area R^2 hidden1, N=0 - N=0.2",
        "area R^2 lost at hidden1: sgd:64:2 - adam:32:2",
    ]
    adam, sgd = (
        results["results"][c]["first_layer_loss"]["area"] for c in ("adam:32:2", "sgd:64:2")
    )
    lost = tests["area R^2 lost at hidden1: sgd:64:2 - adam:32:2"]
    assert lost["difference"] == pytest.approx(sgd - adam, abs=1e-5)
    assert tests["adam:32:2: area R^2 hidden1, N=0 - N=0.2"]["difference"] == pytest.approx(
        adam, abs=1e-5
    )
