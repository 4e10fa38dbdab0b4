"""Probes as a TensorFlow Serving model: a versioned SavedModel beside the model.

`export_serving` writes `base_dir/<version>/`, TF Serving's layout, with:

- `serving_default`: every probe's output for one input batch;
- `probe_<point>`: one probe's output alone, per point;
- `assets.extra/tf_serving_warmup_requests`: `PredictionLog` records TF Serving
  replays at load time, so that the first real request is not the slow one;

and adds or updates the model's entry in `base_dir/../models.config` (a
`ModelServerConfig` text proto, for `tensorflow_model_server
--model_config_file`).

Names and dtypes of the signatures (`<point>` is the point's name with every
character other than a letter, digit or `_` replaced by `_`):

- `serving_default`: input `inputs`, the base's input (for several inputs,
  one key per input name); outputs, per point, `<point>_probabilities`
  float32 `(batch, classes)` and `<point>_class` int64 `(batch,)`.
- `probe_<point>`: the same input; outputs `probabilities` and `class`.
- With `heads_only=True`, `serving_default` takes `<point>`, float32
  `(batch, features)`, the reduced features of every point, and
  `probe_<point>` takes `features`; the outputs are the same.

For a `kp.RegressionProbedModel` the outputs are `<point>_predictions` and
`predictions`, float32 `(batch, targets)`.

The version is written under a temporary name TF Serving ignores and renamed
when complete: a server polling `base_dir` never sees half a version. An
existing version is never overwritten.
"""

import os
import re
import shutil
import uuid
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_probes import _graph
from keras_probes.model import ProbedModel

__all__ = ["export_serving", "next_version", "serving_name"]

_WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"
_CONFIG = "models.config"


def serving_name(point: str) -> str:
    """The name of `point` in signatures: letters, digits and `_` only."""
    return re.sub(r"\W", "_", _graph.safe_name(point), flags=re.ASCII)


def next_version(base_dir) -> int:
    """The next free version number under `base_dir`: 1 + the largest there (1 if none)."""
    base_dir = Path(base_dir)
    versions = (
        [int(p.name) for p in base_dir.iterdir() if p.name.isdigit()] if base_dir.is_dir() else []
    )
    return max(versions, default=0) + 1


def export_serving(
    probed,
    base_dir,
    version: int | None = None,
    heads_only: bool = False,
    warmup=None,
    model_name: str | None = None,
    server_root: str | None = None,
) -> Path:
    """Writes `probed` as a TensorFlow Serving model version.

    Args:
        probed: a `kp.ProbedModel` (or `kp.RegressionProbedModel`).
        base_dir: the model's directory in TF Serving's layout; versions are
            its integer-named sub-directories.
        version: the version to write. Defaults to `None`: the next free one.
        heads_only: serve the probe heads alone, over reduced features
            (`probed.extract_features(x)`), rather than the whole model over
            its input. Defaults to `False`.
        warmup: a few real inputs (a batch, as `probed.predict` takes them;
            with `heads_only`, a `{point: features}` dict) to record as
            warm-up requests, one request per signature. Defaults to `None`:
            one example of zeros of the input's shape.
        model_name: the model's name in the requests and in `models.config`.
            Defaults to the name of `base_dir`.
        server_root: where the server sees the directory holding `base_dir`,
            for `models.config`'s `base_path` (e.g. `"/models"` when it is
            mounted there in a container). Defaults to `None`: its absolute
            path here.

    Returns:
        The version's directory, `base_dir/<version>`.

    Raises:
        FileExistsError: the version exists already (the message names the
            next free one).

    Example:

    ```python
    path = kp.export_serving(probed, "serving/probes")   # serving/probes/1
    served = tf.saved_model.load(str(path))
    served.signatures["serving_default"](inputs=tf.constant(x))
    ```
    """
    if not isinstance(probed, ProbedModel):
        raise TypeError(f"`probed` must be a kp.ProbedModel. Received: {type(probed).__name__}")
    base_dir = Path(base_dir)
    model_name = model_name or base_dir.resolve().name
    free = next_version(base_dir)
    if version is None:
        version = free
    if isinstance(version, bool) or not isinstance(version, int | np.integer) or version < 1:
        raise ValueError(f"`version` must be an integer >= 1 or None. Received: {version!r}")
    target = base_dir / str(int(version))
    if target.exists():
        raise FileExistsError(
            f"{target} exists: version {version} of {model_name!r} was exported already and "
            f"is never overwritten. The next free version is {free}: pass version={free}, "
            "or version=None."
        )
    base_dir.mkdir(parents=True, exist_ok=True)
    # Not an integer: TF Serving ignores it until it is renamed, complete.
    temporary = base_dir / f".partial-{version}-{uuid.uuid4().hex[:8]}"
    try:
        signatures = _Signatures(probed, heads_only)
        signatures.archive().write_out(str(temporary), verbose=False)
        _write_warmup(temporary / _WARMUP, signatures, warmup, model_name)
        os.rename(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _write_models_config(base_dir, model_name, server_root)
    return target


class _Signatures:
    """The signature functions of one export, and their input specs."""

    def __init__(self, probed, heads_only):
        self.probed, self.heads_only = probed, heads_only
        self.names = {point: serving_name(point) for point in probed.points}
        if len(set(self.names.values())) < len(self.names):
            raise ValueError(
                f"Points {probed.points} give clashing serving names {list(self.names.values())}."
            )
        self.regression = hasattr(probed, "targets")
        features = probed.feature_model.output
        if heads_only:
            self.specs = {
                self.names[p]: tf.TensorSpec(
                    (None, features[p].shape[-1]), "float32", self.names[p]
                )
                for p in probed.points
            }
        else:
            inputs = keras.tree.flatten(probed.feature_model.input)
            keys = ["inputs"] if len(inputs) == 1 else [t.name for t in inputs]
            self.specs = {
                key: tf.TensorSpec(t.shape, t.dtype or "float32", key)
                for key, t in zip(keys, inputs, strict=True)
            }

    def _features(self, kwargs, points):
        if self.heads_only:
            return {p: kwargs[self.names[p]] for p in points}
        values = list(kwargs.values())
        x = values[0] if len(values) == 1 else list(values)
        return self.probed.feature_model(x, training=False)

    def _outputs(self, point, features, prefix):
        head = self.probed.get_probe(point)
        if self.regression:
            return {f"{prefix}predictions": head(features)}
        probabilities = head(features)
        return {
            f"{prefix}probabilities": probabilities,
            f"{prefix}class": tf.argmax(probabilities, axis=-1, output_type=tf.int64),
        }

    def functions(self):
        """`{signature name: (function, input specs, point or None)}`, `serving_default` first."""
        points = self.probed.points

        def serve_all(**kwargs):
            features = self._features(kwargs, points)
            outputs = {}
            for point in points:
                outputs.update(self._outputs(point, features[point], f"{self.names[point]}_"))
            return outputs

        result = {"serving_default": (serve_all, self.specs, None)}
        for point in points:
            name = self.names[point]
            if self.heads_only:
                specs = {"features": tf.TensorSpec(self.specs[name].shape, "float32", "features")}

                def serve_one(point=point, **kwargs):
                    return self._outputs(point, kwargs["features"], "")
            else:
                specs = self.specs

                def serve_one(point=point, **kwargs):
                    return self._outputs(point, self._features(kwargs, [point])[point], "")

            result[f"probe_{name}"] = (serve_one, specs, point)
        return result

    def archive(self):
        archive = keras.export.ExportArchive()
        archive.track(self.probed)
        for name, (function, specs, _) in self.functions().items():
            archive.add_endpoint(
                name,
                tf.function(_positional(function, list(specs)), autograph=False),
                input_signature=list(specs.values()),
            )
        return archive

    def request_inputs(self, inputs, point):
        """The inputs of one signature (all probes' when `point` is None) from the export's."""
        if self.heads_only and point is not None:
            return {"features": inputs[self.names[point]]}
        return inputs

    def warmup_inputs(self, warmup):
        """`{input key: np.ndarray}` of the warm-up batch, as `serving_default` takes it."""
        if warmup is None:
            return {
                key: np.zeros((1, *spec.shape[1:]), spec.dtype.as_numpy_dtype)
                for key, spec in self.specs.items()
            }
        if self.heads_only:
            given = warmup if isinstance(warmup, dict) else {}
            missing = [p for p in self.probed.points if p not in given]
            if missing:
                raise ValueError(
                    "With heads_only=True, `warmup` must be a dict {point: features}, e.g. "
                    f"probed.extract_features(x). Missing points: {missing}"
                )
            return {self.names[p]: np.asarray(warmup[p], np.float32) for p in self.probed.points}
        values = keras.tree.flatten(warmup)
        return {
            key: np.asarray(value, spec.dtype.as_numpy_dtype)
            for (key, spec), value in zip(self.specs.items(), values, strict=True)
        }


def _positional(function, keys):
    """`function(**inputs)` as a function of positional tensors, for a signature whose
    TensorSpec names become the input keys."""

    def endpoint(*tensors):
        return function(**dict(zip(keys, tensors, strict=True)))

    return endpoint


def _write_warmup(path, signatures, warmup, model_name):
    """One `PredictionLog` per signature, as TF Serving replays them at load."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    inputs = signatures.warmup_inputs(warmup)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for name, (_, _, point) in signatures.functions().items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=name)
            )
            for key, value in signatures.request_inputs(inputs, point).items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())


def _write_models_config(base_dir, model_name, server_root):
    """Adds (or updates) this model's entry of `models.config` beside `base_dir`."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = base_dir.resolve().parent / _CONFIG
    config = model_server_config_pb2.ModelServerConfig()
    if path.exists():
        text_format.Parse(path.read_text(), config)
    entries = config.model_config_list.config
    entry = next((e for e in entries if e.name == model_name), None) or entries.add()
    entry.name = model_name
    root = path.parent if server_root is None else Path(server_root)
    entry.base_path = (root / base_dir.resolve().name).as_posix()
    entry.model_platform = "tensorflow"
    temporary = path.with_name(f".{_CONFIG}.{os.getpid()}.tmp")
    temporary.write_text(text_format.MessageToString(config))
    os.replace(temporary, path)
