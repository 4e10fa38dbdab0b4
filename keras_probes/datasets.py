"""Real datasets for examples, tests and reproductions.

The official loaders come first (`keras.datasets`, which downloads when it
can). Offline, the copies in the shared data folder are used instead, and the
returned `source` says which one was read. The folder is `$KERAS_PROBES_DATA`,
or `../shared/data` beside the project checkout.
"""

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

__all__ = ["IMAGENETTE_CLASSES", "Splits", "data_dir", "imagenette_dir", "mnist"]

#: Imagenette's ten WordNet ids with their ImageNet-1k class indices.
IMAGENETTE_CLASSES = {
    "n01440764": 0,  # tench
    "n02102040": 217,  # English springer
    "n02979186": 482,  # cassette player
    "n03000684": 491,  # chain saw
    "n03028079": 497,  # church
    "n03394916": 566,  # French horn
    "n03417042": 569,  # garbage truck
    "n03425413": 571,  # gas pump
    "n03445777": 574,  # golf ball
    "n03888257": 701,  # parachute
}


@dataclass(frozen=True)
class Splits:
    """Train, validation and test arrays, and where they came from."""

    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    source: str


def data_dir() -> Path:
    """The shared data folder: `$KERAS_PROBES_DATA`, else `../shared/data`."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    return Path(os.environ.get("KERAS_PROBES_DATA", default))


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist. Set KERAS_PROBES_DATA to the shared data folder "
            "(the one holding mnist_idx/ and imagenette_224_subset/)."
        )
    return path


def mnist(validation: int = 10_000, seed: int = 0, offline_fractions=(0.7, 0.15, 0.15)):
    """MNIST as `Splits` of uint8 images `(n, 28, 28)` and int labels.

    With `keras.datasets.mnist` available, the official 60k/10k split, with
    the last `validation` training images held out (the paper's protocol).
    Offline only the 10,000 official test images exist here: they are
    shuffled with `seed` and split by `offline_fractions`, and `source` says so.

    Args:
        validation: size of the validation split taken from the official
            training set. Defaults to `10_000`.
        seed: seed of the offline shuffle. Defaults to `0`.
        offline_fractions: train, validation and test fractions of the 10,000
            images offline. Defaults to `(0.7, 0.15, 0.15)`.
    """
    try:
        (x, y), test = keras.datasets.mnist.load_data()
    except Exception:  # keras raises a bare Exception when it cannot download
        pass
    else:
        return Splits(
            (x[:-validation], y[:-validation]),
            (x[-validation:], y[-validation:]),
            test,
            "keras.datasets.mnist (official 60k train / 10k test split)",
        )
    folder = _require(data_dir() / "mnist_idx")
    x = _read_idx(folder / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    y = _read_idx(folder / "t10k-labels-idx1-ubyte.gz", 8).astype("int64")
    order = np.random.default_rng(seed).permutation(len(x))
    n_train = round(offline_fractions[0] * len(x))
    n_val = round(offline_fractions[1] * len(x))
    parts = np.split(order, [n_train, n_train + n_val])
    return Splits(
        *((x[p], y[p]) for p in parts),
        source=(
            f"offline: the 10,000 official MNIST test images, split {n_train} train / "
            f"{n_val} validation / {len(parts[2])} test (seed {seed}); the training "
            "images could not be downloaded"
        ),
    )


def _read_idx(path, header):
    with gzip.open(path) as file:
        return np.frombuffer(file.read(), np.uint8, offset=header)


def imagenette_dir() -> Path:
    """The shared Imagenette subset: `train/` and `val/`, one folder per WordNet id."""
    return _require(data_dir() / "imagenette_224_subset")
