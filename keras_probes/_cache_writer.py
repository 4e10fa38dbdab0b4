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
  an error, resumes by writing the missing shards only: the shards already
  listed are checked against their checksums and against the inputs given
  (`input_sha256`), and half-written `.tmp` files are deleted: a shard's by the
  writer of its split, a manifest's under the manifest lock (every manifest
  replacement holds it, so none of them is in flight then).
- Under `MultiWorkerMirroredStrategy`, worker `rank` of `count` computes
  shards `rank`, `rank + count`, ... into the same directory (a shared file
  system) and commits each as it ends, in any order (`SplitRecord.pending`
  holds a shard committed before one ahead of it); the split is complete when
  every shard is in. Every shard is computed as one process computes it, so
  the cache's bytes are those of one process, whatever the number of
  workers, and the same command rerun on every worker after a kill resumes.
- Every commit re-reads the manifest under an exclusive lock (`.lock`) and
  replaces only its own split's record: writers of different splits, in
  different processes, work side by side and every split is kept.
- A second writer of the same split is refused at once: `.write-<split>.lock`
  (`.write-<split>.worker<rank>.lock` for the other workers) is held for the
  whole write, and `.write-<split>.pid` beside it names its writer. Both
  locks are `_files.locked`'s: the operating system releases them when a
  process dies, so no lock outlives its writer.
"""

import contextlib
import hashlib
import io
import itertools
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_probes import _files, _validation, distribute
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
    _files.check_directory(
        directory,
        "The cache directory",
        "Pass the path of a directory: a new or empty one, or a feature cache.",
    )
    # The data is checked before any file is touched; nothing is read yet.
    batches = _numpy_batches(probed, data, settings["batch_size"])
    fresh = Manifest.for_model(probed)
    rank, count = distribute.workers()
    directory.mkdir(parents=True, exist_ok=True)
    with _split_lock(directory, split, rank):

        def begin(joining):
            if (rank > 0) != joining:
                return None
            with _manifest_lock(directory):
                return _begin_split(directory, fresh, split, settings, overwrite and rank == 0)

        # The first worker begins the split (clearing it, with `overwrite`),
        # then the others join it: one clearing, never one per worker. An
        # error on any worker is raised on all (none is left waiting).
        manifest = distribute.together(lambda: begin(False))
        if count > 1:
            manifest = distribute.together(lambda: begin(True)) or manifest
        writer = _Writer(directory, manifest, probed, split, verbose, rank, count)
        distribute.together(lambda: writer.run(batches))  # also waits for every worker's shards
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
    # What a writer killed while replacing the manifest left. Every replacement
    # holds the manifest lock, held here: none of these is another's in flight.
    for leftover in _files.leftovers(directory / MANIFEST_FILE):
        leftover.unlink(missing_ok=True)
    path = directory / MANIFEST_FILE
    if path.exists():
        manifest = Manifest.read(directory)
        problem = manifest.identity_problem(fresh.model, fresh.probes)
        if problem:
            kept = sorted(
                name
                for name, record in manifest.splits.items()
                if record.indices and not (overwrite and name == split)
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
    if record is not None and record.indices:
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
    """The cache's own lock, pid and temporary files, which may exist before its manifest."""
    return path.name.startswith(".") and path.name.endswith((".lock", ".pid", ".tmp"))


@contextlib.contextmanager
def _manifest_lock(directory: Path):
    """Exclusive: one manifest update at a time, across processes (waits briefly)."""
    with _files.locked(directory / _LOCK):
        yield


@contextlib.contextmanager
def _split_lock(directory: Path, split: str, rank: int = 0):
    """Exclusive for a whole write: a second writer of the same split (and worker rank)
    is refused, naming the first one's pid."""
    name = f".write-{split}" if rank == 0 else f".write-{split}.worker{rank}"
    # The pid is kept beside the lock, not in it: on Windows a locked file cannot be read.
    holder = directory / f"{name}.pid"
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(_files.locked(directory / f"{name}.lock", wait=False))
        except BlockingIOError:
            try:
                pid = holder.read_text().strip() or "unknown"
            except OSError:
                pid = "unknown"
            raise CacheError(
                f"Another process (pid {pid}) is writing split {split!r} of the feature "
                f"cache at {directory}. Wait for it to finish, or write another split: two "
                "writers of one split would interleave its shards."
            ) from None
        holder.write_text(str(os.getpid()))
        stack.callback(holder.unlink, missing_ok=True)
        yield


class _Writer:
    """One split's extraction: feeds batches through the feature model, one shard at a time.

    Of `count` workers, the one of rank `rank` computes shards `rank`,
    `rank + count`, ...: every shard is computed whole by one worker, exactly
    as one process would, and committed into the shared manifest in whatever
    order the workers finish.
    """

    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        probed,
        split: str,
        verbose: int,
        rank: int = 0,
        count: int = 1,
    ):
        self.directory, self.manifest, self.probed, self.split = directory, manifest, probed, split
        self.record = manifest.splits[split]
        self.verbose = verbose
        self.rank, self.count = rank, count
        # {the model's point name: the manifest's}. A model of the same
        # computation may name its layers otherwise (Keras' auto-generated names).
        self.recorded = dict(zip(probed.points, manifest.probes.points, strict=True))

    def run(self, batches: "_Batches"):
        batch_size = self.record.batch_size
        done = self._intact_shards()
        batches_per_shard = self.record.shard_size // batch_size
        extract = distribute.batchwise(self.probed.extract_features)
        progress = (
            keras.utils.Progbar(batches.total, unit_name=batches.unit) if self.verbose else None
        )
        # This worker's shards: already there (kept) or computed now (written).
        examples, kept, written, computed = 0, 0, 0, 0
        started, index = time.perf_counter(), 0
        iterator = iter(batches)
        while True:
            group = list(itertools.islice(iterator, batches_per_shard))
            if not group:
                break
            position = group[-1][2]
            group = [(x, y) for x, y, _ in group]
            mine = index % self.count == self.rank
            if mine:
                digest = _input_sha256(group)
                if index in done:
                    kept += 1
                    if self.record.shard(index).input_sha256 != digest:
                        raise CacheError(
                            f"The data given for split {self.split!r} differs from the data "
                            f"shard {index} of the cache at {self.directory} was written from. "
                            "Pass the same data to resume, or overwrite=True to rewrite the "
                            "split."
                        )
                else:
                    # Every batch is computed at exactly `batch_size` rows: the
                    # features of an example never depend on where its batch ends.
                    outputs = extract([_padded(x, batch_size) for x, _ in group])
                    # The split's index of each batch's first example.
                    sizes = [len(y) for _, y in group]
                    starts = index * self.record.shard_size + np.cumsum([0, *sizes[:-1]])
                    rows = [
                        self._rows(output, x, y, start)
                        for output, (x, y), start in zip(outputs, group, starts, strict=True)
                    ]
                    columns = {
                        key: np.concatenate([row[key] for row in rows])
                        for key in rows[0]
                        if rows[0][key] is not None
                    }
                    self._write_shard(index, columns, digest)
                    written += 1
                    computed += sum(len(y) for _, y in group)
                examples += sum(len(y) for _, y in group)
            index += 1
            if progress is not None:
                progress.update(position, finalize=False)  # the last line once, below
        if index == 0:
            raise ValueError(
                f"The data for split {self.split!r} yielded no example. Check the split "
                "name and any filter or take() applied to it."
            )
        if done and max(done) >= index:
            raise CacheError(
                f"The data given for split {self.split!r} ends after {index} shards, but the "
                f"cache at {self.directory} already holds shard {max(done)}. Pass the same "
                "data, or overwrite=True to rewrite the split."
            )
        self._commit(shards=index)
        if progress is not None:
            progress.update(position, finalize=True)
            rate = computed / max(time.perf_counter() - started, 1e-9)
            worker = f" (worker {self.rank} of {self.count})" if self.count > 1 else ""
            print(
                f"Split {self.split!r}{worker}: {_count(examples, 'example')} in "
                f"{_count(kept + written, 'shard')}, {written} written now"
                + (f" at {rate:.0f} examples/s" if computed else "")
                + f", {kept} already there."
            )

    def _intact_shards(self) -> set[int]:
        """The indices of this worker's recorded shards that are intact; damaged ones are
        forgotten."""
        # Half-written files of a killed run: never listed, never read. (Each
        # worker deletes only its own shards' files: another's may be in flight.)
        for leftover in (self.directory / self.split).rglob(".*.tmp"):
            index = re.search(r"shard-(\d+)", leftover.name)
            if index is None or int(index[1]) % self.count == self.rank:
                leftover.unlink(missing_ok=True)
        intact, damaged = set(), []
        for index in self.record.indices:
            if index % self.count != self.rank:
                continue
            try:
                self.manifest.check_shard(self.directory, self.split, index)
                intact.add(index)
            except CacheError:
                damaged.append(index)
        if damaged:
            self._commit(forget=damaged)
        return intact

    def _rows(self, output, x, y, start):
        """One batch's rows: `{point: features, "labels": ..., "token_ids": ... or None,
        "sequences": ... or None}`; `start` is the split's index of its first example.

        A row is an example, or for per-token probes a kept token, with its
        sequence (its example's index in the split) and, when the model has a
        `token_ids` input, its token id.
        """
        columns = {
            point: keras.ops.convert_to_numpy(output[point])[: len(y)] for point in self.recorded
        }
        columns["labels"], columns["token_ids"], columns["sequences"] = y, None, None
        if self.probed.per_token:
            kept = np.asarray(self.probed.kept_tokens(x)).astype(bool)
            ids = self.probed.input_of(x, TOKEN_IDS)
            columns = {key: values[kept] for key, values in columns.items() if values is not None}
            columns["token_ids"] = None if ids is None else np.asarray(ids)[kept]
            # Kept tokens in row-major order, as the columns above take them.
            columns["sequences"] = start + np.nonzero(kept)[0]
        return columns

    def _write_shard(self, index, columns, input_sha256):
        dtype, checksums = self.record.dtype, {}
        for point, recorded in self.recorded.items():
            array = columns[point]
            # Rows are examples (numbered from the split's start) or, for
            # per-token probes, kept tokens (numbered within the shard).
            start = 0 if self.probed.per_token else index * self.record.shard_size
            _check_storable(array, point, dtype, f"{self.split!r}, shard {index}", start)
            path = self.manifest.shard_path(self.directory, self.split, index, recorded)
            checksums[recorded] = _save(path, array.astype(dtype))
        for column in COLUMNS:
            if column in columns:
                path = self.manifest.shard_path(self.directory, self.split, index, column=column)
                checksums[column] = _save(path, columns[column].astype(np.int32))
        # The manifest is the commit: a shard counts once it is listed there.
        self._commit(add=(index, Shard(len(columns["labels"]), input_sha256, checksums)))

    def _commit(self, add=None, forget=(), shards=None):
        """Updates this split's record in the manifest on disk, keeping every other split
        and every other worker's shards.

        Args:
            add: `(index, shard)` to enter.
            forget: indices of damaged shards to drop.
            shards: the split's number of shards, once this worker's data
                has ended: the split is complete when every one is in.
        """
        with _manifest_lock(self.directory):
            manifest = Manifest.read(self.directory)
            record = manifest.splits.get(self.split)
            if manifest.fingerprints != self.manifest.fingerprints or record is None:
                raise CacheError(
                    f"The feature cache at {self.directory} was started anew by another "
                    f"writer while split {self.split!r} was being written. Write each "
                    "model's features to a directory of its own, and overwrite a split "
                    "only when no other writer is at it."
                )
            for index in forget:
                record.forget(index)
            if add is not None:
                record.add(*add)
            if shards is not None and len(record.shards) == shards and not record.pending:
                record.num_examples = sum(shard.examples for shard in record.shards)
                record.data_fingerprint = record.inputs_sha256()
                record.complete = True
            manifest.save(self.directory)
        self.manifest, self.record = manifest, record


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


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


def _check_storable(array, point, dtype, where, start):
    """Features must be finite, and within float16's normal range when stored so."""
    finite = np.isfinite(array)
    if not finite.all():
        rows = start + np.flatnonzero(~finite.all(axis=1))
        raise ValueError(
            f"The model's features at point {point!r} hold NaN or infinite values for "
            f"{len(rows)} example(s) of split {where} (kept tokens, for per-token probes), "
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


class _Batches:
    """`data` as `(x, y, position)` NumPy batches of `batch_size` examples.

    The data is checked when this is made, and read only when iterated.
    `position` is how far through the data a batch ends, in `unit`s: examples
    of arrays, or batches of a dataset, as a dataset's size is known in
    batches (its cardinality). `total` is the data's size in those units, or
    `None` when unknown.
    """

    def __init__(self, batches, total: int | None, unit: str):
        self.batches, self.total, self.unit = batches, total, unit

    def __iter__(self):
        yield from self.batches()


def _numpy_batches(probed, data, batch_size) -> _Batches:
    """`data`, arrays or a dataset, checked, as `_Batches` of `batch_size` examples."""
    if isinstance(data, Iterator | keras.utils.PyDataset):
        raise TypeError(
            "`data` must be `(x, y)` arrays or a tf.data.Dataset of (inputs, labels) "
            "batches (a resume reads it again from its start). Wrap a generator's function "
            "with tf.data.Dataset.from_generator(function, output_signature=...). "
            f"Received: data of type {type(data).__name__}"
        )
    spec, num_classes, tokens = probed.feature_model.input, probed.num_classes, probed.per_token
    masked = probed.kept_tokens(spec) is not None
    if probed.preprocessor is not None and isinstance(data, tuple | list) and len(data) == 2:
        data = probed.preprocess(*data, batch_size=batch_size)[0]  # a keras-hub task's
    elif probed.preprocessor is not None:
        data = probed.preprocess(data)[0]
    if isinstance(data, tf.data.Dataset):
        dataset = _validation.check_data(data, None, spec, num_classes, tokens=tokens)
        dataset = probed.check_tokens(dataset)  # each sequence keeps a token, none too long
        total = int(dataset.cardinality())
        # Every example carries the number of its batch in `data`: how far the
        # writer has read, which the progress bar shows.
        dataset = dataset.enumerate().map(
            lambda i, batch: (batch[0], batch[1], tf.fill(tf.shape(batch[1])[:1], i + 1))
        )
        dataset = dataset.unbatch()
        # Token sequences of other lengths are padded to the longest of their batch
        # (mask and ids with zeros: padded tokens are never read).
        dataset = dataset.padded_batch(batch_size) if masked else dataset.batch(batch_size)
        dataset = dataset.prefetch(tf.data.AUTOTUNE)

        def read():
            with _validation.one_line_assertions():  # a check of the stream: its words, in one line
                for x, y, position in dataset.as_numpy_iterator():
                    yield x, y, int(position[-1])

        return _Batches(read, total if total >= 0 else None, "batch")
    if not (isinstance(data, tuple | list) and len(data) == 2):
        raise TypeError(
            "`data` must be `(x, y)` arrays or a tf.data.Dataset of (inputs, labels) "
            f"batches. Received: data of type {type(data).__name__}"
        )
    x, y = data
    _validation.check_data(x, y, spec, num_classes, tokens=tokens)
    probed.check_tokens(x)
    y = np.asarray(y)  # labels may come as a list

    def read():
        for start in range(0, len(y), batch_size):
            rows = slice(start, start + batch_size)
            x_rows = keras.tree.map_structure(lambda a, r=rows: np.asarray(a[r]), x)
            yield x_rows, y[rows], min(start + batch_size, len(y))

    return _Batches(read, len(y), "example")


def _input_sha256(group):
    """sha256 of a shard's inputs and labels: a resumed run must be fed the same data."""
    digest = hashlib.sha256()
    for x, y in group:
        for array in (*keras.tree.flatten(x), y):
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()
