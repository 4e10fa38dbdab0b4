"""Description length (Voita & Titov 2020, the online code): `kp.controls.description_length`.

Real probes on the real digits of scikit-learn (8x8 images, 10 classes) through
a small Keras model, and per-token probes of a keras-hub BERT.
"""

import math

import keras
import numpy as np
import pytest
from conftest import tiny_bert
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

import keras_probes as kp
from keras_probes import solvers

# Few blocks: every block size is an XLA compilation of the solver's objective (narrow
# features), which costs more than these small fits.
FRACTIONS = (0.1, 0.25, 0.5, 1.0)
L2 = 1e-3


def digit_model(width=32, seed=0):
    """A small Keras model on 8x8 digits (untrained): two ReLU layers of `width` units,
    which carry the digits, and a softmax."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((64,), name="pixels")
    hidden = keras.layers.Dense(width, activation="relu", name="hidden")(inputs)
    hidden = keras.layers.Dense(width, activation="relu", name="hidden2")(hidden)
    outputs = keras.layers.Dense(10, activation="softmax", name="out")(hidden)
    return keras.Model(inputs, outputs, name="digits_mlp")


@pytest.fixture(scope="module")
def sklearn_digits():
    x, y = load_digits(return_X_y=True)
    return (x / 16).astype("float32"), y


@pytest.fixture(scope="module")
def digit_cache(sklearn_digits, tmp_path_factory):
    """`(probed, cache)`: 1797 digits cached at two points, in shards of 256 rows. (Of one
    width: the solver compiles its objective once per shape of rows and features.)"""
    x, y = sklearn_digits
    probed = kp.ProbedModel(digit_model(), ["hidden", "hidden2"], num_classes=10)
    directory = tmp_path_factory.mktemp("mdl_digits")
    kp.FeatureCache.write(
        probed, (x, y), directory, split="train", batch_size=64, shard_size=256, verbose=0
    )
    return probed, kp.FeatureCache.open(directory, model=probed)


def sklearn_online_code(features, labels, fractions, l2, order, num_classes=10):
    """The online code computed independently: each block's probe is scikit-learn's
    multinomial `LogisticRegression` on the rows before it, `C = 1 / (l2 * rows)` (mean
    cross-entropy + l2 / 2 * ||W||^2, bias unpenalised); its log-loss in bits on the
    block, after the first block at log2(classes) bits a label."""
    x, y = np.asarray(features, np.float64)[order], labels[order]
    ends = [int(f * len(y)) for f in fractions]
    bits = ends[0] * math.log2(num_classes)
    for start, stop in zip(ends[:-1], ends[1:], strict=True):
        # Every class is among the rows before each block: scikit-learn then predicts all.
        assert len(np.unique(y[:start])) == num_classes
        fit = LogisticRegression(C=1 / (l2 * start), tol=1e-6, max_iter=10_000)
        with threadpool_limits(1):  # BLAS threads only contend on these small problems
            probabilities = fit.fit(x[:start], y[:start]).predict_proba(x[start:stop])
        bits -= np.log2(probabilities[np.arange(stop - start), y[start:stop]]).sum()
    return bits


@pytest.mark.numerics
@pytest.mark.parametrize("seed", [None, 3])
def test_codelength_matches_scikit_learn_on_the_same_blocks(digit_cache, seed):
    probed, cache = digit_cache
    heads = [v.numpy().copy() for v in probed.probe_variables]
    mdl = kp.controls.description_length(probed, cache, fractions=FRACTIONS, seed=seed, verbose=0)
    features, labels = cache.arrays("train")
    n = len(labels)
    # seed=None: the cache's order; an integer: np.random.default_rng(seed).permutation(n).
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    for point in probed.points:
        row = mdl.results["train"][point]
        expected = sklearn_online_code(features[point], labels, FRACTIONS, L2, order)
        # Seen: within 1e-4 relative (the float32 L-BFGS fits against scikit-learn's).
        assert row["codelength"] == pytest.approx(expected, rel=0.01)
        assert row["uniform_codelength"] == pytest.approx(n * math.log2(10))
        assert row["compression"] == pytest.approx(row["uniform_codelength"] / row["codelength"])
        blocks = [row[f"block_codelength_{i:02d}"] for i in range(len(FRACTIONS))]
        sizes = [row[f"block_size_{i:02d}"] for i in range(len(FRACTIONS))]
        assert sum(blocks) == pytest.approx(row["codelength"])
        assert sizes == list(np.diff([0] + [int(f * n) for f in FRACTIONS]))
        assert blocks[0] == sizes[0] * math.log2(10)  # the uniform code
    # Digits are learnt from few examples of either layer: the code is shorter than uniform
    # (seen, seeded orders 0-9: 2.10-2.14 at hidden, 1.65-1.67 at hidden2).
    assert all(value > 1.4 for value in mdl.values("train", "compression").values())
    for before, after in zip(heads, probed.probe_variables, strict=True):
        np.testing.assert_array_equal(before, after.numpy())  # the model's heads untouched


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
def test_seeded_order_is_reproducible_and_streamed_reads_agree(digit_cache, monkeypatch):
    probed, cache = digit_cache
    fit = dict(fractions=FRACTIONS, verbose=0)
    first = kp.controls.description_length(probed, cache, seed=1, **fit)
    again = kp.controls.description_length(probed, cache, seed=1, **fit)
    assert again.results == first.results  # the same computation, bit for bit
    other = kp.controls.description_length(probed, cache, seed=2, **fit)
    assert other.values("train", "codelength") != first.values("train", "codelength")
    # Streamed: the features read a chunk of rows at a time at every evaluation (none held
    # in memory), the permuted rows gathered across the cache's 8 shards.
    monkeypatch.setattr(solvers, "HELD_BYTES", 0)
    monkeypatch.setattr(solvers, "CHUNK_BYTES", 512 * 32 * 4)  # 512 rows of hidden's
    streamed = kp.controls.description_length(probed, cache, seed=1, **fit)
    for point in probed.points:
        # Other chunks sum in another order: the fits agree within L-BFGS's tolerance.
        assert streamed.results["train"][point]["codelength"] == pytest.approx(
            first.results["train"][point]["codelength"], rel=1e-3
        )


def test_control_labels_and_json_round_trip(digit_cache, tmp_path):
    probed, cache = digit_cache
    y = cache.arrays("train", points=[])[1]
    shuffled = kp.controls.description_length(
        probed,
        cache,
        fractions=FRACTIONS,
        labels=kp.controls.shuffled_labels(y, seed=0),
        seed=0,
        verbose=0,
    )
    real = kp.controls.description_length(probed, cache, fractions=FRACTIONS, seed=0, verbose=0)
    # Shuffled labels hold nothing to learn: no compression (seen, seeds 0-9: 0.96-0.98).
    for point in probed.points:
        assert shuffled.values("train", "compression")[point] < 1.05
    assert all(value > 1.4 for value in real.values("train", "compression").values())
    real.to_json(tmp_path / "mdl.json")
    loaded = kp.ProbeReport.from_json(tmp_path / "mdl.json")
    assert loaded == real
    for metric in ("codelength", "uniform_codelength", "compression", "block_codelength_03"):
        assert loaded.values("train", metric) == real.values("train", metric)
    assert "codelength" in real.table(metrics=["codelength", "compression"])
    real.to_csv(tmp_path / "mdl.csv")
    assert kp.ProbeReport.from_csv(tmp_path / "mdl.csv") == real


@pytest.mark.slow  # 3 seeds x 2 online codes of 10 blocks, 256 features
@pytest.mark.numerics
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_real_task_compresses_far_better_than_the_control_task_at_close_accuracy(
    sklearn_digits, tmp_path, seed
):
    """Voita & Titov's claim: the control task (Hewitt & Liang's, a random label per type)
    and the real one reach close accuracies, but the real one's code is far shorter.

    Types recur as word types do: 100 digit images, each row one of them (3000 draws), a
    row's features those of a random 256-unit ReLU layer of a Keras model. Real labels:
    the digits, which generalise across images; control labels: one random class per
    image, which only memorising each image learns. Measured: the held-out accuracy of
    the probe fitted on all 2000 train rows (1000 held-out draws of the same images), and
    the compression of the online code at Voita & Titov's fractions, in a seeded order.
    Seen on seeds 0-9: accuracy real 1.000, control 0.943-0.990; compression real
    10.6-15.4, control 2.5-3.1 (3.7-6.1 times less).
    """
    x, y = sklearn_digits
    rng = np.random.default_rng(seed)
    types = rng.choice(len(x), 100, replace=False)
    ids = rng.integers(0, 100, 3000)
    rows, labels = x[types][ids], y[types][ids]
    control = kp.controls.control_task_labels(ids, labels[:2000], seed=seed, num_classes=10)
    probed = kp.ProbedModel(digit_model(width=256, seed=seed), ["hidden"], num_classes=10)
    kp.FeatureCache.write(probed, (rows[:2000], labels[:2000]), tmp_path, verbose=0)
    cache = kp.FeatureCache.open(tmp_path, model=probed)
    train_features = cache.arrays("train")[0]["hidden"]
    held_out = probed.extract_features(rows[2000:])["hidden"].numpy()
    compression, accuracy = {}, {}
    for task, task_labels in (("real", labels), ("control", control)):
        mdl = kp.controls.description_length(
            probed, cache, labels=task_labels[:2000], seed=seed, verbose=0
        )
        compression[task] = mdl.values("train", "compression")["hidden"]
        probe = kp.solvers.LBFGSProbe(l2=L2).fit(train_features, task_labels[:2000], 10)
        accuracy[task] = probe.score(held_out, task_labels[2000:])
    assert accuracy["real"] > 0.98 and accuracy["control"] > 0.9
    assert accuracy["real"] - accuracy["control"] < 0.1
    assert compression["real"] > 8 and compression["control"] > 1.5  # both learnt
    assert compression["real"] > 2.5 * compression["control"]


@pytest.mark.parametrize(
    "fractions",
    [(0.5, 0.2, 1.0), (0.1, 0.5), (0.0, 0.5, 1.0), (0.5, 1.0, 1.5), (0.5, 0.5, 1.0), (), "1"],
)
def test_fractions_must_increase_within_0_1_and_end_at_1(digit_cache, fractions):
    probed, cache = digit_cache
    with pytest.raises(ValueError, match=r"strictly increasing within \(0, 1\], the last 1"):
        kp.controls.description_length(probed, cache, fractions=fractions, verbose=0)


def test_bad_labels_seeds_solvers_and_first_blocks_are_refused(digit_cache):
    probed, cache = digit_cache
    n = cache.num_examples("train")
    mdl = kp.controls.description_length
    with pytest.raises(ValueError, match=f"one label per row of split 'train': {n}"):
        mdl(probed, cache, labels=np.zeros(n - 1, int), verbose=0)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        mdl(probed, cache, labels=np.full(n, 10), verbose=0)
    with pytest.raises(ValueError, match="`seed` must be an integer or None"):
        mdl(probed, cache, seed=0.5, verbose=0)
    with pytest.raises(ValueError, match="first block is empty"):
        mdl(probed, cache, fractions=(1e-4, 1.0), verbose=0)
    with pytest.raises(ValueError, match="held-out split"):
        mdl(probed, cache, solver=kp.solvers.LBFGSProbeCV(), verbose=0)
    with pytest.raises(ValueError, match="RidgeProbe is a regressor"):
        mdl(probed, cache, solver=kp.solvers.RidgeProbe(), verbose=0)
    with pytest.raises(TypeError, match="solver estimator"):
        mdl(probed, cache, solver="lbfgs", verbose=0)


def test_per_token_rows_are_the_kept_tokens(tmp_path):
    """Per-token probes: a row per kept token (padded positions are no rows)."""
    tokens, vocabulary = 12, 40
    rng = np.random.default_rng(0)
    kept = np.arange(tokens)[None] < rng.integers(3, tokens + 1, 96)[:, None]
    ids = np.where(kept, rng.integers(5, vocabulary, kept.shape), 0).astype("int32")
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": kept}
    y = np.where(kept, ids % 3, -1)  # what the token embedding tells; -1 where padded
    bert = tiny_bert(vocabulary_size=vocabulary, max_sequence_length=tokens)
    probed = kp.ProbedModel(bert, "transformer_layer_1", num_classes=3, reducers="tokens")
    kp.FeatureCache.write(probed, (x, y), tmp_path, split="train", batch_size=32, verbose=0)
    cache = kp.FeatureCache.open(tmp_path, model=probed)
    real = kp.controls.description_length(probed, cache, fractions=FRACTIONS, seed=0, verbose=0)
    features, labels = cache.arrays("train")
    n = int(kept.sum())
    np.testing.assert_array_equal(labels, y[kept])  # the rows: kept tokens, in order
    control_labels = kp.controls.control_task_labels(cache.token_ids("train"), labels, seed=0)
    control = kp.controls.description_length(
        probed, cache, fractions=FRACTIONS, labels=control_labels, seed=0, verbose=0
    )
    order = np.random.default_rng(0).permutation(n)
    for point in probed.points:
        for report, task in ((real, labels), (control, control_labels)):
            row = report.results["train"][point]
            assert row["uniform_codelength"] == pytest.approx(n * math.log2(3))
            assert sum(row[f"block_size_{i:02d}"] for i in range(len(FRACTIONS))) == n
            expected = sklearn_online_code(features[point], task, FRACTIONS, L2, order, 3)
            assert row["codelength"] == pytest.approx(expected, rel=0.01)
