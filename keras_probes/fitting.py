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
#: `fit_probes`'s arguments that are settings of a named solver.
_SOLVER_SETTINGS = frozenset().union(*SETTINGS.values())


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
    examples: dict[str, Examples] | None = None,
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
        validation: a split the solver early-stops on (minibatch solvers).
            Defaults to `None`.
        heads: the points' head layers, in the order of `points`: each fit
            starts from its head's weights and ends in them. Defaults to
            `None`: cold starts, nothing written.
        model: the model's name, recorded in the report. Defaults to `None`.
        examples: `{split: kp.outcomes.Examples}`, which examples each
            held-out split holds (its fingerprint; the sequence of each row
            for per-token probes). A split left out is fingerprinted from its
            targets and its first point's features. Defaults to `None`.
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
    if validation is not None and not solver.early_stops:
        raise ValueError(
            f"{type(solver).__name__} does not early-stop: it has no use for validation="
            f"{validation!r}. Leave it out, or use kp.solvers.Minibatch."
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
            fit_params["validation_data"] = (x[validation], targets[validation])
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
    examples = {
        split: (examples or {}).get(split)
        or Examples(fingerprint(targets[split], features(split, points[0])))
        for split in outcomes
    }
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
    l2: float | None = None,
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
            n_train))`. Defaults to `1e-4`.
        train: the split to train on. Defaults to `"train"`.
        validation: the split for early stopping (minibatch solvers):
            `"auto"` takes `"val"`, `"validation"` or `"valid"` if the cache
            has one; `None` trains for `epochs` without stopping.
        max_iter, tol, dtype: L-BFGS settings, as in `kp.solvers.LBFGSProbe`
            (`1000`, `1e-4`, `"float32"` when not given).
        epochs, batch_size, patience, learning_rate, seed, callbacks: the
            minibatch settings, as in `kp.solvers.Minibatch` (`50`, `256`,
            `3`, `1e-3`, `0`, none when not given).
        verbose: `1` shows progress. Defaults to `1`.

    A setting that the chosen solver does not use (say `learning_rate` with
    `"lbfgs"`) is an error, not ignored.

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
        verbose=verbose,
    )


def _validation_split(cache, train, validation, solver):
    """The split `solver` early-stops on: `None` for solvers that do not early-stop."""
    if validation == "auto":
        found = (s for s in _VALIDATION_NAMES if s in cache.complete_splits and s != train)
        return next(found, None) if solver.early_stops else None
    if validation is not None:
        cache.require_split(validation)
        if validation == train:
            raise ValueError(
                f"validation={validation!r} is the train split: early stopping needs held-out "
                "examples. Choose another split, or None."
            )
    return validation
