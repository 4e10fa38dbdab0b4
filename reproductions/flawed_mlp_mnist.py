"""Intentionally flawed MLPs on MNIST (Graziani et al. 2019, Sec. 4 Fig. 4 and Sec. 3 Fig. 1a).

Six-hidden-layer MLPs are trained on MNIST with a fraction N of the training
labels replaced at random (N-memorizing networks, N = 0, 0.2, ..., 1.0), all
from the same initial weights, each to a full fit of its labels. Then, at the
input and at each hidden layer:

- Regression Concept Vectors of the digit's shape, `area`, `perimeter` and
  `eccentricity` (scikit-image `regionprops` of the stroke): closed-form ridge
  on the layer's activations, penalty per concept by leave-one-out, R^2 on
  held-out digits (`kp.fit_regression_probes`). The paper (Fig. 4): the
  concepts are best regressed in the first layer, whose R^2 label corruption
  does not affect; deeper layers lose R^2 as the corruption grows.
- Linear classifier probes of the true classes over training, for the random
  (untrained), 0.4-memorizing and generalizing networks (`ProbeMonitor`,
  held-out accuracy). The paper (Fig. 1a): training increases the classes'
  linear separability, for the memorizing network too.
- Controls (not in the paper): the generalizing network's class probes against
  probes on shuffled labels and on a re-initialised network (selectivity).

Every held-out figure has its 95% interval (R^2: bootstrap over the held-out
digits; accuracies: Wilson), and every comparison the output makes is a
paired test on the same held-out digits (`ProbeReport.compare`; R^2 lost at
one layer against another: the paired bootstrap), Holm-adjusted within each
family of comparisons (a concept's R^2, the class probes, the selectivities).

Scaled down from the paper: 512 units per layer instead of 4,096, Adam for
100 epochs instead of SGD for 1,000 (every network still fits its labels);
offline, 7,000 training digits (a split of the official test images).

    python reproductions/flawed_mlp_mnist.py           # about 15 minutes on 2 CPU cores
    python reproductions/flawed_mlp_mnist.py --quick   # a smoke run
"""

import _common  # noqa: I001  (first: it points Keras at the offline cache)


def arguments():
    """The command line, built before TensorFlow is imported."""
    parser = _common.parser(__doc__)
    parser.add_argument("--epochs", type=int, default=100, help="training epochs per network")
    parser.add_argument("--width", type=int, default=512, help="units per hidden layer")
    parser.add_argument("--depth", type=int, default=6, help="hidden layers")
    parser.add_argument(
        "--fractions", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    )
    parser.add_argument(
        "--probe-examples", type=int, default=3000, help="probe-training digits of the monitor"
    )
    parser.add_argument("--l2", type=float, default=1e-3, help="L2 of the class probes")
    return parser


if __name__ == "__main__":
    arguments().parse_args()  # --help and usage errors before TensorFlow is imported (below)

import dataclasses  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from _mnist_mlp import SHAPES, accuracy, compare_losses, correct, data, mlp  # noqa: E402

import keras_probes as kp  # noqa: E402

MONITORED = {"generalizing": 0.0, "0.4-memorizing": 0.4}


def shape_concepts(images) -> np.ndarray:
    measured = kp.concepts.shape_measures(images)
    return np.stack([measured[c] for c in SHAPES], axis=1)


def points_of(model):
    return ["input", *(layer.name for layer in model.layers if layer.name.startswith("hidden"))]


def cached(probed, parts, directory):
    """The feature cache of `probed` on the train and validation digits."""
    for split in ("train", "val"):
        x, y, _ = parts[split]
        kp.FeatureCache.write(probed, (x, y), directory, split=split, batch_size=500, verbose=0)
    return kp.FeatureCache.open(directory, model=probed)


def regression_report(model, parts, targets, directory):
    """RCV R^2 / MSPE of every point of `model` on the validation digits."""
    probed = kp.RegressionProbedModel(model, points=points_of(model), targets=SHAPES)
    cache = cached(probed, parts, directory)
    return kp.fit_regression_probes(probed, cache, targets, verbose=0)


def class_probes(probed, splits, solver, directory):
    """Class probes of `probed` fitted by `solver` on `splits` (`{split: (x, y)}`, a
    `ProbeMonitor`'s), measured on its held-out split: a report with outcomes."""
    for split, (x, y) in splits.items():
        kp.FeatureCache.write(probed, (x, y), directory, split=split, batch_size=500, verbose=0)
    cache = kp.FeatureCache.open(directory, model=probed)
    return kp.fit_probes(probed, cache, solver=solver, verbose=0)


def controls(model, parts, directory, l2):
    """Class probes of `model` and their two controls, as reports with selectivity."""
    probed = kp.ProbedModel(model, points=points_of(model), num_classes=10)
    cache = cached(probed, parts, directory)
    report = kp.fit_probes(probed, cache, l2=l2, verbose=0)
    shuffled = kp.controls.shuffled_label_probes(probed, cache, l2=l2, verbose=0)
    data_splits = {s: parts[s][:2] for s in ("train", "val")}
    # Written in batches as `cached` writes: the same data fingerprint, so the two pair.
    random = kp.controls.reinitialized_probes(probed, data_splits, l2=l2, batch_size=500, verbose=0)
    return report, shuffled, random


def main(argv=None):
    args = arguments().parse_args(argv)
    run = _common.Run("flawed_mlp_mnist", args)
    parts, source = data(args.seed, args.quick)
    run.note(f"data: {source}")
    if args.quick:
        args.epochs, args.width, args.fractions, args.probe_examples = 3, 32, [0.0, 0.4, 1.0], 400
    at = sorted({e for e in (1, 2, 5, 10, 20, 35, 50, 75, 100, args.epochs) if e <= args.epochs})
    run.note(
        f"scaled down: {args.depth} hidden layers of {args.width} units (paper 4,096), "
        f"Adam(1e-3) for {args.epochs} epochs (paper SGD 0.01 for 1,000)"
    )
    run.note(
        "intervals: 95%, over the held-out digits (R^2: percentile bootstrap, 2000 "
        "resamples; accuracies: Wilson); tests: paired on the same digits (McNemar for "
        "accuracies, paired bootstrap for R^2), Holm-adjusted within each family (one "
        "concept's R^2, the class probes, the selectivities)"
    )
    (x, y, images), (xv, yv, images_v) = parts["train"], parts["val"]
    targets = {"train": shape_concepts(images), "val": shape_concepts(images_v)}
    print(f"train / val digits: {len(y)} / {len(yv)}; concepts {SHAPES}")

    r2 = {}  # {network: {concept: {point: R^2}}}
    reports = {}  # {network: its regression ProbeReport}
    fits, histories, probes = {}, {}, {}  # probes: {network: class-probe report at the end}
    with tempfile.TemporaryDirectory(prefix="flawed_mlp_") as scratch:
        random_net = mlp(args.width, args.depth, args.seed)
        reports["random"] = regression_report(random_net, parts, targets, f"{scratch}/random")
        r2["random"] = {c: reports["random"].values("val", f"{c}_r2") for c in SHAPES}
        for fraction in args.fractions:
            start = time.perf_counter()
            labels, corrupted = kp.flawed.corrupt_labels(y, fraction, 10, seed=args.seed)
            model = mlp(args.width, args.depth, args.seed)
            callbacks = []
            name = next((n for n, f in MONITORED.items() if f == fraction), None)
            if name is not None:
                # The probes learn the true classes, held out: linear separability.
                monitor = kp.callbacks.ProbeMonitor(
                    (x, y),
                    num_classes=10,
                    validation_data=(xv, yv),
                    points=["input", *(f"hidden{i + 1}" for i in range(args.depth))],
                    at=at,
                    max_examples=args.probe_examples,
                    l2=args.l2,
                    seed=args.seed,
                    verbose=0,
                )
                callbacks.append(monitor)
            _common.train(model, x, labels, args.epochs, args.seed, callbacks=callbacks)
            right = correct(model, xv, yv)
            fits[fraction] = {
                "train_accuracy_on_its_labels": accuracy(model, x, labels),
                "val_accuracy": float(right.mean()),
                "val_accuracy_interval": list(kp.uncertainty.rate_interval(right)),
            }
            if name is not None:
                histories[name] = monitor.history
                # The monitor's last probes again, on its digits, keeping each held-out
                # digit's outcome (the history keeps the figures only); warm-started from
                # the monitor's own, they end where the monitor's last measurement did.
                probes[name] = class_probes(
                    monitor.probed, monitor.splits, monitor.solver, f"{scratch}/probes_{name}"
                )
                if "random" not in probes:  # the same initial weights as every network
                    probed = kp.ProbedModel(random_net, points=monitor.points, num_classes=10)
                    probes["random"] = class_probes(
                        probed, monitor.splits, monitor.solver, f"{scratch}/probes_random"
                    )
            report = regression_report(model, parts, targets, f"{scratch}/n{fraction}")
            reports[fraction] = report
            r2[fraction] = {c: report.values("val", f"{c}_r2") for c in SHAPES}
            area = r2[fraction]["area"]
            print(
                f"N = {fraction:.1f}: train accuracy on its labels "
                f"{fits[fraction]['train_accuracy_on_its_labels']:.3f}, val accuracy "
                f"{fits[fraction]['val_accuracy']:.3f}; area R^2 hidden1 {area['hidden1']:.3f} "
                f"... hidden{args.depth} {area[f'hidden{args.depth}']:.3f} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            if fraction == 0.0:
                control_reports = controls(model, parts, f"{scratch}/controls", args.l2)

    points = list(r2["random"]["area"])
    hidden = points[1:]
    first, last = hidden[0], hidden[-1]
    clean, next_, noisy = args.fractions[0], args.fractions[1], args.fractions[-1]
    r2_interval = {
        network: {
            c: {p: list(report.interval("val", p, f"{c}_r2")) for p in points} for c in SHAPES
        }
        for network, report in reports.items()
    }
    shown = lambda n, c, p: _common.with_interval(r2[n][c][p], r2_interval[n][c][p])  # noqa: E731

    report, shuffled, random_control = control_reports
    comparisons = {}  # {family: {name: Comparison}}, each family Holm-adjusted
    for concept in SHAPES:
        metric, family = f"{concept}_r2", {}
        ranked = sorted(hidden, key=lambda p, c=concept: -r2[clean][c][p])
        family[f"{concept} N={clean:g}: {ranked[0]} - {ranked[1]} (the best two)"] = reports[
            clean
        ].compare("val", ranked[0], ranked[1], metric=metric)
        for point, (a, b) in (
            (first, (clean, next_)),
            (first, (next_, noisy)),
            (last, (clean, noisy)),
        ):
            family[f"{concept} {point}: N={a:g} - N={b:g}"] = reports[a].compare(
                "val", point, other=reports[b], metric=metric
            )
        family[f"{concept} R^2 lost N={clean:g} -> {noisy:g}: {last} - {first}"] = (
            dataclasses.replace(
                compare_losses(
                    metric,
                    ((reports[clean], last), (reports[noisy], last)),
                    ((reports[clean], first), (reports[noisy], first)),
                ),
                a=f"{last} lost",
                b=f"{first} lost",
            )
        )
        for point in (first, last):
            family[f"{concept} {point}: random - N={clean:g}"] = reports["random"].compare(
                "val", point, other=reports[clean], metric=metric
            )
        comparisons[f"{concept} R^2"] = family
    # Class probes, error differences: accuracy of the second minus the first.
    family = {
        f"class probe {last}: accuracy, generalizing - 0.4-memorizing": probes[
            "0.4-memorizing"
        ].compare("val", last, other=probes["generalizing"])
    }
    for name in MONITORED:
        family[f"class probe {last}: accuracy, {name} - random"] = probes["random"].compare(
            "val", last, other=probes[name]
        )
    comparisons["class probes at the end"] = family
    comparisons["selectivity"] = {  # the control's error minus the probe's
        f"selectivity {point} vs re-initialised net": random_control.compare(
            "val", point, other=report
        )
        for point in (first, last)
    }
    comparisons = {
        family: _common.tested_together(tests, family) for family, tests in comparisons.items()
    }
    flat = {name: c for tests in comparisons.values() for name, c in tests.items()}
    said = lambda name: _common.tested(flat[name])  # noqa: E731

    for concept in SHAPES:
        ranked = sorted(hidden, key=lambda p, c=concept: -r2[clean][c][p])
        best_two = f"{concept} N={clean:g}: {ranked[0]} - {ranked[1]} (the best two)"
        run.compare(
            f"{concept}: best-regressed layer (N=0), minus the next best",
            "first",
            f"{ranked[0]}: {said(best_two)}",
        )
        run.compare(
            f"{concept} R^2 {first}: N={clean:g} -> N={noisy:g}",
            "unaffected",
            f"{shown(clean, concept, first)} -> {shown(noisy, concept, first)}",
        )
        run.compare(
            f"{concept} R^2 {last}: N={clean:g} -> N={noisy:g}",
            "falls",
            f"{shown(clean, concept, last)} -> {shown(noisy, concept, last)}",
        )
        run.compare(
            f"{concept} R^2 lost, {last} minus {first}",
            "> 0",
            said(f"{concept} R^2 lost N={clean:g} -> {noisy:g}: {last} - {first}"),
        )
    accuracy_curves = {
        name: {
            "epochs": history.epochs,
            "val_accuracy": (1 - history.matrix("val_error")).tolist(),
        }
        for name, history in histories.items()
    }
    start_accuracy = 1 - histories["generalizing"].matrix("val_error")[:, 0]
    accuracy_curves["random"] = {
        "epochs": histories["generalizing"].epochs,
        "val_accuracy": np.repeat(start_accuracy[:, None], len(at) + 1, axis=1).tolist(),
    }
    n_val = len(monitor.splits["val"][1])
    for curves in accuracy_curves.values():  # Wilson, from each rate and the digits' count
        curves["val_accuracy_interval"] = [
            [_common.rate_interval(a, n_val) for a in row] for row in curves["val_accuracy"]
        ]
    probe_accuracy_end = {
        name: {
            p: {
                "accuracy": 1 - e,
                "interval": [1 - h for h in probes[name].interval("val", p)[::-1]],
            }
            for p, e in probes[name].errors("val").items()
        }
        for name in ("random", *MONITORED)
    }
    for name in ("random", "0.4-memorizing", "generalizing"):
        curve = accuracy_curves[name]
        ends = [
            _common.with_interval(
                curve["val_accuracy"][-1][i], curve["val_accuracy_interval"][-1][i]
            )
            for i in (0, -1)
        ]
        gain = (
            ""
            if name == "random"
            else f"; {said(f'class probe {last}: accuracy, {name} - random')}"
        )
        run.compare(
            f"probe val accuracy {last}, {name}: start -> end",
            "rises" if name != "random" else "flat",
            f"{ends[0]} -> {ends[1]}{gain}",
        )
    run.compare(
        f"probe val accuracy {last} at the end: generalizing - 0.4-memorizing",
        "-",
        said(f"class probe {last}: accuracy, generalizing - 0.4-memorizing"),
    )
    with_controls = report.with_selectivity(shuffled, "train")
    with_random = report.with_selectivity(random_control, "val")
    print(with_controls.table(metrics=["error", "selectivity"], splits=["train"]))
    print(with_random.table(metrics=["error", "selectivity"], splits=["val"], intervals=True))
    run.compare(
        f"selectivity {last} vs shuffled labels (train)",
        "-",
        round(with_controls.values("train", "selectivity")[last], 3),
    )
    run.compare(
        f"selectivity {last} vs re-initialised net (val)",
        "-",
        said(f"selectivity {last} vs re-initialised net"),
    )

    figure = plot(reports, hidden, accuracy_curves)
    run.save(
        results={
            "data_source": source,
            "points": points,
            "concepts": SHAPES,
            "fractions": args.fractions,
            "epochs": args.epochs,
            "width": args.width,
            "fits": {str(f): v for f, v in fits.items()},
            "val_r2": {str(k): v for k, v in r2.items()},
            "val_r2_interval": {str(k): v for k, v in r2_interval.items()},
            "probe_accuracy": accuracy_curves,
            "probe_accuracy_end": probe_accuracy_end,
            "comparisons": comparisons,
            "controls": {
                "report": report.to_dict(),
                "shuffled_labels": shuffled.to_dict(),
                "reinitialized": random_control.to_dict(),
            },
        },
        figure=figure,
    )


def plot(reports, hidden, curves):
    figure, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    random = reports.pop("random")
    for ax, concept in zip(axes, SHAPES, strict=False):
        kp.plots.plot_r2(
            reports,
            concept,
            points=hidden,
            reference=random,
            xlabel="fraction N of corrupted labels",
            title=f"RCV R$^2$ of {concept} (held out; dotted: random net)",
            ax=ax,
        )
    ax = axes[3]
    styles = {"random": "gray", "0.4-memorizing": "tab:orange", "generalizing": "tab:blue"}
    for name, color in styles.items():
        values = np.array(curves[name]["val_accuracy"])
        epochs = curves[name]["epochs"]
        for row, line in ((1, ":"), (len(hidden), "-")):
            ax.plot(
                epochs, values[row], line, color=color, label=f"{name}, {['input', *hidden][row]}"
            )
    ax.set(
        title="class probes (held-out accuracy)",
        xlabel="epoch",
        ylabel="accuracy",
        xscale="symlog",
    )
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    main()
