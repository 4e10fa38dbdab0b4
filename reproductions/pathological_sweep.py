"""A short SGD learning-rate sweep for the pathologically deep MLPs (Alain & Bengio v1
Sec. 3.4, v4 Sec. 5.1) at `pathological.deep_mlp`'s own choices: LeakyReLU(0.2),
Glorot uniform, biases from 0 (the model before `pathological_depth.py`).

The paper trains its 128-layer MLPs with "the usual SGD" and does not give the
learning rate. This trains each variant (`plain`, `aux`, `skip`, built by
`pathological.deep_mlp`) with SGD at every learning rate of `LRS` and momentum of
`MOMENTA` for `--steps` minibatches of 64, without probes, and measures the main
output's error on the training digits every `--every` steps (a diverged run
counts as chance). The best setting per variant is the one of least final train
error. At LeakyReLU(0.2) none moves a 128-layer variant off chance: the plain
network breaks down by depth 16-32 there (`pathological_depth.py`), which chose
the setting `pathological.py` now trains with (LeakyReLU(0.85), SGD(0.01)).

`--optimizer adam --lrs 0.001` trains with Adam instead, at no probe's cost:
`seeds.py` uses it to compare the variants' main outputs over seeds.

    python reproductions/pathological_sweep.py            # about 45 minutes on 2 CPU cores
    python reproductions/pathological_sweep.py --quick    # a smoke run
    python reproductions/pathological_sweep.py --optimizer adam --lrs 0.001 --steps 2000 \
        --variants plain aux
"""

import _common  # noqa: I001  (first: it points Keras at the offline cache)

LRS = (0.003, 0.01, 0.03, 0.1, 0.3)
MOMENTA = (0.0, 0.9)
# pathological.VARIANTS, named here because the command line is parsed before
# pathological.py (and TensorFlow) is imported.
VARIANTS = ("plain", "aux", "skip")


def arguments():
    """The command line, built before TensorFlow is imported."""
    parser = _common.parser(__doc__)
    parser.add_argument("--depth", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    parser.add_argument("--lrs", type=float, nargs="+", default=LRS, help="learning rates")
    parser.add_argument(
        "--momenta", type=float, nargs="+", default=MOMENTA, help="SGD's momenta (Adam: ignored)"
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    return parser


if __name__ == "__main__":
    arguments().parse_args()  # --help and usage errors before TensorFlow is imported (below)

import time  # noqa: E402

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from pathological import StopAt, deep_mlp, main_error, mnist_flat, optimizer  # noqa: E402


class ErrorCurve(keras.callbacks.Callback):
    """The main output's train error every `every` steps (chance once the loss is not finite)."""

    def __init__(self, x, y, every):
        super().__init__()
        self.x, self.y, self.every = x, y, every
        self.steps, self.errors = [], []

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every == 0:
            diverged = not np.isfinite((logs or {}).get("loss", 0.0))
            self.steps.append(step)
            self.errors.append(0.9 if diverged else main_error(self.model, self.x, self.y))
            if diverged:
                self.model.stop_training = True


def main(argv=None):
    args = arguments().parse_args(argv)
    if args.optimizer == "adam":
        args.momenta = [0.0]
    if args.quick:
        args.depth, args.steps, args.every = 16, 20, 10
        args.lrs = (0.01, 0.1) if args.lrs == LRS else args.lrs[:2]
        args.momenta = args.momenta[-1:]
    name = {"sgd": "SGD", "adam": "Adam"}[args.optimizer]
    run = _common.Run("pathological_sweep", args)
    (x, y), _, source = mnist_flat(args.seed, args.quick)
    run.note(f"data: {source}")
    run.note(f"{name}, {args.steps} minibatches of {args.batch_size}, no probes")
    curves, best = {}, {}
    for variant in args.variants:
        curves[variant] = {}
        for lr in args.lrs:
            for momentum in args.momenta:
                start = time.perf_counter()
                keras.utils.set_random_seed(args.seed)
                model = deep_mlp(variant, args.depth, args.seed, every=16 if not args.quick else 4)
                outputs = len(model.outputs)
                args.lr, args.momentum = lr, momentum  # the setting `optimizer` reads
                model.compile(
                    optimizer=optimizer(args),
                    loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * outputs,
                )
                curve = ErrorCurve(x, y, args.every)
                steps_per_epoch = -(-len(y) // args.batch_size)
                model.fit(
                    x,
                    [y] * outputs,
                    batch_size=args.batch_size,
                    epochs=-(-args.steps // steps_per_epoch),
                    callbacks=[curve, StopAt(args.steps)],
                    verbose=0,
                )
                key = f"lr={lr:g}, momentum={momentum:g}"
                curves[variant][key] = {
                    "lr": lr,
                    "momentum": momentum,
                    "steps": curve.steps,
                    "train_error": curve.errors,
                }
                print(
                    f"{variant}, {key}: main output's train error {curve.errors[-1]:.3f} "
                    f"({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
        key = min(curves[variant], key=lambda k, v=variant: curves[v][k]["train_error"][-1])
        best[variant] = {**curves[variant][key], "setting": key}
        run.compare(
            f"{variant}: best {name} setting, train error after {args.steps} steps",
            "-",
            f"{key}: {best[variant]['train_error'][-1]:.3f}",
        )
    run.save(
        {
            "optimizer": args.optimizer,
            "lrs": list(args.lrs),
            "momenta": list(args.momenta),
            "curves": curves,
            "best": best,
        },
        figure=plot(curves, name),
    )


def plot(curves, optimizer_name):
    figure, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4), sharey=True)
    for ax, (variant, runs) in zip(np.atleast_1d(axes), curves.items(), strict=True):
        for key, curve in runs.items():
            line = "-" if curve["momentum"] else ":"
            ax.plot(curve["steps"], curve["train_error"], line, label=key)
        ax.set(
            title=f"{variant}: main output, train error",
            xlabel=f"{optimizer_name} step",
            ylim=(0, 1),
        )
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("error")
    np.atleast_1d(axes)[-1].legend(fontsize=7)
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    main()
