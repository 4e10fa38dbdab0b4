"""Pathologically deep MLPs diagnosed by probes (Alain & Bengio, arXiv 1610.01644
v1 Sec. 3.4, Fig. 7 and 8; v4 Sec. 5.1, Fig. 6).

128 fully connected layers of 128 units, leaky ReLU, Glorot initialisation, on
MNIST, trained with SGD ("the usual SGD"), in three variants:

- `plain`: the main loss at the top only. The paper: the model does not train
  ("the maximal depth where things start to break down was depth 64").
- `aux`: an auxiliary linear classifier after every 16th layer adds its loss to
  the main one (as Inception's auxiliary heads). The paper: the model trains.
- `skip`: the input is concatenated to layer 63's output to feed layer 64. The
  paper: the model trains through its second half only; layers 1-63 stay dead.

The paper leaves the leaky slope, Glorot's draw, the biases and the learning
rate open: the defaults here are the setting `pathological_depth.py` chose, the
one whose plain network stops training at depth 64 (LeakyReLU(0.85), Glorot
uniform, biases from 0, SGD(0.01) without momentum), and the committed run
trains `aux` and `skip` (`--variants plain` adds the plain network; the sweep
measured it at every depth).

`kp.callbacks.ProbeMonitor` fits a linear probe at the input and after every
`--probe-every`-th layer (2: 65 probes; the paper probes every layer, which
costs twice as much here), before training and at a series of minibatches, on
a fixed set of training examples, and measures each on those (the train error,
the paper's figures) and on held-out digits (beside it: with 128 features and
1,000 examples a probe fits even poor features fairly well). The main output's
error is measured at the same moments. Each variant gives a heatmap (layers x
minibatches), the per-layer error curves at a few moments (the paper's frames),
and a GIF of the train error (the paper's videos).

Every error has its 95% Wilson interval: the model's from each digit's outcome,
the probes' from their rate and the number of digits they are measured on (a
`ProbeHistory` keeps the figures only, so the probes' figures of two variants
are compared by their intervals, not by a paired test).

Data: offline, MNIST's 10,000 official test images split 7,000 train / 1,500
validation / 1,500 test (said in the output); `keras.datasets.mnist` otherwise.

    python reproductions/pathological.py --steps 3000   # the committed run
    python reproductions/pathological.py --quick        # 16 layers, a few steps: a smoke run
"""

import _common  # noqa: I001  (first: it points Keras at the offline cache)

VARIANTS = ("plain", "aux", "skip")
WIDTH = 128


def bias_value(text: str) -> float | None:
    """`--bias`: a number, or `none` (no bias)."""
    return None if text == "none" else float(text)


def arguments():
    """The command line, built before TensorFlow is imported."""
    parser = _common.parser(__doc__, committed=["--steps 3000"])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["aux", "skip"])
    parser.add_argument("--depth", type=int, default=128)
    parser.add_argument("--aux-every", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2000, help="training minibatches")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="sgd")
    parser.add_argument("--lr", type=float, default=0.01, help="the optimizer's learning rate")
    parser.add_argument("--momentum", type=float, default=0.0, help="SGD's momentum")
    parser.add_argument("--slope", type=float, default=0.85, help="the leaky ReLUs' negative slope")
    parser.add_argument(
        "--init",
        choices=["glorot_uniform", "glorot_normal"],
        default="glorot_uniform",
        help="the layers' kernel initialiser",
    )
    parser.add_argument(
        "--bias",
        type=bias_value,
        default=0.0,
        help="the layers' initial bias, or 'none': no bias (default: %(default)s)",
    )
    parser.add_argument("--probe-examples", type=int, default=1000, help="probe training set")
    parser.add_argument(
        "--probe-every",
        type=int,
        default=2,
        help="a probe after every this many layers (and at the input) (default: %(default)s)",
    )
    parser.add_argument("--l2", type=float, default=1e-3, help="L2 penalty of the probes")
    parser.add_argument("--max-iter", type=int, default=200, help="L-BFGS iterations per fit")
    return parser


if __name__ == "__main__":
    arguments().parse_args()  # --help and usage errors before TensorFlow is imported (below)

import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import keras_probes as kp  # noqa: E402


def deep_mlp(
    variant: str,
    depth: int,
    seed: int,
    every: int = 16,
    slope: float = 0.2,
    init: str = "glorot_uniform",
    bias: float | None = 0.0,
) -> keras.Model:
    """`depth` Dense(128) + LeakyReLU(`slope`) layers named `layer_i`, their kernels
    drawn by `init` (`"glorot_uniform"` or `"glorot_normal"`), their biases
    starting at `bias` (`None`: no bias); outputs: main logits first, then the
    auxiliary classifiers' logits (variant `aux`)."""
    inputs = keras.Input((784,), name="input")
    h, outputs = inputs, []
    kernel = {
        "glorot_uniform": keras.initializers.GlorotUniform,
        "glorot_normal": keras.initializers.GlorotNormal,
    }[init]
    for i in range(1, depth + 1):
        if variant == "skip" and i == depth // 2:
            h = keras.layers.Concatenate(name="skip_from_input")([h, inputs])
        h = keras.layers.Dense(
            WIDTH,
            kernel_initializer=kernel(seed=seed * 1000 + i),
            use_bias=bias is not None,
            bias_initializer=keras.initializers.Constant(bias or 0.0),
            name=f"dense_{i}",
        )(h)
        h = keras.layers.LeakyReLU(negative_slope=slope, name=f"layer_{i}")(h)
        if variant == "aux" and i % every == 0 and i < depth:
            outputs.append(keras.layers.Dense(10, name=f"aux_{i}")(h))
    main = keras.layers.Dense(10, name="output")(h)
    return keras.Model(inputs, [main, *outputs], name=f"mlp_{depth}_{variant}")


def mnist_flat(seed: int, quick: bool):
    """`((x, y) train, (x, y) validation, source)`: flat MNIST digits in [0, 1]."""
    splits = kp.datasets.mnist(seed=seed)
    flat = lambda a: (a.reshape(len(a), -1) / 255.0).astype("float32")  # noqa: E731
    data = [(flat(x), y.astype("int64")) for x, y in (splits.train, splits.val)]
    if quick:
        data = [(x[:1000], y[:1000]) for x, y in data]
    return *data, splits.source


def mistakes(model, x, y) -> np.ndarray:
    """Whether the model's main output (its first) is wrong, per example: `(n,)` bool."""
    outputs = model.predict(x, batch_size=1024, verbose=0)
    main = outputs[0] if isinstance(outputs, list) else outputs
    return np.argmax(main, axis=1) != y


def main_error(model, x, y) -> float:
    """The error of the model's main output (its first) on `(x, y)`."""
    return float(np.mean(mistakes(model, x, y)))


def optimizer(args):
    """The model's optimizer from `--optimizer`, `--lr` and `--momentum`."""
    if args.optimizer == "sgd":
        return keras.optimizers.SGD(args.lr, momentum=args.momentum)
    return keras.optimizers.Adam(args.lr)


def architecture(args) -> str:
    """The layers' choices in words: `LeakyReLU(0.2), glorot_uniform, biases from 0`."""
    bias = "no bias" if args.bias is None else f"biases from {args.bias:g}"
    return f"LeakyReLU({args.slope:g}), {args.init}, {bias}"


def describe(args) -> str:
    if args.optimizer == "sgd":
        return f"SGD({args.lr:g}, momentum {args.momentum:g})"
    return f"Adam({args.lr:g})"


def train_variant(variant, data, args, schedule):
    (x, y), (xv, yv) = data
    keras.utils.set_random_seed(args.seed)
    model = deep_mlp(
        variant,
        args.depth,
        args.seed,
        every=args.aux_every,
        slope=args.slope,
        init=args.init,
        bias=args.bias,
    )
    n_out = len(model.outputs)
    model.compile(
        optimizer=optimizer(args),
        loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * n_out,
        metrics=[["accuracy"]] + [[]] * (n_out - 1),
    )
    points = ["input", *(f"layer_{i}" for i in probed_layers(args))]
    monitor = kp.callbacks.ProbeMonitor(
        (x, y),
        num_classes=10,
        validation_data=(xv, yv),
        points=points,
        unit="batch",
        at=schedule,
        max_examples=args.probe_examples,
        l2=args.l2,
        max_iter=args.max_iter,
        path=args.out / f"pathological_{variant}_history.json",
        seed=args.seed,
        verbose=1,
    )
    main_curve = MainCurve({"train": (x, y), "val": (xv, yv)}, [0, *schedule])
    steps_per_epoch = int(np.ceil(len(y) / args.batch_size))
    epochs = int(np.ceil(args.steps / steps_per_epoch))
    start = time.perf_counter()
    model.fit(
        x,
        [y] * n_out,
        batch_size=args.batch_size,
        epochs=epochs,
        callbacks=[main_curve, monitor, StopAt(args.steps)],
        verbose=0,
    )
    seconds = time.perf_counter() - start
    wrong = mistakes(model, x, y), mistakes(model, xv, yv)
    errors = tuple(float(w.mean()) for w in wrong)
    intervals = tuple(list(kp.uncertainty.rate_interval(w)) for w in wrong)
    print(
        f"{variant}: {model.optimizer.iterations.numpy()} steps in {seconds:.0f} s, "
        f"error of the model's output: train {errors[0]:.3f}, held out {errors[1]:.3f}"
    )
    counts = {split: len(monitor.splits[split][1]) for split in ("train", "val")}
    curve = {"steps": main_curve.steps, "train_error": main_curve.errors["train"]}
    curve["val_error"] = main_curve.errors["val"]
    return monitor.history, errors, intervals, curve, counts, seconds


class MainCurve(keras.callbacks.Callback):
    """The main output's error on each split of `data` before training and at the steps
    of `at` (the probes' moments)."""

    def __init__(self, data, at):
        super().__init__()
        self.data, self.at = data, set(at)
        self.steps, self.errors = [], {split: [] for split in data}

    def measure(self, step):
        self.steps.append(step)
        for split, (x, y) in self.data.items():
            self.errors[split].append(main_error(self.model, x, y))

    def on_train_begin(self, logs=None):
        if 0 in self.at and not self.steps:
            self.measure(0)

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step in self.at and step not in self.steps:
            self.measure(step)


class StopAt(keras.callbacks.Callback):
    """Ends training after exactly `steps` minibatches."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.steps:
            self.model.stop_training = True


def probed_layers(args) -> list[int]:
    """The layers probed: every `--probe-every`-th, the last always."""
    return sorted({*range(args.probe_every, args.depth + 1, args.probe_every), args.depth})


def figure(histories, depth):
    """Per variant: the probes' train error (the paper's figures) as a heatmap and at a
    few moments, and their held-out error at the same moments."""
    fig = Figure(figsize=(20, 4.2 * len(histories)), layout="constrained")
    axes = fig.subplots(len(histories), 3, width_ratios=[1, 1.2, 1.2], squeeze=False)
    titles = {
        "plain": "plain: the main loss only",
        "aux": "aux: + a classifier loss every 16 layers",
        "skip": f"skip: input concatenated into layer {depth // 2}",
    }
    for row, (variant, history) in enumerate(histories.items()):
        title = titles[variant]
        kp.plots.plot_history(history, "train_error", ax=axes[row, 0], title=f"{title}, train")
        kp.plots.plot_history_frames(
            history, "train_error", ax=axes[row, 1], title=f"{title}: train error"
        )
        kp.plots.plot_history_frames(
            history, "val_error", ax=axes[row, 2], title=f"{title}: held-out error"
        )
    fig.suptitle(
        f"Probe error at every probed layer of a {depth}-layer MLP on MNIST over training: "
        "train error (the paper's Fig. 7/8) and held-out error"
    )
    return fig


def main(argv=None):
    args = arguments().parse_args(argv)
    if args.quick:
        args.depth, args.aux_every, args.steps, args.probe_examples = 16, 4, 30, 300
        args.probe_every = 1
    schedule = sorted(
        {s for s in (50, 100, 250, 500, 1000, 2000, 3000, 5000, 10_000) if s < args.steps}
        | {args.steps}
    )
    run = _common.Run("pathological", args)
    *data, source = mnist_flat(args.seed, args.quick)
    run.note(f"data: {source}")
    run.note(
        "probes: L-BFGS on standardised features (ProbeMonitor's default), "
        f"{args.probe_examples} fixed training examples; the model: {architecture(args)}, "
        f"{describe(args)} for {args.steps} minibatches of {args.batch_size} (the paper: "
        "'the usual SGD'; pathological_depth.py chooses the slope, initialisation, biases "
        "and learning rate where the plain network stops training at about depth 64)"
    )

    histories, model_errors, model_intervals, curves, seconds = {}, {}, {}, {}, {}
    for variant in args.variants:
        (
            histories[variant],
            model_errors[variant],
            model_intervals[variant],
            curves[variant],
            counts,  # the probes' training and held-out digits
            seconds[variant],
        ) = train_variant(variant, data, args, schedule)
    half = args.depth // 2
    results = {
        "schedule": schedule,
        "optimizer": describe(args),
        "architecture": architecture(args),
        "model_train_error": {v: errors[0] for v, errors in model_errors.items()},
        "model_val_error": {v: errors[1] for v, errors in model_errors.items()},
        "model_train_error_interval": {v: i[0] for v, i in model_intervals.items()},
        "model_val_error_interval": {v: i[1] for v, i in model_intervals.items()},
        "model_curves": curves,
        "probe_train_examples": counts["train"],
        "probe_held_out_examples": counts["val"],
        "seconds": seconds,
    }
    wilson = {  # a probe's error of k digits: its interval depends on k and n alone
        split: lambda rate, n=n: _common.rate_interval(rate, n) for split, n in counts.items()
    }
    for variant, history in histories.items():
        layer = np.array([0, *(int(p.split("_")[1]) for p in history.points[1:])])
        below, above = (layer >= 1) & (layer < half), layer >= half
        results[variant] = {"history": history.to_dict()}
        for split in ("train", "val"):
            final = history.matrix(f"{split}_error")[:, -1]
            results[variant][f"final_{split}_error"] = dict(
                zip(history.points, final.tolist(), strict=True)
            )
            results[variant][f"final_{split}_error_interval"] = {
                p: wilson[split](e) for p, e in zip(history.points, final.tolist(), strict=True)
            }
            results[variant][f"initial_{split}_error"] = dict(
                zip(history.points, history.matrix(f"{split}_error")[:, 0].tolist(), strict=True)
            )
            name = "error" if split == "val" else "train_error"
            results[variant][f"mean_{name}_layers_1_to_half"] = float(final[below].mean())
            results[variant][f"mean_{name}_layers_half_to_top"] = float(final[above].mean())
    paper = {"plain": "fails to train", "aux": "trains", "skip": "trains"}
    for variant in histories:
        run.compare(
            f"{variant}: model error at the end, train / held out [95%]",
            paper[variant],
            " / ".join(
                _common.with_interval(e, i)
                for e, i in zip(model_errors[variant], model_intervals[variant], strict=True)
            ),
        )
    at = sorted({min(d, args.depth) for d in (16, 32, 64, 128)})
    for variant in histories:
        for split, words in (("train", "train error (paper's figure)"), ("val", "held-out error")):
            final = results[variant][f"final_{split}_error"]
            run.compare(
                f"{variant}: probe {words} at layers {', '.join(map(str, at))} at the end [95%]",
                "-",
                " / ".join(
                    _common.with_interval(final[f"layer_{d}"], wilson[split](final[f"layer_{d}"]))
                    for d in at
                ),
            )
    if "skip" in histories:
        for name, words in (("train_error", "train error (paper's figure)"), ("error", "error")):
            run.compare(
                f"skip: mean probe {words}, layers 1-{half - 1} / {half}-{args.depth}, at the end",
                "dead / low",
                f"{results['skip'][f'mean_{name}_layers_1_to_half']:.3f} / "
                f"{results['skip'][f'mean_{name}_layers_half_to_top']:.3f}",
            )
    if "aux" in histories:
        for split in ("train", "val"):
            run.compare(
                f"aux: mean probe {split} error, layers 1-{args.depth}, at the end",
                "low",
                float(histories["aux"].matrix(f"{split}_error")[1:, -1].mean()),
            )
    animations = {
        f"_{variant}.gif": (
            lambda path, h=history, v=variant: kp.plots.animate_history(
                h, path, "train_error", title=f"{v}: probe train error per layer"
            )
        )
        for variant, history in histories.items()
    }
    run.save(results, figure(histories, args.depth), animations)


if __name__ == "__main__":
    main()
