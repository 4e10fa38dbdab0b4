"""The real data: MNIST (offline split of the official test set) and Imagenette."""

import re
import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import small_convnet

import keras_probes as kp


def test_mnist_splits_are_real_digits(mnist):
    sizes = [len(mnist.train[0]), len(mnist.val[0]), len(mnist.test[0])]
    if mnist.source.startswith("offline"):
        assert sizes == [7000, 1500, 1500]
        assert "10,000 official MNIST test images" in mnist.source
    else:
        assert sizes == [50000, 10000, 10000]
    for x, y in (mnist.train, mnist.val, mnist.test):
        assert x.shape[1:] == (28, 28) and x.dtype == np.uint8
        assert set(np.unique(y)) == set(range(10))


def test_offline_split_is_seeded_and_disjoint():
    a, b = kp.datasets.mnist(seed=1), kp.datasets.mnist(seed=1)
    np.testing.assert_array_equal(a.train[1], b.train[1])
    if a.source.startswith("offline"):
        total = sum(len(s[0]) for s in (a.train, a.val, a.test))
        assert total == 10_000


def test_imagenette_folder_has_the_ten_classes():
    folder = kp.datasets.imagenette_dir()
    assert sorted(p.name for p in (folder / "train").iterdir()) == sorted(
        kp.datasets.IMAGENETTE_CLASSES
    )


def _png_folder(root, classes, per_class=2, size=8):
    """`root` with one sub-folder of tiny grey PNGs per class name."""
    for i, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            image = np.full((size, size, 1), 40 * i + j, np.uint8)
            tf.io.write_file(str(root / name / f"{j}.png"), tf.io.encode_png(image))
    return root


def test_images_reads_a_folder_with_its_class_names(tmp_path):
    folder = _png_folder(tmp_path / "data", ["cat", "dog"])
    dataset, names = kp.datasets.images(folder, (8, 8), batch_size=4, color_mode="grayscale")
    assert names == ["cat", "dog"]
    x, y = next(iter(dataset))
    assert x.shape == (4, 8, 8, 1) and list(y.numpy()) == [0, 0, 1, 1]


def _rgb_folder(root, per_class=3):
    """`root` with two classes of small RGB images: PNGs, and real JPEGs from Imagenette."""
    jpegs = sorted((kp.datasets.imagenette_dir() / "val" / "n01440764").iterdir())
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
            tf.io.write_file(str(root / name / f"{j}.png"), tf.io.encode_png(image))
        (root / name / "z.jpg").write_bytes(jpegs[0 if name == "a" else 1].read_bytes())
    return root


def test_an_image_folder_reads_as_keras_reads_it(tmp_path):
    folder = _rgb_folder(tmp_path / "data")
    ours, names = kp.datasets.image_folder(folder, (16, 12), batch_size=3)
    theirs = keras.utils.image_dataset_from_directory(
        folder, image_size=(16, 12), batch_size=3, shuffle=False, verbose=False
    )
    assert names == theirs.class_names == ["a", "b"]
    assert int(ours.cardinality()) == int(theirs.cardinality()) == 3
    for (x, y), (x_keras, y_keras) in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(x.numpy(), x_keras.numpy())
        np.testing.assert_array_equal(y.numpy(), y_keras.numpy())


@pytest.mark.parametrize(
    "name, content",
    [
        ("a/1.png", b"not an image at all"),  # in the middle
        ("a/0.png", b""),  # the very first
        ("b/z.jpg", "truncated"),  # the very last: a real JPEG cut in half
    ],
)
def test_a_corrupt_image_is_named_when_it_is_read(tmp_path, name, content):
    folder = _rgb_folder(tmp_path / "data")
    bad = folder / name
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if content == "truncated" else content)
    dataset, _ = kp.datasets.image_folder(folder, (16, 12), batch_size=3)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        for _ in dataset:
            pass
    assert f"The image {bad} cannot be read" in info.value.message, info.value.message
    assert "remove or replace it" in info.value.message


@pytest.mark.parametrize("source", ["./nowhere", "data/nowhere", "~/kp_nowhere", "/kp/nowhere"])
def test_images_answers_a_missing_folder_without_the_tfds_catalogue(source):
    with pytest.raises(FileNotFoundError, match=f"No image folder at {re.escape(source)}") as error:
        kp.datasets.images(source, (8, 8))
    assert "abstract_reasoning" not in str(error.value) and len(str(error.value)) < 300


def test_images_of_a_file_say_it_is_not_a_folder(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG")
    with pytest.raises(FileNotFoundError, match="No image folder at .*x.png: it is a file"):
        kp.datasets.images(tmp_path / "x.png", (8, 8))


def test_images_of_an_unknown_name_suggest_close_tfds_names():
    with pytest.raises(FileNotFoundError, match="No image folder at mnistt") as error:
        kp.datasets.images("mnistt", (8, 8))
    message = str(error.value)
    assert "Close TFDS names: mnist" in message and len(message) < 400, message
    with pytest.raises(ValueError, match="No TFDS dataset named 'mnistt'. Close") as error:
        kp.datasets.tfds_images("mnistt", "train", (8, 8))
    assert "abstract_reasoning" not in str(error.value)


def test_images_of_a_tfds_name_with_a_config_and_its_label_names():
    # `name/config` holds a '/' but is a TFDS name, not a path.
    with tfds.testing.mock_data(num_examples=6):
        dataset, names = kp.datasets.images(
            "imagenette/160px-v2", (8, 8), batch_size=6, split="validation"
        )
    assert names == sorted(kp.datasets.IMAGENETTE_CLASSES)  # Imagenette's own label names
    assert next(iter(dataset))[0].shape == (6, 8, 8, 3)


# -- images as a model takes them ------------------------------------------------


@pytest.fixture(scope="module")
def imagenette_val():
    """The first image of each Imagenette class (real JPEGs, 224x224), linked into a folder."""
    return kp.datasets.balanced_subset(kp.datasets.imagenette_dir() / "val", 1)


def open_size_model(channels=3):
    """A model whose input leaves height and width open, as `include_top=False` does."""
    inputs = keras.Input((None, None, channels))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))


def first_batch(dataset):
    """The first `(images, labels)` of a dataset, or of `(dataset, class_names)`."""
    dataset = dataset[0] if isinstance(dataset, tuple) else dataset
    x, y = next(iter(dataset))
    return np.asarray(x), np.asarray(y)


def test_images_for_model_default_to_the_presets_size_and_preprocessing(imagenette_val):
    dataset, names = kp.datasets.images_for_model(
        open_size_model(), imagenette_val, batch_size=10, preset="mobilenet"
    )
    assert names == sorted(kp.datasets.IMAGENETTE_CLASSES)
    x, y = first_batch(dataset)
    # MobileNet's: 224x224, pixels mapped to [-1, 1] ('tf'), exactly what `images` gives.
    expected, labels = first_batch(kp.datasets.images(imagenette_val, (224, 224), 10, "tf"))
    assert x.shape == (10, 224, 224, 3) and x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(y, labels)
    # Explicit arguments win over the preset's; a Preset object works as its name.
    dataset, _ = kp.datasets.images_for_model(
        open_size_model(),
        imagenette_val,
        10,
        "none",
        preset=kp.points.PRESETS["resnet50"],
        image_size=(32, 48),
    )
    x, _ = first_batch(dataset)
    expected, _ = first_batch(kp.datasets.images(imagenette_val, (32, 48), 10))
    assert x.shape == (10, 32, 48, 3) and x.max() > 1  # pixels as they are, 0..255
    np.testing.assert_array_equal(x, expected)
    # The preset's preprocessing with an explicit size: ResNet50's 'caffe' (BGR, mean removed).
    dataset, _ = kp.datasets.images_for_model(
        open_size_model(), imagenette_val, 10, preset="resnet50", image_size=(32, 48)
    )
    expected, _ = first_batch(kp.datasets.images(imagenette_val, (32, 48), 10, "caffe"))
    np.testing.assert_array_equal(first_batch(dataset)[0], expected)


def named_like_mobilenet(size=None, channels=3):
    """A tiny model whose layers bear the names of the MobileNet preset: of its family."""
    inputs = keras.Input((size, size, channels))
    x = inputs
    for name in kp.points.PRESETS["mobilenet"].layers:
        x = keras.layers.ReLU(name=name)(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def test_images_for_model_take_the_family_found_in_the_model(imagenette_val):
    # No preset given: the model's family (kp.points.family) brings its preprocessing
    # and, for an input of open size, its image size, as `preset="mobilenet"` would.
    model = named_like_mobilenet()
    assert kp.points.family(model) == "mobilenet"
    x, _ = first_batch(kp.datasets.images_for_model(model, imagenette_val, 10))
    expected, _ = first_batch(kp.datasets.images(imagenette_val, (224, 224), 10, "tf"))
    np.testing.assert_array_equal(x, expected)
    # Explicit arguments still win.
    dataset = kp.datasets.images_for_model(model, imagenette_val, 10, "none", image_size=(8, 8))
    expected, _ = first_batch(kp.datasets.images(imagenette_val, (8, 8), 10))
    np.testing.assert_array_equal(first_batch(dataset)[0], expected)


def test_images_for_model_refuse_to_guess_the_preprocessing_of_an_unknown_rgb_model(
    imagenette_val, tmp_path
):
    # An RGB network of no known family: 0..255 pixels fed to a network trained on
    # [-1, 1] give wrong numbers silently, so the preprocessing must be said.
    with pytest.raises(ValueError) as info:
        kp.datasets.images_for_model(open_size_model(), imagenette_val, 10, image_size=(8, 8))
    message = str(info.value)
    assert "no preset fits it" in message and "Received: preprocess=None" in message
    for mode in ("'tf'", "'caffe'", "'torch'", "'none'"):
        assert mode in message
    dataset = kp.datasets.images_for_model(
        open_size_model(), imagenette_val, 10, "none", image_size=(8, 8)
    )
    assert first_batch(dataset)[0].max() > 1  # pixels as they are
    # A grayscale model: no keras.applications preprocessing applies, pixels stay 0..255.
    folder = _png_folder(tmp_path / "grey", ["a", "b"], size=28)
    x, _ = first_batch(kp.datasets.images_for_model(small_convnet(), folder, 4))
    assert x.shape == (4, 28, 28, 1) and x.max() > 1


def test_images_for_model_take_a_fixed_input_size_and_its_channels(tmp_path, mnist):
    folder = tmp_path / "digits"
    (x, y) = mnist.test
    for digit in (3, 8):
        (folder / str(digit)).mkdir(parents=True)
        for i, image in enumerate(x[y == digit][:3]):
            tf.io.write_file(
                str(folder / str(digit) / f"{i}.png"), tf.io.encode_png(image[..., None])
            )
    # A ProbedModel counts as its base: 28x28x1, grayscale, whatever the preset says.
    probed = kp.ProbedModel(small_convnet(), points=["gap"], num_classes=2)
    dataset, names = kp.datasets.images_for_model(probed, folder, 6, preset="mobilenet")
    images, labels = first_batch(dataset)
    assert names == ["3", "8"] and images.shape == (6, 28, 28, 1)
    assert images.min() >= -1 and images.max() <= 1  # the preset's 'tf' preprocessing
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(images[:3, ..., 0], x[y == 3][:3] / 127.5 - 1, atol=1e-6)


@pytest.mark.parametrize(
    "model, kwargs, message",
    [
        (small_convnet, {"image_size": (32, 32)},
         r"`image_size` must be the model's input size \(28, 28\). "
         r"Received: image_size=\(32, 32\)"),
        (small_convnet, {"image_size": (0, 28)},
         r"`image_size` must be a \(height, width\) pair of integers >= 1"),
        (open_size_model, {}, r"pass image_size=\(height, width\)"),
        (open_size_model, {"preset": "resnet"}, "`preset` must be one of 'resnet50', "),
        (lambda: open_size_model(4), {}, "The model takes images of 4 channels"),
        (open_size_model, {"batch_size": 0}, "`batch_size` must be an integer >= 1"),
        (open_size_model, {"preprocess": "keras"}, "`preprocess` must be one of"),
    ],
)  # fmt: skip
def test_images_for_model_refuse_what_cannot_feed_it(imagenette_val, model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        dataset, _ = kp.datasets.images_for_model(model(), imagenette_val, **kwargs)
        next(iter(dataset))


# -- the classes of two splits -----------------------------------------------------


def test_check_same_classes_names_what_differs():
    kp.datasets.check_same_classes(["cat", "dog"], ["cat", "dog"])
    with pytest.raises(ValueError, match=r"train only: \['dog'\], val only: \['fox'\]"):
        kp.datasets.check_same_classes(["cat", "dog"], ["cat", "fox"])
    with pytest.raises(ValueError, match=r"in another order, .*: --data \['cat', 'dog'\], --v"):
        kp.datasets.check_same_classes(
            ["cat", "dog"], ["dog", "cat"], labels=("--data", "--val-data")
        )


def test_check_same_classes_compares_only_counts_where_tfds_has_no_names(tmp_path):
    for name in ("0", "1", "2"):
        (tmp_path / "folder" / name).mkdir(parents=True)
    digits = ["0", "1", "2"]
    # A TFDS dataset without label names ("0", "1", ...): counts only.
    kp.datasets.check_same_classes(digits, ["0", "1", "2"], sources=(tmp_path / "folder", "mnist"))
    with pytest.raises(ValueError, match="train has 3 classes and val 10: they must hold"):
        kp.datasets.check_same_classes(digits, [str(i) for i in range(10)], sources=("x", "mnist"))
    # Two folders: their sub-folder names are names, digits included.
    with pytest.raises(ValueError, match=r"train only: \['2'\], val only: \['3'\]"):
        kp.datasets.check_same_classes(
            digits, ["0", "1", "3"], sources=(tmp_path / "folder", tmp_path / "folder")
        )


# -- a class-balanced subset -------------------------------------------------------


def test_balanced_subset_links_the_first_images_of_every_class(tmp_path):
    root = kp.datasets.imagenette_dir() / "train"
    subset = kp.datasets.balanced_subset(root, 3, destination=tmp_path / "subset")
    assert subset == tmp_path / "subset"
    assert sorted(p.name for p in subset.iterdir()) == sorted(kp.datasets.IMAGENETTE_CLASSES)
    for folder in subset.iterdir():
        first = sorted((root / folder.name).iterdir())[:3]
        links = sorted(folder.iterdir())
        assert [p.name for p in links] == [p.name for p in first]
        assert all(
            p.is_symlink() and p.resolve() == f.resolve() for p, f in zip(links, first, strict=True)
        )
    dataset, names = kp.datasets.images(subset, (16, 16), batch_size=64)
    labels = np.concatenate([y for _, y in dataset])
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 3))
    assert names == sorted(kp.datasets.IMAGENETTE_CLASSES)


def test_balanced_subset_counts_only_images_and_keeps_a_small_class_whole(tmp_path):
    folder = _png_folder(tmp_path / "data", ["a", "b"], per_class=3)
    # Files Keras does not read as images, one sorting before them all: not counted.
    (folder / "a" / "0_readme.md").write_text("not an image")
    (folder / "LICENSE").write_text("not a class")  # a file beside the classes: no class
    subset = kp.datasets.balanced_subset(folder, 2)
    assert sorted(p.name for p in subset.iterdir()) == ["a", "b"]
    assert sorted(p.name for p in (subset / "a").iterdir()) == ["0.png", "1.png"]
    assert len(list((kp.datasets.balanced_subset(folder, 5) / "b").iterdir())) == 3
    assert subset.parent == Path(tempfile.gettempdir())  # a temporary folder by default


@pytest.mark.parametrize(
    "per_class, destination, error, message",
    [
        (0, None, ValueError, "`per_class` must be an integer >= 1. Received: per_class=0"),
        (2.5, None, ValueError, "`per_class` must be an integer >= 1"),
        (2, "busy", FileExistsError, "already exists and is not an empty folder"),
    ],
)
def test_balanced_subset_refuses(tmp_path, per_class, destination, error, message):
    folder = _png_folder(tmp_path / "data", ["a", "b"])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    destination = destination and tmp_path / destination
    with pytest.raises(error, match=message):
        kp.datasets.balanced_subset(folder, per_class, destination=destination)
    with pytest.raises(FileNotFoundError, match="No image folder at"):
        kp.datasets.balanced_subset(tmp_path / "nowhere", 2)


# -- ImageNet indices --------------------------------------------------------------


def test_imagenet_indices_of_imagenette_and_of_1000_classes():
    names = sorted(kp.datasets.IMAGENETTE_CLASSES)
    indices = kp.datasets.imagenet_indices(names)
    # The indices the shared data's README lists, in sorted-wnid order.
    np.testing.assert_array_equal(indices, [0, 217, 482, 491, 497, 566, 569, 571, 574, 701])
    np.testing.assert_array_equal(
        kp.datasets.imagenet_indices(["n03888257", "n01440764"]), [701, 0]
    )
    np.testing.assert_array_equal(
        kp.datasets.imagenet_indices([f"class_{i}" for i in range(1000)]), np.arange(1000)
    )


@pytest.mark.parametrize("names", [["n01440764", "cat"], ["0", "1", "2"], []])
def test_imagenet_indices_refuse_other_classes(names):
    with pytest.raises(ValueError, match="`class_names` must be Imagenette's WordNet ids"):
        kp.datasets.imagenet_indices(names)
