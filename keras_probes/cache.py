"""`FeatureCache`: every probe point's features on disk, written once, verified on use.

Alain & Bengio (Appendix B) extract features once, because re-running the
base for every probe epoch costs far more than reading features back. Here a
cache is a directory:

```
cache/
  manifest.json                        fingerprints, shapes, dtypes, shards, checksums
  .lock, .write-<split>.lock           the manifest's lock, each split writer's lock
  train/labels/shard-00000.npy         (n,) int32
  train/features/000_conv1_relu/shard-00000.npy  (n, features), memory-mappable
  ...
```

What its bytes depend on: the model (its computation: layer configs in graph
order and weights, never Keras' auto-generated names or a compile state), the
data, `batch_size`, `shard_size` and `dtype`. Every batch is computed at
exactly `batch_size` rows (the last one padded, then trimmed), one batch per
replica under a `tf.distribute` strategy, so the bytes are the same for any
replica count and on a resume, on one machine. Another batch size, or another
CPU's kernels, gives the same features within float32 rounding only.

What a reader sees at every instant, and what two writers do:

- `manifest.json` is the commit record, replaced atomically (written aside,
  fsynced, renamed). A shard file is written the same way, and counts only
  once the manifest lists it: readers see the old manifest or the new one,
  never a half-written shard.
- The manifest is created before the first shard, so a run killed at any
  moment (SIGKILL included), or stopped by an error, resumes from the first
  missing shard and ends with the bytes of an uninterrupted run.
- Every manifest update re-reads it under an exclusive lock (`.lock`) and
  replaces only its own split's record: writers of different splits, in
  different processes, work side by side and every split is kept.
- A second writer of the same split is refused at once (`.write-<split>.lock`,
  held for the whole write); the kernel releases both locks when a process
  dies, so no lock outlives its writer.
"""

import contextlib
import fcntl
import hashlib
import io
import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_probes import _distribute, _files, _graph, _validation

__all__ = ["FeatureCache", "CacheError"]

_FORMAT = "keras_probes.FeatureCache"
_VERSION = 2
_MANIFEST = "manifest.json"
_LOCK = ".lock"
_SHARD_EXAMPLES = 4096
_DTYPES = ("float32", "float16")
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_FLOAT16_TINY = float(np.finfo(np.float16).tiny)  # smallest normal, 2**-14
# Splits and point directories are plain directory names: no path separators,
# no leading dot (".." would leave the cache; dot-names are the cache's own lock
# and temporary files). A split name is also short: the user types it.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_MAX_SPLIT_NAME = 100


class CacheError(ValueError):
    """A feature cache that must not be used: corrupt, incomplete or stale."""


def _identity(probed) -> tuple[dict, dict]:
    """The manifest's records of the model and of the probes.

    The model's fingerprint is the sha256 of its computation: its layer
    configs in graph order and its weights. Keras' auto-generated names
    (`conv2d_1`, `functional_3`) and the compile state do not enter it: the
    same architecture rebuilt with equal weights, or compiled, or loaded with
    `compile=False`, has the same fingerprint. The record also holds the
    classes and one entry per layer (graph order, nested sub-models stepped
    into) with its path, class, and the sha256 of its config and of its
    weights, so that a mismatch can name the layer that differs.

    The probes' fingerprint is the sha256 of what turns the base's layers into
    features: points by their position in graph order, reducer configs
    without their names. The record also holds the point names and reducer
    configs.
    """
    base = probed.base
    layers = _graph.trace(base).layers
    # Every layer name becomes its position in graph order, wherever a config
    # names it (its own "name", the wiring of a Functional model).
    names = {}
    for index, layer in enumerate(layers.values()):
        names.setdefault(layer.name, f"#{index}")
    names.setdefault(base.name, "#model")
    records = [
        {
            "path": path,
            "class": type(layer).__name__,
            "config": _sha256_json(_canonical(layer.get_config(), names)),
            "weights": _weights_sha256(layer),
        }
        for path, layer in layers.items()
        if not _graph.is_graph_model(layer)  # a sub-model's layers are recorded one by one
    ]
    architecture = _canonical(keras.saving.serialize_keras_object(base), names)
    identity = [{k: r[k] for k in ("class", "config", "weights")} for r in records]
    model = {
        "name": base.name,
        "fingerprint": _sha256_json({"architecture": architecture, "layers": identity}),
        "num_classes": probed.num_classes,
        "layers": records,
    }
    reducers = _reducer_configs(probed)
    position = {path: f"#{index}" for index, path in enumerate(layers)}
    probes = {
        "fingerprint": _sha256_json(
            [
                [
                    position[point],
                    _canonical(reducers[point], {reducers[point]["config"]["name"]: ""}),
                ]
                for point in probed.points
            ]
        ),
        "points": probed.points,
        "reducers": reducers,
    }
    return model, probes


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
    for variable in layer.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _model_difference(recorded: dict, given: dict) -> str:
    """Which layer of `given` differs from the `recorded` model, in words."""
    before, after = recorded["layers"], given["layers"]
    if len(before) != len(after):
        return f"it has {len(after)} layers, the cache's model {len(before)}"
    for old, new in zip(before, after, strict=True):
        layer = f"layer {new['path']!r} ({new['class']}"
        if old["class"] != new["class"]:
            return f"{layer}) stands where the cache's model has a {old['class']}"
        if old["config"] != new["config"]:
            return f"{layer}) has another config"
        if old["weights"] != new["weights"]:
            return f"{layer}) has other weights"
    return "its layers are wired differently"


def _reducer_configs(probed):
    return {p: keras.saving.serialize_keras_object(r) for p, r in probed.reducers.items()}


def _sha256_json(value):
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class FeatureCache:
    """Features of every probe point, extracted once and stored on disk.

    Make one with `FeatureCache.write` (one call per split, into the same
    directory), read one with `FeatureCache.open`. Opening verifies every
    shard's checksum and, given the model, that the cache was written from
    that very model (architecture, weights, points and reducers).

    Example:

    ```python
    probed = kp.ProbedModel(base, points="resnet50", num_classes=10)
    kp.FeatureCache.write(probed, (x, y), "cache/", split="train")
    kp.FeatureCache.write(probed, val_dataset, "cache/", split="val")
    cache = kp.FeatureCache.open("cache/", model=probed)
    features, labels = cache.arrays("train")   # {point: (n, features)}, (n,)
    report = kp.fit_probes(probed, cache, solver="lbfgs", l2=1e-4)
    ```
    """

    def __init__(self, directory, manifest):
        self.directory = Path(directory)
        self._manifest = manifest
        # {point name as the reader calls it: point name in the manifest}. A
        # model of the same computation may name its layers otherwise (Keras'
        # auto-generated names): once checked, the cache answers to its names.
        self._recorded = {p: p for p in manifest["probes"]["points"]}

    # -- writing -------------------------------------------------------------

    @classmethod
    def write(
        cls,
        probed,
        data,
        directory,
        split: str = "train",
        *,
        batch_size: int = 64,
        shard_size: int | None = None,
        dtype: str = "float32",
        overwrite: bool = False,
        verbose: int = 1,
    ) -> "FeatureCache":
        """Extracts the features of every probe point over `data`, in one pass.

        Runs the probed model's feature side only (base and reducers, no
        heads; the base in inference mode) and writes one shard of
        `shard_size` examples at a time. Called again on a partly written
        split, it checks that the shards already there are intact and come
        from the same inputs, then resumes from the first missing one. Runs
        under any active `tf.distribute` strategy, each replica extracting
        its slice of every batch; the files are the same as without one.

        Args:
            probed: the `kp.ProbedModel` whose points and reducers to extract.
            data: `(x, y)` arrays, or a `tf.data.Dataset` of batched
                `(inputs, labels)` (TFDS with `as_supervised=True`).
            directory: the cache directory; splits accumulate in it.
            split: name of the split, e.g. `"train"`, `"val"`, `"test"`.
                Defaults to `"train"`.
            batch_size: examples per forward pass. Defaults to `64`.
            shard_size: examples per shard file, a multiple of `batch_size`.
                Defaults to the multiple closest above 4096.
            dtype: storage dtype, `"float32"` or `"float16"` (half the disk
                and reading time; features beyond float16's range are an
                error). Defaults to `"float32"`.
            overwrite: rewrite the split from scratch, e.g. after its data
                changed. Defaults to `False`.
            verbose: `1` shows a progress bar (examples, shards, images/s),
                `0` nothing. Defaults to `1`.

        Returns:
            The cache, opened.
        """
        if shard_size is None and isinstance(batch_size, int):
            shard_size = batch_size * math.ceil(_SHARD_EXAMPLES / max(batch_size, 1))
        _check_write_args(split, batch_size, shard_size, dtype)
        directory = Path(directory)
        settings = {"batch_size": batch_size, "shard_size": shard_size, "dtype": dtype}
        fresh = _new_manifest(probed)
        directory.mkdir(parents=True, exist_ok=True)
        with _split_lock(directory, split):
            with _manifest_lock(directory):
                manifest = _begin_split(directory, fresh, split, settings, overwrite)
            cache = cls(directory, manifest)
            cache._answer_to(probed)
            _Writer(cache, probed, split, verbose).run(data)
        cache = cls(directory, _read_manifest(directory))
        cache._answer_to(probed)
        return cache

    # -- opening and verifying -------------------------------------------------

    @classmethod
    def open(cls, directory, model=None, verify: bool = True) -> "FeatureCache":
        """Opens a cache, refusing it when it is corrupt or stale.

        Args:
            directory: a directory written by `FeatureCache.write`.
            model: the `kp.ProbedModel` the features are for. When given, the
                cache must have been written from the same architecture,
                weights, points and reducers. Defaults to `None` (no check).
            verify: check every shard file's sha256 against the manifest.
                Defaults to `True`.

        Returns:
            The cache.

        Raises:
            CacheError: a missing or unreadable manifest, a missing shard, a
                checksum mismatch, or a cache of another model. The message
                names the file and how to rebuild.
        """
        directory = Path(directory)
        cache = cls(directory, _read_manifest(directory))
        if model is not None:
            cache.check_model(model)
        if verify:
            cache.verify()
        return cache

    def check_model(self, probed):
        """Raises `CacheError` unless this cache was written from `probed`.

        The same computation is accepted whatever its layers' auto-generated
        names or compile state; another layer config, another weight, other
        points or reducers, or another number of classes is refused, and the
        message says which.
        """
        problem = _identity_problem(self._manifest, _new_manifest(probed), self._manifest_path)
        if problem:
            raise CacheError(
                f"The feature cache at {self.directory} {problem} {self._rebuild_hint()}"
            )
        self._answer_to(probed)

    def _answer_to(self, probed):
        """Reads with `probed`'s point names from now on (same points, checked)."""
        self._recorded = dict(zip(probed.points, self._manifest["probes"]["points"], strict=True))

    def verify(self, split: str | None = None):
        """Checks that every shard file exists and has its recorded sha256.

        Raises:
            CacheError: naming the first missing or corrupt file.
        """
        for name in self.splits if split is None else [split]:
            for index in range(len(self._split(name)["shards"])):
                self._check_shard(name, index)

    def _check_shard(self, split, index):
        for path, expected in self._shard_files(split, index).items():
            if not path.exists():
                raise CacheError(
                    f"Feature cache file {path} is missing (shard {index} of split "
                    f"{split!r}). {self._rebuild_hint(split)}"
                )
            actual = _file_sha256(path)
            if actual != expected:
                raise CacheError(
                    f"Feature cache file {path} is corrupt: its sha256 is {actual[:16]}, "
                    f"{self._manifest_path} records {expected[:16]}. "
                    f"{self._rebuild_hint(split)}"
                )

    def _rebuild_hint(self, split=None):
        if split is None:
            return (
                "Delete the directory, or write a new cache there: "
                f"kp.FeatureCache.write(probed, data, {str(self.directory)!r}, split=...)."
            )
        return (
            f"Rebuild it: kp.FeatureCache.write(probed, data, {str(self.directory)!r}, "
            f"split={split!r}) keeps the intact shards and rewrites from the first bad one."
        )

    # -- reading ---------------------------------------------------------------

    @property
    def points(self) -> list[str]:
        """The probe points, input side first."""
        return list(self._recorded)

    @property
    def splits(self) -> list[str]:
        """The splits written so far (complete or not), in writing order."""
        return list(self._manifest["splits"])

    @property
    def complete_splits(self) -> list[str]:
        """The splits written to the end, the ones that can be read."""
        return [s for s, record in self._manifest["splits"].items() if record["complete"]]

    @property
    def num_classes(self) -> int:
        """The number of classes of the probes the cache was written for."""
        return self._manifest["model"]["num_classes"]

    @property
    def reducers(self) -> dict:
        """`{point: reducer layer}` as recorded, e.g. to rebuild the `ProbedModel`."""
        return {
            point: keras.saving.deserialize_keras_object(
                self._manifest["probes"]["reducers"][recorded]
            )
            for point, recorded in self._recorded.items()
        }

    @property
    def feature_sizes(self) -> dict[str, int]:
        """`{point: number of features}`."""
        return {p: self._manifest["points"][r]["features"] for p, r in self._recorded.items()}

    def num_examples(self, split: str) -> int:
        return sum(shard["examples"] for shard in self._complete_split(split)["shards"])

    def shards(self, split: str, mmap: bool = True):
        """Yields `({point: features}, labels)` one shard at a time, memory-mapped.

        What streaming readers (the L-BFGS solver) iterate over: at most one
        shard per point is read at once.
        """
        self._complete_split(split)
        for index in range(len(self._split(split)["shards"])):
            yield self._load_shard(split, index, mmap)

    def arrays(
        self, split: str, points: list[str] | None = None
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The whole split in memory: `({point: (n, features)}, labels (n,))`.

        Args:
            split: the split to read.
            points: the points to read. Defaults to all of them.

        Features keep their storage dtype (float32 or float16).
        """
        points = self.points if points is None else list(points)
        unknown = [p for p in points if p not in self.points]
        if unknown:
            raise ValueError(f"No points {unknown} in this cache; it has {self.points}.")
        parts = list(self.shards(split, mmap=True))
        features = {p: np.concatenate([f[p] for f, _ in parts]) for p in points}
        return features, np.concatenate([labels for _, labels in parts])

    def dataset(
        self,
        split: str,
        batch_size: int = 256,
        shuffle: bool = False,
        seed: int | None = None,
        shuffle_buffer: int | None = None,
    ) -> tf.data.Dataset:
        """A `tf.data.Dataset` of `({point: float32 features}, labels)` batches.

        Shards are read in parallel straight from their `.npy` files, so an
        epoch runs at disk speed. With `shuffle`, the shard order and the
        examples (within a buffer of `shuffle_buffer`, by default two shards)
        are reshuffled every epoch, from `seed`.

        Args:
            split: the split to read.
            batch_size: examples per batch. Defaults to `256`.
            shuffle: whether to shuffle. Defaults to `False`.
            seed: seed of the shuffles. Defaults to `None`.
            shuffle_buffer: examples in the shuffle buffer. Defaults to two
                shards' worth.
        """
        record = self._complete_split(split)
        points, dtype, sizes = self.points, record["dtype"], self.feature_sizes
        signature = (
            *(tf.TensorSpec((None, sizes[p]), dtype) for p in points),
            tf.TensorSpec((None,), tf.int32),
        )

        def load(index):
            features, labels = self._load_shard(split, int(index), mmap=False)
            return [features[p] for p in points] + [labels]

        def read(index):
            tensors = tf.numpy_function(load, [index], [s.dtype for s in signature])
            for tensor, spec in zip(tensors, signature, strict=True):
                tensor.set_shape(spec.shape)
            return tf.data.Dataset.from_tensor_slices(tuple(tensors))

        num_shards = len(record["shards"])
        dataset = tf.data.Dataset.range(num_shards)
        if shuffle:
            dataset = dataset.shuffle(num_shards, seed=seed, reshuffle_each_iteration=True)
        # Several shards are read at once; unshuffled, each is taken whole in
        # turn (the examples keep their order), shuffled, one example of each.
        dataset = dataset.interleave(
            read,
            cycle_length=min(num_shards, 4),
            block_length=1 if shuffle else record["shard_size"],
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        if shuffle:
            dataset = dataset.shuffle(shuffle_buffer or 2 * record["shard_size"], seed=seed)

        def as_inputs(*tensors):
            features = {p: tf.cast(t, "float32") for p, t in zip(points, tensors, strict=False)}
            return features, tensors[-1]

        # The size is known from the manifest; saying so lets Keras show
        # progress and run its epochs without "ran out of data" guesses.
        num_batches = math.ceil(self.num_examples(split) / batch_size)
        return (
            dataset.batch(batch_size)
            .map(as_inputs, num_parallel_calls=tf.data.AUTOTUNE)
            .apply(tf.data.experimental.assert_cardinality(num_batches))
            .prefetch(tf.data.AUTOTUNE)
        )

    def __repr__(self):
        splits = {s: len(r["shards"]) for s, r in self._manifest["splits"].items()}
        return f"FeatureCache({str(self.directory)!r}, points={len(self.points)}, shards={splits})"

    # -- layout ----------------------------------------------------------------

    @property
    def _manifest_path(self):
        return self.directory / _MANIFEST

    def _split(self, split):
        try:
            return self._manifest["splits"][split]
        except KeyError:
            raise CacheError(
                f"The feature cache at {self.directory} has no split {split!r}; it has "
                f"{self.splits}. Write it with kp.FeatureCache.write(probed, data, "
                f"{str(self.directory)!r}, split={split!r}). Received: split={split!r}"
            ) from None

    def _complete_split(self, split):
        record = self._split(split)
        if not record["complete"]:
            raise CacheError(
                f"Split {split!r} of the feature cache at {self.directory} is incomplete "
                f"({len(record['shards'])} shards written: its write was interrupted or "
                "stopped by an error). Call "
                f"kp.FeatureCache.write(probed, data, {str(self.directory)!r}, split={split!r}) "
                "again with the same data: it resumes from the first missing shard."
            )
        return record

    def _shard_path(self, split, index, point=None):
        name = f"shard-{index:05d}.npy"
        if point is None:
            return self.directory / split / "labels" / name
        directory = self._manifest["points"][self._recorded[point]]["dir"]
        return self.directory / split / "features" / directory / name

    def _shard_files(self, split, index):
        checksums = self._split(split)["shards"][index]["sha256"]
        paths = {self._shard_path(split, index, p): checksums[r] for p, r in self._recorded.items()}
        paths[self._shard_path(split, index)] = checksums["labels"]
        return paths

    def _load_shard(self, split, index, mmap):
        mode = "r" if mmap else None
        features = {
            p: np.load(self._shard_path(split, index, p), mmap_mode=mode) for p in self.points
        }
        return features, np.load(self._shard_path(split, index), mmap_mode=mode)

    def _commit(self, split, record):
        """Enters `record` as `split`'s in the manifest on disk, keeping every other split."""
        with _manifest_lock(self.directory):
            manifest = _read_manifest(self.directory)
            for key in ("model", "probes"):
                if manifest[key]["fingerprint"] != self._manifest[key]["fingerprint"]:
                    raise CacheError(
                        f"The feature cache at {self.directory} was started anew for another "
                        f"model by another writer while split {split!r} was being written. "
                        "Write each model's features to a directory of its own."
                    )
            manifest["splits"][split] = record
            _save_manifest(self.directory, manifest)
        self._manifest = manifest


class _Writer:
    """One split's extraction: feeds batches through the feature model, one shard at a time."""

    def __init__(self, cache, probed, split, verbose):
        self.cache, self.probed, self.split = cache, probed, split
        self.record = cache._manifest["splits"][split]
        self.verbose = verbose

    def run(self, data):
        record, cache = self.record, self.cache
        batch_size = record["batch_size"]
        done = self._intact_shards()
        batches_per_shard = record["shard_size"] // batch_size
        extract = _distribute.batchwise(self.probed.extract_features)
        progress = (
            keras.utils.Progbar(
                _num_examples(data), stateful_metrics=["shards", "images/s"], unit_name="example"
            )
            if self.verbose
            else None
        )
        seen, started, index = 0, time.perf_counter(), 0
        hashes = []
        batches = _numpy_batches(self.probed, data, batch_size)
        while True:
            group = [b for _, b in zip(range(batches_per_shard), batches, strict=False)]
            if not group:
                break
            digest = _input_sha256(group)
            hashes.append(digest)
            if index < done:
                if record["shards"][index]["input_sha256"] != digest:
                    raise CacheError(
                        f"The data given for split {self.split!r} differs from the data the "
                        f"first {done} shards of the cache at {cache.directory} were written "
                        f"from (shard {index} differs). Pass the same data to resume, or "
                        "overwrite=True to rewrite the split."
                    )
            else:
                # Every batch is computed at exactly `batch_size` rows: the
                # features of an example never depend on where its batch ends.
                outputs = extract([_padded(x, batch_size) for x, _ in group])
                features = {
                    point: np.concatenate(
                        [
                            keras.ops.convert_to_numpy(output[point])[: len(y)]
                            for output, (_, y) in zip(outputs, group, strict=True)
                        ]
                    )
                    for point in cache.points
                }
                labels = np.concatenate([y for _, y in group])
                self._write_shard(index, features, labels, digest, start=seen)
            seen += sum(len(y) for _, y in group)
            index += 1
            if progress is not None:
                rate = seen / max(time.perf_counter() - started, 1e-9)
                progress.update(seen, [("shards", index), ("images/s", round(rate, 1))])
        if index == 0:
            raise ValueError(
                f"The data for split {self.split!r} yielded no example. Check the split "
                "name and any filter or take() applied to it."
            )
        if done > index:
            raise CacheError(
                f"The data given for split {self.split!r} ends after {index} shards, but the "
                f"cache at {cache.directory} already holds {done}. Pass the same data, or "
                "overwrite=True to rewrite the split."
            )
        record["num_examples"] = seen
        record["data_fingerprint"] = hashlib.sha256("".join(hashes).encode()).hexdigest()
        record["complete"] = True
        cache._commit(self.split, record)
        if progress is not None:
            progress.update(seen, [("shards", index)], finalize=True)

    def _intact_shards(self):
        """How many of the recorded shards are intact; later ones are forgotten."""
        # Half-written files of a killed run: never listed, never read.
        for leftover in (self.cache.directory / self.split).rglob(".*.tmp"):
            leftover.unlink()
        shards = self.record["shards"]
        for index in range(len(shards)):
            try:
                self.cache._check_shard(self.split, index)
            except CacheError:
                del shards[index:]
                self.record["complete"] = False
                break
        return len(shards)

    def _write_shard(self, index, features, labels, input_sha256, start):
        cache, dtype = self.cache, self.record["dtype"]
        checksums = {}
        for point in cache.points:
            array = features[point]
            _check_storable(array, point, dtype, self.split, start)
            path = cache._shard_path(self.split, index, point)
            checksums[cache._recorded[point]] = self._save(path, array.astype(dtype))
        labels = labels.astype(np.int32)
        checksums["labels"] = self._save(cache._shard_path(self.split, index), labels)
        self.record["shards"].append(
            {"examples": len(labels), "input_sha256": input_sha256, "sha256": checksums}
        )
        # The manifest is the commit: a shard counts once it is listed there.
        cache._commit(self.split, self.record)

    @staticmethod
    def _save(path, array):
        data = _npy_bytes(array)
        _files.atomic_write(path, data)
        return hashlib.sha256(data).hexdigest()


def _padded(x, size):
    """The batch `x` grown to `size` rows with copies of its first row (trimmed later)."""

    def pad(array):
        missing = size - len(array)
        return array if missing == 0 else np.concatenate([array, np.repeat(array[:1], missing, 0)])

    return keras.tree.map_structure(pad, x)


def _check_storable(array, point, dtype, split, start):
    """Features must be finite, and within float16's normal range when stored so."""
    finite = np.isfinite(array)
    if not finite.all():
        rows = start + np.flatnonzero(~finite.all(axis=1))
        raise ValueError(
            f"The model's features at point {point!r} hold NaN or infinite values for "
            f"{len(rows)} example(s) of split {split!r}, e.g. at index {rows[:3].tolist()}. "
            f"Check those inputs and their preprocessing, and the layers up to {point!r}."
        )
    if dtype != "float16":
        return
    largest = np.abs(array).max(axis=0, initial=0.0)
    if largest.max(initial=0.0) > _FLOAT16_MAX:
        raise ValueError(
            f"Features of point {point!r} exceed float16's range (largest "
            f"magnitude {largest.max():.4g} > {_FLOAT16_MAX:.0f}). "
            "Store this cache with dtype='float32'."
        )
    # A feature whose every value lies below float16's normal range would be
    # stored as zeros or a few bits: its information silently lost.
    tiny = (largest > 0) & (largest < _FLOAT16_TINY)
    if tiny.any():
        raise ValueError(
            f"{int(tiny.sum())} feature(s) of point {point!r} never exceed "
            f"{largest[tiny].max():.3g} in magnitude, below float16's normal range "
            f"({_FLOAT16_TINY:.3g}): float16 would round them to zero or to a few bits. "
            "Store this cache with dtype='float32'."
        )


def _check_write_args(split, batch_size, shard_size, dtype):
    plain = isinstance(split, str) and _PLAIN_NAME.fullmatch(split) and split != _MANIFEST
    if not plain or len(split) > _MAX_SPLIT_NAME:
        raise ValueError(
            "`split` must be a plain name such as 'train' or 'val': up to "
            f"{_MAX_SPLIT_NAME} letters, digits, '_', '-' and '.', not starting with '.' or "
            "'-', and not "
            f"{_MANIFEST!r}. Received: split={split!r}"
        )
    for name, value in (("batch_size", batch_size), ("shard_size", shard_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    if shard_size % batch_size:
        raise ValueError(
            "`shard_size` must be a multiple of `batch_size`, so that every shard is "
            f"computed in whole batches. Received: shard_size={shard_size}, "
            f"batch_size={batch_size}"
        )
    if dtype not in _DTYPES:
        raise ValueError(f"`dtype` must be one of {_DTYPES}. Received: dtype={dtype!r}")


def _new_manifest(probed):
    """The manifest of an empty cache for `probed`: its identity, no split yet."""
    features = probed.feature_model.output
    model, probes = _identity(probed)
    return {
        "format": _FORMAT,
        "version": _VERSION,
        "model": model,
        "probes": probes,
        "points": {
            point: {
                "dir": f"{i:03d}_{_graph.safe_name(point)}",
                "features": int(features[point].shape[-1]),
            }
            for i, point in enumerate(probed.points)
        },
        "splits": {},
    }


def _identity_problem(recorded: dict, given: dict, path: Path) -> str | None:
    """Why a cache with manifest `recorded` does not hold the features of `given`'s model."""
    old, new = recorded["model"], given["model"]
    if old["fingerprint"] != new["fingerprint"]:
        return (
            f"was written from another model: {path} records model {old['name']!r} with "
            f"fingerprint {old['fingerprint'][:16]}, and the model given, {new['name']!r}, "
            f"has {new['fingerprint'][:16]} (its architecture or weights differ: "
            f"{_model_difference(old, new)})."
        )
    old_probes, new_probes = recorded["probes"], given["probes"]
    if old_probes["fingerprint"] != new_probes["fingerprint"]:
        return (
            f"holds other probe points or reducers: {path} records points "
            f"{old_probes['points']} and reducers {old_probes['reducers']}; the model given "
            f"probes {new_probes['points']} with reducers {new_probes['reducers']}."
        )
    # Regression probes (no classes) read any cache of their base, points and reducers.
    if new["num_classes"] is not None and old["num_classes"] != new["num_classes"]:
        return (
            f"was written for probes of num_classes={old['num_classes']} (recorded in {path}; "
            "its labels were checked against that number), and the model given has "
            f"num_classes={new['num_classes']}."
        )
    return None


def _begin_split(directory, fresh, split, settings, overwrite):
    """The manifest with `split` ready to be written to, saved (under the manifest lock).

    A cache holding no shard at all holds nothing to protect: it is started
    anew for the model given, whatever model it was begun for.
    """
    path = directory / _MANIFEST
    if path.exists():
        manifest = _read_manifest(directory)
        problem = _identity_problem(manifest, fresh, path)
        if problem:
            kept = sorted(
                name
                for name, record in manifest["splits"].items()
                if record["shards"] and not (overwrite and name == split)
            )
            if kept:
                raise CacheError(
                    f"The feature cache at {directory} {problem} It holds shards of splits "
                    f"{kept}: write this model's features to a new directory, or delete "
                    f"{directory} first."
                )
            manifest = fresh
    else:
        foreign = sorted(p.name for p in directory.iterdir() if not _is_own_file(p))
        if foreign:
            raise CacheError(
                f"{directory} is not empty and holds no feature cache ({_MANIFEST} is "
                f"missing; it holds {foreign[:3]}). Write the cache to a new or empty directory."
            )
        manifest = fresh
    if overwrite:
        manifest["splits"].pop(split, None)
        shutil.rmtree(directory / split, ignore_errors=True)
    record = manifest["splits"].get(split)
    if record is not None and record["shards"]:
        changed = {k: record[k] for k, v in settings.items() if record[k] != v}
        if changed:
            raise CacheError(
                f"Split {split!r} of the cache at {directory} was started with {changed}; "
                "resuming with other settings would mix differently computed shards. Pass "
                f"the same settings, or overwrite=True to rewrite it. Received: {settings}"
            )
    else:
        # Nothing written yet (e.g. a first shard that failed): any settings may start it.
        record = {**settings, "complete": False, "shards": []}
    manifest["splits"][split] = record
    _save_manifest(directory, manifest)
    return manifest


def _is_own_file(path: Path) -> bool:
    """The cache's own lock and temporary files, which may exist before its manifest."""
    return path.name.startswith(".") and path.name.endswith((".lock", ".tmp"))


@contextlib.contextmanager
def _manifest_lock(directory: Path):
    """Exclusive: one manifest update at a time, across processes (blocks briefly)."""
    with open(directory / _LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _split_lock(directory: Path, split: str):
    """Exclusive for a whole write: a second writer of the same split is refused."""
    with open(directory / f".write-{split}.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise CacheError(
                f"Another process (pid {holder}) is writing split {split!r} of the feature "
                f"cache at {directory}. Wait for it to finish, or write another split: two "
                "writers of one split would interleave its shards."
            ) from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        yield


def _save_manifest(directory, manifest):
    _files.atomic_write(directory / _MANIFEST, json.dumps(manifest, indent=1).encode())


def _read_manifest(directory):
    path = directory / _MANIFEST
    if not path.exists():
        raise CacheError(
            f"No feature cache at {directory}: {path} does not exist. Write one with "
            f"kp.FeatureCache.write(probed, data, {str(directory)!r}, split='train')."
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CacheError(
            f"The manifest {path} is corrupt ({error}). Delete {directory} and write the "
            "cache again."
        ) from None
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
    return manifest


# What a manifest must hold: {key: type} per level; splits and points are checked one by one.
_MANIFEST_FIELDS = {
    "model": {"name": str, "fingerprint": str, "layers": list},
    "probes": {"fingerprint": str, "points": list, "reducers": dict},
    "points": dict,
    "splits": dict,
}
_SPLIT_FIELDS = {
    "batch_size": int,
    "shard_size": int,
    "dtype": str,
    "complete": bool,
    "shards": list,
}


def _manifest_problem(manifest) -> str | None:
    """What is missing or malformed in a manifest that parsed as JSON, or None."""
    for key, fields in _MANIFEST_FIELDS.items():
        value = manifest.get(key)
        if not isinstance(value, dict):
            return f"no {key!r} record"
        if fields is not dict:
            for field, kind in fields.items():
                if not isinstance(value.get(field), kind):
                    return f"no {key}.{field}"
    points = manifest["probes"]["points"]
    for point in points:
        entry = manifest["points"].get(point)
        if not isinstance(entry, dict) or not _PLAIN_NAME.fullmatch(str(entry.get("dir"))):
            return f"no directory for point {point!r}"
    for split, record in manifest["splits"].items():
        if not _PLAIN_NAME.fullmatch(split):
            return f"a split named {split!r}"
        for field, kind in _SPLIT_FIELDS.items():
            if not isinstance(record, dict) or not isinstance(record.get(field), kind):
                return f"no {field} in split {split!r}"
        for shard in record["shards"]:
            checksums = shard.get("sha256") if isinstance(shard, dict) else None
            if not isinstance(checksums, dict) or set(checksums) != {*points, "labels"}:
                return f"a shard of split {split!r} without its checksums"
    return None


def _numpy_batches(probed, data, batch_size):
    """Yields `(x, y)` NumPy batches of `batch_size` from arrays or a dataset, checked."""
    spec, num_classes = probed.feature_model.input, probed.num_classes
    if isinstance(data, tf.data.Dataset):
        dataset = _validation.check_data(data, None, spec, num_classes)
        dataset = dataset.map(lambda x, y, *_: (x, y)).unbatch().batch(batch_size)
        yield from dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
        return
    if not (isinstance(data, tuple | list) and len(data) == 2):
        raise TypeError(
            "`data` must be `(x, y)` arrays or a tf.data.Dataset of (inputs, labels) "
            f"batches. Received: data of type {type(data).__name__}"
        )
    x, y = data
    _validation.check_data(x, y, spec, num_classes)
    for start in range(0, len(y), batch_size):
        rows = slice(start, start + batch_size)
        yield keras.tree.map_structure(lambda a, r=rows: np.asarray(a[r]), x), np.asarray(y[rows])


def _num_examples(data):
    if isinstance(data, tf.data.Dataset):
        return None  # batches of unknown size; the bar counts without a target
    return len(data[1])


def _input_sha256(group):
    """sha256 of a shard's inputs and labels: a resumed run must be fed the same data."""
    digest = hashlib.sha256()
    for x, y in group:
        for array in (*keras.tree.flatten(x), y):
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()
