"""Concept attribution: how much a class's prediction depends on a concept at a layer.

A probe says what a layer makes linearly readable; attribution asks whether the
model *uses* it. Both rest on the directional derivative of a class's logit
along a direction in one layer's activations (Kim et al. 2018, TCAV;
Graziani et al. 2018/2019, Regression Concept Vectors):

- `directional_derivatives`: per example, the gradient of class `target`'s
  logit (the input of the model's final softmax) with respect to the point's
  activation, dotted with a direction. Every path from the point to the logit
  counts (skip connections too): the model is re-traced with the direction
  added at the point, `activation + t * direction`, and the derivative is
  d logit / d t at t = 0, one forward and one backward pass per batch, the
  base in inference mode and never changed.
- `tcav`: a Concept Activation Vector (CAV) is a linear probe separating a
  concept's examples from random ones at the point (our L-BFGS solvers), as a
  unit vector; the TCAV score is the fraction of a class's examples whose
  derivative along it is positive. `runs` CAVs, each on its own disjoint share
  of the concept and random examples, against the scores of random-vs-random
  CAVs (also on disjoint shares): a two-sided t-test, as Kim et al. test.
  `tcav_report` tests many concepts, points and classes at once, with Holm's
  correction over all of them.
- `bidirectional_relevance`: Graziani et al.'s Br of a Regression Concept
  Vector (`kp.RegressionProbedModel.concept_vectors()`), `r2 * mean(d) /
  std(d)` of the derivatives along it.

A direction has the point's flattened size (row-major), or its channel count:
then it is placed at every position the point's reducer reads (every position
of a spatial map; the kept tokens of a token sequence, or the first or last
one), so CAVs and RCVs fitted on pooled features apply as they are.

Example:

```python
model = keras.applications.MobileNet(alpha=0.75, weights="imagenet")
t = kp.attribution.tcav(model, "conv_pw_11_relu", concept=striped, random=pool,
                        x=zebras, target=340, runs=10, seed=0)
t.score, t.pvalue            # TCAV score (mean over runs) and its test
```
"""

import dataclasses
import json
import math
import os
import warnings

import keras
import numpy as np
import scipy.stats
import sklearn.base
import tensorflow as tf

from keras_probes import _files, _graph, _params, uncertainty
from keras_probes import points as points_lib
from keras_probes import reducers as reducers_lib
from keras_probes._progress import Progbar
from keras_probes.model import ProbedModel
from keras_probes.solvers import LBFGSProbeCV

__all__ = [
    "TCAV",
    "TCAVReport",
    "bidirectional_relevance",
    "concept_activation_vectors",
    "directional_derivatives",
    "tcav",
    "tcav_report",
]

#: The folds `tcav`'s default solver chooses each CAV's penalty on.
CAV_FOLDS = 3


# -- the logit ----------------------------------------------------------------


class _DenseLogits(keras.layers.Layer):
    """A `Dense` layer's output before its activation, with the layer's own weights."""

    def __init__(self, dense, **kwargs):
        super().__init__(**kwargs)
        self.dense = dense

    def call(self, inputs):
        outputs = keras.ops.matmul(inputs, self.dense.kernel)
        return outputs if self.dense.bias is None else outputs + self.dense.bias


def _is_softmax(activation) -> bool:
    return getattr(activation, "__name__", None) == "softmax"


def _logits(graph, model_name: str):
    """The class scores of a traced model: its single output, or the input of its
    final softmax (a `Softmax`/`Activation("softmax")` layer, or a `Dense` layer's
    own softmax activation)."""
    outputs = keras.tree.flatten(graph.outputs)
    if len(outputs) != 1:
        raise ValueError(
            f"Model '{model_name}' has {len(outputs)} outputs; attribution differentiates one "
            "output's class logits. Pass a model of that output alone, e.g. "
            "keras.Model(model.input, model.outputs[0])."
        )
    output = outputs[0]
    history = output._keras_history
    layer = history.operation
    inputs = layer._inbound_nodes[history.node_index].input_tensors
    if isinstance(layer, keras.layers.Softmax) or (
        isinstance(layer, keras.layers.Activation) and _is_softmax(layer.activation)
    ):
        return inputs[0]
    if _is_softmax(getattr(layer, "activation", None)):
        if isinstance(layer, keras.layers.Dense):
            return _DenseLogits(layer, name=f"{_graph.safe_name(layer.name)}_logits")(inputs[0])
        raise ValueError(
            f"The last layer of model '{model_name}', '{layer.name}' "
            f"({type(layer).__name__}), applies softmax inside itself, so its logits are not "
            "a tensor of the graph. Build it with activation=None followed by "
            "keras.layers.Softmax()."
        )
    return output


# -- the direction at a point -------------------------------------------------


class _Shift(keras.layers.Layer):
    """`activation + sum_j t[:, j] * direction_j`, the directions placed as the
    point's reducer reads them (see `_placement`).

    Call arguments:
        inputs: the point's activation `(batch, *dims)`.
        t: `(batch, m)`: how far along each of the `m` directions.
        positions: `(batch, tokens)` weights of the tokens (token placement
            only): where a channel direction is placed.
    """

    def __init__(self, directions, flat: bool, **kwargs):
        super().__init__(**kwargs)
        self.directions = np.asarray(directions, dtype="float32")
        self.flat = flat

    def call(self, inputs, t, positions=None):
        ops = keras.ops
        directions = ops.convert_to_tensor(self.directions, dtype=inputs.dtype)
        t = ops.cast(t, inputs.dtype)
        if self.flat:
            shift = ops.reshape(ops.matmul(t, directions), ops.shape(inputs))
            return inputs + shift
        shift = ops.matmul(t, directions)  # (batch, channels)
        if positions is not None:
            weights = ops.cast(positions, inputs.dtype)[..., None]
            return inputs + weights * shift[:, None, :]
        middle = (1,) * (len(inputs.shape) - 2)
        return inputs + ops.reshape(shift, (-1, *middle, shift.shape[-1]))


@dataclasses.dataclass(frozen=True)
class _Placement:
    """How a point's directions are placed: `flat` (the flattened size) or a channel
    vector at every position (`pooling=None`) or at the tokens `pooling` reads."""

    flat: bool
    pooling: reducers_lib.TokenPooling | None = None


def _placement(tensor, point, reducer, masked, size):
    """How a direction of `size` numbers applies at `point`'s activation `tensor`."""
    dims = tuple(tensor.shape[1:])
    flat_size = math.prod(dims) if None not in dims else None
    channels = dims[-1] if dims else None
    if size == flat_size and (reducer in ("auto", "flatten") or len(dims) == 1):
        return _Placement(flat=True)
    if size == channels and len(dims) >= 2:
        layer = reducers_lib.resolve(reducer, {point: tuple(tensor.shape)}, masked=masked)[point]
        if isinstance(layer, reducers_lib.TokenPooling):
            return _Placement(flat=False, pooling=layer)
        if isinstance(layer, reducers_lib.GlobalAveragePooling):
            return _Placement(flat=False)
    sizes = f"its flattened size {flat_size}" if flat_size else "a known flattened size"
    if len(dims) >= 2:
        sizes += f" or its channel count {channels}"
    raise ValueError(
        f"A direction at point {point!r} (output {tuple(tensor.shape)}) has {sizes}, placed "
        f"as reducer {reducer!r} reads the point; received {size} numbers. Fit the concept "
        "vector on this point's features with the same reducer ('auto', 'gap', 'flatten', "
        "'mean', 'first' or 'last')."
    )


# -- derivatives ----------------------------------------------------------------


class _DerivativeLoop(keras.Model):
    """Keras' `predict` loop (batching, progress bar) over batches `{"inputs", "target"}`:
    each step gives, per point, `(batch, m)` derivatives of the target logits along the
    point's `m` directions: one forward and one backward pass."""

    def __init__(self, derivatives, **kwargs):
        super().__init__(**kwargs)
        # Not a layer: Keras tracks nothing in it (the shifted model's weights are the base's).
        self.of = derivatives

    def predict_step(self, data):
        of = self.of
        batch = keras.utils.unpack_x_y_sample_weight(data)[0]
        inputs, target = batch["inputs"], tf.cast(batch["target"], "int32")
        rows = tf.shape(target)[0]
        t = [tf.zeros((rows, len(of.directions[p]))) for p in of.points]
        given = [inputs, t]
        if of.pooled:
            mask = reducers_lib.input_of(inputs, of.input_names, reducers_lib.PADDING_MASK)
            given.append([of.placements[p].pooling.positions(mask) for p in of.pooled])
        with tf.GradientTape() as tape:
            tape.watch(t)
            logits = of.shifted(given, training=False)
            chosen = tf.gather(tf.cast(logits, "float32"), target, axis=1, batch_dims=1)
            total = tf.reduce_sum(chosen)
        gradients = tape.gradient(total, t)
        # A point the logit does not depend on has no gradient: its derivatives are 0.
        return {
            p: tf.zeros_like(zero) if gradient is None else gradient
            for p, zero, gradient in zip(of.points, t, gradients, strict=True)
        }


class _Derivatives:
    """The model re-traced with directions added at its points, and its derivative loop.

    Args:
        model: the Keras model (Functional or Sequential).
        directions: `{point: (m, size) array}`.
        reducer: how channel directions are placed (`"auto"`, `"gap"`,
            `"mean"`, `"first"`, `"last"`); `"auto"` or `"flatten"` for
            directions of the flattened size.
    """

    def __init__(self, model, directions: dict, reducer="auto"):
        graph = _graph.trace(model)
        paths = {point: _one_point(graph, point, model.name) for point in directions}
        self.input_names = [t.name for t in keras.tree.flatten(graph.inputs)]
        masked = reducers_lib.PADDING_MASK in self.input_names
        self.directions = {paths[p]: _directions(d, p) for p, d in directions.items()}
        self.placements = {
            path: _placement(graph.tensors[path], path, reducer, masked, d.shape[-1])
            for path, d in self.directions.items()
        }
        self.points = list(self.directions)
        self.pooled = [p for p in self.points if self.placements[p].pooling is not None]
        names = {p: _graph.safe_name(p) for p in self.points}
        t = {p: keras.Input((len(self.directions[p]),), name=f"t_{names[p]}") for p in self.points}
        positions = {p: keras.Input((None,), name=f"at_{names[p]}") for p in self.pooled}

        def edit(path):
            shift = _Shift(
                self.directions[path], self.placements[path].flat, name=f"shift_{names[path]}"
            )
            return lambda tensor: shift(tensor, t[path], positions.get(path))

        edited = _graph.trace(model, edits={path: edit(path) for path in self.points})
        logits = _logits(edited, model.name)
        if len(logits.shape) != 2:
            raise ValueError(
                f"Model '{model.name}' gives class scores of shape {logits.shape}; attribution "
                "needs (batch, classes)."
            )
        self.classes = int(logits.shape[-1])
        # Inputs `[model inputs, [t per point], [token positions per pooled point]]`.
        inputs = [edited.inputs, [t[p] for p in self.points]]
        if self.pooled:
            inputs.append([positions[p] for p in self.pooled])
        self.shifted = keras.Model(inputs, logits)
        self.loop = _DerivativeLoop(self, name=f"{_graph.safe_name(model.name)}_derivatives")

    def __call__(self, x, target, batch_size: int = 32, verbose: int = 1) -> dict:
        """`{point: (n, m)}` float64: the derivatives of `target`'s logit at inputs `x`."""
        data = _with_target(x, target, self.classes)
        outputs = self.loop.predict(data, batch_size=batch_size, verbose=verbose)
        return {path: np.asarray(outputs[path], dtype=np.float64) for path in self.points}


def _directions(direction, point):
    array = np.asarray(direction, dtype=np.float64)
    if array.ndim not in (1, 2) or array.size == 0 or not np.all(np.isfinite(array)):
        raise ValueError(
            f"A direction at point {point!r} is a finite vector (size,) or a stack (m, size). "
            f"Received: shape {array.shape}"
            + ("" if array.size == 0 or np.all(np.isfinite(array)) else " with NaN or inf")
        )
    return np.atleast_2d(array)


def _one_point(graph, point, model_name):
    if not isinstance(point, str):
        raise TypeError(f"`point` is one layer path (a str). Received: {point!r}")
    paths = points_lib.resolve_in(graph, [point], model_name)
    if len(paths) != 1:
        raise ValueError(
            f"`point` must name one layer; {point!r} names {len(paths)}: {paths[:5]}. "
            "Pass one of them."
        )
    return paths[0]


def _with_target(x, target, classes):
    """`x` as batches `{"inputs", "target"}`: an int target for every example, or one
    per example (arrays only)."""
    if isinstance(x, tf.data.Dataset):
        if not isinstance(target, int | np.integer):
            raise ValueError(
                "With a tf.data.Dataset, `target` is one class index (an int) for every "
                f"example. Received: target of type {type(target).__name__}"
            )
        _check_targets(np.asarray([target]), classes)

        def element(*batch):
            inputs = keras.utils.unpack_x_y_sample_weight(batch if len(batch) > 1 else batch[0])[0]
            rows = tf.shape(keras.tree.flatten(inputs)[0])[0]
            return {"inputs": inputs, "target": tf.fill((rows,), int(target))}

        return x.map(element)
    rows = len(keras.tree.flatten(x)[0])
    targets = np.asarray(target)
    if targets.ndim == 0:
        targets = np.full(rows, int(targets))
    if targets.shape != (rows,) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(
            f"`target` is a class index (an int) or one per example, ({rows},) integers. "
            f"Received: target of shape {targets.shape} and dtype {targets.dtype}"
        )
    _check_targets(targets, classes)
    return {"inputs": x, "target": targets.astype(np.int32)}


def _check_targets(targets, classes):
    if targets.size and (targets.min() < 0 or targets.max() >= classes):
        raise ValueError(
            f"`target` is a class index in [0, {classes}) (the model's logits); received "
            f"{targets.min() if targets.min() < 0 else targets.max()}."
        )


# -- public: derivatives ----------------------------------------------------------


def directional_derivatives(
    model: keras.Model,
    point: str,
    direction,
    x,
    target,
    *,
    reducer: str = "auto",
    batch_size: int = 32,
    verbose: int = 1,
) -> np.ndarray:
    """The derivative of a class's logit along a direction in one layer's activations.

    `d[i]` is the gradient of class `target`'s logit at `x[i]` with respect to
    the point's activation, dotted with `direction`. The logit is the input
    of the model's final softmax, whether a `Softmax`/`Activation` layer or a
    `Dense(activation="softmax")`; a model without one is differentiated at
    its output. Every path from the point to the logit counts (skip
    connections too): the model is re-traced with `activation + t *
    direction` at the point and `d = d logit / d t` at `t = 0`, one forward
    and one backward pass per batch. The base runs in inference mode
    (`training=False`) and is never changed.

    Args:
        model: a Functional or Sequential Keras model (nested sub-models,
            keras-hub backbones and tasks too), giving class scores
            `(batch, classes)`.
        point: the layer path, as `kp.points` names it (e.g.
            `"conv_pw_11_relu"`, `"inner/dense_1"`, `"transformer_layer_1"`).
        direction: `(size,)`, or `(m, size)` for `m` directions at once.
            `size` is the activation's flattened size (row-major), or its
            channel count: then the direction is placed at every position the
            point's `reducer` reads (every position of a spatial map, the
            kept tokens of a token sequence, or the first or last one), the
            direction whose pooling is proportional to `direction`, so that
            vectors fitted on pooled features apply as they are.
        x: inputs: arrays (a dict by input name for several inputs) or a
            `tf.data.Dataset` of batches (`x` or `(x, y)`; `y` is ignored).
        target: the class index, or one per example (arrays only).
        reducer: how a channel direction is placed, as `kp.ProbedModel`'s
            reducers pool: `"auto"` (all positions of a spatial map; the kept
            tokens of a model with a `padding_mask` input), `"gap"`,
            `"mean"`, `"first"` or `"last"`. Defaults to `"auto"`.
        batch_size: examples per batch (arrays). Defaults to `32`.
        verbose: `1` shows a progress bar. Defaults to `1`.

    Returns:
        `(n,)` float64 derivatives, or `(n, m)` for `m` directions.

    Example:

    ```python
    d = kp.attribution.directional_derivatives(model, "conv_pw_11_relu", cav, x, target=340)
    (d > 0).mean()   # a TCAV score
    ```
    """
    _params.check(
        {"batch_size": _params.Integer(1), "verbose": _params.Integer(0, 2)},
        batch_size=batch_size,
        verbose=verbose,
    )
    stacked = np.ndim(direction) == 2
    derivatives = _Derivatives(model, {point: direction}, reducer)
    (values,) = derivatives(x, target, batch_size, verbose).values()
    return values if stacked else values[:, 0]


def bidirectional_relevance(
    model: keras.Model,
    point: str,
    rcv,
    r2: float,
    x,
    target,
    *,
    reducer: str = "auto",
    batch_size: int = 32,
    verbose: int = 1,
) -> float:
    """Graziani et al.'s bidirectional relevance of a Regression Concept Vector.

    `Br = r2 * mean(d) / std(d)` over the directional derivatives `d` of
    class `target`'s logit along `rcv` (`directional_derivatives`): positive
    when the concept's growth raises the class's logit for most examples,
    large when it does so consistently, weighted by how well the concept is
    read at the point (`r2`, the regression probe's held-out R^2). `std` is
    the population standard deviation (`ddof=0`), as in Graziani et al.'s
    code.

    Args:
        model, point, x, target, reducer, batch_size, verbose: as for
            `directional_derivatives`.
        rcv: the concept vector, e.g. a column of
            `kp.RegressionProbedModel.concept_vectors()[point]`.
        r2: the concept's R^2 at `point`.

    Returns:
        Br, a float.

    Raises:
        ValueError: the derivatives do not vary (Br is undefined).

    Example:

    ```python
    vectors = regression_probed.concept_vectors()
    br = kp.attribution.bidirectional_relevance(
        model, point, vectors[point][:, 0], r2=report.r2s("test")[point], x=x, target=3)
    ```
    """
    _params.check({"r2": _params.Real(None, 1.0)}, r2=r2)
    if np.ndim(rcv) != 1:
        raise ValueError(f"`rcv` is one vector (size,). Received: shape {np.shape(rcv)}")
    d = directional_derivatives(
        model, point, rcv, x, target, reducer=reducer, batch_size=batch_size, verbose=verbose
    )
    spread = float(np.std(d))
    if not spread > 0:
        raise ValueError(
            f"The derivatives along the concept vector at {point!r} do not vary over the "
            f"{len(d)} examples (all {d[0] if len(d) else 'absent'}), so Br = r2 * mean / std "
            "is undefined. Give more (or more varied) examples."
        )
    return float(r2 * np.mean(d) / spread)


# -- CAVs -------------------------------------------------------------------------


def _default_solver():
    # float64: a CAV's problem is small, and float32's line search stops short on it.
    return LBFGSProbeCV(cv=CAV_FOLDS, dtype="float64")


def concept_activation_vectors(concept, random, solver=None):
    """A Concept Activation Vector: the unit normal of a linear probe separating
    `concept` features from `random` ones, pointing toward the concept.

    Args:
        concept: `(n_concept, features)` features of the concept's examples.
        random: `(n_random, features)` features of random examples.
        solver: a `kp.solvers` classifier (a scikit-learn estimator, cloned).
            Defaults to `None`: `kp.solvers.LBFGSProbeCV(cv=3, dtype="float64")`,
            the penalty chosen on 3 folds.

    Returns:
        `(cav, probe)`: the unit vector `(features,)` and the fitted probe.
    """
    concept, random = np.asarray(concept), np.asarray(random)
    if concept.ndim != 2 or random.ndim != 2 or concept.shape[1] != random.shape[1]:
        raise ValueError(
            "`concept` and `random` are features (examples, features) of the same point. "
            f"Received: shapes {concept.shape} and {random.shape}"
        )
    solver = _default_solver() if solver is None else solver
    if getattr(solver, "takes_validation", None) == "required":
        raise ValueError(
            "A CAV's solver fits on the concept and random examples alone: give it folds "
            "(e.g. kp.solvers.LBFGSProbeCV(cv=3)) instead of cv='val'."
        )
    probe = sklearn.base.clone(solver).fit(
        np.concatenate([concept, random]),
        np.r_[np.ones(len(concept), np.int64), np.zeros(len(random), np.int64)],
        2,
    )
    normal = np.asarray(probe.coef_[:, 1] - probe.coef_[:, 0], dtype=np.float64)
    norm = np.linalg.norm(normal)
    if not norm > 0:
        raise ValueError(
            "The probe separating the concept from the random examples has a zero kernel "
            "(its penalty is too strong for these few examples): give a weaker penalty or "
            "more examples."
        )
    return normal / norm, probe


def _accuracy(probe, concept, random):
    if not len(concept) or not len(random):
        return math.nan
    predicted = probe.predict(np.concatenate([concept, random]))
    truth = np.r_[np.ones(len(concept)), np.zeros(len(random))]
    return float(np.mean(predicted == truth))


def _features(model, points, sets, reducer, batch_size, verbose):
    """`(paths, [{point: (n_i, features)}])` of every input set in `sets` (arrays, or dicts
    of arrays), reduced as `kp.ProbedModel` reduces them: one pass over them all."""
    probed = ProbedModel(model, points=list(points), num_classes=2, reducers=reducer)
    joined = keras.tree.map_structure(lambda *parts: np.concatenate(parts), *sets)
    features = probed.feature_model.predict(joined, batch_size=batch_size, verbose=verbose)
    ends = np.cumsum([_rows(x) for x in sets])[:-1]
    return probed.points, [
        dict(zip(probed.points, parts, strict=True))
        for parts in zip(
            *(np.split(np.asarray(features[p], np.float64), ends) for p in probed.points),
            strict=True,
        )
    ]


def _rows(x) -> int:
    if isinstance(x, tf.data.Dataset):
        raise TypeError(
            "tcav splits the concept and random examples into disjoint shares, so they are "
            "arrays (or a dict of arrays); the class examples `x` may be a tf.data.Dataset."
        )
    return len(keras.tree.flatten(x)[0])


def _shares(rows, parts, rng, what, need):
    if rows < parts * need:
        raise ValueError(
            f"`{what}` has {rows} examples; tcav splits it into {parts} disjoint shares of "
            f"at least {need} ({parts * need} examples). Give more examples, or fewer runs."
        )
    return np.array_split(rng.permutation(rows), parts)


# -- TCAV ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TCAV:
    """The TCAV test of one concept at one point for one class (Kim et al. 2018).

    Attributes:
        concept, point, target: what was tested.
        scores: `(runs,)`: each CAV's TCAV score, the fraction of the class's
            examples whose logit grows along it.
        random_scores: `(runs,)`: the random-vs-random CAVs' scores, the null.
        magnitudes, random_magnitudes: `(runs,)`: the magnitude scores, the
            positive derivatives' share of all derivatives' absolute sum.
        cav_accuracies, random_cav_accuracies: `(runs,)`: each CAV's accuracy
            on the next run's share (held out; NaN with one run).
        statistic, pvalue: the two-sided t-test of `scores` against
            `random_scores` (`scipy.stats.ttest_ind`, equal variances, as Kim
            et al.'s code); NaN where neither varies.
        adjusted_pvalue: Holm's adjusted p-value when tested with others
            (`tcav_report`), else `None`.
    """

    concept: str
    point: str
    target: int
    scores: np.ndarray
    random_scores: np.ndarray
    magnitudes: np.ndarray
    random_magnitudes: np.ndarray
    cav_accuracies: np.ndarray
    random_cav_accuracies: np.ndarray
    statistic: float
    pvalue: float
    adjusted_pvalue: float | None = None

    @property
    def score(self) -> float:
        """The TCAV score: the mean of `scores` over runs."""
        return float(np.mean(self.scores))

    @property
    def random_score(self) -> float:
        """The mean of the random-vs-random CAVs' scores."""
        return float(np.mean(self.random_scores))

    @property
    def magnitude(self) -> float:
        """The mean magnitude score over runs."""
        return (
            float(np.nanmean(self.magnitudes)) if np.any(np.isfinite(self.magnitudes)) else math.nan
        )

    def significant(self, alpha: float = 0.05) -> bool:
        """Whether the score differs from the random CAVs' at `alpha` (Holm-adjusted
        when tested with others)."""
        p = self.pvalue if self.adjusted_pvalue is None else self.adjusted_pvalue
        return bool(p < alpha)

    def to_dict(self) -> dict:
        """The result as JSON-ready values: arrays as lists, NaN as `None`; no
        `adjusted_pvalue` key when the p-value was not adjusted."""
        data = dataclasses.asdict(self)
        if data["adjusted_pvalue"] is None:
            del data["adjusted_pvalue"]
        for name, value in data.items():
            if isinstance(value, np.ndarray):
                data[name] = [_null_nan(float(v)) for v in value]
            elif isinstance(value, float):
                data[name] = _null_nan(value)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TCAV":
        values = {}
        for field in dataclasses.fields(cls):
            if field.name not in data and field.default is dataclasses.MISSING:
                raise ValueError(f"a TCAV result lacks {field.name!r}")
            value = data.get(field.name, field.default)
            if isinstance(value, list):
                value = np.array([math.nan if v is None else v for v in value], np.float64)
            elif value is None and field.name in data:  # NaN, written as null
                value = math.nan
            values[field.name] = value
        return cls(**values)

    def __str__(self):
        p = self.pvalue if self.adjusted_pvalue is None else self.adjusted_pvalue
        holm = " (Holm)" if self.adjusted_pvalue is not None else ""
        return (
            f"TCAV {self.concept} @ {self.point} -> class {self.target}: {self.score:.3f} "
            f"(random {self.random_score:.3f}, {len(self.scores)} runs), p={p:.3g}{holm}"
        )


def _null_nan(value):
    return None if isinstance(value, float) and math.isnan(value) else value


def _scores(d):
    """Per column of derivatives `(n, m)`: TCAV scores and magnitude scores."""
    positive = d > 0
    absolute = np.abs(d).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        magnitude = np.where(absolute > 0, np.where(positive, d, 0).sum(axis=0) / absolute, np.nan)
    return positive.mean(axis=0), magnitude


class TCAVReport:
    """TCAV tests of several concepts, points and classes, with Holm's correction.

    Args:
        results: `kp.attribution.TCAV` results; their p-values are adjusted
            together (Holm) unless `adjust=False`.
        adjust: whether to Holm-adjust the p-values over `results`. Defaults
            to `True`.

    Example:

    ```python
    report = kp.attribution.tcav_report(model, points, {"striped": xs, "dotted": xd},
                                        random=pool, classes={340: zebras}, runs=10)
    print(report.table())
    report.to_json("tcav.json"); kp.plots.plot_tcav(report, "tcav.png")
    ```
    """

    def __init__(self, results, adjust: bool = True):
        results = list(results)
        if adjust and len(results) > 1:
            pvalues = np.array([r.pvalue for r in results], np.float64)
            adjusted = np.full(len(results), np.nan)
            finite = np.isfinite(pvalues)
            if finite.any():
                adjusted[finite] = uncertainty.holm(pvalues[finite])
            results = [
                dataclasses.replace(r, adjusted_pvalue=float(a))
                for r, a in zip(results, adjusted, strict=True)
            ]
        self.results = results

    @property
    def concepts(self) -> list[str]:
        return list(dict.fromkeys(r.concept for r in self.results))

    @property
    def points(self) -> list[str]:
        return list(dict.fromkeys(r.point for r in self.results))

    @property
    def targets(self) -> list[int]:
        return list(dict.fromkeys(r.target for r in self.results))

    def get(self, concept: str, point: str, target: int) -> TCAV:
        """The result of `concept` at `point` for class `target`."""
        for result in self.results:
            if (result.concept, result.point, result.target) == (concept, point, target):
                return result
        raise KeyError(
            f"No TCAV result for concept {concept!r} at {point!r}, class {target}. Known: "
            f"concepts {self.concepts}, points {self.points}, classes {self.targets}"
        )

    def table(self, alpha: float = 0.05) -> str:
        """One line per result: score, the random CAVs' score, p-value, significance."""
        rows = [("class", "concept", "point", "score", "random", "magnitude", "CAV acc", "p", "")]
        for r in self.results:
            p = r.pvalue if r.adjusted_pvalue is None else r.adjusted_pvalue
            rows.append(
                (
                    str(r.target),
                    r.concept,
                    r.point,
                    f"{r.score:.3f} ± {np.std(r.scores):.3f}",
                    f"{r.random_score:.3f} ± {np.std(r.random_scores):.3f}",
                    f"{r.magnitude:.3f}",
                    f"{np.nanmean(r.cav_accuracies):.2f}"
                    if np.any(np.isfinite(r.cav_accuracies))
                    else "-",
                    f"{p:.2g}",
                    "*" if r.significant(alpha) else "",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        holm = "Holm-adjusted " if any(r.adjusted_pvalue is not None for r in self.results) else ""
        lines.append(f"* significant at {alpha} ({holm}two-sided t-test against random CAVs)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "format": "keras_probes.TCAVReport",
            "version": 1,
            "results": [r.to_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "TCAVReport":
        if not isinstance(data, dict) or data.get("format") != "keras_probes.TCAVReport":
            raise ValueError("not a TCAV report (its 'format' is not 'keras_probes.TCAVReport')")
        return cls([TCAV.from_dict(r) for r in data.get("results", [])], adjust=False)

    def to_json(self, path) -> None:
        """Writes the report as strict JSON (NaN as `null`), atomically."""
        _files.atomic_write(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    @classmethod
    def from_json(cls, path) -> "TCAVReport":
        """Reads a report written by `to_json`."""
        data = _files.read_json(
            path, "The TCAV report file", "A TCAV report is written by TCAVReport.to_json."
        )
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{os.fspath(path)} is not a readable TCAV report: {error}") from None


def tcav_report(
    model: keras.Model,
    points,
    concepts: dict,
    random,
    classes: dict,
    *,
    runs: int = 20,
    seed: int = 0,
    reducer: str = "auto",
    solver=None,
    batch_size: int = 32,
    verbose: int = 1,
) -> TCAVReport:
    """TCAV tests of every concept at every point for every class, Holm-corrected.

    For each point, `runs` CAVs per concept, run `i` fitted on its own
    disjoint share of the concept's examples against its own share of
    `random`, and `runs` random-vs-random CAVs, each on two further shares of
    `random` (so `random` is split into `3 * runs` disjoint shares): the null
    distribution of the score. Reusing one concept set or one random set in
    every run would make the runs dependent and random concepts
    "significant" far above the test's level. The class examples'
    derivatives along all these CAVs come from one forward and one backward
    pass per batch (all points at once).

    Args:
        model: the Keras model, giving class scores (see
            `directional_derivatives`).
        points: a layer path or a list of them.
        concepts: `{name: examples}` (arrays, or a dict of arrays).
        random: random examples (arrays), e.g. images of many classes.
        classes: `{class index: examples}` (arrays or a `tf.data.Dataset`).
        runs: CAVs per concept and point, and random-vs-random CAVs.
            Defaults to `20`.
        seed: seed of the shares. Defaults to `0`: the same call gives the
            same numbers.
        reducer: how features are pooled for the CAVs and how the CAVs are
            placed (see `directional_derivatives`). Defaults to `"auto"`.
        solver: the CAVs' solver (see `concept_activation_vectors`).
        batch_size, verbose: as for `directional_derivatives`.

    Returns:
        A `TCAVReport`.
    """
    _params.check(
        {"runs": _params.Integer(2), "seed": _params.Integer(0), "batch_size": _params.Integer(1)},
        runs=runs,
        seed=seed,
        batch_size=batch_size,
    )
    if isinstance(points, str):
        points = [points]
    if not concepts or not isinstance(concepts, dict):
        raise ValueError(f"`concepts` is a dict {{name: examples}}. Received: {concepts!r:.80}")
    if not classes or not isinstance(classes, dict):
        raise ValueError(
            f"`classes` is a dict {{class index: examples}}. Received: {classes!r:.80}"
        )
    solver = _default_solver() if solver is None else solver
    need = max(int(solver.cv), 1) if isinstance(getattr(solver, "cv", None), int) else 1
    rng = np.random.default_rng(seed)
    random_shares = _shares(_rows(random), 3 * runs, rng, "random", need)
    concept_shares = {
        name: _shares(_rows(x), runs, rng, f"concepts[{name!r}]", need)
        for name, x in concepts.items()
    }
    paths, (random_features, *each) = _features(
        model, points, [random, *concepts.values()], reducer, batch_size, verbose
    )
    concept_features = dict(zip(concepts, each, strict=True))
    directions, accuracies = {}, {}
    progress = (
        Progbar(len(paths) * (len(concepts) + 1) * runs, unit_name="CAV") if verbose else None
    )
    for path in paths:
        pool = random_features[path]
        pairs = {
            name: [
                (concept_features[name][path][s], pool[random_shares[i]])
                for i, s in enumerate(shares)
            ]
            for name, shares in concept_shares.items()
        }
        pairs[None] = [
            (pool[random_shares[runs + 2 * j]], pool[random_shares[runs + 2 * j + 1]])
            for j in range(runs)
        ]
        vectors = []
        for name, fits in pairs.items():
            fitted = []
            for a, b in fits:
                fitted.append(concept_activation_vectors(a, b, solver))
                if progress is not None:
                    progress.add(1)
            vectors += [cav for cav, _ in fitted]
            accuracies[path, name] = np.array(
                [_accuracy(probe, *fits[(i + 1) % runs]) for i, (_, probe) in enumerate(fitted)]
            )
        directions[path] = np.stack(vectors)
    derivatives = _Derivatives(model, directions, reducer)
    names = list(concepts)
    results = []
    for target, x in classes.items():
        if not isinstance(target, int | np.integer):
            raise ValueError(f"`classes` keys are class indices (ints). Received: {target!r}")
        values = derivatives(x, int(target), batch_size, verbose)
        for path in paths:
            spread = np.std(values[path], axis=0)
            if np.all(spread <= 1e-6 * np.max(np.abs(values[path]), initial=0.0)):
                warnings.warn(
                    f"The derivatives of class {target}'s logit at {path!r} are the same for "
                    "every example (the logit is linear in this point's activation), so every "
                    "TCAV score there is 0 or 1 whatever the concept. Test an earlier point.",
                    stacklevel=2,
                )
            scores, magnitudes = _scores(values[path])
            null = slice(len(names) * runs, (len(names) + 1) * runs)
            for index, name in enumerate(names):
                own = slice(index * runs, (index + 1) * runs)
                with warnings.catch_warnings():
                    # Scores that barely vary (all 0 or 1): the p-value stands as SciPy gives it.
                    warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
                    test = scipy.stats.ttest_ind(scores[own], scores[null])
                results.append(
                    TCAV(
                        concept=str(name),
                        point=path,
                        target=int(target),
                        scores=scores[own],
                        random_scores=scores[null],
                        magnitudes=magnitudes[own],
                        random_magnitudes=magnitudes[null],
                        cav_accuracies=accuracies[path, name],
                        random_cav_accuracies=accuracies[path, None],
                        statistic=float(test.statistic),
                        pvalue=float(test.pvalue),
                    )
                )
    return TCAVReport(results)


def tcav(
    model: keras.Model,
    point: str,
    concept,
    random,
    x,
    target: int,
    *,
    runs: int = 20,
    seed: int = 0,
    reducer: str = "auto",
    solver=None,
    batch_size: int = 32,
    verbose: int = 1,
) -> TCAV:
    """The TCAV test of one concept at one point for one class (Kim et al. 2018).

    `tcav_report` with one concept, point and class: `runs` CAVs, each on
    its own disjoint share of `concept` and of `random`, tested against
    `runs` random-vs-random CAVs on further disjoint shares of `random`
    (`random` is split into `3 * runs` shares) by a two-sided t-test.

    Args:
        model, point, reducer, batch_size, verbose: as for
            `directional_derivatives`.
        concept: the concept's examples (arrays, or a dict of arrays).
        random: random examples (arrays).
        x: the class's examples (arrays or a `tf.data.Dataset`).
        target: the class index.
        runs, seed, solver: as for `tcav_report`.

    Returns:
        A `TCAV`: `score`, `scores`, `random_scores`, `pvalue`, ...

    Example:

    ```python
    t = kp.attribution.tcav(model, "conv_pw_11_relu", concept=striped, random=pool,
                            x=zebras, target=340, runs=10, seed=0)
    print(t)   # TCAV concept @ conv_pw_11_relu -> class 340: 0.912 (random 0.48...), p=...
    ```
    """
    report = tcav_report(
        model,
        [point],
        {"concept": concept},
        random,
        {target: x},
        runs=runs,
        seed=seed,
        reducer=reducer,
        solver=solver,
        batch_size=batch_size,
        verbose=verbose,
    )
    return report.results[0]
