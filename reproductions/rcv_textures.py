"""Colour and texture Regression Concept Vectors of flawed networks (Graziani et al. 2019,
Sec. 3, Fig. 3 and Table 1).

Networks are trained to classify natural images with their true labels
(generalizing) or with every training label replaced at random
(1-memorizing), and compared with the network as initialised (random). While
they train, the R^2 of Regression Concept Vectors of 17 concepts is measured
at several layers: colourfulness, the eight HSV hue-bin ratios, whiteness and
blackness (colour: first-order statistics of the pixels) and six GLCM
statistics (texture: second order), all from `kp.concepts`. Each RCV is a
ridge regression on the layer's activations (penalty per concept by exact
leave-one-out), scored on held-out images.

The paper (InceptionV3 on DTD, 1,000 epochs): R^2 grows with training for
both networks; for some concepts (orange, dissimilarity, contrast,
correlation, homogeneity, red, colourfulness) the 1-memorizing network stays
markedly below the generalizing one, for others (green, energy, ASM, cyan,
magenta, purple, yellow, black, blue) not; whiteness is learned early by
both. Table 1: at mixed0, training cuts the MSPE of cyan, energy, orange and
correlation by orders of magnitude from the random network's, for the
1-memorizing network as much as for the generalizing one.

Scaled down to fit 2 CPU cores: the Imagenette subset of ../shared/data (10
ImageNet classes, 3,000 training and 1,000 held-out images; DTD is not here)
at 32x32 pixels, and the paper's shallow CNN (conv(200,5x5)-maxpool-
conv(200,5x5)-maxpool-gap-fc(384)-fc(192), BatchNorm and ReLU) with 64
filters per convolution, trained 150 epochs with Adam: enough for the
1-memorizing network to fit its random labels (the paper's networks all
reach a full overfit; at 64x64 pixels 50 epochs left it at 0.49). Convolutional
activations are probed through 2,048 fixed random features each
(`kp.RandomSubset`); the first block stands for InceptionV3's mixed0.

    python reproductions/rcv_textures.py            # about 25 minutes on 2 CPU cores
    python reproductions/rcv_textures.py --quick    # a smoke run
"""

import _common  # noqa: I001  (first: it points Keras at the offline cache)


def arguments():
    """The command line, built before TensorFlow is imported."""
    parser = _common.parser(__doc__)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--filters", type=int, default=64, help="filters per convolution")
    parser.add_argument("--features", type=int, default=2048, help="random features per conv")
    return parser


if __name__ == "__main__":
    arguments().parse_args()  # --help and usage errors before TensorFlow is imported (below)

import time  # noqa: E402

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import keras_probes as kp  # noqa: E402

COLOUR = ["colorfulness", *kp.concepts.HUE_BINS, "whiteness", "blackness"]
TEXTURE = list(kp.concepts.TEXTURE_PROPERTIES)
CONCEPTS = COLOUR + TEXTURE
POINTS = ["block1", "block2", "fc1", "fc2"]
TABLE = ["cyan", "energy", "orange", "correlation"]  # the paper's Table 1
FIGURE = ["orange", "dissimilarity", "green", "energy"]  # the paper's Fig. 3


def images(split: str, size: int, limit: int | None):
    dataset, _ = kp.datasets.image_folder(
        kp.datasets.imagenette_dir() / split, (size, size), batch_size=250
    )
    x, y = map(np.concatenate, zip(*dataset.as_numpy_iterator(), strict=True))
    if limit is not None:  # a class-balanced subset, in the folder's order
        keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:limit] for c in np.unique(y)]))
        x, y = x[keep], y[keep]
    return x, y.astype("int64")


def shallow_cnn(size: int, filters: int, seed: int) -> keras.Model:
    """The paper's shallow CNN, with `filters` per convolution."""
    layers = keras.layers
    init = lambda i: keras.initializers.GlorotUniform(seed * 100 + i)  # noqa: E731
    x = inputs = keras.Input((size, size, 3), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1, name="scale")(x)
    for i in (1, 2):
        x = layers.Conv2D(filters, 5, padding="same", kernel_initializer=init(i), name=f"conv{i}")(
            x
        )
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        x = layers.MaxPooling2D(3, strides=2, name=f"block{i}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(384, "relu", kernel_initializer=init(3), name="fc1")(x)
    x = layers.Dense(192, "relu", kernel_initializer=init(4), name="fc2")(x)
    outputs = layers.Dense(10, kernel_initializer=init(5), name="logits")(x)
    return keras.Model(inputs, outputs, name="shallow_cnn")


def rcv_monitor(x, xv, targets, at, features):
    """R^2 and MSPE of every concept's RCV (a ridge probe) at every point, at the epochs in `at`."""
    return kp.callbacks.ProbeMonitor(
        (x, targets["train"]),
        targets=CONCEPTS,
        validation_data=(xv, targets["val"]),
        points=POINTS,
        reducers={
            "block1": kp.RandomSubset(features, seed=1),
            "block2": kp.RandomSubset(features, seed=2),
        },
        at=[epoch for epoch in at if epoch > 0],
        at_start=0 in at,
        batch_size=250,
    )


def curve(history, metric):
    """`[{point: {concept: held-out value}}]`, one per measurement, of `"r2"` or `"mspe"`."""
    return [
        {p: {c: history.at(step, f"val_{c}_{metric}")[p] for c in CONCEPTS} for p in POINTS}
        for step in history.steps
    ]


def main(argv=None):
    args = arguments().parse_args(argv)
    run = _common.Run("rcv_textures", args)
    per_class = None
    if args.quick:
        args.epochs, args.size, args.filters, args.features, per_class = 2, 32, 8, 256, 20
    run.note(
        "data: the Imagenette subset of ../shared/data (10 ImageNet classes; DTD is not "
        f"available offline) at {args.size}x{args.size}"
    )
    run.note(
        f"network: the paper's shallow CNN with {args.filters} filters per convolution "
        f"(paper: InceptionV3, and 200 filters for the shallow CNN), Adam(1e-3), "
        f"{args.epochs} epochs (paper: 1,000); conv blocks probed through "
        f"{args.features} random features"
    )
    (x, y), (xv, yv) = images("train", args.size, per_class), images("val", args.size, per_class)
    start = time.perf_counter()
    targets = {}
    for split, pixels in (("train", x), ("val", xv)):
        measured = kp.concepts.measure(pixels, CONCEPTS)
        targets[split] = np.stack([measured[c] for c in CONCEPTS], axis=1)
    print(
        f"{len(y)} training / {len(yv)} held-out images, {len(CONCEPTS)} concepts measured "
        f"in {time.perf_counter() - start:.0f} s"
    )
    schedule = (0, 1, 2, 5, 10, 20, 30, 40, 50, 75, 100, 125, 150, 200, args.epochs)
    at = sorted({e for e in schedule if e <= args.epochs})
    networks = {
        "generalizing": y,
        "1-memorizing": kp.flawed.corrupt_labels(y, 1.0, 10, seed=args.seed)[0],
    }
    monitors, fits = {}, {}
    for name, labels in networks.items():
        start = time.perf_counter()
        print(f"{name}:", flush=True)
        keras.utils.set_random_seed(args.seed)
        model = shallow_cnn(args.size, args.filters, args.seed)
        monitor = rcv_monitor(x, xv, targets, at, args.features)
        history = _common.train(
            model, x, labels, args.epochs, args.seed, (xv, yv), [monitor], batch_size=64
        )
        monitors[name] = {
            "epochs": [int(e) for e in monitor.history.epochs],
            "r2": curve(monitor.history, "r2"),
            "mspe": curve(monitor.history, "mspe"),
        }
        fits[name] = {
            "train_accuracy_on_its_labels": history.history["accuracy"][-1],
            "val_accuracy": history.history["val_accuracy"][-1],
        }
        fit = fits[name]
        print(
            f"{name}: train accuracy on its labels {fit['train_accuracy_on_its_labels']:.3f}, "
            f"held-out {fit['val_accuracy']:.3f} ({time.perf_counter() - start:.0f} s)"
        )

    # The random network: the generalizing one before its first step (same seed).
    table = {
        "random": monitors["generalizing"]["mspe"][0]["block1"],
        "1-memorizing": monitors["1-memorizing"]["mspe"][-1]["block1"],
        "generalizing": monitors["generalizing"]["mspe"][-1]["block1"],
    }
    r2_table = {
        "random": monitors["generalizing"]["r2"][0]["block1"],
        "1-memorizing": monitors["1-memorizing"]["r2"][-1]["block1"],
        "generalizing": monitors["generalizing"]["r2"][-1]["block1"],
    }
    print("\nMSPE at block1 (the paper's Table 1 concepts), held out:")
    print(f"{'':14}" + "".join(f"{c:>14}" for c in TABLE))
    for name, row in table.items():
        print(f"{name:14}" + "".join(f"{row[c]:>14.4g}" for c in TABLE))
    for concept in TABLE:
        run.compare(
            f"MSPE block1 {concept}: random / 1-mem / gener",
            "huge / low / low",
            " / ".join(f"{table[n][concept]:.3g}" for n in table),
        )
    for concept in FIGURE:
        run.compare(
            f"R^2 block1 {concept}: 1-mem vs gener (end)",
            "below" if concept in ("orange", "dissimilarity") else "similar",
            f"{r2_table['1-memorizing'][concept]:.3f} vs {r2_table['generalizing'][concept]:.3f}",
        )
    gains = {
        n: float(np.mean([r2_table[n][c] - r2_table["random"][c] for c in CONCEPTS]))
        for n in ("1-memorizing", "generalizing")
    }
    for name, gain in gains.items():
        run.compare(f"mean R^2 gain over random, block1, {name}", "> 0", round(gain, 3))

    run.save(
        results={
            "concepts": CONCEPTS,
            "points": POINTS,
            "images": {"train": len(y), "val": len(yv), "size": args.size},
            "fits": fits,
            "mspe_block1": table,
            "r2_block1": r2_table,
            "curves": monitors,
        },
        figure=plot(monitors, r2_table),
    )


def plot(monitors, r2_table):
    figure, axes = plt.subplots(1, 5, figsize=(22, 4.2))
    colors = {"generalizing": "tab:blue", "1-memorizing": "tab:orange"}
    for ax, concept in zip(axes, FIGURE, strict=False):
        for name, monitor in monitors.items():
            for point, line in (("block1", "-"), ("fc2", ":")):
                values = [r[point][concept] for r in monitor["r2"]]
                label = f"{name}, {point}"
                ax.plot(monitor["epochs"], values, line, color=colors[name], label=label)
        ax.set(title=f"R$^2$ of {concept} (held out)", xlabel="epoch", ylabel="R$^2$")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    ax = axes[4]
    order = np.argsort([r2_table["generalizing"][c] for c in CONCEPTS])
    positions = np.arange(len(CONCEPTS))
    for offset, (name, color) in zip(
        (-0.27, 0, 0.27), (("random", "gray"), *colors.items()), strict=True
    ):
        values = [r2_table[name][CONCEPTS[i]] for i in order]
        ax.barh(positions + offset, values, height=0.27, color=color, label=name)
    ax.set_yticks(positions, [CONCEPTS[i] for i in order], fontsize=8)
    ax.set(title="block1 R$^2$ at the end (held out)", xlabel="R$^2$")
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    main()
