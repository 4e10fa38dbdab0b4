"""Walks Keras graphs: names every layer, nested sub-models included, and
re-traces a model so that every layer's output hangs off one set of inputs.

This is the only module that touches Keras internals: `Functional`, its graph
executor `_run_through_graph` (the one `keras.models.clone_model` uses) and a
tensor's `_keras_history`. The tests over every `keras.applications` family
pin the behaviour.
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
            Functional or Sequential sub-models as `"inner/layer"` (just
            before `"inner"` itself).
        tensors: `{path: KerasTensor}` of the paths that can be probes.
        problems: `{path: why it cannot be a probe}` for the others.
    """

    inputs: object
    layers: dict = field(default_factory=dict)
    tensors: dict = field(default_factory=dict)
    problems: dict = field(default_factory=dict)


def trace(model: keras.Model) -> Graph:
    """Re-runs the graph of `model`, stepping into every nested graph model.

    The layers are the model's own (shared weights, nothing copied), so all
    tensors hang off the same new inputs and one forward pass of a model built
    on any of them computes them all.
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
    graph = Graph(inputs)
    for original, tensor in zip(
        keras.tree.flatten(originals), keras.tree.flatten(inputs), strict=True
    ):
        layer = original._keras_history.operation
        _record(graph, layer.name, layer, tensor)
    _run(model, inputs, "", graph)
    return graph


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
    else:
        graph.tensors[path] = outputs


def _run(model, inputs, prefix, graph):
    def call(layer, *args, **kwargs):
        path = prefix + layer.name
        if is_graph_model(layer):
            # Step into the sub-model instead of calling it whole, so that its
            # inner tensors join this graph. `training` is decided later, when
            # the traced model is called.
            outputs = _run(layer, args[0], path + SEPARATOR, graph)
        else:
            outputs = layer(*args, **kwargs)
        _record(graph, path, layer, outputs)
        return outputs

    if isinstance(model, keras.Sequential):
        outputs = inputs
        for layer in model.layers:
            outputs = call(layer, outputs)
        return outputs
    return model._run_through_graph(inputs, call_fn=call)
