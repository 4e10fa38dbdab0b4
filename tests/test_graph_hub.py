"""keras-hub backbones and tasks: integer inputs are never points, encoders that loop
over their blocks are unrolled, and "blocks" finds every family's block outputs."""

import keras
import keras_hub
import numpy as np
import pytest
from conftest import small_convnet, tiny_bert, tiny_gemma

import keras_probes as kp

IMAGES = np.random.default_rng(0).random((2, 16, 16, 3)).astype("float32")
TOKENS = {
    "token_ids": np.array([[2, 7, 9, 4, 0, 0], [3, 5, 0, 0, 0, 0]], dtype="int32"),
    "segment_ids": np.zeros((2, 6), dtype="int32"),
    "padding_mask": np.array([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]], dtype="bool"),
}


@pytest.fixture(scope="module")
def bert():
    return tiny_bert(vocabulary_size=50, hidden_dim=8, max_sequence_length=6)


@pytest.fixture(scope="module")
def vit():
    keras.utils.set_random_seed(0)
    return keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16
    )


@pytest.fixture(scope="module")
def dinov2():
    keras.utils.set_random_seed(0)
    return keras_hub.models.DINOV2Backbone(
        patch_size=4,
        num_layers=2,
        hidden_dim=8,
        num_heads=2,
        intermediate_dim=16,
        image_shape=(16, 16, 3),
        position_embedding_shape=(16, 16),
    )


def test_integer_inputs_are_inputs_but_never_points(bert):
    points = kp.points.resolve(bert, "all")
    assert not {"token_ids", "segment_ids", "padding_mask"} & set(points)
    assert points[0] == "token_embedding"
    assert kp.points.available(bert) == points
    for name in ("token_ids", "padding_mask"):
        with pytest.raises(ValueError, match=f"'{name}' cannot be a probe point: its output is"):
            kp.points.resolve(bert, [name])
    # The model is still fed all three: the masks matter to the blocks.
    probed = kp.ProbedModel(bert, points="blocks", num_classes=2, reducers="gap")
    assert set(probed.feature_model.input) == set(TOKENS)
    features = probed.extract_features(TOKENS)["transformer_layer_1"]
    sequence = np.asarray(bert(TOKENS)["sequence_output"])
    # The same computation; only the mean over tokens is summed in another order.
    np.testing.assert_allclose(features, sequence.mean(axis=1), rtol=1e-6, atol=1e-7)


def test_integer_layer_outputs_are_not_points():
    ids = keras.Input((4,), dtype="int32", name="ids")
    embedded = keras.layers.Embedding(10, 3, name="embedding")(ids)
    # Operations in the graph, as keras-hub backbones build their masks.
    argmax = keras.ops.argmax(embedded, axis=-1)
    flags = keras.ops.greater(embedded, 0)
    model = keras.Model(ids, [argmax, flags, keras.layers.Dense(2, name="out")(embedded)])
    assert kp.points.available(model) == ["embedding", "out"]
    with pytest.raises(ValueError, match="'argmax' cannot be a probe point: its output is int"):
        kp.points.resolve(model, "argmax")
    with pytest.raises(ValueError, match="'greater' cannot be a probe point: its output is bool"):
        kp.points.resolve(model, "greater")


def test_blocks_of_transformer_backbones(bert):
    assert kp.points.resolve(bert, "blocks") == ["transformer_layer_0", "transformer_layer_1"]
    gemma = tiny_gemma()
    assert kp.points.resolve(gemma, "blocks") == ["decoder_block_0", "decoder_block_1"]
    assert kp.points.resolve(gemma, "decoder_blocks") == ["decoder_block_0", "decoder_block_1"]


def test_blocks_of_a_task_are_found_in_its_backbone(bert):
    classifier = keras_hub.models.BertTextClassifier(
        backbone=bert, num_classes=2, preprocessor=None
    )
    blocks = [f"{bert.name}/transformer_layer_0", f"{bert.name}/transformer_layer_1"]
    assert kp.points.resolve(classifier, "blocks") == blocks
    # The task's `.backbone` attribute is a name for its backbone's path.
    assert kp.points.resolve(classifier, ["backbone/transformer_layer_1"]) == blocks[1:]


def test_vit_encoder_is_unrolled_into_its_blocks(vit):
    points = kp.points.available(vit)
    assert points == [
        "images",
        "vit_patching_and_embedding",
        "vit_encoder/dropout",
        "vit_encoder/transformer_block_1",
        "vit_encoder/transformer_block_2",
        "vit_encoder/ln",
        "vit_encoder",
    ]
    blocks = ["vit_encoder/transformer_block_1", "vit_encoder/transformer_block_2"]
    assert kp.points.resolve(vit, "blocks") == kp.points.resolve(vit, "vit") == blocks
    # The same layers in the same order: bit for bit the model's own output.
    probed = kp.ProbedModel(vit, points=["vit_encoder"], num_classes=2, reducers="flatten")
    features = probed.extract_features(IMAGES)["vit_encoder"]
    np.testing.assert_array_equal(features, np.asarray(vit(IMAGES)).reshape(2, -1))


def test_dinov2_encoder_is_unrolled_into_its_layers(dinov2):
    points = kp.points.available(dinov2)
    assert points == ["images", "embeddings", "encoder/layers_0", "encoder/layers_1", "layernorm"]
    assert kp.points.resolve(dinov2, "blocks") == ["encoder/layers_0", "encoder/layers_1"]
    x = {"images": IMAGES}
    probed = kp.ProbedModel(dinov2, points=["layernorm"], num_classes=2, reducers="flatten")
    features = probed.extract_features(x)["layernorm"]
    np.testing.assert_array_equal(features, np.asarray(dinov2(x)).reshape(2, -1))
    # The encoder itself returns (x, pyramid outputs), as before: not a point.
    with pytest.raises(ValueError, match="'encoder' cannot be a probe point: it returns 3"):
        kp.points.resolve(dinov2, ["encoder"])
    # Loaded from a config (as from a preset) the backbone's name prefixes the encoder's.
    named = keras_hub.models.DINOV2Backbone.from_config(dinov2.get_config())
    assert kp.points.resolve(named, "dinov2") == [
        "dinov2_backbone_encoder/layers_0",
        "dinov2_backbone_encoder/layers_1",
    ]


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
def test_blocks_of_resnet50_are_its_preset(bert):
    base = keras.applications.ResNet50(weights=None)
    assert kp.points.resolve(base, "blocks") == kp.points.resolve(base, "resnet50")
    # The family "blocks" picks (the CLI takes its preprocessing and image size).
    assert kp.points.family(base) == "resnet50"
    assert kp.points.family(bert) == "transformer_layers"
    inputs = keras.Input((4,))
    assert kp.points.family(keras.Model(inputs, keras.layers.Dense(2)(inputs))) is None


def test_a_point_inside_an_opaque_layer_says_why(bert):
    class Twice(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(4, name="dense")

        def call(self, x):
            return self.dense(self.dense(x))

    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, Twice(name="twice")(inputs))
    with pytest.raises(ValueError) as error:
        kp.points.resolve(model, ["twice/dense"])
    message = str(error.value)
    assert "'twice/dense' is inside layer 'twice' (Twice)" in message
    assert "runs its sub-layers inside its own call()" in message
    assert "Probe its output ('twice') or write the model functionally" in message
    # A layer without sub-layers is only an unknown name.
    with pytest.raises(ValueError, match="Unknown probe point 'x/kernel'"):
        kp.points.resolve(model, ["x/kernel"])
    with pytest.raises(ValueError, match=r"inside layer 'transformer_layer_0' \(Transformer"):
        kp.points.resolve(bert, ["transformer_layer_0/self_attention"])


def test_blocks_without_a_family_lists_the_families_and_the_fix():
    with pytest.raises(ValueError) as error:
        kp.points.resolve(small_convnet(), "blocks")
    message = str(error.value)
    assert message.startswith("No family of blocks fits model")
    assert all(name in message for name in kp.points.PRESETS)
    assert "kp.points.matching(regex)" in message
    assert message.endswith("Received: points='blocks'")
    with pytest.raises(ValueError, match="Pass a preset .*, 'all', 'blocks', layer names"):
        kp.points.resolve(small_convnet(), [])


def test_presets_are_layers_or_a_pattern():
    assert kp.points.PRESETS["resnet50"].layers[:2] == ("conv1_relu", "conv2_block1_out")
    assert kp.points.PRESETS["vit"].pattern == r"vit_encoder/transformer_block_\d+"
    with pytest.raises(ValueError, match="exactly one of `layers` .* and `pattern`"):
        kp.points.Preset("both", layers=("a",), pattern="b")
    with pytest.raises(ValueError, match="exactly one of `layers` .* and `pattern`"):
        kp.points.Preset("neither")
    assert kp.points.Preset("listed", ["a", "b"], image_size=[2, 2]).layers == ("a", "b")


def test_groups_inside_a_list_of_points(bert):
    """ "blocks", "all" and presets also work as items of a list; a point of that name wins."""
    assert kp.points.resolve(bert, ["embeddings_layer_norm", "blocks"]) == [
        "embeddings_layer_norm",
        "transformer_layer_0",
        "transformer_layer_1",
    ]
    assert kp.points.resolve(bert, ["pooled_dense", "transformer_layers"])[-1] == "pooled_dense"
    assert kp.points.resolve(bert, ["all", "pooled_dense"]) == kp.points.resolve(bert, "all")
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2, name="blocks")(inputs))
    assert kp.points.resolve(model, ["blocks"]) == ["blocks"]
