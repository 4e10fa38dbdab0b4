"""Walks Keras graphs: names every layer, nested sub-models included, and
re-traces a model so that any of those layers becomes an output of one graph.

This is the only module that touches Keras internals: `Functional` and its
graph executor `_run_through_graph`, the same executor `keras.models.clone_model`
uses. The tests over every `keras.applications` family pin the behaviour.
"""

import re

import keras
from keras.src.models.functional import Functional

SEPARATOR = "/"


def safe_name(path: str) -> str:
    """A layer or file name for a point path: `"inner/conv1"` -> `"inner__conv1"`."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", path.replace(SEPARATOR, "__"))


def is_graph_model(layer: keras.Layer) -> bool:
    """Whether the layers inside `layer` can be addressed (Functional or Sequential)."""
    return isinstance(layer, Functional | keras.Sequential)


def layer_paths(model: keras.Model) -> dict[str, keras.Layer]:
    """Every layer of `model` by path, in depth order (input side first).

    The layers of a nested Functional or Sequential model appear as
    `"inner/layer"`, just before `"inner"` itself (whose output is the last of
    them). Input layers are left out: they are the data, not a probe point.
    """
    paths = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if is_graph_model(layer):
            for path, inner in layer_paths(layer).items():
                paths[f"{layer.name}{SEPARATOR}{path}"] = inner
        paths[layer.name] = layer
    return paths


def model_inputs(model: keras.Model):
    """The model's symbolic inputs, or a `ValueError` saying how to define them."""
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


def trace(model: keras.Model, paths: list[str]):
    """Re-runs the graph of `model` on fresh inputs and returns the tensors at `paths`.

    The layers are the model's own (shared weights, nothing copied); nested
    models that hold a requested path are stepped into, so every tensor
    hangs off the same new inputs and one forward pass computes all of them.

    Returns:
        `(inputs, {path: KerasTensor})`, with `inputs` structured like
        `model.input`.
    """
    wanted = set(paths)
    captured = {}
    inputs = keras.tree.map_structure(
        lambda x: keras.Input(batch_shape=x.shape, dtype=x.dtype, name=x.name),
        model_inputs(model),
    )
    _run(model, inputs, "", wanted, captured)
    return inputs, {path: captured[path] for path in paths}


def _run(model, inputs, prefix, wanted, captured):
    def call(layer, *args, **kwargs):
        path = prefix + layer.name
        if is_graph_model(layer) and any(w.startswith(path + SEPARATOR) for w in wanted):
            # Step into the sub-model instead of calling it whole, so that its
            # inner tensors join this graph. `training` is decided later, when
            # the traced model is called.
            outputs = _run(layer, args[0], path + SEPARATOR, wanted, captured)
        else:
            outputs = layer(*args, **kwargs)
        if path in wanted:
            if path in captured:
                raise ValueError(
                    f"Layer '{path}' is called more than once in the graph of "
                    f"'{model.name}' (a shared layer), so a probe there would be "
                    "ambiguous. Probe the layers that follow each of its calls "
                    f"instead. Received: points containing {path!r}"
                )
            if not isinstance(outputs, keras.KerasTensor):
                raise ValueError(
                    f"Layer '{path}' returns {len(keras.tree.flatten(outputs))} "
                    "tensors; a probe point needs a layer with one output. "
                    f"Received: points containing {path!r}"
                )
            captured[path] = outputs
        return outputs

    if isinstance(model, keras.Sequential):
        outputs = inputs
        for layer in model.layers:
            outputs = call(layer, outputs)
        return outputs
    return model._run_through_graph(inputs, call_fn=call)
