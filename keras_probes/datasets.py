"""Datasets: images for a model from a folder or TFDS, and the real data of the examples.

Images come from an image folder (one sub-folder per class) or a TFDS
dataset, resized and preprocessed as a model takes them (`images`,
`images_for_model`); `check_same_classes` refuses two splits whose labels mean
different classes, `balanced_subset` links the first images of every class into
a smaller folder, and `imagenet_indices` maps class names to ImageNet-1k
indices (for a pretrained classifier's own reference, `kp.models.classifier_errors`).

The real data of examples, tests and reproductions: the official loaders come
first (`keras.datasets`, which downloads when it can). Offline, the copies in
the shared data folder are used instead, and the returned `source` says which
one was read. The folder is `$KERAS_PROBES_DATA`, or `../shared/data` beside
the project checkout.
"""

import atexit
import difflib
import gzip
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_probes import _graph, _params
from keras_probes import points as points_lib

__all__ = [
    "IMAGENETTE_CLASSES",
    "PREPROCESSING",
    "Splits",
    "balanced_subset",
    "check_same_classes",
    "data_dir",
    "image_folder",
    "imagenet_indices",
    "imagenette_dir",
    "images",
    "images_for_model",
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
    _check_preprocess(preprocess)
    if preprocess == "none":
        return dataset
    apply = keras.applications.imagenet_utils.preprocess_input
    return dataset.map(
        lambda x, y: (apply(tf.cast(x, "float32"), mode=preprocess), y),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def _check_preprocess(preprocess):
    if preprocess not in PREPROCESSING:
        raise ValueError(
            f"`preprocess` must be one of {PREPROCESSING}: 'tf' maps pixels to [-1, 1] "
            "(MobileNet, Inception), 'caffe' is BGR minus the ImageNet mean (ResNet50, "
            "VGG), 'torch' standardises (DenseNet), 'none' keeps 0..255. "
            f"Received: preprocess={preprocess!r}"
        )


def image_folder(
    directory,
    image_size: tuple[int, int],
    batch_size: int = 32,
    preprocess: str = "none",
    color_mode: str = "rgb",
) -> tuple[tf.data.Dataset, list[str]]:
    """Images in one sub-folder per class, as a dataset of `(images, labels)`.

    Listed as `keras.utils.image_dataset_from_directory` lists them, in a fixed
    order (not shuffled), labels by sorted sub-folder name, and decoded and
    resized as it does. A file that cannot be decoded (empty, truncated, not an
    image) fails the iteration with a `tf.errors.InvalidArgumentError` naming
    it ("The image data/cat/3.jpg cannot be read: ...").

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
    # Keras lists the files and names the classes (its errors, e.g. "No images found",
    # included); the images are read here, so that a file that cannot be decoded is
    # named in the error instead of TensorFlow's "Unknown image file format".
    listed = keras.utils.image_dataset_from_directory(
        directory,
        labels="inferred",
        label_mode="int",
        color_mode=color_mode,
        image_size=tuple(image_size),
        batch_size=None,
        shuffle=False,
        verbose=False,
    )
    class_names = list(listed.class_names)
    paths = list(listed.file_paths)
    labels = [class_names.index(Path(p).relative_to(directory).parts[0]) for p in paths]
    channels = 3 if color_mode == "rgb" else 1
    dataset = _read_images(paths, labels, tuple(image_size), channels).batch(batch_size)
    return _preprocessed(dataset, preprocess), class_names


def _read_images(paths, labels, image_size, channels):
    """Unbatched `(image, label)` of image files, decoded and resized as Keras'
    `image_dataset_from_directory` does (bilinear, float32), in order.

    A file that cannot be read or decoded fails the iteration with an error naming
    it: its element is dropped (`ignore_errors`), and the gap it leaves in the
    running index is found by `scan` (a sentinel after the last file finds a gap
    at the end).
    """
    count = len(paths)
    paths = tf.constant(paths, tf.string)

    def read(path, label, index):
        image = tf.image.decode_image(
            tf.io.read_file(path), channels=channels, expand_animations=False
        )
        image = tf.image.resize(image, image_size)
        image.set_shape((*image_size, channels))
        return image, label, index

    def check(previous, element):
        missing = tf.gather(paths, tf.minimum(previous + 1, count - 1))
        found = tf.debugging.Assert(
            tf.equal(element[2], previous + 1),
            [
                tf.strings.join(
                    [
                        "The image ",
                        missing,
                        " cannot be read: it is empty, truncated or corrupt, or no JPEG, "
                        "PNG, GIF, BMP or WebP image; remove or replace it.",
                    ]
                )
            ],
        )
        with tf.control_dependencies([found]):
            return tf.identity(element[2]), element

    sentinel = tf.data.Dataset.from_tensors(
        (tf.zeros((*image_size, channels)), tf.constant(0, tf.int32), tf.constant(count, tf.int64))
    )
    dataset = tf.data.Dataset.from_tensor_slices(
        (paths, tf.constant(labels, tf.int32), tf.range(count, dtype=tf.int64))
    )
    dataset = (
        dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .ignore_errors()
        .concatenate(sentinel)
        .scan(tf.constant(-1, tf.int64), check)
        .filter(lambda image, label, index: index < count)
        .map(lambda image, label, index: (image, label))
    )
    return dataset.apply(tf.data.experimental.assert_cardinality(count))


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


def images_for_model(
    model: keras.Model,
    source,
    batch_size: int = 32,
    preprocess: str | None = None,
    *,
    preset=None,
    image_size: tuple[int, int] | None = None,
    split: str = "train",
    data_dir=None,
) -> tuple[tf.data.Dataset, list[str]]:
    """Images of an image folder or a TFDS dataset, as `model` takes them.

    `images`, with the height, width and channels of the model's image input:
    1 channel reads grayscale, 3 read RGB. The model's family is `preset`, else
    the one `kp.points.family` finds in it (a MobileNet is one whatever its
    probe points). Where the input leaves the height and width open (`(None,
    None, 3)`, e.g. `include_top=False`), the images are resized to
    `image_size`, else to the family's. A given `image_size` must fit a fixed
    input. Without `preprocess`, the family's preprocessing is applied
    (`"caffe"` for ResNet50); a grayscale model keeps pixels 0..255; an RGB
    model of no known family is refused with a `ValueError`: its
    preprocessing cannot be guessed, and a wrong one gives wrong numbers
    without any error.

    Args:
        model: a Keras model of one image input `(batch, height, width,
            channels)`; for a `kp.ProbedModel`, that of its base.
        source: an image folder or a TFDS dataset name, as `images` takes it.
        batch_size: images per batch. Defaults to `32`.
        preprocess: one of `PREPROCESSING`. Defaults to the family's (a
            grayscale model's: `"none"`).
        preset: the model's family, a `kp.points.PRESETS` name or a
            `kp.points.Preset`: its preprocessing and input size are the
            defaults. Defaults to `None`: the family `kp.points.family` finds
            in the model, if any.
        image_size: `(height, width)` for an input of open size. Defaults to
            the model's input size, else the family's.
        split: the TFDS split to read (ignored for a folder). Defaults to `"train"`.
        data_dir: TFDS data directory. Defaults to TFDS's own.

    Returns:
        `(dataset, class_names)`, as `images` returns them.

    Example:

    ```python
    base = keras.applications.ResNet50(weights="imagenet", include_top=False)
    train, names = kp.datasets.images_for_model(base, "data/train", preset="resnet50")
    # 224x224 (the preset's size), 'caffe' preprocessing (the preset's)
    ```
    """
    _params.check({"batch_size": _params.Integer(1)}, batch_size=batch_size)
    if isinstance(preset, str) or preset is None:
        _params.check({"preset": _params.Options(*points_lib.PRESETS, None)}, preset=preset)
        preset = points_lib.PRESETS.get(preset)
    elif not isinstance(preset, points_lib.Preset):
        _params.refuse("preset", preset, "a kp.points.PRESETS name, a kp.points.Preset or None")
    if preprocess is not None:
        _check_preprocess(preprocess)
    base = getattr(model, "base", model)
    if preset is None and _graph.is_graph_model(base):
        preset = points_lib.PRESETS.get(points_lib.family(base))
    size, channels = _image_input(base, image_size, preset.image_size if preset else None)
    if preprocess is None:
        preprocess = _default_preprocess(preset, channels)
    return images(
        source,
        size,
        batch_size,
        preprocess,
        split=split,
        color_mode="rgb" if channels == 3 else "grayscale",
        data_dir=data_dir,
    )


def _default_preprocess(preset, channels):
    """The family's preprocessing; none for grayscale; refused for an RGB model of no
    known family, whose pixels may have to be in [-1, 1] or have the mean removed."""
    if preset is not None:
        return preset.preprocess
    if channels == 1:
        return "none"
    raise ValueError(
        "The model's family is unknown (no preset fits it: "
        f"{', '.join(n for n, p in points_lib.PRESETS.items() if p.image_size)}), so how "
        "its images were preprocessed cannot be guessed, and a wrong guess gives wrong "
        "numbers silently. Pass preprocess= one of 'tf' (pixels to [-1, 1]: MobileNet, "
        "Inception), 'caffe' (BGR minus the ImageNet mean: ResNet50, VGG), 'torch' "
        "(standardised: DenseNet) or 'none' (pixels 0..255). Received: preprocess=None"
    )


def _image_input(model, image_size, default_size):
    """`((height, width), channels)` of the images `model` takes."""
    inputs = getattr(model, "inputs", None) or []
    shape = tuple(inputs[0].shape) if len(inputs) == 1 else None
    if shape is None or len(shape) != 4:
        raise ValueError(
            "The model must take one image input of shape (batch, height, width, channels) "
            f"to be fed images. Received: inputs {[tuple(i.shape) for i in inputs]}"
        )
    fixed, channels = shape[1:3], shape[3]
    if channels not in (1, 3):
        raise ValueError(
            f"The model takes images of {channels} channels; images are read as RGB (3) or "
            f"grayscale (1). Received: input shape {shape}"
        )
    if image_size is not None:
        valid = isinstance(image_size, tuple | list) and len(image_size) == 2
        if not valid or not all(_params.Integer(1).accepts(side) for side in image_size):
            _params.refuse("image_size", image_size, "a (height, width) pair of integers >= 1")
        if any(f is not None and f != s for f, s in zip(fixed, image_size, strict=True)):
            _params.refuse("image_size", image_size, f"the model's input size {fixed}")
        return tuple(image_size), channels
    if None not in fixed:
        return fixed, channels
    if default_size is not None:
        return tuple(default_size), channels
    raise ValueError(
        f"The model takes images of shape {shape}: pass image_size=(height, width) to "
        "resize the images to (or a preset of the model's family, whose size it is)."
    )


def check_same_classes(
    train_names: list[str],
    val_names: list[str],
    *,
    sources=None,
    labels: tuple[str, str] = ("train", "val"),
) -> None:
    """Refuses two splits whose labels would mean different classes.

    A label is the index of its class name, so both splits must list the same
    classes in the same order. A TFDS dataset without label names gives
    `"0"`, `"1"`, ...: then only the counts can be compared. An image folder's
    classes are always named (its sub-folders' names, digits included), so
    `sources` tells the two apart.

    Args:
        train_names: the class names of one split, as `images` returns them.
        val_names: those of the other.
        sources: the two `images` sources the names come from. Defaults to
            `None`: both lists are compared as names.
        labels: how the two splits are named in the message. Defaults to
            `("train", "val")`.

    Raises:
        ValueError: naming the classes only one split has, or both orders.

    Example:

    ```python
    train, names = kp.datasets.images("data/train", (224, 224))
    val, val_names = kp.datasets.images("data/val", (224, 224))
    kp.datasets.check_same_classes(names, val_names)
    ```
    """
    train, val = list(train_names), list(val_names)
    folders = [Path(s).expanduser().is_dir() for s in sources] if sources else [True, True]
    unnamed = [
        not folder and names == [str(i) for i in range(len(names))]
        for names, folder in zip((train, val), folders, strict=True)
    ]
    first, second = labels
    if any(unnamed):
        if len(train) != len(val):
            raise ValueError(
                f"{first} has {len(train)} classes and {second} {len(val)}: they must hold "
                "the same classes."
            )
        return
    if train == val:
        return
    only_train = [name for name in train if name not in val]
    only_val = [name for name in val if name not in train]
    if only_train or only_val:
        raise ValueError(
            f"{first} and {second} must hold the same classes (a label is the index of "
            f"its class name): {first} only: {only_train}, {second} only: {only_val}."
        )
    raise ValueError(
        f"{first} and {second} hold the same classes in another order, so their labels "
        f"differ: {first} {train}, {second} {val}."
    )


#: The image files `keras.utils.image_dataset_from_directory` reads.
_IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


def balanced_subset(directory, per_class: int, destination=None) -> Path:
    """A smaller image folder: the first `per_class` images of every class.

    The images are the first by file name in each class sub-folder (all of
    them where a class has fewer), linked symbolically (never copied) into
    the same `class/file` layout, so `images` and `image_folder` read the
    subset as the whole. A quick run on a class-balanced part of the data.

    Args:
        directory: an image folder, one sub-folder of images per class.
        per_class: images per class, an integer >= 1.
        destination: the new folder, created (it must not exist, or be
            empty). Defaults to `None`: a temporary folder, removed when the
            process exits.

    Returns:
        The folder of the subset.

    Example:

    ```python
    root = kp.datasets.imagenette_dir()
    small = kp.datasets.balanced_subset(root / "train", 20)   # 20 images of each class
    train, names = kp.datasets.images(small, (224, 224), preprocess="tf")
    ```
    """
    _params.check({"per_class": _params.Integer(1)}, per_class=per_class)
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"No image folder at {directory}. {_SOURCES}")
    if destination is None:
        destination = Path(tempfile.mkdtemp(prefix="keras_probes_subset_"))
        # rmtree removes the links, never the images they point to.
        atexit.register(shutil.rmtree, destination, ignore_errors=True)
    destination = Path(destination)
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise FileExistsError(
            f"{destination} already exists and is not an empty folder: pass a new one. "
            f"Received: destination={str(destination)!r}"
        )
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        kept = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        (destination / folder.name).mkdir(parents=True)
        for image in kept[:per_class]:
            (destination / folder.name / image.name).symlink_to(image.resolve())
    return destination


def imagenet_indices(class_names: list[str]) -> np.ndarray:
    """The ImageNet-1k class index of each class name.

    Known here: Imagenette's WordNet ids (`IMAGENETTE_CLASSES`), and a list
    of 1000 classes, taken as ImageNet's own in its order. With these, an
    ImageNet classifier's own scores can be read on the dataset's classes
    (`kp.models.classifier_errors`).

    Args:
        class_names: class names, e.g. the sorted WordNet-id folders of
            Imagenette as `images` returns them.

    Returns:
        An int array, the ImageNet index of each name.

    Raises:
        ValueError: for names that are no ImageNet classes known here.

    Example:

    ```python
    kp.datasets.imagenet_indices(["n01440764", "n03888257"])   # array([  0, 701])
    ```
    """
    names = list(class_names)
    if names and all(name in IMAGENETTE_CLASSES for name in names):
        return np.array([IMAGENETTE_CLASSES[name] for name in names])
    if len(names) == 1000:
        return np.arange(1000)
    unknown = [name for name in names if name not in IMAGENETTE_CLASSES][:3]
    _params.refuse(
        "class_names",
        names if len(names) <= 5 else f"[{len(names)} names: {', '.join(unknown)}, ...]",
        "Imagenette's WordNet ids (kp.datasets.IMAGENETTE_CLASSES) or the 1000 ImageNet "
        "classes in order",
        f"No ImageNet index is known here for {unknown}.",
    )


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
