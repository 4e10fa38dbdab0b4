"""Probe solvers: scikit-learn estimators that fit one linear probe on features.

Every solver is a scikit-learn estimator (`sklearn.base.BaseEstimator` with
`ClassifierMixin` or `RegressorMixin`): the constructor stores the settings
(`get_params`, `set_params`, `sklearn.base.clone`), `fit(X, y)` returns
`self`, what was learned ends in `_` (`coef_`, `intercept_`, `n_iter_`,
`converged_`, `classes_`, `n_features_in_`), then `decision_function`,
`predict` and `score`; using a solver before `fit` raises scikit-learn's
`NotFittedError`. `GridSearchCV` and `cross_val_score` take them. Each
solver's settings (names, defaults, constraints) are declared once, in its
class's table (`LBFGSProbe.settings`, ...): `kp.fit_probes`, the command
line, `kp.callbacks.ProbeMonitor` and the controls take their defaults from
there, and a bad setting is refused when the estimator is made (or by
`set_params`), before any work. A fit that stops short of its optimum warns
with scikit-learn's `ConvergenceWarning`, and says so in `converged_`.

- `LBFGSProbe`: a softmax probe at its convex optimum, full-batch L-BFGS.
  Its objective is

      mean cross-entropy(softmax(features @ kernel + bias), labels)
          + l2 / 2 * ||kernel||^2        (the bias is not penalised)

  minimised by SciPy's L-BFGS-B with values and gradients that TensorFlow
  computes in chunks (under any active `tf.distribute` strategy), and
  certified by the final gradient norm. Features larger than `HELD_BYTES`
  (e.g. `kp.FeatureCache.features`, memory-mapped shards) are streamed a
  chunk at a time, so memory is bounded by a chunk, not by the cache; under
  `MultiWorkerMirroredStrategy` each worker sums its share of the chunks and
  the sums are all-reduced. For three classes or more this is
  scikit-learn's multinomial `LogisticRegression(C=1 / (l2 * n_train))`; for
  two, scikit-learn fits a single weight vector, the same model with half the
  penalty: `C=2 / (l2 * n_train)`.
- `LBFGSProbeCV`: `LBFGSProbe` along a regularisation path, warm-started,
  its penalty chosen on held-out examples (a validation split or folds of
  train), as scikit-learn's `LogisticRegressionCV`.
- `Minibatch`: the same objective by RMSProp or Adam in minibatches, early
  stopped on a validation set: the paper's setting.
- `RidgeProbe`: a linear regression probe in closed form (ridge), its
  penalty chosen by exact leave-one-out error.

`kp.fit_probes` fits one at every point of a feature cache.
"""

import functools
import warnings
from collections.abc import Sequence

import keras
import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.sparse
import scipy.special
import tensorflow as tf
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import ThreadpoolController

from keras_probes import _params, _solver_settings, _validation, distribute, metrics
from keras_probes.model import ProbeTrainer
from keras_probes.tasks import Classification

__all__ = [
    "CHUNK_BYTES",
    "HELD_BYTES",
    "L2S",
    "LBFGSProbe",
    "LBFGSProbeCV",
    "Minibatch",
    "NotFittedError",
    "ProbeEstimator",
    "RidgeProbe",
    "SETTINGS",
    "SelectedRows",
    "get",
    "unit_columns",
]

_XLA_MAX_FEATURES = 128
#: Rows per TensorFlow call when summing the objective: 32 MiB of float32 features.
#: What bounds a streamed fit's memory (a few chunks: the rows read, their tensor,
#: a transposed copy inside the matmul).
CHUNK_BYTES = 1 << 25
#: Train features up to this size (as stored, 256 MiB) are held in memory for the
#: whole fit; larger ones (a cache's memory-mapped shards) are streamed: read again,
#: a chunk at a time, at every evaluation of the objective.
HELD_BYTES = 1 << 28
#: The penalties `LBFGSProbeCV` tries by default: `np.logspace(-6, 0, 13)`.
L2S = _solver_settings.L2S
_INFER = "infer"  # `num_classes` left out of `fit`: the largest label plus one
_NOT_FITTED = "This %(name)s instance is not fitted yet. Call 'fit' first."


class ProbeEstimator(BaseEstimator):
    """What every probe solver shares: a scikit-learn estimator whose settings are
    declared once, in `settings`, and checked when it is made.

    A subclass declares `settings` (`{name: kp._solver_settings.Setting}`),
    takes them as keyword arguments of `__init__` with their declared
    defaults, calls `self._store(locals())`, and sets `coef_` and
    `intercept_` in `fit`.
    """

    #: `"classifier"` or `"regressor"`, as scikit-learn's `is_classifier`.
    kind = "classifier"
    #: The settings, `{name: Setting(default, constraint, help)}`: the one declaration
    #: that the signature's defaults, the checks, `kp.fit_probes` and the CLI read.
    settings = {}
    #: Whether `fit` takes held-out examples: `None` (never), `"optional"` (e.g. for
    #: early stopping) or `"required"` (e.g. to choose the penalty on them).
    takes_validation = None

    def _store(self, arguments: dict) -> None:
        """Checks a constructor's arguments (its `locals()`) and stores each as an attribute,
        as given (scikit-learn's `clone` relies on it)."""
        values = {name: arguments[name] for name in self._get_param_names()}
        self._check_settings(values)
        vars(self).update(values)

    def _check_settings(self, values: dict) -> None:
        constraints = {name: setting.constraint for name, setting in self.settings.items()}
        _params.check(constraints, **{k: v for k, v in values.items() if k in constraints})

    def set_params(self, **params) -> "ProbeEstimator":
        """Changes settings in place, checked as the constructor checks them (nothing is
        changed if one is refused); an unknown setting is refused. Returns `self`."""
        self._check_settings(params)
        return super().set_params(**params)

    def clone(self) -> "ProbeEstimator":
        """A new, unfitted solver with the same settings: `sklearn.base.clone(self)`."""
        return clone(self)

    def held_out_params(self, X_val, y_val) -> dict:
        """The keyword arguments by which `fit` takes held-out examples (for a solver whose
        `takes_validation` is not `None`)."""
        raise TypeError(f"{type(self).__name__} takes no held-out examples in `fit`.")

    def _check_fitted(self):
        check_is_fitted(self, "coef_", msg=_NOT_FITTED)

    def decision_function(self, X) -> np.ndarray:
        """The raw outputs `X @ coef_ + intercept_`, in float64, a chunk of rows at a time."""
        self._check_fitted()
        X = _check_features(X, "X")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input (those it was fitted on). "
                f"Received: X of shape {X.shape}"
            )
        chunks = []
        for rows in _row_slices(*X.shape, itemsize=8):
            chunk = np.asarray(X[rows], np.float64)
            if not np.isfinite(chunk).all():
                _validation.check_finite(X, "X")
            chunks.append(chunk @ self.coef_ + self.intercept_)
        return np.concatenate(chunks) if chunks else np.zeros((0, *self.coef_.shape[1:]))

    def diagnostics(self) -> dict:
        """What the fit says of itself, for a report's train split."""
        self._check_fitted()
        return {"converged": float(self.converged_)}


class _SoftmaxProbe(ClassifierMixin, ProbeEstimator):
    """The softmax classifiers' shared half: input checks, prediction, scores.

    Labels are integer class indices in `[0, num_classes)`: `classes_` is
    `arange(num_classes)`, the probe's output units.
    """

    def _check_classification(self, X, y, num_classes):
        """`(features, labels, num_classes)` checked; `num_classes` omitted is the
        largest label plus one (at least 2)."""
        X = _check_features(X, "features")
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None: "
                "pass the integer labels of the features."
            )
        labels = np.asarray(y)
        if labels.dtype == object:  # numbers in an object array, as scikit-learn takes them
            labels = labels.astype(np.float64)
        if np.issubdtype(labels.dtype, np.floating) and not np.all(np.mod(labels, 1) == 0):
            raise ValueError(
                "Labels must be integer class indices; these are continuous, e.g. "
                f"{labels[np.mod(labels, 1) != 0][:3].tolist()}. For regression targets use "
                "kp.solvers.RidgeProbe."
            )
        n = X.shape[0]
        if n == 0 or labels.ndim == 0 or len(labels) != n:
            raise ValueError(
                f"`features` and `labels` must hold the same number (> 0) of examples. "
                f"Received: features of shape {X.shape}, labels of shape {labels.shape}"
            )
        if num_classes is _INFER:
            labels = _validation.check_labels(labels, None, num_examples=n)
            num_classes = max(int(labels.max()) + 1, 2)
        num_classes = _validation.check_num_classes(num_classes)
        # Checked here: out of range, XLA's cross-entropy (<= 128 features)
        # would return a NaN loss rather than an error.
        labels = _validation.check_labels(labels, num_classes, num_examples=n)
        return X, labels, num_classes

    def _fitted(self, d, num_classes):
        """Sets what scikit-learn expects of a fitted classifier."""
        self.n_features_in_ = d
        self.classes_ = np.arange(num_classes)

    def predict(self, X) -> np.ndarray:
        """The most likely class of each example: `(n,)`."""
        return np.argmax(self.decision_function(X), axis=1)

    def predict_proba(self, X) -> np.ndarray:
        """The softmax probabilities: `(n, classes)`."""
        logits = self.decision_function(X)
        return np.exp(logits - scipy.special.logsumexp(logits, axis=1, keepdims=True))

    def evaluate(self, X, y) -> dict[str, float]:
        """Mean cross-entropy, top-1 and top-5 error on `(X, y)`, in float64."""
        logits = self.decision_function(X)
        task = Classification(logits.shape[1])
        return task.scores(task.check_targets(y, num_examples=len(logits)), logits)

    def score(self, X, y) -> float:
        """The accuracy on `(X, y)`, as scikit-learn's classifiers."""
        return 1.0 - self.evaluate(X, y)["error"]

    def diagnostics(self) -> dict[str, float]:
        """The objective (cross-entropy plus penalty) and largest gradient entry at the
        end, whether the fit converged (1.0 or 0.0), and the penalty `l2`."""
        return {
            "objective": float(self.loss_),
            "grad_norm": float(self.grad_norm_),
            **super().diagnostics(),
            "l2": float(self.l2),
        }


_LBFGS = _solver_settings.LBFGS


class LBFGSProbe(_SoftmaxProbe):
    """One softmax probe fitted to its optimum by full-batch L-BFGS.

    The features may be float16, float32 or float64, in memory or
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
        standardize: fit on features standardised to mean 0 and variance 1
            (with their own statistics), so that the penalty weighs every
            feature, and every layer, at the same scale: a layer whose
            activations are 1000x smaller is then probed as well as if they
            were not, as scikit-learn's `StandardScaler` before
            `LogisticRegression`. `coef_` and `intercept_` still apply to the
            raw features; `loss_` and `grad_norm_` are those of the
            standardised problem. Defaults to `False`.

    Attributes:
        coef_: the kernel, `(features, classes)`.
        intercept_: the bias, `(classes,)`.
        loss_: the objective at the end (cross-entropy plus penalty).
        grad_norm_: the largest gradient entry in magnitude at the end: the
            optimality certificate (0 exactly at the optimum).
        n_iter_: iterations run.
        converged_: whether L-BFGS met its stopping criterion. If it stopped
            at `max_iter`, or on a line search that float32 could not
            resolve, `fit` warns with scikit-learn's `ConvergenceWarning`.
        classes_: `arange(num_classes)`.
        n_features_in_: the number of features.

    Example:

    ```python
    probe = kp.solvers.LBFGSProbe(l2=1e-4).fit(features, labels, num_classes=10)
    probe.loss_, probe.grad_norm_, probe.score(held_out, held_out_labels)
    ```
    """

    settings = _LBFGS

    def __init__(
        self,
        *,
        l2: float = _LBFGS["l2"].default,
        max_iter: int = _LBFGS["max_iter"].default,
        tol: float = _LBFGS["tol"].default,
        memory: int = _LBFGS["memory"].default,
        dtype: str = _LBFGS["dtype"].default,
        standardize: bool = _LBFGS["standardize"].default,
    ):
        self._store(locals())

    def fit(
        self, X, y, num_classes: int = _INFER, *, coef_init=None, intercept_init=None
    ) -> "LBFGSProbe":
        """Fits the probe on features `X` `(n, features)` and integer labels `y` `(n,)`.

        Args:
            X: the features; float16, float32 or float64, in memory or
                memory-mapped.
            y: integer labels in `[0, num_classes)`.
            num_classes: the number of classes the probe predicts (labels
                need not show every one). Defaults to the largest label plus
                one.
            coef_init, intercept_init: a warm start, e.g. the probe's
                previous weights. Default to zeros.

        Returns:
            `self`, fitted.
        """
        features, labels, num_classes = self._check_classification(X, y, num_classes)
        problem = _Problem(features, labels, num_classes, self.dtype, self.standardize)
        return self._solve(problem, coef_init, intercept_init)

    def _solve(self, problem, coef_init, intercept_init, warn=True) -> "LBFGSProbe":
        """Fits on a prepared `_Problem` (shared by the fits of a path), from a warm start;
        the reason it stopped short, if it did, is kept in `_stopped`."""
        d, num_classes = problem.d, problem.num_classes
        kernel = np.zeros((d, num_classes)) if coef_init is None else np.asarray(coef_init)
        bias = np.zeros(num_classes) if intercept_init is None else np.asarray(intercept_init)
        mean, variance, center, spread = problem.mean, problem.variance, problem.center, None
        if center is not None:
            spread = problem.spread
            kernel, bias = kernel * spread[:, None], bias + center @ kernel
        # L-BFGS runs on centred, rescaled features, an exact change of
        # variables: the objective is the same, but pooled activations of very
        # different scales no longer make it ill-conditioned. A weight on
        # feature i has curvature about `var_i` from the data and `l2` from the
        # penalty: dividing it by `sqrt(var_i + l2)` makes both sum to about one.
        std = np.sqrt(variance + self.l2)
        std = np.where(std > 0, std, 1.0)
        objective = problem.objective
        objective.l2 = self.l2

        def standardized(theta):
            loss, gradient = objective(_from_standardized(theta, mean, std, num_classes))
            grad_kernel, grad_bias = objective.unpack(gradient)
            grad_kernel = (grad_kernel - mean[:, None] * grad_bias[None, :]) * (1 / std)[:, None]
            return loss, np.concatenate([grad_kernel.ravel(), grad_bias])

        # L-BFGS-B's own linear algebra (vector updates, m x m matrices) gains nothing from
        # BLAS threads, and on few cores they contend with TensorFlow's: up to 7x slower.
        with _blas_threads().limit(limits=1, user_api="blas"):
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
        if center is not None:
            self.coef_ = self.coef_ / spread[:, None]
            self.intercept_ = self.intercept_ - center @ self.coef_
        if result.status == 2:  # a stalled line search may end away from its last evaluation
            self.loss_, gradient = objective(theta)
        else:  # the last evaluation was at the solution: its gradient, scaled back
            grad_kernel, grad_bias = objective.unpack(result.jac)
            grad_kernel = grad_kernel * std[:, None] + mean[:, None] * grad_bias[None, :]
            self.loss_, gradient = (
                float(result.fun),
                np.concatenate([grad_kernel.ravel(), grad_bias]),
            )
        self.grad_norm_ = float(np.abs(gradient).max())
        self.n_iter_ = int(result.nit)
        self.converged_ = bool(result.status == 0)
        self._fitted(d, num_classes)
        self._stopped = None if self.converged_ else self._unconverged(result.status)
        if warn and self._stopped:
            warnings.warn(self._stopped, ConvergenceWarning, stacklevel=3)
        return self

    def _unconverged(self, status) -> str:
        """One line: why L-BFGS stopped short of `tol`, and the fix."""
        where = f"LBFGSProbe(l2={self.l2:g}) stopped short of its optimum"
        if status == 1:
            return (
                f"{where}: max_iter={self.max_iter} iterations ran before its gradient fell "
                f"below tol={self.tol:g}. Increase max_iter (or tol)."
            )
        return (
            f"{where} after {self.n_iter_} iterations: its line search could not lower the "
            f"objective in {self.dtype} before its gradient fell below tol={self.tol:g}. Pass "
            "dtype='float64', or a larger tol."
        )


_LBFGS_CV = _solver_settings.LBFGS_CV


class LBFGSProbeCV(_SoftmaxProbe):
    """`LBFGSProbe` with its penalty chosen on held-out examples, along a regularisation path.

    The path fits `LBFGSProbe` at every penalty of `l2s`, strongest first,
    each fit warm-started from the previous ones (on the line through the
    last two fits' weights in log(l2)), so that the weak penalties, whose
    fits cost the most from scratch, start near their optimum; and it
    scores each by the unpenalised mean cross-entropy of the held-out rows,
    computed a chunk of rows at a time. Once `patience` penalties in a row
    have scored no better than the best so far, the path stops: the weaker
    penalties, which overfit more and cost the most, are not fitted (their
    held-out loss rises with the overfit). The penalty of least held-out
    loss (the stronger one on a tie) is `l2_`, and the probe kept is the
    path's fit on the training rows at `l2_`, as scikit-learn's
    `LogisticRegressionCV` with `refit=True`.

    Held out are either a validation split (`cv="val"`: `fit(X, y, X_val=...,
    y_val=...)`), or `k` folds of the training rows (`cv=k`): stratified by
    class and shuffled with `seed` (`sklearn.model_selection.StratifiedKFold`),
    the path run on each fold's other rows (each stopping on its own), the
    held-out losses averaged over the folds per penalty that every fold
    fitted; then the path is run again on all the rows, from the strongest
    penalty down to `l2_`. The features may be memory-mapped
    (`kp.FeatureCache.features`): the folds read their rows a chunk at a
    time, never a copy of the cache. Under `MultiWorkerMirroredStrategy`
    every fit all-reduces the workers' sums, as `LBFGSProbe`'s, and every
    worker chooses the same penalty.

    Args:
        l2s: the penalties of the path, in any order. Defaults to `L2S`,
            `np.logspace(-6, 0, 13)`.
        cv: `"val"` (held-out examples given to `fit`) or the number of folds
            (an integer >= 2). Defaults to `"val"`.
        patience: how many penalties in a row may score no better than the
            best before the path stops; `None` fits every penalty, as
            `LogisticRegressionCV`. Defaults to `2` (a decade of the default
            grid).
        seed: seed of the folds' shuffle (`cv=k`). Defaults to `0`.
        max_iter, tol, memory, dtype, standardize: every fit's, as
            `LBFGSProbe` (same defaults: `1000`, `1e-4`, `20`, `"float32"`,
            `False`).

    Attributes:
        l2_: the chosen penalty.
        path_: `{l2: held-out loss}` of the penalties fitted, strongest
            first (with `cv=k`, the mean over the folds).
        coef_, intercept_, loss_, grad_norm_, converged_: the kept fit's, as
            `LBFGSProbe`'s.
        n_iter_: the iterations of every fit of the path(s), in all.
        classes_, n_features_in_: as `LBFGSProbe`'s.

    Example:

    ```python
    probe = kp.solvers.LBFGSProbeCV(cv="val").fit(x, y, 10, X_val=x_val, y_val=y_val)
    probe.l2_, probe.path_
    ```
    """

    settings = _LBFGS_CV

    def __init__(
        self,
        *,
        l2s: Sequence[float] = _LBFGS_CV["l2s"].default,
        cv: str | int = _LBFGS_CV["cv"].default,
        patience: int | None = _LBFGS_CV["patience"].default,
        seed: int = _LBFGS_CV["seed"].default,
        max_iter: int = _LBFGS_CV["max_iter"].default,
        tol: float = _LBFGS_CV["tol"].default,
        memory: int = _LBFGS_CV["memory"].default,
        dtype: str = _LBFGS_CV["dtype"].default,
        standardize: bool = _LBFGS_CV["standardize"].default,
    ):
        self._store(locals())

    @property
    def takes_validation(self):
        """`"required"` for `cv="val"`; `None` for folds of the training rows."""
        return "required" if self.cv == "val" else None

    def held_out_params(self, X_val, y_val) -> dict:
        return {"X_val": X_val, "y_val": y_val}

    def fit(
        self,
        X,
        y,
        num_classes: int = _INFER,
        *,
        X_val=None,
        y_val=None,
        coef_init=None,
        intercept_init=None,
    ) -> "LBFGSProbeCV":
        """Runs the path on features `X` and integer labels `y`; keeps the best fit.

        Args:
            X, y, num_classes, coef_init, intercept_init: as for
                `LBFGSProbe.fit`; the warm start is the first (strongest)
                penalty's.
            X_val, y_val: the held-out features and labels (`cv="val"`
                only).

        Returns:
            `self`, fitted.
        """
        features, labels, num_classes = self._check_classification(X, y, num_classes)
        given = X_val is not None or y_val is not None
        if self.cv != "val" and given:
            raise ValueError(
                f"LBFGSProbeCV(cv={self.cv}) holds out folds of X: it takes no X_val or y_val. "
                "Leave them out, or pass cv='val' to choose the penalty on them."
            )
        if self.cv == "val" and (X_val is None or y_val is None):
            raise ValueError(
                "LBFGSProbeCV(cv='val') chooses its penalty on held-out examples: pass "
                "fit(X, y, X_val=..., y_val=...), or cv=5 to hold out 5 folds of X instead."
            )
        l2s = sorted({float(l2) for l2 in self.l2s}, reverse=True)  # strongest first
        start = (coef_init, intercept_init)
        self.n_iter_, self._capped = 0, []
        if self.cv == "val":
            val_x, val_y, _ = self._check_classification(X_val, y_val, num_classes)
            if val_x.shape[1] != features.shape[1]:
                raise ValueError(
                    f"X_val holds {val_x.shape[1]} features per example; X {features.shape[1]}. "
                    f"Received: X_val of shape {val_x.shape}"
                )
            losses, kept = self._path(features, labels, num_classes, l2s, start, val_x, val_y)
        else:
            folds = StratifiedKFold(self.cv, shuffle=True, random_state=self.seed)
            fold_losses = []
            for train_rows, held_rows in folds.split(np.zeros((len(labels), 1)), labels):
                fold = SelectedRows(features, train_rows), labels[train_rows]
                held = SelectedRows(features, held_rows), labels[held_rows]
                fold_losses.append(self._path(*fold, num_classes, l2s, start, *held)[0])
            fitted = min(map(len, fold_losses))  # the penalties every fold fitted
            losses = np.mean([fold[:fitted] for fold in fold_losses], axis=0)
        best = int(np.argmin(losses))  # the first, strongest, of equal losses
        if self.cv != "val":
            kept = self._path(features, labels, num_classes, l2s[: best + 1], start)[1][-1]
        else:
            kept = kept[best]
        self.l2_ = l2s[best]
        self.path_ = dict(zip(l2s, map(float, losses), strict=False))
        self.coef_, self.intercept_ = kept.coef_, kept.intercept_
        self.loss_, self.grad_norm_, self.converged_ = kept.loss_, kept.grad_norm_, kept.converged_
        self._fitted(features.shape[1], num_classes)
        if kept._stopped:
            warnings.warn(f"LBFGSProbeCV's kept fit: {kept._stopped}", ConvergenceWarning, 2)
        capped = [l2 for l2 in self._capped if l2 != self.l2_]
        if capped:
            warnings.warn(
                f"LBFGSProbeCV: the fits at l2={', '.join(f'{l2:g}' for l2 in capped)} "
                f"stopped at max_iter={self.max_iter} short of their optimum, which may change "
                "their held-out losses. Increase max_iter.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _path(self, features, labels, num_classes, l2s, start, val_x=None, val_y=None):
        """Fits at each of `l2s` in turn, each from the last, until `patience` in a row score
        no better than the best; returns the held-out losses (without `val_x`, none: every
        penalty is fitted) and the fits (each kept only while it may be chosen)."""
        problem = _Problem(features, labels, num_classes, self.dtype, self.standardize)
        settings = {name: getattr(self, name) for name in _LBFGS if name != "l2"}
        losses, fits, best, worse = [], [], np.inf, 0
        before = last = None
        for l2 in l2s:
            # Warnings are the kept fit's, and the other fits' stopped at max_iter (their
            # held-out loss may be off), said once; a float32 line search that stalls near
            # the optimum, common from a warm start, changes no held-out loss that matters.
            begin = start if last is None else _predicted(before, last, l2)
            probe = LBFGSProbe(l2=l2, **settings)._solve(problem, *begin, warn=False)
            self.n_iter_ += probe.n_iter_
            if probe.n_iter_ >= self.max_iter and l2 not in self._capped:
                self._capped.append(l2)
            before, last = last, probe
            if val_x is None:
                fits = [probe]
                continue
            losses.append(_mean_cross_entropy(probe, val_x, val_y))
            better = losses[-1] < best
            best, worse = (losses[-1], 0) if better else (best, worse + 1)
            fits.append(probe if better else None)  # only a fit that may be chosen is kept
            if not better and self.patience is not None and worse >= self.patience:
                break
        return np.array(losses), fits

    def diagnostics(self) -> dict[str, float]:
        """As `LBFGSProbe`'s, with `l2` the chosen penalty."""
        self._check_fitted()
        return {
            "objective": float(self.loss_),
            "grad_norm": float(self.grad_norm_),
            "converged": float(self.converged_),
            "l2": float(self.l2_),
        }


def _predicted(before, last, l2):
    """Where a path's fit at `l2` starts: on the line through the last two fits' weights
    in log(l2), a predictor step (the solutions move smoothly with the penalty: 10-25%
    fewer iterations than from the last fit, seen on the bench's features); from the
    last fit when there is no line (one fit so far, or a zero penalty)."""
    if before is None or min(before.l2, last.l2, l2) <= 0:
        return last.coef_, last.intercept_
    step = np.log(l2 / last.l2) / np.log(last.l2 / before.l2)
    return (
        last.coef_ + step * (last.coef_ - before.coef_),
        last.intercept_ + step * (last.intercept_ - before.intercept_),
    )


def _mean_cross_entropy(probe, X, y) -> float:
    """The unpenalised mean cross-entropy of `probe` on `(X, y)`, a chunk of rows at a time,
    in float64."""
    total = 0.0
    for rows in _row_slices(*X.shape, itemsize=8):
        chunk = np.asarray(X[rows], np.float64)
        if not np.isfinite(chunk).all():
            _validation.check_finite(X, "X_val")
        logits = chunk @ probe.coef_ + probe.intercept_
        picked = logits[np.arange(len(logits)), y[rows]]
        total += float(np.sum(scipy.special.logsumexp(logits, axis=1) - picked))
    return total / len(y)


class SelectedRows:
    """Some rows of a 2-D array, in increasing order, read only where sliced: a fold of
    features, or the rows before a block of the online code
    (`kp.controls.description_length`), in memory, memory-mapped or in a cache's
    shards (`kp.cache.ShardedRows`). Every solver fits on one as on the array.

    A slice of rows reads spans of the array no longer than the slice's own
    row count, so memory stays that of a chunk however sparse the rows.

    Args:
        array: the 2-D array (or `ShardedRows`).
        rows: the row indices to keep, increasing.
    """

    def __init__(self, array, rows):
        self.array, self.rows = array, np.asarray(rows)
        self.shape, self.dtype = (len(self.rows), array.shape[1]), array.dtype

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError(f"Selected rows are read by slices only. Received: {key!r}")
        rows = self.rows[key]
        span, pieces, i = max(len(rows), 1), [], 0
        while i < len(rows):
            first = rows[i]
            stop = int(np.searchsorted(rows, first + span))
            block = np.asarray(self.array[first : rows[stop - 1] + 1])
            pieces.append(block[rows[i:stop] - first])
            i = stop
        return np.concatenate(pieces) if pieces else np.zeros((0, self.shape[1]), self.dtype)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]  # every selected row, read (a solver that holds its features)
        return whole if dtype is None else whole.astype(dtype, copy=False)


_MINIBATCH = _solver_settings.MINIBATCH


class Minibatch(_SoftmaxProbe):
    """One softmax probe trained in minibatches by RMSProp or Adam: the paper's setting.

    The objective is `LBFGSProbe`'s (mean cross-entropy plus `l2 / 2 *
    ||kernel||^2`), followed by gradient steps over shuffled minibatches for
    at most `epochs` epochs. Given `validation_data`, the probe is early
    stopped on its validation loss (Alain & Bengio's protocol), keeping the
    weights of its best epoch (`keras.callbacks.EarlyStopping` with
    `restore_best_weights`).

    Args:
        optimizer: `"rmsprop"` or `"adam"`. Defaults to `"rmsprop"`.
        l2: the L2 penalty. Defaults to `1e-4`.
        learning_rate: the optimizer's learning rate. Defaults to `1e-3`.
        epochs: most epochs. Defaults to `50`.
        batch_size: examples per step. Defaults to `256`.
        patience: epochs without a better validation loss before stopping.
            Defaults to `3`.
        seed: seed of the shuffling. Defaults to `0`.
        callbacks: more Keras callbacks for the training, e.g.
            `keras.callbacks.TensorBoard`. A clone shares them (they are not
            copied): they see every clone's training. Defaults to `None`.
        verbose: Keras' `verbose` of the training. Defaults to `0`.

    Attributes:
        coef_, intercept_: the kernel and bias.
        loss_, grad_norm_: the objective and its largest gradient entry at
            the end, on the training set: how far from the optimum the
            minibatch training ended.
        n_iter_: epochs run.
        converged_: whether early stopping ended the training (rather than
            `epochs`). With `validation_data`, running all `epochs` warns
            with scikit-learn's `ConvergenceWarning`.
        validation_losses_: the validation loss after every epoch (empty
            without `validation_data`).
        classes_, n_features_in_: as `LBFGSProbe`'s.

    Example:

    ```python
    probe = kp.solvers.Minibatch("rmsprop", epochs=20).fit(
        features, labels, 10, validation_data=(val_features, val_labels))
    ```
    """

    settings = _MINIBATCH
    takes_validation = "optional"

    def __init__(
        self,
        optimizer: str = _MINIBATCH["optimizer"].default,
        *,
        l2: float = _MINIBATCH["l2"].default,
        learning_rate: float = _MINIBATCH["learning_rate"].default,
        epochs: int = _MINIBATCH["epochs"].default,
        batch_size: int = _MINIBATCH["batch_size"].default,
        patience: int = _MINIBATCH["patience"].default,
        seed: int = _MINIBATCH["seed"].default,
        callbacks: list | None = _MINIBATCH["callbacks"].default,
        verbose: int = _MINIBATCH["verbose"].default,
    ):
        self._store(locals())

    def __sklearn_clone__(self):
        # As scikit-learn's clone, but the callbacks are shared, not deep-copied: a
        # TensorBoard or a recording callback given once sees every point's training.
        return type(self)(**self.get_params(deep=False))

    def held_out_params(self, X_val, y_val) -> dict:
        return {"validation_data": (X_val, y_val)}

    def fit(
        self,
        X,
        y,
        num_classes: int = _INFER,
        *,
        coef_init=None,
        intercept_init=None,
        validation_data=None,
    ) -> "Minibatch":
        """Trains the probe on features `X` and integer labels `y`.

        Args:
            X, y, num_classes, coef_init, intercept_init: as for
                `LBFGSProbe.fit`.
            validation_data: `(X_val, y_val)` for early stopping. Defaults
                to `None`: `epochs` epochs.

        Returns:
            `self`, fitted.
        """
        features, labels, num_classes = self._check_classification(X, y, num_classes)
        _validation.check_finite(features, "features")
        d = features.shape[1]
        task = Classification(num_classes)
        head = task.new_head("probe")
        head.build((None, d))
        head.set_weights(
            [
                np.zeros((d, num_classes)) if coef_init is None else np.asarray(coef_init),
                np.zeros(num_classes) if intercept_init is None else np.asarray(intercept_init),
            ]
        )
        trainer = ProbeTrainer(task, ["probe"], [head], l2=self.l2, name="minibatch_probe")
        # A whole epoch per call into TensorFlow: one small probe's steps are cheap,
        # and Python's dispatch per step would otherwise dominate. (Not under a
        # tf.distribute strategy, where Keras 3.15's multi-step loop fails to run.)
        steps = 1 if tf.distribute.has_strategy() else -(-len(labels) // self.batch_size)
        trainer.compile(
            optimizer=keras.optimizers.get(
                {"class_name": self.optimizer, "config": {"learning_rate": self.learning_rate}}
            ),
            steps_per_execution=steps,
        )
        callbacks = list(self.callbacks or [])
        stopping = None
        validation = None
        if validation_data is not None:
            val_x, val_y, _ = self._check_classification(*validation_data, num_classes)
            if val_x.shape[1] != d:
                raise ValueError(
                    f"`validation_data` holds {val_x.shape[1]} features per example; the "
                    f"training features {d}. Received: validation features of shape {val_x.shape}"
                )
            _validation.check_finite(val_x, "validation features")
            validation = _batched(val_x, val_y, self.batch_size)
            stopping = keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=self.patience, restore_best_weights=True
            )
            callbacks.append(stopping)
        history = trainer.fit(
            _batched(features, labels, self.batch_size, seed=self.seed),
            validation_data=validation,
            epochs=self.epochs,
            shuffle=False,  # the dataset shuffles itself, from `seed`
            callbacks=callbacks,
            verbose=self.verbose,
        )
        self.coef_, self.intercept_ = (w.astype(np.float64) for w in head.get_weights())
        objective = _Objective(features, labels, num_classes, self.l2)
        self.loss_, gradient = objective(np.concatenate([self.coef_.ravel(), self.intercept_]))
        self.grad_norm_ = float(np.abs(gradient).max())
        self.n_iter_ = len(history.epoch)
        self.validation_losses_ = list(history.history.get("val_loss", []))
        self.converged_ = bool(stopping is not None and stopping.stopped_epoch > 0)
        self._fitted(d, num_classes)
        if stopping is not None and not self.converged_:
            warnings.warn(
                f"Minibatch ran all epochs={self.epochs} with its validation loss still "
                f"improving within patience={self.patience}: the probe may not have converged. "
                "Increase epochs (or learning_rate).",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self


def _batched(features, labels, batch_size, seed=None):
    """A `tf.data.Dataset` of `({"probe": features}, labels)` batches, shuffled if seeded."""
    data = tf.data.Dataset.from_tensor_slices(({"probe": np.asarray(features)}, labels))
    if seed is not None:
        data = data.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


_RIDGE = _solver_settings.RIDGE


class RidgeProbe(RegressorMixin, ProbeEstimator):
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
            from. Defaults to `ALPHAS`, 1e-3 to 1e6 in half decades.

    Attributes:
        coef_: `(features,)` for one target, `(features, targets)` for several.
        intercept_: `()` or `(targets,)`.
        alpha_: the penalty used, per target: `()` or `(targets,)`.
        direction_: the RCV, `coef_` scaled to unit length (per target).
        n_features_in_: the number of features.

    Example:

    ```python
    probe = kp.regression.RidgeProbe(alpha=[0.1, 1.0, 10.0]).fit(features, area)
    probe.score(held_out_features, held_out_area)   # R^2
    probe.direction_                                # the concept's direction
    ```
    """

    kind = "regressor"
    settings = _RIDGE

    def __init__(self, alpha: float | Sequence[float] = _RIDGE["alpha"].default):
        self._store(locals())

    def fit(self, X, y, *, coef_init=None, intercept_init=None) -> "RidgeProbe":
        """Fits the probe on features `X` `(n, features)` and targets `y` `(n,)` or
        `(n, targets)`. `coef_init` and `intercept_init` are accepted for a
        uniform protocol and not needed: the closed form does not depend on a
        starting point.

        Returns:
            `self`, fitted.
        """
        x = _check_features(X, "features")
        if y is None:
            raise ValueError(
                "RidgeProbe requires y to be passed, but the target y is None: pass the "
                "targets of the features."
            )
        y = np.asarray(y, np.float64)
        if len(x) != len(y) or len(x) == 0 or y.ndim not in (1, 2):
            raise ValueError(
                "`features` must be (n, features) and `targets` (n,) or (n, targets), with "
                f"the same n > 0. Received: {x.shape} and {y.shape}"
            )
        alphas = np.atleast_1d(np.asarray(self.alpha, np.float64))
        n, d = x.shape
        # Where examples outnumber features (the primal form) the features are
        # streamed, a chunk of rows at a time: a cache larger than memory fits.
        # The dual form (a wide layer, fewer examples) holds them.
        primal = d <= n
        slices = _row_slices(n, d, itemsize=8) if primal else [slice(0, n)]

        def chunks():
            for rows in slices:
                yield rows, np.array(x[rows], np.float64)  # a copy: centred in place

        total = np.zeros(d)
        for _, chunk in chunks():
            if not np.isfinite(chunk).all():
                total = None
                break
            total += chunk.sum(0)
        if total is None or not np.isfinite(y).all():
            raise ValueError("`features` and `targets` must be finite (no NaN or inf).")
        x_mean, y_mean = total / n, metrics.columns(y).mean(axis=0)
        yc = metrics.columns(y) - y_mean
        # With X^T X = V S V^T (primal) or X X^T = U S U^T (dual), the fit for
        # penalty a is Q diag(w) Q^T y: Q = X V, w = 1 / (s + a), or Q = U,
        # w = s / (s + a); diag(Q diag(w) Q^T) + 1/n is the hat matrix's
        # diagonal (the intercept's share included), which gives the exact
        # leave-one-out residuals (y - fit) / (1 - hat).
        if primal:
            gram, cross = np.zeros((d, d)), np.zeros((d, yc.shape[1]))
            for rows, chunk in chunks():
                chunk -= x_mean
                gram += chunk.T @ chunk
                cross += chunk.T @ yc[rows]
            spectrum, basis = scipy.linalg.eigh(gram)
            projected = basis.T @ cross
        else:
            xc = np.asarray(x, np.float64) - x_mean
            spectrum, basis = scipy.linalg.eigh(xc @ xc.T)
            projected = basis.T @ yc
        spectrum = np.clip(spectrum, 0.0, None)

        def basis_rows():
            """`(rows, Q[rows])` chunk by chunk."""
            if not primal:
                yield slice(0, n), basis
                return
            for rows, chunk in chunks():
                yield rows, (chunk - x_mean) @ basis

        def weights(alphas):
            return (1.0 if primal else spectrum[:, None]) / (spectrum[:, None] + alphas)

        if len(alphas) == 1:
            alpha = np.full(yc.shape[1], alphas[0])
        else:
            w = weights(alphas[None, :])  # (rank, alphas)
            squares = np.zeros((len(alphas), yc.shape[1]))
            for rows, q in basis_rows():
                for i in range(len(alphas)):
                    residual = yc[rows] - q @ (w[:, i : i + 1] * projected)
                    hat = (q**2) @ w[:, i] + 1.0 / n
                    squares[i] += ((residual / (1.0 - hat)[:, None]) ** 2).sum(axis=0)
            alpha = alphas[np.argmin(squares, axis=0)]
        solved = projected / (spectrum[:, None] + alpha[None, :])  # (rank, targets)
        coef = basis @ solved if primal else xc.T @ (basis @ solved)
        intercept = y_mean - x_mean @ coef
        direction = unit_columns(coef)
        if y.ndim == 1:
            coef, intercept, alpha, direction = coef[:, 0], intercept[0], alpha[0], direction[:, 0]
        self.coef_, self.intercept_, self.alpha_, self.direction_ = (
            coef,
            intercept,
            alpha,
            direction,
        )
        # Closed form: one "iteration", always at the optimum.
        self.n_iter_, self.converged_, self.n_features_in_ = 1, True, d
        return self

    def predict(self, X) -> np.ndarray:
        """The predicted targets: `(n,)` or `(n, targets)`."""
        return self.decision_function(X)

    def score(self, X, y):
        """R^2 on `(X, y)` (a float for one target, an array for several)."""
        value = metrics.r2(y, self.predict(X))
        return float(value[0]) if np.ndim(y) == 1 else value

    def diagnostics(self) -> dict:
        """`{"alpha": the penalty chosen per target, "converged": 1.0}` (closed form)."""
        return {"alpha": np.atleast_1d(self.alpha_), **super().diagnostics()}


def unit_columns(matrix) -> np.ndarray:
    """Each column scaled to unit length (a zero column stays zero): the RCVs."""
    norm = np.linalg.norm(matrix, axis=0)
    return matrix / np.where(norm > 0, norm, 1.0)


#: The estimator of each solver name that `get`, `kp.fit_probes` and the command line take.
_NAMED = {"lbfgs": LBFGSProbe, "rmsprop": Minibatch, "adam": Minibatch}
#: Which settings each solver name takes, beside `l2`: its estimator's declared settings
#: (`optimizer` is the name itself).
SETTINGS = {
    name: tuple(s for s in solver.settings if s not in ("l2", "optimizer"))
    for name, solver in _NAMED.items()
}


def get(solver, l2=None, **settings) -> ProbeEstimator:
    """A solver estimator from a name and the settings given, or an estimator as it is.

    Settings left at `None` take the estimator's declared defaults; a setting
    that the chosen solver does not use is an error, not ignored.

    Args:
        solver: `"lbfgs"`, `"rmsprop"`, `"adam"`, or a `ProbeEstimator`
            (which then takes no settings here: they are its own).
        l2: the L2 penalty of a named solver, or `"auto"` (with `"lbfgs"`):
            chosen on a validation split by `LBFGSProbeCV()`, its default
            path, the other settings passed on to it. Defaults to `None`: the
            estimator's default (`1e-4`).
        **settings: the named solver's other settings, `None` for unset.

    Returns:
        An unfitted `ProbeEstimator`.
    """
    given = {name: value for name, value in settings.items() if value is not None}
    if isinstance(solver, ProbeEstimator):
        if l2 is not None:
            given = {"l2": l2, **given}
        if given:
            raise ValueError(
                f"Settings {sorted(given)} are for a solver given by name; set them on the "
                f"estimator instead, e.g. {type(solver).__name__}(...). Received: "
                f"solver={solver!r}"
            )
        return solver.clone()
    if not isinstance(solver, str) or solver not in SETTINGS:
        _params.refuse("solver", solver, f"one of {tuple(SETTINGS)} or a solver estimator")
    unused = sorted(set(given) - set(SETTINGS[solver]))
    if unused:
        users = [name for name, names in SETTINGS.items() if unused[0] in names]
        raise ValueError(
            f"solver={solver!r} does not use {unused}: "
            f"`{unused[0]}` is a setting of solver={' or '.join(map(repr, users))}. "
            "Leave it out, or choose that solver."
        )
    if isinstance(l2, str) and l2 == "auto":
        if solver != "lbfgs":
            raise ValueError(
                f"l2='auto' chooses the penalty of solver='lbfgs' (kp.solvers.LBFGSProbeCV); "
                f"solver={solver!r} takes a number. Pass l2=1e-4, or solver='lbfgs'."
            )
        return LBFGSProbeCV(**given)
    if l2 is not None:
        given["l2"] = l2
    if solver == "lbfgs":
        return LBFGSProbe(**given)
    return Minibatch(solver, **given)


@functools.cache
def _blas_threads() -> ThreadpoolController:
    """The BLAS libraries loaded (NumPy's, SciPy's), found once."""
    return ThreadpoolController()


def _check_features(X, argument):
    """`X` as a 2-D array of at least one feature (memory-mapped arrays and
    `kp.cache.ShardedRows` as they are, lists converted); sparse matrices refused."""
    if scipy.sparse.issparse(X):
        raise TypeError(
            f"`{argument}` is a sparse matrix; probes take dense features. Pass "
            f"{argument}.toarray(). Received: {type(X).__name__}"
        )
    if not hasattr(X, "dtype") or X.dtype == object:  # lists, data frames, objects
        X = np.asarray(X, dtype=np.float64)
    if np.issubdtype(X.dtype, np.complexfloating):
        raise ValueError(
            f"Complex data not supported: `{argument}` holds complex numbers ({X.dtype}); "
            "probes take real features."
        )
    if len(X.shape) != 2:
        raise ValueError(
            f"`{argument}` must be a 2-D array (examples, features). Received: {argument} of "
            f"shape {X.shape}. Reshape your data: .reshape(1, -1) for one example, "
            ".reshape(-1, 1) for one feature."
        )
    if X.shape[1] == 0:
        raise ValueError(
            f"`{argument}` has 0 feature(s) (shape={X.shape}) while a minimum of 1 is required."
        )
    return X


def _row_slices(n, d, itemsize=4, share=False):
    """Row ranges of about `CHUNK_BYTES` each (at `itemsize` bytes a value) over `n` rows of
    `d` features; with `share`, only this worker's (every `count`-th, from its rank)."""
    rows = max(1, CHUNK_BYTES // (itemsize * max(d, 1)))
    slices = [slice(i, i + rows) for i in range(0, n, rows)]
    if share:
        rank, count = distribute.workers()
        slices = slices[rank::count]
    return slices


def _moments(features):
    """Per-feature mean and variance in float64: two streaming passes, shared by workers.

    A NaN or infinite feature makes its mean non-finite (float16 or float32
    values cannot overflow a float64 sum): only then are the bad examples
    looked for, and refused.
    """
    n, d = features.shape
    slices = _row_slices(n, d, itemsize=8, share=True)
    total = sum((np.asarray(features[rows], np.float64).sum(0) for rows in slices), np.zeros(d))
    mean = distribute.all_sum(total) / n
    if not np.isfinite(mean).all():
        _validation.check_finite(features, "features", _row_slices(n, d, itemsize=8)[0].stop)
    squares = np.zeros(d)
    for rows in slices:
        x = np.array(features[rows], np.float64)  # a copy: the caller's features stay as given
        x -= mean
        squares += np.einsum("ij,ij->j", x, x)  # no squared copy
    return mean, distribute.all_sum(squares) / n


def _from_standardized(theta, mean, std, num_classes):
    """Parameters for `(x - mean) / std` turned into those for `x` itself."""
    kernel = theta[:-num_classes].reshape(-1, num_classes) / std[:, None]
    return np.concatenate([kernel.ravel(), theta[-num_classes:] - mean @ kernel])


class _Problem:
    """Features and labels made ready for L-BFGS fits at any penalty: their moments (one
    streaming pass, which also refuses non-finite features before any TensorFlow work,
    shared by the workers of a multi-worker strategy) and the objective (features held
    as tensors, or streamed). The fits of a regularisation path share one."""

    def __init__(self, features, labels, num_classes, dtype, standardize):
        self.d, self.num_classes = features.shape[1], num_classes
        mean, variance = _moments(features)
        self.center = self.spread = None
        if standardize:
            # Applied to each chunk as it is read: no standardised copy is made.
            self.center, spread = mean, np.sqrt(variance)
            self.spread = np.where(spread > 0, spread, 1.0)
            mean, variance = np.zeros(self.d), variance / self.spread**2
        self.mean, self.variance = mean, variance
        self.objective = _Objective(
            features, labels, num_classes, 0.0, dtype, center=self.center, spread=self.spread
        )


class _Objective:
    """The probe objective and its gradient over flat float64 parameters.

    Summed over chunks of rows in TensorFlow, accumulated in float64. Train
    features up to `HELD_BYTES` are held in memory as tensors; larger ones
    (a cache's memory-mapped shards) are streamed, read a chunk at a time at
    every evaluation, so that memory is bounded by a chunk and the weights,
    not by the features. Under a multi-worker strategy each worker sums its
    share of the chunks and one all-reduce adds up the workers' sums.
    `center` and `spread`, if given, standardise each chunk as it is read.
    `l2` may be changed between calls (the fits of a path).
    """

    def __init__(
        self, features, labels, num_classes, l2, dtype="float32", center=None, spread=None
    ):
        self.n, self.d = features.shape
        self.num_classes, self.l2, self.dtype = num_classes, l2, tf.as_dtype(dtype)
        self.features, self.labels = features, labels
        self.center, self.spread = center, spread
        self.slices = _row_slices(self.n, self.d, share=True)
        stored = self.n * self.d * np.dtype(features.dtype).itemsize
        self.held = [self._read(rows) for rows in self.slices] if stored <= HELD_BYTES else None
        # Narrow features make small kernels whose per-op dispatch dominates:
        # XLA fuses them (2x faster at 64 features here), while for wide
        # ones the backend's own matmul beats XLA's (2-3x at 256 and more).
        self.sums = distribute.summed(_cross_entropy_sums, jit_compile=self.d <= _XLA_MAX_FEATURES)

    def _read(self, rows):
        x = np.asarray(self.features[rows])
        if self.center is not None:
            x = ((x - self.center) / self.spread).astype(np.float32)
        return tf.constant(x), tf.constant(self.labels[rows], tf.int32)

    def unpack(self, theta):
        kernel = theta[: self.d * self.num_classes].reshape(self.d, self.num_classes)
        return kernel, theta[self.d * self.num_classes :]

    def __call__(self, theta):
        kernel, bias = self.unpack(theta)
        args = (tf.constant(kernel, self.dtype), tf.constant(bias, self.dtype))
        total = np.zeros(1 + theta.size)  # [loss, kernel's gradient, bias's gradient]
        for chunk in self.held if self.held is not None else map(self._read, self.slices):
            sums = self.sums(chunk, *args)
            total += np.concatenate([np.ravel(t.numpy()).astype(np.float64) for t in sums])
        total = distribute.all_sum(total)
        loss = total[0] / self.n + self.l2 / 2 * np.sum(kernel**2)
        grad_kernel, grad_bias = self.unpack(total[1:] / self.n)
        return loss, np.concatenate([(grad_kernel + self.l2 * kernel).ravel(), grad_bias])


def _cross_entropy_sums(batch, kernel, bias):
    """Summed cross-entropy of a batch and its gradients, in closed form."""
    x, y = batch
    x = tf.cast(x, kernel.dtype)
    logits = tf.matmul(x, kernel) + bias
    loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    residual = tf.nn.softmax(logits) - tf.one_hot(y, tf.shape(kernel)[1], dtype=kernel.dtype)
    return loss, tf.matmul(x, residual, transpose_a=True), tf.reduce_sum(residual, axis=0)
