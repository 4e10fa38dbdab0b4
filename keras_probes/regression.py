"""Regression probes: Regression Concept Vectors (Graziani et al., 2019).

A regression probe predicts a continuous concept measure (a digit's area, an
image's colourfulness; see `kp.concepts`) linearly from one layer's features.
Its quality is the R^2 and the mean squared prediction error (MSPE) on
held-out data; its unit weight vector is the layer's Regression Concept Vector
(RCV), the direction in which the concept grows.

Two ways to fit them, as for classification probes:

- `RegressionProbedModel`: the probes as Keras heads on any model, trained by
  `fit` with a mean squared error (one forward pass of the base feeds every
  probe; gradients reach the heads only).
- `fit_regression_probes`: closed-form ridge regression (`RidgeProbe`) on the
  features of a `kp.FeatureCache`, the penalty chosen per target by exact
  leave-one-out error. One cache serves the class probes and any number of
  concepts: the targets are given beside it, in the cache's example order.
"""

from collections.abc import Sequence

import keras
import numpy as np
import scipy.linalg

from keras_probes import _validation
from keras_probes.heads import RegressionHead
from keras_probes.model import ProbedModel
from keras_probes.report import ProbeReport, log_key

__all__ = [
    "ALPHAS",
    "RegressionProbedModel",
    "RidgeProbe",
    "fit_regression_probes",
    "mspe",
    "r2",
]

#: The default ridge penalties searched by `fit_regression_probes`.
ALPHAS = tuple(float(a) for a in np.logspace(-3, 6, 19))


def r2(targets, predictions) -> np.ndarray:
    """Coefficient of determination per target column: `1 - SS_res / SS_tot`."""
    targets, predictions = _columns(targets), _columns(predictions)
    residual = ((targets - predictions) ** 2).sum(axis=0)
    total = ((targets - targets.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, 1.0 - residual / total, np.nan)


def mspe(targets, predictions) -> np.ndarray:
    """Mean squared prediction error per target column."""
    return ((_columns(targets) - _columns(predictions)) ** 2).mean(axis=0)


def _unit_columns(matrix):
    """Each column scaled to unit length (a zero column stays zero): the RCVs."""
    norm = np.linalg.norm(matrix, axis=0)
    return matrix / np.where(norm > 0, norm, 1.0)


def _columns(values):
    values = np.asarray(values, np.float64)
    return values[:, None] if values.ndim == 1 else values


class RidgeProbe:
    """A linear regression probe with an L2 penalty, fitted in closed form.

    Minimises `||y - X w - b||^2 + alpha * ||w||^2` (the intercept `b` is not
    penalised): scikit-learn's `Ridge(alpha)`. Solved in float64 on centred
    features through the eigendecomposition of the smaller of the two Gram
    matrices, `X^T X` (features x features) or `X X^T` (examples x examples),
    so that a wide layer with few examples costs no more than a narrow one.

    Given several penalties, each target takes the one of least leave-one-out
    squared error, computed exactly from the same decomposition for all of
    them at once: scikit-learn's `RidgeCV(alphas, alpha_per_target=True)`.

    Args:
        alpha: the L2 penalty (`> 0`), or a sequence of penalties to choose
            from. Defaults to `1.0`.

    Attributes:
        coef_: `(features,)` for one target, `(features, targets)` for several.
        intercept_: `()` or `(targets,)`.
        alpha_: the penalty used, per target: `()` or `(targets,)`.
        direction_: the RCV, `coef_` scaled to unit length (per target).

    Example:

    ```python
    probe = kp.regression.RidgeProbe(alpha=[0.1, 1.0, 10.0]).fit(features, area)
    probe.score(held_out_features, held_out_area)   # R^2
    probe.direction_                                # the concept's direction
    ```
    """

    def __init__(self, alpha: float | Sequence[float] = 1.0):
        alphas = np.atleast_1d(np.asarray(alpha, dtype=object))
        valid = (
            alphas.ndim == 1
            and len(alphas) > 0
            and all(
                isinstance(a, int | float | np.number)
                and not isinstance(a, bool)
                and np.isfinite(a)
                and a > 0
                for a in alphas
            )
        )
        if not valid:
            raise ValueError(
                "`alpha` must be a finite number > 0 or a non-empty sequence of them. "
                f"Received: alpha={alpha!r}"
            )
        self.alpha = alpha
        self._alphas = alphas.astype(np.float64)

    def fit(self, features, targets) -> "RidgeProbe":
        x = np.asarray(features, np.float64)
        y = np.asarray(targets, np.float64)
        if x.ndim != 2 or len(x) != len(y) or len(x) == 0 or y.ndim not in (1, 2):
            raise ValueError(
                "`features` must be (n, features) and `targets` (n,) or (n, targets), with "
                f"the same n > 0. Received: {x.shape} and {y.shape}"
            )
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("`features` and `targets` must be finite (no NaN or inf).")
        x_mean, y_mean = x.mean(axis=0), _columns(y).mean(axis=0)
        xc, yc = x - x_mean, _columns(y) - y_mean
        n, d = xc.shape
        # With X^T X = V S V^T (primal) or X X^T = U S U^T (dual), the fit for
        # penalty a is Q diag(w) Q^T y: Q = X V, w = 1 / (s + a), or Q = U,
        # w = s / (s + a); diag(Q diag(w) Q^T) + 1/n is the hat matrix's
        # diagonal (the intercept's share included), which gives the exact
        # leave-one-out residuals (y - fit) / (1 - hat).
        primal = d <= n
        spectrum, basis = scipy.linalg.eigh(xc.T @ xc if primal else xc @ xc.T)
        spectrum = np.clip(spectrum, 0.0, None)
        q = xc @ basis if primal else basis
        projected = q.T @ yc

        def weights(alphas):
            return (1.0 if primal else spectrum[:, None]) / (spectrum[:, None] + alphas)

        if len(self._alphas) == 1:
            alpha = np.full(yc.shape[1], self._alphas[0])
        else:
            leave_one_out = []
            for a in self._alphas:
                w = weights(np.array([a]))[:, 0]
                residual = yc - q @ (w[:, None] * projected)
                hat = (q**2) @ w + 1.0 / n
                leave_one_out.append(((residual / (1.0 - hat)[:, None]) ** 2).mean(axis=0))
            alpha = self._alphas[np.argmin(np.stack(leave_one_out), axis=0)]
        solved = projected / (spectrum[:, None] + alpha[None, :])  # (rank, targets)
        coef = basis @ solved if primal else xc.T @ (basis @ solved)
        intercept = y_mean - x_mean @ coef
        direction = _unit_columns(coef)
        if y.ndim == 1:
            coef, intercept, alpha, direction = coef[:, 0], intercept[0], alpha[0], direction[:, 0]
        self.coef_, self.intercept_, self.alpha_, self.direction_ = (
            coef,
            intercept,
            alpha,
            direction,
        )
        return self

    def predict(self, features) -> np.ndarray:
        return np.asarray(features, np.float64) @ self.coef_ + self.intercept_

    def score(self, features, targets):
        """R^2 on `features` (a float for one target, an array for several)."""
        value = r2(targets, self.predict(features))
        return float(value[0]) if np.ndim(targets) == 1 else value


class _RegressionStats(keras.metrics.Metric):
    """R^2 and MSPE of every target over all examples seen (weighted), exactly."""

    def __init__(self, targets, name="regression_stats", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.targets = list(targets)
        k = len(self.targets)
        self.count = self.add_variable((), initializer="zeros", name="count")
        self.total = self.add_variable((k,), initializer="zeros", name="total")
        self.squares = self.add_variable((k,), initializer="zeros", name="squares")
        self.residuals = self.add_variable((k,), initializer="zeros", name="residuals")

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        k = len(self.targets)
        y = ops.reshape(ops.cast(y_true, self.dtype), (-1, k))
        prediction = ops.cast(y_pred, self.dtype)
        if sample_weight is None:
            weight = ops.ones_like(y[:, :1])
        else:
            weight = ops.reshape(ops.cast(sample_weight, self.dtype), (-1, 1))
        self.count.assign_add(ops.sum(weight))
        self.total.assign_add(ops.sum(weight * y, axis=0))
        self.squares.assign_add(ops.sum(weight * y**2, axis=0))
        self.residuals.assign_add(ops.sum(weight * (y - prediction) ** 2, axis=0))

    def result(self):
        ops = keras.ops
        spread = self.squares - ops.divide_no_nan(self.total**2, self.count)
        r2 = ops.where(spread > 0, 1.0 - ops.divide_no_nan(self.residuals, spread), float("nan"))
        error = ops.divide_no_nan(self.residuals, self.count)
        results = {}
        for i, target in enumerate(self.targets):
            results[f"{target}_r2"] = r2[i]
            results[f"{target}_mspe"] = error[i]
        return results

    def get_config(self):
        return {**super().get_config(), "targets": self.targets}


def _target_names(targets) -> tuple[str, ...]:
    if isinstance(targets, int) and not isinstance(targets, bool) and targets >= 1:
        return ("target",) if targets == 1 else tuple(f"target{i}" for i in range(targets))
    if isinstance(targets, str):
        targets = [targets]
    names = tuple(targets) if isinstance(targets, Sequence) else ()
    if (
        not names
        or not all(isinstance(t, str) and t for t in names)
        or len(set(names)) < len(names)
    ):
        raise ValueError(
            "`targets` must be a number of targets >= 1 or a list of distinct target "
            f"names, e.g. ['area', 'perimeter']. Received: targets={targets!r}"
        )
    return names


@keras.saving.register_keras_serializable(package="keras_probes")
class RegressionProbedModel(ProbedModel):
    """Linear regression probes (RCVs) on the layers of a Keras model.

    The regression twin of `kp.ProbedModel`, with the same guarantees: the
    base runs once per batch in inference mode, each point's features pass
    `tf.stop_gradient` into a `kp.RegressionHead`, and `fit` updates the heads
    only. Each head's loss is its mean squared error averaged over the
    targets, so give targets of comparable scale (standardise them) when
    regressing several at once with `fit`; `kp.fit_regression_probes` fits
    each target on its own and needs no such care.

    Logs of `fit` and `evaluate` hold `<point>/loss` and, per target,
    `<point>/<target>_r2` and `<point>/<target>_mspe`.

    Args:
        base: a Functional or Sequential Keras model.
        points: as for `kp.ProbedModel`. Defaults to `"all"`.
        targets: the names of the regressed targets (e.g. concept names of
            `kp.concepts`), or their number. Defaults to `1` (one target,
            named `"target"`).
        reducers: as for `kp.ProbedModel`. Defaults to `"auto"`.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Example:

    ```python
    shapes = kp.concepts.measure(images, ["area", "perimeter"])
    y = np.stack([shapes["area"], shapes["perimeter"]], axis=1)
    probed = kp.RegressionProbedModel(mlp, points=["dense", "dense_1"],
                                      targets=["area", "perimeter"])
    probed.compile(optimizer="adam")
    probed.fit(images, (y - y.mean(0)) / y.std(0), epochs=20)
    probed.concept_vectors()["dense"]    # (features, 2) unit RCVs
    ```
    """

    def __init__(self, base: keras.Model, points="all", targets=1, reducers="auto", **kwargs):
        # keras.Model's own initialiser: ProbedModel's is the one for classes.
        super(ProbedModel, self).__init__(**kwargs)
        self._targets = _target_names(targets)
        k = len(self._targets)
        self._build_probes(base, points, reducers, None, lambda name: RegressionHead(k, name=name))

    @property
    def targets(self) -> list[str]:
        """The names of the regressed targets, in column order."""
        return list(self._targets)

    def concept_vectors(self) -> dict[str, np.ndarray]:
        """Every point's Regression Concept Vectors: `{point: (features, targets)}`,
        each column the unit vector along which that target grows."""
        vectors = {}
        for point, head in zip(self._points, self.heads, strict=True):
            kernel = keras.ops.convert_to_numpy(head.kernel).astype(np.float64)
            vectors[point] = _unit_columns(kernel)
        return vectors

    # -- the task: regression ------------------------------------------------

    def _new_trackers(self, safe):
        return {
            "loss": keras.metrics.Mean(name=f"{safe}_loss"),
            "stats": _RegressionStats(self._targets, name=f"{safe}_stats"),
        }

    def _example_losses(self, y, outputs):
        y = keras.ops.reshape(keras.ops.cast(y, outputs.dtype), (-1, len(self._targets)))
        return keras.ops.mean((y - outputs) ** 2, axis=-1)

    def _check(self, x, y, labels=True, argument="x"):
        return _validation.check_data(
            x,
            y,
            self.feature_model.input,
            None,
            labels=labels,
            argument=argument,
            num_targets=len(self._targets),
        )

    def _report(self, logs, split):
        names = [f"{t}_{m}" for t in self._targets for m in ("r2", "mspe")]
        results = {p: {n: float(logs[log_key(p, n)]) for n in names} for p in self.points}
        return ProbeReport(self.points, {split: results}, None, self.base.name)

    def evaluate_probes(self, x, y=None, split="test", batch_size=None, verbose="auto"):
        """Evaluates every probe on one split.

        Returns:
            A `ProbeReport` with, per point and target, `<target>_r2` and
            `<target>_mspe`.
        """
        return super().evaluate_probes(x, y, split, batch_size, verbose)

    def get_config(self):
        config = super().get_config()
        del config["num_classes"]
        return {**config, "targets": self.targets}


def fit_regression_probes(
    probed: RegressionProbedModel,
    cache,
    targets: dict,
    alpha: float | Sequence[float] = ALPHAS,
    *,
    train: str = "train",
    verbose: int = 1,
) -> ProbeReport:
    """Fits every regression probe of `probed` in closed form on cached features.

    Each point and target gets a `RidgeProbe`: ridge regression with the
    penalty of least leave-one-out error among `alpha`. The fitted weights
    are written into `probed`'s heads, whose kernels' unit columns are then
    the Regression Concept Vectors (`probed.concept_vectors()`).

    Args:
        probed: a `kp.RegressionProbedModel`. The cache must hold its base,
            points and reducers (it may have been written by a classification
            `kp.ProbedModel` of the same base, points and reducers).
        cache: a `kp.FeatureCache`.
        targets: `{split: (n,) or (n, targets) array}`, the targets of every
            example of that split in the cache's order (the order of the data
            the cache was written from). Must hold `train`; every other split
            given is evaluated on.
        alpha: a penalty, or the penalties to choose from per target.
            Defaults to `ALPHAS`, 1e-3 to 1e6 in half decades.
        train: the split the probes are fitted on. Defaults to `"train"`.
        verbose: `1` shows a progress bar. Defaults to `1`.

    Returns:
        A `ProbeReport` with `<target>_r2` and `<target>_mspe` per point on
        every split in `targets`; the `train` split also holds the chosen
        `<target>_alpha`.

    Example:

    ```python
    cache = kp.FeatureCache.open("cache/", model=probed)
    shapes = {s: kp.concepts.shape_measures(images[s])["area"] for s in ("train", "val")}
    report = kp.fit_regression_probes(probed, cache, shapes)
    report.values("val", "target_r2")
    ```
    """
    if not isinstance(probed, RegressionProbedModel):
        raise TypeError(
            "`probed` must be a kp.RegressionProbedModel; for class probes use "
            f"kp.fit_probes. Received: {type(probed).__name__}"
        )
    cache.check_model(probed)
    if not isinstance(targets, dict) or train not in targets:
        raise ValueError(
            f"`targets` must be a dict {{split: array}} holding the train split {train!r}. "
            f"Received: {type(targets).__name__}"
            + (f" with splits {list(targets)}" if isinstance(targets, dict) else "")
        )
    k = len(probed.targets)
    values = {}
    for split, y in targets.items():
        if split not in cache.complete_splits:
            raise ValueError(
                f"No complete split {split!r} in the cache; it has {cache.complete_splits}."
            )
        values[split] = _validation.check_targets(y, k, num_examples=cache.num_examples(split))
    solver = RidgeProbe(alpha)
    results = {split: {} for split in values}
    progress = keras.utils.Progbar(len(probed.points), unit_name="probe") if verbose else None
    for i, (point, head) in enumerate(zip(probed.points, probed.heads, strict=True)):
        features = {s: cache.arrays(s, points=[point])[0][point] for s in values}
        probe = solver.fit(features[train], values[train])
        head.set_weights([probe.coef_.astype("float32"), probe.intercept_.astype("float32")])
        for split, y in values.items():
            prediction = probe.predict(features[split])
            row = results[split][point] = {}
            fits, errors = r2(y, prediction), mspe(y, prediction)
            for j, target in enumerate(probed.targets):
                row[f"{target}_r2"], row[f"{target}_mspe"] = float(fits[j]), float(errors[j])
                if split == train:
                    row[f"{target}_alpha"] = float(probe.alpha_[j])
        if progress is not None:
            progress.update(i + 1)
    return ProbeReport(probed.points, results, None, probed.base.name)
