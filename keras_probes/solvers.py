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

import math

import keras
import numpy as np
import scipy.optimize
import tensorflow as tf

from keras_probes import _distribute
from keras_probes.callbacks import BestProbeWeights
from keras_probes.model import _ProbeTrainer
from keras_probes.report import ProbeReport

__all__ = ["LBFGSProbe", "fit_probes"]

_SOLVERS = ("lbfgs", "rmsprop", "adam")
_XLA_MAX_FEATURES = 128
_CHUNK_BYTES = 1 << 26  # rows per TensorFlow call: 64 MiB of float32 features
_VALIDATION_NAMES = ("val", "validation", "valid")


class LBFGSProbe:
    """One softmax probe fitted to its optimum by full-batch L-BFGS.

    scikit-learn's conventions: `fit` returns `self`; what was learned ends
    in `_`. The features may be float16, float32 or float64, in memory or
    memory-mapped; they are sent to TensorFlow in chunks, and the chunk sums
    are accumulated in float64.

    Args:
        l2: the L2 penalty of the objective, `l2 / 2 * ||kernel||^2`;
            scikit-learn's `C` is `1 / (l2 * n)`. Defaults to `1e-4`.
        max_iter: most L-BFGS iterations. Defaults to `1000`.
        tol: stop once no entry of the gradient exceeds `tol` in magnitude,
            as scikit-learn's `tol` for `lbfgs`; the gradient with respect to
            the weights of the centred, rescaled features L-BFGS works on
            (`grad_norm_` is the plain one). Defaults to `1e-4`.
        memory: number of L-BFGS correction pairs. Defaults to `20`.
        dtype: `"float32"` (fast) or `"float64"` for the computation. In
            float32 the objective is resolved to about 1e-7 of its value,
            which bounds how small the gradient can be driven (about 1e-4 to
            1e-5); float64 goes as far as `tol` asks, at about twice the time.
            Defaults to `"float32"`.

    Attributes:
        coef_: the kernel, `(features, classes)`.
        intercept_: the bias, `(classes,)`.
        loss_: the objective at the end (cross-entropy plus penalty).
        grad_norm_: the largest gradient entry in magnitude at the end: the
            optimality certificate (0 exactly at the optimum).
        n_iter_: iterations run.
        converged_: whether L-BFGS met its stopping criterion (rather than
            `max_iter`, or a line search that float32 could not resolve).

    Example:

    ```python
    probe = kp.solvers.LBFGSProbe(l2=1e-4).fit(features, labels, num_classes=10)
    probe.loss_, probe.grad_norm_
    ```
    """

    def __init__(
        self,
        *,
        l2: float = 1e-4,
        max_iter: int = 1000,
        tol: float = 1e-4,
        memory: int = 20,
        dtype: str = "float32",
    ):
        _check_positive("l2", l2, allow_zero=True)
        _check_positive("max_iter", max_iter)
        _check_positive("tol", tol)
        if dtype not in ("float32", "float64"):
            raise ValueError(f"`dtype` must be 'float32' or 'float64'. Received: dtype={dtype!r}")
        self.l2, self.max_iter, self.tol, self.memory = float(l2), int(max_iter), tol, memory
        self.dtype = dtype

    def fit(self, features, labels, num_classes: int, coef_init=None, intercept_init=None):
        """Fits the probe; `coef_init`/`intercept_init` warm-start it (zeros by default)."""
        if not hasattr(features, "shape"):
            features = np.asarray(features)
        labels = np.asarray(labels)
        n, d = features.shape
        if n == 0 or len(labels) != n:
            raise ValueError(
                f"`features` and `labels` must hold the same number (> 0) of examples. "
                f"Received: features of shape {features.shape}, labels of shape {labels.shape}"
            )
        objective = _Objective(features, labels, num_classes, self.l2, self.dtype)
        kernel = np.zeros((d, num_classes)) if coef_init is None else np.asarray(coef_init)
        bias = np.zeros(num_classes) if intercept_init is None else np.asarray(intercept_init)
        # L-BFGS runs on centred, rescaled features, an exact change of
        # variables: the objective is the same, but pooled activations of very
        # different scales no longer make it ill-conditioned.
        mean, std = _moments(features, self.l2)

        def standardized(theta):
            loss, gradient = objective(_from_standardized(theta, mean, std, num_classes))
            grad_kernel, grad_bias = objective.unpack(gradient)
            grad_kernel = (grad_kernel - mean[:, None] * grad_bias[None, :]) * (1 / std)[:, None]
            return loss, np.concatenate([grad_kernel.ravel(), grad_bias])

        result = scipy.optimize.minimize(
            standardized,
            np.concatenate([(kernel * std[:, None]).ravel(), bias + mean @ kernel]),
            jac=True,
            method="L-BFGS-B",
            options={
                "maxiter": self.max_iter,
                "gtol": self.tol,
                # As scikit-learn: stop on the gradient, not on a stalled loss.
                "ftol": 64 * np.finfo(float).eps,
                "maxcor": self.memory,
            },
        )
        theta = _from_standardized(result.x, mean, std, num_classes)
        self.coef_, self.intercept_ = objective.unpack(theta)
        self.loss_, gradient = objective(theta)
        self.grad_norm_ = float(np.abs(gradient).max())
        self.n_iter_ = int(result.nit)
        self.converged_ = result.status == 0
        return self


def _moments(features, l2, rows=1 << 16):
    """Per-feature mean, and the scale that equalises each weight's curvature.

    A weight on feature i has curvature about `var_i` from the data and `l2`
    from the penalty: dividing it by `sqrt(var_i + l2)` makes both sum to
    about one for every feature, large or nearly constant. Float64, two passes.
    """
    chunks = [slice(i, i + rows) for i in range(0, len(features), rows)]
    mean = sum(np.asarray(features[c], np.float64).sum(0) for c in chunks) / len(features)
    variance = sum(((np.asarray(features[c], np.float64) - mean) ** 2).sum(0) for c in chunks)
    scale = np.sqrt(variance / len(features) + l2)
    return mean, np.where(scale > 0, scale, 1.0)


def _from_standardized(theta, mean, std, num_classes):
    """Parameters for `(x - mean) / std` turned into those for `x` itself."""
    kernel = theta[:-num_classes].reshape(-1, num_classes) / std[:, None]
    return np.concatenate([kernel.ravel(), theta[-num_classes:] - mean @ kernel])


class _Objective:
    """The probe objective and its gradient over flat float64 parameters."""

    def __init__(self, features, labels, num_classes, l2, dtype="float32"):
        self.n, self.d = features.shape
        self.num_classes, self.l2, self.dtype = num_classes, l2, tf.as_dtype(dtype)
        rows = max(1, _CHUNK_BYTES // (4 * self.d))
        self.chunks = [
            (tf.constant(features[i : i + rows]), tf.constant(labels[i : i + rows], tf.int32))
            for i in range(0, self.n, rows)
        ]
        # Narrow features make small kernels whose per-op dispatch dominates:
        # XLA fuses them (2x faster at 64 features here), while for wide
        # ones the backend's own matmul beats XLA's (2-3x at 256 and more).
        self.sums = _distribute.summed(_cross_entropy_sums, jit_compile=self.d <= _XLA_MAX_FEATURES)

    def unpack(self, theta):
        kernel = theta[: self.d * self.num_classes].reshape(self.d, self.num_classes)
        return kernel, theta[self.d * self.num_classes :]

    def __call__(self, theta):
        kernel, bias = self.unpack(theta)
        args = (tf.constant(kernel, self.dtype), tf.constant(bias, self.dtype))
        loss, grad_kernel, grad_bias = 0.0, 0.0, 0.0
        for chunk in self.chunks:
            value, g_kernel, g_bias = (
                t.numpy().astype(np.float64) for t in self.sums(chunk, *args)
            )
            loss, grad_kernel, grad_bias = loss + value, grad_kernel + g_kernel, grad_bias + g_bias
        loss = loss / self.n + self.l2 / 2 * np.sum(kernel**2)
        grad_kernel = grad_kernel / self.n + self.l2 * kernel
        return loss, np.concatenate([grad_kernel.ravel(), grad_bias / self.n])


def _cross_entropy_sums(batch, kernel, bias):
    """Summed cross-entropy of a batch and its gradients, in closed form."""
    x, y = batch
    x = tf.cast(x, kernel.dtype)
    logits = tf.matmul(x, kernel) + bias
    loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    residual = tf.nn.softmax(logits) - tf.one_hot(y, tf.shape(kernel)[1], dtype=kernel.dtype)
    return loss, tf.matmul(x, residual, transpose_a=True), tf.reduce_sum(residual, axis=0)


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
        kernel, bias = head.get_weights()
        probe = solver.fit(
            features[point], labels, probed.num_classes, coef_init=kernel, intercept_init=bias
        )
        head.set_weights([probe.coef_.astype(kernel.dtype), probe.intercept_.astype(bias.dtype)])
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
        cache._complete_split(validation)
    return validation


def _check_positive(name, value, allow_zero=False):
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be a finite number {bound}. Received: {name}={value!r}")
