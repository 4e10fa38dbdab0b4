"""Regression probes (RCVs) against scikit-learn's Ridge, on real digit features."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_weights_equal, counted_convs, trained_convnet
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.metrics import mean_squared_error, r2_score

import keras_probes as kp

SHAPES = ["area", "perimeter", "eccentricity"]


@pytest.fixture(scope="module")
def digit_shapes(mnist):
    """Real digits, their pixels as features and their shape concepts as targets."""
    (x, _), (xt, _) = mnist.train, mnist.test
    x, xt = x[:1500], xt[:500]
    shapes = [kp.concepts.shape_measures(a) for a in (x, xt)]
    targets = [np.stack([s[c] for c in SHAPES], 1) for s in shapes]
    features = [a.reshape(len(a), -1) / 255.0 for a in (x, xt)]
    return features, targets


@pytest.mark.numerics
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


@pytest.mark.numerics
@pytest.mark.parametrize("wide", [False, True])
def test_ridge_probe_chooses_alpha_per_target_as_scikit_learn_ridge_cv(digit_shapes, wide):
    """Exact leave-one-out error picks the same penalty per target as RidgeCV."""
    (x, xt), (y, _) = digit_shapes
    if wide:
        x, y = x[:300], y[:300]
    alphas = np.logspace(-2, 4, 13)
    ours = kp.regression.RidgeProbe(alphas).fit(x, y)
    theirs = RidgeCV(alphas=alphas, alpha_per_target=True).fit(x, y)
    np.testing.assert_array_equal(ours.alpha_, theirs.alpha_)
    assert len(set(ours.alpha_)) > 1  # the three concepts want different penalties
    np.testing.assert_allclose(ours.predict(xt), theirs.predict(xt), rtol=1e-6, atol=1e-6)


def test_ridge_probe_refuses_bad_input():
    for alpha in (0, [], [1.0, -1.0], "big", True):
        with pytest.raises(ValueError, match="`alpha`"):
            kp.regression.RidgeProbe(alpha)
    with pytest.raises(ValueError, match="same n"):
        kp.regression.RidgeProbe().fit(np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        kp.regression.RidgeProbe().fit(np.full((3, 2), np.nan), np.zeros(3))


@pytest.fixture(scope="module")
def digit_task(mnist):
    """Real digits as (n, 28, 28, 1) floats with standardised shape concepts."""
    (x, _), (xt, _) = mnist.train, mnist.test
    x, xt = x[:1200], xt[:400]
    targets = [np.stack([kp.concepts.shape_measures(a)[c] for c in SHAPES], 1) for a in (x, xt)]
    mean, std = targets[0].mean(0), targets[0].std(0)
    scale = lambda a: (a[..., None] / 255.0).astype("float32")  # noqa: E731
    return scale(x), (targets[0] - mean) / std, scale(xt), (targets[1] - mean) / std


@pytest.fixture(scope="module")
def shape_convnet(digit_task):
    """The convnet after an epoch on one constant label: BatchNorm statistics are real,
    the features know nothing of the classes. Shared by the tests below, never changed."""
    x = digit_task[0]
    return trained_convnet(x, np.zeros(len(x), "int64"))


@pytest.mark.numerics
def test_regression_probes_leave_the_base_bit_for_bit_unchanged(digit_task, shape_convnet):
    """Invariant 1 for regression: MSE training updates the heads only."""
    x, y, xt, yt = digit_task
    base = shape_convnet
    before = [v.numpy().copy() for v in base.weights]
    probed = kp.RegressionProbedModel(base, points=["relu1", "relu2", "gap"], targets=SHAPES)
    probed.compile(keras.optimizers.Adam(1e-2))
    history = probed.fit(x, y, validation_data=(xt, yt), epochs=3, batch_size=64, verbose=0)
    probed.evaluate(xt, yt, verbose=0)
    probed(xt[:8], training=True)
    assert_weights_equal(before, [v.numpy() for v in base.weights])
    base_ids = {id(v) for v in base.weights}
    assert not any(id(v) in base_ids for v in probed.optimizer.variables)
    # The probes learned: the loss fell, and the logs hold every target's R^2 and MSPE.
    assert history.history["relu2/loss"][-1] < history.history["relu2/loss"][0]
    assert {"val_gap/area_r2", "val_gap/eccentricity_mspe", "relu1/loss"} <= set(history.history)
    with tf.GradientTape(persistent=True) as tape:
        losses = {p: keras.ops.sum(o**2) for p, o in probed(x[:16], training=True).items()}
    for point, loss in losses.items():
        assert all(g is None for g in tape.gradient(loss, base.trainable_variables)), point
        assert all(g is not None for g in tape.gradient(loss, probed.get_probe(point).weights))


def test_regression_probes_run_the_base_once_per_batch(digit_task):
    """Invariant 2: one pass of the base feeds every regression probe."""
    x, y, _, _ = digit_task
    base, counter = counted_convs(3)
    probed = kp.RegressionProbedModel(base, points=kp.points.matching(r"conv\d"))
    probed.compile()
    counter.calls.assign(0)
    probed.fit(x[:160], y[:160, 0], batch_size=32, epochs=1, verbose=0)
    assert int(counter.calls.numpy()) == 5


@pytest.mark.numerics
def test_regression_report_equals_numpy_and_round_trips(digit_task, shape_convnet, tmp_path):
    x, y, xt, yt = digit_task
    base = shape_convnet
    probed = kp.RegressionProbedModel(base, points=["relu1", "gap"], targets=SHAPES)
    probed.compile(keras.optimizers.Adam(1e-2))
    probed.fit(x, y, epochs=2, batch_size=100, verbose=0)
    report = probed.evaluate_probes(xt, yt, split="test", batch_size=64, verbose=0)
    predictions = probed.predict(xt, verbose=0)
    for point in probed.points:
        fit, error = (
            kp.regression.r2(yt, predictions[point]),
            kp.regression.mspe(yt, predictions[point]),
        )
        for j, target in enumerate(SHAPES):
            assert report.values("test", f"{target}_r2")[point] == pytest.approx(fit[j], abs=1e-4)
            assert report.values("test", f"{target}_mspe")[point] == pytest.approx(
                error[j], rel=1e-4
            )
    path = tmp_path / "regression.keras"
    probed.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, kp.RegressionProbedModel) and restored.targets == SHAPES
    for point, value in restored.predict(xt, verbose=0).items():
        np.testing.assert_array_equal(value, predictions[point])


@pytest.mark.numerics
def test_ridge_on_the_cache_equals_scikit_learn_and_gives_unit_rcvs(
    digit_task, shape_convnet, tmp_path
):
    """Closed-form ridge on cached features: R^2 as RidgeCV's, RCVs along its coefficients."""
    x, y, xt, yt = digit_task
    base = shape_convnet
    labels = np.zeros(len(x), "int64")
    # A class-probe model of the same base, points and reducers writes the cache.
    classes = kp.ProbedModel(base, points=["relu1", "gap"], num_classes=10)
    kp.FeatureCache.write(classes, (x, labels), tmp_path, split="train", verbose=0)
    kp.FeatureCache.write(classes, (xt, labels[: len(xt)]), tmp_path, split="val", verbose=0)
    probed = kp.RegressionProbedModel(base, points=["relu1", "gap"], targets=SHAPES)
    cache = kp.FeatureCache.open(tmp_path, model=probed)
    alphas = np.logspace(-2, 4, 7)
    report = kp.fit_regression_probes(probed, cache, {"train": y, "val": yt}, alphas, verbose=0)
    features, _ = cache.arrays("train")
    held_out, _ = cache.arrays("val")
    vectors = probed.concept_vectors()
    for point in probed.points:
        theirs = RidgeCV(alphas=alphas, alpha_per_target=True).fit(features[point], y)
        expected = r2_score(yt, theirs.predict(held_out[point]), multioutput="raw_values")
        for j, target in enumerate(SHAPES):
            assert report.values("val", f"{target}_r2")[point] == pytest.approx(
                expected[j], abs=1e-4
            )
            assert report.values("train", f"{target}_alpha")[point] == theirs.alpha_[j]
        np.testing.assert_allclose(np.linalg.norm(vectors[point], axis=0), 1.0)
        unit = theirs.coef_.T / np.linalg.norm(theirs.coef_.T, axis=0)
        np.testing.assert_allclose(vectors[point], unit, atol=1e-4)
        # The heads hold the fit: the Keras model predicts what the ridge does.
        np.testing.assert_allclose(
            probed.predict(xt, verbose=0)[point], theirs.predict(held_out[point]), atol=1e-3
        )
    # Pixels' neighbours know the digit's area (R^2 > 0.5) right after the first conv.
    assert report.values("val", "area_r2")["relu1"] > 0.5


def test_regression_input_errors_name_the_fix(digit_task, tmp_path):
    x, y, _, _ = digit_task
    base = trained_convnet(x[:64], np.zeros(64, "int64"))
    probed = kp.RegressionProbedModel(base, points=["gap"], targets=SHAPES)
    probed.compile()
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        probed.fit(x[:64], y[:64, :2], verbose=0)
    bad = y[:64].copy()
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values in 1 example"):
        probed.fit(x[:64], bad, verbose=0)
    with pytest.raises(ValueError, match="differ in length"):
        probed.fit(x[:64], y[:60], verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices((x[:64], y[:64, :2])).batch(16)
    with pytest.raises(ValueError, match="regress 3 target"):
        probed.fit(dataset, verbose=0)
    with pytest.raises(ValueError, match="`targets` must be"):
        kp.RegressionProbedModel(base, points=["gap"], targets=["a", "a"])
    kp.FeatureCache.write(probed, (x[:64], np.zeros(64, "int64")), tmp_path, verbose=0)
    cache = kp.FeatureCache.open(tmp_path, model=probed)
    with pytest.raises(ValueError, match="differ in length: 64 inputs, 10 targets"):
        kp.fit_regression_probes(probed, cache, {"train": y[:10]}, verbose=0)
    with pytest.raises(ValueError, match="holding the train split"):
        kp.fit_regression_probes(probed, cache, {"val": y[:64]}, verbose=0)
    with pytest.raises(TypeError, match="kp.fit_probes"):
        kp.fit_regression_probes(kp.ProbedModel(base, ["gap"], 10), cache, {"train": y[:64]})
