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
  train/sequences/shard-00000.npy      (n,) int32, per-token caches: each row's sequence
  train/token_ids/shard-00000.npy      (n,) int32, per-token caches of models with token ids
  ...
```

A row is an example, or, in a cache of per-token probes (`reducers="tokens"`),
a kept token: the rows of one sequence are contiguous, and `sequences` holds
each row's sequence, numbered by its example's index in the split.

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
- A write killed at any moment (SIGKILL included), or stopped by an error,
  resumes from the first missing shard and ends with the bytes of an
  uninterrupted run.
- Writers of different splits, in different processes, work side by side and
  every split is kept. A second writer of the same split is refused at once.
  No lock outlives its writer.

This module reads. How the writer keeps these promises (locks, commits,
resumes): `keras_probes._cache_writer`. The manifest's format, fingerprints
and checksums: `keras_probes._manifest`.
"""

import math
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_probes import _cache_writer
from keras_probes._manifest import CacheError, Manifest, ModelRecord
from keras_probes._params import Boolean, Integer, check
from keras_probes.model import ProbedModel
from keras_probes.outcomes import Examples
from keras_probes.reducers import per_token

__all__ = ["FeatureCache", "CacheError", "ShardedRows"]

_DATASET_ARGS = {
    "batch_size": Integer(1),
    "shuffle": Boolean(),
    "seed": [Integer(), None],
    "shuffle_buffer": [Integer(1), None],
}


class ShardedRows:
    """Several arrays' rows as one read-only 2-D array, read only where sliced.

    `FeatureCache.features` returns one over a split's memory-mapped shards:
    slicing rows reads those rows from disk (or the page cache), and nothing
    else; `np.asarray` reads all.

    Args:
        parts: arrays of the same trailing shape and dtype, in row order.
    """

    def __init__(self, parts: list):
        if not parts:
            raise ValueError("`parts` must hold at least one array.")
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(part) for part in parts])
        self.shape = (int(self.offsets[-1]), *parts[0].shape[1:])
        self.dtype = parts[0].dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if not (isinstance(key, slice) and key.step in (None, 1)):
            return np.asarray(self)[key]
        start, stop, _ = key.indices(len(self))
        first = max(int(np.searchsorted(self.offsets, start, side="right")) - 1, 0)
        pieces = []
        for part, offset in zip(self.parts[first:], self.offsets[first:-1], strict=True):
            if offset >= stop:
                break
            pieces.append(part[max(start - offset, 0) : stop - offset])
        if not pieces:
            return np.zeros((0, *self.shape[1:]), self.dtype)
        return np.concatenate(pieces) if len(pieces) > 1 else np.array(pieces[0])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = np.concatenate(self.parts)
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def __repr__(self):
        return f"ShardedRows(shape={self.shape}, dtype={self.dtype}, parts={len(self.parts)})"


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

    def __init__(self, directory, manifest: Manifest):
        self.directory = Path(directory)
        self._manifest = manifest
        # {point name as the reader calls it: point name in the manifest}. A
        # model of the same computation may name its layers otherwise (Keras'
        # auto-generated names): once checked, the cache answers to its names.
        self._recorded = {p: p for p in manifest.probes.points}

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
        manifest = _cache_writer.write_split(
            probed,
            data,
            directory,
            split,
            batch_size=batch_size,
            shard_size=shard_size,
            dtype=dtype,
            overwrite=overwrite,
            verbose=verbose,
        )
        cache = cls(directory, manifest)
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
                weights, points and reducers (of a plain Keras model: the same
                architecture and weights). Defaults to `None` (no check).
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
        cache = cls(directory, Manifest.read(directory))
        if model is not None:
            cache.check_model(model)
        if verify:
            cache.verify()
        return cache

    def check_model(self, probed) -> None:
        """Raises `CacheError` unless this cache was written from `probed`.

        The same computation is accepted whatever its layers' auto-generated
        names or compile state; another layer config, another weight, other
        points or reducers, or another number of classes is refused, and the
        message says which, in one line.

        Args:
            probed: a `kp.ProbedModel`, or a plain Keras model (then only its
                architecture and weights are checked: e.g. before probing it
                at the cache's points).
        """
        if isinstance(probed, ProbedModel):
            fresh = Manifest.for_model(probed)
            problem = self._manifest.identity_problem(fresh.model, fresh.probes)
        else:
            problem = self._manifest.identity_problem(ModelRecord.of(probed))
        if problem:
            raise CacheError(
                f"The feature cache at {self.directory} {problem} Cache this model's features "
                "in a new directory: kp.FeatureCache.write(probed, data, directory) or "
                "`keras-probes cache`."
            )
        if isinstance(probed, ProbedModel):
            self._answer_to(probed)

    def _answer_to(self, probed):
        """Reads with `probed`'s point names from now on (same points, checked)."""
        self._recorded = dict(zip(probed.points, self._manifest.probes.points, strict=True))

    def verify(self, split: str | None = None) -> None:
        """Checks that every shard file exists and has its recorded sha256.

        Args:
            split: the split to check. Defaults to `None` (all of them).

        Raises:
            CacheError: naming the first missing or corrupt file.
        """
        for name in self.splits if split is None else [split]:
            for index in range(len(self._split(name).shards)):
                self._manifest.check_shard(self.directory, name, index)

    # -- reading ---------------------------------------------------------------

    @property
    def points(self) -> list[str]:
        """The probe points, input side first."""
        return list(self._recorded)

    @property
    def splits(self) -> list[str]:
        """The splits written so far (complete or not), in writing order."""
        return list(self._manifest.splits)

    @property
    def complete_splits(self) -> list[str]:
        """The splits written to the end, the ones that can be read."""
        return [s for s, record in self._manifest.splits.items() if record.complete]

    def require_split(self, split: str) -> None:
        """Raises `CacheError` unless `split` was written to the end and can be read.

        Args:
            split: the split to read, e.g. `"train"`.

        Raises:
            CacheError: the cache has no such split (the message lists the
                splits it has), or its write was interrupted or stopped by an
                error (the message says how to resume it).

        Example:

        ```python
        cache.require_split("val")  # before any work that needs "val"
        ```
        """
        record = self._split(split)
        if not record.complete:
            raise CacheError(
                f"Split {split!r} of the feature cache at {self.directory} is incomplete "
                f"({len(record.indices)} shards written: its write was interrupted or "
                "stopped by an error). Call "
                f"kp.FeatureCache.write(probed, data, {str(self.directory)!r}, split={split!r}) "
                "again with the same data: it resumes from the first missing shard."
            )

    @property
    def num_classes(self) -> int | None:
        """The number of classes of the probes the cache was written for."""
        return self._manifest.model.num_classes

    @property
    def reducers(self) -> dict:
        """`{point: reducer layer}` as recorded, e.g. to rebuild the `ProbedModel`."""
        recorded = self._manifest.probes.reducers
        return {
            p: keras.saving.deserialize_keras_object(recorded[r]) for p, r in self._recorded.items()
        }

    @property
    def feature_sizes(self) -> dict[str, int]:
        """`{point: number of features}`."""
        return {p: self._manifest.points[r].features for p, r in self._recorded.items()}

    def num_examples(self, split: str) -> int:
        """The number of examples of a complete split."""
        self.require_split(split)
        return sum(shard.examples for shard in self._split(split).shards)

    def shards(
        self, split: str, mmap: bool = True
    ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """Yields `({point: features}, labels)` one shard at a time, memory-mapped.

        What streaming readers (the L-BFGS solver) iterate over: at most one
        shard per point is read at once.
        """
        self.require_split(split)
        for index in range(len(self._split(split).shards)):
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

    def features(self, split: str, point: str) -> "ShardedRows":
        """One point's features of a split, read lazily: a `ShardedRows` over its
        memory-mapped shards.

        What streaming readers take: `kp.solvers.LBFGSProbe` fits on it a
        chunk of rows at a time, so a split larger than memory is never
        loaded whole. `np.asarray(...)` of it loads it.

        Example:

        ```python
        rows = cache.features("train", probed.points[-1])
        rows.shape, rows[:256]       # (n, features), the first 256 rows (an np.ndarray)
        ```
        """
        if point not in self.points:
            raise ValueError(f"No point {point!r} in this cache; it has {self.points}.")
        return ShardedRows([features[point] for features, _ in self.shards(split, mmap=True)])

    def token_ids(self, split: str) -> np.ndarray:
        """The token id of every row of a per-token cache: `(n,)` int32.

        Written when the model has a `token_ids` input; what control tasks
        (`kp.controls.control_task_probes`) give a label per token type.
        """
        self.require_split(split)
        shards = self._split(split).shards
        if not shards or "token_ids" not in shards[0].sha256:
            raise ValueError(
                f"The feature cache at {self.directory} holds no token ids: it was written "
                "from a model without per-token probes (reducers='tokens') or without a "
                "`token_ids` input."
            )
        return np.concatenate(
            [
                np.load(self._manifest.shard_path(self.directory, split, i, column="token_ids"))
                for i in range(len(shards))
            ]
        )

    def sequences(self, split: str) -> np.ndarray | None:
        """The sequence of every row of a per-token cache, or `None` when rows are examples.

        A per-token cache (`reducers="tokens"`) holds a row per kept token;
        the tokens of one sequence are not independent, so intervals and
        paired tests resample whole sequences. A sequence is numbered by its
        example's index in the split (from 0, across shards and batches):
        the numbers are non-decreasing over the rows, and the rows of one
        sequence are contiguous.

        Args:
            split: the split to read.

        Returns:
            int64 `(n,)`, the sequence of each of the split's `n` rows; `None`
            for a cache of pooled probes, whose every row is an example.

        Raises:
            CacheError: the split is incomplete, or is a per-token split
                written by a keras-probes that did not record sequences.

        Example:

        ```python
        sequences = cache.sequences("test")   # e.g. [0 0 0 1 1 2 2 2 2 ...]
        ```
        """
        self.require_split(split)
        if not per_token(self.reducers):
            return None
        shards = self._split(split).shards
        if any("sequences" not in shard.sha256 for shard in shards):
            raise CacheError(
                f"Split {split!r} of the feature cache at {self.directory} was written by an "
                "older keras-probes, which did not record each token's sequence. Write it "
                f"again: kp.FeatureCache.write(probed, data, {str(self.directory)!r}, "
                f"split={split!r}, overwrite=True), or into a new directory."
            )
        return np.concatenate(
            [
                np.load(self._manifest.shard_path(self.directory, split, i, column="sequences"))
                for i in range(len(shards))
            ]
        ).astype(np.int64)

    def fingerprint(self, split: str) -> str:
        """A short hex digest of the split's examples: their inputs and labels.

        It identifies the data the split was written from, never the model:
        two caches written from the same inputs and labels, in the same order,
        with the same `batch_size` and `shard_size` (whose batches the inputs
        are hashed in; sequences are padded per batch) have the same
        fingerprint, whatever the model, its weights, points, reducers or
        storage dtype (of a keras-hub task, the inputs are its preprocessor's
        outputs). So reports of probes fitted on caches of one data
        set, say a trained model's and its re-initialised control's, can be
        told to be of the same examples and compared example by example;
        another input, label or order gives another fingerprint. It is the
        split's `data_fingerprint` in the manifest, cut to 16 hex characters
        (the sha256 of every shard's `input_sha256`).

        Args:
            split: the split, written to the end.

        Returns:
            16 hex characters.

        Raises:
            CacheError: the split is missing or incomplete.

        Example:

        ```python
        cache.fingerprint("test") == control_cache.fingerprint("test")  # same examples
        ```
        """
        self.require_split(split)
        return self._split(split).inputs_sha256()[:16]

    def examples(self, split: str) -> Examples:
        """Which examples the split holds, for a report's outcomes: its `fingerprint`
        and, for per-token probes, each row's sequence (`sequences`)."""
        return Examples(self.fingerprint(split), self.sequences(split))

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
        check(
            _DATASET_ARGS,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            shuffle_buffer=shuffle_buffer,
        )
        self.require_split(split)
        record = self._split(split)
        points, dtype, sizes = self.points, record.dtype, self.feature_sizes
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

        num_shards = len(record.shards)
        dataset = tf.data.Dataset.range(num_shards)
        if shuffle:
            dataset = dataset.shuffle(num_shards, seed=seed, reshuffle_each_iteration=True)
        # Several shards are read at once; unshuffled, each is taken whole in
        # turn (the examples keep their order), shuffled, one example of each.
        dataset = dataset.interleave(
            read,
            cycle_length=min(num_shards, 4),
            # (a per-token shard holds as many rows as its kept tokens)
            block_length=1 if shuffle else max(shard.examples for shard in record.shards),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        if shuffle:
            dataset = dataset.shuffle(shuffle_buffer or 2 * record.shard_size, seed=seed)

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
        splits = {s: len(r.shards) for s, r in self._manifest.splits.items()}
        return f"FeatureCache({str(self.directory)!r}, points={len(self.points)}, shards={splits})"

    # -- layout ----------------------------------------------------------------

    def _split(self, split):
        try:
            return self._manifest.splits[split]
        except KeyError:
            raise CacheError(
                f"The feature cache at {self.directory} has no split {split!r}; it has "
                f"{self.splits}. Write it with kp.FeatureCache.write(probed, data, "
                f"{str(self.directory)!r}, split={split!r}). Received: split={split!r}"
            ) from None

    def _load_shard(self, split, index, mmap):
        def load(point=None):
            path = self._manifest.shard_path(self.directory, split, index, point)
            return np.load(path, mmap_mode="r" if mmap else None)

        return {p: load(r) for p, r in self._recorded.items()}, load()
