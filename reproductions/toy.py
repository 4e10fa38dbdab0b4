"""Toy experiment of Alain & Bengio (arXiv 1610.01644 v1, Sec. 3.2, Fig. 3).

An untrained 32-layer MLP of 128 units per layer, LeakyReLU(0.5) and Glorot
normal initialisation, looks at linearly separable data: X ~ N(0, I) in R^128
and y = sign(x . w) for a random w. A linear probe at the input and after every
layer measures how much of that linear separability survives: the paper finds
an error of about 0 at the input that climbs toward the coin flip's 0.5 with
depth ("garbage forwardprop"). The experiment is repeated on 100 datasets (a new
w, new data and a new network each time) and the errors averaged.

The paper trains its probes with RMSProp; here every probe is fitted to its
optimum with L-BFGS (`kp.solvers.LBFGSProbe`) on standardised features, so the
error measures the layer, not the optimizer nor the activations' shrinking
scale. Errors are measured on held-out examples of the same distribution (and
on the training examples, also saved).

Each dataset's errors are a `kp.ProbeReport`; `kp.ProbeReport.combine` gives
the mean curve over datasets and its spread (the standard deviation over
datasets). The mean has its 95% interval over datasets (a percentile
bootstrap of the datasets), and so has the monotonicity of the mean curve;
each step from a layer to the next is a paired t-test over datasets,
Holm-adjusted over the steps.

    python reproductions/toy.py             # 100 datasets, about 10 minutes on 2 CPU cores
    python reproductions/toy.py --quick     # 3 smaller datasets, seconds
"""

import _common  # noqa: I001  (first: it points Keras at the offline cache)


def arguments():
    """The command line, built before TensorFlow is imported."""
    parser = _common.parser(__doc__)
    parser.add_argument("--datasets", type=int, default=100, help="experiments averaged")
    parser.add_argument("--depth", type=int, default=32, help="layers of the MLP")
    parser.add_argument("--train", type=int, default=2000, help="probe training examples")
    parser.add_argument("--test", type=int, default=2000, help="held-out examples")
    parser.add_argument("--l2", type=float, default=1e-3, help="L2 penalty of the probes")
    return parser


if __name__ == "__main__":
    arguments().parse_args()  # --help and usage errors before TensorFlow is imported (below)

import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy import stats  # noqa: E402

import keras_probes as kp  # noqa: E402

WIDTH = 128


def toy_mlp(depth: int, seed: int) -> keras.Model:
    """The untrained MLP: `depth` Dense(128) + LeakyReLU(0.5) layers, Glorot normal."""
    inputs = keras.Input((WIDTH,), name="x")
    h = inputs
    for i in range(1, depth + 1):
        init = keras.initializers.GlorotNormal(seed=seed * 1000 + i)
        h = keras.layers.Dense(WIDTH, kernel_initializer=init, name=f"dense_{i}")(h)
        h = keras.layers.LeakyReLU(negative_slope=0.5, name=f"layer_{i}")(h)
    return keras.Model(inputs, h, name=f"toy_mlp_{depth}")


def one_dataset(depth, n_train, n_test, l2, seed):
    """Errors of the probes at the input and after each layer, on one dataset."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(WIDTH)
    x = rng.standard_normal((n_train + n_test, WIDTH)).astype("float32")
    y = (x @ w > 0).astype("int64")
    model = toy_mlp(depth, seed)
    probed = kp.ProbedModel(model, points=kp.points.matching(r"x|layer_\d+"), num_classes=2)
    features = probed.feature_model.predict(x, batch_size=1024, verbose=0)
    # Activations shrink about 0.8x per layer (to ~1e-4 at layer 32): standardised,
    # every layer meets the L2 penalty at the same scale; raw, the penalty alone would
    # push the deep probes' training error toward 0.5.
    solver = kp.solvers.LBFGSProbe(l2=l2, standardize=True)
    train, test = slice(0, n_train), slice(n_train, None)
    errors = {"train": [], "test": []}
    for point in probed.points:
        probe = solver.fit(features[point][train], y[train], num_classes=2)
        for split, rows in (("train", train), ("test", test)):
            errors[split].append(float(np.mean(probe.predict(features[point][rows]) != y[rows])))
    return probed.points, errors


def figure(points, test, train, datasets):
    fig = Figure(figsize=(9, 4.8), layout="constrained")
    ax = fig.add_subplot()
    depth = np.arange(len(points))
    for name, values, color in (("test", test, "C0"), ("train", train, "C1")):
        mean, std = values.mean(0), values.std(0, ddof=1)
        ax.plot(depth, mean, marker="o", color=color, label=f"probe {name} error (mean)")
        ax.fill_between(depth, mean - std, mean + std, color=color, alpha=0.2, label="± 1 std")
    ax.axhline(0.5, color="grey", linestyle=":", label="coin flip (0.5)")
    ax.set_xticks(depth[::2], [str(d) for d in depth[::2]])
    ax.set_xlabel("layer (0 = the input x)")
    ax.set_ylabel("prediction error")
    ax.set_ylim(0, 0.6)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(
        f"Probes on an untrained {len(points) - 1}-layer MLP, LeakyReLU(0.5), "
        f"y = sign(x·w): mean over {datasets} datasets"
    )
    return fig


def main(argv=None):
    args = arguments().parse_args(argv)
    if args.quick:
        args.datasets, args.train, args.test = 3, 500, 500
    run = _common.Run("toy", args)
    run.note(
        "probes fitted to their optimum by L-BFGS on standardised features (the paper: "
        "RMSProp); errors on "
        f"{args.test} held-out examples per dataset, probes trained on {args.train}"
    )
    per_dataset = {"train": [], "test": []}
    start = time.perf_counter()
    progress = keras.utils.Progbar(args.datasets, unit_name="dataset")
    for i in range(args.datasets):
        points, errors = one_dataset(
            args.depth, args.train, args.test, args.l2, seed=args.seed * 100_000 + i
        )
        for split in per_dataset:
            per_dataset[split].append(errors[split])
        progress.update(i + 1, [("input", errors["test"][0]), ("last", errors["test"][-1])])
    test, train = np.array(per_dataset["test"]), np.array(per_dataset["train"])
    combined = kp.ProbeReport.combine(
        [
            kp.ProbeReport(
                points,
                {
                    split: {p: {"error": float(e)} for p, e in zip(points, errors, strict=True)}
                    for split, errors in (("test", row), ("train", train_row))
                },
            )
            for row, train_row in zip(test, train, strict=True)
        ]
    )
    mean = np.array(list(combined.errors("test").values()))
    # The mean's interval over datasets: each dataset (its w, data and network) drawn anew.
    interval = kp.uncertainty.mean_interval(test) if len(test) > 1 else [(m, m) for m in mean]
    shown = lambda i: _common.with_interval(mean[i], interval[i])  # noqa: E731
    run.compare("test error at the input (layer 0)", "~0.00", shown(0))
    run.compare("test error at layer 8", "rising", shown(min(8, args.depth)))
    run.compare("test error at layer 16", "rising", shown(min(16, args.depth)))
    run.compare(f"test error at layer {args.depth} (last)", "toward 0.50", shown(-1))
    rises = float(np.mean(np.diff(mean) >= 0))
    run.compare("share of layers where the mean error rises", "~1 (monotonic)", rises)
    # Each step: the next layer's error minus this one's, paired by dataset.
    steps = []
    if len(test) > 1:
        for i in range(args.depth):
            t = stats.ttest_rel(test[:, i + 1], test[:, i])
            low, high = t.confidence_interval(0.95)
            steps.append(
                {
                    "from": points[i],
                    "to": points[i + 1],
                    "difference": float(mean[i + 1] - mean[i]),
                    "low": float(low),
                    "high": float(high),
                    "pvalue": float(t.pvalue),
                }
            )
        for step, adjusted in zip(
            steps, kp.uncertainty.holm([s["pvalue"] for s in steps]), strict=True
        ):
            step["adjusted_pvalue"] = float(adjusted)
            step["significant"] = bool(adjusted < 0.05 and step["difference"] > 0)
        run.compare(
            "steps where the error rises significantly (paired t, Holm)",
            "every one",
            f"{sum(s['significant'] for s in steps)} of {args.depth}",
        )
    tau, low, high = kp.uncertainty.kendall_interval(test)
    run.compare(
        "monotonicity of the mean curve [95% over datasets]",
        "-1",
        f"{tau:.3f} [{low:.3f}, {high:.3f}]",
    )
    results = {
        "settings": {
            "depth": args.depth,
            "width": WIDTH,
            "activation": "LeakyReLU(0.5)",
            "initializer": "glorot_normal",
            "datasets": args.datasets,
            "n_train": args.train,
            "n_test": args.test,
            "l2": args.l2,
            "solver": "lbfgs",
        },
        "points": points,
        "test_error_mean": mean,
        "test_error_mean_interval": [list(bounds) for bounds in interval],
        "test_error_std": list(combined.spread("test").values()),
        "train_error_mean": list(combined.errors("train").values()),
        "train_error_std": list(combined.spread("train").values()),
        "test_error_per_dataset": test,
        "steps": steps,
        # ProbeReport's measure: -1 when every deeper probe does worse, as here.
        "monotonicity": combined.monotonicity("test"),
        "monotonicity_interval": [low, high],
        "seconds_per_dataset": (time.perf_counter() - start) / args.datasets,
    }
    run.save(results, figure(points, test, train, args.datasets))


if __name__ == "__main__":
    main()
