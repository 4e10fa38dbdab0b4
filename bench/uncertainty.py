"""Coverage, false-positive rate and power of the reports' intervals and paired tests.

Statisticians prove an interval or a test on data whose truth is known: this
simulates it. Features of `CLASSES` Gaussian classes (means
`separation * signal` apart along the first axes of `FEATURES`, unit noise),
probes fitted by the library (`kp.solvers.LBFGSProbe` through
`keras_probes.fitting.fit_each`, a `kp.tasks.Classification` task), each
probe's true figure measured on `TRUTH` (10^6) fresh examples, then many
fresh test sets, each a `kp.ProbeReport` with its examples' outcomes:

* coverage: how often `report.interval(...)` at 95% holds the true error
  (Wilson) or loss (bootstrap); each test set is a split of its own in
  `fit_each`;
* sequences: per-token probes whose tokens' errors are correlated within a
  sequence (each sequence's noise is scaled by its own random factor): the
  interval over whole sequences (`Examples(sequences=...)`) against the
  token-level one on the same outcomes (`sequences=None`);
* paired tests: two points of equal true error (the same probe, fitted on
  the same train features, scored on features with their own noise: their
  predictions differ and are correlated through the shared noise) for the
  false-positive rate, and a point of weaker signal for the power, of
  `report.compare` (McNemar exact for errors, the paired bootstrap for
  losses, the clustered z test with sequences);
* Holm: `report.compare_adjacent` over points of equal true error: how often
  any pair is significant, with Holm's adjustment and without;
* monotonicity: how often `report.monotonicity(split, level=0.95)` holds
  minus Kendall's tau of the true errors against depth.

Beyond the coverage runs, each experiment scores one pool of test sets in
one `fit_each` split and cuts it into consecutive test sets (rows are i.i.d.,
so the slices are independent test sets), each its own `ProbeReport`.

Each figure is printed with its binomial band: `rate +- 3 * sqrt(rate (1 -
rate) / sets)` around the nominal rate (0.95 for coverage, the level 0.05
for false positives): a method that does what it claims lands in it almost
always. False positives are checked against the band's top only, the
monotonicity's coverage against its bottom only (a conservative interval
may cover more). `tests/test_uncertainty.py` runs the same experiments with
fewer sets.

    python bench/uncertainty.py               # the closing note's figures (~6 CPU minutes)
    python bench/uncertainty.py --sets 200    # quicker, wider bands
"""

import argparse
import dataclasses
import math
import os
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

import keras_probes as kp  # noqa: E402
from keras_probes.fitting import fit_each  # noqa: E402

CLASSES, FEATURES = 3, 4
TRUTH = 10**6  # examples that measure a probe's true figures (standard error <= 0.0005)
LEVEL = 0.95
L2 = 1e-3


def band(rate: float, sets: int, sds: float = 3.0) -> tuple[float, float]:
    """The binomial band of a rate measured over `sets` trials: `rate +- sds * sd`."""
    sd = math.sqrt(rate * (1 - rate) / sets)
    return rate - sds * sd, rate + sds * sd


class Simulation:
    """Labelled features of Gaussian classes at several probe points.

    Point `p`'s features are `signal[p] * separation * onehot(label) +
    scale * (sqrt(shared) * s + sqrt(1 - shared) * e_p)`: `s` is noise every
    point shares (so their predictions are correlated), `e_p` the point's
    own; on the train split every point gets the same `e` (so points of the
    same signal fit the same probe). `scale` is 1, or, with sequences, each
    sequence's `exp(spread * z)`, `z` standard normal: the tokens of a noisy
    sequence are wrong together.

    Args:
        seed: the seed of every draw.
        signals: `{point: signal}`, in depth order.
        separation: the class means' distance from the origin. Defaults to `1.5`.
        shared: the share of noise variance the points share. Defaults to `0.5`.
        spread: the log-sd of a sequence's noise scale. Defaults to `0.4`.
        lengths: `(shortest, longest)` sequence, uniform. Defaults to `(5, 35)`.
    """

    def __init__(self, seed, signals, separation=1.5, shared=0.5, spread=0.4, lengths=(5, 35)):
        self.rng = np.random.default_rng(seed)
        self.signals = dict(signals)
        self.separation, self.shared = separation, shared
        self.spread, self.lengths = spread, lengths

    def draw(self, rows=None, sequences=None, own_noise=True):
        """`(labels, {point: features}, sequence of each row or None)` of `rows`
        examples or `sequences` whole sequences."""
        if sequences is not None:
            low, high = self.lengths
            lengths = self.rng.integers(low, high + 1, sequences)
            index = np.repeat(np.arange(sequences), lengths)
            scale = np.exp(self.spread * self.rng.standard_normal(sequences))[index, None]
            rows = len(index)
        else:
            index, scale = None, 1.0
        labels = self.rng.integers(0, CLASSES, rows)
        means = self.separation * np.eye(CLASSES, FEATURES)[labels]
        shared = math.sqrt(self.shared) * self.rng.standard_normal((rows, FEATURES))
        own = math.sqrt(1 - self.shared)
        common = self.rng.standard_normal((rows, FEATURES)) if not own_noise else None
        features = {}
        for point, signal in self.signals.items():
            noise = common if common is not None else self.rng.standard_normal((rows, FEATURES))
            features[point] = (signal * means + scale * (shared + own * noise)).astype("float32")
        return labels, features, index

    def report(self, splits, train=4000, sequences=False):
        """The `ProbeReport` of probes fitted on a train split by `fit_each`, scored on
        `splits` (`{name: rows, or sequences with sequences=True}`) and `TRUTH` fresh
        examples (`"truth"`, by rows: its figures are the true ones)."""
        unit = "sequences" if sequences else "rows"
        drawn = {"train": self.draw(**{unit: train // (20 if sequences else 1)}, own_noise=False)}
        drawn.update({name: self.draw(**{unit: size}) for name, size in splits.items()})
        drawn["truth"] = self.draw(**{unit: TRUTH // (20 if sequences else 1)})
        report = fit_each(
            kp.solvers.LBFGSProbe(l2=L2),
            kp.tasks.Classification(CLASSES),
            list(self.signals),
            lambda split, point: drawn[split][1][point],
            {name: labels for name, (labels, _, _) in drawn.items()},
            verbose=0,
        )
        if not sequences:
            return report
        # Each row's sequence, for the splits fit_each kept outcomes of (not train).
        examples = {
            name: kp.outcomes.Examples(report.examples[name].fingerprint, drawn[name][2])
            for name in report.examples
        }
        return dataclasses.replace(report, examples=examples)


def test_sets(report, split, sets, tokens=False):
    """`sets` consecutive slices of `split`'s rows (whole sequences where the split
    has them), each a `ProbeReport` of one split `"test"` with those outcomes.

    `tokens=True` drops the sequences: the token-level reports of the same outcomes.
    """
    examples = report.examples[split]
    n = len(next(iter(report.outcomes[split].values())))
    if examples.sequences is None:
        bounds = np.linspace(0, n, sets + 1).astype(int)
    else:
        starts = np.searchsorted(examples.sequences, np.unique(examples.sequences))
        bounds = np.append(starts, n)[np.linspace(0, len(starts), sets + 1).astype(int)]
    reports = []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        kept = {
            point: kp.outcomes.Outcomes(
                o.correct[start:stop], o.top5[start:stop], o.loss[start:stop]
            )
            for point, o in report.outcomes[split].items()
        }
        results = {
            point: {m: float(o.values(m).mean()) for m in ("loss", "error", "top5_error")}
            for point, o in kept.items()
        }
        sequences = None
        if examples.sequences is not None and not tokens:
            sequences = examples.sequences[start:stop]
        reports.append(
            kp.ProbeReport(
                list(report.points),
                {"test": results},
                report.num_classes,
                outcomes={"test": kept},
                examples={"test": kp.outcomes.Examples(f"{split}[{start}:{stop}]", sequences)},
            )
        )
    return reports


def rate(reports: list, hit: Callable) -> float:
    """The share of `reports` for which `hit(report)` is true."""
    return float(np.mean([bool(hit(r)) for r in reports]))


def covers(interval, truth):
    low, high = interval
    return low <= truth <= high


# -- experiments ------------------------------------------------------------


def interval_coverage(seed=0, sets=400, rows=800):
    """How often `interval` holds a probe's true error and loss: `sets` test splits of
    `rows` examples, each scored by `fit_each`. Returns `{"error", "loss", "truth"}`."""
    sim = Simulation(seed, {"probe": 1.0})
    report = sim.report({f"test{i}": rows for i in range(sets)})
    truth = report.results["truth"]["probe"]
    coverage = {
        metric: rate(
            range(sets),
            lambda i, m=metric: covers(report.interval(f"test{i}", "probe", m), truth[m]),
        )
        for metric in ("error", "loss")
    }
    return {**coverage, "truth": truth}


def sequence_coverage(seed=0, sets=300, sequences=100):
    """Per-token probes: how often the interval over whole sequences, and the
    token-level one of the same outcomes, hold the true error and loss. Returns
    `{"error", "error_tokens", "loss", "loss_tokens", "truth", "tokens"}`."""
    sim = Simulation(seed, {"probe": 1.0})
    report = sim.report({"pool": sets * sequences}, sequences=True)
    truth = report.results["truth"]["probe"]
    by_sequence = test_sets(report, "pool", sets)
    by_token = test_sets(report, "pool", sets, tokens=True)
    found = {"truth": truth, "tokens": len(report.outcomes["pool"]["probe"]) / sets}
    for metric in ("error", "loss"):
        for name, reports in ((metric, by_sequence), (f"{metric}_tokens", by_token)):
            found[name] = rate(
                reports, lambda r, m=metric: covers(r.interval("test", "probe", m), truth[m])
            )
    return found


def paired_tests(seed=0, sets=400, rows=600, weaker=0.8, sequences=None):
    """`compare`'s false-positive rate (points `a`, `b` of equal true error) and power
    (`a` against `c`, of signal `weaker`), for errors and losses, at level 0.05.

    With `sequences`, each test set is that many whole sequences (clustered tests).
    Returns `{"error_fpr", "loss_fpr", "error_power", "loss_power", "truth", "same_fit"}`.
    """
    sim = Simulation(seed, {"a": 1.0, "b": 1.0, "c": weaker})
    size = sets * (sequences or rows)
    report = sim.report({"pool": size}, sequences=sequences is not None)
    reports = test_sets(report, "pool", sets)
    found = {
        "truth": report.results["truth"],
        "same_fit": report.results["train"]["a"] == report.results["train"]["b"],
    }
    for metric in ("error", "loss"):
        compare = lambda r, other, m=metric: r.compare("test", "a", other, metric=m)  # noqa: E731
        found[f"{metric}_fpr"] = rate(reports, lambda r, c=compare: c(r, "b").significant())
        found[f"{metric}_power"] = rate(reports, lambda r, c=compare: c(r, "c").significant())
    found["tests"] = {
        m: reports[0].compare("test", "a", "b", metric=m).test for m in ("error", "loss")
    }
    return found


def holm_family(seed=0, sets=400, rows=500, points=6):
    """`compare_adjacent` over `points` points of equal true error: how often any
    adjacent pair is significant at 0.05, with Holm's adjustment and without.
    Returns `{"holm", "unadjusted"}`."""
    sim = Simulation(seed, {f"p{i}": 1.0 for i in range(points)})
    report = sim.report({"pool": sets * rows})
    families = [r.compare_adjacent("test") for r in test_sets(report, "pool", sets)]
    return {
        "holm": float(np.mean([any(c.significant() for c in f) for f in families])),
        "unadjusted": float(np.mean([any(c.pvalue < 1 - LEVEL for c in f) for f in families])),
    }


def monotonicity_coverage(seed=0, sets=300, rows=500, signals=(1.0, 1.04, 1.08, 1.12, 1.16)):
    """How often `monotonicity(split, level=0.95)` holds minus Kendall's tau of the
    points' true errors against depth (points of `signals`, in depth order).
    Returns `{"coverage", "tau", "errors", "width"}`."""
    sim = Simulation(seed, {f"p{i}": s for i, s in enumerate(signals)})
    report = sim.report({"pool": sets * rows})
    errors = list(report.errors("truth").values())
    tau = float(-stats.kendalltau(range(len(errors)), errors).statistic)
    found = [r.monotonicity("test", level=LEVEL) for r in test_sets(report, "pool", sets)]
    return {
        "coverage": float(np.mean([low <= tau <= high for _, low, high in found])),
        "tau": tau,
        "errors": errors,
        "width": float(np.mean([high - low for _, low, high in found])),
    }


# -- the figures -------------------------------------------------------------


def _line(name, value, sets, nominal, tail="within"):
    low, high = band(nominal, sets)
    if tail == "at most":
        verdict = "ok" if value <= high else "ABOVE"
        shown = f"<= {high:.3f}"
    elif tail == "at least":
        verdict = "ok" if value >= low else "BELOW"
        shown = f">= {low:.3f}"
    else:
        verdict = "ok" if low <= value <= high else "OUTSIDE"
        shown = f"[{low:.3f}, {high:.3f}]"
    print(f"  {name:<44} {value:.3f}  (band {shown}, {sets} sets: {verdict})")


def _paired(found, sets):
    t = found["truth"]
    for metric in ("error", "loss"):
        a, b, c = (t[p][metric] for p in "abc")
        print(f"  true {metric}: a {a:.4f}, b {b:.4f}, c {c:.4f}")
    for metric in ("error", "loss"):
        test = found["tests"][metric]
        _line(
            f"false positives, {metric}, {test}", found[f"{metric}_fpr"], sets, 1 - LEVEL, "at most"
        )
    for metric in ("error", "loss"):
        effect = t["a"][metric] - t["c"][metric]
        print(f"  power, {metric} a - c = {effect:+.4f}: {found[f'{metric}_power']:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", type=int, default=1000, help="test sets per experiment")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sets, seed = args.sets, args.seed
    start = time.perf_counter()

    print(f"Coverage of 95% intervals, one probe ({CLASSES} classes, {FEATURES} features):")
    found = interval_coverage(seed, sets, rows=800)
    t = found["truth"]
    print(f"  true error {t['error']:.4f}, loss {t['loss']:.4f} ({TRUTH} examples); 800 per set")
    _line("error, Wilson", found["error"], sets, LEVEL)
    _line("loss, percentile bootstrap", found["loss"], sets, LEVEL)

    print("Per-token coverage, errors correlated within sequences (100 sequences per set):")
    found = sequence_coverage(seed, sets, sequences=100)
    t = found["truth"]
    print(
        f"  true error {t['error']:.4f}, loss {t['loss']:.4f}; {found['tokens']:.0f} tokens per set"
    )
    _line("error, over sequences (design-effect Wilson)", found["error"], sets, LEVEL)
    _line("error, over tokens (sequences=None)", found["error_tokens"], sets, LEVEL)
    _line("loss, bootstrap over sequences", found["loss"], sets, LEVEL)
    _line("loss, bootstrap over tokens", found["loss_tokens"], sets, LEVEL)

    print("Paired tests at 0.05, 600 examples per set (a, b: equal true error; c: weaker):")
    _paired(paired_tests(seed, sets, rows=600), sets)
    print("Paired tests at 0.05 over whole sequences, 100 sequences per set:")
    _paired(paired_tests(seed, sets, sequences=100), sets)

    print("Family-wise false positives of compare_adjacent, 6 points of equal error, 500 per set:")
    found = holm_family(seed, sets)
    _line("any adjacent pair significant, Holm", found["holm"], sets, 1 - LEVEL, "at most")
    _line(
        "any adjacent pair significant, unadjusted", found["unadjusted"], sets, 1 - LEVEL, "at most"
    )

    for name, signals in (
        ("close", (1.0, 1.04, 1.08, 1.12, 1.16)),
        ("clear", (1.0, 1.15, 1.3, 1.45, 1.6)),
    ):
        found = monotonicity_coverage(seed, sets, signals=signals)
        errors = ", ".join(f"{e:.3f}" for e in found["errors"])
        print(f"Monotonicity at 95%, {name} trend (true errors {errors}; tau {found['tau']:.2f}):")
        _line("coverage of the true tau", found["coverage"], sets, LEVEL, "at least")
        print(f"  mean width {found['width']:.3f}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
