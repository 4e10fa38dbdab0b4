"""Solvers on cached features: L-BFGS reaches scikit-learn's optimum, LBFGSProbeCV chooses its
penalty; minibatch as the paper."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import assert_error_rate, objective, small_convnet
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

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


def _classes(seed, num_classes, n=150, n_val=1000, d=40, separation=3.0):
    """Gaussian classes in `d` dimensions, float32: `n` to fit on, `n_val` held out. With
    150 rows for 40 features the penalty matters: too weak overfits, too strong underfits."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(num_classes, d)) * separation / np.sqrt(d)
    y = rng.integers(0, num_classes, n + n_val)
    x = (means[y] + rng.normal(size=(n + n_val, d))).astype(np.float32)
    return x[:n], y[:n], x[n:], y[n:]


@pytest.mark.numerics
@pytest.mark.parametrize("num_classes", [4, 2])
def test_lbfgs_probe_cv_chooses_the_penalty_of_scikit_learns_path(num_classes):
    """The penalty of least held-out cross-entropy along scikit-learn's path, the same
    grid: LogisticRegression(C = 1 / (l2 n)) for 3+ classes, C = 2 / (l2 n) for two
    (one weight vector: see kp.solvers), each scored by log_loss on the same split."""
    x, y, xv, yv = _classes(0, num_classes)
    whole = kp.solvers.LBFGSProbeCV(patience=None).fit(x, y, X_val=xv, y_val=yv)
    l2s = list(whole.path_)
    assert l2s == sorted(kp.solvers.L2S, reverse=True)  # the default grid, strongest first
    # As shipped, the path stops once 2 penalties in a row score no better than the best:
    # the same fits up to there, the same choice.
    probe = kp.solvers.LBFGSProbeCV(cv="val").fit(x, y, X_val=xv, y_val=yv)
    fitted = list(probe.path_)
    assert fitted == l2s[: l2s.index(probe.l2_) + 3] and probe.l2_ == whole.l2_
    assert probe.path_ == {l2: whole.path_[l2] for l2 in fitted}
    factor = 1 if num_classes > 2 else 2
    theirs = {}
    with threadpool_limits(1):  # 2 BLAS threads beside TensorFlow's: 6x slower here
        for l2 in l2s:
            reference = LogisticRegression(C=factor / (l2 * len(y)), tol=1e-10, max_iter=10_000)
            theirs[l2] = log_loss(yv, reference.fit(x, y).predict_proba(xv))
    best = min(theirs, key=theirs.get)
    # Equal here (seeds 0-2, 2 and 4 classes: 1e-2 or 10^-1.5, an interior optimum); a
    # near-tie would pass within 1e-3 of scikit-learn's least held-out loss.
    assert probe.l2_ == best or theirs[probe.l2_] <= theirs[best] * (1 + 1e-3), (probe.l2_, best)
    assert 1e-6 < probe.l2_ < 1.0
    # The held-out losses are those of the optima (float32, tol 1e-4: seen within 4e-3)
    # from the strongest penalty to the chosen one. (Weaker ones, nearly separable, have
    # flat optima that warm and cold starts leave at different points.)
    for l2 in l2s[: l2s.index(probe.l2_) + 1]:
        assert probe.path_[l2] == pytest.approx(theirs[l2], rel=1e-2), l2
    # The probe kept is the path's fit at l2_: the optimum at that penalty, as a cold fit
    # finds it within their tolerance (tol 1e-4: probabilities seen within 8e-3).
    alone = LBFGSProbe(l2=probe.l2_).fit(x, y, num_classes)
    assert probe.loss_ == pytest.approx(alone.loss_, rel=1e-4)
    np.testing.assert_allclose(probe.predict_proba(xv), alone.predict_proba(xv), atol=2e-2)
    assert probe.diagnostics()["l2"] == probe.l2_
    assert probe.converged_ and probe.n_iter_ > alone.n_iter_


@pytest.mark.numerics
def test_lbfgs_probe_cv_warm_starts_cost_fewer_iterations_than_cold_starts():
    x, y, xv, yv = _classes(1, 4)
    l2s = kp.solvers.L2S[6:]  # 1e-3 to 1
    path = kp.solvers.LBFGSProbeCV(l2s=l2s).fit(x, y, X_val=xv, y_val=yv)
    cold = [LBFGSProbe(l2=l2).fit(x, y, 4).n_iter_ for l2 in path.path_]
    # Seen on seeds 0-4: 34-48 iterations along the path, 76-95 from cold starts (a ratio
    # of 0.42-0.62; 0.62-0.73 from the last fit alone, without the predictor step).
    assert path.n_iter_ < 0.75 * sum(cold), (path.n_iter_, cold)


def test_lbfgs_probe_cv_on_folds_is_the_mean_over_stratified_seeded_folds():
    x, y, _, _ = _classes(2, 3, n=150)
    l2s, tight = (1e-1, 1e-2), {"dtype": "float64", "tol": 1e-6}
    probe = kp.solvers.LBFGSProbeCV(l2s=l2s, cv=3, seed=5, **tight).fit(x, y)
    # The same folds by hand: StratifiedKFold(3, shuffle=True, random_state=5), every
    # penalty fitted from a cold start, held-out cross-entropy averaged over the folds.
    folds = list(StratifiedKFold(3, shuffle=True, random_state=5).split(x, y))
    for l2 in l2s:
        losses = []
        for train_rows, held_rows in folds:
            fold = LBFGSProbe(l2=l2, **tight).fit(x[train_rows], y[train_rows], 3)
            losses.append(fold.evaluate(x[held_rows], y[held_rows])["loss"])
        # Warm and cold starts, each within tol 1e-6: seen within 2e-5.
        assert probe.path_[l2] == pytest.approx(np.mean(losses), rel=1e-4), l2
    # Refitted on all rows at the chosen penalty.
    assert probe.l2_ == min(probe.path_, key=probe.path_.get)
    alone = LBFGSProbe(l2=probe.l2_, **tight).fit(x, y, 3)
    assert probe.loss_ == pytest.approx(alone.loss_, rel=1e-6)
    with pytest.raises(ValueError, match=r"cv=3\) holds out folds of X: it takes no X_val"):
        kp.solvers.LBFGSProbeCV(cv=3).fit(x, y, X_val=x, y_val=y)
    with pytest.raises(ValueError, match="pass fit\\(X, y, X_val=..., y_val=...\\), or cv=5"):
        kp.solvers.LBFGSProbeCV().fit(x, y)


class _Recorded:
    """A 2-D array read only by row slices, recording the largest read: a cache's stand-in
    that would fail on any attempt to read it whole."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.largest = array, array.shape, array.dtype, 0

    def __len__(self):
        return len(self.array)

    def __getitem__(self, key):
        assert isinstance(key, slice), key
        rows = self.array[key]
        self.largest = max(self.largest, len(rows))
        return rows


@pytest.mark.parametrize("cv", ["val", 3])
def test_lbfgs_probe_cv_streams_features_a_chunk_at_a_time(cv, monkeypatch):
    x, y, xv, yv = _classes(3, 4, n=300, n_val=200)
    held_out = {"X_val": xv, "y_val": yv} if cv == "val" else {}
    in_memory = kp.solvers.LBFGSProbeCV(l2s=(1e-1, 1e-2), cv=cv).fit(x, y, **held_out)
    # Chunks of 50 rows (float64) and nothing held: every evaluation reads the features
    # again, a chunk at a time, the folds' rows included.
    monkeypatch.setattr(kp.solvers, "CHUNK_BYTES", 8 * 40 * 50)
    monkeypatch.setattr(kp.solvers, "HELD_BYTES", 0)
    rows = _Recorded(x)
    if cv == "val":
        held_out = {"X_val": _Recorded(xv), "y_val": yv}
    streamed = kp.solvers.LBFGSProbeCV(l2s=(1e-1, 1e-2), cv=cv).fit(rows, y, **held_out)
    assert rows.largest <= 100  # float32 chunks of 100 rows; a fold's spans no longer
    if cv == "val":
        assert held_out["X_val"].largest <= 50  # the held-out loss, in float64 chunks
    assert streamed.l2_ == in_memory.l2_
    # The same sums in other chunks: equal within float32 rounding.
    for l2, loss in in_memory.path_.items():
        assert streamed.path_[l2] == pytest.approx(loss, rel=1e-4)
    np.testing.assert_allclose(streamed.coef_, in_memory.coef_, rtol=1e-3, atol=1e-4)


_WORKER = """
import json, os, sys
rank, ports, out = int(sys.argv[1]), [int(p) for p in sys.argv[2].split(",") if p], sys.argv[3]
if len(ports) > 1:
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
        "task": {"type": "worker", "index": rank},
    })
import tensorflow as tf
strategy = (tf.distribute.MultiWorkerMirroredStrategy() if len(ports) > 1
            else tf.distribute.get_strategy())
import numpy as np
from keras_probes import solvers
solvers.CHUNK_BYTES = 4 * 40 * 100  # 100-row chunks, shared between the workers
solvers.HELD_BYTES = 0  # streamed, as a cache larger than memory
rng = np.random.default_rng(0)
means = rng.normal(size=(4, 40)) * 3 / np.sqrt(40)
y = rng.integers(0, 4, 800)
x = (means[y] + rng.normal(size=(800, 40))).astype(np.float32)
path = f"{out}/x.{len(ports)}.{rank}.npy"
np.save(path, x[:300])
rows = np.load(path, mmap_mode="r")
settings = {"l2s": (1e-1, 1e-2, 1e-3), "dtype": "float64", "tol": 1e-6}
with strategy.scope():
    val = solvers.LBFGSProbeCV(**settings).fit(rows, y[:300], 4, X_val=x[300:], y_val=y[300:])
    folds = solvers.LBFGSProbeCV(cv=3, **settings).fit(rows, y[:300], 4)
saved = {}
for name, fit in (("val", val), ("folds", folds)):
    saved.update({f"{name}_l2": fit.l2_, f"{name}_path": list(fit.path_.values()),
                  f"{name}_coef": fit.coef_, f"{name}_n_iter": fit.n_iter_})
np.savez(f"{out}/{len(ports)}.{rank}.npz", **saved)
print("done", flush=True)
"""


@pytest.mark.slow  # 1-3 min: three TensorFlow processes
@pytest.mark.numerics
def test_lbfgs_probe_cv_under_multi_worker_mirrored_strategy(tmp_path):
    """Two workers, each summing its share of the streamed chunks (the folds' rows too),
    choose what one process chooses, with the same path up to the order of the sums."""
    from test_multiworker import free_ports

    (tmp_path / "worker.py").write_text(_WORKER)
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    for workers in (1, 2):
        ports = ",".join(map(str, free_ports(workers))) if workers > 1 else ""
        processes = [
            subprocess.Popen(
                [sys.executable, str(tmp_path / "worker.py"), str(rank), ports, str(tmp_path)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for rank in range(workers)
        ]
        for process in processes:
            out, err = process.communicate(timeout=900)
            assert process.returncode == 0 and "done" in out, err[-3000:]
    alone = np.load(tmp_path / "0.0.npz")
    for rank in range(2):
        worker = np.load(tmp_path / f"2.{rank}.npz")
        for name in ("val", "folds"):
            assert worker[f"{name}_l2"] == alone[f"{name}_l2"]
            assert worker[f"{name}_n_iter"] == alone[f"{name}_n_iter"]
            # Seen within 1.1e-13 (paths) and 8.6e-13 (weights).
            np.testing.assert_allclose(worker[f"{name}_path"], alone[f"{name}_path"], rtol=1e-10)
            np.testing.assert_allclose(worker[f"{name}_coef"], alone[f"{name}_coef"], atol=1e-9)
