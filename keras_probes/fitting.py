"""The one loop that fits probes on features: a solver at every point, every split scored.

`fit_each` is the path of every probe fitted outside Keras' own `fit`:
`kp.fit_probes` (classification probes on a feature cache),
`kp.fit_regression_probes` (regression probes), the controls
(`kp.controls.shuffled_label_probes`) and `kp.callbacks.ProbeMonitor` (probes
refitted while a model trains). For each point it fits a fresh copy of the
solver on the train split (warm-started from, and written back into, the
point's head when heads are given), scores every split with the task's
metrics (`kp.metrics`, in float64), keeps each held-out example's outcome
(`kp.outcomes`, for intervals and paired tests), and adds the solver's
diagnostics (L-BFGS's objective and gradient norm, ridge's penalty) to the
train split.
"""

from collections.abc import Callable

import numpy as np

from keras_probes._progress import Progbar
from keras_probes.outcomes import Examples, fingerprint
from keras_probes.report import ProbeReport
from keras_probes.solvers import SETTINGS, ProbeEstimator, get
from keras_probes.tasks import Task

__all__ = ["check_solver", "fit_each", "fit_probes"]

_VALIDATION_NAMES = ("val", "validation", "valid")
#: `fit_probes`'s arguments that are settings of a named solver (its own `verbose` shows
#: its progress).
_SOLVER_SETTINGS = frozenset().union(*SETTINGS.values()) - {"verbose"}


def fit_each(
    solver: ProbeEstimator,
    task: Task,
    points: list[str],
    features: Callable[[str, str], np.ndarray],
    targets: dict,
    *,
    train: str = "train",
    validation: str | None = None,
    heads: list | None = None,
    model: str | None = None,
    examples: Callable[[str], Examples] | None = None,
    diagnostics: bool = True,
    verbose: int = 1,
) -> ProbeReport:
    """Fits `solver` at every point on the train split; scores every split.

    Args:
        solver: an unfitted solver (`kp.solvers.LBFGSProbe`, `Minibatch`,
            `RidgeProbe`, ...); each point fits a clone of it.
        task: the `kp.tasks.Task` the probes perform; it checks the targets
            and scores the fits.
        points: the point names, in order.
        features: `features(split, point) -> (n, features)` array (in
            memory or memory-mapped).
        targets: `{split: (n,) or (n, targets)}`, every split to score; must
            hold `train`.
        train: the split the probes are fitted on. Defaults to `"train"`.
        validation: a held-out split the solver takes (`solver.takes_validation`):
            `kp.solvers.Minibatch` early-stops on it, `kp.solvers.LBFGSProbeCV`
            chooses its penalty on it. Defaults to `None`.
        heads: the points' head layers, in the order of `points`: each fit
            starts from its head's weights and ends in them. Defaults to
            `None`: cold starts, nothing written.
        model: the model's name, recorded in the report. Defaults to `None`.
        examples: `examples(split) -> kp.outcomes.Examples`, which examples
            each held-out split holds (its fingerprint; the sequence of each
            row for per-token probes), e.g. `cache.examples`. Defaults to
            `None`: each split fingerprinted from its targets and its first
            point's features, every row an example of its own.
        diagnostics: add the solver's diagnostics to the train split.
            Defaults to `True`.
        verbose: `1` shows a progress bar over the points. Defaults to `1`.

    Returns:
        A `ProbeReport` of the task's metrics on every split in `targets`;
        its train split also holds the solver's diagnostics per probe
        (unless `diagnostics=False`); every other split keeps each example's
        outcome (classification probes).
    """
    check_solver(solver, task)
    for split, role in ((train, "train"), (validation, "validation")):
        if split is not None and split not in targets:
            raise ValueError(
                f"No targets for the {role} split {split!r}; `targets` holds {list(targets)}."
            )
    if validation is not None and solver.takes_validation is None:
        raise ValueError(
            f"{type(solver).__name__} takes no held-out split: it has no use for validation="
            f"{validation!r}. Leave it out, or use kp.solvers.Minibatch (early stopping) or "
            "kp.solvers.LBFGSProbeCV (the penalty chosen on it)."
        )
    if validation is None and solver.takes_validation == "required":
        raise ValueError(
            f"{solver!r} chooses on a held-out split: pass validation=<split>, or hold out "
            "folds of train instead (e.g. kp.solvers.LBFGSProbeCV(cv=5))."
        )
    targets = {split: task.check_targets(y) for split, y in targets.items()}
    fit_params = task.fit_params()
    results = {split: {} for split in targets}
    held_out = [split for split in targets if split != train]
    outcomes = {split: {} for split in held_out}
    progress = Progbar(len(points), counters=["iterations"], unit_name="probe") if verbose else None
    for i, point in enumerate(points):
        x = {split: features(split, point) for split in targets}
        if validation is not None:
            fit_params.update(solver.held_out_params(x[validation], targets[validation]))
        if heads is not None:
            kernel, bias = heads[i].get_weights()
            fit_params.update(coef_init=kernel, intercept_init=bias)
        probe = solver.clone().fit(x[train], targets[train], **fit_params)
        if heads is not None:
            heads[i].set_weights(
                [probe.coef_.astype(kernel.dtype), probe.intercept_.astype(bias.dtype)]
            )
        for split, y in targets.items():
            outputs = probe.decision_function(x[split])
            results[split][point] = task.scores(y, outputs)
            kept = task.outcomes(y, outputs) if split != train else None
            if kept is not None:
                outcomes[split][point] = kept
        if diagnostics:
            results[train][point].update(task.diagnostic_row(probe.diagnostics()))
        if progress is not None:
            progress.update(i + 1, [("iterations", probe.n_iter_)])
    outcomes = {split: kept for split, kept in outcomes.items() if kept}
    if examples is None:

        def examples(split):
            return Examples(fingerprint(targets[split], features(split, points[0])))

    examples = {split: examples(split) for split in outcomes}
    return ProbeReport(list(points), results, task.num_classes, model, outcomes, examples)


def check_solver(solver: ProbeEstimator, task: Task) -> None:
    """Refuses a solver that cannot fit the task's probes (a regressor for classes, ...)."""
    if not isinstance(solver, ProbeEstimator):
        raise TypeError(
            "`solver` must be a solver estimator such as kp.solvers.LBFGSProbe(). "
            f"Received: {solver!r}"
        )
    if solver.kind != task.solver_kind:
        raise ValueError(
            f"{type(solver).__name__} is a {solver.kind}; the probes of {task!r} need a "
            f"{task.solver_kind}, e.g. kp.solvers.LBFGSProbe() for classes or "
            "kp.solvers.RidgeProbe() for regression targets."
        )


def fit_probes(
    probed,
    cache,
    solver="lbfgs",
    l2: float | str | None = None,
    *,
    train: str = "train",
    validation: str | None = "auto",
    max_iter: int | None = None,
    tol: float | None = None,
    dtype: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    patience: int | None = None,
    learning_rate: float | None = None,
    seed: int | None = None,
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
        solver: `"lbfgs"` (full batch, to the optimum), `"rmsprop"` /
            `"adam"` (minibatch, the paper's setting, early-stopped per probe
            on the validation split), or a solver estimator such as
            `kp.solvers.LBFGSProbe(l2=1e-4, tol=1e-6)`, which then carries
            all the settings. Defaults to `"lbfgs"`.
        l2: L2 penalty on every kernel, `l2 / 2 * ||kernel||^2`; for three
            classes or more, scikit-learn's `LogisticRegression(C=1 / (l2 *
            n_train))`. `"auto"` (with `"lbfgs"`) chooses it at every point
            on the validation split: `kp.solvers.LBFGSProbeCV()`, its default
            path `np.logspace(-6, 0, 13)`. Defaults to `None`: the solver
            estimator's default (`1e-4`).
        train: the split to train on. Defaults to `"train"`.
        validation: the held-out split of solvers that take one (minibatch
            solvers stop early on it, `l2="auto"` chooses the penalty on
            it): `"auto"` takes `"val"`, `"validation"` or `"valid"` if the
            cache has one; `None` trains minibatch solvers for `epochs`
            without stopping.
        max_iter, tol, dtype: L-BFGS settings, as in `kp.solvers.LBFGSProbe`;
            when not given, its defaults (`1000`, `1e-4`, `"float32"`).
        epochs, batch_size, patience, learning_rate, seed, callbacks: the
            minibatch settings, as in `kp.solvers.Minibatch`; when not given,
            its defaults (`50`, `256`, `3`, `1e-3`, `0`, none).
        verbose: `1` shows progress. Defaults to `1`.

    A setting that the chosen solver does not use (say `learning_rate` with
    `"lbfgs"`) is an error, not ignored.

    Returns:
        A `ProbeReport` with loss, error and top-5 error on every complete
        split of the cache. Its `train` split also holds, per probe,
        `objective` (cross-entropy plus penalty), `grad_norm`, the largest
        gradient entry of the objective in magnitude (how far from the
        optimum each probe ended, 0 at the optimum), `converged` (1.0, or
        0.0 for a fit stopped short of its optimum, which also warns with
        scikit-learn's `ConvergenceWarning`) and `l2`, the penalty used
        (chosen, with `l2="auto"`).

    Example:

    ```python
    cache = kp.FeatureCache.open("cache/", model=probed)
    report = kp.fit_probes(probed, cache, solver="lbfgs", l2=1e-4)
    print(report.table(metrics=["error", "grad_norm"]))
    chosen = kp.fit_probes(probed, cache, l2="auto")   # penalties chosen on "val"
    chosen.values("train", "l2")
    ```
    """
    settings = {name: value for name, value in locals().items() if name in _SOLVER_SETTINGS}
    estimator = get(solver, l2, **settings)
    if probed.task.solver_kind != "classifier":
        raise TypeError(
            "kp.fit_probes fits class probes on the cache's labels; for regression probes "
            f"use kp.fit_regression_probes with their targets. Received: {type(probed).__name__}"
        )
    cache.check_model(probed)
    cache.require_split(train)
    validation = _validation_split(cache, train, validation, estimator)
    splits = cache.complete_splits
    targets = {split: cache.arrays(split, points=[])[1] for split in splits}
    return fit_each(
        estimator,
        probed.task,
        probed.points,
        cache.features,  # memory-mapped, streamed by L-BFGS
        targets,
        train=train,
        validation=validation,
        heads=probed.heads,
        model=probed.base.name,
        examples=cache.examples,
        verbose=verbose,
    )


def _validation_split(cache, train, validation, solver):
    """The held-out split `solver` takes: `None` for solvers that take none."""
    asked = validation
    if validation == "auto":
        found = (s for s in _VALIDATION_NAMES if s in cache.complete_splits and s != train)
        validation = next(found, None) if solver.takes_validation else None
    elif validation is not None:
        cache.require_split(validation)
        if validation == train:
            raise ValueError(
                f"validation={validation!r} is the train split: early stopping and the "
                "choice of a penalty need held-out examples. Choose another split, or None."
            )
    if validation is None and solver.takes_validation == "required":
        which = (
            "validation=None leaves it none"
            if asked is None
            else f"the cache has none named {' or '.join(map(repr, _VALIDATION_NAMES))}: its "
            f"splits are {cache.complete_splits}. Write one (FeatureCache.write(..., "
            "split='val'))"
        )
        raise ValueError(
            f"{solver!r} (what l2='auto' fits) chooses the penalty on a validation split, and "
            f"{which}; or hold out 5 folds of train instead with the estimator "
            "kp.solvers.LBFGSProbeCV(cv=5)."
        )
    return validation
