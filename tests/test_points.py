"""Probe points: names, 'all', selectors, presets, nesting and the errors."""

import re

import keras
import numpy as np
import pytest
from conftest import small_convnet

import keras_probes as kp


@pytest.fixture(scope="module")
def resnet50():
    return keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)


def test_names_come_back_in_depth_order():
    model = small_convnet()
    points = kp.points.resolve(model, ["predictions", "conv1", "relu2", "conv1"])
    assert points == ["conv1", "relu2", "predictions"]


def test_all_is_the_input_and_every_layer():
    model = small_convnet()
    points = kp.points.resolve(model, "all")
    assert points == [layer.name for layer in model.layers]
    assert points[0] == "image"  # the paper's first probe: on the input itself
    assert points == kp.points.available(model)


def test_matching_and_of_type_select_by_pattern_and_class():
    model = small_convnet()
    assert kp.points.resolve(model, kp.points.matching(r"relu\d")) == ["relu1", "relu2"]
    selected = kp.points.resolve(model, kp.points.of_type(keras.layers.Conv2D))
    assert selected == ["conv1", "conv2"]
    mixed = kp.points.resolve(model, [kp.points.of_type(keras.layers.ReLU), "gap", "conv1"])
    assert mixed == ["conv1", "relu1", "relu2", "gap"]


def test_resnet50_preset_is_the_papers_17_points(resnet50):
    points = kp.points.resolve(resnet50, "resnet50")
    assert len(points) == 17
    assert points[0] == "conv1_relu"
    assert points[1:4] == ["conv2_block1_out", "conv2_block2_out", "conv2_block3_out"]
    assert points[-1] == "conv5_block3_out"
    assert sum(p.startswith("conv4_") for p in points) == 6


def test_preset_found_inside_a_nested_base(resnet50):
    model = keras.Sequential(
        [keras.Input((64, 64, 3)), resnet50, keras.layers.Dense(3, name="new_head")]
    )
    points = kp.points.resolve(model, "resnet50")
    assert len(points) == 17
    assert all(p.startswith(f"{resnet50.name}/") for p in points)


def test_nested_layers_are_addressed_by_path(resnet50):
    model = keras.Sequential(
        [keras.Input((64, 64, 3)), resnet50, keras.layers.Dense(3, name="top")]
    )
    available = kp.points.available(model)
    inner = f"{resnet50.name}/conv3_block1_out"
    assert inner in available
    # The sub-model's own output comes after its layers, then what follows it.
    assert available.index(inner) < available.index(resnet50.name) < available.index("top")


def test_unknown_name_names_the_closest_valid_ones(resnet50):
    with pytest.raises(ValueError) as error:
        kp.points.resolve(resnet50, ["conv9_block1_out"])
    message = str(error.value)
    assert "Unknown probe point 'conv9_block1_out'" in message
    assert "Close matches: conv5_block1_out, conv4_block1_out" in message
    assert "kp.points.available(model)" in message
    assert "Received: points=['conv9_block1_out']" in message


def test_nested_name_without_prefix_suggests_the_path(resnet50):
    model = keras.Sequential([keras.Input((64, 64, 3)), resnet50])
    with pytest.raises(ValueError, match=f"Close matches: {resnet50.name}/conv2_block1_out"):
        kp.points.resolve(model, "conv2_block1_out")


def test_preset_that_does_not_fit_says_what_is_missing():
    with pytest.raises(ValueError, match="Preset 'resnet50' does not fit .* Missing layers"):
        kp.points.resolve(small_convnet(), "resnet50")


@pytest.mark.parametrize(
    "points, match",
    [
        (kp.points.matching("nothing_here"), "matched no layer"),
        ([], "Invalid points"),
        ([3], "Invalid point 3"),
    ],
)
def test_bad_specifications(points, match):
    with pytest.raises(ValueError, match=match):
        kp.points.resolve(small_convnet(), points)


@pytest.mark.parametrize("make", [kp.points.matching, lambda p: kp.points.Preset("x", pattern=p)])
def test_a_bad_regular_expression_is_one_value_error_naming_it(make):
    # Not a bare re.error: a ValueError naming the pattern and what is wrong in it.
    with pytest.raises(ValueError) as info:
        make("conv(")
    message = str(info.value)
    assert not isinstance(info.value, re.error)
    assert "'conv('" in message and "missing ), unterminated subpattern" in message
    assert "\n" not in message


def test_matching_needs_a_string():
    with pytest.raises(TypeError, match=r"a regular expression string.*Received: pattern=3"):
        kp.points.matching(3)


def test_of_type_needs_layer_classes():
    with pytest.raises(TypeError, match="keras.Layer subclasses"):
        kp.points.of_type("Conv2D")


def test_shared_and_multi_output_layers_are_left_out_of_all_and_refused_by_name():
    shared = keras.layers.Dense(4, name="shared")
    inputs = keras.Input((5, 4), name="x")
    added = keras.layers.Add(name="add")([shared(inputs), shared(inputs * 2)])
    _, state_h, _ = keras.layers.LSTM(3, return_state=True, name="lstm")(added)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(state_h))
    points = kp.ProbedModel(model, points="all", num_classes=2).points
    assert "shared" not in points and "lstm" not in points
    assert points[0] == "x" and "add" in points and points[-1] == "out"
    with pytest.raises(ValueError, match="'shared' cannot be a probe point: it is called more"):
        kp.ProbedModel(model, points=["shared"], num_classes=2)
    with pytest.raises(ValueError, match="'lstm' cannot be a probe point: it returns 3 tensors"):
        kp.ProbedModel(model, points=["lstm"], num_classes=2)


def test_subclassed_base_is_refused_with_the_fix():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 4)))
    with pytest.raises(TypeError, match="subclassed Net.*Functional or Sequential"):
        kp.ProbedModel(net, num_classes=3)


def test_unbuilt_sequential_says_how_to_build_it():
    model = keras.Sequential([keras.layers.Dense(3, name="d")])
    with pytest.raises(ValueError, match="no defined input yet"):
        kp.ProbedModel(model, points="all", num_classes=3)


@pytest.mark.parametrize(
    "name, family, build",
    [
        ("resnet50", keras.applications.resnet50, keras.applications.ResNet50),
        pytest.param(
            "inception_v3",
            keras.applications.inception_v3,
            keras.applications.InceptionV3,
            marks=pytest.mark.slow,
        ),
        ("mobilenet", keras.applications.mobilenet, keras.applications.MobileNet),
        pytest.param(
            "vgg16", keras.applications.vgg16, keras.applications.VGG16, marks=pytest.mark.slow
        ),
    ],
)
def test_presets_carry_the_preprocessing_and_input_size_of_their_family(name, family, build):
    preset = kp.points.PRESETS[name]
    # The family's own preprocess_input is the preset's keras.applications mode.
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.applications.imagenet_utils.preprocess_input(pixels.copy(), mode=preset.preprocess),
        family.preprocess_input(pixels.copy()),
        rtol=1e-6,
    )
    # Its ImageNet network (with its top) takes images of the preset's size, and has the
    # preset's points.
    base = build(weights=None)
    assert base.input_shape[1:] == (*preset.image_size, 3)
    assert kp.points.resolve(base, name) == list(preset.layers)
