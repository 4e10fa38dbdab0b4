"""Training probes on cached features: to the convex optimum, or as the paper did.

A probe's objective, per point, is convex:

    mean cross-entropy(softmax(features @ kernel + bias), labels)
        + l2 / 2 * ||kernel||^2        (the bias is not penalised)

`solver="lbfgs"` minimises it full-batch with SciPy's L-BFGS-B, driven by
values and gradients that TensorFlow computes (under any active
`tf.distribute` strategy), and certifies the result with the final gradient
norm. `solver="rmsprop"` or `"adam"` is the paper's minibatch setting, with
early stopping per probe on the validation split.

For three classes or more this is scikit-learn's multinomial
`LogisticRegression(C=1 / (l2 * n_train))`, `n_train` the number of training
examples. (For two classes scikit-learn fits a single weight vector, the
same model with half the penalty: `C=2 / (l2 * n_train)`.)
"""

import keras
import numpy as np

from keras_probes._lbfgs import LBFGSProbe, _check_positive, _Objective, fit_head
from keras_probes.callbacks import BestProbeWeights
from keras_probes.model import _ProbeTrainer
from keras_probes.report import ProbeReport

__all__ = ["LBFGSProbe", "fit_probes"]

_SOLVERS = ("lbfgs", "rmsprop", "adam")
_VALIDATION_NAMES = ("val", "validation", "valid")


class _CachedProbes(_ProbeTrainer):
    """The heads of a `ProbedModel`, trained on cached features (shared, not copied)."""

    def __init__(self, probed, l2=0.0):
        super().__init__(name=f"{probed.name}_on_cache")
        self._init_probes(probed.points, probed.heads, probed.num_classes, l2)
        self.built = True

    def extract_features(self, x):
        return x


def fit_probes(
    probed,
    cache,
    solver: str = "lbfgs",
    l2: float = 1e-4,
    *,
    train: str = "train",
    validation: str | None = "auto",
    max_iter: int = 1000,
    tol: float = 1e-4,
    dtype: str = "float32",
    epochs: int = 50,
    batch_size: int = 256,
    patience: int = 3,
    learning_rate: float = 1e-3,
    seed: int = 0,
    callbacks: list | None = None,
    verbose: int = 1,
) -> ProbeReport:
    """Trains every probe of `probed` on cached features, then reports every split.

    The trained heads end up in `probed`, which then predicts, saves and
    exports as usual. The cache must have been written from `probed` (same
    architecture, weights, points and reducers); otherwise this refuses it.

    Args:
        probed: the `kp.ProbedModel` the cache was written from.
        cache: a `kp.FeatureCache`.
        solver: `"lbfgs"` (full batch, to the optimum), or `"rmsprop"` /
            `"adam"` (minibatch, the paper's setting, early-stopped per probe
            on the validation split). Defaults to `"lbfgs"`.
        l2: L2 penalty on every kernel, `l2 / 2 * ||kernel||^2`; for three
            classes or more, scikit-learn's `LogisticRegression(C=1 / (l2 *
            n_train))`. Defaults to `1e-4`.
        train: the split to train on. Defaults to `"train"`.
        validation: the split for early stopping (minibatch solvers):
            `"auto"` takes `"val"`, `"validation"` or `"valid"` if the cache
            has one; `None` trains for `epochs` without stopping.
        max_iter, tol, dtype: L-BFGS iterations, gradient tolerance and
            computation dtype, as in `LBFGSProbe`. Default to `1000`, `1e-4`
            and `"float32"`.
        epochs, batch_size, patience, learning_rate: minibatch settings.
            Default to `50`, `256`, `3` and `1e-3`.
        seed: seed of the minibatch shuffling. Defaults to `0`.
        callbacks: more Keras callbacks for the minibatch solvers' `fit`,
            e.g. `keras.callbacks.TensorBoard`. Defaults to `None`.
        verbose: `1` shows progress. Defaults to `1`.

    Returns:
        A `ProbeReport` with loss, error and top-5 error on every complete
        split of the cache. Its `train` split also holds, per probe,
        `objective` (cross-entropy plus penalty) and `grad_norm`, the largest
        gradient entry of the objective in magnitude: how far from the
        optimum each probe ended (0 at the optimum).

    Example:

    ```python
    cache = kp.FeatureCache.open("cache/", model=probed)
    report = kp.fit_probes(probed, cache, solver="lbfgs", l2=1e-4)
    print(report.table(metrics=["error", "grad_norm"]))
    ```
    """
    if solver not in _SOLVERS:
        raise ValueError(f"`solver` must be one of {_SOLVERS}. Received: solver={solver!r}")
    _check_positive("l2", l2, allow_zero=True)
    _check_positive("epochs", epochs)
    _check_positive("batch_size", batch_size)
    _check_positive("patience", patience, allow_zero=True)
    _check_positive("learning_rate", learning_rate)
    _check_positive("seed", seed, allow_zero=True)
    cache.check_model(probed)
    validation = _validation_split(cache, train, validation)
    trainer = _CachedProbes(probed, l2=l2)
    if solver == "lbfgs":
        certificates = _fit_lbfgs(
            probed,
            cache,
            train,
            LBFGSProbe(l2=l2, max_iter=max_iter, tol=tol, dtype=dtype),
            verbose,
        )
    else:
        optimizer = keras.optimizers.get(
            {"class_name": solver, "config": {"learning_rate": learning_rate}}
        )
        trainer.compile(optimizer=optimizer)
        callbacks = list(callbacks or [])
        if validation:
            callbacks.append(BestProbeWeights(patience=patience))
        trainer.fit(
            cache.dataset(train, batch_size, shuffle=True, seed=seed),
            validation_data=cache.dataset(validation, batch_size) if validation else None,
            epochs=epochs,
            shuffle=False,  # the cache's dataset shuffles itself, from `seed`
            callbacks=callbacks,
            verbose=verbose and 2,
        )
        certificates = _certificates(probed, cache, train, l2, dtype)
    if not trainer.compiled:
        trainer.compile()  # Keras evaluates compiled models only; no step runs
    report = None
    for split in cache.complete_splits:
        logs = trainer.evaluate(cache.dataset(split, batch_size), verbose=0, return_dict=True)
        part = ProbeReport.from_logs(
            logs, probed.points, split, probed.num_classes, probed.base.name
        )
        report = part if report is None else report.merge(part)
    for point, (value, grad_norm) in certificates.items():
        report.results[train][point].update(objective=float(value), grad_norm=grad_norm)
    return report


def _fit_lbfgs(probed, cache, train, solver, verbose):
    """Fits every probe of `probed` in place; returns `{point: (objective, grad_norm)}`."""
    certificates = {}
    progress = keras.utils.Progbar(len(probed.points), unit_name="probe") if verbose else None
    for i, (point, head) in enumerate(zip(probed.points, probed.heads, strict=True)):
        features, labels = cache.arrays(train, points=[point])
        probe = fit_head(solver, head, features[point], labels, probed.num_classes)
        certificates[point] = (probe.loss_, probe.grad_norm_)
        if progress is not None:
            progress.update(i + 1, [("iterations", probe.n_iter_), ("grad_norm", probe.grad_norm_)])
    return certificates


def _certificates(probed, cache, train, l2, dtype):
    """`{point: (objective, grad_norm)}` of the heads as they are, on the train split."""
    certificates = {}
    for point, head in zip(probed.points, probed.heads, strict=True):
        features, labels = cache.arrays(train, points=[point])
        objective = _Objective(features[point], labels, probed.num_classes, l2, dtype)
        kernel, bias = head.get_weights()
        value, gradient = objective(np.concatenate([kernel.ravel(), bias]).astype(np.float64))
        certificates[point] = (value, float(np.abs(gradient).max()))
    return certificates


def _validation_split(cache, train, validation):
    if validation == "auto":
        return next((s for s in _VALIDATION_NAMES if s in cache.splits and s != train), None)
    if validation is not None:
        cache.require_split(validation)
    return validation
