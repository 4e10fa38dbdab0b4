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

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from _mnist_mlp import data, first_epoch, mlp  # noqa: E402

import keras_probes as kp  # noqa: E402


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
    model = mlp(args.width, args.depth, args.seed)
    history = _common.train(
        model, x, labels, args.epochs, args.seed, validation=(xv, yv), callbacks=[monitor]
    )
    curves = dict(monitor.history)
    curves["val_accuracy"] = [float("nan"), *history.history["val_accuracy"]]
    epochs = curves["epoch"]
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
    run.compare(
        f"epoch {early}: accuracy true part / corrupted part",
        "true >> corrupted",
        f"{curves['clean_accuracy'][early]:.3f} / {curves['corrupted_accuracy'][early]:.3f}",
    )
    run.compare(
        f"epoch {args.epochs}: accuracy true part / corrupted part",
        "both fitted",
        f"{curves['clean_accuracy'][-1]:.3f} / {curves['corrupted_accuracy'][-1]:.3f}",
    )
    peak = int(np.nanargmax(curves["val_accuracy"]))
    run.compare(
        "held-out accuracy: best (epoch) -> last",
        "-",
        f"{curves['val_accuracy'][peak]:.3f} ({peak}) -> {curves['val_accuracy'][-1]:.3f}",
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
        },
        figure=figure,
    )


if __name__ == "__main__":
    main()
