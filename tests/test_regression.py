"""Regression probes (RCVs) against scikit-learn's Ridge, on real digit features."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_squared_error, r2_score

import keras_probes as kp


@pytest.fixture(scope="module")
def digit_shapes(mnist):
    """Real digits, their pixels as features and their shape concepts as targets."""
    (x, _), (xt, _) = mnist.train, mnist.test
    x, xt = x[:1500], xt[:500]
    shapes = [kp.concepts.shape_measures(a) for a in (x, xt)]
    targets = [np.stack([s[c] for c in ("area", "perimeter", "eccentricity")], 1) for s in shapes]
    features = [a.reshape(len(a), -1) / 255.0 for a in (x, xt)]
    return features, targets


@pytest.mark.parametrize("alpha", [0.1, 10.0])
@pytest.mark.parametrize("wide", [False, True])
def test_ridge_probe_equals_scikit_learn(digit_shapes, alpha, wide):
    (x, xt), (y, yt) = digit_shapes
    if wide:  # fewer examples than features: the examples' Gram matrix is solved
        x, y = x[:300], y[:300]
    ours = kp.regression.RidgeProbe(alpha).fit(x, y)
    theirs = Ridge(alpha=alpha).fit(x, y)
    np.testing.assert_allclose(ours.predict(xt), theirs.predict(xt), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        ours.score(xt, yt), r2_score(yt, theirs.predict(xt), multioutput="raw_values"), atol=1e-4
    )
    np.testing.assert_allclose(
        kp.regression.mspe(yt, ours.predict(xt)),
        mean_squared_error(yt, theirs.predict(xt), multioutput="raw_values"),
        rtol=1e-4,
    )
    np.testing.assert_allclose(np.linalg.norm(ours.direction_, axis=0), 1.0)
    # One target at a time gives the same, as a float R^2.
    single = kp.regression.RidgeProbe(alpha).fit(x, y[:, 0])
    assert single.score(xt, yt[:, 0]) == pytest.approx(ours.score(xt, yt)[0], abs=1e-9)
    # The pixels predict a digit's area well (R^2 > 0.5), held out.
    assert ours.score(xt, yt)[0] > 0.5


def test_ridge_probe_refuses_bad_input():
    with pytest.raises(ValueError, match="`alpha`"):
        kp.regression.RidgeProbe(0)
    with pytest.raises(ValueError, match="same n"):
        kp.regression.RidgeProbe().fit(np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        kp.regression.RidgeProbe().fit(np.full((3, 2), np.nan), np.zeros(3))
