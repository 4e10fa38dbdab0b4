"""Solvers on cached features: L-BFGS reaches scikit-learn's optimum; minibatch as the paper."""

import keras
import numpy as np
import pytest
from conftest import assert_error_rate, objective, small_convnet
from sklearn.linear_model import LogisticRegression

import keras_probes as kp
from keras_probes.solvers import LBFGSProbe

L2 = 1e-3


@pytest.fixture(scope="module")
def cached(digits, tmp_path_factory):
    """A small convnet's real features of 2000 MNIST digits (train) and 1000 (val)."""
    keras.utils.set_random_seed(0)
    base = small_convnet()
    x, y, xt, yt = digits
    base.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    base.fit(x, y, epochs=1, batch_size=64, verbose=0)  # features of a trained layer
    probed = kp.ProbedModel(
        base, points=["image", "pool1", "relu2"], num_classes=10, reducers={"pool1": "flatten"}
    )
    directory = tmp_path_factory.mktemp("cache")
    kp.FeatureCache.write(probed, (x, y), directory, "train", batch_size=100, verbose=0)
    kp.FeatureCache.write(probed, (xt, yt), directory, "val", batch_size=100, verbose=0)
    return probed, kp.FeatureCache.open(directory, model=probed), (xt, yt)


@pytest.mark.slow  # scikit-learn's optimum at tol 1e-10 takes minutes
@pytest.mark.numerics
def test_lbfgs_probe_reaches_scikit_learns_optimum(cached):
    """Invariant 3: within 1% of LogisticRegression's optimum, same L2 (C = 1 / (l2 n))."""
    probed, cache, (xt, yt) = cached
    report = kp.fit_probes(probed, cache, solver="lbfgs", l2=L2, verbose=0)
    features, labels = cache.arrays("train")
    n = len(labels)
    for point in probed.points:
        reference = LogisticRegression(C=1 / (L2 * n), tol=1e-10, max_iter=10_000)
        reference.fit(features[point], labels)
        optimum = objective(features[point], labels, reference.coef_.T, reference.intercept_, L2)
        kernel, bias = probed.get_probe(point).get_weights()
        ours = objective(features[point], labels, kernel, bias, L2)
        assert ours <= optimum * 1.01, (point, ours, optimum)
        assert ours >= optimum * (1 - 1e-4), (point, ours, optimum)  # the same problem
        row = report.results["train"][point]
        np.testing.assert_allclose(row["objective"], ours, rtol=1e-4)
        assert row["grad_norm"] <= 1e-3  # float32: resolved to about 1e-4
    # The trained probes are those of `probed`: its predictions give the report's errors,
    # up to the examples that float32 rounding may flip (the report's features were
    # extracted in batches of 100, these in batches of 32).
    predictions = probed.predict(xt, verbose=0)
    for point in probed.points:
        assert_error_rate(report.errors("val")[point], predictions[point], yt)
    # The first layer's features separate the digits; the pixel average (one feature) does
    # not. Seen on seeds 0-4 with default and AVX2 kernels: pool1 0.06-0.09, image
    # 0.77-0.84. (relu2, after one epoch, comes out of a BatchNorm whose moving statistics
    # are a quarter updated: it beat the pixel average by 0.01-0.06 only.)
    errors = report.errors("val")
    assert errors["pool1"] < 0.15 and errors["image"] > errors["pool1"] + 0.5


@pytest.mark.numerics
def test_lbfgs_warm_start_and_certificate():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 20)).astype(np.float32)
    labels = (features[:, :3] @ rng.normal(size=(3, 4))).argmax(1)
    cold = LBFGSProbe(l2=1e-2, tol=1e-6, dtype="float64").fit(features, labels, num_classes=4)
    assert cold.converged_ and cold.grad_norm_ <= 1e-6 and cold.n_iter_ > 5
    warm = LBFGSProbe(l2=1e-2, tol=1e-6, dtype="float64").fit(
        features, labels, 4, coef_init=cold.coef_, intercept_init=cold.intercept_
    )
    assert warm.n_iter_ <= 2
    np.testing.assert_allclose(warm.loss_, cold.loss_, rtol=1e-7)
    stopped = LBFGSProbe(l2=1e-2, max_iter=2, tol=1e-6, dtype="float64").fit(features, labels, 4)
    assert not stopped.converged_ and stopped.grad_norm_ > 1e-6 and stopped.loss_ > cold.loss_
    # Float16 features (a float16 cache) train to the optimum of the rounded features.
    half = LBFGSProbe(l2=1e-2, tol=1e-6, dtype="float64").fit(
        features.astype(np.float16), labels, 4
    )
    np.testing.assert_allclose(half.loss_, cold.loss_, rtol=1e-3)


@pytest.mark.numerics
def test_standardized_probe_ignores_the_features_scale():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(500, 20))
    labels = (signal[:, :3] @ rng.normal(size=(3, 4))).argmax(1)
    features = signal * rng.uniform(0.5, 2, size=20) + 3
    fits = [
        LBFGSProbe(l2=1e-2, tol=1e-7, dtype="float64", standardize=True).fit(
            (features * scale).astype(np.float32), labels, 4
        )
        for scale in (1.0, 1e-6)
    ]
    # The same problem once standardised: same objective, same predictions; and
    # the coefficients apply to the raw features, whatever their scale.
    np.testing.assert_allclose(fits[0].loss_, fits[1].loss_, rtol=1e-6)
    np.testing.assert_allclose(fits[0].coef_, fits[1].coef_ * 1e-6, rtol=1e-3, atol=1e-5)
    logits = [(features * s) @ f.coef_ + f.intercept_ for f, s in zip(fits, (1, 1e-6), strict=True)]
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-4)
    assert np.mean(logits[0].argmax(1) == labels) > 0.9
    # Raw, the penalty crushes the tiny features: a worse fit.
    raw = LBFGSProbe(l2=1e-2, tol=1e-7, dtype="float64").fit(features * 1e-6, labels, 4)
    assert raw.loss_ > fits[1].loss_ + 0.5
    # A warm start from the raw-feature coefficients is converted: no iteration needed.
    warm = LBFGSProbe(l2=1e-2, tol=1e-5, dtype="float64", standardize=True).fit(
        features, labels, 4, coef_init=fits[0].coef_, intercept_init=fits[0].intercept_
    )
    assert warm.n_iter_ <= 1


@pytest.mark.parametrize("width", [20, 200])  # XLA's path (<= 128 features), the backend's
@pytest.mark.parametrize("standardize", [False, True])
def test_lbfgs_refuses_bad_labels_and_features_up_front(width, standardize, tmp_path):
    """Out of range, XLA's cross-entropy gives a NaN loss and no error: checked first."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, width)).astype(np.float32)
    labels = rng.integers(0, 4, 300)
    probe = LBFGSProbe(l2=1e-2, standardize=standardize)
    for bad, match in [
        (4, r"Labels must lie in \[0, num_classes\) = \[0, 4\)\. Found 1 outside it, e.g. \[4\]"),
        (-1, r"\[0, 4\)\. Found 1 outside it, e.g. \[-1\]"),
        (2.5, "Labels must be integer class indices"),
    ]:
        wrong = labels.astype(type(bad))
        wrong[7] = bad
        with pytest.raises(ValueError, match=match):
            probe.fit(features, wrong, num_classes=4)
    with pytest.raises(ValueError, match=r"same number \(> 0\) of examples"):
        probe.fit(features, labels[:-1], num_classes=4)
    for num_classes in (1, 4.0, True, None):
        with pytest.raises(ValueError, match="`num_classes` must be an integer >= 2"):
            probe.fit(features, labels, num_classes=num_classes)
    # Non-finite features, memory-mapped: found in the pass that computes their mean.
    features[250, 3] = np.inf if standardize else np.nan
    np.save(tmp_path / "features.npy", features)
    mapped = np.load(tmp_path / "features.npy", mmap_mode="r")
    with pytest.raises(
        ValueError,
        match=r"`features` holds NaN or infinite values in 1 example\(s\), e.g. at index \[250\]",
    ):
        probe.fit(mapped, labels, num_classes=4)
    # Whole numbers stored as floats, or a numpy integer count, are accepted.
    probe.fit(features[:250], labels[:250].astype(np.float32), num_classes=np.int64(4))
    assert np.isfinite(probe.loss_) and probe.coef_.shape == (width, 4)


@pytest.mark.slow  # 10 s with the cache it shares with the slow L-BFGS test
@pytest.mark.numerics
def test_minibatch_solver_trains_the_probes_of_probed(cached):
    probed, cache, _ = cached
    for head in probed.heads:
        head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    report = kp.fit_probes(
        probed, cache, solver="adam", l2=L2, epochs=8, learning_rate=1e-2, patience=2, verbose=0
    )
    assert report.splits == ["train", "val"]
    # Seen on seeds 0-4, default and AVX2 kernels: pool1 0.07-0.12, image 0.80-0.89.
    errors = report.errors("val")
    assert errors["pool1"] < 0.2 and errors["image"] > errors["pool1"] + 0.5
    for point in probed.points:
        kernel = probed.get_probe(point).get_weights()[0]
        assert np.abs(kernel).max() > 0  # trained, in place
        row = report.results["train"][point]
        assert row["grad_norm"] > 0 and np.isfinite(row["objective"])


def test_bad_arguments_and_stale_caches_are_refused(cached):
    probed, cache, _ = cached
    with pytest.raises(ValueError, match="`solver` must be one of"):
        kp.fit_probes(probed, cache, solver="sgd")
    with pytest.raises(ValueError, match="`l2` must be a finite number >= 0. Received: l2=-1"):
        kp.fit_probes(probed, cache, l2=-1)
    with pytest.raises(ValueError, match="`tol` must be a finite number > 0"):
        LBFGSProbe(tol=0)
    with pytest.raises(kp.CacheError, match="has no split 'test'"):
        kp.fit_probes(probed, cache, validation="test")
    keras.utils.set_random_seed(5)
    other = kp.ProbedModel(
        small_convnet(), points=probed.points, num_classes=10, reducers={"pool1": "flatten"}
    )
    with pytest.raises(kp.CacheError, match="written from another model"):
        kp.fit_probes(other, cache)
