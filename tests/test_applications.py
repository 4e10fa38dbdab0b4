"""Every keras.applications family: a ProbedModel at every layer, one batch predicted."""

import keras
import numpy as np
import pytest

import keras_probes as kp

FAMILIES = {
    "ResNet50": (keras.applications.ResNet50, 64),
    "InceptionV3": (keras.applications.InceptionV3, 75),
    "MobileNetV2": (keras.applications.MobileNetV2, 64),
    "DenseNet121": (keras.applications.DenseNet121, 64),
    "EfficientNetB0": (keras.applications.EfficientNetB0, 64),
    "VGG16": (keras.applications.VGG16, 64),
    "ConvNeXtTiny": (keras.applications.ConvNeXtTiny, 64),
}
PRESET_SIZES = {
    "ResNet50": ("resnet50", 17),
    "InceptionV3": ("inception_v3", 11),
    "VGG16": ("vgg16", 18),
}


# The larger families (10-20 s each here) are in the slow tier; VGG16 (2 s) stays fast.
FAST = {"VGG16"}


@pytest.mark.parametrize(
    "family", [f if f in FAST else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES]
)
def test_probe_every_layer_of_every_family(family):
    constructor, size = FAMILIES[family]
    keras.utils.set_random_seed(0)
    base = constructor(weights=None, input_shape=(size, size, 3), classes=5)
    probed = kp.ProbedModel(base, points="all", num_classes=5)
    assert probed.points == kp.points.available(base)
    x = np.random.default_rng(0).random((2, size, size, 3)).astype("float32") * 255
    outputs = probed.predict_on_batch(x)
    assert set(outputs) == set(probed.points)
    for probabilities in outputs.values():
        assert probabilities.shape == (2, 5)
        np.testing.assert_allclose(np.sum(probabilities, axis=1), 1, rtol=1e-4)
    # The last point is the model's own output, reached by the same graph.
    np.testing.assert_allclose(
        probed.extract_features(x)[probed.points[-1]], base(x), rtol=1e-4, atol=1e-5
    )
    if family in PRESET_SIZES:
        preset, count = PRESET_SIZES[family]
        assert len(kp.ProbedModel(base, points=preset, num_classes=5).points) == count


@pytest.mark.slow
def test_pretrained_mobilenet_from_the_keras_cache():
    """The real `weights="imagenet"` loader, served from the shared cache offline."""
    base = keras.applications.MobileNet(alpha=0.75, weights="imagenet")
    probed = kp.ProbedModel(base, points="mobilenet", num_classes=10)
    assert len(probed.points) == 14
    image = keras.utils.load_img(
        sorted((kp.datasets.imagenette_dir() / "val" / "n03888257").iterdir())[0],
        target_size=(224, 224),
    )
    x = keras.applications.mobilenet.preprocess_input(keras.utils.img_to_array(image)[None])
    assert int(np.argmax(base.predict_on_batch(x))) == kp.datasets.IMAGENETTE_CLASSES["n03888257"]
    direct = keras.Model(base.input, base.get_layer("conv_pw_13_relu").output)(x)
    np.testing.assert_allclose(
        probed.extract_features(x)["conv_pw_13_relu"],
        np.mean(direct, axis=(1, 2)),
        rtol=1e-4,
        atol=1e-5,
    )
