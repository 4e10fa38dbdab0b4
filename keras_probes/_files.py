"""Files replaced atomically: a reader sees the old content or the whole new one.

Written aside under a hidden temporary name (`.<name>.<pid>.<id>.tmp`),
flushed to disk, then renamed over the target, and the directory entry
synced, so that neither a kill nor a power loss leaves half a file under the
target's name. A leftover temporary file (a process killed mid-write) is
never read; its hidden `.tmp` name tells it apart, and `leftovers` finds it.

`read_json` reads such a file back, and says which file is not JSON.

`locked` holds an exclusive lock on a file, the one lock of the package (the
feature cache's manifest and split writers, the export's publication): the
platform's own lock through `filelock` (`flock` on Unix, `LockFileEx` on
Windows), released by the operating system when its process dies, so no lock
outlives its holder. (Where neither exists, `filelock` falls back to a lock
file of its own.) `check_directory` refuses a directory path that is a file.
"""

import contextlib
import errno
import glob
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import filelock


def atomic_write(path, data: bytes | str) -> None:
    """Replaces the file `path` by `data` (text is written as UTF-8)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def leftovers(path) -> list[Path]:
    """The temporary files of `atomic_write(path)` calls that never ended (a killed process).

    Only the caller knows that no write of `path` is in flight (say, it holds
    the lock every writer of `path` holds): then these may be deleted.
    """
    path = Path(path)
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))


def fsync_directory(directory) -> None:
    """Puts `directory`'s entries (a rename, a new file) on disk.

    Windows cannot open a directory to sync it: there the entries are left to the file
    system (a rename is still atomic; only its durability across a power cut is not forced).
    """
    if os.name == "nt":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def locked(path, *, wait: bool = True) -> Iterator[None]:
    """Holds an exclusive lock on the file `path` (created if missing) for the block.

    Exclusive across processes and threads: two `locked` blocks on one path
    never overlap. The operating system releases the lock when its process
    dies (SIGKILL included).

    Args:
        path: the lock file, e.g. `directory / ".lock"`.
        wait: wait for the lock while another holds it; with `False`, refuse
            at once. Defaults to `True`.

    Raises:
        BlockingIOError: `wait=False` and another holds the lock.

    Example:

    ```python
    with locked(directory / ".lock"):
        ...  # read, change and replace a file that others update too
    ```
    """
    # A new lock object each time: on Unix each holds its own open file, so
    # threads of one process exclude each other as processes do.
    lock = filelock.FileLock(os.fspath(path), timeout=-1 if wait else 0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise BlockingIOError(errno.EWOULDBLOCK, "locked by another", os.fspath(path)) from None
    try:
        yield
    finally:
        lock.release()


def check_directory(path, what: str, fix: str) -> None:
    """Refuses a directory path that is a file, or lies under one.

    Args:
        path: the directory, existing or to be created.
        what: what the directory is, to begin the message, e.g. `"The cache directory"`.
        fix: what to pass instead, to end the message.

    Raises:
        NotADirectoryError: naming the file in the way and `fix`.
    """
    path = Path(path)
    for existing in (path, *path.parents):
        if existing.is_dir():
            return
        if existing.exists():
            start = f"{what} {path}" + ("" if existing == path else f" cannot be made: {existing}")
            raise NotADirectoryError(f"{start} is a file, not a directory. {fix}")


def read_json(path, what: str, fix: str, error: type[ValueError] = ValueError):
    """The JSON value held by the file `path`.

    Args:
        path: the file to read.
        what: what the file is, to begin the message, e.g. `"The manifest"`.
        fix: how to get a readable file, to end the message.
        error: the `ValueError` subclass to raise. Defaults to `ValueError`.

    Returns:
        The parsed value (a dict, a list, ...).

    Raises:
        error: the file is not valid JSON (or not UTF-8 text); the message
            names the file, the parser's complaint and `fix`.

    Example:

    ```python
    report = read_json(path, "The report file", "Write it with ProbeReport.to_json.")
    ```
    """
    path = Path(path)
    try:
        # utf-8-sig: a file an editor saved with a byte-order mark reads as without one.
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as problem:
        raise error(f"{what} {path} is corrupt: it is not valid JSON ({problem}). {fix}") from None


def check_writable(path, cannot: str, file_fix: str, why: str = "", received: str = "") -> None:
    """Refuses, before any work, a path under which nothing could be written.

    Missing directories are fine (the first write makes them); the nearest one that
    exists must be a directory, and writable.

    Args:
        path: the directory to write into, or the file's directory.
        cannot: what fails, the start of the message, e.g. "Cannot export to serving/m".
        file_fix: what to pass instead when a file stands where a directory must be.
        why: said after "is not writable", e.g. ", and the version is written there".
        received: the argument as given, said last ("Received: base_dir='x'").
    """
    end = f" Received: {received}" if received else ""
    existing = Path(path)
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(
            f"{cannot}: {existing} is a file, not a directory. {file_fix}{end}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(
            f"{cannot}: {existing} is not writable{why}. Pass a path you can write to, or make "
            f"it writable (e.g. `chmod u+w {existing}`).{end}"
        )
