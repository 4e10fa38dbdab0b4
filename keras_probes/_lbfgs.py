"""A softmax probe fitted to its convex optimum: full-batch L-BFGS.

SciPy's L-BFGS-B minimises the probe objective

    mean cross-entropy(softmax(features @ kernel + bias), labels)
        + l2 / 2 * ||kernel||^2        (the bias is not penalised)

with values and gradients that TensorFlow computes in chunks (under any
active `tf.distribute` strategy). Public as `kp.solvers.LBFGSProbe`; it lives
apart from `solvers` so that callbacks can use it without a cycle.
"""

import math

import numpy as np
import scipy.optimize
import scipy.special
import tensorflow as tf

from keras_probes import _distribute, _validation

__all__ = ["LBFGSProbe"]

_XLA_MAX_FEATURES = 128
_CHUNK_BYTES = 1 << 26  # rows per TensorFlow call: 64 MiB of float32 features


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
        standardize: bool = False,
    ):
        _check_positive("l2", l2, allow_zero=True)
        _check_positive("max_iter", max_iter)
        _check_positive("tol", tol)
        if dtype not in ("float32", "float64"):
            raise ValueError(f"`dtype` must be 'float32' or 'float64'. Received: dtype={dtype!r}")
        self.l2, self.max_iter, self.tol, self.memory = float(l2), int(max_iter), tol, memory
        self.dtype = dtype
        self.standardize = standardize

    def fit(self, features, labels, num_classes: int, coef_init=None, intercept_init=None):
        """Fits the probe; `coef_init`/`intercept_init` warm-start it (zeros by default)."""
        num_classes = _validation.check_num_classes(num_classes)
        if not hasattr(features, "shape"):
            features = np.asarray(features)
        labels = np.asarray(labels)
        if len(features.shape) != 2:
            raise ValueError(
                "`features` must be a 2-D array (examples, features). Received: features of "
                f"shape {features.shape}"
            )
        n, d = features.shape
        if n == 0 or labels.ndim == 0 or len(labels) != n:
            raise ValueError(
                f"`features` and `labels` must hold the same number (> 0) of examples. "
                f"Received: features of shape {features.shape}, labels of shape {labels.shape}"
            )
        # Checked here: out of range, XLA's cross-entropy (<= 128 features)
        # would return a NaN loss rather than an error.
        labels = _validation.check_labels(labels, num_classes, num_examples=n)
        kernel = np.zeros((d, num_classes)) if coef_init is None else np.asarray(coef_init)
        bias = np.zeros(num_classes) if intercept_init is None else np.asarray(intercept_init)
        if self.standardize:
            center, spread = _moments(features, 0.0)
            features = ((np.asarray(features, np.float64) - center) / spread).astype("float32")
            kernel, bias = kernel * spread[:, None], bias + center @ kernel
        # L-BFGS runs on centred, rescaled features, an exact change of
        # variables: the objective is the same, but pooled activations of very
        # different scales no longer make it ill-conditioned. (This pass also
        # refuses non-finite features, before any TensorFlow work.)
        mean, std = _moments(features, self.l2)
        objective = _Objective(features, labels, num_classes, self.l2, self.dtype)

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

    def decision_function(self, features) -> np.ndarray:
        """The logits `features @ coef_ + intercept_`, in float64: `(n, classes)`."""
        return np.asarray(features, np.float64) @ self.coef_ + self.intercept_

    def predict(self, features) -> np.ndarray:
        """The most likely class of each example: `(n,)`."""
        return np.argmax(self.decision_function(features), axis=1)

    def evaluate(self, features, labels) -> dict[str, float]:
        """Mean cross-entropy, top-1 and top-5 error on `(features, labels)`, in float64."""
        logits = self.decision_function(features)
        labels = np.asarray(labels).astype(np.int64)
        true = logits[np.arange(len(labels)), labels]
        # As Keras' metrics: top-1 is the argmax (the first of tied classes);
        # top-5 counts the label in when fewer than 5 classes score above it.
        above = (logits > true[:, None]).sum(axis=1)
        return {
            "loss": float(np.mean(scipy.special.logsumexp(logits, axis=1) - true)),
            "error": float(np.mean(np.argmax(logits, axis=1) != labels)),
            "top5_error": float(np.mean(above >= min(5, logits.shape[1]))),
        }


def fit_head(solver: LBFGSProbe, head, features, labels, num_classes: int) -> LBFGSProbe:
    """Fits `solver` warm-started from a `ProbeHead`'s weights, and writes the result back."""
    kernel, bias = head.get_weights()
    probe = solver.fit(features, labels, num_classes, coef_init=kernel, intercept_init=bias)
    head.set_weights([probe.coef_.astype(kernel.dtype), probe.intercept_.astype(bias.dtype)])
    return probe


def _moments(features, l2, rows=1 << 16):
    """Per-feature mean, and the scale that equalises each weight's curvature.

    A weight on feature i has curvature about `var_i` from the data and `l2`
    from the penalty: dividing it by `sqrt(var_i + l2)` makes both sum to
    about one for every feature, large or nearly constant. Float64, two passes.
    A NaN or infinite feature makes its mean non-finite (float16 or float32
    values cannot overflow a float64 sum): only then are the bad examples
    looked for, and refused.
    """
    chunks = [slice(i, i + rows) for i in range(0, len(features), rows)]
    mean = sum(np.asarray(features[c], np.float64).sum(0) for c in chunks) / len(features)
    if not np.isfinite(mean).all():
        _validation.check_finite(features, "features", rows)
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


def _check_positive(name, value, allow_zero=False):
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be a finite number {bound}. Received: {name}={value!r}")
