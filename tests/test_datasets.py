"""The real data: MNIST (offline split of the official test set) and Imagenette."""

import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

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
