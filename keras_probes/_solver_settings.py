"""The probe solvers' settings, declared once: each one's default, constraint and meaning.

Each `kp.solvers` estimator takes its signature's defaults and its checks from
its table here (`LBFGS`, `LBFGS_CV`, `MINIBATCH`, `RIDGE`); `kp.fit_probes`,
`kp.callbacks.ProbeMonitor`, the controls and the command line's solver
options (`--l2`, `--max-iter`, ...) read them from the estimators, so every
setting has one default. This module imports neither TensorFlow nor
scikit-learn: the command line reads it for `--help`, which starts at once.
"""

from typing import Any, NamedTuple

from keras_probes import _params

__all__ = [
    "ALPHAS",
    "L2S",
    "LBFGS",
    "LBFGS_CV",
    "MINIBATCH",
    "NAMED",
    "RIDGE",
    "Reals",
    "Setting",
    "defaults",
]


class Setting(NamedTuple):
    """One solver setting: its default, what it may be (a `_params` constraint, or a list
    of them, `None` in the list accepting `None`), and a short help text."""

    default: Any
    constraint: Any
    help: str


class Reals:
    """A non-empty sequence (list, tuple, 1-D array) of numbers each accepted by `each`."""

    def __init__(self, each: _params.Real, description: str):
        self.each, self.description = each, description

    def accepts(self, value) -> bool:
        if isinstance(value, str | bytes | dict) or not hasattr(value, "__len__"):
            return False
        if getattr(value, "ndim", 1) != 1 or len(value) == 0:
            return False
        return all(self.each.accepts(v) for v in value)

    def describe(self) -> str:
        return self.description


#: The penalties an `LBFGSProbeCV` tries by default: `np.logspace(-6, 0, 13)`, in half
#: decades (10 ** x rounds as NumPy's power does).
L2S = tuple(10.0 ** (-6 + k / 2) for k in range(13))
#: The ridge penalties a `RidgeProbe` chooses from by default, 1e-3 to 1e6 in half decades
#: (`np.logspace(-3, 6, 19)`).
ALPHAS = tuple(10.0 ** (-3 + k / 2) for k in range(19))

_L2 = Setting(1e-4, _params.Real(0), "L2 penalty of the objective, l2 / 2 * ||kernel||^2")
_SEED = Setting(
    0, _params.Integer(0, description="a finite number >= 0 (an integer)"), "random seed"
)

#: `kp.solvers.LBFGSProbe`.
LBFGS = {
    "l2": _L2,
    "max_iter": Setting(1000, _params.Integer(1), "L-BFGS iterations"),
    "tol": Setting(1e-4, _params.Real(0, open_low=True), "stop once no gradient entry exceeds it"),
    "memory": Setting(20, _params.Integer(1), "L-BFGS correction pairs"),
    "dtype": Setting(
        "float32", _params.Options("float32", "float64"), "the computation's float type"
    ),
    "standardize": Setting(False, _params.Boolean(), "fit on standardised features"),
}

#: `kp.solvers.LBFGSProbeCV`: a path of penalties, then `LBFGSProbe`'s settings but `l2`.
LBFGS_CV = {
    "l2s": Setting(
        L2S,
        Reals(_params.Real(0), "a non-empty sequence of finite numbers >= 0"),
        "the penalties of the path",
    ),
    "cv": Setting(
        "val",
        [_params.Options("val"), _params.Integer(2)],
        "'val' (a held-out split) or the number of folds of train",
    ),
    "patience": Setting(
        2,
        [_params.Integer(0, description="an integer >= 0"), None],
        "penalties in a row scoring no better than the best before the path stops",
    ),
    "seed": Setting(0, _SEED.constraint, "seed of the folds (cv=k)"),
    **{name: setting for name, setting in LBFGS.items() if name != "l2"},
}

#: `kp.solvers.Minibatch`.
MINIBATCH = {
    "optimizer": Setting("rmsprop", _params.Options("rmsprop", "adam"), "the optimizer"),
    "l2": _L2,
    "learning_rate": Setting(1e-3, _params.Real(0, open_low=True), "minibatch learning rate"),
    "epochs": Setting(
        50,
        _params.Integer(1, description="a finite number > 0 (an integer)"),
        "minibatch epochs",
    ),
    "batch_size": Setting(
        256,
        _params.Integer(1, description="a finite number > 0 (an integer)"),
        "minibatch examples per step",
    ),
    "patience": Setting(
        3,
        _params.Integer(0, description="a finite number >= 0 (an integer)"),
        "minibatch early-stopping patience",
    ),
    "seed": Setting(0, _SEED.constraint, "seed of the shuffling"),
    "callbacks": Setting(
        None,
        [_params.Instance(list, tuple, description="a list of Keras callbacks"), None],
        "more Keras callbacks",
    ),
    "verbose": Setting(0, _params.Integer(0), "Keras' verbose"),
}

#: `kp.solvers.RidgeProbe`.
RIDGE = {
    "alpha": Setting(
        ALPHAS,
        [
            _params.Real(0, open_low=True),
            Reals(_params.Real(0, open_low=True), "a non-empty sequence of them"),
        ],
        "the ridge penalty, or the penalties to choose from by leave-one-out error",
    ),
}

#: The solvers `kp.fit_probes` and the command line take by name, and their settings.
NAMED = {"lbfgs": LBFGS, "rmsprop": MINIBATCH, "adam": MINIBATCH}


def defaults(settings: dict) -> dict:
    """`{name: default}` of a table of settings."""
    return {name: setting.default for name, setting in settings.items()}
