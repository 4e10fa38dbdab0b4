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

import tempfile

import numpy as np

from keras_probes.cache import FeatureCache
from keras_probes.fitting import fit_each, fit_probes
from keras_probes.flawed import reinitialize
from keras_probes.model import ProbedModel
from keras_probes.report import ProbeReport
from keras_probes.solvers import LBFGSProbe

__all__ = ["reinitialized_probes", "shuffled_label_probes", "shuffled_labels"]


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
    l2: float = 1e-4,
    *,
    seed: int = 0,
    train: str = "train",
    max_iter: int = 1000,
    tol: float = 1e-4,
    verbose: int = 1,
) -> ProbeReport:
    """Probes fitted on shuffled labels, on the same cached features.

    `probed`'s own heads are left untouched. Every split of the cache is
    evaluated against its own shuffled labels (split `i` shuffled with seed
    `seed + i`), so the train split measures what each probe memorises.

    Args:
        probed: the `kp.ProbedModel` the cache was written from.
        cache: its `kp.FeatureCache`.
        l2: the L2 penalty, as in `kp.fit_probes`. Defaults to `1e-4`.
        seed: seed of the shuffles. Defaults to `0`.
        train: the split the probes are fitted on. Defaults to `"train"`.
        max_iter, tol: L-BFGS settings, as in `LBFGSProbe`.
        verbose: `1` shows a progress bar. Defaults to `1`.

    Returns:
        A `ProbeReport` of loss, error and top-5 error on every complete
        split, against the shuffled labels.
    """
    cache.check_model(probed)
    cache.require_split(train)
    splits = cache.complete_splits
    labels = {
        split: shuffled_labels(cache.arrays(split, points=[])[1], seed=seed + i)
        for i, split in enumerate(splits)
    }
    return fit_each(
        LBFGSProbe(l2=l2, max_iter=max_iter, tol=tol),
        probed.task,
        probed.points,
        lambda split, point: cache.arrays(split, points=[point])[0][point],
        labels,
        train=train,
        model=probed.base.name,
        diagnostics=False,
        verbose=verbose,
    )


def reinitialized_probes(
    probed: ProbedModel,
    data: dict,
    l2: float = 1e-4,
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
        l2: the L2 penalty. Defaults to `1e-4`.
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
    with tempfile.TemporaryDirectory(prefix="keras_probes_control_") as temporary:
        path = temporary if directory is None else directory
        for split, split_data in data.items():
            FeatureCache.write(
                control, split_data, path, split=split, batch_size=batch_size, verbose=verbose
            )
        cache = FeatureCache.open(path, model=control)
        return fit_probes(control, cache, solver="lbfgs", l2=l2, verbose=verbose)
