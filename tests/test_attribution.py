"""Concept attribution (`kp.attribution`): directional derivatives, TCAV, Br.

Derivatives are checked against central finite differences of the model rebuilt
by hand with the direction added at the point, and against an explicit
`GradientTape` on a hand-split copy, on models with a skip path around the
point, a nested point and a keras-hub block. Tolerances are float32's: the tape
agrees within 1e-5 (relative, the same arithmetic in another order); finite
differences with h = 1e-2 on smooth activations within 2e-3 (their truncation
error, O(h^2) times the third derivative, plus float32 rounding divided by h).
"""

import json

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
from conftest import assert_weights_equal, small_convnet, tiny_bert

import keras_probes as kp
from keras_probes import _graph

layers = keras.layers
FD_STEP = 1e-2
FD_TOLERANCE = 2e-3  # relative to the derivatives' scale
TAPE_TOLERANCE = 1e-5


def skip_model(softmax="dense"):
    """x -> a (the point) -> b; c = a + b (a skip path around b) -> pool -> logits."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3), name="image")
    a = layers.Conv2D(4, 3, padding="same", activation="tanh", name="a")(inputs)
    b = layers.Conv2D(4, 3, padding="same", activation="tanh", name="b")(a)
    c = layers.Add(name="c")([a, b])
    pooled = layers.GlobalAveragePooling2D(name="pool")(c)
    if softmax == "dense":
        outputs = layers.Dense(5, activation="softmax", name="out")(pooled)
    elif softmax == "layer":
        outputs = layers.Softmax(name="probabilities")(layers.Dense(5, name="out")(pooled))
    else:
        outputs = layers.Dense(5, name="out")(pooled)
    return keras.Model(inputs, outputs, name=f"skip_{softmax}")


def skip_logits(model, x, shift=None):
    """The skip model's logits, computed by hand; `shift` is added to `a`'s output."""
    a = model.get_layer("a")(x)
    if shift is not None:
        a = a + shift
    c = a + model.get_layer("b")(a)
    dense = model.get_layer("out")
    return tf.reduce_mean(c, axis=(1, 2)) @ dense.kernel + dense.bias


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(12, 6, 6, 3)).astype("float32")


def scale(values):
    return float(np.max(np.abs(values)))


@pytest.mark.numerics
def test_derivatives_count_the_skip_path_and_match_finite_differences(images):
    model = skip_model()
    v = np.random.default_rng(1).normal(size=4)
    d = kp.attribution.directional_derivatives(model, "a", v, images, target=2, verbose=0)
    shift = tf.constant(FD_STEP * v, tf.float32)  # the channel vector at every position
    fd = (skip_logits(model, images, shift) - skip_logits(model, images, -shift))[:, 2]
    fd = fd.numpy() / (2 * FD_STEP)
    np.testing.assert_allclose(d, fd, atol=FD_TOLERANCE * scale(fd))
    # The explicit tape on the hand-split copy: the activation is the tape's input.
    a = tf.constant(model.get_layer("a")(images))
    with tf.GradientTape() as tape:
        tape.watch(a)
        c = a + model.get_layer("b")(a)
        dense = model.get_layer("out")
        logit = (tf.reduce_mean(c, axis=(1, 2)) @ dense.kernel + dense.bias)[:, 2]
    gradient = tape.gradient(logit, a).numpy()
    explicit = np.einsum("nhwc,c->n", gradient, v)
    np.testing.assert_allclose(d, explicit, rtol=TAPE_TOLERANCE, atol=TAPE_TOLERANCE * scale(d))
    # Without the skip path's share the derivative is another number: both paths count.
    # The skip path alone (d c / d a = identity) gives, summed over the positions, the
    # dense kernel's column of logit 2, the same at every example.
    skip_path = model.get_layer("out").kernel.numpy()[:, 2] @ v
    assert not np.allclose(d, explicit - skip_path, atol=1e-3 * scale(d))


@pytest.mark.numerics
def test_flattened_directions_and_stacks(images):
    model = skip_model()
    rng = np.random.default_rng(2)
    flat = rng.normal(size=(3, 6 * 6 * 4))
    d = kp.attribution.directional_derivatives(model, "a", flat, images, target=0, verbose=0)
    assert d.shape == (len(images), 3)
    for j in range(3):
        shift = tf.constant(FD_STEP * flat[j].reshape(6, 6, 4), tf.float32)  # row-major
        fd = (skip_logits(model, images, shift) - skip_logits(model, images, -shift))[:, 0]
        fd = fd.numpy() / (2 * FD_STEP)
        np.testing.assert_allclose(d[:, j], fd, atol=FD_TOLERANCE * scale(fd))
    # A channel vector equals the flattened direction that repeats it at every position.
    v = rng.normal(size=4)
    repeated = np.tile(v, 36)
    np.testing.assert_allclose(
        kp.attribution.directional_derivatives(model, "a", v, images, 0, verbose=0),
        kp.attribution.directional_derivatives(model, "a", repeated, images, 0, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("softmax", ["dense", "layer"])
def test_the_logit_is_differentiated_not_the_softmax(images, softmax):
    logits_model = skip_model("none")
    model = skip_model(softmax)
    model.set_weights(logits_model.get_weights())
    v = np.random.default_rng(3).normal(size=4)
    d = kp.attribution.directional_derivatives(model, "a", v, images, target=1, verbose=0)
    expected = kp.attribution.directional_derivatives(
        logits_model, "a", v, images, target=1, verbose=0
    )
    np.testing.assert_allclose(d, expected, rtol=1e-6, atol=1e-7)
    # The softmax output's derivative is another quantity: p_k (d z_k - sum_j p_j d z_j).
    a = tf.constant(model.get_layer("a")(images))
    with tf.GradientTape() as tape:
        tape.watch(a)
        probability = tf.nn.softmax(skip_logits_from(model, a))[:, 1]
    through_softmax = np.einsum("nhwc,c->n", tape.gradient(probability, a).numpy(), v)
    assert not np.allclose(d, through_softmax, rtol=0.1)


def skip_logits_from(model, a):
    c = a + model.get_layer("b")(a)
    dense = model.get_layer("out")
    return tf.reduce_mean(c, axis=(1, 2)) @ dense.kernel + dense.bias


@pytest.mark.numerics
def test_a_nested_point(images):
    keras.utils.set_random_seed(0)
    inner = keras.Sequential(
        [
            keras.Input((8,)),
            layers.Dense(6, activation="tanh", name="h1"),
            layers.Dense(6, name="h2"),
        ],
        name="inner",
    )
    inputs = keras.Input((6, 6, 3))
    pooled = layers.GlobalAveragePooling2D()(inputs)
    hidden = inner(layers.Dense(8, activation="tanh", name="pre")(pooled))
    outputs = layers.Dense(3, activation="softmax", name="out")(layers.Activation("tanh")(hidden))
    model = keras.Model(inputs, outputs)
    v = np.random.default_rng(4).normal(size=6)
    d = kp.attribution.directional_derivatives(model, "inner/h1", v, images, target=2, verbose=0)

    def logits(shift):
        h = inner.get_layer("h1")(model.get_layer("pre")(tf.reduce_mean(images, axis=(1, 2))))
        h = tf.tanh(inner.get_layer("h2")(h + shift))
        return h @ model.get_layer("out").kernel + model.get_layer("out").bias

    step = tf.constant(FD_STEP * v, tf.float32)
    fd = ((logits(step) - logits(-step))[:, 2] / (2 * FD_STEP)).numpy()
    np.testing.assert_allclose(d, fd, atol=FD_TOLERANCE * scale(fd))


@pytest.fixture(scope="module")
def bert_classifier():
    backbone = tiny_bert()
    inputs = {name: keras.Input((None,), dtype="int32", name=name) for name in backbone.input}
    cls = layers.Lambda(lambda s: s[:, 0], name="cls")(backbone(inputs)["sequence_output"])
    outputs = layers.Dense(3, name="logits")(cls)
    return keras.Model(inputs, outputs, name="bert_classifier")


def bert_batch(rows=6, tokens=12):
    rng = np.random.default_rng(5)
    lengths = rng.integers(4, tokens + 1, size=rows)
    mask = np.arange(tokens)[None, :] < lengths[:, None]
    return {
        "token_ids": np.where(mask, rng.integers(1, 40, size=(rows, tokens)), 0).astype("int32"),
        "segment_ids": np.zeros((rows, tokens), "int32"),
        "padding_mask": mask,
    }


def rebuilt_differences(model, point, direction, x, target):
    """Central finite differences of `target`'s logit, the model rebuilt with `direction`
    (broadcast to the point's activation) added at `point` (no softmax in these models)."""
    shift = (FD_STEP * direction).astype("float32")
    ends = []
    for sign in (1, -1):
        graph = _graph.trace(model, edits={point: lambda t, s=sign: t + s * shift})
        ends.append(keras.Model(graph.inputs, graph.outputs).predict(x, verbose=0)[:, target])
    return (ends[0] - ends[1]) / (2 * FD_STEP)


@pytest.mark.slow
def test_an_unrolled_vit_block():
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16
    )
    inputs = keras.Input((16, 16, 3))
    cls = layers.Lambda(lambda s: s[:, 0], name="cls")(backbone(inputs))
    model = keras.Model(inputs, layers.Dense(3, name="logits")(cls))
    point = kp.points.resolve(model, "blocks")[0]  # inside the unrolled encoder
    x = np.random.default_rng(11).normal(size=(5, 16, 16, 3)).astype("float32")
    v = np.random.default_rng(12).normal(size=8)
    d = kp.attribution.directional_derivatives(model, point, v, x, target=2, verbose=0)
    fd = rebuilt_differences(model, point, v, x, target=2)  # every token: "gap"
    np.testing.assert_allclose(d, fd, atol=5 * FD_TOLERANCE * scale(fd))


@pytest.mark.parametrize("reducer", ["auto", pytest.param("first", marks=pytest.mark.slow)])
def test_a_keras_hub_block(bert_classifier, reducer):
    model, x = bert_classifier, bert_batch()
    point = "bert_backbone/transformer_layer_0"
    v = np.random.default_rng(6).normal(size=16)
    d = kp.attribution.directional_derivatives(
        model, point, v, x, target=1, reducer=reducer, verbose=0
    )
    # The direction placed at the tokens the reducer reads ("auto" at a token point of a
    # model with a padding mask is "mean": every kept token): the model rebuilt with it
    # added at the block's output, by finite differences.
    mask = x["padding_mask"].astype("float32")
    placed = mask if reducer == "auto" else np.eye(mask.shape[1])[np.zeros(len(mask), int)]
    fd = rebuilt_differences(model, point, placed[..., None] * v, x, target=1)
    np.testing.assert_allclose(d, fd, atol=5 * FD_TOLERANCE * scale(fd))


def test_the_model_is_never_changed_and_inference_mode_is_used():
    keras.utils.set_random_seed(0)
    model = small_convnet()  # BatchNorm and Dropout
    x = np.random.default_rng(7).uniform(size=(16, 28, 28, 1)).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    point = model.layers[3].name
    channels = model.get_layer(point).output.shape[-1]
    v = np.random.default_rng(8).normal(size=channels)
    first = kp.attribution.directional_derivatives(model, point, v, x, target=3, verbose=0)
    second = kp.attribution.directional_derivatives(model, point, v, x, target=3, verbose=0)
    np.testing.assert_array_equal(first, second)  # Dropout off, BatchNorm frozen
    assert_weights_equal(model.get_weights(), before)
    assert np.std(first) > 0


def test_tf_data_and_per_example_targets(images):
    model = skip_model()
    v = np.random.default_rng(9).normal(size=4)
    zero, one = (
        kp.attribution.directional_derivatives(model, "a", v, images, k, verbose=0) for k in (0, 1)
    )
    labels = np.zeros(len(images), "int32")
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(5)
    streamed = kp.attribution.directional_derivatives(model, "a", v, dataset, 1, verbose=0)
    np.testing.assert_allclose(streamed, one, rtol=1e-5, atol=1e-6)
    targets = np.arange(len(images)) % 2
    each = kp.attribution.directional_derivatives(model, "a", v, images, targets, verbose=0)
    np.testing.assert_allclose(each, np.where(targets == 1, one, zero), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda m, x: kp.attribution.directional_derivatives(m, "a", np.ones(5), x, 0),
            "channel count 4",
        ),
        (
            lambda m, x: kp.attribution.directional_derivatives(m, "a", np.ones(4), x, 5),
            r"\[0, 5\)",
        ),
        (lambda m, x: kp.attribution.directional_derivatives(m, "nope", np.ones(4), x, 0), "nope"),
        (lambda m, x: kp.attribution.directional_derivatives(m, "a", [np.nan] * 4, x, 0), "NaN"),
        (
            lambda m, x: kp.attribution.directional_derivatives(
                m, "a", np.ones(4), tf.data.Dataset.from_tensor_slices(x).batch(4), [0] * 12
            ),
            "one class index",
        ),
        (
            lambda m, x: kp.attribution.directional_derivatives(m, "a", np.ones(4), x, [0, 1]),
            r"\(12,\)",
        ),
    ],
)
def test_bad_input_is_refused_with_the_fix(images, call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call(skip_model(), images)


def test_a_model_of_several_outputs_is_refused(images):
    model = skip_model()
    two = keras.Model(model.input, [model.output, model.get_layer("pool").output])
    with pytest.raises(ValueError, match="2 outputs"):
        kp.attribution.directional_derivatives(two, "a", np.ones(4), images, 0, verbose=0)


def test_bidirectional_relevance(images):
    model = skip_model()
    v = np.random.default_rng(10).normal(size=4)
    d = kp.attribution.directional_derivatives(model, "a", v, images, 3, verbose=0)
    br = kp.attribution.bidirectional_relevance(model, "a", v, 0.6, images, 3, verbose=0)
    assert br == pytest.approx(0.6 * np.mean(d) / np.std(d), rel=1e-12)
    # At the pooled features the logit is linear: the derivative is the same for every
    # example, so Br is undefined.
    with pytest.raises(ValueError, match="do not vary"):
        kp.attribution.bidirectional_relevance(model, "pool", v, 0.6, images, 3, verbose=0)


# -- TCAV -------------------------------------------------------------------------


def marked_images(rows, rng, marked):
    """16x16 noise images; `marked` ones carry a bright 4x4 square at a random place."""
    x = rng.normal(0.0, 0.3, size=(rows, 16, 16, 1)).astype("float32")
    for i in np.flatnonzero(marked):
        r, c = rng.integers(0, 12, size=2)
        x[i, r : r + 4, c : c + 4] += 2.0
    return x


@pytest.fixture(scope="module")
def planted():
    """A small convnet trained where the mark causes class 1 (no mark: class 0)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=1200)
    x = marked_images(len(y), rng, y == 1)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    h = layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    h = layers.Conv2D(8, 3, activation="relu", name="conv2")(h)
    h = layers.GlobalMaxPooling2D(name="pool")(h)
    outputs = layers.Dense(2, activation="softmax", name="out")(h)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=4, batch_size=64, verbose=0)
    accuracy = model.evaluate(x[:300], y[:300], verbose=0)[1]
    assert accuracy > 0.95, accuracy
    return model


def noise(rng, rows):
    return rng.normal(0.0, 0.3, size=(rows, 16, 16, 1)).astype("float32")


@pytest.mark.slow
@pytest.mark.numerics
def test_tcav_finds_a_planted_cause(planted):
    rng = np.random.default_rng(1)
    concept = marked_images(100, rng, np.ones(100, bool))  # the mark alone, on noise
    random = noise(rng, 300)
    x = marked_images(40, rng, np.ones(40, bool))  # class 1's examples
    t = kp.attribution.tcav(planted, "conv2", concept, random, x, target=1, runs=10, verbose=0)
    print(t, "CAV accuracies", t.cav_accuracies.min(), "-", t.cav_accuracies.max())
    assert t.score > 0.9 and t.random_score < 0.8, t
    assert t.pvalue < 0.01, t
    assert np.all(t.cav_accuracies > 0.8)
    # Seeded: the same call, the same numbers.
    again = kp.attribution.tcav(planted, "conv2", concept, random, x, target=1, runs=10, verbose=0)
    np.testing.assert_array_equal(again.scores, t.scores)
    np.testing.assert_array_equal(again.random_scores, t.random_scores)


#: Random concepts tested (calls of 5 concepts each, every call its own images and
#: shares); at most the 0.999 quantile of the binomial count under the test's level
#: may be significant at 0.05 (18 of 160).
FALSE_POSITIVE_TESTS = 160


@pytest.mark.slow
@pytest.mark.numerics
def test_random_concepts_are_significant_no_more_often_than_the_level(planted):
    pvalues = []
    for seed in range(FALSE_POSITIVE_TESTS // 5):
        rng = np.random.default_rng(100 + seed)
        concepts = {f"random{i}": noise(rng, 60) for i in range(5)}
        classes = {1: marked_images(30, rng, np.ones(30, bool))}
        # A fixed penalty keeps 1600 CAVs quick: the test's calibration is the subject.
        report = kp.attribution.tcav_report(
            planted,
            "conv2",
            concepts,
            noise(rng, 180),
            classes,
            runs=10,
            seed=seed,
            solver=kp.solvers.LBFGSProbe(l2=1e-2, dtype="float64"),
            verbose=0,
        )
        pvalues += [r.pvalue for r in report.results]
    rate = np.mean(np.asarray(pvalues) < 0.05)
    print(f"random concepts significant at 0.05: {rate:.3f} of {len(pvalues)}")
    bound = scipy.stats.binom.ppf(0.999, FALSE_POSITIVE_TESTS, 0.05) / FALSE_POSITIVE_TESTS
    assert rate <= bound, (rate, bound)


@pytest.mark.filterwarnings("ignore:The derivatives of class 2's logit at 'b'")  # linear there
def test_tcav_report_holm_and_json_round_trip(images, tmp_path):
    model = skip_model()
    rng = np.random.default_rng(2)
    concepts = {"bright": images[:9] + 2.0, "plain": rng.normal(size=(9, 6, 6, 3))}
    random = rng.normal(size=(18, 6, 6, 3)).astype("float32")
    solver = kp.solvers.LBFGSProbe(l2=1e-2, dtype="float64")
    report = kp.attribution.tcav_report(
        model, ["a", "b"], concepts, random, {2: images}, runs=2, solver=solver, verbose=0
    )
    assert len(report.results) == 4 and report.concepts == ["bright", "plain"]
    raw = np.array([r.pvalue for r in report.results])
    finite = np.isfinite(raw)
    adjusted = np.array([r.adjusted_pvalue for r in report.results])
    np.testing.assert_allclose(adjusted[finite], kp.uncertainty.holm(raw[finite]))
    for r in report.results:
        test = scipy.stats.ttest_ind(r.scores, r.random_scores)  # the test is SciPy's
        np.testing.assert_allclose([r.statistic, r.pvalue], [test.statistic, test.pvalue])
    path = tmp_path / "tcav.json"
    report.to_json(path)
    json.loads(path.read_text())  # strict JSON
    back = kp.attribution.TCAVReport.from_json(path)
    for a, b in zip(back.results, report.results, strict=True):
        assert (a.concept, a.point, a.target) == (b.concept, b.point, b.target)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.pvalue, b.pvalue)
        np.testing.assert_array_equal(a.adjusted_pvalue, b.adjusted_pvalue)
    assert "bright" in report.table()
    figure = kp.plots.plot_tcav(back)
    assert len(figure.axes) == 1 and len(figure.axes[0].patches) == 4  # a bar per result
    figure.savefig(tmp_path / "tcav.png")
    relevance = kp.plots.plot_relevance({"bright": {"a": 0.4, "b": -0.1}, "plain": {"a": 0.0}})
    assert len(relevance.axes[0].patches) == 3
    with pytest.raises(ValueError, match="no result"):
        kp.plots.plot_tcav(kp.attribution.TCAVReport([]))
    assert report.get("plain", "b", 2).point == "b"
    with pytest.raises(KeyError, match="plain"):
        report.get("plain", "c", 2)
    (path.parent / "broken.json").write_text(
        '{"format": "keras_probes.TCAVReport", "results": [{}]}'
    )
    with pytest.raises(ValueError, match="not a readable TCAV report"):
        kp.attribution.TCAVReport.from_json(path.parent / "broken.json")


def test_tcav_needs_enough_examples_for_disjoint_shares(images):
    with pytest.raises(ValueError, match=r"60 disjoint shares .* at least 3"):
        kp.attribution.tcav(skip_model(), "a", images, images, images, target=1, runs=20)


def test_tcav_warns_where_the_logit_is_linear_in_the_point(images):
    # After the pooling the logit is linear: one derivative for every example.
    concept, random = images[:6] + 1.0, np.concatenate([images, images[::-1] * 0.5])
    with pytest.warns(UserWarning, match="'pool' are the same for every example"):
        report = kp.attribution.tcav_report(
            skip_model(),
            "pool",
            {"c": concept},
            random[:18],
            {1: images},
            runs=2,
            solver=kp.solvers.LBFGSProbe(l2=1e-2, dtype="float64"),
            verbose=0,
        )
    assert set(report.results[0].scores) <= {0.0, 1.0}
