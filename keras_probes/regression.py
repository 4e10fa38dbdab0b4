"""Regression probes: Regression Concept Vectors (Graziani et al., 2019).

A regression probe predicts a continuous concept measure (a digit's area, an
image's colourfulness; see `kp.concepts`) linearly from one layer's features.
Its quality is the R^2 and the mean squared prediction error (MSPE) on
held-out data; its unit weight vector is the layer's Regression Concept Vector
(RCV), the direction in which the concept grows.
"""

import numpy as np
import scipy.linalg

__all__ = ["RidgeProbe", "mspe", "r2"]


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


def _columns(values):
    values = np.asarray(values, np.float64)
    return values[:, None] if values.ndim == 1 else values


class RidgeProbe:
    """A linear regression probe with an L2 penalty, fitted in closed form.

    Minimises `||y - X w - b||^2 + alpha * ||w||^2` (the intercept `b` is not
    penalised): scikit-learn's `Ridge(alpha)`. Solved in float64 on centred
    features through the smaller of the two Gram matrices, `X^T X`
    (features x features) or `X X^T` (examples x examples), so that a wide
    layer with few examples costs no more than a narrow one.

    Args:
        alpha: the L2 penalty (`> 0`). Defaults to `1.0`.

    Attributes:
        coef_: `(features,)` for one target, `(features, targets)` for several.
        intercept_: `()` or `(targets,)`.
        direction_: the RCV, `coef_` scaled to unit length (per target).

    Example:

    ```python
    probe = kp.regression.RidgeProbe(alpha=1.0).fit(features, area)
    probe.score(held_out_features, held_out_area)   # R^2
    probe.direction_                                # the concept's direction
    ```
    """

    def __init__(self, alpha: float = 1.0):
        if not (isinstance(alpha, int | float) and np.isfinite(alpha) and alpha > 0):
            raise ValueError(f"`alpha` must be a finite number > 0. Received: alpha={alpha!r}")
        self.alpha = float(alpha)

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
        x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
        xc, yc = x - x_mean, y - y_mean
        n, d = xc.shape
        if d <= n:
            gram = xc.T @ xc
            gram[np.diag_indices(d)] += self.alpha
            coef = scipy.linalg.solve(gram, xc.T @ yc, assume_a="pos")
        else:
            gram = xc @ xc.T
            gram[np.diag_indices(n)] += self.alpha
            coef = xc.T @ scipy.linalg.solve(gram, yc, assume_a="pos")
        self.coef_ = coef
        self.intercept_ = y_mean - x_mean @ coef
        norm = np.linalg.norm(coef, axis=0)
        self.direction_ = coef / np.where(norm > 0, norm, 1.0)
        return self

    def predict(self, features) -> np.ndarray:
        return np.asarray(features, np.float64) @ self.coef_ + self.intercept_

    def score(self, features, targets):
        """R^2 on `features` (a float for one target, an array for several)."""
        value = r2(targets, self.predict(features))
        return float(value[0]) if np.ndim(targets) == 1 else value
