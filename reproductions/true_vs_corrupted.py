"""True labels are learned before random ones (Graziani et al. 2019, Sec. 5, Fig. 5).

A 0.5-memorizing network (half of its training labels replaced, each by
another class at random) is trained, and every epoch its accuracy is measured
separately on the examples that kept their true label and on the corrupted
ones, against the labels it is trained on (`kp.flawed.CorruptionMonitor`).
The paper (InceptionV3 on DTD; also CIFAR-10): the true labels are fitted
first; the corrupted ones are memorised later and more slowly.

Here: the six-hidden-layer MLP of flawed_mlp_mnist.py on MNIST (offline, 7,000
training digits, a split of the official test images), 512 units per layer,
Adam(1e-3) for 100 epochs: about 1 minute on 2 CPU cores.

Every accuracy has its 95% Wilson interval (each part's examples, the held-out
digits); the true-label part against the corrupted part is tested as two
groups (Fisher's exact test, Newcombe's interval of the difference), the
held-out accuracy at its best epoch against the last as a pair on the same
digits (McNemar's exact test).

    python reproductions/true_vs_corrupted.py
    python reproductions/true_vs_corrupted.py --quick   # a smoke run
"""

import _common  # noqa: I001  (first: it points Keras at the offline cache)


def arguments():
    """The command line, built before TensorFlow is imported."""
    parser = _common.parser(__doc__)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--fraction", type=float, default=0.5, help="corrupted fraction N")
    return parser


if __name__ == "__main__":
    arguments().parse_args()  # --help and usage errors before TensorFlow is imported (below)

import dataclasses  # noqa: E402

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from _mnist_mlp import correct, data, first_epoch, mlp  # noqa: E402
from scipy import stats  # noqa: E402

import keras_probes as kp  # noqa: E402


class HeldOut(keras.callbacks.Callback):
    """Whether the model is right on each held-out example, at the end of every epoch."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y, self.correct = x, y, []

    def on_epoch_end(self, epoch, logs=None):
        self.correct.append(correct(self.model, self.x, self.y))


def two_groups(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> kp.uncertainty.Comparison:
    """Two rates of different examples (0/1 `a`, `b`): `mean(a) - mean(b)` with Newcombe's
    hybrid score interval (from both Wilson intervals) and Fisher's exact test."""
    p, q = float(np.mean(a)), float(np.mean(b))
    (pl, ph), (ql, qh) = (kp.uncertainty.rate_interval(v, level=level) for v in (a, b))
    table = [[int(np.sum(a)), int(len(a) - np.sum(a))], [int(np.sum(b)), int(len(b) - np.sum(b))]]
    difference = p - q
    low = difference - np.hypot(p - pl, qh - q)
    high = difference + np.hypot(ph - p, q - ql)
    pvalue = float(stats.fisher_exact(table).pvalue)
    return kp.uncertainty.Comparison(
        difference, float(low), float(high), pvalue, level, "Fisher exact, two groups"
    )


def main(argv=None):
    args = arguments().parse_args(argv)
    run = _common.Run("true_vs_corrupted", args)
    parts, source = data(args.seed, args.quick)
    run.note(f"data: {source}")
    if args.quick:
        args.epochs, args.width = 3, 32
    run.note(
        f"network: MLP, {args.depth} hidden layers of {args.width} units, Adam(1e-3), "
        f"{args.epochs} epochs (the paper: InceptionV3 on DTD, Adam, 1,000 epochs)"
    )
    (x, y, _), (xv, yv, _) = parts["train"], parts["val"]
    labels, corrupted = kp.flawed.corrupt_labels(y, args.fraction, 10, seed=args.seed)
    print(f"{int(corrupted.sum())} of {len(y)} training labels corrupted")
    monitor = kp.flawed.CorruptionMonitor(x, labels, corrupted, true_y=y)
    held_out = HeldOut(xv, yv)
    model = mlp(args.width, args.depth, args.seed)
    history = _common.train(
        model, x, labels, args.epochs, args.seed, (xv, yv), callbacks=[monitor, held_out]
    )
    curves = dict(monitor.history)
    curves["val_accuracy"] = [float("nan"), *history.history["val_accuracy"]]
    epochs = curves["epoch"]
    # Each part's accuracy is a rate over its examples: Wilson's interval from the count.
    sizes = {"clean": int((~corrupted).sum()), "corrupted": int(corrupted.sum())}
    sizes["corrupted_true"] = sizes["corrupted"]
    for part, n in sizes.items():
        curves[f"{part}_accuracy_interval"] = [
            _common.rate_interval(a, n) for a in curves[f"{part}_accuracy"]
        ]
    curves["val_accuracy_interval"] = [
        [float("nan")] * 2,
        *(list(kp.uncertainty.rate_interval(right)) for right in held_out.correct),
    ]
    shown = lambda part, e: _common.with_interval(  # noqa: E731
        curves[f"{part}_accuracy"][e], curves[f"{part}_accuracy_interval"][e]
    )
    for level in (0.5, 0.9):
        run.compare(
            f"first epoch at {level:.0%} accuracy: true-label part",
            "earlier",
            first_epoch(epochs, curves["clean_accuracy"], level),
        )
        run.compare(
            f"first epoch at {level:.0%} accuracy: corrupted part",
            "later",
            first_epoch(epochs, curves["corrupted_accuracy"], level),
        )
    early = min(5, args.epochs)
    # Rebuilt from each part's rate and size: the test needs the two counts only.
    part = lambda key, e: np.arange(sizes[key]) < round(curves[f"{key}_accuracy"][e] * sizes[key])  # noqa: E731
    peak = int(np.nanargmax(curves["val_accuracy"]))
    tests = {
        f"epoch {early}: true part - corrupted part": two_groups(
            part("clean", early), part("corrupted", early)
        ),
        f"held out: epoch {peak} (best) - epoch {args.epochs} (last)": dataclasses.replace(
            kp.uncertainty.paired_rates(held_out.correct[peak - 1], held_out.correct[-1]),
            a=f"epoch {peak}",
            b=f"epoch {args.epochs}",
            metric="accuracy",
        ),
    }
    tests = _common.tested_together(tests, "true vs corrupted")
    run.compare(
        f"epoch {early}: accuracy true part / corrupted part",
        "true >> corrupted",
        f"{shown('clean', early)} / {shown('corrupted', early)}; "
        f"{_common.tested(tests[f'epoch {early}: true part - corrupted part'])}",
    )
    run.compare(
        f"epoch {args.epochs}: accuracy true part / corrupted part",
        "both fitted",
        f"{shown('clean', -1)} / {shown('corrupted', -1)}",
    )
    run.compare(
        f"corrupted part, its true labels: epoch {min(3, args.epochs)}",
        "-",
        shown("corrupted_true", min(3, args.epochs)),
    )
    run.compare(
        "held-out accuracy: best (epoch) -> last",
        "-",
        f"{shown('val', peak)} ({peak}) -> {shown('val', -1)}; "
        f"{_common.tested(tests[f'held out: epoch {peak} (best) - epoch {args.epochs} (last)'])}",
    )

    figure, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.plot(epochs, curves["clean_accuracy"], label="true-label part (its labels)", lw=2)
    ax.plot(epochs, curves["corrupted_accuracy"], label="corrupted part (its random labels)", lw=2)
    ax.plot(epochs, curves["corrupted_true_accuracy"], "--", label="corrupted part, true labels")
    ax.plot(epochs, curves["val_accuracy"], ":", color="k", label="held-out digits")
    ax.set(
        title=f"{args.fraction:g}-memorizing MLP on MNIST: accuracy while training",
        xlabel="epoch",
        ylabel="accuracy",
        ylim=(0, 1.02),
    )
    ax.legend()
    ax.grid(alpha=0.3)
    figure.tight_layout()
    run.save(
        results={
            "data_source": source,
            "fraction": args.fraction,
            "corrupted": int(corrupted.sum()),
            "examples": len(y),
            "curves": curves,
            "comparisons": tests,
        },
        figure=figure,
    )


if __name__ == "__main__":
    main()
