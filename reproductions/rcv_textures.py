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

At the end, how much each network's class logits depend on the concepts: the
RCV sensitivities (the directional derivative of the logit of each held-out
image's true class along the concept's RCV, `kp.attribution`) and Graziani et
al.'s bidirectional relevance Br = R^2 * mean / sd of them (the 2018 RCV
paper; the 2019 paper does not measure it), per concept, point and network.
The RCV at a convolutional block is the ridge on its 2,048 random features,
so its direction in the block's activation is the flattened vector holding
the RCV's weights at those features' indices and zero elsewhere (the
gradient of the probe's prediction; the probe reads nothing else). Does the
1-memorizing network rely less on the colour and texture concepts than the
generalizing one? The mean |Br| over the colour concepts and over the texture
concepts at each point, generalizing minus 1-memorizing, by the paired
bootstrap over the held-out images (derivatives and R^2 resampled together),
Holm over the points and groups. The true class is the target for every
network (the 1-memorizing one's training labels were random; the held-out
images have none else); the same test with each network's own predicted class
as the target is beside it, as is each trained network against the random one.

Every held-out figure of the end (block1 R^2 and MSPE, the networks' R^2
at every point) has its 95% interval, a percentile bootstrap over the held-out
images: the monitor keeps the figures only, so each network's RCVs are fitted
once more at the end on the same images (`kp.fit_regression_probes`, the
monitor's ridge: the same fits) with each image's outcome. Comparisons are
paired on the same images (the paired bootstrap), Holm-adjusted per family.

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

import dataclasses  # noqa: E402
import tempfile  # noqa: E402
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


def reducers(features: int) -> dict:
    """The convolutional blocks through `features` fixed random features each."""
    return {
        "block1": kp.RandomSubset(features, seed=1),
        "block2": kp.RandomSubset(features, seed=2),
    }


def rcv_monitor(x, xv, targets, at, features):
    """R^2 and MSPE of every concept's RCV (a ridge probe) at every point, at the epochs in `at`."""
    return kp.callbacks.ProbeMonitor(
        (x, targets["train"]),
        targets=CONCEPTS,
        validation_data=(xv, targets["val"]),
        points=POINTS,
        reducers=reducers(features),
        at=[epoch for epoch in at if epoch > 0],
        at_start=0 in at,
        batch_size=250,
    )


def rcv_report(model, splits, targets, features, directory):
    """The RCVs of `model` as the monitor fits them (ridge, penalty by leave-one-out, the
    same random features), with each held-out image's outcome: a `kp.ProbeReport`."""
    probed = kp.RegressionProbedModel(
        model, points=POINTS, targets=CONCEPTS, reducers=reducers(features)
    )
    for split, data in splits.items():
        kp.FeatureCache.write(probed, data, directory, split=split, batch_size=250, verbose=0)
    cache = kp.FeatureCache.open(directory, model=probed)
    return kp.fit_regression_probes(probed, cache, targets, verbose=0), probed


def mean_r2_gain(trained, random, split, point):
    """The mean R^2 over the concepts, `trained` minus `random`, tested by the paired
    bootstrap on the same images (every concept's columns resampled together)."""
    columns = [
        [report.outcomes[split][point].columns(f"{c}_r2") for c in CONCEPTS]
        for report in (trained, random)
    ]
    r2 = columns[0][0][1]

    def mean_r2(means):  # (..., 3 * concepts) -> the mean of the concepts' R^2
        return np.mean([r2(means[..., 3 * i : 3 * i + 3]) for i in range(len(CONCEPTS))], axis=0)

    a, b = (np.concatenate([c for c, _ in found], axis=1) for found in columns)
    result = kp.uncertainty.paired_means(a, b, statistic=mean_r2)
    return dataclasses.replace(result, split=split, metric="mean R^2 over the concepts")


def directions(model, probed, point) -> np.ndarray:
    """Every concept's RCV at `point` as a direction in the point's activation, flattened
    row-major: `(concepts, size)`. Through `kp.RandomSubset` the RCV's weights sit at the
    subset's indices, zero elsewhere: the gradient of the probe's prediction, which reads
    nothing else. Checked: the reducer reads each RCV back from its direction."""
    vectors = probed.concept_vectors()[point].T  # (concepts, features), unit rows
    shape = tuple(model.get_layer(point).output.shape[1:])
    size = int(np.prod(shape))
    reducer = probed.reducers[point]
    if isinstance(reducer, kp.RandomSubset):
        flat = np.zeros((len(vectors), size))
        flat[:, reducer.indices] = vectors
        back = keras.ops.convert_to_numpy(reducer(flat.reshape(-1, *shape).astype("float32")))
        if not np.allclose(back, vectors, atol=1e-6):
            raise AssertionError(f"{point}: the random features do not read the RCVs back")
        return flat
    if vectors.shape[1] != size:
        raise AssertionError(f"{point}: RCVs of {vectors.shape[1]} features, activation {size}")
    return vectors


def relevance_columns(derivatives, outcomes):
    """`(n, concepts, 5)` per held-out image: the derivative, its square and the three
    columns of the RCV's R^2 (`kp.outcomes`), resampled together by the bootstrap."""
    return np.stack(
        [
            np.concatenate(
                [derivatives[:, [i]], derivatives[:, [i]] ** 2, outcomes.columns(f"{c}_r2")[0]],
                axis=1,
            )
            for i, c in enumerate(CONCEPTS)
        ],
        axis=1,
    )


def bidirectional(means, r2):
    """Br = R^2 * mean / sd (sd with ddof 0) from `relevance_columns`' means `(..., concepts, 5)`;
    `r2`: R^2 from its three columns' means (`kp.outcomes`)."""
    mean, square = means[..., 0], means[..., 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return r2(means[..., 2:]) * mean / np.sqrt(np.maximum(square - mean**2, 0.0))


def mean_abs(concepts, r2):
    """The mean |Br| over `concepts`, from the flattened columns' means `(..., concepts * 5)`."""
    keep = [CONCEPTS.index(c) for c in concepts]

    def statistic(means):
        br = bidirectional(means.reshape(*means.shape[:-1], len(CONCEPTS), 5), r2)
        return np.mean(np.abs(br[..., keep]), axis=-1)

    return statistic


def relevance(models, probes, ends, xv, yv):
    """RCV sensitivities and Br of every concept at every point of every network, on the
    held-out images, each image's true class the target; Br's 95% intervals and the
    tests of the mean |Br| (paired bootstrap over the images, Holm per family)."""
    start = time.perf_counter()
    columns, own, found, check, r2 = {}, {}, {}, 0.0, None
    for name, model in models.items():
        columns[name], own[name], found[name] = {}, {}, {}
        # The secondary target: the class the network itself gives each image.
        predicted = np.argmax(model.predict(xv, batch_size=250, verbose=0), axis=1)
        for point in POINTS:
            vectors = directions(model, probes[name], point)
            d, d_own = (
                kp.attribution.directional_derivatives(
                    model, point, vectors, xv, target, batch_size=250, verbose=0
                )  # (n, concepts)
                for target in (yv, predicted)
            )
            outcomes = ends[name].outcomes["val"][point]
            _, r2 = outcomes.columns(f"{CONCEPTS[0]}_r2")
            values = relevance_columns(d, outcomes)
            columns[name][point] = values
            own[name][point] = relevance_columns(d_own, outcomes)
            br = bidirectional(values.mean(axis=0), r2)
            br_own = bidirectional(own[name][point].mean(axis=0), r2)
            intervals = kp.uncertainty.statistic_interval(
                values,
                lambda means: bidirectional(means, r2),  # noqa: B023
            )
            found[name][point] = {
                c: {
                    "br": float(br[i]),
                    "br_interval": [float(v) for v in intervals[i]],
                    "r2": float(ends[name].values("val", f"{c}_r2")[point]),
                    "mean": float(d[:, i].mean()),
                    "sd": float(d[:, i].std()),
                    "positive": float(np.mean(d[:, i] > 0)),
                    "br_own_class": float(br_own[i]),
                }
                for i, c in enumerate(CONCEPTS)
            }
            # The library's Br on one concept (its own pass) is the one computed here.
            first = found[name][point][CONCEPTS[0]]
            library = kp.attribution.bidirectional_relevance(
                model,
                point,
                vectors[0],
                first["r2"],
                xv,
                yv,
                batch_size=250,
                verbose=0,
            )
            check = max(check, abs(library - first["br"]) / max(abs(first["br"]), 1e-12))
    groups = {"colour": COLOUR, "texture": TEXTURE}
    flat = lambda name, point, by=columns: by[name][point].reshape(len(xv), -1)  # noqa: E731
    tests = {
        "mean |Br|, generalizing - 1-memorizing": {
            f"{point}, {group}": kp.uncertainty.paired_means(
                flat("generalizing", point),
                flat("1-memorizing", point),
                statistic=mean_abs(concepts, r2),
            )
            for point in POINTS
            for group, concepts in groups.items()
        },
        "mean |Br| (each network's own predicted class), generalizing - 1-memorizing": {
            f"{point}, {group}": kp.uncertainty.paired_means(
                flat("generalizing", point, own),
                flat("1-memorizing", point, own),
                statistic=mean_abs(concepts, r2),
            )
            for point in POINTS
            for group, concepts in groups.items()
        },
        "mean |Br| over the concepts, trained - random": {
            f"{point}, {name}": kp.uncertainty.paired_means(
                flat(name, point), flat("random", point), statistic=mean_abs(CONCEPTS, r2)
            )
            for point in POINTS
            for name in ("generalizing", "1-memorizing")
        },
    }
    tests = {family: _common.tested_together(t, family) for family, t in tests.items()}
    mean_abs_br = {
        name: {
            point: {
                group: float(np.mean([abs(found[name][point][c]["br"]) for c in concepts]))
                for group, concepts in {**groups, "all": CONCEPTS}.items()
            }
            for point in POINTS
        }
        for name in models
    }
    print(f"RCV sensitivities and Br in {time.perf_counter() - start:.0f} s")
    return {
        "target": "each held-out image's true class (for the 1-memorizing network too: "
        "the same images and class indices for every network); br_own_class: the class the "
        "network itself predicts",
        "direction": "the RCV at the point; at block1 and block2 the flattened activation's "
        "vector with the RCV's weights at the random features' indices, zero elsewhere",
        "images": len(yv),
        "networks": found,
        "mean_abs_br": mean_abs_br,
        "library_check_relative_difference": check,
        "comparisons": tests,
        "seconds": round(time.perf_counter() - start, 1),
    }


def plot_relevance(found):
    """One `kp.plots.plot_relevance` panel per network, on a common Br axis, stacked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figures = {
        name: kp.plots.plot_relevance(
            {c: {p: by_point[p][c]["br"] for p in POINTS} for c in CONCEPTS},
            title=f"{name} network: Br = R$^2$ x mean / sd of the derivatives of the true "
            "class's logit along each RCV (held out)",
        )
        for name, by_point in found.items()
    }
    limits = [f.axes[0].get_ylim() for f in figures.values()]
    for figure in figures.values():
        figure.axes[0].set_ylim(min(lo for lo, _ in limits), max(hi for _, hi in limits))
        figure.set_size_inches(18, 3.8)
        figure.tight_layout()
    pixels = []
    for figure in figures.values():
        canvas = FigureCanvasAgg(figure)
        figure.set_dpi(110)
        canvas.draw()
        pixels.append(np.asarray(canvas.buffer_rgba()))
    width = max(p.shape[1] for p in pixels)
    padded = [
        np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in pixels
    ]
    stacked = np.concatenate(padded, axis=0)
    return lambda path: plt.imsave(path, stacked)


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
    monitors, fits, ends = {}, {}, {}  # ends: {network: its RCVs' report at the end}
    models, probes = {}, {}  # {network: the model}, {network: its RCVs (RegressionProbedModel)}
    scratch = tempfile.TemporaryDirectory(prefix="rcv_textures_")
    splits = {"train": (x, y), "val": (xv, yv)}
    # The random network: every network as initialised (the same seed), before training.
    keras.utils.set_random_seed(args.seed)
    initial = shallow_cnn(args.size, args.filters, args.seed)
    ends["random"], probes["random"] = rcv_report(
        initial, splits, targets, args.features, f"{scratch.name}/random"
    )
    models["random"] = initial
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
        ends[name], probes[name] = rcv_report(
            model, splits, targets, args.features, f"{scratch.name}/{name}"
        )
        models[name] = model
        fit = fits[name]
        print(
            f"{name}: train accuracy on its labels {fit['train_accuracy_on_its_labels']:.3f}, "
            f"held-out {fit['val_accuracy']:.3f} ({time.perf_counter() - start:.0f} s)"
        )

    scratch.cleanup()
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
    # Each figure at the end with its interval: from the reports fitted at the end,
    # whose figures are the monitor's last (the same ridge fits on the same features).
    intervals = {
        name: {
            point: {
                f"{c}_{m}": list(report.interval("val", point, f"{c}_{m}"))
                for c in CONCEPTS
                for m in ("r2", "mspe")
            }
            for point in POINTS
        }
        for name, report in ends.items()
    }
    shown = lambda n, point, c, m="r2", f=".3f": (  # noqa: E731
        f"{ends[n].values('val', f'{c}_{m}')[point]:{f}} "
        f"[{intervals[n][point][f'{c}_{m}'][0]:{f}}, {intervals[n][point][f'{c}_{m}'][1]:{f}}]"
    )
    tests = {}
    for point in ("block1", "fc2"):  # the paper's Fig. 3 gaps: 1-memorizing below
        tests[f"{point} R^2, 1-memorizing - generalizing"] = {
            c: ends["1-memorizing"].compare(
                "val", point, other=ends["generalizing"], metric=f"{c}_r2"
            )
            for c in CONCEPTS
        }
    tests["mean R^2 over the concepts, trained - random"] = {
        f"{point}, {n}": mean_r2_gain(ends[n], ends["random"], "val", point)
        for point in ("block1", "fc1")
        for n in networks
    }
    tests["block1 MSPE, random - trained"] = {
        f"{c}, random - {n}": ends["random"].compare(
            "val", "block1", other=ends[n], metric=f"{c}_mspe"
        )
        for c in TABLE
        for n in networks
    }
    tests = {family: _common.tested_together(found, family) for family, found in tests.items()}
    for concept in TABLE:
        run.compare(
            f"MSPE block1 {concept}: random / 1-mem / gener",
            "huge / low / low",
            " / ".join(shown(n, "block1", concept, "mspe", ".3g") for n in table),
        )
    for concept in FIGURE:
        run.compare(
            f"R^2 block1 {concept}: 1-mem vs gener (end)",
            "below" if concept in ("orange", "dissimilarity") else "similar",
            f"{shown('1-memorizing', 'block1', concept)} vs "
            f"{shown('generalizing', 'block1', concept)}; "
            + _common.tested(tests["block1 R^2, 1-memorizing - generalizing"][concept]),
        )
    gains = {
        n: float(np.mean([r2_table[n][c] - r2_table["random"][c] for c in CONCEPTS]))
        for n in ("1-memorizing", "generalizing")
    }
    for name in gains:
        run.compare(
            f"mean R^2 gain over random, block1, {name}",
            "> 0",
            _common.tested(
                tests["mean R^2 over the concepts, trained - random"][f"block1, {name}"]
            ),
        )

    sensitivities = relevance(models, probes, ends, xv, yv)
    groups = sensitivities["comparisons"]["mean |Br|, generalizing - 1-memorizing"]
    for point in POINTS:
        run.compare(
            f"mean |Br| {point}, colour / texture: gener - 1-mem",
            "not measured",
            " / ".join(_common.tested(groups[f"{point}, {g}"]) for g in ("colour", "texture")),
        )

    run.save(
        results={
            "concepts": CONCEPTS,
            "points": POINTS,
            "images": {"train": len(y), "val": len(yv), "size": args.size},
            "fits": fits,
            "mspe_block1": table,
            "r2_block1": r2_table,
            "end_intervals": intervals,
            "comparisons": tests,
            "curves": monitors,
            "relevance": sensitivities,
        },
        figure=plot(monitors, r2_table),
        animations={"_relevance.png": plot_relevance(sensitivities["networks"])},
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
