"""Chooses probe points: layer names, `"all"`, `"blocks"`, selectors and presets.

A point is the floating-point output of one layer, named by its path in the
model: a layer of the model itself by its name, a layer inside a nested
Functional or Sequential sub-model as `"inner/layer"`, a block inside a
keras-hub encoder that loops over its blocks as `"vit_encoder/transformer_block_1"`.
Integer and boolean tensors (token ids, segment ids, padding masks) are never
points. Points always come back in depth order, input side first.

Presets are data (`presets.json`, shipped with the package): a fixed list of
layer names per `keras.applications` family, a pattern over paths per keras-hub
family. `"blocks"` picks every block output of whichever family fits the model.

Example:

```python
import keras, keras_probes as kp

base = keras.applications.ResNet50(weights=None)
kp.points.resolve(base, "resnet50")[:3]
# ['conv1_relu', 'conv2_block1_out', 'conv2_block2_out']
kp.points.resolve(base, kp.points.matching(r"conv5_block\\d_out"))
# ['conv5_block1_out', 'conv5_block2_out', 'conv5_block3_out']
kp.points.resolve(base, "blocks") == kp.points.resolve(base, "resnet50")  # True
kp.points.available(base)  # every valid name
```
"""

import difflib
import importlib.resources
import json
import re
from dataclasses import dataclass

import keras

from keras_probes import _graph

__all__ = [
    "PRESETS",
    "Preset",
    "available",
    "family",
    "matching",
    "of_type",
    "resolve",
]


def _compile(pattern, name):
    """`re.compile(pattern)`, its failures one `TypeError` or `ValueError` naming the pattern."""
    if not isinstance(pattern, str):
        raise TypeError(
            f"`{name}` must be a regular expression string, e.g. r'conv\\d_block\\d_out'. "
            f"Received: {name}={pattern!r}"
        )
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(
            f"`{name}` is not a valid regular expression: {error}. Received: {name}={pattern!r}"
        ) from None


@dataclass(frozen=True)
class Preset:
    """A named, ordered set of probe points for one architecture, and how it is fed.

    The points are a fixed list of layer names (`layers`), or every point whose
    path matches `pattern` (`re.fullmatch`), in depth order. Where the
    architecture is a sub-model of the probed model (a classifier around a
    backbone), both are looked up under the sub-model's path as well.

    Args:
        description: what the points are and where they come from.
        layers: layer names in depth order. Defaults to `()` (then give
            `pattern`).
        preprocess: the `keras.applications` preprocessing of the family's
            ImageNet weights, one of `kp.datasets.PREPROCESSING`. Defaults to
            `"none"`.
        image_size: the `(height, width)` its ImageNet weights take. Defaults
            to `None` (no one size).
        pattern: a regular expression over paths, e.g.
            `r"transformer_layer_\\d+"`. Defaults to `None` (then give `layers`).

    Example:

    ```python
    preset = kp.points.PRESETS["resnet50"]
    preset.preprocess, preset.image_size   # ('caffe', (224, 224))
    kp.points.PRESETS["transformer_layers"].pattern   # 'transformer_layer_\\d+'
    ```
    """

    description: str
    layers: tuple[str, ...] = ()
    preprocess: str = "none"
    image_size: tuple[int, int] | None = None
    pattern: str | None = None

    def __post_init__(self):
        if bool(self.layers) == (self.pattern is not None):
            raise ValueError(
                "A Preset takes exactly one of `layers` (layer names in depth order) and "
                "`pattern` (a regular expression over paths). "
                f"Received: layers={self.layers!r}, pattern={self.pattern!r}"
            )
        if self.pattern is not None:
            _compile(self.pattern, "pattern")  # a bad pattern fails here, not at resolve time
        # Lists (as JSON gives them) become tuples: a preset is immutable.
        object.__setattr__(self, "layers", tuple(self.layers))
        if self.image_size is not None:
            object.__setattr__(self, "image_size", tuple(self.image_size))


def _load_presets():
    text = importlib.resources.files("keras_probes").joinpath("presets.json").read_text("utf-8")
    return {name: Preset(**entry) for name, entry in json.loads(text).items()}


#: `{name: Preset}`, in the order `"blocks"` tries them.
PRESETS = _load_presets()


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
    _compile(pattern, "pattern")  # a bad pattern fails here, not at resolve time
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
    """Every valid point of `model`, in depth order: its floating-point inputs,
    then its layers (those with one floating-point output, called once)."""
    return list(_graph.trace(model).tensors)


def resolve(model: keras.Model, points="all") -> list[str]:
    """Turns a points specification into layer paths of `model`, in depth order.

    Args:
        model: a Functional or Sequential Keras model.
        points: `"all"` (the inputs and every layer with one floating-point
            output, called once), `"blocks"` (every block output of the first
            family of `kp.points.PRESETS` that fits the model), a preset name,
            a layer path, a selector (`matching`, `of_type`) or a list of
            these (e.g. `["token_and_position_embedding", "blocks"]`; in a
            list, a name that is a point of the model is that point). In a
            keras-hub task, `"backbone/..."` is a path inside its backbone.
            Defaults to `"all"`.

    Returns:
        The list of paths, without duplicates, input side first.

    Example:

    ```python
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=12,
    )
    kp.points.resolve(backbone, "blocks")
    # ['transformer_layer_0', 'transformer_layer_1']
    ```
    """
    return resolve_in(_graph.trace(model), points, model.name)


def resolve_in(graph: _graph.Graph, points, model_name: str) -> list[str]:
    """`resolve` on a model already traced by `_graph.trace`."""
    if _is_group(points):
        chosen = _resolve_group(graph, points, model_name)
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
            # In a list, a name that is a point of the model is that point;
            # else "all", "blocks" or a preset name is that group.
            if _is_group(item) and graph.canonical(item) not in graph.tensors:
                chosen.extend(_resolve_group(graph, item, model_name))
            else:
                chosen.extend(_resolve_item(item, graph, points))
    order = {path: i for i, path in enumerate(graph.tensors)}
    return sorted(set(chosen), key=order.__getitem__)


def _is_group(points) -> bool:
    """Whether `points` names a group of points: `"all"`, `"blocks"` or a preset."""
    return isinstance(points, str) and (points in ("all", "blocks") or points in PRESETS)


def _resolve_group(graph, name, model_name):
    if name == "all":
        return list(graph.tensors)
    if name == "blocks":
        return _resolve_blocks(graph, model_name)
    return _resolve_preset(graph, name, model_name)


def _resolve_item(item, graph, points):
    if isinstance(item, Selector):
        # Bulk selections keep what can be probed, like "all".
        selected = [p for p in item.select(graph.layers) if p in graph.tensors]
        if not selected:
            raise _points_error(f"{item!r} matched no layer that can be probed.", points)
        return selected
    if not isinstance(item, str):
        raise _points_error(f"Invalid point {item!r} of type {type(item).__name__}.", points)
    item = graph.canonical(item)
    if item in graph.problems:
        raise ValueError(
            f"Layer {item!r} cannot be a probe point: {graph.problems[item]}. "
            f"Received: points={points!r}"
        )
    if item in graph.tensors:
        return [item]
    opaque = _graph.opaque_layer(graph, item)
    if opaque is not None:
        raise ValueError(
            f"Probe point {item!r} is inside layer {opaque!r} "
            f"({type(graph.layers[opaque]).__name__}), which runs its sub-layers inside its "
            "own call(): its inner outputs are not in the model's graph. Probe its output "
            f"({opaque!r}) or write the model functionally. Received: points={points!r}"
        )
    close = difflib.get_close_matches(item, list(graph.tensors), n=5, cutoff=0.6)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise _points_error(f"Unknown probe point {item!r}.{hint}", points)


def _preset_points(graph, preset):
    """The points of `preset` in `graph`, else `None`.

    The preset's architecture may sit inside the model (transfer learning:
    `Sequential([ResNet50(...), Dense(...)])`, a keras-hub task around its
    backbone): the model itself is searched first, then every sub-model.
    """
    prefixes = [""] + [
        path + _graph.SEPARATOR
        for path, layer in graph.layers.items()
        if _graph.is_graph_model(layer)
    ]
    for prefix in prefixes:
        if preset.pattern is None:
            paths = [prefix + layer for layer in preset.layers]
            if all(path in graph.tensors for path in paths):
                return paths
        else:
            regex = re.compile(re.escape(prefix) + f"(?:{preset.pattern})")
            paths = [path for path in graph.tensors if regex.fullmatch(path)]
            if paths:
                return paths
    return None


def _resolve_preset(graph, name, model_name):
    preset = PRESETS[name]
    paths = _preset_points(graph, preset)
    if paths is not None:
        return paths
    if preset.pattern is None:
        missing = [layer for layer in preset.layers if layer not in graph.tensors]
        problem = (
            f"Missing layers: {', '.join(missing[:5])}"
            f"{f' (and {len(missing) - 5} more)' if len(missing) > 5 else ''}."
        )
    else:
        problem = f"No point matches {preset.pattern!r}."
    raise ValueError(
        f"Preset {name!r} does not fit model '{model_name}': {preset.description} {problem} "
        "Pass layer names or kp.points.matching(regex) instead; "
        f"kp.points.available(model) lists every valid name. Received: points={name!r}"
    )


def family(model: keras.Model) -> str | None:
    """The preset whose points `"blocks"` gives for `model`, or `None` if none fits.

    Example:

    >>> kp.points.family(keras.applications.ResNet50(weights=None))
    'resnet50'
    """
    return _family(_graph.trace(model))


def _family(graph):
    # The first family that fits wins, in the fixed order of PRESETS (the data
    # file's): the same model always gets the same blocks.
    return next((n for n, p in PRESETS.items() if _preset_points(graph, p) is not None), None)


def _resolve_blocks(graph, model_name):
    name = _family(graph)
    if name is not None:
        return _preset_points(graph, PRESETS[name])
    tried = ", ".join(
        f"{name} ({preset.layers[0]}..{preset.layers[-1]})"
        if preset.pattern is None
        else f"{name} ({preset.pattern})"
        for name, preset in PRESETS.items()
    )
    raise ValueError(
        f"No family of blocks fits model '{model_name}'. Tried the presets: {tried}. "
        "Name its blocks with kp.points.matching(regex), e.g. "
        "kp.points.matching(r'block_\\d+'), or with layer names; kp.points.available(model) "
        "lists every valid name. Received: points='blocks'"
    )


def _points_error(problem, points):
    return ValueError(
        f"{problem} Pass a preset ({', '.join(repr(p) for p in PRESETS)}), 'all', 'blocks', "
        "layer names, kp.points.matching(regex) or kp.points.of_type(LayerClass); "
        "kp.points.available(model) lists every valid name. "
        f"Received: points={points!r}"
    )
