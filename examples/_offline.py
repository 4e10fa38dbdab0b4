"""Points Keras at the shared weight files, so `weights="imagenet"` loads offline.

Keras reads `KERAS_HOME` once, when it is imported, and looks for
`$KERAS_HOME/models/<file>` before it downloads anything. So this module imports
neither keras nor keras_probes, and the examples call `use_shared_keras_cache()`
before they import either.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["shared_data_dir", "use_shared_keras_cache"]


def shared_data_dir() -> Path:
    """The shared data folder: `$KERAS_PROBES_DATA`, else `<repo root>/../shared/data`."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    return Path(os.environ.get("KERAS_PROBES_DATA", default))


def use_shared_keras_cache() -> Path | None:
    """Sets `KERAS_HOME` to a fresh folder whose `models` cache is the shared one.

    Does nothing when `KERAS_HOME` is already set (the user chose a cache) or
    when there is no shared `keras/models` folder (online, Keras downloads into
    its usual `~/.keras`). The folder is writable, because Keras writes
    `keras.json` there, and it is removed at exit; the shared files are only
    linked, never copied or written to.

    Returns:
        The Keras home in use, or `None` when this function left it alone.
    """
    if "KERAS_HOME" in os.environ:
        return None
    models = shared_data_dir() / "keras" / "models"
    if not models.is_dir():
        return None
    home = Path(tempfile.mkdtemp(prefix="keras_probes_examples_"))
    (home / "models").symlink_to(models.resolve(), target_is_directory=True)
    # rmtree removes the link itself, never what it points to.
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    os.environ["KERAS_HOME"] = str(home)
    return home
