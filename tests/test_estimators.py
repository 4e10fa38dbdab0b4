"""The solver protocol (scikit-learn's estimator conventions), the one fitting loop, and
the task objects that make classification and regression probes one code path."""

import inspect
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import small_convnet
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.utils.estimator_checks import check_estimator

import keras_probes as kp
from keras_probes import _solver_settings, cli
from keras_probes.solvers import LBFGSProbe, LBFGSProbeCV, Minibatch, RidgeProbe

SOLVERS = [
    LBFGSProbe(l2=1e-2, max_iter=200),
    Minibatch("adam", l2=1e-2, learning_rate=1e-2, epochs=5, batch_size=64),
    RidgeProbe(alpha=[0.1, 1.0]),
]


@pytest.fixture(scope="module")
def blobs():
    """Four Gaussian classes in 20 dimensions, 400 train and 200 held-out examples."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=2.0, size=(4, 20))
    y = rng.integers(0, 4, 600)
    x = (centres[y] + rng.normal(size=(600, 20))).astype(np.float32)
    return x[:400], y[:400], x[400:], y[400:]


def _fit(solver, x, y):
    if solver.kind == "classifier":
        return solver.fit(x, y, 4)
    return solver.fit(x, np.eye(4)[y])  # regress the one-hot labels


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
def test_solvers_follow_scikit_learns_estimator_conventions(solver, blobs):
    x, y, xt, yt = blobs
    params = solver.get_params()
    # The constructor stores the settings; scikit-learn's own clone() rebuilds it from them.
    copy = clone(solver)
    assert copy.get_params() == params and copy is not solver
    assert repr(solver).startswith(type(solver).__name__ + "(")
    for method in ("predict", "decision_function", "score"):
        with pytest.raises(kp.solvers.NotFittedError, match="not fitted yet. Call 'fit'"):
            getattr(solver.clone(), method)(*((xt, yt) if method == "score" else (xt,)))
    fitted = _fit(solver.clone(), x, y)
    assert isinstance(fitted, type(solver)) and fitted.get_params() == params
    assert fitted.coef_.shape == (20, 4) and fitted.intercept_.shape == (4,)
    assert fitted.n_iter_ >= 1 and isinstance(fitted.converged_, bool)
    score = fitted.score(xt, yt) if solver.kind == "classifier" else fitted.score(xt, np.eye(4)[yt])
    # Well separated blobs: accuracy (classifiers) or mean R^2 of the one-hot columns (ridge).
    assert np.mean(score) > 0.5
    if solver.kind == "classifier":
        np.testing.assert_array_equal(fitted.predict(xt), fitted.decision_function(xt).argmax(1))
    with pytest.raises(ValueError, match="Invalid parameter 'nonsense'"):
        solver.clone().set_params(nonsense=1)


def test_set_params_checks_like_the_constructor():
    probe = LBFGSProbe().set_params(l2=0.5, max_iter=3)
    assert (probe.l2, probe.max_iter) == (0.5, 3)
    with pytest.raises(
        ValueError, match="`max_iter` must be an integer >= 1. Received: max_iter=0"
    ):
        probe.set_params(max_iter=0)
    with pytest.raises(ValueError, match="`optimizer` must be one of 'rmsprop', 'adam'"):
        Minibatch("sgd")
    with pytest.raises(ValueError, match="`dtype` must be one of 'float32', 'float64'"):
        LBFGSProbe(dtype="float16")
    assert probe.max_iter == 3  # a refused set_params changes nothing
    with pytest.raises(ValueError, match="`cv` must be one of 'val' or an integer >= 2"):
        LBFGSProbeCV(cv=1)
    with pytest.raises(ValueError, match="`l2s` must be a non-empty sequence of finite"):
        LBFGSProbeCV(l2s=[])


def test_solvers_work_with_scikit_learns_model_selection(blobs):
    x, y, xt, yt = blobs
    x, y = x[:360], y[:360]  # folds of equal sizes: fewer shapes for XLA to compile
    assert is_classifier(LBFGSProbeCV()) and is_regressor(RidgeProbe())
    assert kp.solvers.NotFittedError is NotFittedError
    # GridSearchCV clones the estimator, sets each candidate's settings, fits with
    # fit(X, y) (num_classes inferred), scores by predict_proba and classes_, refits the best.
    search = GridSearchCV(LBFGSProbe(), {"l2": [10.0, 1e-2]}, cv=2, scoring="neg_log_loss")
    search.fit(x, y)
    assert search.best_params_ == {"l2": 1e-2}  # a penalty of 10 flattens the logits
    np.testing.assert_array_equal(search.best_estimator_.classes_, np.arange(4))
    assert search.best_estimator_.score(xt, yt) > 0.8
    scores = cross_val_score(LBFGSProbeCV(cv=2, l2s=(1e-1, 1e-3)), x, y, cv=2)
    assert scores.shape == (2,) and scores.min() > 0.8
    ridge = cross_val_score(RidgeProbe(), x, (y == 0).astype(float), cv=2)  # R^2
    assert ridge.shape == (2,) and ridge.min() > 0.5
    # A Minibatch's clones share its callbacks (not copies): they see every fit.
    callback = keras.callbacks.Callback()
    assert clone(Minibatch(callbacks=[callback])).callbacks[0] is callback


#: The scikit-learn estimator checks that our solvers fail by design, and why.
_BY_DESIGN = {
    "check_do_not_raise_errors_in_init_or_set_params": (
        "a bad setting is refused when the estimator is made or by set_params, before any "
        "work, in one message shape (keras_probes._params), as the command line refuses it"
    ),
    "check_supervised_y_2d": (
        "labels or targets as a column (n, 1), as keras.datasets gives CIFAR-10's, are "
        "taken without scikit-learn's DataConversionWarning"
    ),
}
_CLASSIFIERS_BY_DESIGN = {
    **_BY_DESIGN,
    "check_classifiers_classes": (
        "labels are integer class indices in [0, num_classes), the probe's output units: "
        "string labels are refused"
    ),
    "check_classifiers_train": (
        "decision_function is (n, classes) for two classes too: a probe head's logits, as "
        "reports, exports and fit_each read them (the rest of the check passes)"
    ),
    "check_decision_proba_consistency": "the same (n, 2) decision_function of two classes",
}
_REGRESSORS_BY_DESIGN = {
    **_BY_DESIGN,
    "check_regressors_no_decision_function": (
        "decision_function is the raw output that fit_each scores for every solver"
    ),
}


def _check_estimator(estimator, by_design):
    """scikit-learn's checks: every one passes but those failing by design, which fail."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checks' own, and the tiny fits' convergence
        results = check_estimator(estimator, expected_failed_checks=by_design, on_fail=None)
    statuses = {}
    for result in results:
        statuses.setdefault(result["check_name"], set()).add(result["status"])
    failed = {name: status for name, status in statuses.items() if "failed" in status}
    assert not failed, failed
    # The list is not stale: each check named fails (xfail), none passes unnoticed.
    assert all(statuses[name] == {"xfail"} for name in by_design), statuses


def test_ridge_probe_passes_scikit_learns_estimator_checks():
    _check_estimator(RidgeProbe(), _REGRESSORS_BY_DESIGN)


@pytest.mark.slow  # 30 s to 2 min: about 55 checks, each fitting a few probes
@pytest.mark.parametrize(
    "solver",
    [LBFGSProbe(), LBFGSProbeCV(cv=2, l2s=(1e-2, 1e-4)), Minibatch(epochs=2)],
    ids=lambda s: type(s).__name__,
)
def test_softmax_solvers_pass_scikit_learns_estimator_checks(solver):
    # LBFGSProbeCV(cv="val") needs held-out examples in fit: its folds stand in for it.
    _check_estimator(solver, _CLASSIFIERS_BY_DESIGN)


def test_settings_are_declared_once_on_the_solver_classes(blobs):
    # Each class's signature takes its defaults from its declared table.
    for solver in (LBFGSProbe, LBFGSProbeCV, Minibatch, RidgeProbe):
        declared = _solver_settings.defaults(solver.settings)
        assert solver().get_params() == declared, solver
    assert LBFGSProbeCV.settings["l2s"].default == tuple(np.logspace(-6, 0, 13))
    lbfgs = LBFGSProbe().get_params()
    # LBFGSProbeCV's fits take LBFGSProbe's settings, with the same defaults.
    assert {k: v for k, v in LBFGSProbeCV().get_params().items() if k in lbfgs} == {
        k: v for k, v in lbfgs.items() if k != "l2"
    }
    assert Minibatch().l2 == LBFGSProbe().l2
    assert kp.solvers.SETTINGS["lbfgs"] == ("max_iter", "tol", "memory", "dtype", "standardize")
    # kp.fit_probes, the controls, ProbeMonitor and fit_regression_probes leave every
    # solver setting at None, "the estimator's default", and so fit with those.
    for function, names in (
        (kp.fit_probes, ["l2", *kp.solvers.SETTINGS["lbfgs"][:2], "epochs", "patience"]),
        (kp.controls.shuffled_label_probes, ["l2", "max_iter", "tol"]),
        (kp.controls.control_task_probes, ["l2", "max_iter", "tol"]),
        (kp.controls.reinitialized_probes, ["l2"]),
        (kp.fit_regression_probes, ["alpha"]),
        (kp.callbacks.ProbeMonitor, ["l2", "max_iter", "tol"]),
    ):
        defaults = inspect.signature(function).parameters
        assert all(defaults[name].default is None for name in names), function
    assert kp.solvers.get("lbfgs").get_params() == lbfgs
    x, y, _, _ = blobs
    monitor = kp.callbacks.ProbeMonitor((x, y), num_classes=4, verbose=0)
    # The monitor's one difference, documented: it standardises (activations change scale
    # as the model trains). max_iter was 500 there, 1000 elsewhere: now 1000 everywhere.
    assert monitor.solver.get_params() == {**lbfgs, "standardize": True}
    assert RidgeProbe().alpha == kp.regression.ALPHAS
    # The command line's options: the same defaults, the same solvers, the declared checks.
    fit = cli._command_parser("fit")
    assert fit.parse_args(["m", "--cache", "c"]).l2 == lbfgs["l2"]
    assert fit.parse_args(["m", "--cache", "c", "--l2", "auto"]).l2 == "auto"
    assert cli._SOLVER_OPTIONS == {
        "max_iter": ("lbfgs",),
        "epochs": ("rmsprop", "adam"),
        "patience": ("rmsprop", "adam"),
        "learning_rate": ("rmsprop", "adam"),
    }
    text = " ".join(fit.format_help().split())
    assert "--max-iter MAX_ITER L-BFGS iterations, --solver lbfgs only (default: 1000)" in text
    assert "(default: 50)" in text and "(default: 0.001)" in text


def test_unconverged_fits_warn_and_say_so_in_the_train_row(blobs):
    x, y, xt, yt = blobs
    with pytest.warns(ConvergenceWarning, match=r"max_iter=2 iterations ran .* Increase max_"):
        stopped = LBFGSProbe(l2=1e-2, max_iter=2).fit(x, y, 4)
    assert not stopped.converged_ and stopped.diagnostics()["converged"] == 0.0
    # Through fit_each: one head starts at its optimum (converges at once), one at zero.
    task = kp.tasks.Classification(4)
    optimum = LBFGSProbe(l2=1e-2, tol=1e-6, dtype="float64").fit(x, y, 4)
    heads = []
    for point, weights in (("warm", [optimum.coef_, optimum.intercept_]), ("cold", None)):
        head = task.new_head(point)
        head.build((None, 20))
        if weights is not None:
            head.set_weights([w.astype("float32") for w in weights])
        heads.append(head)
    with pytest.warns(ConvergenceWarning, match=r"LBFGSProbe\(l2=0.01\) stopped short"):
        report = kp.fitting.fit_each(
            LBFGSProbe(l2=1e-2, max_iter=2),
            task,
            ["warm", "cold"],
            lambda split, point: x if split == "train" else xt,
            {"train": y, "val": yt},
            heads=heads,
            verbose=0,
        )
    assert report.values("train", "converged") == {"warm": 1.0, "cold": 0.0}
    assert report.values("train", "l2") == {"warm": 1e-2, "cold": 1e-2}
    # Minibatch warns when its validation loss never stopped it: it ran all epochs.
    with pytest.warns(ConvergenceWarning, match="ran all epochs=1 .* Increase epochs"):
        probe = Minibatch(epochs=1).fit(x, y, 4, validation_data=(xt, yt))
    assert probe.diagnostics() == pytest.approx(
        {"objective": probe.loss_, "grad_norm": probe.grad_norm_, "converged": 0.0, "l2": 1e-4}
    )


@pytest.mark.numerics
@pytest.mark.parametrize("seed", [0, 1])
def test_minibatch_early_stops_and_keeps_its_best_epoch(seed):
    # 60 examples of four overlapping classes in 20 dimensions, no penalty: the probe
    # overfits, the validation loss turns up (seen after 4 to 7 epochs on seeds 0-2),
    # training stops, and the weights are those of the best epoch.
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 260)
    x = (rng.normal(scale=0.7, size=(4, 20))[y] + rng.normal(size=(260, 20))).astype(np.float32)
    probe = Minibatch("rmsprop", l2=0.0, learning_rate=0.05, epochs=200, patience=2, batch_size=16)
    probe.fit(x[:60], y[:60], 4, validation_data=(x[60:], y[60:]))
    assert probe.converged_ and probe.n_iter_ < 200
    assert len(probe.validation_losses_) == probe.n_iter_
    held_out = probe.evaluate(x[60:], y[60:])["loss"]  # float64, of the restored weights
    assert held_out == pytest.approx(min(probe.validation_losses_), rel=1e-5)
    assert held_out < probe.validation_losses_[-1]
    # L-BFGS reaches the optimum of the training objective, far below the stopped probe's.
    optimum = LBFGSProbe(l2=0.0, tol=1e-6).fit(x[:60], y[:60], 4)
    assert optimum.loss_ < probe.loss_


@pytest.fixture(scope="module")
def cached(digits, tmp_path_factory):
    x, y, xt, yt = digits
    keras.utils.set_random_seed(0)
    probed = kp.ProbedModel(small_convnet(), points=["pool1", "gap"], num_classes=10)
    directory = tmp_path_factory.mktemp("cache")
    kp.FeatureCache.write(probed, (x[:600], y[:600]), directory, "train", verbose=0)
    kp.FeatureCache.write(probed, (xt[:300], yt[:300]), directory, "val", verbose=0)
    return probed, kp.FeatureCache.open(directory, model=probed)


def test_fit_probes_takes_an_estimator_and_refuses_unused_settings(cached):
    probed, cache = cached
    by_name = kp.fit_probes(probed, cache, solver="lbfgs", l2=1e-3, tol=1e-5, verbose=0)
    named_weights = [h.get_weights() for h in probed.heads]
    for head in probed.heads:
        head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    estimator = LBFGSProbe(l2=1e-3, tol=1e-5)
    by_estimator = kp.fit_probes(probed, cache, solver=estimator, verbose=0)
    # The same computation from the same start: the same report and heads, bit for bit.
    assert by_estimator == by_name
    for head, (kernel, bias) in zip(probed.heads, named_weights, strict=True):
        np.testing.assert_array_equal(head.get_weights()[0], kernel)
        np.testing.assert_array_equal(head.get_weights()[1], bias)
    assert not hasattr(estimator, "coef_")  # each point fits a clone; the template stays unfitted
    with pytest.raises(ValueError, match=r"does not use \['learning_rate'\].*solver='rmsprop' or"):
        kp.fit_probes(probed, cache, solver="lbfgs", learning_rate=0.1)
    with pytest.raises(ValueError, match=r"does not use \['max_iter'\]"):
        kp.fit_probes(probed, cache, solver="adam", max_iter=10)
    with pytest.raises(ValueError, match=r"set them on the estimator"):
        kp.fit_probes(probed, cache, solver=estimator, l2=1e-2)
    with pytest.raises(ValueError, match="RidgeProbe is a regressor"):
        kp.fit_probes(probed, cache, solver=RidgeProbe())


def test_fit_probes_chooses_each_penalty_on_the_validation_split(cached):
    probed, cache = cached
    for head in probed.heads:  # cold starts (other tests fitted them)
        head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    report = kp.fit_probes(probed, cache, l2="auto", verbose=0)
    chosen = report.values("train", "l2")
    assert set(chosen.values()) <= set(kp.solvers.L2S)
    # What LBFGSProbeCV() chooses alone on the cache's train and val splits (memory-mapped).
    train, val = (cache.features(split, "gap") for split in ("train", "val"))
    (_, labels), (_, val_labels) = (cache.arrays(split, points=[]) for split in ("train", "val"))
    alone = kp.solvers.LBFGSProbeCV().fit(train, labels, 10, X_val=val, y_val=val_labels)
    # The same computation: the same choice and fit, the head holding it in float32.
    assert chosen["gap"] == alone.l2_
    kernel = probed.get_probe("gap").get_weights()[0]
    np.testing.assert_array_equal(kernel, alone.coef_.astype(kernel.dtype))
    assert report.values("train", "converged") == {"pool1": 1.0, "gap": 1.0}
    with pytest.raises(ValueError, match="validation=None leaves it none; or hold out 5 folds"):
        kp.fit_probes(probed, cache, l2="auto", validation=None)
    with pytest.raises(ValueError, match=r"has none named 'val'.*splits are \['train', 'val'\]"):
        kp.fit_probes(probed, cache, l2="auto", train="val")  # then no other held-out split
    with pytest.raises(ValueError, match="l2='auto' chooses the penalty of solver='lbfgs'"):
        kp.fit_probes(probed, cache, solver="adam", l2="auto")


def test_one_loop_scores_every_split_with_the_task_metrics(cached):
    probed, cache = cached
    report = kp.fit_probes(probed, cache, l2=1e-3, verbose=0)
    for split in ("train", "val"):
        features, labels = cache.arrays(split)
        for point, head in zip(probed.points, probed.heads, strict=True):
            kernel, bias = head.get_weights()
            logits = features[point].astype(np.float64) @ kernel + bias
            # The heads hold the fit in float32; the report scored the float64 fit.
            expected = kp.tasks.Classification(10).scores(labels, logits)
            row = report.results[split][point]
            assert row["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    assert set(report.results["train"]["gap"]) == {
        "loss",
        "error",
        "top5_error",
        "objective",
        "grad_norm",
        "converged",
        "l2",
    }


def test_tasks_own_what_differs_between_classes_and_targets():
    classes, targets = kp.tasks.Classification(10), kp.tasks.Regression(["area", "perimeter"])
    assert classes.monitorable() == ["loss", "accuracy", "top5_accuracy"]
    assert targets.monitorable() == [
        "loss",
        "area_r2",
        "area_mspe",
        "perimeter_r2",
        "perimeter_mspe",
    ]
    assert (classes.solver_kind, targets.solver_kind) == ("classifier", "regressor")
    assert classes == kp.tasks.Classification(10) and classes != kp.tasks.Classification(3)
    assert targets.diagnostic_row({"alpha": np.array([0.1, 10.0])}) == {
        "area_alpha": 0.1,
        "perimeter_alpha": 10.0,
    }
    with pytest.raises(ValueError, match="`num_classes` must be an integer >= 2"):
        kp.tasks.Classification(1)
    with pytest.raises(ValueError, match="`targets` must be"):
        kp.tasks.Regression([])


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
@pytest.mark.numerics
def test_best_probe_weights_watches_regression_probes(digits):
    x, y, xt, yt = digits
    keras.utils.set_random_seed(0)
    base = small_convnet()
    area = lambda a: a.reshape(len(a), -1).mean(1, keepdims=True) * 10  # noqa: E731
    probed = kp.RegressionProbedModel(base, points=["pool1", "gap"], targets=["ink"])
    probed.compile(optimizer=keras.optimizers.Adam(0.05))
    stop = kp.callbacks.BestProbeWeights(monitor="val_ink_r2", patience=1)
    assert stop.mode == "max"
    probed.fit(
        x[:512], area(x[:512]), validation_data=(xt[:256], area(xt[:256])),
        epochs=6, batch_size=64, callbacks=[stop], verbose=0,
    )  # fmt: skip
    # Each head holds the weights of its best epoch: its held-out R^2 is the best seen
    # (up to float32 sums over other batch sizes).
    report = probed.evaluate_probes(xt[:256], area(xt[:256]), batch_size=64, verbose=0)
    for point in probed.points:
        assert report.values("test", "ink_r2")[point] == pytest.approx(stop.best_[point], abs=1e-4)
    with pytest.raises(ValueError, match="a metric of these probes"):
        probed.fit(
            x[:64], area(x[:64]), epochs=1, verbose=0,
            callbacks=[kp.callbacks.BestProbeWeights(monitor="accuracy")],
        )  # fmt: skip


@pytest.mark.slow  # 3 s: trains a convnet with ridge probes refitted
def test_probe_monitor_watches_regression_probes(digits):
    x, _, xt, _ = digits
    ink = lambda a: np.stack([a.mean((1, 2, 3)), a.std((1, 2, 3))], 1)  # noqa: E731
    monitor = kp.callbacks.ProbeMonitor(
        (x[:400], ink(x[:400])),
        targets=["mean", "spread"],
        validation_data=(xt[:200], ink(xt[:200])),
        points=["image", "gap"],
        reducers={"image": "flatten"},
        verbose=0,
    )
    keras.utils.set_random_seed(0)
    model = small_convnet()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(
        x[:256], np.zeros(256, "int64"), epochs=1, batch_size=64, callbacks=[monitor], verbose=0
    )
    history = monitor.history
    assert history.steps == [0, 4]
    assert {"val_mean_r2", "val_spread_mspe", "train_mean_r2", "mean_alpha"} <= set(history.metrics)
    # The pixels hold their own mean exactly: a ridge probe on them has R^2 of about 1.
    assert history.at(4, "val_mean_r2")["image"] > 0.99
    assert isinstance(monitor.probed, kp.RegressionProbedModel)
    with pytest.raises(ValueError, match="regression probes are fitted by `solver=`"):
        kp.callbacks.ProbeMonitor((x[:4], ink(x[:4])), targets=["a", "b"], l2=1.0)
    with pytest.raises(ValueError, match="Give either `num_classes`"):
        kp.callbacks.ProbeMonitor((x[:4], np.zeros(4)))
    with pytest.raises(ValueError, match="LBFGSProbe is a classifier"):
        kp.callbacks.ProbeMonitor((x[:4], ink(x[:4])), targets=["a", "b"], solver=LBFGSProbe())


def test_careless_calls_get_errors_that_name_the_fix(cached, blobs):
    probed, cache = cached
    x, y, _, _ = blobs
    with pytest.raises(ValueError, match="LBFGSProbe takes no held-out split.*validation='val'"):
        kp.fit_probes(probed, cache, solver="lbfgs", validation="val")
    with pytest.raises(ValueError, match="validation='train' is the train split"):
        kp.fit_probes(probed, cache, solver="adam", validation="train")
    regression = kp.RegressionProbedModel(probed.base, points=probed.points, targets=["t"])
    with pytest.raises(TypeError, match="use kp.fit_regression_probes"):
        kp.fit_probes(regression, cache, solver=RidgeProbe())
    features = lambda split, point: x  # noqa: E731
    task = kp.tasks.Classification(4)
    with pytest.raises(ValueError, match="No targets for the train split 'train'"):
        kp.fitting.fit_each(LBFGSProbe(), task, ["p"], features, {"val": y})
    with pytest.raises(ValueError, match=r"Labels must lie in \[0, num_classes\) = \[0, 4\)"):
        kp.fitting.fit_each(LBFGSProbe(), task, ["p"], features, {"train": y + 1})
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"`features` holds NaN or infinite values .* \[3\]"):
        Minibatch(epochs=1).fit(bad, y, 4)
    with pytest.raises(ValueError, match="`validation_data` holds 19 features"):
        Minibatch(epochs=1).fit(x, y, 4, validation_data=(x[:, :19], y))
    probe = LBFGSProbe(l2=1e-2).fit(x, y)  # num_classes left out: the largest label plus one
    assert probe.coef_.shape == (20, 4)
    with pytest.raises(ValueError, match=r"Labels must lie in \[0, num_classes\) = \[0, 4\)"):
        probe.score(x, y + 1)
    with pytest.raises(ValueError, match="`callbacks` must be a list of Keras callbacks"):
        Minibatch(callbacks=5)
    with pytest.raises(ValueError, match="`solver` must be one of"):
        kp.solvers.get(["lbfgs"])
    with pytest.raises(ValueError, match="`max_examples` must be an integer >= 1 or None"):
        kp.callbacks.ProbeMonitor((x, y), num_classes=4, max_examples=0)
    assert len({kp.tasks.Classification(4), kp.tasks.Classification(4)}) == 1


def test_top_k_hits_follows_in_top_k_also_for_ties_and_non_finite_rows():
    logits = np.array([[3.0, 2.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, np.nan, 1.0, 2.0]])
    labels = np.array([2, 3, 3])
    ours = keras.ops.convert_to_numpy(kp.metrics.top_k_hits(labels, logits, k=2))
    theirs = tf.math.in_top_k(labels, logits.astype(np.float32), k=2).numpy()
    np.testing.assert_array_equal(ours, theirs.astype(np.float64))
    np.testing.assert_array_equal(ours, [1.0, 1.0, 0.0])  # a tie at the boundary counts in
