"""MNIST convnet of Alain & Bengio (arXiv 1610.01644 v1 Sec. 3.3, v4 Sec. 3.5, Fig. 5 / 3).

conv5x5(32) - ReLU - maxpool - conv5x5(64) - ReLU - maxpool - fc(512) - ReLU -
fc(10), with a probe on each side of every convolution, activation and pooling
(the layers are named as the paper's probes: conv1_preact, conv1_postact, ...,
fc1_postact, logits). Probes see each layer's whole output, flattened. They are
trained twice: on the network as initialised, and after it has trained for 10
epochs; each time with RMSProp, every probe early-stopped on its own validation
loss (`kp.callbacks.BestProbeWeights`), and measured on the test split.

The widest points (conv1: 25,088 features, conv2: 12,544) are slow to train
by minibatches: many stop at the epoch cap, still improving. So every probe is
also fitted to its optimum, on a feature cache, by L-BFGS (streamed from the
memory-mapped shards) along a regularisation path, `kp.solvers.LBFGSProbeCV`
on `PENALTIES` (largest first, each fit warm-started from the last), keeping
per point the penalty of least validation loss; both protocols are reported.

Every test error has its 95% Wilson interval (over the test digits); at the
optimum, each point after training is tested against the same point at
initialisation, and each point against the one before it (McNemar's exact
test on the same digits), each family Holm-adjusted.

The paper: at initialisation the test error goes from about 8% at the input to
about 2% after the first ReLU (random features help); after training it
improves at every layer, but for a minor kink at fc1_preact.

Data: `keras.datasets.mnist` when it can be downloaded (60k train, of which the
last 10k are the validation split, as the paper; 10k test). Offline, only the
10,000 official test images are here: they are split 7,000 train / 1,500
validation / 1,500 test, and the output says so.

    python reproductions/mnist_convnet.py            # about 6 minutes on 2 CPU cores offline
    python reproductions/mnist_convnet.py --quick    # 1,000 images, 1 epoch: a smoke run
"""

import _common  # noqa: I001  (first: it points Keras at the offline cache)


def arguments():
    """The command line, built before TensorFlow is imported."""
    parser = _common.parser(__doc__)
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of the convnet")
    parser.add_argument("--probe-epochs", type=int, default=100, help="most epochs per probe")
    parser.add_argument("--patience", type=int, default=5, help="early-stopping patience")
    parser.add_argument(
        "--probe-lr", type=float, default=1e-3, help="RMSProp learning rate of the probes"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-iter", type=int, default=1000, help="most L-BFGS iterations")
    return parser


if __name__ == "__main__":
    arguments().parse_args()  # --help and usage errors before TensorFlow is imported (below)

import tempfile  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_probes as kp  # noqa: E402

PAPER_INIT = {"input": "~0.08", "conv1_postact": "~0.02"}
#: L2 penalties of the path of the probes at their optimum (`LBFGSProbeCV`'s `l2s`).
PENALTIES = (1e-2, 1e-3, 1e-4)


def convnet(seed: int) -> keras.Model:
    """The paper's MNIST convnet, one named layer per probe point."""
    layers = keras.layers
    init = {"kernel_initializer": keras.initializers.GlorotUniform(seed)}
    x = inputs = keras.Input((28, 28, 1), name="input")
    x = layers.Conv2D(32, 5, padding="same", name="conv1_preact", **init)(x)
    x = layers.ReLU(name="conv1_postact")(x)
    x = layers.MaxPooling2D(name="conv1_postpool")(x)
    x = layers.Conv2D(64, 5, padding="same", name="conv2_preact", **init)(x)
    x = layers.ReLU(name="conv2_postact")(x)
    x = layers.MaxPooling2D(name="conv2_postpool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, name="fc1_preact", **init)(x)
    x = layers.ReLU(name="fc1_postact")(x)
    outputs = layers.Dense(10, name="logits", **init)(x)
    return keras.Model(inputs, outputs, name="mnist_convnet")


POINTS = [
    "input",
    "conv1_preact",
    "conv1_postact",
    "conv1_postpool",
    "conv2_preact",
    "conv2_postact",
    "conv2_postpool",
    "fc1_preact",
    "fc1_postact",
    "logits",
]


def probe(model, data, args, label):
    """Trains fresh probes on `model` as it is now; returns their test report."""
    (x, y), (xv, yv), (xt, yt) = data
    probed = kp.ProbedModel(model, points=POINTS, num_classes=10, reducers="flatten")
    probed.compile(optimizer=keras.optimizers.RMSprop(args.probe_lr))
    stopper = kp.callbacks.BestProbeWeights(patience=args.patience)
    start = time.perf_counter()
    probed.fit(
        x,
        y,
        validation_data=(xv, yv),
        epochs=args.probe_epochs,
        batch_size=args.batch_size,
        callbacks=[stopper],
        verbose=0,
    )
    best = [stopper.best_epoch_[p] + 1 for p in POINTS]
    print(f"{label}: probes trained in {time.perf_counter() - start:.0f} s, best epochs {best}")
    report = probed.evaluate_probes(xt, yt, split=label, verbose=0)
    return report.merge(probed.evaluate_probes(xv, yv, split=f"{label} (validation)", verbose=0))


def probe_at_optimum(model, data, args, label):
    """Probes on `model` fitted to their optimum by L-BFGS on cached features, the penalty
    chosen per point on the validation split (`kp.solvers.LBFGSProbeCV`).

    Returns:
        `(rows, report)`: `{point: test figures, "validation_error", "train_error",
        "l2" (chosen), "grad_norm", "objective"}` and `kp.fit_probes`'s report (splits
        `train`, `val`, `test`; held-out outcomes kept).
    """
    probed = kp.ProbedModel(model, points=POINTS, num_classes=10, reducers="flatten")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        for split, (x, y) in zip(("train", "val", "test"), data, strict=True):
            kp.FeatureCache.write(probed, (x, y), directory, split, batch_size=500, verbose=0)
        cache = kp.FeatureCache.open(directory, model=probed)
        solver = kp.solvers.LBFGSProbeCV(l2s=PENALTIES, cv="val", max_iter=args.max_iter)
        report = kp.fit_probes(probed, cache, solver=solver, validation="val", verbose=0)
    train, val = report.results["train"], report.results["val"]
    rows = {
        point: {
            **report.results["test"][point],
            "validation_error": val[point]["error"],
            "train_error": train[point]["error"],
            "l2": train[point]["l2"],
            "grad_norm": train[point]["grad_norm"],
            "objective": train[point]["objective"],
        }
        for point in POINTS
    }
    print(
        f"{label}: probes fitted to their optimum in {time.perf_counter() - start:.0f} s, "
        f"penalties {[rows[p]['l2'] for p in POINTS]}"
    )
    return rows, report


def at_the_optimum(report, label):
    """`report`'s test split as `"<label>, at the optimum"`, with its outcomes."""
    return kp.ProbeReport(
        POINTS,
        {f"{label}, at the optimum": report.results["test"]},
        10,
        report.model,
        {f"{label}, at the optimum": report.outcomes["test"]},
        {f"{label}, at the optimum": report.examples["test"]},
    )


def main(argv=None):
    args = arguments().parse_args(argv)
    run = _common.Run("mnist_convnet", args)

    splits = kp.datasets.mnist(seed=args.seed)
    run.note(f"data: {splits.source}")
    scale = lambda a: (a[..., None] / 255.0).astype("float32")  # noqa: E731
    data = [(scale(x), y.astype("int64")) for x, y in (splits.train, splits.val, splits.test)]
    if args.quick:
        data = [(x[:n], y[:n]) for (x, y), n in zip(data, (1000, 300, 300), strict=True)]
        args.epochs, args.probe_epochs, args.max_iter = 1, 2, 20
    sizes = [len(y) for _, y in data]
    print(f"train / validation / test: {sizes}")

    keras.utils.set_random_seed(args.seed)
    model = convnet(args.seed)
    before = probe(model, data, args, "after initialisation")
    optimum, fitted = {}, {}  # per label: rows, and kp.fit_probes's report
    label = "after initialisation"
    optimum[label], fitted[label] = probe_at_optimum(model, data, args, label)
    before = before.merge(at_the_optimum(fitted[label], label))

    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    (x, y), (xv, yv), (xt, yt) = data
    start = time.perf_counter()
    history = model.fit(
        x, y, validation_data=(xv, yv), epochs=args.epochs, batch_size=args.batch_size, verbose=2
    )
    print(f"convnet trained for {args.epochs} epochs in {time.perf_counter() - start:.0f} s")
    model_wrong = np.argmax(model.predict(xt, batch_size=500, verbose=0), axis=1) != yt
    model_error = float(model_wrong.mean())
    trained_label = f"after {args.epochs} epochs"
    after = probe(model, data, args, trained_label)
    optimum[trained_label], fitted[trained_label] = probe_at_optimum(
        model, data, args, trained_label
    )
    after = after.merge(at_the_optimum(fitted[trained_label], trained_label))
    report = before.merge(after)
    print(report.table(metrics=["error"], intervals=True))
    # At the optimum, on the same test digits: each point after training minus at
    # initialisation; each point minus the one before it, after training.
    init_fit, trained_fit = fitted["after initialisation"], fitted[trained_label]
    tests = {
        "trained - initialisation, at the optimum": _common.tested_together(
            {p: trained_fit.compare("test", p, other=init_fit) for p in POINTS},
            "trained - initialisation, at the optimum",
        ),
        "each point - the one before, trained, at the optimum": {
            f"{c.a} - {c.b}": c for c in trained_fit.compare_adjacent("test")
        },
    }
    for name, c in tests["each point - the one before, trained, at the optimum"].items():
        print(f"  {name}: {_common.tested(c)}")

    def shown(split, point):  # with its interval where the split keeps its outcomes
        value = report.errors(split)[point]
        if split not in report.outcomes:
            return value
        return _common.with_interval(value, report.interval(split, point))

    protocols = {"minibatch": "", "optimum": ", at the optimum"}
    errors = {}
    for name, suffix in protocols.items():
        init = report.errors(f"after initialisation{suffix}")
        trained = report.errors(f"{trained_label}{suffix}")
        errors[name] = {"init": init, "trained": trained}
        at_init = f"after initialisation{suffix}"
        run.compare(
            f"{name}: init, test error at the input", PAPER_INIT["input"], shown(at_init, "input")
        )
        run.compare(
            f"{name}: init, test error after the first ReLU",
            PAPER_INIT["conv1_postact"],
            shown(at_init, "conv1_postact"),
        )
        kinks = [b for a, b in zip(POINTS, POINTS[1:], strict=False) if trained[b] > trained[a]]
        run.compare(
            f"{name}: trained, layers worse than the one before",
            "fc1_preact (minor)",
            ", ".join(kinks) or "none",
        )
        run.compare(
            f"{name}: trained, test error at logits",
            "lowest",
            shown(f"{trained_label}{suffix}", "logits"),
        )
        run.compare(
            f"{name}: trained, every probe better than at init",
            "yes",
            "yes" if all(trained[p] <= init[p] for p in POINTS) else "no",
        )
    run.compare(
        "the convnet's own test error",
        "-",
        _common.with_interval(model_error, kp.uncertainty.rate_interval(model_wrong)),
    )
    adjacent = tests["each point - the one before, trained, at the optimum"]
    run.compare(
        "optimum: trained, layers significantly worse than the one before (Holm)",
        "fc1_preact (minor)",
        ", ".join(n for n, c in adjacent.items() if c.difference > 0 and c.significant()) or "none",
    )
    better = tests["trained - initialisation, at the optimum"]
    run.compare(
        "optimum: trained, probes significantly better than at init (Holm)",
        "all",
        f"{sum(c.difference < 0 and c.significant() for c in better.values())} of {len(POINTS)}",
    )
    init, trained = errors["minibatch"]["init"], errors["minibatch"]["trained"]

    figure = kp.plots.plot_errors(
        report,
        splits=[
            "after initialisation",
            trained_label,
            "after initialisation, at the optimum",
            f"{trained_label}, at the optimum",
        ],
        references={"the trained convnet itself": float(model_error)},
        chance=False,
        title="MNIST convnet: probe test error before and after training (paper Fig. 5);\n"
        "minibatch RMSProp (early-stopped) and L-BFGS at the optimum",
        yscale="log",  # 1% and 50% on one figure
    )
    run.save(
        {
            "data_source": splits.source,
            "sizes": {"train": sizes[0], "validation": sizes[1], "test": sizes[2]},
            "points": POINTS,
            "test_error_init": init,
            "test_error_trained": trained,
            "optimum": optimum,
            "comparisons": tests,
            "model_test_error": float(model_error),
            "model_test_error_interval": list(kp.uncertainty.rate_interval(model_wrong)),
            "model_history": history.history,
            "report": report.to_dict(),
            "settings": {
                "epochs": args.epochs,
                "probe_epochs": args.probe_epochs,
                "patience": args.patience,
                "probe_optimizer": f"RMSprop({args.probe_lr})",
                "reducers": "flatten",
                "optimum": f"L-BFGS, l2 in {list(PENALTIES)} by validation loss "
                f"(LBFGSProbeCV), max_iter={args.max_iter}",
                "batch_size": args.batch_size,
            },
        },
        figure,
    )


if __name__ == "__main__":
    main()
