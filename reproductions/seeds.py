"""Every comparison claim of the reproductions over seeds: is "reproduced" outside the noise?

Each study reruns one reproduction at every seed of `--seeds` (the seed of its
data split, initial weights, label corruption and training order), reads the
figures of its claims from each run's results JSON, and reports every figure's
value per seed with its mean, standard deviation and range, and every claim
("a < b") with its margin `b - a` per seed and the number of seeds where it
holds. The toy study needs no rerun: one run already holds 100 independent
datasets and networks, its replicates.

Per-point probe figures (a probe's error, accuracy or R^2 at a point, or its
loss between two networks) are each replicate's `kp.ProbeReport`, combined by
`kp.ProbeReport.combine`: its mean and `spread` (the standard deviation over
replicates) are the figure's. Each claim is also tested over the replicates:
a one-sample t-test of its margins (the paired t-test of the two figures,
paired by seed), with the margin's 95% t-interval, and the sign test (the
binomial test of the count where it holds; with 3 seeds it cannot go below
p = 0.25). A claim is "significant" where the t-test's p < 0.05.

Runs resume: a seed whose JSON is in `<out>/seeds/<script>/seed<s>/` from the
same command (`--out` and `--seed` aside) is read, not rerun, and so is the
committed `<out>/<script>.json` of that seed. Each run writes its own JSON,
figure and log there; this writes `<out>/seeds.json` and `<out>/seeds.png`.

    python reproductions/seeds.py                        # hours: 5-64 min per run here
    python reproductions/seeds.py --only true_vs_corrupted --seeds 0 1 2
    python reproductions/seeds.py --quick                # a smoke run
"""

import _common  # noqa: I001  (first: it points Keras at the offline cache)

import json  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _mnist_mlp import SHAPES, first_epoch  # noqa: E402  (imports no TensorFlow)

#: A claim is significant over the replicates where its t-test's p-value is below this.
ALPHA = 0.05


@dataclass
class Claim:
    """`lower` < `higher`: two figures' names, or a figure's name and a number."""

    text: str
    paper: str
    lower: str | float
    higher: str | float


@dataclass(frozen=True)
class Probe:
    """A per-point probe figure of a replicate's report: `report.results[split][point][metric]`."""

    split: str
    point: str
    metric: str


@dataclass
class Study:
    """One reproduction run at several seeds, and the figures its claims compare.

    Args:
        title: what the claims are about.
        args: the reproduction's options besides `--seed`, `--out` and `--quick`.
        figures: results JSON -> one `(report, {figure: value})` per replicate (a
            run is one replicate, unless it holds several, as the toy's datasets);
            a value is a number, a label (str), or a `Probe` of the replicate's
            `kp.ProbeReport` (figures combined by `kp.ProbeReport.combine`).
        claims: the comparisons.
        seeded: False where one run's replicates are the spread (the first seed only).
        also_accept: other option lists whose runs hold the same figures.
    """

    title: str
    args: list[str]
    figures: Callable[[dict], list[tuple]]
    claims: list[Claim]
    seeded: bool = True
    also_accept: list[list[str]] = field(default_factory=list)


def toy_figures(results):
    points = results["points"]
    depth = len(points) - 1
    at = {"the input": 0, "a quarter of the depth": depth // 4, "half the depth": depth // 2}
    at["the last layer"] = depth
    replicates = []
    for errors in results["test_error_per_dataset"]:
        report = kp.ProbeReport(
            points, {"test": {p: {"error": e} for p, e in zip(points, errors, strict=True)}}
        )
        figures = {"share of layers where the error rises": float(np.mean(np.diff(errors) >= 0))}
        figures.update(
            {f"error at {name}": Probe("test", points[i], "error") for name, i in at.items()}
        )
        replicates.append((report, figures))
    return replicates


def pathological_figures(results):
    return [
        (
            None,
            {
                f"{variant}: main output's train error": curve["train_error"][-1]
                for variant, curve in results["best"].items()
            },
        )
    ]


def true_vs_corrupted_figures(results):
    curves, figures = results["curves"], {}
    epochs = curves["epoch"]
    parts = {"true-label": curves["clean_accuracy"], "corrupted": curves["corrupted_accuracy"]}
    for level in (0.5, 0.9):
        for part, curve in parts.items():
            reached = first_epoch(epochs, curve, level)
            never = epochs[-1] + 1  # not reached: one epoch after the last
            figures[f"epoch at {level:.0%}, {part} part"] = never if reached is None else reached
    for part, curve in parts.items():
        figures[f"accuracy at epoch 5, {part} part"] = curve[min(5, len(curve) - 1)]
    return [(None, figures)]


def rcv_figures(results):
    r2 = results["r2_block1"]
    report = kp.ProbeReport(
        ["block1"],
        {fit: {"block1": {f"{c}_r2": v for c, v in row.items()}} for fit, row in r2.items()},
    )
    figures = {
        f"{concept} R^2 block1, {fit}": Probe(fit, "block1", f"{concept}_r2")
        for concept in ("orange", "dissimilarity", "green", "energy")
        for fit in ("1-memorizing", "generalizing")
    }
    for fit in ("1-memorizing", "generalizing"):
        gains = [r2[fit][c] - r2["random"][c] for c in results["concepts"]]
        figures[f"mean R^2 gain over random, {fit}"] = float(np.mean(gains))
    return [(report, figures)]


def flawed_figures(results):
    points, r2, probes = results["points"], results["val_r2"], results["probe_accuracy"]
    top = str(results["fractions"][-1])  # N = 1: every label corrupted
    lost = {  # each point's R^2 lost from N = 0 to N = 1
        p: {f"{c}_r2_loss": r2["0.0"][c][p] - r2[top][c][p] for c in SHAPES} for p in points
    }
    accuracies = {  # each point's class-probe accuracy at the end, per network
        f"probes, {fit}": {
            p: {"accuracy": curve[-1]}
            for p, curve in zip(points, probes[fit]["val_accuracy"], strict=True)
        }
        for fit in probes
    }
    report = kp.ProbeReport(points, {"N=0 -> 1": lost, **accuracies})
    figures = {
        f"{concept} R^2 loss {point}, N=0 -> 1": Probe("N=0 -> 1", point, f"{concept}_r2_loss")
        for concept in SHAPES
        for point in ("hidden1", "hidden6")
    }
    for fit in probes:
        figures[f"hidden6 probe accuracy, {fit}"] = Probe(f"probes, {fit}", "hidden6", "accuracy")
    return [(report, figures)]


def first_layer_figures(results):
    figures, lost = {}, {}
    for name in ("adam", "sgd"):
        config = next(c for c in results["results"] if c.startswith(f"{name}:"))
        row = results["results"][config]
        clean, noisy = row["0.0"]["r2"], row["0.2"]["r2"]
        points = list(clean["area"])
        lost[name] = {p: {"area_r2_loss": clean["area"][p] - noisy["area"][p]} for p in points}
        figures[f"{name}: area R^2 loss hidden1, N=0 -> 0.2"] = Probe(
            name, "hidden1", "area_r2_loss"
        )
        figures[f"{name}: hidden1 kernel moved, N=0.2"] = row["0.2"]["first_layer_moved"]
        figures[f"{name}: configuration"] = config
    return [(kp.ProbeReport(points, lost), figures)]


# fmt: off
STUDIES = {
    "toy": Study(
        "monotonicity: probe error rises with depth (toy MLP, 100 datasets of one run)",
        [], toy_figures,
        [Claim("error rises from the input to a quarter of the depth", "rises",
               "error at the input", "error at a quarter of the depth"),
         Claim("... from a quarter to half the depth", "rises",
               "error at a quarter of the depth", "error at half the depth"),
         Claim("... from half the depth to the last layer", "rises",
               "error at half the depth", "error at the last layer")],
        seeded=False,
    ),
    "pathological_sweep": Study(
        "aux vs plain: the 128-layer MLP's main output after 2000 Adam steps",
        ["--optimizer", "adam", "--lrs", "0.001", "--steps", "2000", "--every", "250",
         "--variants", "plain", "aux"],
        pathological_figures,
        [Claim("the aux net's main output trains better than the plain one's", "aux trains",
               "aux: main output's train error", "plain: main output's train error")],
    ),
    "true_vs_corrupted": Study(
        "true vs corrupted: which part of the labels the MLP fits first (N = 0.5)",
        [], true_vs_corrupted_figures,
        [Claim("the true-label part reaches 50% first", "earlier",
               "epoch at 50%, true-label part", "epoch at 50%, corrupted part"),
         Claim("the true-label part reaches 90% first", "earlier",
               "epoch at 90%, true-label part", "epoch at 90%, corrupted part")],
    ),
    "rcv_textures": Study(
        "1-memorizing vs generalizing: concept R^2 at block1 (shallow CNN, Imagenette)",
        ["--size", "32", "--epochs", "150"], rcv_figures,
        [Claim("orange: 1-memorizing below generalizing", "below",
               "orange R^2 block1, 1-memorizing", "orange R^2 block1, generalizing"),
         Claim("dissimilarity: 1-memorizing below generalizing", "below",
               "dissimilarity R^2 block1, 1-memorizing", "dissimilarity R^2 block1, generalizing"),
         Claim("1-memorizing gains over random", "> 0",
               0.0, "mean R^2 gain over random, 1-memorizing"),
         Claim("generalizing gains over random", "> 0",
               0.0, "mean R^2 gain over random, generalizing")],
    ),
    "flawed_mlp_mnist": Study(
        "the first layer under label corruption (MLP 6x512, Adam, 100 epochs)",
        [], flawed_figures,
        [*(Claim(f"{concept}: hidden1 loses less R^2 than hidden6, N=0 -> 1",
                 "unaffected / falls", f"{concept} R^2 loss hidden1, N=0 -> 1",
                 f"{concept} R^2 loss hidden6, N=0 -> 1") for concept in SHAPES),
         Claim("hidden6 probe: generalizing above 0.4-memorizing", "rises / rises",
               "hidden6 probe accuracy, 0.4-memorizing", "hidden6 probe accuracy, generalizing")],
    ),
    "first_layer_width": Study(
        "the first layer under 20% corruption: the paper's SGD vs our Adam (512 units)",
        ["--configs", "adam:512:100", "sgd:512:300"], first_layer_figures,
        [Claim("SGD's first layer loses less area R^2 than Adam's", "unaffected",
               "sgd: area R^2 loss hidden1, N=0 -> 0.2",
               "adam: area R^2 loss hidden1, N=0 -> 0.2")],
        also_accept=[[]],  # the default configurations include both
    ),
}
# fmt: on


def arguments():
    """The command line; `--only` keeps the other studies' results, so it is neutral."""
    parser = _common.parser(__doc__, committed=["", "--seeds 0 1 2 3 4"], neutral=["--only"])
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="every study's seeds (not --seed)"
    )
    parser.add_argument(
        "--only", nargs="+", choices=list(STUDIES), help="these studies only (the others' "
        "summaries in an earlier seeds.json are kept)",
    )  # fmt: skip
    return parser


if __name__ == "__main__":
    arguments().parse_args()  # --help and usage errors before Matplotlib is imported

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from scipy import stats  # noqa: E402

import keras_probes as kp  # noqa: E402


def options(command: str) -> list[str]:
    """A recorded command's options, `--out`, `--seed` and `--quick` left out."""
    words, kept = shlex.split(command)[2:], []
    while words:
        word = words.pop(0)
        if word in ("--out", "--seed"):
            words.pop(0)
        elif word != "--quick":
            kept.append(word)
    return kept


def reusable(path: Path, study: Study, seed: int, quick: bool) -> dict | None:
    """The results JSON at `path` if it is this study's run at `seed`, else None."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = options(payload.get("command", "")) in [study.args, *study.also_accept]
    if same and payload.get("seed") == seed and payload.get("quick") == quick:
        return payload
    return None


def run_study(script: str, study: Study, seed: int, args) -> dict:
    """The study's results at `seed`: read if already there, else run (its log beside)."""
    folder = args.out / "seeds" / script / f"seed{seed}"
    for path in (folder / f"{script}.json", args.out / f"{script}.json"):
        payload = reusable(path, study, seed, args.quick)
        if payload is not None:
            print(f"{script}, seed {seed}: read {path}", flush=True)
            return payload
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(_common.ROOT / "reproductions" / f"{script}.py"), *study.args]
    command += ["--seed", str(seed), "--out", str(folder)] + ["--quick"] * args.quick
    log = folder / f"{script}.log"
    print(f"{script}, seed {seed}: running, log in {log}", flush=True)
    with open(log, "w") as stream:
        code = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT).returncode
    if code:
        raise SystemExit(f"error: {script} --seed {seed} failed (exit {code}); see {log}")
    return json.loads((folder / f"{script}.json").read_text())


def spread(values) -> dict:
    values = np.asarray(values, dtype=float)
    return {
        "values": values.tolist(),
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "min": float(values.min()),
        "max": float(values.max()),
    }


def combined_spread(combined, probe: Probe) -> dict:
    """`spread`'s summary of a per-point figure, from `kp.ProbeReport.combine`'s report."""
    values = [run[probe.split][probe.point][probe.metric] for run in combined.runs]
    deviation = combined.spread(probe.split, probe.metric)[probe.point]
    return {
        "values": [float(v) for v in values],
        "mean": combined.values(probe.split, probe.metric)[probe.point],
        "std": deviation if len(values) > 1 else 0.0,
        "min": float(min(values)),
        "max": float(max(values)),
    }


def tested(margins) -> dict:
    """Is a claim's margin above 0 over the replicates: a one-sample t-test (two-sided;
    the paired t-test of its two figures) with the mean margin's 95% interval, and the
    sign test of the count where it holds."""
    margins = np.asarray(margins, dtype=float)
    holds, fails = int(np.sum(margins > 0)), int(np.sum(margins < 0))
    sign = stats.binomtest(holds, holds + fails).pvalue if holds + fails else 1.0
    mean = float(margins.mean())
    if len(margins) < 2:
        statistic = pvalue = low = high = None
    elif np.all(margins == margins[0]):  # no spread: the t statistic is infinite (or 0/0)
        statistic, pvalue, low, high = None, 0.0 if mean else 1.0, mean, mean
    else:
        result = stats.ttest_1samp(margins, 0.0)
        interval = result.confidence_interval(1 - ALPHA)
        statistic, pvalue = float(result.statistic), float(result.pvalue)
        low, high = float(interval.low), float(interval.high)
    return {
        "test": "one-sample t-test of the margins (two-sided)",
        "statistic": statistic,
        "pvalue": pvalue,
        "low": low,
        "high": high,
        "sign_pvalue": float(sign),
        "significant": pvalue is not None and pvalue < ALPHA,
    }


def summarize(study: Study, payloads: dict[int, dict]) -> dict:
    """Every figure and claim of the study over its replicates."""
    replicates = [row for p in payloads.values() for row in study.figures(p["results"])]
    reports = [report for report, _ in replicates if report is not None]
    combined = kp.ProbeReport.combine(reports) if reports else None
    rows = [figures for _, figures in replicates]
    figures = {
        name: combined_spread(combined, value)
        if isinstance(value, Probe)
        else spread([row[name] for row in rows])
        for name, value in rows[0].items()
        if not isinstance(value, str)
    }
    values = lambda f: [f] * len(rows) if isinstance(f, float) else figures[f]["values"]  # noqa: E731
    claims = []
    for claim in study.claims:
        margins = np.subtract(values(claim.higher), values(claim.lower))
        claims.append(
            {
                "claim": claim.text,
                "paper": claim.paper,
                "lower": claim.lower,
                "higher": claim.higher,
                "holds": int(sum(m > 0 for m in margins)),
                "of": len(margins),
                "margin": spread(margins),
                "over_replicates": tested(margins),
            }
        )
    return {
        "title": study.title,
        "seeds": list(payloads),
        "commands": [p["command"] for p in payloads.values()],
        "replicates": len(rows),
        "labels": {n: v for n, v in rows[0].items() if isinstance(v, str)},
        "figures": figures,
        "claims": claims,
    }


def plot(summaries: dict) -> plt.Figure:
    """The margin of every claim per replicate: right of zero, the claim holds."""
    rows = [len(summary["claims"]) + 1 for summary in summaries.values()]
    figure, axes = plt.subplots(
        len(rows), 1, figsize=(11, 0.8 + 0.55 * sum(rows)), squeeze=False, height_ratios=rows
    )
    rng = np.random.default_rng(0)
    for ax, summary in zip(axes[:, 0], summaries.values(), strict=True):
        for row, claim in enumerate(summary["claims"]):
            margins = np.asarray(claim["margin"]["values"])
            jitter = rng.uniform(-0.15, 0.15, len(margins)) if len(margins) > 5 else 0 * margins
            ax.scatter(margins, row + jitter, s=18, alpha=0.6 if len(margins) > 5 else 1)
            ax.plot([claim["margin"]["mean"]] * 2, [row - 0.3, row + 0.3], color="black")
            test = claim["over_replicates"]
            if test["low"] is not None:  # the mean margin's 95% t-interval
                ax.plot([test["low"], test["high"]], [row] * 2, color="black", lw=2.5)
        ax.axvline(0, color="red", lw=0.8)
        ax.set_yticks(range(len(summary["claims"])))
        ax.set_yticklabels(
            [
                f"{c['claim']} ({c['holds']}/{c['of']}{_stars(c['over_replicates'])})"
                for c in summary["claims"]
            ],
            fontsize=8,
        )
        ax.set_ylim(-0.6, len(summary["claims"]) - 0.4)
        ax.invert_yaxis()
        ax.set_title(f"{summary['title']}: seeds {summary['seeds']}", fontsize=9, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel(
        "margin of the claim (higher - lower): > 0 where it holds\n"
        f"bar: the mean margin's 95% t-interval; *: t-test over the replicates p < {ALPHA}"
    )
    figure.tight_layout()
    return figure


def _stars(test):
    return ", *" if test["significant"] else ""


def earlier(path: Path, quick: bool) -> dict:
    """The study summaries of an earlier `seeds.json` at the same scale, if any."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return payload["results"]["studies"] if payload.get("quick") == quick else {}


def main(argv=None):
    args = arguments().parse_args(argv)
    run = _common.Run("seeds", args)
    summaries = earlier(run.path(".json"), args.quick)
    for script in args.only or STUDIES:
        study = STUDIES[script]
        seeds = args.seeds if study.seeded else args.seeds[:1]
        payloads = {seed: run_study(script, study, seed, args) for seed in seeds}
        summaries[script] = summarize(study, payloads)
    summaries = {script: summaries[script] for script in STUDIES if script in summaries}
    for summary in summaries.values():  # kept from a seeds.json written before the tests
        for claim in summary["claims"]:
            claim.setdefault("over_replicates", tested(claim["margin"]["values"]))
    for script, summary in summaries.items():
        for claim in summary["claims"]:
            margin, test = claim["margin"], claim["over_replicates"]
            verdict = "significant" if test["significant"] else "not significant"
            pvalue = "n/a" if test["pvalue"] is None else f"{test['pvalue']:.2g}"
            run.compare(
                f"{script}: {claim['claim']}",
                claim["paper"],
                f"{claim['holds']}/{claim['of']}, margin {margin['mean']:.3g} "
                f"+- {margin['std']:.2g}, t-test p={pvalue} ({verdict}), sign test "
                f"p={test['sign_pvalue']:.2g}",
            )
    run.save({"studies": summaries}, figure=plot(summaries))


if __name__ == "__main__":
    main()
