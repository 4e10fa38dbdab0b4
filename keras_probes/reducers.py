"""Feature reducers: turn one layer's output into a vector per example (or per token).

A probe is a linear classifier on a vector, so every point's output of shape
`(batch, *dims)` is reduced to `(batch, features)` first. Alain & Bengio
(Sec. 3.4) pool spatial maps over height and width (ResNet-50) or keep a fixed
random subset of the features (Inception v3); both are here, as registered,
serializable Keras layers without weights.

Token sequences `(batch, tokens, features)` of a model with a `padding_mask`
input (keras-hub backbones) are pooled over the tokens the mask keeps only
(`TokenPooling`: `"mean"`, `"first"`, `"last"`), so that padding never changes
a feature; `"tokens"` (`TokenFeatures`) keeps every token, for a prediction
per token.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_probes import _graph, _params

__all__ = [
    "PADDING_MASK",
    "TOKEN_IDS",
    "GlobalAveragePooling",
    "RandomSubset",
    "TokenFeatures",
    "TokenPooling",
    "check_kept_tokens",
    "input_of",
    "no_kept_token",
    "per_token",
    "resolve",
]

#: The names of the model inputs that mark the kept tokens, and give their ids
#: (keras-hub's convention).
PADDING_MASK = "padding_mask"
TOKEN_IDS = "token_ids"


@keras.saving.register_keras_serializable(package="keras_probes")
class GlobalAveragePooling(keras.layers.Layer):
    """Averages a channels-last feature map over every axis but batch and channels.

    Works for any rank: `(batch, steps, channels)`, `(batch, height, width,
    channels)`, `(batch, depth, height, width, channels)`; a
    `(batch, features)` input passes through unchanged. Always one row per
    example, the mean over the whole map, whatever the map's size: a graph
    fed a larger map than it was traced for (as a loaded SavedModel
    signature allows) gets the true mean, never one row per window.

    Input shape:
        `(batch, ..., channels)`.

    Output shape:
        `(batch, channels)`.
    """

    def call(self, inputs):
        spatial = tuple(inputs.shape[1:-1])
        if not spatial:
            return inputs
        axes = tuple(range(1, len(inputs.shape) - 1))
        if None in spatial or len(spatial) > 3:
            return keras.ops.mean(inputs, axis=axes)

        def pooled():
            # One pooling window spanning the whole map: the backends' pooling
            # kernels (oneDNN, cuDNN) do this 1.1-3x faster than a generic mean,
            # which matters when 17 large maps are pooled per batch.
            window = keras.ops.average_pool(inputs, pool_size=spatial, strides=1, padding="valid")
            return keras.ops.reshape(window, (-1, inputs.shape[-1]))

        if tf.executing_eagerly():
            return pooled()  # the static shape is the tensor's own
        # In a graph, the map fed at run time may be larger than the static
        # shape says (a loaded SavedModel signature does not check the shapes
        # it is fed): a window of the static size would then give several rows
        # per example. Such a map gets the true mean; the usual one, the
        # pooling kernel (the check costs a few scalar ops per call). With a
        # fully static shape (a fixed batch size too) Grappler may fold the
        # check away; exported signatures refuse such inputs before this.
        fed = tf.raw_ops.Shape(input=inputs)[1:-1]
        return tf.cond(
            tf.reduce_all(tf.equal(fed, spatial)),
            pooled,
            lambda: keras.ops.mean(inputs, axis=axes),
        )

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


@keras.saving.register_keras_serializable(package="keras_probes")
class RandomSubset(keras.layers.Layer):
    """Keeps a fixed random subset of `k` of the flattened features.

    The indices are drawn once, without replacement, from `seed` and the
    input's shape, and rebuilt the same way after loading: no weight of the
    full flattened size is ever created, which is what makes probes on
    millions of features (early Inception v3 layers) fit in memory. A point
    with `k` or fewer features keeps all of them.

    Args:
        k: number of features to keep.
        seed: seed of the draw. Defaults to `0`.

    Input shape:
        `(batch, *dims)`.

    Output shape:
        `(batch, min(k, prod(dims)))`.

    Example:

    >>> kp.ProbedModel(base, points="inception_v3", num_classes=1000,
    ...                reducers=kp.RandomSubset(1000, seed=0))
    """

    def __init__(self, k: int, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        _params.check(
            {
                "k": _params.Integer(1, description="a positive integer"),
                # The indices are rebuilt from the seed after loading.
                "seed": _params.Integer(),
            },
            k=k,
            seed=seed,
        )
        self.k = int(k)
        self.seed = int(seed)

    def build(self, input_shape):
        dims = input_shape[1:]
        if any(d is None for d in dims):
            raise ValueError(
                "RandomSubset needs a fully defined feature shape to fix its indices. "
                f"Received: input_shape={input_shape}"
            )
        size = int(np.prod(dims))
        if self.k >= size:
            indices = np.arange(size)
        else:
            rng = np.random.default_rng(self.seed)
            indices = np.sort(rng.choice(size, self.k, replace=False))
        self.indices = indices.astype("int64")  # a constant of the graph, not a weight

    def call(self, inputs):
        flat = keras.ops.reshape(inputs, (keras.ops.shape(inputs)[0], -1))
        return keras.ops.take(flat, self.indices, axis=1)

    def compute_output_shape(self, input_shape):
        size = int(np.prod(input_shape[1:]))
        return (input_shape[0], min(self.k, size))

    def get_config(self):
        return {**super().get_config(), "k": self.k, "seed": self.seed}


def no_kept_token(count: str, where: str, which: str) -> str:
    """The one-line refusal of sequences whose padding mask keeps no token.

    Args:
        count: how many there are, e.g. `"2"`.
        where: what holds them, e.g. `` "`x`" ``.
        which: which they are, e.g. `"at index [2, 5]"`.
    """
    return (
        f"{count} sequence(s) of {where} keep no token in the `{PADDING_MASK}`, e.g. {which}: "
        "their features could only be read from padding. Drop those sequences, or mark at "
        f"least one token of each as kept (true or 1) in `{PADDING_MASK}`."
    )


def check_kept_tokens(padding_mask, where: str = "`x`") -> None:
    """Every sequence of a padding mask `(n, tokens)` must keep a token.

    A sequence that keeps none has no feature but padding: `TokenPooling`'s
    `"first"` and `"last"` would read a padded position (its features change
    with the padded ids), `"mean"` would give zeros, and per-token probes
    would have no example there. Such sequences are refused wherever they
    meet a probe: here, for arrays, by index.

    Args:
        padding_mask: `(n, tokens)`, true or nonzero at kept tokens.
        where: what holds the sequences, for the message. Defaults to `` "`x`" ``.

    Raises:
        ValueError: naming the sequences that keep no token, by index.
    """
    kept = np.asarray(padding_mask).astype(bool)
    empty = np.flatnonzero(~kept.reshape(len(kept), -1).any(axis=1))
    if len(empty):
        raise ValueError(no_kept_token(str(len(empty)), where, f"at index {empty[:5].tolist()}"))


class _MaskedReducer(keras.layers.Layer):
    """A reducer of `(batch, tokens, features)` that reads the model's padding mask.

    `call(inputs, padding_mask)`: `padding_mask` is `(batch, tokens)`, true
    (or nonzero) at the tokens to keep. Every sequence must keep a token
    (`check_kept_tokens`): eagerly a `ValueError`, in a graph (a Keras step,
    the cache's extraction, a served signature) an `InvalidArgumentError`
    naming the sequences' rows in the batch. Under XLA the graph assertion
    compiles to nothing; `kp.ProbedModel` checks its data before it gets here.
    """

    #: Read by `kp.ProbedModel`: this reducer is called with the model's padding mask.
    uses_padding_mask = True

    # Keras passes each call argument's shape to `build` as `<argument>_shape`.
    def build(self, inputs_shape, padding_mask_shape=None):
        if len(inputs_shape) != 3:
            raise ValueError(
                f"{type(self).__name__} reduces token sequences (batch, tokens, features). "
                f"Received: input shape {tuple(inputs_shape)}. Use 'auto', 'gap' or "
                "'flatten' for this point."
            )
        tokens, masked = inputs_shape[1], (padding_mask_shape or (None, None))[1]
        if None not in (tokens, masked) and tokens != masked:
            raise ValueError(_mismatch(self, tokens, masked))

    def checked_mask(self, inputs, padding_mask):
        """The mask as booleans, once its token count is that of `inputs`.

        A layer whose sequence is not the mask's (PaliGemma's blocks run on
        image tokens, then the text the mask covers) would otherwise be read
        at the wrong positions, or fail with a broadcasting error.
        """
        kept = keras.ops.cast(padding_mask, "bool")
        if isinstance(inputs, keras.KerasTensor):
            return kept  # symbolic: the static shapes were checked in `build`
        checks = []
        tokens, masked = inputs.shape[1], kept.shape[1]
        if tokens is not None and masked is not None:  # eager, or traced for these shapes
            if tokens != masked:
                raise ValueError(_mismatch(self, tokens, masked))
        else:
            checks.append(
                tf.debugging.assert_equal(
                    tf.shape(inputs)[1], tf.shape(kept)[1], message=_mismatch(self)
                )
            )
        where = f"the batch given to {type(self).__name__} '{self.name}'"
        if tf.executing_eagerly():
            check_kept_tokens(kept, where)
            return kept
        keeps = tf.reduce_any(kept, axis=1)
        # No string op (XLA compiles none): the rows come as the assertion's data.
        message = no_kept_token("Some", where, "at the rows given last") + " Rows:"
        rows = tf.where(tf.logical_not(keeps))[:, 0]
        checks.append(tf.debugging.Assert(tf.reduce_all(keeps), [message, rows], summarize=5))
        with tf.control_dependencies(checks):
            return tf.identity(kept)

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        return (inputs_shape[0], inputs_shape[-1])


def _mismatch(reducer, tokens=None, masked=None):
    counts = (
        f"a sequence of {tokens} tokens with a padding mask of {masked}"
        if tokens is not None
        else "a sequence whose token count is not its padding mask's"
    )
    return (
        f"{type(reducer).__name__} '{reducer.name}' reads {counts}: the mask does not cover "
        "this layer's tokens (e.g. image tokens before the text). Use 'gap' or 'flatten' for "
        "this point."
    )


@keras.saving.register_keras_serializable(package="keras_probes")
class TokenPooling(_MaskedReducer):
    """Pools `(batch, tokens, features)` over the tokens the padding mask keeps.

    The padded positions never enter the result (they are selected away, not
    multiplied by zero), so a feature is bit-for-bit the same whatever the
    padded positions hold, as long as the model itself masks them (keras-hub
    backbones do, in attention).

    Args:
        mode: `"mean"` (over the kept tokens), `"first"` (the first kept
            token: BERT's `[CLS]` with right padding) or `"last"` (the last
            kept token: what a decoder has read the whole text at). A sequence
            that keeps no token is refused (it has no feature but padding).
        **kwargs: passed to `keras.layers.Layer` (e.g. `name`).

    Call arguments:
        inputs: `(batch, tokens, features)`.
        padding_mask: `(batch, tokens)`, true or nonzero at kept tokens.

    Output shape:
        `(batch, features)`.

    Example:

    >>> kp.ProbedModel(bert, points="blocks", num_classes=2,
    ...                reducers=kp.TokenPooling("first"))   # or reducers="first"
    """

    MODES = ("mean", "first", "last")

    def __init__(self, mode: str = "mean", **kwargs):
        super().__init__(**kwargs)
        _params.check({"mode": _params.Options(*self.MODES)}, mode=mode)
        self.mode = str(mode)

    def call(self, inputs, padding_mask):
        ops = keras.ops
        kept = self.checked_mask(inputs, padding_mask)
        if self.mode == "mean":
            total = ops.sum(ops.where(kept[..., None], inputs, ops.zeros_like(inputs)), axis=1)
            count = ops.sum(ops.cast(kept, inputs.dtype), axis=1, keepdims=True)
            return ops.divide_no_nan(total, count)
        index = ops.reshape(self._index(kept), (-1, 1, 1))
        return ops.take_along_axis(inputs, index, axis=1)[:, 0, :]

    def _index(self, kept):
        """`(batch,)` int32: the position "first" or "last" reads in each sequence."""
        ops = keras.ops
        if self.mode == "first":
            index = ops.argmax(ops.cast(kept, "int32"), axis=1)
        else:  # the first kept token from the end
            tokens = ops.shape(kept)[1]
            index = tokens - 1 - ops.argmax(ops.cast(ops.flip(kept, axis=1), "int32"), axis=1)
        return ops.cast(index, "int32")

    def positions(self, padding_mask):
        """The tokens this pooling reads: `(batch, tokens)` float32, 1 there and 0 elsewhere.

        `"mean"` reads every kept token, `"first"` and `"last"` one each. A
        vector `v` placed at these tokens (0 elsewhere) is a direction in the
        layer's activations whose pooling is proportional to `v`
        (`kp.attribution` applies concept vectors so).

        Args:
            padding_mask: `(batch, tokens)`, true or nonzero at kept tokens.
        """
        ops = keras.ops
        kept = ops.cast(padding_mask, "bool")
        if self.mode == "mean":
            return ops.cast(kept, "float32")
        return ops.one_hot(self._index(kept), ops.shape(kept)[1], dtype="float32")

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="keras_probes")
class TokenFeatures(_MaskedReducer):
    """Keeps every token: `(batch, tokens, features)` as it is, for per-token probes.

    A probed model whose reducers are all `TokenFeatures` (`reducers="tokens"`)
    predicts per token: labels of shape `(batch, tokens)`, and the tokens the
    padding mask drops carry no loss and no metric (their label may be -1 or
    anything). A sequence that keeps no token is refused, as by `TokenPooling`:
    it would have no example, and the same data is valid or not whatever the
    reducer.

    Call arguments:
        inputs: `(batch, tokens, features)`.
        padding_mask: `(batch, tokens)` (only its presence is required here:
            the model applies it to the labels).

    Output shape:
        `(batch, tokens, features)`.
    """

    def call(self, inputs, padding_mask):
        self.checked_mask(inputs, padding_mask)
        return inputs

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        return tuple(inputs_shape)


def per_token(reducers: dict) -> bool:
    """Whether built reducers `{point: layer}` make per-token probes: all `TokenFeatures`.

    Raises:
        ValueError: some points keep tokens and others pool them, so no one
            label shape fits all.
    """
    keeps = {point: isinstance(layer, TokenFeatures) for point, layer in reducers.items()}
    if any(keeps.values()) and not all(keeps.values()):
        pooled = [point for point, kept in keeps.items() if not kept]
        raise ValueError(
            "Per-token probes ('tokens') take labels of shape (batch, tokens) and pooled "
            "probes labels of shape (batch,): one model cannot have both. Use "
            f"reducers='tokens' for every point, or probe {pooled[:3]} in another "
            "kp.ProbedModel."
        )
    return bool(keeps) and all(keeps.values())


def input_of(x, names: list[str], name: str):
    """The input called `name` in a batch `x`, or `None` if the model has none.

    Args:
        x: a batch of inputs: a dict by input name, or the inputs in the
            model's order (a list, or one tensor).
        names: the model's input names, in order
            (`[t.name for t in keras.tree.flatten(model.input)]`).
        name: the input wanted, e.g. `PADDING_MASK`.
    """
    if isinstance(x, dict):
        return x.get(name)
    if name not in names:
        return None
    return keras.tree.flatten(x)[names.index(name)]


def _auto(shape, name, masked):
    if len(shape) <= 2:
        return keras.layers.Flatten(name=name)
    if masked and len(shape) == 3:
        return TokenPooling("mean", name=name)
    return GlobalAveragePooling(name=name)


_BY_NAME = {
    "auto": _auto,
    "gap": lambda shape, name, masked: GlobalAveragePooling(name=name),
    "flatten": lambda shape, name, masked: keras.layers.Flatten(name=name),
    "tokens": lambda shape, name, masked: TokenFeatures(name=name),
    **{
        mode: lambda shape, name, masked, mode=mode: TokenPooling(mode, name=name)
        for mode in TokenPooling.MODES
    },
}


def resolve(reducers, shapes: dict[str, tuple], masked: bool = False) -> dict[str, keras.Layer]:
    """One fresh reducer layer per point.

    Args:
        reducers: `"auto"` (average pooling for spatial outputs, flatten for
            vectors, and for token sequences `(batch, tokens, features)` of a
            model with a padding mask, the mean over kept tokens), `"gap"`,
            `"flatten"`, `"mean"`, `"first"`, `"last"` (`TokenPooling`),
            `"tokens"` (`TokenFeatures`: a prediction per token), a reducer
            layer (copied for each point through its config), or a dict
            `{point: any of these}` where points left out get `"auto"`.
        shapes: the output shape of each point, in depth order.
        masked: whether the model has a `padding_mask` input. Defaults to
            `False`.

    Returns:
        `{point: unbuilt reducer layer}`.
    """
    if isinstance(reducers, dict):
        unknown = sorted(set(reducers) - set(shapes))
        if unknown:
            raise ValueError(
                f"Reducers were given for {unknown}, which are not probe points. "
                f"The points are: {list(shapes)}. Received: reducers={reducers!r}"
            )
        specs = {point: reducers.get(point, "auto") for point in shapes}
    else:
        specs = dict.fromkeys(shapes, reducers)
    return {
        point: _make(spec, shapes[point], f"reducer_{_graph.safe_name(point)}", reducers, masked)
        for point, spec in specs.items()
    }


def _make(spec, shape, name, reducers, masked):
    if isinstance(spec, str) and spec in _BY_NAME:
        return _BY_NAME[spec](shape, name, masked)
    if isinstance(spec, keras.Layer):
        return spec.__class__.from_config({**spec.get_config(), "name": name})
    raise ValueError(
        f"Unknown reducer {spec!r}. Pass one of {', '.join(map(repr, _BY_NAME))}, a "
        "reducer layer such as kp.RandomSubset(1000, seed=0), or a dict {point: reducer}. "
        f"Received: reducers={reducers!r}"
    )
