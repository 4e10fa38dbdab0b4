"""Probe solvers: estimators that fit one linear probe on features, scikit-learn style.

Every solver follows scikit-learn's conventions: the constructor stores the
settings (`get_params`, `set_params`, `clone`), `fit(X, y)` returns `self`,
what was learned ends in `_` (`coef_`, `intercept_`, `n_iter_`,
`converged_`), then `decision_function`, `predict` and `score`; using a
solver before `fit` is a "not fitted yet" error.

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
- `Minibatch`: the same objective by RMSProp or Adam in minibatches, early
  stopped on a validation set: the paper's setting.
- `RidgeProbe`: a linear regression probe in closed form (ridge), its
  penalty chosen by exact leave-one-out error.

`kp.fit_probes` fits one at every point of a feature cache.
"""

import inspect
from collections.abc import Sequence

import keras
import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.special
import tensorflow as tf

from keras_probes import _params, _validation, distribute, metrics
from keras_probes.model import ProbeTrainer
from keras_probes.tasks import Classification

__all__ = [
    "CHUNK_BYTES",
    "HELD_BYTES",
    "LBFGSProbe",
    "Minibatch",
    "NotFittedError",
    "ProbeEstimator",
    "RidgeProbe",
    "SETTINGS",
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
_MINIBATCH = ("rmsprop", "adam")
_INFER = "infer"  # `num_classes` left out of `fit`: the largest label plus one


class NotFittedError(ValueError, AttributeError):
    """A solver used before `fit`, as scikit-learn's `NotFittedError`."""


class ProbeEstimator:
    """What every probe solver shares, after scikit-learn's `BaseEstimator`.

    A subclass stores its constructor arguments as attributes of the same
    names and sets `coef_` and `intercept_` in `fit`.
    """

    #: `"classifier"` or `"regressor"`, as scikit-learn's `_estimator_type`.
    kind = "classifier"
    #: Whether `fit` takes `validation_data` and stops early on it.
    early_stops = False
    #: `{setting: constraint}`, checked by `_store` (see `keras_probes._params`).
    _constraints = {}

    def _store(self, arguments: dict) -> None:
        """Checks a constructor's arguments (its `locals()`) and stores each as an attribute."""
        settings = {name: arguments[name] for name in self._param_names()}
        checked = {k: v for k, v in settings.items() if k in self._constraints}
        _params.check(self._constraints, **checked)
        vars(self).update(settings)

    @classmethod
    def _param_names(cls) -> list[str]:
        parameters = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in parameters if p.name != "self" and p.kind != p.VAR_KEYWORD]

    def get_params(self, deep: bool = True) -> dict:
        """The constructor arguments, as scikit-learn's `get_params`."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> "ProbeEstimator":
        """Changes settings in place, checked as the constructor checks them; an unknown
        setting is refused. Returns `self`, as scikit-learn's `set_params`."""
        unknown = sorted(set(params) - set(self._param_names()))
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no setting {unknown}; its settings are "
                f"{self._param_names()}."
            )
        fresh = type(self)(**{**self.get_params(), **params})
        self.__dict__.update(fresh.__dict__)
        return self

    def clone(self) -> "ProbeEstimator":
        """A new, unfitted solver with the same settings (scikit-learn's `clone`).

        The settings are shared, not copied: callbacks given to a `Minibatch`
        see every clone's training.
        """
        return type(self)(**self.get_params())

    def __repr__(self):
        settings = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({settings})"

    def _check_fitted(self):
        if not hasattr(self, "coef_"):
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet. Call fit(X, y) before using it."
            )

    def decision_function(self, X) -> np.ndarray:
        """The raw outputs `X @ coef_ + intercept_`, in float64, a chunk of rows at a time."""
        self._check_fitted()
        if not hasattr(X, "shape"):
            X = np.asarray(X)
        if len(X.shape) != 2 or X.shape[1] != self.coef_.shape[0]:
            raise ValueError(
                f"`X` must be (examples, {self.coef_.shape[0]}), the features the probe was "
                f"fitted on. Received: X of shape {X.shape}"
            )
        chunks = [
            np.asarray(X[rows], np.float64) @ self.coef_ + self.intercept_
            for rows in _row_slices(*X.shape, itemsize=8)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, *self.coef_.shape[1:]))

    def diagnostics(self) -> dict:
        """What the fit says of itself, for a report's train split."""
        self._check_fitted()
        return {}


class _SoftmaxProbe(ProbeEstimator):
    """The softmax classifiers' shared half: input checks, prediction, scores."""

    def _check_classification(self, X, y, num_classes):
        """`(features, labels, num_classes)` checked; `num_classes` omitted is the
        largest label plus one (at least 2)."""
        if not hasattr(X, "shape"):
            X = np.asarray(X)
        labels = np.asarray(y)
        if len(X.shape) != 2:
            raise ValueError(
                "`features` must be a 2-D array (examples, features). Received: features of "
                f"shape {X.shape}"
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
        """The objective (cross-entropy plus penalty) and largest gradient entry at the end."""
        self._check_fitted()
        return {"objective": float(self.loss_), "grad_norm": float(self.grad_norm_)}


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
        converged_: whether L-BFGS met its stopping criterion (rather than
            `max_iter`, or a line search that float32 could not resolve).

    Example:

    ```python
    probe = kp.solvers.LBFGSProbe(l2=1e-4).fit(features, labels, num_classes=10)
    probe.loss_, probe.grad_norm_, probe.score(held_out, held_out_labels)
    ```
    """

    _constraints = {
        "l2": _params.Real(0),
        "max_iter": _params.Integer(1),
        "tol": _params.Real(0, open_low=True),
        "memory": _params.Integer(1),
        "dtype": _params.Options("float32", "float64"),
        "standardize": _params.Boolean(),
    }

    def __init__(
        self,
        *,
        l2: float = 1e-4,
        max_iter: int = 1000,
        tol: float = 1e-4,
        memory: int = 20,
        dtype: str = "float32",
        standardize: bool = False,
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
        d = features.shape[1]
        kernel = np.zeros((d, num_classes)) if coef_init is None else np.asarray(coef_init)
        bias = np.zeros(num_classes) if intercept_init is None else np.asarray(intercept_init)
        # One streaming pass (which also refuses non-finite features, before
        # any TensorFlow work), shared by the workers of a multi-worker strategy.
        mean, variance = _moments(features)
        center = spread = None
        if self.standardize:
            # Applied to each chunk as it is read: no standardised copy is made.
            center, spread = mean, np.sqrt(variance)
            spread = np.where(spread > 0, spread, 1.0)
            kernel, bias = kernel * spread[:, None], bias + center @ kernel
            mean, variance = np.zeros(d), variance / spread**2
        # L-BFGS runs on centred, rescaled features, an exact change of
        # variables: the objective is the same, but pooled activations of very
        # different scales no longer make it ill-conditioned. A weight on
        # feature i has curvature about `var_i` from the data and `l2` from the
        # penalty: dividing it by `sqrt(var_i + l2)` makes both sum to about one.
        std = np.sqrt(variance + self.l2)
        std = np.where(std > 0, std, 1.0)
        objective = _Objective(
            features, labels, num_classes, self.l2, self.dtype, center=center, spread=spread
        )

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
        if self.standardize:
            self.coef_ = self.coef_ / spread[:, None]
            self.intercept_ = self.intercept_ - center @ self.coef_
        self.loss_, gradient = objective(theta)
        self.grad_norm_ = float(np.abs(gradient).max())
        self.n_iter_ = int(result.nit)
        self.converged_ = result.status == 0
        return self


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
            `keras.callbacks.TensorBoard`. Defaults to `None`.
        verbose: Keras' `verbose` of the training. Defaults to `0`.

    Attributes:
        coef_, intercept_: the kernel and bias.
        loss_, grad_norm_: the objective and its largest gradient entry at
            the end, on the training set: how far from the optimum the
            minibatch training ended.
        n_iter_: epochs run.
        converged_: whether early stopping ended the training (rather than
            `epochs`).
        validation_losses_: the validation loss after every epoch (empty
            without `validation_data`).

    Example:

    ```python
    probe = kp.solvers.Minibatch("rmsprop", epochs=20).fit(
        features, labels, 10, validation_data=(val_features, val_labels))
    ```
    """

    early_stops = True

    _constraints = {
        "optimizer": _params.Options(*_MINIBATCH),
        "l2": _params.Real(0),
        "learning_rate": _params.Real(0, open_low=True),
        "epochs": _params.Integer(1, description="a finite number > 0 (an integer)"),
        "batch_size": _params.Integer(1, description="a finite number > 0 (an integer)"),
        "patience": _params.Integer(0, description="a finite number >= 0 (an integer)"),
        "seed": _params.Integer(0, description="a finite number >= 0 (an integer)"),
        "verbose": _params.Integer(0),
        "callbacks": [_params.Instance(list, tuple, description="a list of Keras callbacks"), None],
    }

    def __init__(
        self,
        optimizer: str = "rmsprop",
        *,
        l2: float = 1e-4,
        learning_rate: float = 1e-3,
        epochs: int = 50,
        batch_size: int = 256,
        patience: int = 3,
        seed: int = 0,
        callbacks: list | None = None,
        verbose: int = 0,
    ):
        self._store(locals())

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
        return self


def _batched(features, labels, batch_size, seed=None):
    """A `tf.data.Dataset` of `({"probe": features}, labels)` batches, shuffled if seeded."""
    data = tf.data.Dataset.from_tensor_slices(({"probe": np.asarray(features)}, labels))
    if seed is not None:
        data = data.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class RidgeProbe(ProbeEstimator):
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

    kind = "regressor"

    def __init__(self, alpha: float | Sequence[float] = 1.0):
        alphas = np.atleast_1d(np.asarray(alpha, dtype=object))
        positive = _params.Real(0, open_low=True)
        if alphas.ndim != 1 or len(alphas) == 0 or not all(positive.accepts(a) for a in alphas):
            _params.refuse("alpha", alpha, "a finite number > 0 or a non-empty sequence of them")
        self.alpha = alpha
        self._alphas = alphas.astype(np.float64)

    def fit(self, X, y, *, coef_init=None, intercept_init=None) -> "RidgeProbe":
        """Fits the probe on features `X` `(n, features)` and targets `y` `(n,)` or
        `(n, targets)`. `coef_init` and `intercept_init` are accepted for a
        uniform protocol and not needed: the closed form does not depend on a
        starting point.

        Returns:
            `self`, fitted.
        """
        x = X if hasattr(X, "shape") else np.asarray(X)
        y = np.asarray(y, np.float64)
        if len(x.shape) != 2 or len(x) != len(y) or len(x) == 0 or y.ndim not in (1, 2):
            raise ValueError(
                "`features` must be (n, features) and `targets` (n,) or (n, targets), with "
                f"the same n > 0. Received: {x.shape} and {y.shape}"
            )
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

        if len(self._alphas) == 1:
            alpha = np.full(yc.shape[1], self._alphas[0])
        else:
            w = weights(self._alphas[None, :])  # (rank, alphas)
            squares = np.zeros((len(self._alphas), yc.shape[1]))
            for rows, q in basis_rows():
                for i in range(len(self._alphas)):
                    residual = yc[rows] - q @ (w[:, i : i + 1] * projected)
                    hat = (q**2) @ w[:, i] + 1.0 / n
                    squares[i] += ((residual / (1.0 - hat)[:, None]) ** 2).sum(axis=0)
            alpha = self._alphas[np.argmin(squares, axis=0)]
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
        self.n_iter_, self.converged_ = 1, True
        return self

    def predict(self, X) -> np.ndarray:
        """The predicted targets: `(n,)` or `(n, targets)`."""
        return self.decision_function(X)

    def score(self, X, y):
        """R^2 on `(X, y)` (a float for one target, an array for several)."""
        value = metrics.r2(y, self.predict(X))
        return float(value[0]) if np.ndim(y) == 1 else value

    def diagnostics(self) -> dict[str, np.ndarray]:
        """`{"alpha": the penalty chosen per target}`."""
        self._check_fitted()
        return {"alpha": np.atleast_1d(self.alpha_)}


def unit_columns(matrix) -> np.ndarray:
    """Each column scaled to unit length (a zero column stays zero): the RCVs."""
    norm = np.linalg.norm(matrix, axis=0)
    return matrix / np.where(norm > 0, norm, 1.0)


#: Which settings each solver name takes, beside `l2`.
SETTINGS = {
    "lbfgs": ("max_iter", "tol", "dtype"),
    "rmsprop": ("epochs", "batch_size", "patience", "learning_rate", "seed", "callbacks"),
    "adam": ("epochs", "batch_size", "patience", "learning_rate", "seed", "callbacks"),
}


def get(solver, l2=None, **settings) -> ProbeEstimator:
    """A solver estimator from a name and the settings given, or an estimator as it is.

    Settings left at `None` take the solver's defaults; a setting that the
    chosen solver does not use is an error, not ignored.

    Args:
        solver: `"lbfgs"`, `"rmsprop"`, `"adam"`, or a `ProbeEstimator`
            (which then takes no settings here: they are its own).
        l2: the L2 penalty of a named solver. Defaults to `None` (`1e-4`).
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
    if l2 is not None:
        given["l2"] = l2
    if solver == "lbfgs":
        return LBFGSProbe(**given)
    return Minibatch(solver, **given)


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


class _Objective:
    """The probe objective and its gradient over flat float64 parameters.

    Summed over chunks of rows in TensorFlow, accumulated in float64. Train
    features up to `HELD_BYTES` are held in memory as tensors; larger ones
    (a cache's memory-mapped shards) are streamed, read a chunk at a time at
    every evaluation, so that memory is bounded by a chunk and the weights,
    not by the features. Under a multi-worker strategy each worker sums its
    share of the chunks and one all-reduce adds up the workers' sums.
    `center` and `spread`, if given, standardise each chunk as it is read.
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
