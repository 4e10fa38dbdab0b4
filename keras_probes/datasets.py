"""Real datasets for examples, tests and reproductions.

The official loaders come first (`keras.datasets`, which downloads when it
can). Offline, the copies in the shared data folder are used instead, and the
returned `source` says which one was read. The folder is `$KERAS_PROBES_DATA`,
or `../shared/data` beside the project checkout.
"""

import difflib
import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "IMAGENETTE_CLASSES",
    "PREPROCESSING",
    "Splits",
    "data_dir",
    "image_folder",
    "imagenette_dir",
    "images",
    "mnist",
    "tfds_images",
]

#: How images become model inputs: `keras.applications` modes, or pixels as they are.
PREPROCESSING = ("none", "tf", "caffe", "torch")

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


def _preprocessed(dataset, preprocess):
    if preprocess not in PREPROCESSING:
        raise ValueError(
            f"`preprocess` must be one of {PREPROCESSING}: 'tf' maps pixels to [-1, 1] "
            "(MobileNet, Inception), 'caffe' is BGR minus the ImageNet mean (ResNet50, "
            "VGG), 'torch' standardises (DenseNet), 'none' keeps 0..255. "
            f"Received: preprocess={preprocess!r}"
        )
    if preprocess == "none":
        return dataset
    apply = keras.applications.imagenet_utils.preprocess_input
    return dataset.map(
        lambda x, y: (apply(tf.cast(x, "float32"), mode=preprocess), y),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def image_folder(
    directory,
    image_size: tuple[int, int],
    batch_size: int = 32,
    preprocess: str = "none",
    color_mode: str = "rgb",
) -> tuple[tf.data.Dataset, list[str]]:
    """Images in one sub-folder per class, as a dataset of `(images, labels)`.

    Read with `keras.utils.image_dataset_from_directory`, in a fixed order (not
    shuffled), labels by sorted sub-folder name.

    Args:
        directory: a folder holding one sub-folder of images per class.
        image_size: `(height, width)` the images are resized to.
        batch_size: images per batch. Defaults to `32`.
        preprocess: one of `PREPROCESSING`. Defaults to `"none"` (0..255).
        color_mode: `"rgb"` or `"grayscale"`. Defaults to `"rgb"`.

    Returns:
        `(dataset, class_names)`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"No image folder at {directory}.")
    dataset = keras.utils.image_dataset_from_directory(
        directory,
        labels="inferred",
        label_mode="int",
        color_mode=color_mode,
        image_size=tuple(image_size),
        batch_size=batch_size,
        shuffle=False,
        verbose=False,
    )
    return _preprocessed(dataset, preprocess), list(dataset.class_names)


def tfds_images(
    name: str,
    split: str,
    image_size: tuple[int, int],
    batch_size: int = 32,
    preprocess: str = "none",
    data_dir=None,
    channels: int = 3,
) -> tuple[tf.data.Dataset, int]:
    """A TFDS image classification split as a dataset of `(images, labels)`.

    Loaded with `tfds.load(name, split=split, as_supervised=True)` (which
    downloads and prepares the dataset when it is not in `data_dir` yet),
    resized to `image_size`, in the dataset's own order. An unknown name is a
    `ValueError` naming a few close TFDS names.

    Returns:
        `(dataset, num_classes)`.
    """
    dataset, label = _tfds(name, split, image_size, batch_size, preprocess, data_dir, channels)
    return dataset, int(label.num_classes)


def images(
    source,
    image_size: tuple[int, int],
    batch_size: int = 32,
    preprocess: str = "none",
    *,
    split: str = "train",
    color_mode: str = "rgb",
    data_dir=None,
) -> tuple[tf.data.Dataset, list[str]]:
    """Images of an image folder or of a TFDS dataset, whichever `source` names.

    A folder (one sub-folder per class) is read by `image_folder`. Anything
    else that looks like a path (it contains a path separator, starts with
    `.`, `~` or `/`, or is a file) is a missing folder: a `FileNotFoundError`
    saying "No image folder at ...". Otherwise `source` is a TFDS name
    (`"mnist"`, `"imagenette/320px-v2"`), read as `tfds_images` does; one
    that TFDS does not know is a `FileNotFoundError` naming a few close TFDS
    names, never the whole catalogue.

    Args:
        source: an image folder or a TFDS dataset name.
        image_size: `(height, width)` the images are resized to.
        batch_size: images per batch. Defaults to `32`.
        preprocess: one of `PREPROCESSING`. Defaults to `"none"` (0..255).
        split: the TFDS split to read (ignored for a folder). Defaults to `"train"`.
        color_mode: `"rgb"` or `"grayscale"`. Defaults to `"rgb"`.
        data_dir: TFDS data directory. Defaults to TFDS's own.

    Returns:
        `(dataset, class_names)`: the sorted sub-folder names of a folder, the
        label names of a TFDS dataset (`"0"`, `"1"`, ... when it has none).

    Example:

    ```python
    train, names = kp.datasets.images("data/train", (224, 224), preprocess="tf")
    test, names = kp.datasets.images("mnist", (28, 28), split="test", color_mode="grayscale")
    ```
    """
    if color_mode not in ("rgb", "grayscale"):
        raise ValueError(
            f"`color_mode` must be 'rgb' or 'grayscale'. Received: color_mode={color_mode!r}"
        )
    path = Path(source).expanduser()
    if path.is_dir():
        return image_folder(path, image_size, batch_size, preprocess, color_mode)
    if path.exists():
        raise FileNotFoundError(f"No image folder at {source}: it is a file. {_SOURCES}")
    if _looks_like_path(str(source)):
        raise FileNotFoundError(f"No image folder at {source}. {_SOURCES}")
    channels = 3 if color_mode == "rgb" else 1
    dataset, label = _tfds(
        str(source), split, image_size, batch_size, preprocess, data_dir, channels, folder=True
    )
    return dataset, list(label.names)


_SOURCES = "Pass a folder with one sub-folder of images per class, or a TFDS dataset name."


def _looks_like_path(source):
    """A path, not a TFDS name: `./x`, `~/x`, `/x`, or `a/b` where `a` is no TFDS dataset
    (`mnist/3.0.1` and `imagenette/320px-v2` are TFDS names with a config or version)."""
    if source.startswith((".", "~", "/", os.sep)) or (os.altsep and os.altsep in source):
        return True
    if os.sep not in source and "/" not in source:
        return False
    import tensorflow_datasets as tfds

    return source.split("/")[0] not in tfds.list_builders(with_community_datasets=False)


def _tfds(name, split, image_size, batch_size, preprocess, data_dir, channels, folder=False):
    """`(dataset, label feature)` of a TFDS split, resized and batched. An unknown
    name is refused with a few close TFDS names (TFDS' own error lists them all)."""
    import tensorflow_datasets as tfds

    try:
        dataset, info = tfds.load(
            name, split=split, as_supervised=True, with_info=True, data_dir=data_dir
        )
    except tfds.core.registered.DatasetNotFoundError:
        known = tfds.list_builders(with_community_datasets=False)
        close = difflib.get_close_matches(name.split("/")[0], known, n=3)
        hint = f" Close TFDS names: {', '.join(close)}." if close else ""
        if folder:
            raise FileNotFoundError(
                f"No image folder at {name}, and no TFDS dataset of that name.{hint} {_SOURCES}"
            ) from None
        raise ValueError(
            f"No TFDS dataset named {name!r}.{hint} tfds.list_builders() lists them all."
        ) from None
    label = info.features[info.supervised_keys[1]]

    def resize(image, y):
        image = tf.cast(image, "float32")
        if image.shape[-1] != channels:
            image = tf.image.grayscale_to_rgb(image) if channels == 3 else image[..., :1]
        return tf.image.resize(image, image_size), y

    dataset = dataset.map(resize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _preprocessed(dataset.batch(batch_size), preprocess), label
