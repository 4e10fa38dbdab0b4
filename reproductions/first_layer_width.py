"""Is the first layer unaffected by label corruption? Width and training length (Graziani et
al. 2019, Sec. 4, Fig. 4).

The paper's MLPs (fc(4096) x 6, SGD with learning rate 0.01 for 1,000 epochs)
regress the digit's shape concepts from the first layer as well whether 0% or
100% of the training labels are corrupted. `flawed_mlp_mnist.py`, scaled down
to 512 units and 100 Adam epochs, finds the first layer's R^2 of `area` lower
by 0.14 at N = 0.2 than at N = 0. Two explanations: a narrower layer moves
further from its random initialisation to fit the labels (a wide layer can fit
them with small moves of many units: the "lazy" regime), or a different
optimizer moves it differently. This trains the same six-layer MLPs at each
configuration `optimizer:width:epochs` (`--configs`) on the true labels
(N = 0) and on 20% corrupted ones (N = 0.2), all from the same initial
weights per width, and measures:

- the held-out R^2 of area, perimeter and eccentricity at every hidden layer
  (`flawed_mlp_mnist.regression_report`: ridge, penalty by leave-one-out);
- the first layer's R^2 loss from N = 0 to N = 0.2;
- how far the first layer moved: `||W - W0|| / ||W0||` of its kernel.

SGD is the paper's: learning rate 0.01, batch 128 (the paper does not give
its momentum: none here).

Every R^2 has its 95% interval (a percentile bootstrap over the held-out
digits); each configuration's first-layer loss is tested (N = 0 against
N = 0.2 on the same digits: the paired bootstrap), and so are the losses of
two configurations against each other (`_mnist_mlp.compare_losses`), Holm-
adjusted together.

    python reproductions/first_layer_width.py            # about 40 minutes on 2 CPU cores
    python reproductions/first_layer_width.py --quick    # a smoke run
"""

import _common  # noqa: I001  (first: it points Keras at the offline cache)

CONFIGS = ["adam:512:100", "adam:1024:100", "adam:512:300", "sgd:512:300"]
FRACTIONS = (0.0, 0.2)


def arguments():
    """The command line, built before TensorFlow is imported."""
    parser = _common.parser(__doc__)
    parser.add_argument(
        "--configs", nargs="+", default=CONFIGS, help="optimizer:width:epochs, e.g. sgd:4096:1000"
    )
    parser.add_argument("--depth", type=int, default=6)
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
from _mnist_mlp import SHAPES, accuracy, compare_losses, data, mlp  # noqa: E402
from flawed_mlp_mnist import regression_report, shape_concepts  # noqa: E402

import keras_probes as kp  # noqa: E402


def optimizer(name: str):
    if name == "sgd":
        return keras.optimizers.SGD(0.01)  # the paper's
    return keras.optimizers.Adam(1e-3)  # flawed_mlp_mnist.py's


def main(argv=None):
    args = arguments().parse_args(argv)
    if args.quick:
        args.configs = ["adam:32:2", "sgd:64:2"]
    run = _common.Run("first_layer_width", args)
    parts, source = data(args.seed, args.quick)
    run.note(f"data: {source}")
    (x, y, images), (_, yv, images_v) = parts["train"], parts["val"]
    targets = {"train": shape_concepts(images), "val": shape_concepts(images_v)}
    results, reports = {}, {}  # reports: {(config, fraction): regression ProbeReport}
    with tempfile.TemporaryDirectory(prefix="first_layer_") as scratch:
        for config in args.configs:
            name, width, epochs = config.split(":")
            width, epochs = int(width), int(epochs)
            results[config] = {}
            for fraction in FRACTIONS:
                start = time.perf_counter()
                labels, _ = kp.flawed.corrupt_labels(y, fraction, 10, seed=args.seed)
                model = mlp(width, args.depth, args.seed)
                initial = model.get_layer("hidden1").kernel.numpy()
                _common.train(model, x, labels, epochs, args.seed, optimizer=optimizer(name))
                moved = model.get_layer("hidden1").kernel.numpy() - initial
                report = regression_report(
                    model, parts, targets, f"{scratch}/{config.replace(':', '_')}_{fraction}"
                )
                reports[config, fraction] = report
                results[config][str(fraction)] = {
                    "r2": {c: report.values("val", f"{c}_r2") for c in SHAPES},
                    "r2_interval": {
                        c: {p: list(report.interval("val", p, f"{c}_r2")) for p in report.points}
                        for c in SHAPES
                    },
                    "first_layer_moved": float(np.linalg.norm(moved) / np.linalg.norm(initial)),
                    "train_accuracy_on_its_labels": accuracy(model, x, labels),
                    "val_accuracy": accuracy(model, parts["val"][0], yv),
                }
                row = results[config][str(fraction)]
                print(
                    f"{config}, N={fraction}: area R^2 hidden1 {row['r2']['area']['hidden1']:.3f}, "
                    f"moved {row['first_layer_moved']:.3f}, train accuracy "
                    f"{row['train_accuracy_on_its_labels']:.3f} "
                    f"({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
            clean, noisy = (results[config][str(f)] for f in FRACTIONS)
            results[config]["first_layer_loss"] = {
                c: clean["r2"][c]["hidden1"] - noisy["r2"][c]["hidden1"] for c in SHAPES
            }
    # The first layer's area R^2 lost from N = 0 to N = 0.2, per configuration, and
    # each configuration's loss against the first's (Adam, 512 units, 100 epochs).
    tests = {}
    for config in args.configs:
        tests[f"{config}: area R^2 hidden1, N=0 - N=0.2"] = reports[config, 0.0].compare(
            "val", "hidden1", other=reports[config, 0.2], metric="area_r2"
        )
    for config in args.configs[1:]:
        base = args.configs[0]
        tests[f"area R^2 lost at hidden1: {config} - {base}"] = dataclasses.replace(
            compare_losses(
                "area_r2",
                ((reports[config, 0.0], "hidden1"), (reports[config, 0.2], "hidden1")),
                ((reports[base, 0.0], "hidden1"), (reports[base, 0.2], "hidden1")),
            ),
            a=config,
            b=base,
        )
    tests = _common.tested_together(tests, "the first layer's loss")
    for config in args.configs:
        clean, noisy = (results[config][str(f)] for f in FRACTIONS)
        r2 = [
            _common.with_interval(
                row["r2"]["area"]["hidden1"], row["r2_interval"]["area"]["hidden1"]
            )
            for row in (clean, noisy)
        ]
        run.compare(
            f"{config}: area R^2 hidden1 N=0 -> N=0.2 (moved)",
            "unaffected",
            f"{r2[0]} -> {r2[1]} ({clean['first_layer_moved']:.2f}, "
            f"{noisy['first_layer_moved']:.2f}); "
            f"{_common.tested(tests[f'{config}: area R^2 hidden1, N=0 - N=0.2'])}",
        )
    for config in args.configs[1:]:
        name = f"area R^2 lost at hidden1: {config} - {args.configs[0]}"
        run.compare(name, "-", _common.tested(tests[name]))
    run.save(
        {
            "data_source": source,
            "concepts": SHAPES,
            "fractions": FRACTIONS,
            "results": results,
            "comparisons": tests,
        },
        figure=plot(results, args.configs),
    )


def plot(results, configs):
    figure, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    positions = np.arange(len(configs))
    for i, concept in enumerate(SHAPES):
        losses = [results[c]["first_layer_loss"][concept] for c in configs]
        axes[0].bar(positions + (i - 1) * 0.27, losses, 0.27, label=concept)
    axes[0].axhline(0, color="black", lw=0.8)
    axes[0].set_xticks(positions, configs, rotation=15)
    axes[0].set(
        title="hidden1: R$^2$ lost from N = 0 to N = 0.2 (held out)",
        ylabel="R$^2$(N=0) - R$^2$(N=0.2)",
    )
    axes[0].legend()
    for config in configs:
        moved = [results[config][str(f)]["first_layer_moved"] for f in FRACTIONS]
        loss = results[config]["first_layer_loss"]["area"]
        axes[1].scatter(moved[1], loss, s=40)
        axes[1].annotate(config, (moved[1], loss), fontsize=8)
    axes[1].set(
        title="area: R$^2$ lost against how far hidden1 moved (N = 0.2)",
        xlabel="||W - W0|| / ||W0|| of hidden1",
        ylabel="R$^2$ lost",
    )
    axes[1].grid(alpha=0.3)
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    main()
