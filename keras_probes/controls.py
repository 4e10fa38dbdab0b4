"""Control baselines for probes (Hewitt & Liang, 2019; Graziani et al., 2019).

A probe's accuracy says how linearly separable a layer makes a task, but also
how much a linear classifier on that many features can fit by itself. Controls
measure the second part, with the same probes (same points, reducers and L2
penalty, fitted by L-BFGS to their optimum):

- `shuffled_label_probes`: trained on *shuffled labels*, a task with the same
  class balance and no relation to the input. Its train error is what the
  probe memorises on its own; held out, it is at chance by construction.
- `reinitialized_probes`: trained on the true labels, on a *re-initialised
  network* of the same architecture (`kp.flawed.reinitialize`): what the
  architecture gives without any learning.
- `control_task_probes`: per-token probes trained on Hewitt & Liang's
  *control task*, where every token type (token id) has one fixed random
  label (`control_task_labels`): a task a probe can only solve by memorising
  the types, not by reading the context.
- `description_length`: Voita & Titov's (2020) online code, the bits a probe
  needs to transmit the train labels when it learns them block by block:
  what a layer makes easy to learn, not only what a probe fits in the end.
  Given control labels (`labels=`), it measures the control the same way.

`ProbeReport.with_selectivity(control, split)` then gives each probe's
accuracy minus its control's.

Example:

```python
report = kp.fit_probes(probed, cache, solver="lbfgs", l2=1e-4)
shuffled = kp.controls.shuffled_label_probes(probed, cache, l2=1e-4)
random = kp.controls.reinitialized_probes(probed, {"train": (x, y), "val": (xv, yv)})
report.with_selectivity(shuffled, "train").table(metrics=["error", "selectivity"])
report.with_selectivity(random, "val").table(metrics=["error", "selectivity"])
```
"""

import math
import tempfile
from collections.abc import Sequence
from numbers import Real

import numpy as np

from keras_probes import _params, _validation
from keras_probes._progress import Progbar
from keras_probes.cache import FeatureCache
from keras_probes.fitting import check_solver, fit_each, fit_probes
from keras_probes.flawed import reinitialize
from keras_probes.model import ProbedModel
from keras_probes.report import ProbeReport
from keras_probes.solvers import LBFGSProbe, ProbeEstimator, SelectedRows

__all__ = [
    "FRACTIONS",
    "control_task_labels",
    "control_task_probes",
    "description_length",
    "reinitialized_probes",
    "shuffled_label_probes",
    "shuffled_labels",
]

#: Where the online code's blocks end, as fractions of the train rows: Voita & Titov's
#: (2020) 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25, 12.5, 25, 50 and 100 percent.
FRACTIONS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)
#: `description_length`'s default solver (cloned for every fit).
_MDL_SOLVER = LBFGSProbe(l2=1e-3)
_ONLINE_ARGS = {
    "seed": [_params.Integer(), None],
    "train": _params.Instance(str, description="a split name (a string)"),
    "verbose": _params.Integer(0),
}


def shuffled_labels(y, seed: int = 0) -> np.ndarray:
    """The labels in a random order: the control task of the same class balance.

    Each example keeps a label drawn (without replacement) from the others',
    so every class keeps its count and no label depends on the input.

    Args:
        y: integer labels `(n,)`.
        seed: seed of the permutation. Defaults to `0`.

    Returns:
        A permuted copy of `y`.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"`y` must be labels of shape (n,). Received: {y.shape}")
    return y[np.random.default_rng(seed).permutation(len(y))]


def shuffled_label_probes(
    probed: ProbedModel,
    cache: FeatureCache,
    l2: float | None = None,
    *,
    seed: int = 0,
    train: str = "train",
    max_iter: int | None = None,
    tol: float | None = None,
    verbose: int = 1,
) -> ProbeReport:
    """Probes fitted on shuffled labels, on the same cached features.

    `probed`'s own heads are left untouched. Every split of the cache is
    evaluated against its own shuffled labels (split `i` shuffled with seed
    `seed + i`), so the train split measures what each probe memorises.

    Args:
        probed: the `kp.ProbedModel` the cache was written from.
        cache: its `kp.FeatureCache`.
        l2: the L2 penalty, as in `kp.fit_probes`. Defaults to `None`:
            `kp.solvers.LBFGSProbe`'s default (`1e-4`).
        seed: seed of the shuffles. Defaults to `0`.
        train: the split the probes are fitted on. Defaults to `"train"`.
        max_iter, tol: L-BFGS settings, as in `LBFGSProbe`. Default to
            `None`: its defaults.
        verbose: `1` shows a progress bar. Defaults to `1`.

    Returns:
        A `ProbeReport` of loss, error and top-5 error on every complete
        split, against the shuffled labels.
    """
    cache.check_model(probed)
    cache.require_split(train)
    labels = {
        split: shuffled_labels(cache.arrays(split, points=[])[1], seed=seed + i)
        for i, split in enumerate(cache.complete_splits)
    }
    return _fit_control(probed, cache, labels, l2, train, max_iter, tol, verbose)


def control_task_labels(token_ids, labels, seed: int = 0, num_classes: int | None = None):
    """Hewitt & Liang's control task: one fixed random label per token type.

    Every token id `t` gets a label drawn once from the empirical distribution
    of `labels` (the real task's), so the control task has the real task's
    class balance, and a probe can only solve it by memorising which type
    has which label: the context a layer encodes is of no help.

    Args:
        token_ids: the token id of each example `(n,)` (a token's type),
            non-negative integers.
        labels: the real task's labels `(m,)` (e.g. of the train split):
            they give the distribution the control labels are drawn from.
        seed: seed of the draw. The label of a type depends only on `seed`,
            its id and the distribution, so that every split (labelled with
            the train split's `labels`) gets the same table. Defaults to `0`.
        num_classes: the number of classes. Defaults to the largest label + 1.

    Returns:
        The control label of each example, `(n,)` int64.

    Example:

    >>> kp.controls.control_task_labels([5, 7, 5, 9], [0, 1, 1, 2], seed=0)  # 5 -> one label
    """
    token_ids = np.asarray(token_ids)
    if (
        token_ids.ndim != 1
        or not np.issubdtype(token_ids.dtype, np.integer)
        or (len(token_ids) and token_ids.min() < 0)
    ):
        raise ValueError(
            "`token_ids` must be non-negative integer ids of shape (n,). Received: "
            f"token_ids of dtype {token_ids.dtype} and shape {token_ids.shape}"
        )
    labels = _validation.check_labels(labels, num_classes)
    if not len(labels):
        raise ValueError("`labels` is empty: the control labels are drawn from their distribution.")
    counts = np.bincount(labels, minlength=num_classes or 0)
    distribution = counts / counts.sum()
    # Each type's label is drawn from its own generator, seeded by (seed, id): it
    # never depends on which other types a split holds, nor on the largest id.
    types, positions = np.unique(token_ids, return_inverse=True)
    table = np.array(
        [np.random.default_rng([seed, int(t)]).choice(len(counts), p=distribution) for t in types],
        dtype=np.int64,
    )
    return table[positions.reshape(-1)]


def control_task_probes(
    probed: ProbedModel,
    cache: FeatureCache,
    l2: float | None = None,
    *,
    seed: int = 0,
    train: str = "train",
    max_iter: int | None = None,
    tol: float | None = None,
    verbose: int = 1,
) -> ProbeReport:
    """Per-token probes fitted on Hewitt & Liang's control task, on the same cached features.

    Each token id gets a fixed random label (`control_task_labels`, drawn from
    the train split's label distribution), the same in every split; the
    probes are fitted by L-BFGS on the train split and scored on every split.
    `report.with_selectivity(control, "test")` then gives each point's
    selectivity: its accuracy on the real task minus its accuracy here.
    `probed`'s own heads are left untouched.

    Args:
        probed: the per-token `kp.ProbedModel` (`reducers="tokens"`) the cache
            was written from; its base has a `token_ids` input.
        cache: its `kp.FeatureCache` (which holds each row's token id).
        l2: the L2 penalty, as in `kp.fit_probes`. Defaults to `None`:
            `kp.solvers.LBFGSProbe`'s default (`1e-4`).
        seed: seed of the label table. Defaults to `0`.
        train: the split the probes are fitted on. Defaults to `"train"`.
        max_iter, tol: L-BFGS settings, as in `LBFGSProbe`. Default to
            `None`: its defaults.
        verbose: `1` shows a progress bar. Defaults to `1`.

    Returns:
        A `ProbeReport` of loss, error and top-5 error on every complete
        split, against the control labels.

    Example:

    ```python
    probed = kp.ProbedModel(model, points="blocks", num_classes=7, reducers="tokens")
    report = kp.fit_probes(probed, cache, solver="lbfgs", l2=1e-3)
    control = kp.controls.control_task_probes(probed, cache, l2=1e-3)
    report.with_selectivity(control, "test").table(metrics=["error", "selectivity"])
    ```
    """
    if not probed.per_token:
        raise ValueError(
            "The control task gives a label per token type: it needs per-token probes "
            "(kp.ProbedModel(..., reducers='tokens')) and their cache. For pooled probes "
            "use kp.controls.shuffled_label_probes."
        )
    cache.check_model(probed)
    cache.require_split(train)
    train_labels = cache.arrays(train, points=[])[1]
    labels = {
        split: control_task_labels(
            cache.token_ids(split), train_labels, seed=seed, num_classes=probed.num_classes
        )
        for split in cache.complete_splits
    }
    return _fit_control(probed, cache, labels, l2, train, max_iter, tol, verbose)


def _fit_control(probed, cache, labels, l2, train, max_iter, tol, verbose):
    """L-BFGS probes on the cache's features against control `labels` `{split: (n,)}`;
    settings left at `None` take `LBFGSProbe`'s defaults."""
    settings = {"l2": l2, "max_iter": max_iter, "tol": tol}
    return fit_each(
        LBFGSProbe(**{name: value for name, value in settings.items() if value is not None}),
        probed.task,
        probed.points,
        cache.features,
        labels,
        train=train,
        model=probed.base.name,
        # The split's own examples (true labels): the control pairs with the probes
        # it controls, example by example.
        examples=cache.examples,
        diagnostics=False,
        verbose=verbose,
    )


def reinitialized_probes(
    probed: ProbedModel,
    data: dict,
    l2: float | str | None = None,
    *,
    seed: int = 0,
    directory=None,
    batch_size: int = 64,
    verbose: int = 1,
) -> ProbeReport:
    """Probes of the same points on a re-initialised copy of `probed`'s base.

    The base is re-drawn by `kp.flawed.reinitialize(base, seed)`; its features
    at the same points, through copies of the same reducers, are cached and
    the probes fitted with `kp.fit_probes(solver="lbfgs", l2=l2)`.

    Args:
        probed: the `kp.ProbedModel` to control.
        data: `{split: (x, y) or tf.data.Dataset}`, with a `"train"` split.
        l2: the L2 penalty, as in `kp.fit_probes` (`"auto"` too, given a
            validation split in `data`). Defaults to `None`:
            `kp.solvers.LBFGSProbe`'s default (`1e-4`).
        seed: seed of the new weights. Defaults to `0`.
        directory: where to write the control's feature cache. Defaults to
            `None`: a temporary directory, deleted afterwards.
        batch_size: batch size of the feature extraction. Defaults to `64`.
        verbose: `1` shows progress. Defaults to `1`.

    Returns:
        The control's `ProbeReport` (error, loss and top-5 error per split).
    """
    if not isinstance(data, dict) or "train" not in data:
        raise ValueError(
            "`data` must be a dict {split: data} with a 'train' split. Received: "
            + (f"splits {list(data)}" if isinstance(data, dict) else type(data).__name__)
        )
    control = ProbedModel(
        reinitialize(probed.base, seed=seed),
        points=probed.points,
        num_classes=probed.num_classes,
        reducers={
            point: reducer.__class__.from_config(reducer.get_config())
            for point, reducer in probed.reducers.items()
        },
        name=f"{probed.name}_reinitialized",
    )
    # `reinitialize` rebuilds a keras-hub task as a plain model: keep its preprocessor.
    control.preprocessor = probed.preprocessor
    with tempfile.TemporaryDirectory(prefix="keras_probes_control_") as temporary:
        path = temporary if directory is None else directory
        for split, split_data in data.items():
            FeatureCache.write(
                control, split_data, path, split=split, batch_size=batch_size, verbose=verbose
            )
        cache = FeatureCache.open(path, model=control)
        return fit_probes(control, cache, solver="lbfgs", l2=l2, verbose=verbose)


def description_length(
    probed: ProbedModel,
    cache: FeatureCache,
    fractions: Sequence[float] = FRACTIONS,
    solver: ProbeEstimator = _MDL_SOLVER,
    labels=None,
    seed: int | None = None,
    *,
    train: str = "train",
    verbose: int = 1,
) -> ProbeReport:
    """The online code of every point's probe (Voita & Titov, 2020): its description
    length, in bits, of the train labels.

    The train rows (in the cache's order, or shuffled with `seed`) are cut
    into blocks that end at `int(f * n)` for each `f` in `fractions`. The
    first block is sent with the uniform code, `log2(classes)` bits a
    label; every next block with a probe fitted on all the rows before it:
    its cross-entropy on the block, in bits. Each block's probe starts from
    the previous one's fit. A layer from which the labels are easy to learn
    (from few examples, by a simple probe) gives a short code; one that a
    probe can only memorise, a long one, however well the last probe fits.
    `compression`, the uniform codelength over the online one, compares
    tasks and layers: about 1 or below where nothing is learnt.

    Rows are examples, or the kept tokens of a per-token cache
    (`reducers="tokens"`; padded tokens are no rows). Features are read from
    the cache a chunk at a time, as `kp.fit_probes` reads them, so a cache
    larger than memory is never loaded whole. `probed`'s own heads are left
    untouched.

    A class that no row before a block shows has no finite optimum (its
    unpenalised bias falls without end): the solver stops where the gradient
    is below its `tol`, and a row of that class costs about `-log2(tol)` bits.
    With Voita & Titov's first block (0.1% of the rows) that happens only when
    the train split is small: take a larger first fraction there.

    Args:
        probed: the `kp.ProbedModel` (class probes) the cache was written from.
        cache: its `kp.FeatureCache`.
        fractions: where the blocks end, as fractions of the train rows:
            strictly increasing within (0, 1], the last 1. Defaults to
            `FRACTIONS`, Voita & Titov's 0.1, 0.2, 0.4, 0.8, 1.6, 3.2,
            6.25, 12.5, 25, 50 and 100 percent.
        solver: the probe, an unfitted class solver whose `fit` takes a warm
            start (`coef_init`, `intercept_init`); each block fits a clone.
            Defaults to `kp.solvers.LBFGSProbe(l2=1e-3)`.
        labels: the train labels to encode instead of the cache's, one per
            train row (token): a control, e.g. `shuffled_labels(y)` or, per
            token, `control_task_labels(cache.token_ids("train"), y)`.
            Defaults to `None`: the cache's labels.
        seed: the order of the rows: `None` keeps the cache's order, an
            integer takes `np.random.default_rng(seed).permutation(n)`.
            Defaults to `None`.
        train: the split whose labels are encoded. Defaults to `"train"`.
        verbose: `1` shows a progress bar over the fits. Defaults to `1`.

    Returns:
        A `ProbeReport` whose `train` split holds, per point,
        `"codelength"` (bits), `"uniform_codelength"` (`n * log2(classes)`),
        `"compression"` (uniform over online), and, block by block from the
        uniform first one (`00`), `"block_codelength_<i>"` (its bits) and
        `"block_size_<i>"` (its rows): the online code to plot.

    Example:

    ```python
    mdl = kp.controls.description_length(probed, cache, seed=0)
    y = cache.arrays("train", points=[])[1]
    control = kp.controls.description_length(
        probed, cache, labels=kp.controls.control_task_labels(cache.token_ids("train"), y),
        seed=0)
    mdl.table(metrics=["codelength", "compression"])
    mdl.values("train", "compression"), control.values("train", "compression")
    ```
    """
    ends = _check_fractions(fractions)
    _params.check(_ONLINE_ARGS, seed=seed, train=train, verbose=verbose)
    _check_online_solver(solver, probed)
    cache.check_model(probed)
    cache.require_split(train)
    num_classes = probed.num_classes
    y = cache.arrays(train, points=[])[1]  # a label per row: per example, or per kept token
    n = len(y)
    y = _check_online_labels(y if labels is None else labels, n, num_classes, train)
    bounds = [int(f * n) for f in ends]
    if bounds[0] < 1:
        raise ValueError(
            f"The first block is empty: int(fractions[0] * n) = int({ends[0]:g} * {n}) = 0 "
            f"rows of split {train!r}. Pass a first fraction of at least 1/{n} "
            f"(e.g. fractions=({2 / n:.3g}, ...)) or a larger split."
        )
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    blocks = list(zip(bounds[:-1], bounds[1:], strict=True))
    fits = sum(stop > start for start, stop in blocks)
    progress = (
        Progbar(len(probed.points) * fits, counters=["iterations"], unit_name="fit")
        if verbose
        else None
    )
    uniform_bits = math.log2(num_classes)
    width = max(2, len(str(len(ends) - 1)))
    results, done = {}, 0
    for point in probed.points:
        features = cache.features(train, point)
        sizes, bits = [bounds[0]], [bounds[0] * uniform_bits]
        start_from = {}  # the previous block's fit: the next one's warm start
        for start, stop in blocks:
            sizes.append(stop - start)
            if stop == start:
                bits.append(0.0)
                continue
            seen, block = np.sort(order[:start]), np.sort(order[start:stop])
            probe = solver.clone().fit(
                SelectedRows(features, seen), y[seen], num_classes, **start_from
            )
            start_from = {"coef_init": probe.coef_, "intercept_init": probe.intercept_}
            loss = probe.evaluate(SelectedRows(features, block), y[block])["loss"]
            bits.append(loss * len(block) / math.log(2))
            done += 1
            if progress is not None:
                progress.update(done, [("iterations", probe.n_iter_)])
        total, uniform = float(sum(bits)), n * uniform_bits
        row = {"codelength": total, "uniform_codelength": uniform, "compression": uniform / total}
        for i, (size, cost) in enumerate(zip(sizes, bits, strict=True)):
            row[f"block_codelength_{i:0{width}d}"] = float(cost)
            row[f"block_size_{i:0{width}d}"] = float(size)
        results[point] = row
    return ProbeReport(list(probed.points), {train: results}, num_classes, probed.base.name)


def _check_fractions(fractions) -> tuple[float, ...]:
    """`fractions` as floats, strictly increasing within (0, 1] and ending at 1."""
    values, numbers = (), False
    if not isinstance(fractions, str | bytes):
        try:
            values = tuple(float(f) for f in fractions)
            numbers = all(isinstance(f, Real) and not isinstance(f, bool) for f in fractions)
        except (TypeError, ValueError):
            pass
    if (
        not numbers
        or not values
        or not all(0 < f <= 1 for f in values)
        or any(b <= a for a, b in zip(values, values[1:], strict=False))
        or values[-1] != 1
    ):
        raise ValueError(
            "`fractions` must be the ends of the blocks as fractions of the train rows: "
            "numbers strictly increasing within (0, 1], the last 1, e.g. kp.controls."
            f"FRACTIONS = {FRACTIONS}. Received: fractions={fractions!r}"
        )
    return values


def _check_online_solver(solver, probed):
    """Refuses a solver that cannot give the online code's probes."""
    if probed.task.solver_kind != "classifier":
        raise TypeError(
            "kp.controls.description_length encodes class labels: it needs class probes "
            f"(kp.ProbedModel with num_classes). Received: {type(probed).__name__} of task "
            f"{probed.task!r}"
        )
    check_solver(solver, probed.task)
    if solver.takes_validation == "required":
        raise ValueError(
            f"{solver!r} chooses on a held-out split, which the online code does not have: "
            "pass a solver that fits on the rows alone, e.g. kp.solvers.LBFGSProbe(l2=1e-3) "
            "or kp.solvers.LBFGSProbeCV(cv=5)."
        )


def _check_online_labels(labels, n, num_classes, train):
    """The labels to encode, one per row of the train split (`n`), checked."""
    shape = np.shape(labels)
    if len(shape) != 1 or shape[0] != n:
        raise ValueError(
            f"`labels` must hold one label per row of split {train!r}: {n} (one per kept "
            "token, for per-token probes), in the cache's order, e.g. "
            f"kp.controls.shuffled_labels(cache.arrays({train!r}, points=[])[1]). Received: "
            f"labels of shape {shape}"
        )
    return _validation.check_labels(labels, num_classes, num_examples=n)
