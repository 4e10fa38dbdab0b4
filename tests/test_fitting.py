"""`kp.fitting.fit_each`: what its progress bar shows while the probes are fitted."""

import itertools
import re
import types

import keras
import numpy as np

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
