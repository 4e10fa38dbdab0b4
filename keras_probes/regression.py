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

from keras_probes.fitting import fit_each
from keras_probes.metrics import mspe, r2
from keras_probes.model import ProbedModel
from keras_probes.report import ProbeReport
from keras_probes.solvers import RidgeProbe, unit_columns
from keras_probes.tasks import Regression

__all__ = [
    "ALPHAS",
    "RegressionProbedModel",
    "RidgeProbe",
    "fit_regression_probes",
    "mspe",
    "r2",
]

#: The ridge penalties `RidgeProbe` (and so `fit_regression_probes`) chooses from by default.
ALPHAS = RidgeProbe.settings["alpha"].default


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
        self._probe(base, points, reducers, Regression(targets), **kwargs)

    @property
    def targets(self) -> list[str]:
        """The names of the regressed targets, in column order."""
        return list(self.task.targets)

    def concept_vectors(self) -> dict[str, np.ndarray]:
        """Every point's Regression Concept Vectors: `{point: (features, targets)}`,
        each column the unit vector along which that target grows."""
        vectors = {}
        for point, head in zip(self.points, self.heads, strict=True):
            kernel = keras.ops.convert_to_numpy(head.kernel).astype(np.float64)
            vectors[point] = unit_columns(kernel)
        return vectors


def fit_regression_probes(
    probed: RegressionProbedModel,
    cache,
    targets: dict,
    alpha: float | Sequence[float] | None = None,
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
            Defaults to `None`: `RidgeProbe`'s default, `ALPHAS`, 1e-3 to 1e6
            in half decades.
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
    values = {}
    for split, y in targets.items():
        cache.require_split(split)
        values[split] = probed.task.check_targets(y, num_examples=cache.num_examples(split))
    return fit_each(
        RidgeProbe() if alpha is None else RidgeProbe(alpha),
        probed.task,
        probed.points,
        cache.features,
        values,
        train=train,
        heads=probed.heads,
        model=probed.base.name,
        examples=cache.examples,
        verbose=verbose,
    )
