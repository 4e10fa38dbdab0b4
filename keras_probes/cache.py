"""`FeatureCache`: every probe point's features on disk, written once, verified on use.

Alain & Bengio (Appendix B) extract features once, because re-running the
base for every probe epoch costs far more than reading features back. Here a
cache is a directory:

```
cache/
  manifest.json                        fingerprints, shapes, dtypes, shards, checksums
  train/labels/shard-00000.npy         (n,) int32
  train/features/000_conv1_relu/shard-00000.npy  (n, features), memory-mappable
  ...
```

Shards are written under a temporary name, then renamed, and entered in the
manifest (itself replaced atomically) only once complete: a run killed at any
moment, SIGKILL included, resumes from the first missing shard and ends with
the same bytes as an uninterrupted run.
"""

import hashlib
import io
import json
import math
import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_probes import _distribute, _graph, _validation

__all__ = ["FeatureCache", "CacheError"]

_FORMAT = "keras_probes.FeatureCache"
_VERSION = 1
_MANIFEST = "manifest.json"
_SHARD_EXAMPLES = 4096
_DTYPES = ("float32", "float16")
_FLOAT16_MAX = float(np.finfo(np.float16).max)


class CacheError(ValueError):
    """A feature cache that must not be used: corrupt, incomplete or stale."""


def model_fingerprint(probed) -> str:
    """sha256 of the base's architecture (its serialized config) and every weight."""
    digest = hashlib.sha256()
    config = keras.saving.serialize_keras_object(probed.base)
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for variable in probed.base.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
        digest.update(f"{variable.path}:{value.dtype}:{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def probes_fingerprint(probed) -> str:
    """sha256 of what turns the base's layers into features: points and reducers."""
    return _sha256_json({"points": probed.points, "reducers": _reducer_configs(probed)})


def _reducer_configs(probed):
    return {p: keras.saving.serialize_keras_object(r) for p, r in probed.reducers.items()}


def _sha256_json(value):
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _atomic_write(path: Path, data: bytes):
    """Write `data` to `path` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


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
        manifest = _load_or_new_manifest(directory, probed)
        if overwrite and split in manifest["splits"]:
            del manifest["splits"][split]
            shutil.rmtree(directory / split, ignore_errors=True)
        settings = {"batch_size": batch_size, "shard_size": shard_size, "dtype": dtype}
        record = manifest["splits"].setdefault(split, {**settings, "complete": False, "shards": []})
        changed = {k: record[k] for k, v in settings.items() if record[k] != v}
        if changed:
            raise CacheError(
                f"Split {split!r} of the cache at {directory} was started with {changed}; "
                "resuming with other settings would mix differently computed shards. Pass "
                f"the same settings, or overwrite=True to rewrite it. Received: {settings}"
            )
        _Writer(cls(directory, manifest), probed, split, verbose).run(data)
        return cls(directory, manifest)

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
        """Raises `CacheError` unless this cache was written from `probed`."""
        recorded, fix = self._manifest, self._rebuild_hint()
        fingerprint = model_fingerprint(probed)
        if recorded["model"]["fingerprint"] != fingerprint:
            raise CacheError(
                f"The feature cache at {self.directory} was written from another model: "
                f"{self._manifest_path} records model {recorded['model']['name']!r} with "
                f"fingerprint {recorded['model']['fingerprint'][:16]}, and the model given, "
                f"{probed.base.name!r}, has {fingerprint[:16]} (its "
                f"architecture or weights differ). {fix}"
            )
        if recorded["probes"]["fingerprint"] != probes_fingerprint(probed):
            raise CacheError(
                f"The feature cache at {self.directory} holds other probe points or "
                f"reducers: {self._manifest_path} records points {recorded['probes']['points']} "
                f"and reducers {recorded['probes']['reducers']}; the model given probes "
                f"{probed.points} with reducers {_reducer_configs(probed)}. {fix}"
            )

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
        return list(self._manifest["probes"]["points"])

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
            point: keras.saving.deserialize_keras_object(config)
            for point, config in self._manifest["probes"]["reducers"].items()
        }

    @property
    def feature_sizes(self) -> dict[str, int]:
        """`{point: number of features}`."""
        return {p: self._manifest["points"][p]["features"] for p in self.points}

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
        points, dtype = self.points, record["dtype"]
        signature = (
            *(
                tf.TensorSpec((None, self._manifest["points"][p]["features"]), dtype)
                for p in points
            ),
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
                f"({len(record['shards'])} shards written; the run was interrupted). Call "
                f"kp.FeatureCache.write(probed, data, {str(self.directory)!r}, split={split!r}) "
                "again with the same data: it resumes from the first missing shard."
            )
        return record

    def _shard_path(self, split, index, point=None):
        name = f"shard-{index:05d}.npy"
        if point is None:
            return self.directory / split / "labels" / name
        return self.directory / split / "features" / self._manifest["points"][point]["dir"] / name

    def _shard_files(self, split, index):
        checksums = self._split(split)["shards"][index]["sha256"]
        paths = {self._shard_path(split, index, p): checksums[p] for p in self.points}
        paths[self._shard_path(split, index)] = checksums["labels"]
        return paths

    def _load_shard(self, split, index, mmap):
        mode = "r" if mmap else None
        features = {
            p: np.load(self._shard_path(split, index, p), mmap_mode=mode) for p in self.points
        }
        return features, np.load(self._shard_path(split, index), mmap_mode=mode)

    def _save_manifest(self):
        text = json.dumps(self._manifest, indent=1, sort_keys=False)
        _atomic_write(self._manifest_path, text.encode())


class _Writer:
    """One split's extraction: feeds batches through the feature model, one shard at a time."""

    def __init__(self, cache, probed, split, verbose):
        self.cache, self.probed, self.split = cache, probed, split
        self.record = cache._manifest["splits"][split]
        self.verbose = verbose

    def run(self, data):
        record, cache = self.record, self.cache
        done = self._intact_shards()
        batches_per_shard = record["shard_size"] // record["batch_size"]
        extract = _distribute.gathered(self.probed.extract_features)
        progress = (
            keras.utils.Progbar(
                _num_examples(data), stateful_metrics=["shards", "images/s"], unit_name="example"
            )
            if self.verbose
            else None
        )
        seen, started, index = 0, time.perf_counter(), 0
        hashes = []
        batches = _numpy_batches(self.probed, data, record["batch_size"])
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
                features = [extract(x) for x, _ in group]
                self._write_shard(index, features, [y for _, y in group], digest)
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
        cache._save_manifest()
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

    def _write_shard(self, index, features, labels, input_sha256):
        cache, dtype = self.cache, self.record["dtype"]
        checksums = {}
        for point in cache.points:
            array = np.concatenate([keras.ops.convert_to_numpy(f[point]) for f in features])
            largest = float(np.abs(array).max(initial=0.0))
            if dtype == "float16" and _FLOAT16_MAX < largest < np.inf:
                raise ValueError(
                    f"Features of point {point!r} exceed float16's range (largest "
                    f"magnitude {largest:.4g} > {_FLOAT16_MAX:.0f}). "
                    "Store this cache with dtype='float32'."
                )
            path = cache._shard_path(self.split, index, point)
            checksums[point] = self._save(path, array.astype(dtype))
        labels = np.concatenate(labels).astype(np.int32)
        checksums["labels"] = self._save(cache._shard_path(self.split, index), labels)
        self.record["shards"].append(
            {"examples": len(labels), "input_sha256": input_sha256, "sha256": checksums}
        )
        # The manifest is the commit: a shard counts once it is listed there.
        cache._save_manifest()

    @staticmethod
    def _save(path, array):
        data = _npy_bytes(array)
        _atomic_write(path, data)
        return hashlib.sha256(data).hexdigest()


def _check_write_args(split, batch_size, shard_size, dtype):
    if not isinstance(split, str) or not split or split != _graph.safe_name(split):
        raise ValueError(
            "`split` must be a plain name such as 'train' or 'val' (letters, digits, "
            f"'_', '-', '.'). Received: split={split!r}"
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
    features = probed.feature_model.output
    return {
        "format": _FORMAT,
        "version": _VERSION,
        "model": {
            "name": probed.base.name,
            "fingerprint": model_fingerprint(probed),
            "num_classes": probed.num_classes,
        },
        "probes": {
            "fingerprint": probes_fingerprint(probed),
            "points": probed.points,
            "reducers": _reducer_configs(probed),
        },
        "points": {
            point: {
                "dir": f"{i:03d}_{_graph.safe_name(point)}",
                "features": int(features[point].shape[-1]),
            }
            for i, point in enumerate(probed.points)
        },
        "splits": {},
    }


def _load_or_new_manifest(directory, probed):
    if not (directory / _MANIFEST).exists():
        if directory.exists() and any(directory.iterdir()):
            raise CacheError(
                f"{directory} is not empty and holds no feature cache ({_MANIFEST} is "
                "missing). Write the cache to a new or empty directory."
            )
        return _new_manifest(probed)
    cache = FeatureCache(directory, _read_manifest(directory))
    cache.check_model(probed)
    return cache._manifest


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
    return manifest


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
