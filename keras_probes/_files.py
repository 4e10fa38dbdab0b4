"""Files replaced atomically: a reader sees the old content or the whole new one.

Written aside under a hidden temporary name (`.<name>.<pid>.<id>.tmp`),
flushed to disk, then renamed over the target, and the directory entry
synced, so that neither a kill nor a power loss leaves half a file under the
target's name. A leftover temporary file (a process killed mid-write) is
never read; its hidden `.tmp` name tells it apart.

`read_json` reads such a file back, and says which file is not JSON.
"""

import json
import os
import uuid
from pathlib import Path


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


def fsync_directory(directory) -> None:
    """Puts `directory`'s entries (a rename, a new file) on disk."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


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
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as problem:
        raise error(f"{what} {path} is corrupt: it is not valid JSON ({problem}). {fix}") from None
