"""`kp.fitting.fit_each`: what its progress bar shows while the probes are fitted, and the
held-out split it gives the solvers that take one."""

import itertools
import re
import types

import keras
import numpy as np
import pytest

import keras_probes as kp


def test_progress_shows_each_fits_iterations_as_an_integer(capsys, monkeypatch):
    # Keras' bar skips an update within 0.05 s of the last one: a clock that
    # moves a second per reading makes it print every update.
    clock = itertools.count()
    monkeypatch.setattr(keras.src.utils.progbar, "time", types.SimpleNamespace(time=clock.__next__))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((90, 6)).astype("float32")
    y = np.argmax(x[:, :3], axis=1)
    # Three scales of the same features: L-BFGS takes a different number of
    # iterations at each, so a running mean would differ from the last fit's.
    features = {"small": 0.05 * x, "plain": x, "large": 30 * x}
    solver = kp.solvers.LBFGSProbe(l2=1e-3)
    expected = [solver.clone().fit(f, y, num_classes=3).n_iter_ for f in features.values()]
    assert len(set(expected)) == 3, expected

    kp.fitting.fit_each(
        solver,
        kp.tasks.Classification(3),
        list(features),
        lambda split, point: features[point],
        {"train": y},
        verbose=1,
    )
    shown = re.findall(r"iterations: ([\d.e+-]+)", capsys.readouterr().out)
    assert shown == [str(n) for n in expected]


def test_held_out_split_goes_to_the_solvers_that_take_it():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6)).astype("float32")
    y = np.argmax(x[:, :3] + rng.standard_normal((200, 3)), axis=1)
    features = {"train": x[:120], "val": x[120:]}
    targets = {"train": y[:120], "val": y[120:]}
    task = kp.tasks.Classification(3)

    def fit(solver, validation):
        return kp.fitting.fit_each(
            solver, task, ["p"], lambda split, point: features[split], targets,
            validation=validation, verbose=0,
        )  # fmt: skip

    solver = kp.solvers.LBFGSProbeCV(l2s=(1.0, 1e-2, 1e-4))
    row = fit(solver, "val").results["train"]["p"]
    alone = solver.clone().fit(x[:120], y[:120], 3, X_val=x[120:], y_val=y[120:])
    assert row["l2"] == alone.l2_ and row["objective"] == alone.loss_
    with pytest.raises(ValueError, match=r"LBFGSProbeCV\(l2s=.*\) chooses on a held-out split"):
        fit(solver, None)
    with pytest.raises(ValueError, match="LBFGSProbe takes no held-out split"):
        fit(kp.solvers.LBFGSProbe(), "val")
    # Folds of train need none.
    assert fit(kp.solvers.LBFGSProbeCV(l2s=(1.0, 1e-2), cv=2), None).results["train"]["p"]["l2"]


def test_fit_probes_reports_name_the_caches_examples(digits, tmp_path):
    """Each held-out split's outcomes carry the cache's fingerprint of its examples, which
    does not depend on the model: a control on the same data compares with them."""
    from conftest import small_convnet

    x, y, xt, yt = digits
    probed = kp.ProbedModel(small_convnet(), ["gap"], num_classes=10)
    kp.FeatureCache.write(probed, (x[:128], y[:128]), tmp_path, split="train", verbose=0)
    kp.FeatureCache.write(probed, (xt[:64], yt[:64]), tmp_path, split="val", verbose=0)
    cache = kp.FeatureCache.open(tmp_path, model=probed)
    report = kp.fit_probes(probed, cache, l2=1e-2, max_iter=20, verbose=0)
    assert list(report.outcomes) == ["val"]
    assert report.examples["val"] == cache.examples("val")
    assert report.examples["val"].sequences is None
    control = kp.controls.shuffled_label_probes(probed, cache, l2=1e-2, max_iter=20, verbose=0)
    c = report.compare("val", "gap", other=control)
    assert c.b == "gap (other)" and c.test == "McNemar exact"
