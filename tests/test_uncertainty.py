"""Proofs of the reports' intervals and paired tests (kp.uncertainty, issue 27).

Default tier: `kp.uncertainty` against SciPy's references, and the round trips
of a report's intervals and tests through JSON and CSV, with its size.

Slow tier: the statistical proofs, on simulated data whose truth is known
(`bench/uncertainty.py`, which prints the same figures over more sets): probes
fitted by the library on Gaussian classes, their true figures measured on
10^6 fresh examples, then hundreds of fresh test sets. A rate measured over
`sets` test sets is asserted within its binomial band, `nominal +- 3 *
sqrt(nominal (1 - nominal) / sets)` (`bench.band`): a method that does what it
claims falls outside with probability ~0.003 (one side: ~0.0013). The seeds
are fixed; the bands hold for other seeds too (checked with seeds 1, 2, 3).
"""

import dataclasses
import importlib.util
import math

import numpy as np
import pytest
from conftest import ROOT
from scipy import special, stats

import keras_probes as kp
from keras_probes import uncertainty

_spec = importlib.util.spec_from_file_location("bench_uncertainty", ROOT / "bench/uncertainty.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

SEED = 0
LEVEL = 0.95
ALPHA = 1 - LEVEL


# -- SciPy's references (default tier) ---------------------------------------


@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (57, 300), (1, 1000)])
def test_rate_interval_is_wilsons(k, n, level):
    values = np.zeros(n)
    values[:k] = 1
    wilson = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    np.testing.assert_allclose(
        uncertainty.rate_interval(values, level=level),
        (wilson.low, wilson.high),
        rtol=0,
        atol=1e-12,
    )


def test_paired_rates_pvalue_is_mcnemars_exact_test():
    rng = np.random.default_rng(0)
    shared = rng.random(400)
    a = (shared + 0.3 * rng.random(400)) > 1.0  # correlated mistakes
    b = (shared + 0.3 * rng.random(400)) > 0.95
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    assert only_a > 0 and only_b > 0
    c = uncertainty.paired_rates(a, b)
    assert c.pvalue == stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert c.difference == pytest.approx(a.mean() - b.mean(), abs=1e-15)
    assert c.low < c.difference < c.high and c.test == "McNemar exact"
    assert uncertainty.paired_rates(a, a).pvalue == 1.0  # no discordant pair


def test_clustered_test_of_the_same_difference_in_every_sequence():
    # a is wrong on the first token of each of 30 sequences (e.g. a BOS token), b never:
    # the difference has no variance between sequences, and is significant (all 30
    # sequences one way: a sign test gives 2 * 0.5**30), not p = 1.
    units = np.repeat(np.arange(30), 10)
    a, b = np.tile(np.eye(10)[0], 30), np.zeros(300)
    c = uncertainty.paired_rates(a, b, units)
    assert c.difference == pytest.approx(0.1)
    assert c.pvalue < 1e-6, c
    assert uncertainty.paired_rates(np.ones(300), b, units).pvalue < 1e-6


def test_mean_interval_is_scipys_percentile_bootstrap():
    # A skewed loss-like sample. With 20,000 resamples each end has a Monte Carlo
    # sd of ~0.019 standard errors, ~0.027 for the difference of two bootstraps:
    # 0.15 standard errors is ~5.5 of those.
    values = np.random.default_rng(0).exponential(size=200)
    ours = uncertainty.mean_interval(values, resamples=20_000)
    scipys = stats.bootstrap(
        (values,), np.mean, method="percentile", n_resamples=20_000, random_state=0
    ).confidence_interval
    se = values.std(ddof=1) / math.sqrt(len(values))
    np.testing.assert_allclose(ours, (scipys.low, scipys.high), rtol=0, atol=0.15 * se)
    # One example per sequence is the example-level bootstrap, draw for draw.
    assert uncertainty.mean_interval(values, units=np.arange(200)) == uncertainty.mean_interval(
        values
    )


def test_kendall_interval_tau_is_minus_scipys_kendalltau():
    rng = np.random.default_rng(0)
    values = (rng.random((300, 6)) < np.linspace(0.4, 0.2, 6)).astype(float)
    values[:, 4] = values[:, 3]  # a tie between two points: tau-b
    tau, low, high = uncertainty.kendall_interval(values, resamples=200)
    means = values.mean(axis=0)
    assert tau == pytest.approx(-stats.kendalltau(range(6), means).statistic, abs=1e-12)
    assert -1 <= low <= high <= 1


def test_holm_by_hand():
    # Sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> 0.06
    # (non-decreasing), back in the given order.
    np.testing.assert_allclose(
        uncertainty.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02], rtol=1e-12
    )
    np.testing.assert_array_equal(uncertainty.holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    np.testing.assert_array_equal(uncertainty.holm([0.2]), [0.2])


# -- round trips (default tier) ----------------------------------------------


@pytest.fixture(scope="module")
def report():
    """A report of three points on `"test"` (300 rows) and `"tokens"` (40 sequences),
    with outcomes of simulated logits."""
    rng = np.random.default_rng(0)
    points = ["conv1", "block/relu", "dense"]
    lengths = rng.integers(5, 30, 40)
    splits = {"test": (300, None), "tokens": (lengths.sum(), np.repeat(np.arange(40), lengths))}
    results, outcomes, examples = {}, {}, {}
    for split, (n, index) in splits.items():
        y = rng.integers(0, 10, n)
        results[split], outcomes[split] = {}, {}
        for depth, point in enumerate(points):
            logits = rng.normal(size=(n, 10)) + (1 + depth) * np.eye(10)[y]
            ranks = np.sum(logits > logits[np.arange(n), y][:, None], axis=1)
            kept = kp.outcomes.Outcomes(
                correct=ranks == 0,
                top5=ranks < 5,
                loss=special.logsumexp(logits, axis=1) - logits[np.arange(n), y],
            )
            outcomes[split][point] = kept
            results[split][point] = {
                m: float(kept.values(m).mean()) for m in ("loss", "error", "top5_error")
            }
        examples[split] = kp.outcomes.Examples(kp.outcomes.fingerprint(y), index)
    return kp.ProbeReport(points, results, 10, "sim", outcomes, examples)


def _figures(report, control):
    """Every interval and test of the report, as plain values."""
    figures = []
    for split in ("test", "tokens"):
        figures += [
            report.interval(split, p, m) for p in report.points for m in ("error", "top5_error")
        ]
        figures += [
            report.interval(split, "dense", "loss", level=0.9),
            report.compare(split, "conv1", "dense"),
            report.compare(split, "conv1", "dense", metric="loss"),
            report.compare(split, "block/relu", other=control),
            report.compare_adjacent(split),
            report.monotonicity(split, level=LEVEL),
            report.monotonicity(split, "loss", level=LEVEL),
        ]
    return figures


def test_intervals_and_tests_round_trip_exactly(report, tmp_path):
    report.to_json(tmp_path / "r.json")
    report.to_csv(tmp_path / "r.csv")
    control = dataclasses.replace(report, model="control")  # the same examples and outcomes
    expected = _figures(report, control)
    assert report.compare("tokens", "dense", other=control).difference == 0
    for loaded in (kp.ProbeReport.from_json(tmp_path / "r.json"),
                   kp.ProbeReport.from_csv(tmp_path / "r.csv")):  # fmt: skip
        assert loaded == report
        # Computed from the loaded report, the original one as the control.
        assert _figures(loaded, report) == expected


def test_report_size_per_example_and_point(report, tmp_path):
    # Outcomes take 2 bits and a float32 per example: 4.25 bytes, 5.67 in base64.
    bare = dataclasses.replace(report, outcomes={}, examples={})
    kept = sum(len(next(iter(o.values()))) for o in report.outcomes.values()) * len(report.points)
    for write in ("to_json", "to_csv"):
        getattr(report, write)(tmp_path / "full")
        getattr(bare, write)(tmp_path / "bare")
        size = (tmp_path / "full").stat().st_size - (tmp_path / "bare").stat().st_size
        assert 5.6 < size / kept < 6.5, (write, size / kept)


# -- proofs on simulated data (slow tier) -------------------------------------


@pytest.mark.slow
@pytest.mark.numerics
def test_intervals_cover_the_true_error_and_loss():
    # 400 test sets of 800 examples, each a split of fit_each's report: the 95% Wilson
    # interval of the error and the percentile bootstrap of the loss cover the probe's
    # true figures (10^6 examples) in 95% of them: [0.917, 0.983].
    found = bench.interval_coverage(SEED, sets=400, rows=800)
    low, high = bench.band(LEVEL, 400)
    assert 0.15 < found["truth"]["error"] < 0.35  # an informative probe, not a trivial one
    assert low <= found["error"] <= high, found
    assert low <= found["loss"] <= high, found


@pytest.mark.slow
@pytest.mark.numerics
def test_per_token_intervals_resample_sequences():
    # 300 test sets of 100 sequences (~2000 tokens): tokens of a noisy sequence are
    # wrong together. Over whole sequences the error interval covers within
    # [0.912, 0.988]; the token-level interval of the same outcomes (sequences=None)
    # covers far less (measured ~0.7), below the band.
    found = bench.sequence_coverage(SEED, sets=300, sequences=100)
    low, high = bench.band(LEVEL, 300)
    assert low <= found["error"] <= high, found
    assert found["error_tokens"] < low, found
    # The loss's bootstrap over 100 sequences undercovers by ~0.02 (measured 0.93): the
    # sequences' loss sums are skewed (noisy sequences, large losses), and at this many
    # SciPy's BCa and a cluster-robust t interval do no better. Asserted within 0.03 of
    # the level, less the band; the token-level one far below.
    assert low - 0.03 <= found["loss"] <= high, found
    assert found["loss_tokens"] < low - 0.03, found


@pytest.mark.slow
@pytest.mark.numerics
def test_paired_tests_false_positive_rate_and_power():
    # 400 test sets of 600 examples. a and b: the same probe (fitted on the same train
    # features) scored on features with their own noise: equal true error, different
    # and correlated predictions. McNemar's exact test (error) and the paired bootstrap
    # (loss) reject at 0.05 at most 0.05 + 3 sd = 0.083 of the time; against c (signal
    # 0.8: true error ~0.075 higher) both have power > 0.8 (measured 0.94 and 1.0).
    found = bench.paired_tests(SEED, sets=400, rows=600, weaker=0.8)
    truth = found["truth"]
    assert found["same_fit"]  # the null holds: one probe, features of one distribution
    assert found["tests"] == {"error": "McNemar exact", "loss": "paired bootstrap"}
    assert abs(truth["a"]["error"] - truth["b"]["error"]) < 0.003  # 10^6 examples each
    assert truth["c"]["error"] - truth["a"]["error"] > 0.05
    high = bench.band(ALPHA, 400)[1]
    assert found["error_fpr"] <= high and found["loss_fpr"] <= high, found
    assert found["error_power"] > 0.8 and found["loss_power"] > 0.8, found


@pytest.mark.slow
@pytest.mark.numerics
def test_clustered_tests_false_positive_rate_and_power():
    # As above, per token: 300 test sets of 100 sequences, compared over whole sequences
    # (the clustered z test for errors, the paired bootstrap of sequences for losses);
    # power > 0.8 against c. Both estimate a variance from 100 sequences, so they run a
    # little over their level (measured ~0.055 for the z test alone, 0.06 and 0.065 in
    # bench/uncertainty.py): at most 0.05 + 0.01 + 3 sd = 0.098 false positives.
    found = bench.paired_tests(SEED, sets=300, sequences=100, weaker=0.8)
    assert found["same_fit"]
    assert found["tests"] == {"error": "clustered z", "loss": "paired bootstrap"}
    high = bench.band(ALPHA, 300)[1] + 0.01
    assert found["error_fpr"] <= high and found["loss_fpr"] <= high, found
    assert found["error_power"] > 0.8 and found["loss_power"] > 0.8, found


@pytest.mark.slow
@pytest.mark.numerics
def test_compare_adjacent_controls_the_family_wise_rate():
    # 400 test sets of 500 examples at 6 points of equal true error (5 adjacent pairs):
    # with Holm's adjustment some pair is significant at 0.05 in at most 0.083 of the
    # sets; unadjusted, clearly more often (measured ~0.15).
    found = bench.holm_family(SEED, sets=400, rows=500, points=6)
    high = bench.band(ALPHA, 400)[1]
    assert found["holm"] <= high, found
    assert found["unadjusted"] > high, found


@pytest.mark.slow
@pytest.mark.numerics
def test_monotonicity_interval_covers_a_clear_trend():
    # 300 test sets of 500 examples; true errors ~0.23, 0.18, 0.14, 0.11, 0.08 with depth
    # (tau 1): the 95% interval holds tau in at least 0.912 of the sets.
    found = bench.monotonicity_coverage(
        SEED, sets=300, rows=500, signals=(1.0, 1.15, 1.3, 1.45, 1.6)
    )
    assert found["tau"] == pytest.approx(1.0)
    assert found["coverage"] >= bench.band(LEVEL, 300)[0], found


@pytest.mark.slow
@pytest.mark.numerics
def test_monotonicity_interval_undercovers_a_close_trend_as_documented():
    # True errors falling steadily but close together (~0.014 apart: ~0.23 ... 0.18,
    # tau 1), 300 test sets of 500 examples: noise reorders close points, so the
    # measured tau and its resamples fall below the true one, and the percentile
    # interval holds tau in ~0.77 of the sets (measured 0.75-0.77), below the band of a 95%
    # interval: the limitation kendall_interval's docstring states (a tau at its
    # boundary), which compare_adjacent's tests answer instead. Pinned from both sides
    # so that the docstring stays true.
    found = bench.monotonicity_coverage(
        SEED, sets=300, rows=500, signals=(1.0, 1.04, 1.08, 1.12, 1.16)
    )
    assert found["tau"] == pytest.approx(1.0)
    assert 0.6 <= found["coverage"] < bench.band(LEVEL, 300)[0], found
