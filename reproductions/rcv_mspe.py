"""Which regression protocol gives Graziani et al.'s Table 1 MSPE blow-up (Sec. 3, Table 1).

The paper's Table 1 (InceptionV3 on DTD, at mixed0): the MSPE of the cyan,
energy, orange and correlation RCVs is 2e5 to 2e6 for the random network and
0.02 to 0.3 for the trained ones. `rcv_textures.py`, with ridge penalties
chosen by leave-one-out on 2,048 random features, finds 0.0055 to 0.025 for
all three networks. Their code regresses with scikit-learn; this script fits
the same concepts on the same networks' first block under the protocols that
could give such numbers, and reports each one's MSPE:

- `loo`:    ours, `kp.regression.RidgeProbe` with the penalty per concept chosen
            by exact leave-one-out among `ALPHAS`;
- `ridge1`: scikit-learn's `Ridge()` (alpha = 1), on raw, unscaled activations;
- `ols`:    scikit-learn's `LinearRegression()`, no penalty (with more columns
            than images, the least-norm interpolating fit);

each on 2,048 fixed random columns of block1 (as `rcv_textures.py`), on as many
random columns as training images (where an unpenalised fit interpolates the
training targets with the least slack: the peak of "double descent") and on all
of its columns; MSPE on every held-out image, on 376 of them (the paper's
count of held-out points) and on the training images.

The networks are `rcv_textures.py`'s: the shallow CNN as initialised (random),
trained 150 epochs on random labels (1-memorizing) and on the true ones
(generalizing), the same seed and data. Needs scikit-learn (the dev extra).

Every held-out MSPE has its 95% interval (a percentile bootstrap over the
held-out images, `kp.uncertainty.mean_interval`). On the 376 held-out images,
each protocol is tested against ours on the same columns, and the random
network against each trained one under the same protocol (the paired
bootstrap of the mean MSPE over the four concepts, image by image), Holm-
adjusted per family (a network's protocols; random against trained).

    python reproductions/rcv_mspe.py            # about 25 minutes on 2 CPU cores
    python reproductions/rcv_mspe.py --quick    # a smoke run
"""

import _common  # noqa: I001  (first: it points Keras at the offline cache)


def arguments():
    """The command line, built before TensorFlow is imported."""
    parser = _common.parser(__doc__)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--filters", type=int, default=64, help="filters per convolution")
    parser.add_argument("--features", type=int, default=2048, help="random columns")
    return parser


if __name__ == "__main__":
    arguments().parse_args()  # --help and usage errors before TensorFlow is imported (below)

import dataclasses  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rcv_textures import TABLE, images, shallow_cnn  # noqa: E402
from sklearn.linear_model import LinearRegression, Ridge  # noqa: E402

import keras_probes as kp  # noqa: E402

ALPHAS = np.logspace(-3, 5, 17)
HELD_OUT = 376  # the paper's held-out points
PAPER = {"random": "2e5 to 2e6", "1-memorizing": "0.02 to 0.3", "generalizing": "0.02 to 0.3"}


def protocols():
    """`{name: a fresh regressor}`: ours and the two of scikit-learn."""
    return {
        "loo": lambda: kp.regression.RidgeProbe(alpha=ALPHAS),
        "ridge1": lambda: Ridge(alpha=1.0),
        "ols": lambda: LinearRegression(),
    }


def mspe(model, x, targets) -> dict:
    """Mean squared prediction error per concept."""
    errors = kp.metrics.mspe(targets, model.predict(x))
    return {c: float(e) for c, e in zip(TABLE, errors, strict=True)}


def squared_errors(model, x, targets) -> np.ndarray:
    """Each example's squared prediction error per concept, `(n, concepts)` float64."""
    return (np.asarray(targets, np.float64) - model.predict(x)) ** 2


def with_intervals(errors: np.ndarray) -> dict:
    """`{concept: [low, high]}`: the 95% bootstrap interval of each concept's MSPE."""
    bounds = kp.uncertainty.mean_interval(errors)
    return {c: list(b) for c, b in zip(TABLE, bounds, strict=True)}


def block1(model, x) -> np.ndarray:
    """The first block's activations, flattened (float64)."""
    extractor = keras.Model(model.input, model.get_layer("block1").output)
    return extractor.predict(x, batch_size=250, verbose=0).reshape(len(x), -1).astype(np.float64)


def main(argv=None):
    args = arguments().parse_args(argv)
    run = _common.Run("rcv_mspe", args)
    per_class = None
    if args.quick:
        args.epochs, args.filters, args.features, per_class = 2, 8, 256, 20
    (x, y), (xv, yv) = images("train", args.size, per_class), images("val", args.size, per_class)
    targets = {}
    for split, pixels in (("train", x), ("val", xv)):
        measured = kp.concepts.measure(pixels, TABLE)
        targets[split] = np.stack([measured[c] for c in TABLE], axis=1)
    held = np.arange(min(HELD_OUT, len(yv)))
    run.note(
        f"data: Imagenette at {args.size}x{args.size}, {len(y)} training and {len(yv)} "
        f"held-out images (DTD is not available offline); the paper's network: InceptionV3 "
        f"at mixed0, ours: the shallow CNN's block1 ({args.filters} filters)"
    )
    networks = {
        "random": None,
        "1-memorizing": kp.flawed.corrupt_labels(y, 1.0, 10, seed=args.seed)[0],
        "generalizing": y,
    }
    results, activity, intervals = {}, {}, {}  # intervals: as results, held-out splits only
    held_errors = {}  # {(network, fit): (376, concepts) squared errors}
    for name, labels in networks.items():
        start = time.perf_counter()
        keras.utils.set_random_seed(args.seed)
        model = shallow_cnn(args.size, args.filters, args.seed)
        if labels is not None:
            _common.train(model, x, labels, args.epochs, args.seed, (xv, yv), batch_size=64)
        train, val = block1(model, x), block1(model, xv)
        activity[name] = float(np.abs(train).mean())
        columns = {}
        # rcv_textures.py's columns; as many columns as training images (where an
        # unpenalised fit interpolates with the least margin); all of them.
        for width in (args.features, len(y)):
            subset = kp.RandomSubset(width, seed=1)
            subset.build((None, train.shape[1]))
            columns[f"{len(subset.indices)} random columns"] = subset.indices
        columns[f"all {train.shape[1]} columns"] = np.arange(train.shape[1])
        results[name] = {}
        for width, keep in columns.items():
            for protocol, make in protocols().items():
                fitted = make().fit(train[:, keep], targets["train"])
                errors = squared_errors(fitted, val[:, keep], targets["val"])
                held_errors[name, f"{protocol}, {width}"] = errors[held]
                results[name][f"{protocol}, {width}"] = {
                    "held-out": mspe(fitted, val[:, keep], targets["val"]),
                    f"{len(held)} held-out": mspe(fitted, val[held][:, keep], targets["val"][held]),
                    "train": mspe(fitted, train[:, keep], targets["train"]),
                }
                intervals.setdefault(name, {})[f"{protocol}, {width}"] = {
                    "held-out": with_intervals(errors),
                    f"{len(held)} held-out": with_intervals(errors[held]),
                }
        print(
            f"{name}: mean |activation| {activity[name]:.3g}, {time.perf_counter() - start:.0f} s",
            flush=True,
        )

    fits = list(results["random"])
    print(f"\nMSPE at block1 on {len(held)} held-out images (mean over {', '.join(TABLE)}):")
    print(f"{'':40}" + "".join(f"{n:>16}" for n in networks))
    for fit in fits:
        row = [np.mean(list(results[n][fit][f"{len(held)} held-out"].values())) for n in networks]
        print(f"{fit:40}" + "".join(f"{v:>16.4g}" for v in row))
    split = f"{len(held)} held-out"
    for fit in fits:
        worst = [max(results[n][fit][split], key=results[n][fit][split].get) for n in networks]
        run.compare(
            f"MSPE ({fit}): random / 1-mem / gener, worst concept [95%]",
            " / ".join(PAPER.values()),
            " / ".join(
                f"{results[n][fit][split][c]:.3g} "
                f"[{intervals[n][fit][split][c][0]:.3g}, {intervals[n][fit][split][c][1]:.3g}]"
                for n, c in zip(networks, worst, strict=True)
            ),
        )
    # The mean MSPE over the concepts, image by image: paired on the same held-out images
    # (10,000 resamples: p-values down to 2e-4, below 0.05 after Holm over 18 tests).
    paired = lambda a, b, x, y: dataclasses.replace(  # noqa: E731
        kp.uncertainty.paired_means(
            held_errors[a].mean(1), held_errors[b].mean(1), resamples=10_000
        ),
        a=x,
        b=y,
        split=split,
        metric="mean MSPE",
    )
    tests = {}
    for name in networks:
        family = f"{name}: each protocol - ours, mean MSPE"
        tests[family] = {}
        for fit in fits:
            ours = f"loo, {fit.split(', ', 1)[1]}"
            if fit != ours:
                tests[family][f"{name}: {fit} - {ours}"] = paired(
                    (name, fit), (name, ours), fit, ours
                )
    tests["random - trained, mean MSPE"] = {
        f"{fit}: random - {name}": paired(("random", fit), (name, fit), "random", name)
        for fit in fits
        for name in list(networks)[1:]
    }
    tests = {family: _common.tested_together(found, family) for family, found in tests.items()}
    run.save(
        {
            "concepts": TABLE,
            "comparisons": tests,
            "alphas": ALPHAS.tolist(),
            "held_out": len(held),
            "images": {"train": len(y), "val": len(yv), "size": args.size},
            "mean_abs_activation": activity,
            "mspe": results,
            "mspe_interval": intervals,
        },
        figure=plot(results, list(networks), f"{len(held)} held-out"),
    )


def plot(results, networks, split):
    fits = list(results[networks[0]])
    figure, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(networks)
    for i, name in enumerate(networks):
        values = [np.mean(list(results[name][fit][split].values())) for fit in fits]
        ax.bar(np.arange(len(fits)) + (i - 1) * width, values, width, label=name)
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(fits)), fits, rotation=20, ha="right", fontsize=8)
    ax.set(
        ylabel=f"MSPE, {split} (mean of {', '.join(TABLE)})",
        title="Graziani et al. Table 1: block1 MSPE by regression protocol",
    )
    ax.legend()
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    main()
