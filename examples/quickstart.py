"""Quickstart: linear probes at every layer of a small MNIST convnet, before and after training.

A linear classifier probe (Alain & Bengio, arXiv 1610.01644) is a softmax
classifier fitted on one layer's features, with no influence on the model. This
example puts one at every layer of a small convnet, in the spirit of the paper's
MNIST experiment (Sec. 3.5, Fig. 3), twice:

1. on the untrained convnet (random weights): even random convolutions and
   ReLUs make the digits more linearly separable than the raw pixels;
2. after training the convnet for a few epochs: the probe error falls with
   depth to about the convnet's own test error (the last probes can beat it
   a little: a linear probe on the logits also recalibrates them).

Each time the probes are trained on the training split, early-stopped one by
one on the validation split (`kp.callbacks.BestProbeWeights`) and evaluated on
the test split. Offline, MNIST is a split of the 10,000 official test images;
the first line printed says which data was used.

Every test error comes with its 95% interval (Wilson's, from each test
image's outcome, which the report keeps), and every difference it states is
tested on the same test images (McNemar's exact test; Holm-adjusted where one
question tests several points): the pixels against the first ReLU, training
against no training at each point, and the trained probes against the
convnet's own classifier.

Run it from the repository root:

```
python examples/quickstart.py                 # 12 minutes on 2 busy CPU cores
python examples/quickstart.py --quick         # a tiny smoke run, a few seconds
python examples/quickstart.py --epochs 10 --probe-epochs 30 --out /tmp/probes
```

It prints the probe errors per layer with their intervals and the paired tests,
and writes `quickstart_errors.png` (both curves on one figure, with their
interval bands), `quickstart_report.json`, `quickstart_table.txt` (the tables
and the tests) and
`quickstart_probed.keras` (the trained convnet with its probes, ready for
`keras-probes export`) to `--out`: by default `examples/out/`, and
`examples/out/variants/quick/` for `--quick` (other options: see `--help`).
"""

import _offline
import _outputs

_offline.use_shared_keras_cache()  # before keras is imported: it reads KERAS_HOME once

import dataclasses  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def arguments() -> _outputs.ScriptParser:
    """The command line, built before TensorFlow is imported."""
    parser = _outputs.ScriptParser(OUT, description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="convnet training epochs")
    parser.add_argument("--probe-epochs", type=int, default=20, help="most epochs per probe")
    parser.add_argument("--patience", type=int, default=3, help="early-stopping patience")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="tiny run for smoke tests: 300 images, 1 epoch"
    )
    return parser


if __name__ == "__main__":
    arguments().parse_args()  # --help and usage errors before TensorFlow is imported (below)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # fewer TensorFlow C++ start-up logs

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_probes as kp  # noqa: E402

#: The confidence level of every interval, and 1 - the level of every test.
LEVEL = 0.95


def build_convnet() -> keras.Model:
    """The convnet of the paper's Fig. 2, with a smaller fully-connected layer.

    Every convolution, activation and pooling is its own layer, so that
    `points="all"` probes each side of each of them, and the input itself
    (the pixels, scaled to [0, 1]).
    """
    layers = keras.layers
    # He initialisation keeps the feature scale about constant through the ReLUs. With
    # Keras' default (Glorot) the untrained deep features are ~10x smaller than the
    # pixels, and their probes, trained by RMSprop with a fixed step size, are still far
    # from converged after tens of epochs: the curve would show the optimiser, not the
    # features.
    init = "he_normal"
    inputs = keras.Input((28, 28, 1), name="pixels")
    x = layers.Conv2D(32, 5, padding="same", kernel_initializer=init, name="conv1")(inputs)
    x = layers.ReLU(name="conv1_relu")(x)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(64, 5, padding="same", kernel_initializer=init, name="conv2")(x)
    x = layers.ReLU(name="conv2_relu")(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, kernel_initializer=init, name="fc1")(x)
    x = layers.ReLU(name="fc1_relu")(x)
    outputs = layers.Dense(10, kernel_initializer=init, name="logits")(x)
    return keras.Model(inputs, outputs, name="mnist_convnet")


def probe(base, data, split, probe_epochs, patience, batch_size):
    """Trains fresh probes on `base` as it is now and evaluates them on the test split.

    Args:
        base: the convnet.
        data: `kp.datasets.Splits` of float images `(n, 28, 28, 1)`.
        split: name of the test split in the report.
        probe_epochs: the most epochs a probe trains.
        patience: epochs without a better validation loss before a probe stops.
        batch_size: probe training batch size.

    Returns:
        `(probed, report)`: the probed model and the report of the test split.
    """
    # A new ProbedModel starts every probe from zero; the base is shared, not copied.
    # MNIST layers are small enough to probe whole ("flatten"), as the paper does; the
    # default "auto" would average-pool the feature maps instead.
    probed = kp.ProbedModel(base, points="all", num_classes=10, reducers="flatten")
    probed.compile(optimizer="rmsprop")
    stopper = kp.callbacks.BestProbeWeights(patience=patience)
    start = time.perf_counter()
    history = probed.fit(
        *data.train,
        validation_data=data.val,
        epochs=probe_epochs,
        batch_size=batch_size,
        callbacks=[stopper],
        verbose=0,
    )
    best = sorted({e + 1 for e in stopper.best_epoch_.values() if e is not None})
    print(
        f"  {len(probed.points)} probes trained for {len(history.epoch)} epoch(s) in "
        f"{time.perf_counter() - start:.0f} s; best epochs {best}"
    )
    return probed, probed.evaluate_probes(*data.test, split=split, batch_size=512, verbose=0)


def paired_tests(report: kp.ProbeReport, own_mistakes: np.ndarray) -> dict:
    """The differences the example states, each tested on the same test images.

    Args:
        report: the splits `"untrained test"` and `"trained test"`, with outcomes.
        own_mistakes: the trained convnet's own mistake on each test image.

    Returns:
        `{question: [kp.uncertainty.Comparison]}`: McNemar's exact test; within
        a question of several points, Holm-adjusted (`adjusted_pvalue`).
    """
    before, after = "untrained test", "trained test"

    def wrong(split, point):
        return report.outcomes[split][point].values("error")

    def holm(comparisons):
        adjusted = kp.uncertainty.holm([c.pvalue for c in comparisons])
        return [
            dataclasses.replace(c, adjusted_pvalue=float(p))
            for c, p in zip(comparisons, adjusted, strict=True)
        ]

    def against(a, b, a_name, b_name):
        c = kp.uncertainty.paired_rates(a, b, level=LEVEL)
        return dataclasses.replace(c, a=a_name, b=b_name, split=after, metric="error")

    points = report.points
    return {
        "untrained: the first ReLU against the pixels": [
            report.compare(before, "conv1_relu", "pixels", level=LEVEL)
        ],
        "untrained: conv2_relu against conv2": [
            report.compare(before, "conv2_relu", "conv2", level=LEVEL)
        ],
        "each point, trained minus untrained": holm(
            [against(wrong(after, p), wrong(before, p), f"trained {p}", p) for p in points]
        ),
        "each trained probe minus the convnet's own classifier": holm(
            [against(wrong(after, p), own_mistakes, p, "convnet") for p in points]
        ),
        **{
            f"{split}: each point minus the next deeper one": report.compare_adjacent(
                split, level=LEVEL
            )
            for split in (before, after)
        },
    }


def plot(report: kp.ProbeReport, own: str, own_error: float):
    """Both curves on one log-scale figure, each with its 95% interval band, and the
    trained convnet's own test error (`own`: with its interval, as text)."""
    figure = kp.plots.plot_errors(
        report,
        references={f"trained convnet's own test error, {own}": own_error},
        chance=False,
        title="Linear probes on a small MNIST convnet, before and after training",
        yscale="log",  # errors of 1% and of 50% on one figure
        level=LEVEL,
    )
    # The bottom: below the lowest error and band, or, for an error of 0, one test image's
    # worth below 1 error.
    n = len(next(iter(report.outcomes[report.splits[0]].values())))
    lows = [
        value
        for split in report.splits
        for value in (
            *report.errors(split).values(),
            *(b[0] for b in report.intervals(split).values()),
        )
    ]
    figure.axes[0].set_ylim(max(min(lows), 1 / n) / 1.5, 1)
    return figure


def tested(comparison: kp.uncertainty.Comparison) -> str:
    """A comparison in one line, with its verdict."""
    return f"{comparison}: {'significant' if comparison.significant() else 'not significant'}"


def main(argv=None):
    args = arguments().parse_args(argv)
    if args.quick:
        args.epochs = args.probe_epochs = 1
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)

    data = kp.datasets.mnist(seed=args.seed)
    print(f"MNIST: {data.source}")
    # Float images in [0, 1] with a channel axis.
    images = {
        name: (x[..., None].astype("float32") / 255, y)
        for name, (x, y) in (("train", data.train), ("val", data.val), ("test", data.test))
    }
    if args.quick:
        images = {name: (x[:300], y[:300]) for name, (x, y) in images.items()}
    data = kp.datasets.Splits(**images, source=data.source)
    sizes = ", ".join(f"{len(y)} {name}" for name, (_, y) in images.items())
    print(f"Using {sizes} images.")

    convnet = build_convnet()
    print("Probing the untrained convnet (random weights)...")
    _, report = probe(convnet, data, "untrained test", args.probe_epochs, args.patience, 128)

    print(f"Training the convnet for {args.epochs} epoch(s)...")
    convnet.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    convnet.fit(
        *data.train,
        validation_data=data.val,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=2,
    )
    x_test, y_test = data.test
    predicted = convnet.predict(x_test, batch_size=512, verbose=0).argmax(axis=1)
    own_mistakes = predicted != y_test
    own_error = float(own_mistakes.mean())
    low, high = kp.uncertainty.rate_interval(own_mistakes, level=LEVEL)
    own = f"{own_error:.4f} [{low:.4f}, {high:.4f}]"
    print(f"The trained convnet's own test error: {own}")

    print("Probing the trained convnet...")
    probed, trained = probe(convnet, data, "trained test", args.probe_epochs, args.patience, 128)
    report = report.merge(trained)

    tables = "\n\n".join(
        report.table(metrics=[metric], intervals=True, level=LEVEL) for metric in ("error", "loss")
    )
    lines = [f"The trained convnet's own test error: {own}", ""]
    for question, comparisons in paired_tests(report, own_mistakes).items():
        significant = sum(c.significant() for c in comparisons)
        lines.append(f"{question}: {significant} of {len(comparisons)} significant")
        lines += [f"  {tested(c)}" for c in comparisons]
    tables += "\n\n" + "\n".join(lines)
    print(
        f"\nProbe error and loss per layer on the test split ({len(data.test[1])} images), "
        f"[{LEVEL:.0%} interval]; paired tests on the same images:\n"
    )
    print(tables)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quickstart_table.txt").write_text(tables + "\n")
    report.to_json(args.out / "quickstart_report.json")
    figure = plot(report, own, own_error)
    figure.savefig(args.out / "quickstart_errors.png", dpi=120)
    # The trained convnet with its fitted probes: `keras-probes export` serves it.
    probed.save(args.out / "quickstart_probed.keras")
    print(f"\nWrote quickstart_{{errors.png,report.json,table.txt,probed.keras}} to {args.out}")
    print(f"Total time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
