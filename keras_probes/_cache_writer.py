"""Writing one split of a feature cache: extraction, shards, commits, locks and resumes.

`write_split` is what `kp.FeatureCache.write` runs. How it keeps the promises
of `keras_probes.cache` (what a reader sees at every instant, what two
writers do):

- Every batch is computed at exactly `batch_size` rows (the last one padded
  with copies of its first row, then trimmed), one batch per replica under a
  `tf.distribute` strategy: an example's features never depend on where its
  batch ends, nor on the replica count, nor on a resume.
- A shard's files are written atomically (`_files.atomic_write`), then the
  shard is committed by entering it in the manifest, itself replaced
  atomically. The manifest is created, with the split's record, before the
  first shard, so a run killed at any moment (SIGKILL included), or stopped by
  an error, resumes from the first missing shard: the shards already listed
  are checked against their checksums and against the inputs given
  (`input_sha256`), and half-written `.tmp` files are deleted.
- Every commit re-reads the manifest under an exclusive lock (`.lock`) and
  replaces only its own split's record: writers of different splits, in
  different processes, work side by side and every split is kept.
- A second writer of the same split is refused at once: `.write-<split>.lock`
  is held for the whole write and names its writer's pid. The kernel releases
  both locks when a process dies, so no lock outlives its writer.
"""

import contextlib
import fcntl
import hashlib
import io
import math
import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_probes import _distribute, _files, _validation
from keras_probes._manifest import (
    COLUMNS,
    MANIFEST_FILE,
    CacheError,
    Manifest,
    Shard,
    SplitRecord,
    is_plain_name,
)
from keras_probes._params import Integer, Options, check
from keras_probes.reducers import TOKEN_IDS

__all__ = ["write_split"]

_LOCK = ".lock"
_SHARD_EXAMPLES = 4096
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_FLOAT16_TINY = float(np.finfo(np.float16).tiny)  # smallest normal, 2**-14
_MAX_SPLIT_NAME = 100  # a split name is typed by the user: short


class _SplitName:
    """The constraint (in `_params`' sense) on a split's name: a plain, short directory name."""

    def accepts(self, value) -> bool:
        return is_plain_name(value) and value != MANIFEST_FILE and len(value) <= _MAX_SPLIT_NAME

    def describe(self) -> str:
        return (
            f"a plain name such as 'train' or 'val': up to {_MAX_SPLIT_NAME} letters, digits, "
            f"'_', '-' and '.', not starting with '.' or '-', and not {MANIFEST_FILE!r}"
        )


_WRITE_ARGS = {
    "split": _SplitName(),
    "batch_size": Integer(1, description="a positive integer"),
    "shard_size": [Integer(1, description="a positive integer"), None],
    "dtype": Options("float32", "float16"),
}


def write_split(
    probed,
    data,
    directory,
    split: str,
    *,
    batch_size: int,
    shard_size: int | None,
    dtype: str,
    overwrite: bool,
    verbose: int,
) -> Manifest:
    """Writes, or resumes, split `split` of the cache at `directory`.

    The arguments are `kp.FeatureCache.write`'s (see there), all checked
    before any file is touched.

    Returns:
        The manifest as committed, holding every split written so far (by
        this writer or another).

    Raises:
        ValueError: a bad argument, or features that cannot be stored.
        CacheError: a cache of another model, another writer of this split,
            or a resume with other data or settings.

    Example:

    ```python
    manifest = write_split(probed, (x, y), "cache/", "train", batch_size=64,
                           shard_size=None, dtype="float32", overwrite=False, verbose=0)
    ```
    """
    settings = _write_settings(split, batch_size, shard_size, dtype)
    directory = Path(directory)
    fresh = Manifest.for_model(probed)
    directory.mkdir(parents=True, exist_ok=True)
    with _split_lock(directory, split):
        with _manifest_lock(directory):
            manifest = _begin_split(directory, fresh, split, settings, overwrite)
        _Writer(directory, manifest, probed, split, verbose).run(data)
    return Manifest.read(directory)


def _write_settings(split, batch_size, shard_size, dtype) -> dict:
    """The split's settings, checked, `shard_size` defaulted: what a resume must match."""
    check(_WRITE_ARGS, split=split, batch_size=batch_size, shard_size=shard_size, dtype=dtype)
    batch_size = int(batch_size)  # the manifest holds plain ints, whatever integer was given
    if shard_size is None:
        shard_size = batch_size * math.ceil(_SHARD_EXAMPLES / batch_size)
    shard_size = int(shard_size)
    if shard_size % batch_size:
        raise ValueError(
            "`shard_size` must be a multiple of `batch_size`, so that every shard is "
            f"computed in whole batches. Received: shard_size={shard_size}, "
            f"batch_size={batch_size}"
        )
    return {"batch_size": batch_size, "shard_size": shard_size, "dtype": dtype}


def _begin_split(directory: Path, fresh: Manifest, split, settings, overwrite) -> Manifest:
    """The manifest with `split` ready to be written to, saved (under the manifest lock).

    A cache holding no shard at all holds nothing to protect: it is started
    anew for the model given, whatever model it was begun for.
    """
    path = directory / MANIFEST_FILE
    if path.exists():
        manifest = Manifest.read(directory)
        problem = manifest.identity_problem(fresh, directory)
        if problem:
            kept = sorted(
                name
                for name, record in manifest.splits.items()
                if record.shards and not (overwrite and name == split)
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
                f"{directory} is not empty and holds no feature cache ({MANIFEST_FILE} is "
                f"missing; it holds {foreign[:3]}). Write the cache to a new or empty directory."
            )
        manifest = fresh
    if overwrite:
        manifest.splits.pop(split, None)
        shutil.rmtree(directory / split, ignore_errors=True)
    record = manifest.splits.get(split)
    if record is not None and record.shards:
        recorded = record.settings
        changed = {k: recorded[k] for k, v in settings.items() if recorded[k] != v}
        if changed:
            raise CacheError(
                f"Split {split!r} of the cache at {directory} was started with {changed}; "
                "resuming with other settings would mix differently computed shards. Pass "
                f"the same settings, or overwrite=True to rewrite it. Received: {settings}"
            )
    else:
        # Nothing written yet (e.g. a first shard that failed): any settings may start it.
        record = SplitRecord(**settings)
    manifest.splits[split] = record
    manifest.save(directory)
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


class _Writer:
    """One split's extraction: feeds batches through the feature model, one shard at a time."""

    def __init__(self, directory: Path, manifest: Manifest, probed, split: str, verbose: int):
        self.directory, self.manifest, self.probed, self.split = directory, manifest, probed, split
        self.record = manifest.splits[split]
        self.verbose = verbose
        # {the model's point name: the manifest's}. A model of the same
        # computation may name its layers otherwise (Keras' auto-generated names).
        self.recorded = dict(zip(probed.points, manifest.probes.points, strict=True))

    def run(self, data):
        record = self.record
        batch_size = record.batch_size
        done = self._intact_shards()
        batches_per_shard = record.shard_size // batch_size
        extract = _distribute.batchwise(self.probed.extract_features)
        progress = (
            keras.utils.Progbar(
                _num_examples(data), stateful_metrics=["shards", "images/s"], unit_name="example"
            )
            if self.verbose
            else None
        )
        seen, rows_seen, started, index = 0, 0, time.perf_counter(), 0
        hashes = []
        batches = _numpy_batches(self.probed, data, batch_size)
        while True:
            group = [b for _, b in zip(range(batches_per_shard), batches, strict=False)]
            if not group:
                break
            digest = _input_sha256(group)
            hashes.append(digest)
            if index < done:
                if record.shards[index].input_sha256 != digest:
                    raise CacheError(
                        f"The data given for split {self.split!r} differs from the data the "
                        f"first {done} shards of the cache at {self.directory} were written "
                        f"from (shard {index} differs). Pass the same data to resume, or "
                        "overwrite=True to rewrite the split."
                    )
            else:
                # Every batch is computed at exactly `batch_size` rows: the
                # features of an example never depend on where its batch ends.
                outputs = extract([_padded(x, batch_size) for x, _ in group])
                rows = [
                    self._rows(output, x, y) for output, (x, y) in zip(outputs, group, strict=True)
                ]
                columns = {
                    key: np.concatenate([row[key] for row in rows])
                    for key in rows[0]
                    if rows[0][key] is not None
                }
                self._write_shard(index, columns, digest, start=rows_seen)
            seen += sum(len(y) for _, y in group)
            rows_seen = sum(shard.examples for shard in record.shards[: index + 1])
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
                f"cache at {self.directory} already holds {done}. Pass the same data, or "
                "overwrite=True to rewrite the split."
            )
        record.num_examples = rows_seen
        record.data_fingerprint = hashlib.sha256("".join(hashes).encode()).hexdigest()
        record.complete = True
        self._commit()
        if progress is not None:
            progress.update(seen, [("shards", index)], finalize=True)

    def _intact_shards(self):
        """How many of the recorded shards are intact; later ones are forgotten."""
        # Half-written files of a killed run: never listed, never read.
        for leftover in (self.directory / self.split).rglob(".*.tmp"):
            leftover.unlink()
        shards = self.record.shards
        for index in range(len(shards)):
            try:
                self.manifest.check_shard(self.directory, self.split, index)
            except CacheError:
                del shards[index:]
                self.record.complete = False
                break
        return len(shards)

    def _rows(self, output, x, y):
        """One batch's rows: `{point: features, "labels": ..., "token_ids": ... or None}`.

        A row is an example, or for per-token probes a kept token (with its
        token id when the model has a `token_ids` input).
        """
        columns = {
            point: keras.ops.convert_to_numpy(output[point])[: len(y)] for point in self.recorded
        }
        columns["labels"], columns["token_ids"] = y, None
        if self.probed.per_token:
            kept = np.asarray(self.probed.kept_tokens(x)).astype(bool)
            ids = self.probed.input_of(x, TOKEN_IDS)
            columns = {key: values[kept] for key, values in columns.items() if values is not None}
            columns["token_ids"] = None if ids is None else np.asarray(ids)[kept]
        return columns

    def _write_shard(self, index, columns, input_sha256, start):
        dtype, checksums = self.record.dtype, {}
        for point, recorded in self.recorded.items():
            array = columns[point]
            _check_storable(array, point, dtype, self.split, start)
            path = self.manifest.shard_path(self.directory, self.split, index, recorded)
            checksums[recorded] = _save(path, array.astype(dtype))
        for column in COLUMNS:
            if column in columns:
                path = self.manifest.shard_path(self.directory, self.split, index, column=column)
                checksums[column] = _save(path, columns[column].astype(np.int32))
        examples = len(columns["labels"])
        self.record.shards.append(Shard(examples, input_sha256, checksums))
        # The manifest is the commit: a shard counts once it is listed there.
        self._commit()

    def _commit(self):
        """Enters this split's record in the manifest on disk, keeping every other split."""
        with _manifest_lock(self.directory):
            manifest = Manifest.read(self.directory)
            if manifest.fingerprints != self.manifest.fingerprints:
                raise CacheError(
                    f"The feature cache at {self.directory} was started anew for another "
                    f"model by another writer while split {self.split!r} was being written. "
                    "Write each model's features to a directory of its own."
                )
            manifest.splits[self.split] = self.record
            manifest.save(self.directory)
        self.manifest = manifest


def _save(path: Path, array: np.ndarray) -> str:
    """Writes `array` as `.npy` atomically; returns the file's sha256."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    data = buffer.getvalue()
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
            f"{len(rows)} example(s) of split {split!r} (kept tokens, for per-token probes), "
            f"e.g. at index {rows[:3].tolist()}. "
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


def _numpy_batches(probed, data, batch_size):
    """Yields `(x, y)` NumPy batches of `batch_size` from arrays or a dataset, checked."""
    spec, num_classes, tokens = probed.feature_model.input, probed.num_classes, probed.per_token
    masked = probed.kept_tokens(spec) is not None
    if probed.preprocessor is not None and isinstance(data, tuple | list) and len(data) == 2:
        data = probed.preprocess(*data, batch_size=batch_size)[0]  # a keras-hub task's
    elif probed.preprocessor is not None:
        data = probed.preprocess(data)[0]
    if isinstance(data, tf.data.Dataset):
        dataset = _validation.check_data(data, None, spec, num_classes, tokens=tokens)
        dataset = dataset.map(lambda x, y, *_: (x, y)).unbatch()
        # Token sequences of other lengths are padded to the longest of their batch
        # (mask and ids with zeros: padded tokens are never read).
        dataset = dataset.padded_batch(batch_size) if masked else dataset.batch(batch_size)
        yield from dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
        return
    if not (isinstance(data, tuple | list) and len(data) == 2):
        raise TypeError(
            "`data` must be `(x, y)` arrays or a tf.data.Dataset of (inputs, labels) "
            f"batches. Received: data of type {type(data).__name__}"
        )
    x, y = data
    _validation.check_data(x, y, spec, num_classes, tokens=tokens)
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
