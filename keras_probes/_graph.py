"""Walks Keras graphs: names every layer, nested sub-models included, and
re-traces a model so that every layer's output hangs off one set of inputs.

This is the only module that touches Keras internals: `Functional`, its graph
executor `_run_through_graph` (the one `keras.models.clone_model` uses), a
tensor's `_keras_history` (and its node's `input_tensors`) and a layer's
`_flatten_layers`. The tests over every
`keras.applications` family and over keras-hub backbones pin the behaviour.

Two kinds of layers are opened, so that the layers inside them are points:
Functional or Sequential sub-models (their graph is run in place), and the
layers of `UNROLLERS`, which loop over their sub-layers in `call()` (keras-hub's
ViT and DINOv2 encoders: their `call` is replayed sub-layer by sub-layer). Any
other layer is one point, its output.
"""

import re
from dataclasses import dataclass, field

import keras
from keras.src.models.functional import Functional

SEPARATOR = "/"


def safe_name(path: str) -> str:
    """A layer or file name for a point path: `"inner/conv1"` -> `"inner__conv1"`."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", path.replace(SEPARATOR, "__"))


def is_graph_model(layer) -> bool:
    """Whether the layers inside `layer` can be addressed (Functional or Sequential)."""
    return isinstance(layer, Functional | keras.Sequential)


@dataclass
class Graph:
    """A model re-traced on fresh inputs.

    Attributes:
        inputs: fresh `keras.Input`s, structured like the model's input.
        layers: every path, in execution order (input side first): the
            model's inputs by name, its layers by name, the layers of nested
            Functional or Sequential sub-models and of unrolled layers as
            `"inner/layer"` (just before `"inner"` itself).
        tensors: `{path: KerasTensor}` of the paths that can be probes: one
            floating-point tensor, from a layer called once.
        problems: `{path: why it cannot be a probe}` for the others.
        aliases: `{alias: path}` of the sub-models that have a second name:
            `"backbone"` for a keras-hub task's backbone.
        positions: `{input name: (positions, path)}`: the integer inputs
            (token ids) that feed a learned position embedding
            (`POSITION_EMBEDDINGS`), the embedding's number of positions (a
            keras-hub backbone's `max_sequence_length`) and the path of the
            layer that holds it. Their token axis (1) may not be longer.
        outputs: the model's outputs, computed from `inputs` (with `edits`).
        edits: `{path: function}` given to `trace`: what the graph downstream of
            each path reads instead of its output (`tensors` keeps the output).
    """

    inputs: object
    layers: dict = field(default_factory=dict)
    tensors: dict = field(default_factory=dict)
    problems: dict = field(default_factory=dict)
    aliases: dict = field(default_factory=dict)
    positions: dict = field(default_factory=dict)
    outputs: object = None
    edits: dict = field(default_factory=dict)

    def canonical(self, path: str) -> str:
        """`path` with a leading alias replaced: `"backbone/x"` -> `"bert_backbone/x"`."""
        head, separator, rest = path.partition(SEPARATOR)
        if head not in self.aliases:
            return path
        return self.aliases[head] + separator + rest


def trace(model: keras.Model, edits: dict | None = None) -> Graph:
    """Re-runs the graph of `model`, stepping into every nested graph model.

    The layers are the model's own (shared weights, nothing copied), so all
    tensors hang off the same new inputs and one forward pass of a model built
    on any of them computes them all.

    Args:
        model: a Functional or Sequential model.
        edits: `{path: function}` (canonical paths, as `tensors` names them):
            every layer that reads the output of `path`, on every path to the
            model's outputs (skip connections included), reads
            `function(output)` instead. Defaults to `None`: the model as it is.
    """
    if not is_graph_model(model):
        raise TypeError(
            f"Model '{model.name}' is a subclassed {type(model).__name__}: it has no "
            "layer graph whose outputs can be probed. Write it as a Functional or "
            "Sequential model, or probe a Functional model built from its layers. "
            f"Received: base of type {type(model).__name__}"
        )
    originals = _inputs(model)
    # Named as the original input layers, so that inputs given by name still fit.
    inputs = keras.tree.map_structure(
        lambda x: keras.Input(
            batch_shape=x.shape, dtype=x.dtype, name=x._keras_history.operation.name
        ),
        originals,
    )
    graph = Graph(inputs, edits=dict(edits or {}))
    for original, tensor in zip(
        keras.tree.flatten(originals), keras.tree.flatten(inputs), strict=True
    ):
        layer = original._keras_history.operation
        _record(graph, layer.name, layer, tensor)
    read = keras.tree.map_structure(
        lambda original, tensor: _edited(graph, original._keras_history.operation.name, tensor),
        originals,
        inputs,
    )
    graph.outputs = _run(model, read, "", graph)
    # A keras-hub task keeps its backbone as `.backbone`, so "backbone/..." is
    # the path users read off the task; the layer's own name may differ.
    backbone = getattr(model, "backbone", None)
    if (
        is_graph_model(backbone)
        and graph.layers.get(backbone.name) is backbone
        and "backbone" not in graph.layers
    ):
        graph.aliases["backbone"] = backbone.name
    return graph


def opaque_layer(graph: Graph, path: str) -> str | None:
    """The path of the layer that `path` reaches into but that cannot be opened.

    That is a layer with sub-layers that runs them inside its own `call()`
    (and has no unroller): its inner outputs are not in the model's graph.
    `None` when `path` reaches into no such layer.
    """
    parts = path.split(SEPARATOR)
    for end in range(len(parts) - 1, 0, -1):
        prefix = SEPARATOR.join(parts[:end])
        layer = graph.layers.get(prefix)
        if layer is None:
            continue
        # The deepest known layer on the path decides: an opened one simply has
        # no such inner layer.
        opened = is_graph_model(layer) or is_unrolled(layer)
        if opened or not isinstance(layer, keras.Layer):
            return None
        return prefix if layer._flatten_layers(include_self=False, recursive=False) else None
    return None


def _inputs(model):
    try:
        if isinstance(model, keras.Sequential):
            return model.inputs[0]  # its `input` exists only once it was called
        return model.input
    except (AttributeError, ValueError, TypeError, IndexError) as error:
        raise ValueError(
            f"Model '{model.name}' has no defined input yet, so its layers cannot "
            "be probed. Build it on an input first, e.g. "
            "`keras.Sequential([keras.Input(shape), ...])` or "
            f"`model.build((None, *shape))`. Received: model={model.name!r}"
        ) from error


def _record(graph, path, layer, outputs):
    graph.layers.setdefault(path, layer)
    if path in graph.tensors or path in graph.problems:
        graph.tensors.pop(path, None)
        graph.problems[path] = (
            "it is called more than once in the graph (a shared layer), so a probe "
            "there would be ambiguous; probe the layers that follow each call instead"
        )
    elif not isinstance(outputs, keras.KerasTensor):
        count = len(keras.tree.flatten(outputs))
        graph.problems[path] = f"it returns {count} tensors; a probe point needs one"
    elif not keras.backend.is_float_dtype(outputs.dtype):
        # Token ids and masks are inputs the model needs, never features.
        graph.problems[path] = (
            f"its output is {outputs.dtype} (token ids, segment ids or a mask), "
            "not floating-point features"
        )
    else:
        graph.tensors[path] = outputs


def _run(model, inputs, prefix, graph):
    call = _caller(prefix, graph)
    if isinstance(model, keras.Sequential):
        outputs = inputs
        for layer in model.layers:
            outputs = call(layer, outputs)
        return outputs
    return model._run_through_graph(inputs, call_fn=call)


def _caller(prefix, graph):
    """`call(layer, *args, **kwargs)`: calls `layer` as the model does and records
    its output at `prefix + layer.name`, opening graph models and unrolled layers."""

    def call(layer, *args, **kwargs):
        path = prefix + layer.name
        unroll = _unroller(layer)
        if is_graph_model(layer):
            # Step into the sub-model instead of calling it whole, so that its
            # inner tensors join this graph. `training` is decided later, when
            # the traced model is called.
            outputs = _run(layer, args[0], path + SEPARATOR, graph)
        elif unroll is not None:
            outputs = unroll(layer, _caller(path + SEPARATOR, graph), *args, **kwargs)
        else:
            outputs = layer(*args, **kwargs)
            _record_positions(graph, path, layer, (args, kwargs))
        _record(graph, path, layer, outputs)
        return _edited(graph, path, outputs)

    return call


def _edited(graph, path, outputs):
    """What the layers after `path` read: its output, or its edit's result."""
    edit = graph.edits.get(path)
    return outputs if edit is None else edit(outputs)


# -- position embeddings --------------------------------------------------------
#
# A learned position embedding is a table with a row per position: a longer
# sequence fails deep in the graph (a slice out of range), or under XLA reads
# clamped rows silently. The inputs it is computed from are found by walking
# the graph back from the layer's arguments.

#: Classes (and their subclasses) whose `sequence_length` positions bound the sequences
#: they embed, by qualified name so that keras_hub is never imported here.
POSITION_EMBEDDINGS = ("keras_hub.src.layers.modeling.position_embedding.PositionEmbedding",)


def _record_positions(graph, path, layer, arguments):
    if not isinstance(layer, keras.Layer):
        return  # an operation of the graph (`x[0]`, `ops.add`)
    limits = [
        int(sub.sequence_length)
        for sub in layer._flatten_layers(include_self=True, recursive=True)
        if any(f"{c.__module__}.{c.__qualname__}" in POSITION_EMBEDDINGS for c in type(sub).__mro__)
    ]
    if not limits:
        return
    limit = min(limits)
    for tensor in _inputs_behind(graph, keras.tree.flatten(arguments)):
        if len(tensor.shape) != 2 or keras.backend.is_float_dtype(tensor.dtype):
            continue  # only token ids (batch, tokens) are checked
        known = graph.positions.get(tensor.name)
        if known is None or limit < known[0]:
            graph.positions[tensor.name] = (limit, path)


def _inputs_behind(graph, tensors):
    """The model inputs (traced `keras.Input`s) that `tensors` are computed from."""
    inputs = {id(t): t for t in keras.tree.flatten(graph.inputs)}
    found, seen = [], set()
    stack = [t for t in tensors if isinstance(t, keras.KerasTensor)]
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if id(tensor) in inputs:
            found.append(tensor)
            continue
        history = getattr(tensor, "_keras_history", None)
        if history is not None:
            stack += history.operation._inbound_nodes[history.node_index].input_tensors
    return found


# -- unrollers ----------------------------------------------------------------
#
# A layer that loops over its sub-layers in `call()` hides their outputs: the
# model's graph holds one node for it. An unroller replays that `call` exactly,
# sub-layer by sub-layer through `call_fn` (which records each output under the
# layer's path), and returns what `call` returns. The sub-layers are the
# layer's own (shared weights); they are called symbolically, `training` is
# decided when the traced model is called, as for any layer of a graph.


def _unroll_vit_encoder(layer, call_fn, inputs):
    # keras_hub/src/models/vit/vit_layers.py, ViTEncoder.call.
    x = call_fn(layer.dropout, inputs)
    for i in range(layer.num_layers):
        x = call_fn(layer.encoder_layers[i], x)
    return call_fn(layer.layer_norm, x)


def _unroll_dinov2_encoder(layer, call_fn, inputs, training=None):
    # keras_hub/src/models/dinov2/dinov2_layers.py, DINOV2Encoder.call.
    pyramid_outputs = {}
    x = inputs
    for layer_index, sub_layer in enumerate(layer.layers, start=1):
        x = call_fn(sub_layer, x, training=training)
        pyramid_outputs[f"stage{layer_index}"] = x
    return x, pyramid_outputs


#: `{"module.Class": unroller}`: keyed by the exact class's name (a subclass may
#: override `call`), so that keras_hub is never imported here.
UNROLLERS = {
    "keras_hub.src.models.vit.vit_layers.ViTEncoder": _unroll_vit_encoder,
    "keras_hub.src.models.dinov2.dinov2_layers.DINOV2Encoder": _unroll_dinov2_encoder,
}


def is_unrolled(layer) -> bool:
    """Whether `trace` replays `layer`'s `call()` sub-layer by sub-layer (`UNROLLERS`),
    so that its sub-layers are recorded one by one, as `"layer/sub_layer"`."""
    return _unroller(layer) is not None


def _unroller(layer):
    cls = type(layer)
    return UNROLLERS.get(f"{cls.__module__}.{cls.__qualname__}")
