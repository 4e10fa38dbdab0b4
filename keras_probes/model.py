"""`ProbedModel`: a Keras model with a linear probe at every chosen layer."""

import types
from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf

from keras_probes import _graph, _validation, metrics
from keras_probes import points as points_lib
from keras_probes import reducers as reducers_lib
from keras_probes.outcomes import Examples, Fingerprint, Outcomes
from keras_probes.report import ProbeReport, log_key
from keras_probes.tasks import Classification, Task

__all__ = ["ProbeTrainer", "ProbedModel"]

_EMPTY = (
    "The data yielded no batch at all (an empty dataset, e.g. after a filter()). "
    "Check the split name and any filter or take() applied to it."
)
_FIXED_COMPILE_ARGS = ("loss", "metrics", "loss_weights", "weighted_metrics")
_WEIGHTED = (
    "evaluate_probes scores every example (every kept token) once, unweighted, and keeps "
    "each one's outcome; `x` yields sample weights. Drop them (of a dataset: "
    "`x.map(lambda x, y, w: (x, y))`), or call `evaluate` for weighted means."
)
_UNLABELLED = (
    "evaluate_probes needs labels: `x` must yield (inputs, labels) batches. "
    "Received a batch without labels."
)


class ProbeTrainer(keras.Model):
    """Probe heads of one task, trained by Keras on features given to them.

    What every probe-training model shares: the heads, per-probe metrics and
    the train and test steps. `train_step` differentiates the probes' losses
    with respect to the heads' variables only. The inputs are the features
    themselves, `{point: (batch, features)}`; `ProbedModel` overrides
    `extract_features` to compute them with its base, in the same step.

    Args:
        task: a `kp.tasks.Task`, e.g. `kp.tasks.Classification(10)`.
        points: the point names, one per head.
        heads: the built head layers (`task.new_head(...)`), one per point.
        l2: the penalty `l2 / 2 * ||kernel||^2` of every probe's objective.
            It enters the gradient only: logged losses stay the plain task
            loss. Defaults to `0`.
        **kwargs: passed to `keras.Model` (e.g. `name`).
    """

    def __init__(self, task: Task, points, heads, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.task = task
        self._points = tuple(points)
        self.heads = list(heads)
        self.l2 = float(l2)
        self._trackers = {p: task.new_trackers(_graph.safe_name(p)) for p in self._points}
        self._total_tracker = keras.metrics.Mean(name="loss")
        self.built = True

    def extract_features(self, x):
        """The features of every point for a batch: here, `x` itself."""
        return x

    @property
    def num_classes(self) -> int | None:
        """The task's number of classes (`None` for regression probes)."""
        return self.task.num_classes

    @property
    def points(self) -> list[str]:
        """The probe points, input side first."""
        return list(self._points)

    @property
    def probe_variables(self) -> list:
        """The only variables that probe training updates: every head's kernel and bias."""
        return [v for head in self.heads for v in head.trainable_variables]

    def get_probe(self, point: str) -> keras.layers.Layer:
        """The probe head at `point`; its weights are `[kernel, bias]`."""
        try:
            return self.heads[self._points.index(point)]
        except ValueError:
            raise ValueError(
                f"No probe at {point!r}. The probed points are: {self.points}. "
                f"Received: point={point!r}"
            ) from None

    def call(self, inputs, training=False):
        features = self.extract_features(inputs)
        return {
            point: head(features[point])
            for point, head in zip(self._points, self.heads, strict=True)
        }

    # -- training ---------------------------------------------------------

    def compile(self, optimizer="rmsprop", **kwargs):
        """Configures probe training.

        Args:
            optimizer: the probes' optimizer. Defaults to `"rmsprop"`, the
                paper's setting. Each probe's loss is its mean sparse
                categorical cross-entropy; the total is their sum, so with
                any per-variable optimizer each probe trains as if alone.
            **kwargs: other `keras.Model.compile` arguments, such as
                `steps_per_execution` or `run_eagerly`. `loss` and `metrics`
                are fixed by the probes and refused.
        """
        given = {key: kwargs.pop(key, None) for key in _FIXED_COMPILE_ARGS}
        fixed = sorted(key for key, value in given.items() if value is not None)
        if fixed:
            raise ValueError(
                f"ProbedModel defines its own loss and metrics per probe; do not pass "
                f"{fixed}. Pass only `optimizer` (and e.g. `steps_per_execution`)."
            )
        super().compile(optimizer=optimizer, **kwargs)
        # Slots for the probes only: Keras would otherwise build them for every
        # trainable variable of the model, the base's included.
        self.optimizer.build(self.probe_variables)

    def get_compile_config(self):
        if not self.compiled:
            return None
        return {"optimizer": keras.saving.serialize_keras_object(self.optimizer)}

    def compile_from_config(self, config):
        self.compile(optimizer=keras.saving.deserialize_keras_object(config["optimizer"]))

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        *args,
        **kwargs,
    ):
        callbacks = self._with_progress(callbacks, verbose)
        history = super().fit(x, y, batch_size, epochs, verbose, callbacks, *args, **kwargs)
        history.history = self._in_depth_order(history.history)
        return history

    def evaluate(
        self,
        x=None,
        y=None,
        batch_size=None,
        verbose="auto",
        sample_weight=None,
        steps=None,
        callbacks=None,
        return_dict=False,
        **kwargs,
    ):
        callbacks = self._with_progress(callbacks, verbose)
        logs = super().evaluate(
            x, y, batch_size, verbose, sample_weight, steps, callbacks, return_dict, **kwargs
        )
        return self._in_depth_order(logs) if return_dict else logs

    def _with_progress(self, callbacks, verbose):
        """`callbacks` plus a progress bar that lists the probes in depth order, where Keras
        would add its own (`verbose` not 0, no `ProgbarLogger` given)."""
        if isinstance(callbacks, keras.callbacks.CallbackList):
            return callbacks  # `fit` evaluating its validation data: fit's own callbacks
        callbacks = list(callbacks or [])
        given = any(isinstance(c, keras.callbacks.ProgbarLogger) for c in callbacks)
        if verbose != 0 and not given:
            callbacks.append(_DepthOrderedProgbar(self._in_depth_order))
        return callbacks

    def _in_depth_order(self, logs):
        """`logs` with the probes' keys input side first, each probe's metrics in the
        trackers' order; other keys (`loss`) first, `val_` keys after the rest.

        Keras gives callbacks its logs sorted by name
        (`keras.src.utils.python_utils.pythonify_logs`), which would list
        `conv_pw_10` before `conv_pw_2`. The keys themselves are unchanged.
        """
        depth = {point: index for index, point in enumerate(self._points)}
        metrics = {point: list(trackers) for point, trackers in self._trackers.items()}

        def rank(key):
            held_out = key.startswith("val_")
            name = key.removeprefix("val_")
            # The longest point the key starts with: points may hold "/" themselves.
            point = max(
                (p for p in self._points if name.startswith(p + "/")), key=len, default=None
            )
            if point is None:
                return (held_out, -1, 0)
            metric = name[len(point) + 1 :]
            order = metrics[point]
            return (held_out, depth[point], order.index(metric) if metric in order else len(order))

        return {key: logs[key] for key in sorted(logs, key=rank)}

    @property
    def metrics(self):
        return [self._total_tracker] + [
            metric for trackers in self._trackers.values() for metric in trackers.values()
        ]

    def _probe_logits(self, features):
        """Every head's linear output (logits, or a regression's predictions)."""
        return {
            point: head.linear(features[point])
            for point, head in zip(self._points, self.heads, strict=True)
        }

    def _probe_losses(self, y, logits, sample_weight):
        """Per-probe weighted mean loss, their sum, and the batch's total weight."""
        if sample_weight is None:
            weight = keras.ops.ones(keras.ops.shape(y)[:1], dtype="float32")
        else:
            weight = keras.ops.reshape(keras.ops.cast(sample_weight, "float32"), (-1,))
        total_weight = keras.ops.sum(weight)
        losses = {
            point: keras.ops.divide_no_nan(
                keras.ops.sum(self.task.example_losses(y, z) * weight), total_weight
            )
            for point, z in logits.items()
        }
        return losses, keras.ops.sum(keras.ops.stack(list(losses.values()))), total_weight

    def _update_metrics(self, y, logits, losses, total, total_weight, sample_weight):
        # Losses are weighted by each batch's total weight, so that an epoch's
        # figure is the exact mean over its examples, a short last batch included.
        self._total_tracker.update_state(total, sample_weight=total_weight)
        logs = {"loss": self._total_tracker.result()}
        for point, trackers in self._trackers.items():
            for key, tracker in trackers.items():
                if key == "loss":
                    tracker.update_state(losses[point], sample_weight=total_weight)
                else:
                    tracker.update_state(y, logits[point], sample_weight)
                result = tracker.result()
                # A metric of several figures (one per regression target) logs each.
                for name, value in (result if isinstance(result, dict) else {key: result}).items():
                    logs[log_key(point, name)] = value
        return logs

    def _examples(self, data):
        """A batch as the probes' losses and metrics take it: `(features, y, sample_weight)`.

        `features` is `{point: (examples, features)}`; here the features of
        `x` and the batch's own `y` and sample weights. A per-token
        `ProbedModel` makes each token an example.
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        return self.extract_features(x), y, sample_weight

    def train_step(self, data):
        # Features are computed outside the tape: nothing of the base is
        # recorded, and only the heads' variables are differentiated.
        features, y, sample_weight = self._examples(data)
        variables = self.probe_variables
        with tf.GradientTape() as tape:
            logits = self._probe_logits(features)
            losses, total, total_weight = self._probe_losses(y, logits, sample_weight)
            objective = total
            if self.l2:
                objective += self.l2 / 2 * sum(keras.ops.sum(h.kernel**2) for h in self.heads)
            # Under a tf.distribute strategy the replicas' gradients are summed:
            # each replica contributes its share of the mean, as in Keras' own step.
            objective /= tf.distribute.get_strategy().num_replicas_in_sync
            # A no-op but under mixed precision, where the optimizer unscales.
            scaled = self.optimizer.scale_loss(objective)
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        return self._update_metrics(y, logits, losses, total, total_weight, sample_weight)

    def test_step(self, data):
        features, y, sample_weight = self._examples(data)
        logits = self._probe_logits(features)
        losses, total, total_weight = self._probe_losses(y, logits, sample_weight)
        return self._update_metrics(y, logits, losses, total, total_weight, sample_weight)


class _DepthOrderedProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, with the logs reordered by `order` (a function of the logs)."""

    def __init__(self, order):
        super().__init__()
        self._order = order

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, self._order(logs or {}))

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(batch, self._order(logs or {}))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, self._order(logs or {}))

    def on_test_end(self, logs=None):
        super().on_test_end(self._order(logs or {}))


class _OutcomeLoop(keras.Model):
    """Keras' `predict` loop (batching, distribution, steps per execution, progress bar)
    over a `ProbedModel`'s batches `{"inputs", "labels"}`: each step gives every example's
    outcome at every probe (`ProbedModel._outcome_step`), never the probes' logits."""

    def __init__(self, probed):
        super().__init__(name=f"{probed.name}_outcomes")
        self.probed = probed
        # Compiled as the probed model is: XLA, eager or several steps per execution.
        self.jit_compile = probed.jit_compile
        self.run_eagerly = probed.run_eagerly
        self.steps_per_execution = probed.steps_per_execution

    def predict_step(self, data):
        # A generator's batch comes as Keras wants it, `(batch,)`; arrays and datasets bare.
        return self.probed._outcome_step(keras.utils.unpack_x_y_sample_weight(data)[0])


class _SawBatches(keras.callbacks.Callback):
    """Refuses (with `_EMPTY`) a `predict` that got no batch: Keras would fail obscurely."""

    def __init__(self):
        super().__init__()
        self.seen = False

    def on_predict_batch_end(self, batch, logs=None):
        self.seen = True

    def on_predict_end(self, logs=None):
        if not self.seen:
            raise ValueError(_EMPTY)


def _inputs_of(batch):
    """The inputs of a batch (or element spec) `(x, y[, w])`, `(x,)` or `x`, as Keras reads it."""
    if isinstance(batch, tuple):
        return keras.utils.unpack_x_y_sample_weight(batch)[0]
    return batch


def _too_long(subject, tokens, name, limit, layer):
    return (
        f"{subject} sequences of {tokens} tokens (input '{name}'); layer '{layer}' has "
        f"{limit} positions (the backbone's max_sequence_length). Truncate them to {limit} "
        f"tokens, or preprocess with sequence_length={limit} (as keras-hub's preprocessors "
        "take it)."
    )


def _graph_format(template, *values):
    """`template.format(*values)` in a graph, for string or integer tensors `values`
    (`tf.strings.format` would quote the strings)."""
    pieces = template.split("{}")
    parts = [pieces[0]]
    for value, piece in zip(values, pieces[1:], strict=True):
        parts += [value if value.dtype == tf.string else tf.strings.as_string(value), piece]
    return tf.strings.join(parts)


def _names(inputs) -> list[str]:
    """The names of a model's input tensors, in its input order."""
    return [tensor.name for tensor in keras.tree.flatten(inputs)]


def _reduce(reducer, tensor, mask, path, model_name):
    """`reducer` applied to a point's output, given the model's padding mask if it reads one."""
    if not getattr(reducer, "uses_padding_mask", False):
        return reducer(tensor)
    if mask is None:
        raise ValueError(
            f"The reducer of point {path!r} ({type(reducer).__name__}) reads the tokens a "
            f"model's `{reducers_lib.PADDING_MASK}` input keeps, and model '{model_name}' has "
            f"no input of that name. Use 'gap' (the mean over all positions) or 'flatten', "
            f"or give the model a `{reducers_lib.PADDING_MASK}` input (batch, tokens)."
        )
    if len(tensor.shape) != 3:
        raise ValueError(
            f"The reducer of point {path!r} ({type(reducer).__name__}) works on token "
            f"sequences (batch, tokens, features); the layer's output is {tensor.shape}. "
            f"Probe only the token sequences (e.g. points='blocks'), or give this point "
            f"another reducer: reducers={{{path!r}: 'auto'}}."
        )
    return reducer(tensor, padding_mask=mask)


@keras.saving.register_keras_serializable(package="keras_probes")
class ProbedModel(ProbeTrainer):
    """Linear classifier probes on the layers of a Keras model.

    One model with one output per probe point: the base model runs once per
    batch (always with `training=False`) and feeds, through a feature reducer
    and `tf.stop_gradient`, a softmax linear classifier per point. Training
    (`fit`) updates the probe heads only: the base's weights and BatchNorm
    statistics never change. The base is shared, not copied, so the probes
    always see the base as it is now, also while it trains elsewhere.

    Logs of `fit` and `evaluate` hold, per point, `<point>/loss`,
    `<point>/accuracy` and `<point>/top5_accuracy`, and `loss`, their sum:
    `keras.callbacks.TensorBoard` groups each probe's curves under its point.

    Args:
        base: a Functional or Sequential Keras model, e.g. any
            `keras.applications` network. Layers of nested Functional or
            Sequential sub-models are addressed as `"inner/layer"`.
        points: `"all"`, `"blocks"` (every block output of a known family:
            ResNet, Inception, MobileNet, VGG, keras-hub transformers), a
            preset (`"resnet50"`, `"inception_v3"`, `"mobilenet"`, `"vgg16"`,
            ...), layer paths, `kp.points.matching(regex)`,
            `kp.points.of_type(LayerClass)`, or a list of these. Defaults to
            `"all"`.
        num_classes: number of classes the probes predict.
        reducers: how each point's output becomes a vector: `"auto"`
            (global average pooling for spatial outputs, flatten for
            vectors, the mean over kept tokens for the token sequences of a
            model with a `padding_mask` input), `"gap"`, `"flatten"`,
            `"mean"`, `"first"`, `"last"` (`kp.TokenPooling`), `"tokens"`
            (no pooling: a prediction per token, labels `(batch, tokens)`;
            padded tokens carry no loss and no metric), a reducer layer such
            as `kp.RandomSubset(1000, seed=0)`, or a dict `{point: reducer}`.
            Defaults to `"auto"`. Token sequences that keep no token, or that
            are longer than the backbone's `max_sequence_length`, are refused
            (`check_tokens`).
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Example:

    ```python
    base = keras.applications.ResNet50(weights="imagenet")
    probed = kp.ProbedModel(base, points="resnet50", num_classes=1000)
    probed.compile(optimizer="rmsprop")
    probed.fit(x, y, validation_data=(xv, yv), epochs=10,
               callbacks=[kp.callbacks.BestProbeWeights(patience=3)])
    report = probed.evaluate_probes(x_test, y_test, split="test")
    print(report.table())
    ```
    """

    def __init__(
        self,
        base: keras.Model,
        points="all",
        num_classes: int | None = None,
        reducers="auto",
        **kwargs,
    ):
        self._probe(base, points, reducers, Classification(num_classes), **kwargs)

    def _probe(self, base, points, reducers, task, **kwargs):
        """Builds the feature model (base up to the deepest point, plus reducers) and a
        head of `task` per point: the one constructor path of every probed model."""
        if not isinstance(base, keras.Model):
            raise TypeError(
                "`base` must be a keras.Model (Functional or Sequential). "
                f"Received: base of type {type(base).__name__}"
            )
        graph = _graph.trace(base)
        paths = points_lib.resolve_in(graph, points, base.name)
        inputs, tensors = graph.inputs, {path: graph.tensors[path] for path in paths}
        mask = reducers_lib.input_of(inputs, _names(inputs), reducers_lib.PADDING_MASK)
        if isinstance(reducers, dict):  # "backbone/..." keys, as points take them
            reducers = {graph.canonical(point): spec for point, spec in reducers.items()}
        reducers = reducers_lib.resolve(
            reducers, {p: tuple(t.shape) for p, t in tensors.items()}, masked=mask is not None
        )
        per_token = reducers_lib.per_token(reducers)
        if per_token and task.solver_kind != "classifier":
            raise ValueError(
                "reducers='tokens' makes class probes per token; regression probes take one "
                "row of targets per example. Pool the tokens instead, e.g. reducers='mean'."
            )
        features = {
            path: _reduce(reducers[path], tensor, mask, path, base.name)
            for path, tensor in tensors.items()
        }
        for path, tensor in tensors.items():
            shape = features[path].shape
            if len(shape) != (3 if per_token else 2) or shape[-1] is None:
                raise ValueError(
                    f"The reducer of point {path!r} gives shape {shape} from the layer's "
                    f"output {tensor.shape}; a probe needs "
                    f"{'(batch, tokens, features)' if per_token else '(batch, features)'} "
                    "with a known feature count. Choose another reducer for it, e.g. "
                    f"reducers={{{path!r}: 'gap'}} or kp.RandomSubset(k)."
                )
        # One Functional model: base layers up to the deepest point, plus the
        # reducers. Calling it is the single forward pass that feeds all probes.
        feature_model = keras.Model(
            inputs, features, name=f"{_graph.safe_name(base.name)}_features"
        )
        heads = [task.new_head(f"probe_{_graph.safe_name(p)}") for p in paths]
        for path, head in zip(paths, heads, strict=True):
            head.build(features[path].shape)
        ProbeTrainer.__init__(self, task, paths, heads, **kwargs)
        self.base, self.reducers, self.feature_model = base, reducers, feature_model
        self.per_token = per_token
        # {token input: (positions, layer)}: sequences longer than a learned position
        # embedding's table fail deep in the graph (or, under XLA, read clamped rows).
        self._positions = dict(graph.positions)
        # A keras-hub task (TextClassifier, ImageClassifier) brings its preprocessor.
        self.preprocessor = getattr(base, "preprocessor", None)

    def kept_tokens(self, x):
        """The padding mask `(batch, tokens)` of inputs `x`: which tokens are examples.

        Read from `x` as given (a dict, or a list in the model's input order),
        for the model's input named `"padding_mask"`.
        """
        return self.input_of(x, reducers_lib.PADDING_MASK)

    def input_of(self, x, name: str):
        """The input called `name` (e.g. `"token_ids"`) in a batch `x`, or `None`."""
        return reducers_lib.input_of(x, _names(self.feature_model.input), name)

    def _examples(self, data):
        """A batch as the probes' losses and metrics take it: `(features, y, sample_weight)`.

        For per-token probes (`reducers="tokens"`) every token is an example:
        the features become `(batch * tokens, features)`, the labels
        `(batch * tokens,)`, and the padding mask (times any sample weight)
        the weights, so a padded token weighs 0 in every loss and metric and
        its label, whatever it is (-1, say), is never read. Keeping the
        shapes static (no `boolean_mask`) lets the step compile with XLA.
        """
        features, y, sample_weight = super()._examples(data)
        if not self.per_token:
            return features, y, sample_weight
        ops = keras.ops
        x = keras.utils.unpack_x_y_sample_weight(data)[0]
        kept = ops.cast(self.kept_tokens(x), "bool")
        weight = ops.cast(kept, "float32")
        if sample_weight is not None:
            # One weight per sequence (batch,) or per token (batch, tokens).
            sample_weight = ops.cast(sample_weight, "float32")
            weight = weight * ops.reshape(sample_weight, (ops.shape(kept)[0], -1))
        rows = {point: ops.reshape(f, (-1, f.shape[-1])) for point, f in features.items()}
        if y is not None:
            y = ops.reshape(ops.where(kept, y, ops.zeros_like(y)), (-1,))
        return rows, y, ops.reshape(weight, (-1,))

    def extract_features(self, x):
        """The reduced features of every point for a batch: `{point: (batch, features)}`
        (`(batch, tokens, features)` for per-token probes).

        The base always runs in inference mode (`training=False`): Dropout is
        off and BatchNorm uses, and never updates, its moving statistics.
        Called eagerly, `x` is checked first (`check_tokens`).
        """
        symbolic = any(isinstance(t, keras.KerasTensor) for t in keras.tree.flatten(x))
        if tf.executing_eagerly() and not symbolic:
            # The reducers refuse too, but inside Keras' frame of the failing layer.
            self.check_tokens(x)
        return self.feature_model(x, training=False)

    # -- input checks around Keras' loops ---------------------------------

    def preprocess(self, x, y=None, batch_size: int | None = None):
        """`(x, y)` as the feature model takes them: through the base's preprocessor.

        A keras-hub task given as base (`TextClassifier`, `ImageClassifier`,
        ...) brings its preprocessor (`base.preprocessor`): raw inputs
        (strings, images) go through it in the input pipeline, as in the
        task's own `fit`, in `fit`, `evaluate`, `predict` and
        `kp.FeatureCache.write`. Build the task with `preprocessor=None` to
        feed its backbone's inputs directly.

        Args:
            x: raw inputs (arrays), or a `tf.data.Dataset` of raw batches.
            y: labels when `x` is an array. Defaults to `None`.
            batch_size: the batch size for arrays. Defaults to `32`.

        Returns:
            `(x, y)` unchanged for a base without a preprocessor; else
            `(dataset, None)`, a `tf.data.Dataset` of preprocessed batches.
        """
        if self.preprocessor is None or x is None:
            return x, y
        if isinstance(x, tf.data.Dataset):
            dataset = x
        else:
            dataset = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y))
            dataset, y = dataset.batch(batch_size or 32), None
        preprocessed = dataset.map(
            self.preprocessor, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        return preprocessed.prefetch(tf.data.AUTOTUNE), y

    def _raw(self, x, y, kwargs):
        """`(x, y)` through the preprocessor (if any); the batch size is then the dataset's."""
        y = _validation.as_labels(y)  # a Python list of labels, which Keras refuses
        if self.preprocessor is None:
            return x, y
        return self.preprocess(x, y, kwargs.pop("batch_size", None))

    def check_tokens(self, x, argument: str = "x"):
        """Token sequences as the base takes them: each keeps a token, none is too long.

        Beyond shapes and dtypes, a base with token inputs needs two things of
        them. Every sequence of its `padding_mask` input keeps at least one
        token: one that keeps none has no feature but padding
        (`kp.reducers.check_kept_tokens`). And an input that feeds a learned
        position embedding (keras-hub's `PositionEmbedding`, sized by a
        backbone's `max_sequence_length`) has no more tokens than the
        embedding has positions. `fit`, `evaluate`, `predict`,
        `evaluate_probes` and `kp.callbacks.ProbeMonitor` check their data
        with it.

        Args:
            x: inputs as arrays (a dict by input name, or the model's inputs
                in order), or a `tf.data.Dataset` of batches `(x, y)`,
                `(x, y, sample_weight)` or `x`.
            argument: what `x` is called in messages. Defaults to `"x"`.

        Returns:
            `x`; for a dataset, the same dataset with every batch checked as
            it streams by (an `InvalidArgumentError` naming the batch and
            its rows: a step compiled with XLA would drop the reducers' own
            assertions).

        Raises:
            ValueError: arrays, or a dataset's static shapes, that break a rule.
        """
        names = _names(self.feature_model.input)
        if x is None or not (reducers_lib.PADDING_MASK in names or self._positions):
            return x
        if isinstance(x, keras.utils.PyDataset | Iterator):
            return x  # read by Keras' own adapters only; the reducers still refuse
        where = f"`{argument}`"
        if isinstance(x, tf.data.Dataset):
            inputs = _inputs_of(x.element_spec)
            for name, (limit, layer) in self._positions.items():
                spec = reducers_lib.input_of(inputs, names, name)
                tokens = spec.shape[1] if spec is not None and spec.shape.rank == 2 else None
                if tokens is not None and tokens > limit:
                    raise ValueError(_too_long(f"{where} yields", tokens, name, limit, layer))
            return x.enumerate().map(
                lambda index, batch: self._checked_batch(index, batch, where),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
        mask = self.input_of(x, reducers_lib.PADDING_MASK)
        if mask is not None:
            reducers_lib.check_kept_tokens(mask, where)
        for name, (limit, layer) in self._positions.items():
            tokens = self.input_of(x, name)
            if tokens is not None and np.ndim(tokens) == 2 and np.shape(tokens)[1] > limit:
                raise ValueError(
                    _too_long(f"{where} holds", np.shape(tokens)[1], name, limit, layer)
                )
        return x

    def _checked_batch(self, index, batch, where):
        """`batch` of a stream, with in-graph assertions of `check_tokens`' rules."""
        x = _inputs_of(batch)
        checks = []
        mask = self.input_of(x, reducers_lib.PADDING_MASK)
        if mask is not None:
            keeps = tf.reduce_any(tf.cast(mask, "bool"), axis=1)
            empty = tf.where(tf.logical_not(keeps))[:, 0]
            rows = tf.strings.reduce_join(tf.strings.as_string(empty[:5]), separator=", ")
            template = reducers_lib.no_kept_token(
                "{}", f"a batch of {where}", "at row(s) {} of batch {} (counting from 0)"
            )
            message = _graph_format(template, tf.size(empty), rows, index)
            checks.append(tf.debugging.Assert(tf.reduce_all(keeps), [message]))
        for name, (limit, layer) in self._positions.items():
            tokens = self.input_of(x, name)
            if tokens is None:
                continue
            length = tf.shape(tokens)[1]
            template = _too_long(f"A batch of {where} holds", "{}", name, limit, layer)
            message = _graph_format(template, length)
            checks.append(tf.debugging.Assert(length <= limit, [message]))
        with tf.control_dependencies(checks):
            return keras.tree.map_structure(tf.identity, batch)

    def _check(self, x, y, labels=True, argument="x"):
        x = self.task.check_data(
            x,
            y,
            self.feature_model.input,
            labels=labels,
            argument=argument,
            tokens=self.per_token,
        )
        return self.check_tokens(x, argument)

    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        x, y = self._raw(x, y, kwargs)
        x = self._check(x, y)
        if self.preprocessor is not None and validation_data is not None:
            given = (
                validation_data if isinstance(validation_data, tuple | list) else [validation_data]
            )
            validation_data = self.preprocess(*given[:2])[0]
        if isinstance(validation_data, tuple | list):
            vx, vy, _ = keras.utils.unpack_x_y_sample_weight(tuple(validation_data))
            self._check(vx, vy, argument="validation_data")
            validation_data = (vx, _validation.as_labels(vy), *tuple(validation_data)[2:])
        elif validation_data is not None:
            validation_data = self._check(validation_data, None, argument="validation_data")
        with _validation.one_line_assertions():
            history = super().fit(x, y, *args, validation_data=validation_data, **kwargs)
        if not history.history and kwargs.get("epochs", 1) > kwargs.get("initial_epoch", 0):
            raise ValueError(_EMPTY)
        return history

    def evaluate(self, x=None, y=None, *args, **kwargs):
        # Keras' `fit` evaluates the validation data it was given (here already
        # preprocessed) through this method, flagged so.
        if not kwargs.get("_use_cached_eval_dataset"):
            x, y = self._raw(x, y, kwargs)
        x = self._check(x, y)
        with _validation.one_line_assertions():
            return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        x, _ = self._raw(x, None, kwargs)
        x = self._check(x, None, labels=False)
        with _validation.one_line_assertions():
            return super().predict(x, *args, **kwargs)

    def evaluate_probes(
        self,
        x,
        y=None,
        split: str = "test",
        batch_size: int | None = None,
        verbose="auto",
    ) -> ProbeReport:
        """Evaluates every probe on one split, keeping each example's outcome.

        One pass over the data: the base runs once per batch and feeds every
        probe, and each example's outcome at every probe is computed in the
        same step, so that a shuffled dataset keeps every outcome with its
        own label and a large one is read once. Class probes keep their
        outcomes only (top-1 correct, top-5 hit, cross-entropy: 2 booleans
        and a float32 per example and point), never their logits.

        Args:
            x: inputs (arrays), or a `tf.data.Dataset` (or a generator) of
                batches `(inputs, labels)`. Sample weights are refused: every
                example counts once.
            y: integer labels when `x` is an array (per-token probes:
                `(batch, tokens)`, any value at padded tokens; regression
                probes: the targets).
            split: name of the split in the report, e.g. `"val"`.
            batch_size: batch size for arrays. Defaults to Keras' default.
            verbose: as in `keras.Model.predict`.

        Returns:
            A `ProbeReport` of the task's metrics per point, with each
            example's outcome in `report.outcomes[split]`: for classes, the
            loss, error and top-5 error are the means of the outcomes
            (`kp.outcomes.Outcomes`, per kept token for per-token probes);
            for regression targets, `<target>_r2` and `<target>_mspe` are
            those of the targets and predictions kept
            (`kp.outcomes.RegressionOutcomes`), in float64. And
            `report.examples[split]` says which examples they are:
            `kp.outcomes.fingerprint` of the inputs (in the model's input
            order; a keras-hub task's preprocessed ones) and the labels (0 at
            padded tokens, never read), the same for arrays and for a stream
            of them in any batches (rows in another order are other
            examples), and for per-token probes each row's sequence (the
            example's index in the split).
        """
        kwargs = {"batch_size": batch_size}
        x, y = self._raw(x, y, kwargs)  # a keras-hub task's preprocessor batches arrays itself
        x = self._check(x, y)
        digest = Fingerprint()
        with _validation.one_line_assertions():
            rows = self._outcome_loop().predict(
                self._identified(x, y, digest),
                batch_size=kwargs.get("batch_size"),
                verbose=verbose,
                callbacks=[_SawBatches()],
            )
        if isinstance(self.task, Classification):
            kept = rows["kept"].astype(bool) if self.per_token else slice(None)
            outcomes = {
                point: Outcomes(*(rows[f][kept, i] for f in ("correct", "top5", "loss")))
                for i, point in enumerate(self.points)
            }
            results = {
                point: {m: float(kept_.values(m).mean()) for m in self.task.scores_names()}
                for point, kept_ in outcomes.items()
            }
        else:  # a few outputs per example: the task's own figures and outcomes of them
            y = self.task.check_targets(rows["y"])
            outputs = {point: rows["outputs"][:, i] for i, point in enumerate(self.points)}
            outcomes = {point: self.task.outcomes(y, z) for point, z in outputs.items()}
            results = {point: self.task.scores(y, z) for point, z in outputs.items()}
        tokens = rows["tokens"] if self.per_token else None
        sequences = None if tokens is None else np.repeat(np.arange(len(tokens)), tokens)
        return ProbeReport(
            self.points,
            {split: results},
            self.num_classes,
            self.base.name,
            {split: outcomes},
            {split: Examples(digest.hexdigest(), sequences)},
        )

    def _outcome_loop(self) -> _OutcomeLoop:
        """The `_OutcomeLoop` of this model, kept while its compile settings hold (its
        step is traced once, as Keras' own `test_function`)."""
        key = (self.jit_compile, self.run_eagerly, self.steps_per_execution)
        cached = getattr(self, "_outcome_cache", None)
        if cached is None or cached.key != key:
            with self.distribute_strategy.scope():
                loop = _OutcomeLoop(self)
            # A plain namespace: Keras and TensorFlow track no sub-model in it.
            self._outcome_cache = types.SimpleNamespace(key=key, loop=loop)
        return self._outcome_cache.loop

    def _outcome_step(self, batch):
        """Every example's outcome at every probe, for a batch `{"inputs", "labels"}`.

        Class probes: `{"correct", "top5", "loss"}`, each `(examples, points)`
        (a row per token for per-token probes, with `"kept"`, whether a row is
        a kept token, and `"tokens"`, how many each sequence keeps), the same
        computation as the streamed metrics of `test_step`; never the logits,
        `(examples, classes)` per point. Other probes (regression: a few
        outputs per example): `{"outputs": (examples, points, units), "y"}`.
        Few arrays, so that Keras gathers the batches' outputs fast.
        """
        ops = keras.ops
        features, y, _ = self._examples((batch["inputs"], batch["labels"]))
        logits = self._probe_logits(features)
        if not isinstance(self.task, Classification):
            outputs = ops.stack([ops.cast(z, "float32") for z in logits.values()], axis=1)
            return {"outputs": outputs, "y": y}
        y = ops.cast(ops.reshape(y, (-1,)), "int32")
        k = min(5, self.num_classes)
        columns = {"correct": [], "top5": [], "loss": []}
        for z in logits.values():
            columns["correct"].append(ops.equal(ops.cast(ops.argmax(z, axis=-1), "int32"), y))
            columns["top5"].append(ops.cast(metrics.top_k_hits(y, z, k), "bool"))
            columns["loss"].append(ops.cast(self.task.example_losses(y, z), "float32"))
        outputs = {name: ops.stack(values, axis=1) for name, values in columns.items()}
        if self.per_token:
            kept = ops.cast(self.kept_tokens(batch["inputs"]), "bool")
            outputs["kept"] = ops.reshape(kept, (-1,))
            outputs["tokens"] = ops.sum(ops.cast(kept, "int32"), axis=1)
        return outputs

    def _identified(self, x, y, digest: Fingerprint):
        """`(x, y)` as `_OutcomeLoop` reads them, batches `{"inputs", "labels"}`, each fed to
        `digest` (`_identify`) as it streams by: arrays at once, a dataset batch by batch."""
        if isinstance(x, tf.data.Dataset):
            if len(x.element_spec) == 3:
                raise ValueError(_WEIGHTED)
            names = _names(self.feature_model.input)

            def identified(inputs, labels):
                flat = [self.input_of(inputs, name) for name in names]
                done = tf.numpy_function(
                    lambda *arrays: self._identify(digest, list(arrays[:-1]), arrays[-1]),
                    [*flat, labels],
                    tf.int64,
                    stateful=True,
                )
                with tf.control_dependencies([done]):
                    inputs = keras.tree.map_structure(tf.identity, inputs)
                    return {"inputs": inputs, "labels": tf.identity(labels)}

            # In order, one batch at a time: the digest reads the batches as they stream.
            return x.map(identified).prefetch(tf.data.AUTOTUNE)
        if isinstance(x, keras.utils.PyDataset | Iterator):
            batches = (x[i] for i in range(len(x))) if isinstance(x, keras.utils.PyDataset) else x
            return self._identified_stream(iter(batches), digest)
        self._identify(digest, x, y)
        return {"inputs": x, "labels": y}

    def _identified_stream(self, batches, digest):
        """A generator of `batches` `(inputs, labels)` as `_identified` gives them."""
        empty = True
        for batch in batches:
            empty = False
            inputs, labels, weights = keras.utils.unpack_x_y_sample_weight(batch)
            if weights is not None:
                raise ValueError(_WEIGHTED)
            if labels is None:
                raise ValueError(_UNLABELLED)
            self._identify(digest, inputs, labels)
            yield ({"inputs": inputs, "labels": labels},)
        if empty:
            raise ValueError(_EMPTY)

    def _identify(self, digest, inputs, labels):
        """Feeds a batch to `digest`: the inputs in the model's input order, then the labels
        as the probes read them (0 at the padded tokens of per-token probes). Returns 0."""
        arrays = [
            np.asarray(self.input_of(inputs, name)) for name in _names(self.feature_model.input)
        ]
        labels = np.asarray(labels)
        if self.per_token:
            kept = np.asarray(self.kept_tokens(inputs)).astype(bool)
            labels = np.where(kept, labels, np.zeros_like(labels))
        digest.update(*arrays, labels)
        return np.int64(0)

    # -- serialization ----------------------------------------------------

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "base": keras.saving.serialize_keras_object(self.base),
            "points": self.points,
            **self.task.get_config(),
            "reducers": {
                point: keras.saving.serialize_keras_object(layer)
                for point, layer in self.reducers.items()
            },
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        base = keras.saving.deserialize_keras_object(
            config.pop("base"), custom_objects=custom_objects
        )
        reducers = {
            point: keras.saving.deserialize_keras_object(layer, custom_objects=custom_objects)
            for point, layer in config.pop("reducers").items()
        }
        return cls(base, reducers=reducers, **config)
