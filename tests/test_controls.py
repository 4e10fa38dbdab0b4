"""Control tasks and selectivity: real probes on real digits against shuffled labels."""

import numpy as np
import pytest
from conftest import make_report

import keras_probes as kp


def test_shuffled_labels_keep_the_class_counts_and_lose_the_input():
    y = np.random.default_rng(0).integers(0, 10, 5000)
    shuffled = kp.controls.shuffled_labels(y, seed=1)
    np.testing.assert_array_equal(np.bincount(shuffled), np.bincount(y))
    assert np.mean(shuffled == y) < 0.15  # about 1/10 by chance
    np.testing.assert_array_equal(kp.controls.shuffled_labels(y, seed=1), shuffled)
    with pytest.raises(ValueError, match="shape \\(n,\\)"):
        kp.controls.shuffled_labels(np.zeros((3, 2)))


def test_selectivity_of_pixel_probes_against_a_shuffled_control(digits):
    x, y, xt, yt = digits
    features = {"pixels": x.reshape(len(x), -1), "mean": x.reshape(len(x), -1).mean(1)[:, None]}
    held_out = {"pixels": xt.reshape(len(xt), -1), "mean": xt.reshape(len(xt), -1).mean(1)[:, None]}

    def report(train_labels, test_labels):
        results = {}
        for point in features:
            probe = kp.solvers.LBFGSProbe(l2=1e-3).fit(features[point], train_labels, 10)
            predicted = (held_out[point] @ probe.coef_ + probe.intercept_).argmax(1)
            results[point] = {"error": float(np.mean(predicted != test_labels))}
        return kp.ProbeReport(list(features), {"val": results}, num_classes=10)

    real = report(y, yt)
    control = report(kp.controls.shuffled_labels(y, 0), kp.controls.shuffled_labels(yt, 1))
    selective = real.with_selectivity(control, "val")
    values = selective.values("val", "selectivity")
    for point in features:
        assert values[point] == pytest.approx(
            control.errors("val")[point] - real.errors("val")[point]
        )
    # Pixels: a real task (about 0.85 above the shuffled control); their mean: a weak one.
    assert values["pixels"] > 0.6 and values["pixels"] > values["mean"]
    assert "selectivity" in selective.table() and "selectivity" not in real.table()


def test_selectivity_needs_the_same_points():
    report = make_report()
    other = kp.ProbeReport(["a"], {"val": {"a": {"error": 0.5}}})
    with pytest.raises(ValueError, match="same points"):
        report.with_selectivity(other, "val")
