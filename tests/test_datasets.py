"""The real data: MNIST (offline split of the official test set) and Imagenette."""

import numpy as np

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
