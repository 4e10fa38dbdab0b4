"""The feature cache's manifest: what a cache holds, for which model, and its checksums.

`manifest.json` is one JSON object, written with one-space indents in this
key order:

```
format, version                   "keras_probes.FeatureCache", 2
model      name, fingerprint, num_classes, layers: [{path, class, config, weights}]
probes     fingerprint, points, reducers: {point: serialized reducer}
points     {point: {dir, features}}
splits     {split: {batch_size, shard_size, dtype, complete,
                    shards: [{examples, input_sha256,
                              sha256: {point..., labels[, token_ids][, sequences]}}],
                    [pending: {index: shard}],       (while workers write out of order)
                    num_examples, data_fingerprint}}   (the last two once complete)
```

A cache of per-token probes (`reducers="tokens"`) holds a row per kept token,
each row's sequence (`sequences`: the index of its example in the split, so
that tokens of one sequence are resampled together) and, when the model has a
`token_ids` input, each row's token id (`token_ids`, e.g. for control tasks).
Per-token caches of keras-probes before the `sequences` column lack it; their
manifests read as before. Points are named as in the model the cache was
written from. The dataclasses
below mirror that object field for field, so that a manifest read and saved
again keeps its bytes. `Manifest.read` refuses a file that is not such an
object with a `CacheError` naming the file, what is wrong and how to rebuild.

The model's fingerprint is the sha256 of its computation: its layer configs
in graph order and its weights. Keras' auto-generated names (`conv2d_1`,
`functional_3`) and the compile state do not enter it: the same architecture
rebuilt with equal weights, or compiled, or loaded with `compile=False`, has
the same fingerprint. The probes' fingerprint is the sha256 of what turns the
base's layers into features: points by their position in graph order,
reducer configs without their names.
"""

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import keras
import numpy as np

from keras_probes import _files, _graph

__all__ = [
    "COLUMNS",
    "MANIFEST_FILE",
    "CacheError",
    "LayerRecord",
    "Manifest",
    "ModelRecord",
    "PointRecord",
    "ProbesRecord",
    "Shard",
    "SplitRecord",
    "is_plain_name",
]

MANIFEST_FILE = "manifest.json"
#: A shard's files beside its features, int32 per row: its labels and, in per-token
#: caches, the token ids and each row's sequence (its example's index in the split).
COLUMNS = ("labels", "token_ids", "sequences")
_FORMAT = "keras_probes.FeatureCache"
_VERSION = 2
# Splits and point directories are plain directory names: no path separators,
# no leading dot (".." would leave the cache; dot-names are the cache's own lock
# and temporary files).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class CacheError(ValueError):
    """A feature cache that must not be used: corrupt, incomplete or stale."""


def is_plain_name(name) -> bool:
    """Whether `name` can name a directory of the cache (a split's, a point's)."""
    return isinstance(name, str) and _PLAIN_NAME.fullmatch(name) is not None


@dataclasses.dataclass(frozen=True)
class LayerRecord:
    """One layer of the model, so that a fingerprint mismatch can name the layer."""

    path: str  # e.g. "submodel/conv1", nested sub-models stepped into
    class_name: str
    config: str  # sha256 of its canonical config
    weights: str  # sha256 of its weights

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "class": self.class_name,
            "config": self.config,
            "weights": self.weights,
        }


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """The model the features come from: its fingerprint, and its layers one by one."""

    name: str
    fingerprint: str
    num_classes: int | None
    layers: list[LayerRecord]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "num_classes": self.num_classes,
            "layers": [layer.to_dict() for layer in self.layers],
        }

    @classmethod
    def of(cls, base: keras.Model, num_classes: int | None = None) -> "ModelRecord":
        """The record of the model `base` (see the module docstring), probed for
        `num_classes` classes (`None`: regression probes, or not probed yet)."""
        return _model_record(base, _graph.trace(base).layers, num_classes)

    def difference(self, given: "ModelRecord") -> str:
        """Which layer of `given` differs from this model, in words."""
        if len(self.layers) != len(given.layers):
            return f"it has {len(given.layers)} layers, the cache's model {len(self.layers)}"
        for old, new in zip(self.layers, given.layers, strict=True):
            layer = f"layer {new.path!r} ({new.class_name}"
            if old.class_name != new.class_name:
                return f"{layer}) stands where the cache's model has a {old.class_name}"
            if old.config != new.config:
                return f"{layer}) has another config"
            if old.weights != new.weights:
                return f"{layer}) has other weights"
        return "its layers are wired differently"


@dataclasses.dataclass(frozen=True)
class ProbesRecord:
    """What turns the model's layers into features: points and reducers."""

    fingerprint: str
    points: list[str]
    reducers: dict[str, dict]  # {point: serialized reducer layer}

    def to_dict(self) -> dict:
        return {"fingerprint": self.fingerprint, "points": self.points, "reducers": self.reducers}

    def difference(self, given: "ProbesRecord") -> str:
        """The first point or reducer of `given` that differs from these, in a few words
        (never a whole config)."""
        if len(self.points) != len(given.points):
            return (
                f"the model given probes {len(given.points)} points, the cache "
                f"{len(self.points)} ({_names(self.points)})"
            )
        pairs = list(zip(self.points, given.points, strict=True))
        for old, new in pairs:
            recorded, wanted = self.reducers[old], given.reducers[new]
            kind, other = recorded.get("class_name"), wanted.get("class_name")
            if kind != other:
                return (
                    f"point {new!r} is reduced by {other} in the model given, by {kind} in "
                    "the cache"
                )
            recorded, wanted = recorded.get("config", {}), wanted.get("config", {})
            for key in sorted({*recorded, *wanted} - {"name"}):
                if recorded.get(key) != wanted.get(key):
                    return (
                        f"the {kind} reducer of point {new!r} has {key}="
                        f"{_brief(wanted.get(key))} in the model given, {key}="
                        f"{_brief(recorded.get(key))} in the cache"
                    )
        for old, new in pairs:
            if old != new:
                return f"the model given probes {new!r} where the cache probes {old!r}"
        return "the model given probes other layers under the same names"


@dataclasses.dataclass(frozen=True)
class PointRecord:
    """Where a point's features lie (a directory name) and how many there are per example."""

    dir: str
    features: int

    def to_dict(self) -> dict:
        return {"dir": self.dir, "features": self.features}


@dataclasses.dataclass
class Shard:
    """One shard of a split, as committed: its examples and its files' checksums."""

    examples: int
    input_sha256: str  # of the inputs and labels it was computed from
    sha256: dict[str, str]  # {point: sha256 of its features file, "labels": ..., columns}

    def to_dict(self) -> dict:
        return {"examples": self.examples, "input_sha256": self.input_sha256, "sha256": self.sha256}


@dataclasses.dataclass
class SplitRecord:
    """One split: the settings it is computed with, and its shards written so far."""

    batch_size: int
    shard_size: int
    dtype: str
    complete: bool = False
    shards: list[Shard] = dataclasses.field(default_factory=list)
    # Shards committed ahead of a missing one (workers finish in any order):
    # {index: shard}, each moved into `shards` once every shard before it is there.
    pending: dict[int, Shard] = dataclasses.field(default_factory=dict)
    # Set when the split is complete (and kept if a damaged shard makes it incomplete again).
    num_examples: int | None = None
    data_fingerprint: str | None = None

    @property
    def settings(self) -> dict:
        """`{batch_size, shard_size, dtype}`: what a resume must be given again."""
        return {"batch_size": self.batch_size, "shard_size": self.shard_size, "dtype": self.dtype}

    def shard(self, index: int) -> Shard | None:
        """Shard `index` as committed, or `None` if it is not (yet)."""
        return self.shards[index] if index < len(self.shards) else self.pending.get(index)

    @property
    def indices(self) -> list[int]:
        """The indices of every committed shard, in order."""
        return [*range(len(self.shards)), *sorted(self.pending)]

    def inputs_sha256(self) -> str:
        """The sha256 of the shards' `input_sha256`, in order: of the split's inputs and
        labels, not of the model (`data_fingerprint`, once the split is complete)."""
        return hashlib.sha256(
            "".join(shard.input_sha256 for shard in self.shards).encode()
        ).hexdigest()

    def add(self, index: int, shard: Shard) -> None:
        """Commits shard `index` (in memory), in whatever order shards arrive."""
        self.pending[index] = shard
        while len(self.shards) in self.pending:
            self.shards.append(self.pending.pop(len(self.shards)))

    def forget(self, index: int) -> None:
        """Drops shard `index` (a damaged one); the shards after it stay, pending."""
        if index < len(self.shards):
            later = self.shards[index + 1 :]
            self.pending.update({index + 1 + i: shard for i, shard in enumerate(later)})
            del self.shards[index:]
        self.pending.pop(index, None)
        self.complete = False

    def to_dict(self) -> dict:
        record = {
            **self.settings,
            "complete": self.complete,
            "shards": [shard.to_dict() for shard in self.shards],
        }
        if self.pending:
            record["pending"] = {str(i): self.pending[i].to_dict() for i in sorted(self.pending)}
        if self.num_examples is not None:
            record["num_examples"] = self.num_examples
        if self.data_fingerprint is not None:
            record["data_fingerprint"] = self.data_fingerprint
        return record


@dataclasses.dataclass
class Manifest:
    """A cache's manifest: the model and probes its features are of, and its splits.

    Example:

    ```python
    manifest = Manifest.read(Path("cache/"))  # CacheError if missing or damaged
    fresh = Manifest.for_model(probed)
    manifest.identity_problem(fresh.model, fresh.probes)  # None: same model
    manifest.check_shard(Path("cache/"), "train", 0)  # CacheError if a file is bad
    ```
    """

    model: ModelRecord
    probes: ProbesRecord
    points: dict[str, PointRecord]
    splits: dict[str, SplitRecord]

    @classmethod
    def for_model(cls, probed) -> "Manifest":
        """The manifest of an empty cache for `probed`: its identity, no split yet."""
        features = probed.feature_model.output
        model, probes = _identity(probed)
        points = {
            point: PointRecord(
                dir=f"{i:03d}_{_graph.safe_name(point)}", features=int(features[point].shape[-1])
            )
            for i, point in enumerate(probed.points)
        }
        return cls(model=model, probes=probes, points=points, splits={})

    @classmethod
    def read(cls, directory: Path) -> "Manifest":
        """The manifest of the cache at `directory`.

        Raises:
            CacheError: no manifest, or one that is not JSON, of another
                format or version, or missing a record. The message names the
                file and how to rebuild the cache.
        """
        path = directory / MANIFEST_FILE
        if directory.exists() and not directory.is_dir():
            raise CacheError(
                f"{directory} is a file, not a feature cache directory. Pass the directory "
                "that kp.FeatureCache.write wrote."
            )
        if not path.exists():
            raise CacheError(
                f"No feature cache at {directory}: {path} does not exist. Write one with "
                f"kp.FeatureCache.write(probed, data, {str(directory)!r}, split='train')."
            )
        manifest = _files.read_json(
            path,
            "The manifest",
            f"Delete {directory} and write the cache again.",
            error=CacheError,
        )
        if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
            raise CacheError(f"{path} is not a keras-probes feature cache manifest.")
        if manifest.get("version") != _VERSION:
            raise CacheError(
                f"{path} has format version {manifest.get('version')}; this keras-probes reads "
                f"version {_VERSION}. Write the cache again."
            )
        problem = _manifest_problem(manifest)
        if problem:
            raise CacheError(
                f"The manifest {path} is incomplete or damaged ({problem}). Delete {directory} "
                "and write the cache again."
            )
        return cls._from_dict(manifest)

    @classmethod
    def _from_dict(cls, manifest: dict) -> "Manifest":
        model, probes = manifest["model"], manifest["probes"]
        layers = [
            LayerRecord(r["path"], r["class"], r["config"], r["weights"]) for r in model["layers"]
        ]
        splits = {
            name: SplitRecord(
                batch_size=record["batch_size"],
                shard_size=record["shard_size"],
                dtype=record["dtype"],
                complete=record["complete"],
                shards=[_shard(shard) for shard in record["shards"]],
                pending={int(i): _shard(shard) for i, shard in record.get("pending", {}).items()},
                num_examples=record.get("num_examples"),
                data_fingerprint=record.get("data_fingerprint"),
            )
            for name, record in manifest["splits"].items()
        }
        return cls(
            model=ModelRecord(model["name"], model["fingerprint"], model["num_classes"], layers),
            probes=ProbesRecord(probes["fingerprint"], probes["points"], probes["reducers"]),
            points={
                point: PointRecord(entry["dir"], entry["features"])
                for point, entry in manifest["points"].items()
            },
            splits=splits,
        )

    def to_dict(self) -> dict:
        """The manifest as the JSON object on disk, keys in their order there."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "model": self.model.to_dict(),
            "probes": self.probes.to_dict(),
            "points": {point: entry.to_dict() for point, entry in self.points.items()},
            "splits": {split: record.to_dict() for split, record in self.splits.items()},
        }

    def save(self, directory: Path) -> None:
        """Replaces the manifest of the cache at `directory` atomically."""
        _files.atomic_write(
            directory / MANIFEST_FILE, json.dumps(self.to_dict(), indent=1).encode()
        )

    @property
    def fingerprints(self) -> tuple[str, str]:
        """The model's and the probes' fingerprint: the features' identity."""
        return self.model.fingerprint, self.probes.fingerprint

    def identity_problem(
        self, model: ModelRecord, probes: ProbesRecord | None = None
    ) -> str | None:
        """Why this cache does not hold the features of a model, in a few words.

        Args:
            model: the model's record (`Manifest.for_model(probed).model`, or
                `ModelRecord.of(base)`).
            probes: its probes' record. Defaults to `None`: the model alone
                is checked (its architecture and weights).

        Returns:
            `None` when it does; else the end of a sentence that begins "The
            feature cache at <directory> ...", naming the first difference.
        """
        if self.model.fingerprint != model.fingerprint:
            return (
                f"was written from another model, {self.model.name!r}; the model given, "
                f"{model.name!r}, differs: {self.model.difference(model)}."
            )
        if probes is not None and self.probes.fingerprint != probes.fingerprint:
            return f"holds other probe points or reducers: {self.probes.difference(probes)}."
        # Regression probes (no classes) read any cache of their base, points and reducers.
        old, new = self.model.num_classes, model.num_classes
        if new is not None and old != new:
            return (
                f"was written for probes of num_classes={old} (its labels were checked "
                f"against that number); the model given has num_classes={new}."
            )
        return None

    def shard_path(
        self,
        directory: Path,
        split: str,
        index: int,
        point: str | None = None,
        column: str = "labels",
    ) -> Path:
        """A file of shard `index` of `split`: `point`'s features (as recorded), or, for
        no point, `column` (one of `COLUMNS`)."""
        name = f"shard-{index:05d}.npy"
        if point is None:
            return directory / split / column / name
        return directory / split / "features" / self.points[point].dir / name

    def check_shard(self, directory: Path, split: str, index: int) -> None:
        """Checks that every file of a shard exists and has its recorded sha256.

        Raises:
            CacheError: naming the first missing or corrupt file, and how to
                rebuild it.
        """
        checksums = self.splits[split].shard(index).sha256
        rebuild = (
            f"Rebuild it: kp.FeatureCache.write(probed, data, {str(directory)!r}, "
            f"split={split!r}) keeps the intact shards and rewrites from the first bad one."
        )
        files = [(point, "labels") for point in self.probes.points]
        files += [(None, column) for column in COLUMNS if column in checksums]
        for point, column in files:
            path = self.shard_path(directory, split, index, point, column)
            expected = checksums[column if point is None else point]
            if not path.exists():
                raise CacheError(
                    f"Feature cache file {path} is missing (shard {index} of split "
                    f"{split!r}). {rebuild}"
                )
            actual = _file_sha256(path)
            if actual != expected:
                raise CacheError(
                    f"Feature cache file {path} is corrupt: its sha256 is {actual[:16]}, "
                    f"{directory / MANIFEST_FILE} records {expected[:16]}. {rebuild}"
                )


# What a manifest must hold: {key: type} per record; splits, shards and points one by one.
_MANIFEST_FIELDS = {
    "model": {"name": str, "fingerprint": str, "num_classes": int | None, "layers": list},
    "probes": {"fingerprint": str, "points": list, "reducers": dict},
    "points": dict,
    "splits": dict,
}
_LAYER_FIELDS = {"path": str, "class": str, "config": str, "weights": str}
_POINT_FIELDS = {"dir": str, "features": int}
_SPLIT_FIELDS = {
    "batch_size": int,
    "shard_size": int,
    "dtype": str,
    "complete": bool,
    "shards": list,
}
_SHARD_FIELDS = {"examples": int, "input_sha256": str, "sha256": dict}
# Columns a shard may lack: those of per-token caches only.
_OPTIONAL_COLUMNS = {"token_ids", "sequences"}


def _shard(record: dict) -> Shard:
    return Shard(record["examples"], record["input_sha256"], record["sha256"])


def _missing(record, fields: dict) -> str | None:
    """The first of `fields` that `record` lacks or holds with another type, or None."""
    for field, kind in fields.items():
        if not isinstance(record, dict) or field not in record:
            return field
        if not isinstance(record[field], kind):
            return field
    return None


def _manifest_problem(manifest: dict) -> str | None:
    """What is missing or malformed in a manifest that parsed as JSON, or None."""
    for key, fields in _MANIFEST_FIELDS.items():
        value = manifest.get(key)
        if not isinstance(value, dict):
            return f"no {key!r} record"
        if fields is not dict:
            field = _missing(value, fields)
            if field:
                return f"no {key}.{field}"
    if any(_missing(layer, _LAYER_FIELDS) for layer in manifest["model"]["layers"]):
        return "a layer record without its path, class, config or weights"
    points = manifest["probes"]["points"]
    for point in points:
        if not isinstance(point, str) or point not in manifest["points"]:
            return f"no directory for point {point!r}"
        if point not in manifest["probes"]["reducers"]:
            return f"no reducer for point {point!r}"
    for point, entry in manifest["points"].items():
        if not isinstance(entry, dict) or not is_plain_name(entry.get("dir")):
            return f"no directory for point {point!r}"
        if _missing(entry, _POINT_FIELDS):
            return f"no feature count for point {point!r}"
    for split, record in manifest["splits"].items():
        if not is_plain_name(split):
            return f"a split named {split!r}"
        field = _missing(record, _SPLIT_FIELDS)
        if field:
            return f"no {field} in split {split!r}"
        pending = record.get("pending", {})
        if not isinstance(pending, dict) or not all(
            i.isdigit() and int(i) > len(record["shards"]) for i in pending
        ):
            return f"a pending shard of split {split!r} without its index"
        for shard in [*record["shards"], *pending.values()]:
            checksums = shard.get("sha256") if isinstance(shard, dict) else None
            if not isinstance(checksums, dict) or set(checksums) - _OPTIONAL_COLUMNS != {
                *points,
                "labels",
            }:
                return f"a shard of split {split!r} without its checksums"
            field = _missing(shard, _SHARD_FIELDS)
            if field:
                return f"a shard of split {split!r} without its {field}"
    return None


def _identity(probed) -> tuple[ModelRecord, ProbesRecord]:
    """The manifest's records of the model and of the probes (see the module docstring).

    The model record holds, besides the fingerprint, the classes and one entry
    per layer (graph order, nested sub-models stepped into) with its path,
    class, and the sha256 of its config and of its weights. The probes record
    holds the point names and reducer configs.
    """
    layers = _graph.trace(probed.base).layers
    model = _model_record(probed.base, layers, probed.num_classes)
    reducers = {p: keras.saving.serialize_keras_object(r) for p, r in probed.reducers.items()}
    position = {path: f"#{index}" for index, path in enumerate(layers)}
    probes = ProbesRecord(
        fingerprint=_sha256_json(
            [
                [
                    position[point],
                    _canonical(reducers[point], {reducers[point]["config"]["name"]: ""}),
                ]
                for point in probed.points
            ]
        ),
        points=list(probed.points),
        reducers=reducers,
    )
    return model, probes


def _model_record(base, layers: dict, num_classes) -> ModelRecord:
    """The model record of `base`, whose layers by path (graph order) are `layers`."""
    # Every layer name becomes its position in graph order, wherever a config
    # names it (its own "name", the wiring of a Functional model).
    names = {}
    for index, layer in enumerate(layers.values()):
        names.setdefault(layer.name, f"#{index}")
    names.setdefault(base.name, "#model")
    records = [
        LayerRecord(
            path=path,
            class_name=type(layer).__name__,
            config=_sha256_json(_canonical(layer.get_config(), names)),
            weights=_weights_sha256(layer),
        )
        for path, layer in layers.items()
        # A sub-model's layers, and an unrolled layer's, are recorded one by one.
        if not (_graph.is_graph_model(layer) or _graph.is_unrolled(layer))
    ]
    architecture = _canonical(keras.saving.serialize_keras_object(base), names)
    identity = [{"class": r.class_name, "config": r.config, "weights": r.weights} for r in records]
    return ModelRecord(
        name=base.name,
        fingerprint=_sha256_json({"architecture": architecture, "layers": identity}),
        num_classes=num_classes,
        layers=records,
    )


def _names(names: list[str], shown: int = 3) -> str:
    """`names` for a message: the first `shown`, then how many more."""
    more = f", ... {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _brief(value, length: int = 40) -> str:
    """`repr(value)`, cut to `length` characters for a message."""
    text = repr(value)
    return text if len(text) <= length else text[: length - 3] + "..."


# State of a model that does not change what it computes.
_NOT_COMPUTATION = ("compile_config",)


def _canonical(config, names):
    """`config` with every layer name replaced by its position and compile state dropped."""
    if isinstance(config, dict):
        canonical = {}
        for key, value in config.items():
            if key in _NOT_COMPUTATION:
                continue
            if key == "name" and isinstance(value, str):
                canonical[key] = names.get(value, value)
            elif key == "keras_history" and isinstance(value, list | tuple) and value:
                canonical[key] = [names.get(value[0], value[0]), *value[1:]]
            elif key in ("input_layers", "output_layers"):
                canonical[key] = keras.tree.map_structure(
                    lambda v: names.get(v, v) if isinstance(v, str) else v, value
                )
            else:
                canonical[key] = _canonical(value, names)
        return canonical
    if isinstance(config, list | tuple):
        return [_canonical(value, names) for value in config]
    return config


def _weights_sha256(layer) -> str:
    digest = hashlib.sha256()
    # Functional graphs also hold plain operations (`x[:, 0]` is a `GetItem`): no weights.
    for variable in getattr(layer, "weights", ()):
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
