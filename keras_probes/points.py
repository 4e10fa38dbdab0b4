"""Chooses probe points: layer names, `"all"`, selectors and presets.

A point is the output of one layer, named by its path in the model: a layer of
the model itself by its name, a layer inside a nested Functional or Sequential
sub-model as `"inner/layer"`. Points always come back in depth order, input
side first.

Example:

```python
import keras, keras_probes as kp

base = keras.applications.ResNet50(weights=None)
kp.points.resolve(base, "resnet50")[:3]
# ['conv1_relu', 'conv2_block1_out', 'conv2_block2_out']
kp.points.resolve(base, kp.points.matching(r"conv5_block\\d_out"))
# ['conv5_block1_out', 'conv5_block2_out', 'conv5_block3_out']
kp.points.available(base)  # every valid name
```
"""

import difflib
import re
from dataclasses import dataclass

import keras

from keras_probes import _graph

__all__ = [
    "PRESETS",
    "Preset",
    "available",
    "matching",
    "of_type",
    "resolve",
]


@dataclass(frozen=True)
class Preset:
    """A named, ordered set of probe points for one architecture, and how it is fed.

    Args:
        description: what the points are and where they come from.
        layers: layer names in depth order.
        preprocess: the `keras.applications` preprocessing of the family's
            ImageNet weights, one of `kp.datasets.PREPROCESSING`. Defaults to
            `"none"`.
        image_size: the `(height, width)` its ImageNet weights take. Defaults
            to `None` (no one size).

    Example:

    ```python
    preset = kp.points.PRESETS["resnet50"]
    preset.preprocess, preset.image_size   # ('caffe', (224, 224))
    ```
    """

    description: str
    layers: tuple[str, ...]
    preprocess: str = "none"
    image_size: tuple[int, int] | None = None


def _resnet50_layers():
    blocks = {2: 3, 3: 4, 4: 6, 5: 3}
    outs = [f"conv{s}_block{b}_out" for s, n in blocks.items() for b in range(1, n + 1)]
    return ("conv1_relu", *outs)


PRESETS = {
    "resnet50": Preset(
        "keras.applications.ResNet50: the stem (conv1_relu, 112x112x64) and the "
        "16 residual block outputs; the 17 points of Alain & Bengio, Sec. 4.1.",
        _resnet50_layers(),
        preprocess="caffe",
        image_size=(224, 224),
    ),
    "inception_v3": Preset(
        "keras.applications.InceptionV3: the outputs of the 11 mixed blocks "
        "mixed0..mixed10 (Alain & Bengio, Sec. 4.2).",
        tuple(f"mixed{i}" for i in range(11)),
        preprocess="tf",
        image_size=(299, 299),
    ),
    "mobilenet": Preset(
        "keras.applications.MobileNet (v1): the stem (conv1_relu) and the 13 "
        "depthwise-separable block outputs conv_pw_1_relu..conv_pw_13_relu.",
        ("conv1_relu", *(f"conv_pw_{i}_relu" for i in range(1, 14))),
        preprocess="tf",
        image_size=(224, 224),
    ),
    "vgg16": Preset(
        "keras.applications.VGG16: every convolution and the five pooling layers.",
        tuple(
            name
            for block, convs in enumerate((2, 2, 3, 3, 3), start=1)
            for name in (
                *(f"block{block}_conv{c}" for c in range(1, convs + 1)),
                f"block{block}_pool",
            )
        ),
        preprocess="caffe",
        image_size=(224, 224),
    ),
}


class Selector:
    """Base class of the point selectors: picks paths from a model's layers."""

    def select(self, layers: dict[str, keras.Layer]) -> list[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class _Matching(Selector):
    pattern: str

    def select(self, layers):
        regex = re.compile(self.pattern)
        return [path for path in layers if regex.fullmatch(path)]

    def __repr__(self):
        return f"kp.points.matching({self.pattern!r})"


@dataclass(frozen=True)
class _OfType(Selector):
    types: tuple[type, ...]

    def select(self, layers):
        return [path for path, layer in layers.items() if isinstance(layer, self.types)]

    def __repr__(self):
        names = ", ".join(t.__name__ for t in self.types)
        return f"kp.points.of_type({names})"


def matching(pattern: str) -> Selector:
    """Selects the layers whose full path matches `pattern` (`re.fullmatch`).

    Args:
        pattern: a regular expression over paths such as `"conv2_block1_out"`
            or `"mobilenet/conv_pw_3_relu"`.

    Example:

    >>> kp.ProbedModel(base, points=kp.points.matching(r"conv\\d_block\\d_out"), ...)
    """
    re.compile(pattern)  # a bad pattern fails here, not at resolve time
    return _Matching(pattern)


def of_type(*layer_types: type) -> Selector:
    """Selects the layers that are instances of any of `layer_types`.

    Example:

    >>> kp.points.of_type(keras.layers.Conv2D, keras.layers.ReLU)
    """
    if not layer_types or not all(
        isinstance(t, type) and issubclass(t, keras.Layer) for t in layer_types
    ):
        raise TypeError(
            "kp.points.of_type() takes one or more keras.Layer subclasses, e.g. "
            f"keras.layers.Conv2D. Received: {layer_types!r}"
        )
    return _OfType(tuple(layer_types))


def available(model: keras.Model) -> list[str]:
    """Every valid point of `model`, in depth order: its inputs, then its layers."""
    return list(_graph.trace(model).tensors)


def resolve(model: keras.Model, points="all") -> list[str]:
    """Turns a points specification into layer paths of `model`, in depth order.

    Args:
        model: a Functional or Sequential Keras model.
        points: `"all"` (the inputs and every layer with one output tensor,
            called once), a preset name (`kp.points.PRESETS`), a layer path,
            a selector (`matching`, `of_type`) or a list of paths and
            selectors. Defaults to `"all"`.

    Returns:
        The list of paths, without duplicates, input side first.
    """
    return resolve_in(_graph.trace(model), points, model.name)


def resolve_in(graph: _graph.Graph, points, model_name: str) -> list[str]:
    """`resolve` on a model already traced by `_graph.trace`."""
    valid = graph.tensors
    if isinstance(points, str) and points == "all":
        chosen = list(valid)
    elif isinstance(points, str) and points in PRESETS:
        chosen = _resolve_preset(graph, points, model_name)
    else:
        items = [points] if isinstance(points, str | Selector) else points
        try:
            items = list(items)
        except TypeError:
            items = None
        if not items:
            raise _points_error(f"Invalid points: {points!r}.", points)
        chosen = []
        for item in items:
            chosen.extend(_resolve_item(item, graph, points))
    order = {path: i for i, path in enumerate(valid)}
    return sorted(set(chosen), key=order.__getitem__)


def _resolve_item(item, graph, points):
    if isinstance(item, Selector):
        # Bulk selections keep what can be probed, like "all".
        selected = [p for p in item.select(graph.layers) if p in graph.tensors]
        if not selected:
            raise _points_error(f"{item!r} matched no layer that can be probed.", points)
        return selected
    if not isinstance(item, str):
        raise _points_error(f"Invalid point {item!r} of type {type(item).__name__}.", points)
    if item in graph.problems:
        raise ValueError(
            f"Layer {item!r} cannot be a probe point: {graph.problems[item]}. "
            f"Received: points={points!r}"
        )
    if item in graph.tensors:
        return [item]
    close = difflib.get_close_matches(item, list(graph.tensors), n=5, cutoff=0.6)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise _points_error(f"Unknown probe point {item!r}.{hint}", points)


def _resolve_preset(graph, name, model_name):
    # The preset's architecture may sit inside the model (transfer learning:
    # `Sequential([ResNet50(...), Dense(...)])`): look in every sub-model.
    preset = PRESETS[name]
    prefixes = [""] + [
        path + _graph.SEPARATOR
        for path, layer in graph.layers.items()
        if _graph.is_graph_model(layer)
    ]
    for prefix in prefixes:
        if all(prefix + layer in graph.tensors for layer in preset.layers):
            return [prefix + layer for layer in preset.layers]
    missing = [layer for layer in preset.layers if layer not in graph.tensors]
    raise ValueError(
        f"Preset {name!r} does not fit model '{model_name}': {preset.description} "
        f"Missing layers: {', '.join(missing[:5])}"
        f"{f' (and {len(missing) - 5} more)' if len(missing) > 5 else ''}. "
        "Pass layer names or kp.points.matching(regex) instead; "
        f"kp.points.available(model) lists every valid name. Received: points={name!r}"
    )


def _points_error(problem, points):
    return ValueError(
        f"{problem} Pass a preset ({', '.join(repr(p) for p in PRESETS)}), 'all', "
        "layer names, kp.points.matching(regex) or kp.points.of_type(LayerClass); "
        "kp.points.available(model) lists every valid name. "
        f"Received: points={points!r}"
    )
