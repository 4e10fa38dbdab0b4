"""Probes on keras-hub transformers: masked reducers, per-token probes, control tasks.

The backbones are keras-hub's own classes, built from small configs (no
download); their inputs are dicts with a `padding_mask`, and the sequences
here are padded to different lengths so that the mask always matters.
"""

import json
import re
import shutil

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from conftest import objective, tiny_bert, tiny_gemma
from sklearn.linear_model import LogisticRegression
from tensorflow_serving.apis import prediction_log_pb2

import keras_probes as kp

TOKENS, VOCABULARY = 12, 40
BLOCKS = kp.points.matching(r"transformer_layer_\d")


@pytest.fixture(scope="module")
def bert():
    return tiny_bert(vocabulary_size=VOCABULARY, max_sequence_length=TOKENS)


def token_batch(n, seed=0, padded_id=0):
    """`n` right-padded sequences of 3 to TOKENS tokens: inputs and per-token labels.

    The label of a token is its id modulo 3 (what the token embedding alone tells),
    -1 at padded positions.
    """
    rng = np.random.default_rng(seed)
    kept = np.arange(TOKENS)[None] < rng.integers(3, TOKENS + 1, n)[:, None]
    ids = np.where(kept, rng.integers(5, VOCABULARY, (n, TOKENS)), padded_id).astype("int32")
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": kept}
    return x, np.where(kept, ids % 3, -1)


def layer_output(base, name, x):
    return keras.Model(base.input, base.get_layer(name).output)(x, training=False).numpy()


def test_masked_reducers_match_numpy_on_the_layer_outputs(bert):
    x, _ = token_batch(16)
    kept = x["padding_mask"]
    hidden = layer_output(bert, "transformer_layer_1", x)
    last = kept.sum(axis=1) - 1
    expected = {
        "mean": np.stack([h[k].mean(axis=0) for h, k in zip(hidden, kept, strict=True)]),
        "first": hidden[:, 0],
        "last": hidden[np.arange(len(hidden)), last],
    }
    for mode, reference in expected.items():
        probed = kp.ProbedModel(bert, points="transformer_layer_1", num_classes=3, reducers=mode)
        features = probed.extract_features(x)["transformer_layer_1"].numpy()
        # The mean sums in another order than NumPy: float32 rounding only.
        np.testing.assert_allclose(features, reference, rtol=1e-5, atol=1e-6, err_msg=mode)
    # "auto" picks the masked mean for token sequences of a model with a padding mask.
    probed = kp.ProbedModel(bert, points=BLOCKS, num_classes=3)
    assert all(
        isinstance(r, kp.TokenPooling) and r.mode == "mean" for r in probed.reducers.values()
    )


@pytest.mark.parametrize("reducers", ["mean", "first", "last", "tokens"])
def test_features_do_not_change_when_padded_positions_change(bert, reducers):
    """Bit for bit: the padded tokens' ids and segments never reach a kept feature."""
    x, _ = token_batch(16)
    kept = x["padding_mask"]
    other = dict(x)
    other["token_ids"] = np.where(kept, x["token_ids"], 7).astype("int32")
    other["segment_ids"] = np.where(kept, 0, 1).astype("int32")
    probed = kp.ProbedModel(bert, points=BLOCKS, num_classes=3, reducers=reducers)
    before, after = probed.extract_features(x), probed.extract_features(other)
    for point in probed.points:
        a, b = before[point].numpy(), after[point].numpy()
        if reducers == "tokens":
            a, b = a[kept], b[kept]
        np.testing.assert_array_equal(a, b, err_msg=point)


def test_last_kept_token_of_a_decoder_ignores_padding():
    gemma = tiny_gemma(vocabulary_size=VOCABULARY)
    x, _ = token_batch(8)
    x = {"token_ids": x["token_ids"], "padding_mask": x["padding_mask"]}
    probed = kp.ProbedModel(
        gemma, points=kp.points.matching(r"decoder_block_\d"), num_classes=2, reducers="last"
    )
    other = dict(x, token_ids=np.where(x["padding_mask"], x["token_ids"], 3).astype("int32"))
    before, after = probed.extract_features(x), probed.extract_features(other)
    last = x["padding_mask"].sum(axis=1) - 1
    for point in probed.points:
        np.testing.assert_array_equal(before[point].numpy(), after[point].numpy())
        hidden = layer_output(gemma, point, x)[np.arange(len(last)), last]
        np.testing.assert_array_equal(before[point].numpy(), hidden)


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
def test_all_points_of_bert(bert):
    """`"all"` on BERT: no integer input is a point; every output gets a reducer that fits."""
    probed = kp.ProbedModel(bert, points="all", num_classes=3)
    assert not {"token_ids", "segment_ids", "padding_mask"} & set(probed.points)
    assert {"transformer_layer_0", "transformer_layer_1", "pooled_dense"} <= set(probed.points)
    x, y = token_batch(32)
    probed.compile()
    probed.fit(x, y[:, 0], epochs=1, batch_size=16, verbose=0)
    outputs = probed.predict(x, verbose=0)
    assert {p: v.shape for p, v in outputs.items()} == {p: (32, 3) for p in probed.points}


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
def test_per_token_fit_and_evaluate_count_kept_tokens_only(bert):
    x, y = token_batch(64)
    kept = x["padding_mask"]
    probed = kp.ProbedModel(bert, points=BLOCKS, num_classes=3, reducers="tokens")
    probed.compile(optimizer=keras.optimizers.Adam(0.05))
    history = probed.fit(x, y, epochs=3, batch_size=16, verbose=0)
    assert (
        history.history["transformer_layer_0/loss"][-1]
        < history.history["transformer_layer_0/loss"][0]
    )
    outputs = probed.predict(x, verbose=0)
    assert outputs["transformer_layer_1"].shape == (64, TOKENS, 3)
    report = probed.evaluate_probes(x, y, verbose=0)
    for point in probed.points:
        predicted = outputs[point].argmax(axis=-1)
        error = np.mean(predicted[kept] != y[kept])
        assert report.results["test"][point]["error"] == pytest.approx(error, abs=1e-6)
    # Sample weights per sequence, then per token, on one model (Keras retraces).
    weights = np.linspace(0.5, 1.5, 64).astype("float32")
    probed.fit(x, y, sample_weight=weights, epochs=1, batch_size=16, verbose=0)
    token_weights = np.where(kept, 1.0, 0.0).astype("float32")
    probed.fit(x, y, sample_weight=token_weights, epochs=1, batch_size=16, verbose=0)
    report = probed.evaluate_probes(x, y, verbose=0)
    outputs = probed.predict(x, verbose=0)
    # Any label at a padded token: the same report. A dataset: the same too.
    other = np.where(kept, y, 99)
    assert probed.evaluate_probes(x, other, verbose=0).results == report.results
    dataset = tf.data.Dataset.from_tensor_slices((x, other)).batch(10)
    streamed = probed.evaluate_probes(dataset, verbose=0).results["test"]
    for point in probed.points:
        for metric in ("error", "loss"):
            assert streamed[point][metric] == pytest.approx(
                report.results["test"][point][metric], rel=1e-5
            )


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
@pytest.mark.numerics
def test_per_token_cache_and_lbfgs_reach_scikit_learns_optimum(bert, tmp_path):
    """A cache row per kept token, equal to the features there; L-BFGS within 1% of
    scikit-learn's optimum on those rows (invariant 3, per token)."""
    l2 = 1e-3
    x, y = token_batch(96)
    xv, yv = token_batch(48, seed=1)
    probed = kp.ProbedModel(bert, points=BLOCKS, num_classes=3, reducers="tokens")
    for split, data in {"train": (x, y), "val": (xv, yv)}.items():
        kp.FeatureCache.write(probed, data, tmp_path, split=split, batch_size=32, verbose=0)
    cache = kp.FeatureCache.open(tmp_path, model=probed)
    kept = x["padding_mask"]
    features, labels = cache.arrays("train")
    assert cache.num_examples("train") == kept.sum()
    np.testing.assert_array_equal(labels, y[kept])
    np.testing.assert_array_equal(cache.token_ids("train"), x["token_ids"][kept])
    direct = probed.extract_features(x)
    for point in probed.points:
        # Batches of 32 here, of 96 there: equal up to float32 rounding.
        np.testing.assert_allclose(features[point], direct[point].numpy()[kept], atol=1e-5)
    report = kp.fit_probes(probed, cache, solver="lbfgs", l2=l2, verbose=0)
    n = len(labels)
    for point in probed.points:
        reference = LogisticRegression(C=1 / (l2 * n), tol=1e-10, max_iter=10_000)
        reference.fit(features[point], labels)
        optimum = objective(features[point], labels, reference.coef_.T, reference.intercept_, l2)
        kernel, bias = probed.get_probe(point).get_weights()
        ours = objective(features[point], labels, kernel, bias, l2)
        assert optimum * (1 - 1e-4) <= ours <= optimum * 1.01, (point, ours, optimum)
        # The ids tell the labels: far below the majority class's 0.66 (seen 0.24-0.45
        # over backbone seeds 0-3).
        assert report.results["train"][point]["error"] < 0.6
    # The fitted heads are the model's: its per-token predictions give the val error.
    outputs = probed.predict(xv, verbose=0)
    for point in probed.points:
        error = np.mean(outputs[point].argmax(-1)[xv["padding_mask"]] != yv[xv["padding_mask"]])
        assert report.results["val"][point]["error"] == pytest.approx(error, abs=0.02)


def test_pooled_cache_from_a_stream_of_sequences_of_other_lengths(bert, tmp_path):
    """A stream whose batches have other token counts is cut into cache batches padded to
    their longest sequence; the masked mean does not see the padding."""
    x, y = token_batch(24)
    short = {key: value[:12, :6] for key, value in x.items()}
    short["padding_mask"] = short["padding_mask"] & x["padding_mask"][:12, :6]
    stream = tf.data.Dataset.from_tensor_slices((short, y[:12, 0])).batch(12)
    stream = stream.concatenate(tf.data.Dataset.from_tensor_slices((x, y[:, 0])).batch(12))
    probed = kp.ProbedModel(bert, points=BLOCKS, num_classes=3, reducers="mean")
    kp.FeatureCache.write(probed, stream, tmp_path, split="train", batch_size=8, verbose=0)
    features, labels = kp.FeatureCache.open(tmp_path, model=probed).arrays("train")
    assert len(labels) == 36
    direct = probed.extract_features(short)
    for point in probed.points:
        np.testing.assert_allclose(features[point][:12], direct[point].numpy(), atol=1e-5)


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
def test_control_task_gives_each_token_type_one_label_and_selectivity(bert, tmp_path):
    ids = np.array([5, 7, 5, 9, 7, 5])
    labels = np.array([0, 1, 1, 2, 0, 1])
    control = kp.controls.control_task_labels(ids, labels, seed=3)
    assert control[0] == control[2] == control[5] and control[1] == control[4]
    np.testing.assert_array_equal(control, kp.controls.control_task_labels(ids, labels, seed=3))
    # A type's label does not depend on which other types are present.
    assert kp.controls.control_task_labels(ids[:1], labels, seed=3)[0] == control[0]
    np.testing.assert_array_equal(
        kp.controls.control_task_labels(ids.astype("uint8"), labels, seed=3), control
    )
    for bad_ids, bad_labels in (([5, 7], [-1, 0]), ([5.0], [0]), ([-5], [0])):
        with pytest.raises(ValueError, match="Labels must|token_ids` must"):
            kp.controls.control_task_labels(np.array(bad_ids), np.array(bad_labels))
    draws = kp.controls.control_task_labels(np.arange(20_000), labels, seed=0)
    np.testing.assert_allclose(np.bincount(draws) / 20_000, [2 / 6, 3 / 6, 1 / 6], atol=0.02)

    x, y = token_batch(64)
    xv, yv = token_batch(32, seed=1)
    probed = kp.ProbedModel(bert, points=BLOCKS, num_classes=3, reducers="tokens")
    for split, data in {"train": (x, y), "val": (xv, yv)}.items():
        kp.FeatureCache.write(probed, data, tmp_path, split=split, batch_size=32, verbose=0)
    cache = kp.FeatureCache.open(tmp_path, model=probed)
    report = kp.fit_probes(probed, cache, l2=1e-3, verbose=0)
    heads = [v.numpy().copy() for v in probed.probe_variables]
    control_report = kp.controls.control_task_probes(probed, cache, l2=1e-3, verbose=0)
    for before, after in zip(heads, probed.probe_variables, strict=True):
        np.testing.assert_array_equal(before, after.numpy())  # the model's heads untouched
    selective = report.with_selectivity(control_report, "val")
    for point in probed.points:
        row = selective.results["val"][point]
        expected = control_report.results["val"][point]["error"] - row["error"]
        assert row["selectivity"] == pytest.approx(expected)
    # Pooled probes have no token types.
    pooled = kp.ProbedModel(bert, points=BLOCKS, num_classes=3)
    with pytest.raises(ValueError, match="per-token probes"):
        kp.controls.control_task_probes(pooled, cache)


@pytest.mark.slow  # 8 s: a transformer saved and exported
def test_probed_bert_round_trips_through_keras_file_and_serving_export(bert, tmp_path):
    x, y = token_batch(24)
    probed = kp.ProbedModel(bert, points=BLOCKS, num_classes=3, reducers="tokens")
    probed.compile()
    probed.fit(x, y, epochs=1, batch_size=8, verbose=0)
    expected = probed.predict(x, verbose=0)
    probed.save(tmp_path / "probed.keras")
    loaded = keras.models.load_model(tmp_path / "probed.keras")
    assert loaded.per_token
    for point, value in loaded.predict(x, verbose=0).items():
        np.testing.assert_array_equal(value, expected[point])

    path = kp.export_serving(probed, tmp_path / "serving")
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    assert set(signature.structured_input_signature[1]) == {
        "token_ids",
        "segment_ids",
        "padding_mask",
    }
    # The signature takes the backbone's own input dtypes (BERT's mask: int32).
    served = signature(**{key: tf.constant(value.astype("int32")) for key, value in x.items()})
    for point in probed.points:
        name = kp.export.serving_name(point)
        # A traced graph against Keras' predict: float32 rounding only.
        np.testing.assert_allclose(
            served[f"{name}_probabilities"], expected[point], rtol=1e-5, atol=1e-6
        )
        np.testing.assert_array_equal(served[f"{name}_class"].shape, (24, TOKENS))


def test_export_of_a_model_with_one_named_input_in_a_dict(tmp_path):
    """DINOv2's input is {"images": ...}: the signature takes it by that name."""
    inputs = {"images": keras.Input((6,), name="images")}
    model = keras.Model(inputs, keras.layers.Dense(4, name="dense")(inputs["images"]))
    probed = kp.ProbedModel(model, points="dense", num_classes=2)
    rng = np.random.default_rng(0)  # a fitted head: export refuses all-zero ones
    probed.get_probe("dense").set_weights([rng.normal(size=(4, 2)), np.zeros(2)])
    path = kp.export_serving(probed, tmp_path / "serving")
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    assert set(signature.structured_input_signature[1]) == {"images"}
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    served = signature(images=tf.constant(x))
    expected = probed.predict({"images": x}, verbose=0)["dense"]
    np.testing.assert_allclose(served["dense_probabilities"], expected, atol=1e-6)


def text_task(sequence_length=8):
    """`(classifier, texts, labels)`: a keras-hub BertTextClassifier built from config, its
    preprocessor packing `sequence_length` tokens (the backbone takes 8), and 48 texts."""
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "d"]
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer, sequence_length=sequence_length
    )
    backbone = tiny_bert(vocabulary_size=len(vocabulary), max_sequence_length=8)
    classifier = keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=2, preprocessor=preprocessor
    )
    rng = np.random.default_rng(0)
    texts = np.array([" ".join(rng.choice(list("abcd"), rng.integers(1, 6))) for _ in range(48)])
    return classifier, texts, np.array(["a" in t for t in texts], "int32")


@pytest.mark.slow  # 20 s: fits a keras-hub task on raw text
def test_keras_hub_task_probed_on_raw_text_through_its_preprocessor(tmp_path):
    classifier, texts, labels = text_task()
    backbone, preprocessor = classifier.backbone, classifier.preprocessor
    points = kp.points.matching(backbone.name + r"/transformer_layer_\d")
    probed = kp.ProbedModel(
        classifier,
        points=points,
        num_classes=2,
        reducers={"backbone/transformer_layer_0": "first", "backbone/transformer_layer_1": "first"},
    )
    probed.compile()
    probed.fit(texts, labels, epochs=1, batch_size=16, validation_data=(texts, labels), verbose=0)
    report = probed.evaluate_probes(texts, labels, verbose=0)
    assert report.points == [f"{backbone.name}/transformer_layer_{i}" for i in (0, 1)]
    # The features are those of the preprocessed text, in the cache too.
    packed = preprocessor(texts)
    direct = probed.extract_features(packed)
    kp.FeatureCache.write(
        probed, (texts, labels), tmp_path, split="train", batch_size=16, verbose=0
    )
    features, cached_labels = kp.FeatureCache.open(tmp_path, model=probed).arrays("train")
    np.testing.assert_array_equal(cached_labels, labels)
    for point in probed.points:
        np.testing.assert_allclose(features[point], direct[point].numpy(), atol=1e-5)
    # The export serves the backbone's inputs; a raw warm-up batch is preprocessed first.
    path = kp.export_serving(probed, tmp_path / "serving", warmup=texts[:3])
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    packed = {key: tf.cast(value, "int32") for key, value in preprocessor(texts[:3]).items()}
    served = signature(**packed)
    expected = probed.predict(texts[:3], verbose=0)
    for point in probed.points:
        name = kp.export.serving_name(point)
        np.testing.assert_allclose(served[f"{name}_probabilities"], expected[point], atol=1e-5)
    # The control of a re-initialised copy reads the raw text through the same preprocessor.
    data = {"train": (texts, labels), "val": (texts, labels)}
    control = kp.controls.reinitialized_probes(probed, data, directory=tmp_path / "c", verbose=0)
    assert set(control.results) == {"train", "val"}


def test_bad_token_input_gets_errors_that_name_the_fix(bert):
    x, y = token_batch(16)
    probed = kp.ProbedModel(bert, points=BLOCKS, num_classes=3, reducers="tokens")
    probed.compile()
    with pytest.raises(ValueError, match=r"one label per token.*\(16, 12\).*y.shape=\(16,\)"):
        probed.fit(x, y[:, 0], verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices((x, y[:, 0])).batch(4)
    with pytest.raises(ValueError, match="one label per token"):
        probed.fit(dataset, verbose=0)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        probed.fit(x, np.where(x["padding_mask"], 5, -1), verbose=0)
    # A mask-free model with a masked reducer.
    inputs = keras.Input((TOKENS, 4))
    plain = keras.Model(inputs, keras.layers.Dense(8, name="dense")(inputs))
    for reducers in ("mean", "first", "last", "tokens"):
        with pytest.raises(ValueError, match=r"no input of that name.*'gap'.*padding_mask"):
            kp.ProbedModel(plain, points="dense", num_classes=2, reducers=reducers)
    # A layer whose sequence the mask does not cover (image tokens before the text).
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    mask = keras.Input((None,), dtype="int32", name="padding_mask")
    text = keras.layers.Embedding(VOCABULARY, 4, name="embedding")(ids)
    with_image = keras.layers.Lambda(
        lambda t: keras.ops.concatenate([keras.ops.zeros_like(t[:, :3]), t], axis=1),
        name="with_image",
    )(text)
    multimodal = keras.Model({"token_ids": ids, "padding_mask": mask}, with_image)
    inputs = {"token_ids": x["token_ids"], "padding_mask": x["padding_mask"].astype("int32")}
    for reducers in ("mean", "last", "tokens"):
        probed = kp.ProbedModel(multimodal, points="with_image", num_classes=3, reducers=reducers)
        with pytest.raises(ValueError, match="the mask does not cover this layer's tokens"):
            probed.extract_features(inputs)
        with pytest.raises(ValueError, match="does not cover"):
            probed.predict(inputs, verbose=0)
        # A graph traced for any number of tokens checks as it runs.
        features = tf.function(
            probed.extract_features,
            input_signature=[{k: tf.TensorSpec((None, None), "int32") for k in inputs}],
        )
        with pytest.raises(tf.errors.InvalidArgumentError, match="does not cover"):
            features(inputs)
    # Per-token and pooled points in one model; a token reducer on a pooled output.
    with pytest.raises(ValueError, match="cannot have both"):
        kp.ProbedModel(
            bert,
            points=BLOCKS,
            num_classes=3,
            reducers={"transformer_layer_0": "tokens", "transformer_layer_1": "mean"},
        )
    with pytest.raises(ValueError, match=r"'pooled_dense'.*token sequences.*points='blocks'"):
        kp.ProbedModel(bert, points="pooled_dense", num_classes=3, reducers="tokens")


@pytest.mark.slow  # 8 s: trains a transformer with probes refitted
def test_probe_monitor_refits_per_token_probes_while_a_transformer_trains(bert):
    """ProbeMonitor on dict inputs, a row per kept token; training is untouched."""
    x, y = token_batch(48)
    xv, yv = token_batch(24, seed=1)
    inputs = {name: keras.Input((None,), dtype="int32", name=name) for name in x}
    hidden = bert(inputs)["sequence_output"]
    model = keras.Model(inputs, keras.layers.Dense(3, name="tagger")(hidden))
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    monitor = kp.callbacks.ProbeMonitor(
        (x, y),
        num_classes=3,
        validation_data=(xv, yv),
        points=[f"{bert.name}/transformer_layer_1", "tagger"],
        reducers="tokens",
        verbose=0,
    )
    labels = np.where(x["padding_mask"], y, 0)
    model.fit(x, labels, epochs=2, batch_size=16, callbacks=[monitor], verbose=0)
    history = monitor.history
    assert history.epochs == [0.0, 1.0, 2.0]
    # Each measurement's probes are the monitor's heads: their error over kept tokens.
    probed = monitor.probed
    outputs = probed.predict(xv, verbose=0)
    kept = xv["padding_mask"]
    for point in probed.points:
        error = np.mean(outputs[point].argmax(-1)[kept] != yv[kept])
        assert history.at(history.steps[-1], "val_error")[point] == pytest.approx(error, abs=0.02)
    with pytest.raises(ValueError, match="one label per token"):
        monitor = kp.callbacks.ProbeMonitor(
            (x, y[:, 0]), num_classes=3, points=["tagger"], reducers=kp.TokenFeatures(), verbose=0
        )
        model.fit(x, labels, epochs=1, callbacks=[monitor], verbose=0)


def without_kept_tokens(x, rows):
    """`x` whose sequences `rows` keep no token (their ids left as they are)."""
    mask = x["padding_mask"].copy()
    mask[list(rows)] = False
    return dict(x, padding_mask=mask)


# What every refusal of sequences that keep no token says, before and after its `where`.
NO_TOKEN = r"sequence\(s\) of {} keep no token in the `padding_mask`"


@pytest.mark.parametrize("reducers", ["mean", "first", "last", "tokens"])
def test_sequences_that_keep_no_token_are_refused_naming_them(bert, reducers):
    """Such a sequence has no feature but padding ("first"/"last" read a padded position,
    "mean" gives zeros; per-token probes would have no example there): refused, by index."""
    x, y = token_batch(8)
    bad = without_kept_tokens(x, [2, 5])
    labels = y if reducers == "tokens" else y[:, 0]
    probed = kp.ProbedModel(bert, points=BLOCKS, num_classes=3, reducers=reducers)
    probed.compile()
    at = r", e\.g\. at index \[2, 5\]"
    with pytest.raises(ValueError, match=NO_TOKEN.format("the batch given to .*") + at):
        probed.feature_model(bad)  # the reducers themselves
    for call in (
        lambda: probed.extract_features(bad),
        lambda: probed.fit(bad, labels, verbose=0),
        lambda: probed.evaluate_probes(bad, labels, verbose=0),
        lambda: probed.predict(bad, verbose=0),
    ):
        with pytest.raises(ValueError, match="^2 " + NO_TOKEN.format("`x`") + at):
            call()
    with pytest.raises(ValueError, match=NO_TOKEN.format("`validation_data`")):
        probed.fit(x, labels, validation_data=(bad, labels), verbose=0)


@pytest.mark.slow  # 13 s: XLA-compiled streams; arrays are refused in the fast tier
def test_a_stream_whose_sequence_keeps_no_token_is_refused_in_one_line(bert):
    x, y = token_batch(8)
    stream = tf.data.Dataset.from_tensor_slices((without_kept_tokens(x, [5]), y[:, 0])).batch(4)
    probed = kp.ProbedModel(bert, points=BLOCKS, num_classes=3)
    # XLA compiles in-graph assertions away (Keras compiles with XLA on a GPU by default):
    # the input pipeline checks every batch.
    probed.compile(jit_compile=True)
    where = (
        NO_TOKEN.format("a batch of `x`") + r", e\.g\. at row\(s\) 1 of batch 1 \(counting from 0\)"
    )
    for call in (
        lambda: probed.fit(stream, verbose=0),
        lambda: probed.evaluate_probes(stream, verbose=0),
    ):
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"^1 {where}[^\n]*$"):
            call()


def test_a_decoder_refuses_sequences_that_keep_no_token_in_fit_and_the_cache(tmp_path):
    gemma = tiny_gemma(vocabulary_size=VOCABULARY)
    x, y = token_batch(8)
    bad = without_kept_tokens({"token_ids": x["token_ids"], "padding_mask": x["padding_mask"]}, [0])
    probed = kp.ProbedModel(
        gemma, points=kp.points.matching(r"decoder_block_\d"), num_classes=3, reducers="last"
    )
    probed.compile()
    with pytest.raises(
        ValueError, match="^1 " + NO_TOKEN.format("`x`") + r", e\.g\. at index \[0\]"
    ):
        probed.fit(bad, y[:, 0], verbose=0)
    # The cache runs the reducers in a graph of its own: they refuse there too.
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match=NO_TOKEN.format(".*")):
        kp.FeatureCache.write(probed, (bad, y[:, 0]), tmp_path, split="train", verbose=0)


@pytest.mark.slow  # 9 s: two exports of a transformer
def test_serving_refuses_a_sequence_that_keeps_no_token(bert, tmp_path):
    x, y = token_batch(8)
    probed = kp.ProbedModel(bert, points=BLOCKS, num_classes=3, reducers="first")
    rng = np.random.default_rng(0)  # fitted heads: export refuses all-zero ones
    for point in probed.points:
        probed.get_probe(point).set_weights([rng.normal(size=(16, 3)), np.zeros(3)])
    with pytest.raises(ValueError, match=NO_TOKEN.format(".*")):
        kp.FeatureCache.write(
            probed, (without_kept_tokens(x, [2]), y[:, 0]), tmp_path / "c", split="train", verbose=0
        )
    # The default warm-up request keeps its token: TF Serving replays it before it serves.
    path = kp.export_serving(probed, tmp_path / "default")
    served = tf.saved_model.load(str(path))
    records = tf.data.TFRecordDataset(str(path / "assets.extra" / "tf_serving_warmup_requests"))
    for record in records:
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        assert served.signatures[request.model_spec.signature_name](**inputs)
    path = kp.export_serving(probed, tmp_path / "serving", warmup=x)
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    as_served = lambda x: {key: tf.constant(value.astype("int32")) for key, value in x.items()}  # noqa: E731
    assert signature(**as_served(x))  # the warm-up batch, served
    with pytest.raises(tf.errors.InvalidArgumentError, match=NO_TOKEN.format(".*") + r".*\[2 5\]"):
        signature(**as_served(without_kept_tokens(x, [2, 5])))


def test_sequences_longer_than_the_backbone_takes_are_refused(bert):
    x, y = token_batch(8)
    long = {key: np.concatenate([value, value], axis=1) for key, value in x.items()}  # 24 tokens
    probed = kp.ProbedModel(bert, points=BLOCKS, num_classes=3)
    probed.compile()
    fix = r"Truncate them to 12 tokens, or preprocess with sequence_length=12"
    message = (
        r"^`x` holds sequences of 24 tokens \(input 'token_ids'\); layer 'position_embedding' "
        r"has 12 positions \(the backbone's max_sequence_length\)\. " + fix
    )
    for call in (
        lambda: probed.fit(long, y[:, 0], verbose=0),
        lambda: probed.evaluate_probes(long, y[:, 0], verbose=0),
        lambda: probed.predict(long, verbose=0),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    # A stream: its static shape up front; a token count it does not state, batch by batch.
    stream = tf.data.Dataset.from_tensor_slices((long, y[:, 0])).batch(4)
    with pytest.raises(ValueError, match="`x` yields sequences of 24 tokens.*" + fix):
        probed.fit(stream, verbose=0)
    unstated = stream.map(
        lambda x, y: ({k: tf.reshape(v, (tf.shape(v)[0], -1)) for k, v in x.items()}, y)
    )
    assert unstated.element_spec[0]["token_ids"].shape.as_list() == [None, None]
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"^A batch of `x` holds sequences of 24 tokens.*"
    ) as caught:
        probed.fit(unstated, verbose=0)
    assert "(input 'token_ids')" in str(caught.value) and re.search(fix, str(caught.value))
    assert "\n" not in str(caught.value) and "\\" not in str(caught.value)
    # The backbone inside another model: its limit still holds.
    inputs = {name: keras.Input((None,), dtype="int32", name=name) for name in x}
    wrapper = keras.Model(inputs, bert(inputs)["sequence_output"])
    probed = kp.ProbedModel(wrapper, points=f"{bert.name}/transformer_layer_1", num_classes=3)
    with pytest.raises(ValueError, match=message.replace("'position_embedding'", ".*")):
        probed.predict(long, verbose=0)


@pytest.mark.slow  # 12 s: trains a keras-hub task
def test_probe_monitor_on_a_keras_hub_task_reads_raw_text_through_its_preprocessor():
    classifier, texts, labels = text_task()
    monitor = kp.callbacks.ProbeMonitor(
        (texts, labels),
        num_classes=2,
        validation_data=(texts[:16], labels[:16]),
        points="backbone/transformer_layer_1",
        reducers="first",
        verbose=0,
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    classifier.compile(optimizer="adam", loss=loss, run_eagerly=True)  # one step: no tracing
    classifier.fit(texts, labels, epochs=1, batch_size=48, callbacks=[monitor], verbose=0)
    history = monitor.history
    assert history.epochs == [0.0, 1.0]
    # Its probes, fed the raw texts through the same preprocessor, give the errors recorded.
    outputs = monitor.probed.predict(texts[:16], verbose=0)
    for point in monitor.probed.points:
        error = np.mean(outputs[point].argmax(-1) != labels[:16])
        assert history.at(history.steps[-1], "val_error")[point] == pytest.approx(error, abs=0.07)


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
def test_a_preprocessor_packing_more_tokens_than_the_backbone_takes_is_refused():
    classifier, texts, labels = text_task(sequence_length=16)
    probed = kp.ProbedModel(classifier, points="backbone/transformer_layer_0", num_classes=2)
    probed.compile()
    fix = "Truncate them to 8 tokens, or preprocess with sequence_length=8"
    with pytest.raises(ValueError, match="sequences of 16 tokens.*" + fix):
        probed.fit(texts, labels, verbose=0)
    monitor = kp.callbacks.ProbeMonitor(
        (texts, labels), num_classes=2, points="backbone/transformer_layer_0", verbose=0
    )
    with pytest.raises(ValueError, match="`data` .*sequences of 16 tokens.*" + fix):
        classifier.fit(texts, labels, epochs=1, callbacks=[monitor], verbose=0)


def files_of(directory):
    """{relative path: bytes} of a cache's files, its lock files aside."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.suffix != ".lock"
    }


def test_a_per_token_cache_knows_each_rows_sequence_through_a_resume(bert, tmp_path):
    """Each row (a kept token) carries its sequence: the example's index in the split,
    across batches and shards; a resume rewrites a shard's sequences as they were."""
    x, y = token_batch(20)
    probed = kp.ProbedModel(bert, points=BLOCKS, num_classes=3, reducers="tokens")
    settings = {"batch_size": 4, "shard_size": 8, "verbose": 0}  # shards of 8, 8 and 4
    whole = tmp_path / "whole"
    cache = kp.FeatureCache.write(probed, (x, y), whole, **settings)
    sequences = cache.sequences("train")
    assert sequences.dtype == np.int64
    # The example of each kept token, in row order (the cache keeps them row-major).
    np.testing.assert_array_equal(sequences, np.nonzero(x["padding_mask"])[0])
    assert len(sequences) == cache.num_examples("train")
    # Shards 1 and 2 damaged: a resume computes them again, to the same bytes.
    resumed = tmp_path / "resumed"
    shutil.copytree(whole, resumed)
    (resumed / "train" / "sequences" / "shard-00001.npy").unlink()
    (resumed / "train" / "labels" / "shard-00002.npy").unlink()
    kp.FeatureCache.write(probed, (x, y), resumed, **settings)
    assert files_of(resumed) == files_of(whole)

    # The column is checked as every other file of a shard.
    path = resumed / "train" / "sequences" / "shard-00001.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(kp.CacheError, match=r"sequences.shard-00001\.npy is corrupt"):
        kp.FeatureCache.open(resumed)


def test_a_per_token_cache_written_without_sequences_says_how_to_get_them(bert, tmp_path):
    x, y = token_batch(8)
    probed = kp.ProbedModel(bert, points=BLOCKS, num_classes=3, reducers="tokens")
    kp.FeatureCache.write(probed, (x, y), tmp_path, batch_size=4, shard_size=4, verbose=0)
    # As an older keras-probes wrote it: no sequences column, in the manifest or on disk.
    path = tmp_path / "manifest.json"
    manifest = json.loads(path.read_text())
    for shard in manifest["splits"]["train"]["shards"]:
        del shard["sha256"]["sequences"]
    path.write_text(json.dumps(manifest, indent=1))
    for file in (tmp_path / "train" / "sequences").iterdir():
        file.unlink()
    cache = kp.FeatureCache.open(tmp_path, model=probed)
    np.testing.assert_array_equal(cache.arrays("train")[1], y[x["padding_mask"]])
    with pytest.raises(kp.CacheError) as caught:
        cache.sequences("train")
    message = str(caught.value)
    assert "\n" not in message
    assert re.search(r"written by an older keras-probes.*overwrite=True.*new directory", message)
    # Written again, it has them.
    kp.FeatureCache.write(
        probed, (x, y), tmp_path, batch_size=4, shard_size=4, overwrite=True, verbose=0
    )
    assert len(kp.FeatureCache.open(tmp_path).sequences("train")) == x["padding_mask"].sum()


def test_per_token_outcomes_are_the_kept_tokens_with_their_sequence(bert):
    """evaluate_probes keeps an outcome per kept token, and each token's sequence (the
    example's index in the split), so that intervals resample whole sequences."""
    x, y = token_batch(24)
    kept = x["padding_mask"]
    probed = kp.ProbedModel(bert, points=BLOCKS, num_classes=3, reducers="tokens")
    rng = np.random.default_rng(0)
    for point in probed.points:
        head = probed.get_probe(point)
        head.set_weights([rng.normal(size=w.shape).astype("float32") for w in head.get_weights()])
    report = probed.evaluate_probes(x, y, batch_size=10, verbose=0)  # y is -1 where padded
    sequences = np.repeat(np.arange(24), kept.sum(axis=1))
    np.testing.assert_array_equal(report.examples["test"].sequences, sequences)
    features = probed.extract_features(x)
    for point in probed.points:
        logits = probed.get_probe(point).linear(features[point]).numpy()[kept]
        labels = y[kept]
        true = logits[np.arange(len(labels)), labels]
        outcomes = report.outcomes["test"][point]
        np.testing.assert_array_equal(outcomes.correct, logits.argmax(axis=1) == labels)
        np.testing.assert_array_equal(outcomes.top5, np.ones(len(labels), bool))  # 3 classes
        loss = np.log(np.exp(logits).sum(axis=1)) - true
        np.testing.assert_allclose(outcomes.loss, loss, rtol=1e-5, atol=1e-6)
        assert report.results["test"][point]["error"] == outcomes.values("error").mean()
    # Labels at padded tokens are never read: other ones there, streamed in other batches,
    # are the same examples with the same outcomes.
    other = np.where(kept, y, 99)
    streamed = probed.evaluate_probes(
        tf.data.Dataset.from_tensor_slices((x, other)).batch(7), verbose=0
    )
    assert streamed.examples == report.examples
    for point in probed.points:
        a, b = streamed.outcomes["test"][point], report.outcomes["test"][point]
        np.testing.assert_array_equal(a.correct, b.correct)
        np.testing.assert_allclose(a.loss, b.loss, rtol=1e-5, atol=1e-6)


def test_per_token_reports_resample_the_sequences_the_cache_records(bert, tmp_path):
    """fit_probes hands each held-out split's examples (fingerprint, each row's
    sequence) from the cache to the report: its tests resample whole sequences."""
    x, y = token_batch(24)
    xv, yv = token_batch(16, seed=1)
    probed = kp.ProbedModel(bert, points=BLOCKS, num_classes=3, reducers="tokens")
    kp.FeatureCache.write(probed, (x, y), tmp_path, split="train", batch_size=8, verbose=0)
    kp.FeatureCache.write(probed, (xv, yv), tmp_path, split="val", batch_size=8, verbose=0)
    cache = kp.FeatureCache.open(tmp_path, model=probed)
    report = kp.fit_probes(probed, cache, l2=1e-2, max_iter=50, verbose=0)
    assert report.examples == {"val": cache.examples("val")}
    assert report.examples["val"].fingerprint == cache.fingerprint("val")
    np.testing.assert_array_equal(report.examples["val"].sequences, cache.sequences("val"))
    first, second = probed.points[:2]
    # Over sequences: the clustered z test (a sign test where no sequence differs from
    # another), never McNemar's over single tokens.
    assert report.compare("val", first, second).test in ("clustered z", "sign test")
    low, high = report.interval("val", first)
    assert low <= report.errors("val")[first] <= high
