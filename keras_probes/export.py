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

Every signature checks the shape of what it is fed against the model's
(TensorFlow does not, for a loaded signature): an image of another size is an
`InvalidArgumentError` naming both shapes ("Shape of tensor inputs
[1,29,29,1] is not compatible with expected shape [?,28,28,1]."), never rows
of wrong numbers.

Two exports are refused, each unless asked for explicitly:

- probes never fitted (`allow_unfitted=True`): heads whose weights are all
  still zero, as initialised, which serve the same answer for every input
  (`kp.solvers.NotFittedError`, before any work);
- a version whose signatures (names, input and output keys, dtypes and
  shapes) differ from the latest version's, the highest one under
  `base_dir` holding a `saved_model.pb` (`allow_new_signatures=True`):
  clients of the latest version would break when the server moves to the
  new one (`ValueError` naming the differences). The signatures are read
  from the `saved_model.pb` files alone, when the version is published.

What a reader sees at every instant, and what two writers do:

- Before any work, `base_dir` and the directory holding `models.config` (or
  the nearest existing directories above them) must be writable
  directories: `PermissionError` or `NotADirectoryError` otherwise.
- The version is written, and fsynced, under a temporary name TF Serving
  ignores (`base_dir/.partial-<hex>`), then published by one rename to
  `base_dir/<version>`: a server polling `base_dir` sees no version or the
  whole one, never half of it. An existing version is never overwritten.
- The publication holds an exclusive lock (`.export.lock`, beside
  `models.config`, through `_files.locked`: flock on Unix, LockFileEx on
  Windows; released when a process dies) and, under it: picks the version
  (`version=None`: the next free one at that moment, so racing exports each
  get their own; a given version that another export took meanwhile is a
  `FileExistsError` naming the next free one), compares the signatures with
  the latest version's, reads and updates `models.config` (written aside,
  fsynced,
  replaced), then renames the version. The rename is the commit point:
  `models.config` may list a model an instant before its first version
  exists, which TF Serving treats as a model with no version yet to load.
- A failure anywhere (an unreadable or unparsable `models.config`, a
  directory in its place, a full disk, a killed process) leaves no new
  version: before the rename nothing is published, and a failed rename
  restores the previous `models.config`. A killed process may leave a
  `.partial-<hex>` directory behind, which TF Serving ignores and which may
  be deleted. The lock keeps `export_serving` calls apart; other programs
  writing the same directories are not locked out.
"""

import contextlib
import errno
import os
import re
import shutil
import uuid
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_probes import _files, _graph, _params, reducers
from keras_probes.model import ProbedModel
from keras_probes.solvers import NotFittedError
from keras_probes.tasks import Classification

__all__ = ["export_serving", "next_version", "serving_name"]

_WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"
_CONFIG = "models.config"
_LOCK = ".export.lock"
_MAX_VERSION = 2**63 - 1


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
    allow_unfitted: bool = False,
    allow_new_signatures: bool = False,
) -> Path:
    """Writes `probed` as a TensorFlow Serving model version.

    Args:
        probed: a `kp.ProbedModel` (or `kp.RegressionProbedModel`).
        base_dir: the model's directory in TF Serving's layout; versions are
            its integer-named sub-directories.
        version: the version to write. Defaults to `None`: the next free one
            when the version is published (exports racing into one
            `base_dir` each get their own).
        heads_only: serve the probe heads alone, over reduced features
            (`probed.extract_features(x)`), rather than the whole model over
            its input. Defaults to `False`.
        warmup: a few real inputs (a batch, as `probed.predict` takes them;
            with `heads_only`, a `{point: features}` dict) to record as
            warm-up requests, one request per signature. Defaults to `None`:
            one example of zeros of the input's shape (one token where the
            number of tokens is free).
        model_name: the model's name in the requests and in `models.config`.
            Defaults to the name of `base_dir`.
        server_root: where the server sees the directory holding `base_dir`,
            for `models.config`'s `base_path` (e.g. `"/models"` when it is
            mounted there in a container). Defaults to `None`: its absolute
            path here.
        allow_unfitted: export probes whose weights are all still zero, as
            initialised (never fitted: each serves the same answer for every
            input). Defaults to `False`: such probes are refused.
        allow_new_signatures: publish a version whose signatures (names,
            input and output keys, dtypes and shapes) differ from those of
            the latest version under `base_dir` (the highest one holding a
            `saved_model.pb`, compared when the version is published).
            Defaults to `False`: refused, since clients of the latest
            version break when the server moves to the new one.

    The signatures take the model's own inputs, with their dtypes: for a
    keras-hub backbone, its dict of token inputs (BERT's `padding_mask` is
    int32). A keras-hub task's preprocessor is not exported: requests carry
    what it gives (token ids, masks).

    Returns:
        The version's directory, `base_dir/<version>`.

    Raises:
        FileExistsError: the version exists already, or another export took
            it while this one was written (the message names the next free
            one).
        PermissionError, NotADirectoryError: `base_dir`, or the directory
            holding `models.config`, cannot be written (checked before any
            work).
        OSError: writing the version failed (TensorFlow's error, in one
            line), or `models.config` is a directory.
        ValueError: the existing `models.config` does not parse as a
            `ModelServerConfig`; the signatures differ from the latest
            version's (without `allow_new_signatures`).
        kp.solvers.NotFittedError: a probe was never fitted (without
            `allow_unfitted`; checked before any work).

    Example:

    ```python
    path = kp.export_serving(probed, "serving/probes")   # serving/probes/1
    served = tf.saved_model.load(str(path))
    served.signatures["serving_default"](inputs=tf.constant(x))
    ```
    """
    if not isinstance(probed, ProbedModel):
        raise TypeError(f"`probed` must be a kp.ProbedModel. Received: {type(probed).__name__}")
    valid = _params.Integer(
        1,
        _MAX_VERSION,
        description=f"an integer >= 1 and <= {_MAX_VERSION} (TF Serving's versions are int64)",
    )
    _params.check({"version": [valid, None]}, version=version)
    if not allow_unfitted:
        _check_fitted(probed)
    base_dir = Path(base_dir)
    _check_writable(base_dir)
    model_name = model_name or base_dir.resolve().name
    if version is not None:
        target = base_dir / str(int(version))
        if os.path.lexists(target):
            free = next_version(base_dir)
            raise FileExistsError(
                f"{target} exists: version {version} of {model_name!r} was exported already and "
                f"is never overwritten. The next free version is {free}: pass version={free}, "
                "or version=None."
            )
    base_dir.mkdir(parents=True, exist_ok=True)
    # Not an integer: TF Serving ignores it until it is renamed, complete.
    temporary = base_dir / f".partial-{uuid.uuid4().hex[:8]}"
    try:
        _write_version(temporary, probed, heads_only, warmup, model_name)
        return _publish(temporary, base_dir, version, model_name, server_root, allow_new_signatures)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _check_writable(base_dir):
    """Refuses, before any work, a `base_dir` whose version or `models.config` could not be
    written: each of the two directories, or the nearest one above it that exists."""
    resolved = base_dir.resolve()
    for directory in (resolved, resolved.parent):
        _files.check_writable(
            directory,
            f"Cannot export to {base_dir}",
            "Pass a directory path (versions are its sub-directories, models.config sits "
            "beside it).",
            why=", and the version and models.config are written there",
            received=f"base_dir={str(base_dir)!r}",
        )


def _check_fitted(probed):
    """Refuses probes whose weights are all still zero, as every head starts (heads.py): never
    fitted, they answer the same whatever the input. Fitting, `set_weights` and loading a
    `.keras` file all leave some weight nonzero."""
    unfitted = [
        point
        for point in probed.points
        if not any(np.any(w) for w in probed.get_probe(point).get_weights())
    ]
    if not unfitted:
        return
    answer = (
        "uniform probabilities and class 0"
        if isinstance(probed.task, Classification)
        else "predictions of 0"
    )
    probes, are, their, they = (
        ("The probe", "is", "its", "it")
        if len(unfitted) == 1
        else ("The probes", "are", "their", "they")
    )
    raise NotFittedError(
        f"{probes} at {unfitted} {are} not fitted: {their} weights are all zero, as initialised, "
        f"so {they} would serve {answer} for every input. Fit the probes first "
        "(`probed.fit(x, y)` or `kp.fit_probes(probed, cache)`; `keras-probes probe`, or "
        "`fit --save`), or pass allow_unfitted=True (--allow-unfitted) to export them as they "
        "are."
    )


def _write_version(directory, probed, heads_only, warmup, model_name):
    """The SavedModel and its warm-up requests in `directory`, fsynced; TensorFlow's errors as
    a one-line `OSError` (`PermissionError` for a denied write)."""
    signatures = _Signatures(probed, heads_only)
    archive = signatures.archive()
    try:
        archive.write_out(str(directory), verbose=False)
        _write_warmup(directory / _WARMUP, signatures, warmup, model_name)
    except tf.errors.OpError as error:
        kind = PermissionError if isinstance(error, tf.errors.PermissionDeniedError) else OSError
        first = next((line for line in error.message.splitlines() if line.strip()), "")
        raise kind(
            f"Writing the version to {directory} failed ({type(error).__name__}): {first.strip()}"
        ) from error
    _fsync_tree(directory)


def _publish(temporary, base_dir, version, model_name, server_root, allow_new_signatures):
    """Under the lock: picks the version, compares its signatures with the latest version's,
    updates `models.config`, renames `temporary` to the version (the commit point; on failure
    `models.config` is restored). Returns its path."""
    signatures = None if allow_new_signatures else _signatures_in(temporary, "the new version")
    config = base_dir.resolve().parent / _CONFIG
    with _export_lock(config.parent):
        free = next_version(base_dir)
        number = free if version is None else int(version)
        target = base_dir / str(number)
        if os.path.lexists(target):
            raise FileExistsError(_taken(target, number, model_name, free))
        if signatures is not None:
            _check_same_signatures(signatures, base_dir, number, model_name)
        old, new = _models_config(config, base_dir, model_name, server_root)
        if new != old:
            _files.atomic_write(config, new)
        try:
            os.rename(temporary, target)
        except BaseException as error:
            if new != old:
                _restore(config, old)
            if isinstance(error, OSError) and error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise FileExistsError(
                    _taken(target, number, model_name, next_version(base_dir))
                ) from error
            raise
        _files.fsync_directory(base_dir)
    return target


def _taken(target, version, model_name, free):
    return (
        f"{target} exists: version {version} of {model_name!r} was taken by another export "
        f"meanwhile (while this one was being written) and is never overwritten. The next "
        f"free version is {free}: pass version={free}, or version=None."
    )


def _signatures_in(directory, what):
    """`{signature: {"inputs": {key: "float32 [?,28,28,1]"}, "outputs": {...}}}` of the
    SavedModel in `directory`, read from its `saved_model.pb` alone (no variables loaded)."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    path = directory / "saved_model.pb"
    try:
        saved = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    except (OSError, DecodeError) as error:
        raise ValueError(
            f"Cannot read the signatures of {what} from {path} ({error}), so they cannot be "
            "compared. Fix or remove that version, or pass allow_new_signatures=True "
            "(--allow-new-signatures) to publish without comparing; no version was exported."
        ) from None

    def spec(info):
        dtype = tf.dtypes.as_dtype(info.dtype).name if info.dtype else "?"
        if info.tensor_shape.unknown_rank:
            return f"{dtype} [...]"
        dims = ",".join("?" if d.size < 0 else str(d.size) for d in info.tensor_shape.dim)
        return f"{dtype} [{dims}]"

    return {
        name: {
            side: {key: spec(info) for key, info in getattr(signature, side).items()}
            for side in ("inputs", "outputs")
        }
        for meta_graph in saved.meta_graphs
        for name, signature in meta_graph.signature_def.items()
        if not name.startswith("__")  # TensorFlow's own (__saved_model_init_op)
    }


def _check_same_signatures(signatures, base_dir, number, model_name):
    """Refuses, naming the first differences, `signatures` other than those of the latest
    version: the highest one holding a `saved_model.pb`, which clients call now."""
    versions = [p for p in base_dir.iterdir() if p.name.isdigit()] if base_dir.is_dir() else []
    versions = [p for p in versions if os.path.lexists(p / "saved_model.pb")]
    if not versions:
        return
    latest = max(versions, key=lambda p: int(p.name))
    before = _signatures_in(latest, f"version {latest.name}")
    differences = []
    names = sorted(before.keys() | signatures.keys())
    # serving_default first: what most clients call.
    for name in sorted(names, key=lambda name: name != "serving_default"):
        if name not in signatures:
            differences.append(f"{name} is gone")
        elif name not in before:
            differences.append(f"{name} is new")
        else:
            for side, verb in (("inputs", "takes"), ("outputs", "gives")):
                old, new = before[name][side], signatures[name][side]
                if old != new:
                    differences.append(f"{name} {verb} {_specs(new)} instead of {_specs(old)}")
    if not differences:
        return
    more = f" (and {len(differences) - 2} more)" if len(differences) > 2 else ""
    raise ValueError(
        f"The signatures differ from version {latest.name}'s, which clients of {model_name!r} "
        f"call: {'; '.join(differences[:2])}{more}. Version {number} would break them when the "
        "server moves to it. Export with the same settings (heads_only, points, the model's "
        "inputs) or into another model directory, or pass allow_new_signatures=True "
        "(--allow-new-signatures) to publish it as it is; no version was exported."
    )


def _specs(specs):
    return "{" + ", ".join(f"{key} {spec}" for key, spec in sorted(specs.items())) + "}"


@contextlib.contextmanager
def _export_lock(directory):
    """Exclusive, across processes and threads: one publication at a time per `models.config`
    (held for a rename and a small file write)."""
    with _files.locked(directory / _LOCK):
        yield


def _models_config(path, base_dir, model_name, server_root):
    """`(old text or None, new text)` of `models.config` with this model's entry added or
    updated; a file that cannot be read or parsed is an error naming it."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    old = None
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a directory, but TF Serving's models.config must be a file. Move the "
            "directory away, then export again; no version was exported."
        )
    if os.path.lexists(path):
        try:
            old = path.read_text()
            text_format.Parse(old, config)
        except (text_format.ParseError, UnicodeDecodeError) as error:
            raise ValueError(
                f"{path} is not a ModelServerConfig text proto ({error}), so the entry of "
                f"{model_name!r} cannot be added to it. Fix the file, or remove it to start a "
                "new one; no version was exported."
            ) from None
    entries = config.model_config_list.config
    entry = next((e for e in entries if e.name == model_name), None) or entries.add()
    entry.name = model_name
    root = path.parent if server_root is None else Path(server_root)
    entry.base_path = (root / base_dir.resolve().name).as_posix()
    entry.model_platform = "tensorflow"
    return old, text_format.MessageToString(config)


def _restore(path, old):
    """Puts back `models.config` as it was before (absent if it was), as far as possible."""
    with contextlib.suppress(OSError):
        if old is None:
            path.unlink(missing_ok=True)
        else:
            _files.atomic_write(path, old)


def _fsync_tree(directory):
    """Every file and directory of `directory` on disk, so that a rename publishes whole files
    even across a power loss."""
    for root, _, files in os.walk(directory):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        _files.fsync_directory(root)


class _Signatures:
    """The signature functions of one export, and their input specs."""

    def __init__(self, probed, heads_only):
        self.probed, self.heads_only = probed, heads_only
        self.names = {point: serving_name(point) for point in probed.points}
        if len(set(self.names.values())) < len(self.names):
            raise ValueError(
                f"Points {probed.points} give clashing serving names {list(self.names.values())}."
            )
        features = probed.feature_model.output
        if heads_only:
            self.specs = {
                # (batch, features), or (batch, tokens, features) for per-token probes
                self.names[p]: tf.TensorSpec(
                    (None, *features[p].shape[1:]), "float32", self.names[p]
                )
                for p in probed.points
            }
        else:
            structure = probed.feature_model.input
            inputs = keras.tree.flatten(structure)
            if isinstance(structure, dict):  # keras-hub: by key, in keras.tree's order
                keys = sorted(structure)
            else:
                keys = ["inputs"] if len(inputs) == 1 else [t.name for t in inputs]
            self.specs = {
                key: tf.TensorSpec(t.shape, t.dtype or "float32", key)
                for key, t in zip(keys, inputs, strict=True)
            }

    def _features(self, kwargs, points):
        if self.heads_only:
            return {p: kwargs[self.names[p]] for p in points}
        values = list(kwargs.values())
        if isinstance(self.probed.feature_model.input, dict):
            x = kwargs  # keras-hub backbones: {"token_ids": ..., "padding_mask": ...}
        else:
            x = values[0] if len(values) == 1 else values
        return self.probed.feature_model(x, training=False)

    def _outputs(self, point, features, prefix):
        return self.probed.task.serving_outputs(self.probed.get_probe(point), features, prefix)

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
                tf.function(_positional(function, specs), autograph=False),
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
            # One example; an axis of any length (tokens) gets one. Zeros, but for a
            # padding mask, whose one token must be kept: the masked reducers refuse a
            # sequence of padding alone, and TF Serving would not load a failing warm-up.
            return {
                key: (np.ones if key == reducers.PADDING_MASK else np.zeros)(
                    (1, *(d or 1 for d in spec.shape[1:])), spec.dtype.as_numpy_dtype
                )
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
        if self.probed.preprocessor is not None:
            # Raw inputs of a keras-hub task, as `predict` takes them: served preprocessed.
            warmup = next(iter(self.probed.preprocess(warmup)[0]))
        values = keras.tree.flatten(warmup)
        return {
            key: np.asarray(value, spec.dtype.as_numpy_dtype)
            for (key, spec), value in zip(self.specs.items(), values, strict=True)
        }


def _positional(function, specs):
    """`function(**inputs)` as a function of positional tensors, for a signature whose
    TensorSpec names become the input keys.

    Each tensor's shape is checked at run time against its spec: a loaded signature
    (`tf.saved_model.load`, TF Serving) runs on whatever it is fed, and an image of another
    size would flow through the graph and give rows of wrong numbers, or another number of
    them. `tf.ensure_shape` is the check that holds: an assertion on `tf.shape` is folded
    away by Python or Grappler wherever the (trusted) static shape is fully known.
    """

    def endpoint(*tensors):
        return function(
            **{
                key: tf.ensure_shape(tensor, spec.shape)
                for (key, spec), tensor in zip(specs.items(), tensors, strict=True)
            }
        )

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
