"""Where the pathologically deep MLP stops training (Alain & Bengio, arXiv 1610.01644 v1
Sec. 3.4: "the maximal depth where things start to break down was depth 64").

The paper's MLP: fully connected layers of 128 units, leaky ReLU, Glorot
initialisation, MNIST, "the usual" SGD. It leaves open the leaky slope, Glorot's
uniform or normal draw, the biases and SGD's learning rate. This trains the
plain network (`pathological.deep_mlp`, the main loss only) at a ladder of depths
for each setting of those choices, with SGD (no momentum) on minibatches of 64,
and measures its main output's error on the training digits (the paper's figures
plot train errors) every quarter of the run, and on held-out digits at the end,
each with its 95% Wilson interval. A run *fails* when its train error at the end
is `--fail-at` (0.5) or more (chance is 0.89); a setting's *breakdown depth* is
the deepest depth of its ladder that still trains (the paper's "maximal depth"),
the next one failing. Failure is taken as monotone in depth: a ladder stops at
its first failure (deeper runs would cost most and fail too).

Four stages, each deciding the next from its runs:

1. `coarse`: every leaky slope of `SLOPES` x learning rate of `LRS` (Glorot
   uniform, biases from 0), depths 8, 16, 32, 64, 128, 500 steps.
2. `choices`: the coarse setting whose breakdown is closest to 64 with one
   choice changed at a time: Glorot normal; no bias; biases from 0.1; learning
   rate x3.
3. `refine`: the (up to) two settings of stages 1-2 whose breakdown is closest to
   64, twice longer (1000 steps), at depths 32, 48, 64, 80, 96, 128.

The chosen setting is the refined one whose breakdown is closest to 64 (ties:
the earlier, i.e. the paper's stated choices first).

4. `long`: the chosen setting at the refined depths from 64 on, trained as long
   as `pathological.py`'s committed run (`--long-steps`, 3000): whether the
   plain network breaks down there too. Every run is written to
`<out>/pathological_depth.runs.json` as it ends; a rerun skips the runs there
and those of an earlier `pathological_depth.json` in `<out>` (an interrupted
sweep resumes, a finished one runs only what it lacks), and the file is removed
once the results are saved.

    python reproductions/pathological_depth.py            # about 30 minutes on 2 busy CPU cores
    python reproductions/pathological_depth.py --quick    # depths 2 and 4, 20 steps: a smoke run
"""

import _common  # noqa: I001  (first: it points Keras at the offline cache)

SLOPES = (0.01, 0.2, 0.5, 0.7, 0.85)
LRS = (0.01, 0.1)
TARGET = 64


def arguments():
    """The command line, built before TensorFlow is imported."""
    parser = _common.parser(__doc__)
    parser.add_argument("--steps", type=int, default=500, help="SGD steps of stages 1-3 (3: x2)")
    parser.add_argument(
        "--long-steps",
        type=int,
        default=3000,
        help="SGD steps of stage 4 (pathological.py's committed run: 3000)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--fail-at", type=float, default=0.5, help="a run fails at this train error or more"
    )
    return parser


if __name__ == "__main__":
    arguments().parse_args()  # --help and usage errors before TensorFlow is imported (below)

import json  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from pathological import StopAt, deep_mlp, mistakes, mnist_flat  # noqa: E402

import keras_probes as kp  # noqa: E402

PAPER = {"init": "glorot_uniform", "bias": 0.0}


def label(setting: dict) -> str:
    """A setting in words: `slope 0.7, glorot_uniform, bias 0, lr 0.1`."""
    bias = "no bias" if setting["bias"] is None else f"bias {setting['bias']:g}"
    return f"slope {setting['slope']:g}, {setting['init']}, {bias}, lr {setting['lr']:g}"


def key(setting: dict, depth: int, steps: int) -> str:
    return f"{label(setting)}, depth {depth}, {steps} steps"


class Curve(keras.callbacks.Callback):
    """The main output's train error at the steps of `at`."""

    def __init__(self, x, y, at):
        super().__init__()
        self.x, self.y, self.at = x, y, set(at)
        self.steps, self.errors = [], []

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step in self.at and step not in self.steps:
            self.steps.append(step)
            self.errors.append(float(mistakes(self.model, self.x, self.y).mean()))


def train(setting, depth, steps, data, args) -> dict:
    """One plain network trained with SGD: its train error curve and held-out error."""
    (x, y), (xv, yv) = data
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    model = deep_mlp(
        "plain",
        depth,
        args.seed,
        slope=setting["slope"],
        init=setting["init"],
        bias=setting["bias"],
    )
    model.compile(
        optimizer=keras.optimizers.SGD(setting["lr"]),
        loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)],
    )
    at = [steps * k // 4 for k in (1, 2, 3)]
    curve = Curve(x, y, at)
    steps_per_epoch = -(-len(y) // args.batch_size)
    model.fit(
        x,
        [y],
        batch_size=args.batch_size,
        epochs=-(-steps // steps_per_epoch),
        callbacks=[curve, StopAt(steps)],
        verbose=0,
    )
    wrong = {"train": mistakes(model, x, y), "val": mistakes(model, xv, yv)}
    if not np.all(np.isfinite(model.get_weights()[-1])):  # diverged: chance
        wrong = {split: np.ones(len(w), bool) for split, w in wrong.items()}
    result = {**setting, "depth": depth, "steps": steps}
    for split, w in wrong.items():
        result[f"{split}_error"] = float(w.mean())
        result[f"{split}_error_interval"] = list(kp.uncertainty.rate_interval(w))
    result["curve"] = {
        "steps": [*curve.steps, steps],
        "train_error": [*curve.errors, result["train_error"]],
    }
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def breakdown(runs: list[dict], fail_at: float) -> dict:
    """A ladder's figures: `deepest_trained` (the breakdown depth) and `first_failing`
    (None: none)."""
    runs = sorted(runs, key=lambda r: r["depth"])
    failed = [r["depth"] for r in runs if r["train_error"] >= fail_at]
    first = failed[0] if failed else None
    trained = [r["depth"] for r in runs if first is None or r["depth"] < first]
    return {"deepest_trained": max(trained, default=None), "first_failing": first}


def distance(figures: dict) -> float:
    """How far a ladder's deepest trained depth lies from 64, in octaves (a ladder that
    never fails: as if it failed just past its last depth; none trained: infinite)."""
    if figures["deepest_trained"] is None:
        return float("inf")
    depth = figures["deepest_trained"] * (2 if figures["first_failing"] is None else 1)
    return abs(float(np.log2(depth / TARGET)))


class Sweep:
    """The runs done, kept in `<out>/pathological_depth.runs.json` as each one ends."""

    def __init__(self, path, data, args, saved=None):
        self.path, self.data, self.args = path, data, args
        self.runs = {}
        if saved is not None and saved.exists():  # a finished sweep's runs, kept in its results
            self.runs.update(json.loads(saved.read_text())["results"]["runs"])
        if path.exists():
            self.runs.update(json.loads(path.read_text()))
        if self.runs:
            print(f"resuming: {len(self.runs)} runs done in {path}", flush=True)

    def ladder(self, stage, setting, depths, steps) -> dict:
        """Trains `setting` at `depths` in order, up to the first failure; its figures."""
        runs = []
        for depth in depths:
            name = key(setting, depth, steps)
            if name not in self.runs:
                self.runs[name] = {
                    "stage": stage,
                    **train(setting, depth, steps, self.data, self.args),
                }
                partial = self.path.with_suffix(".partial")
                partial.write_text(json.dumps(self.runs, indent=1) + "\n")
                partial.replace(self.path)
            run = self.runs[name]
            runs.append(run)
            print(
                f"{stage}: {name}: train error {run['train_error']:.3f}, "
                f"held out {run['val_error']:.3f} ({run['seconds']:.0f} s)",
                flush=True,
            )
            if run["train_error"] >= self.args.fail_at:
                break
        return {
            "stage": stage,
            "setting": setting,
            "label": label(setting),
            "steps": steps,
            "depths": [r["depth"] for r in runs],
            "runs": [key(setting, r["depth"], steps) for r in runs],
            **breakdown(runs, self.args.fail_at),
        }


def closest(ladders: list[dict], n: int) -> list[dict]:
    """The `n` ladders whose breakdown depth (deepest trained) is closest to 64 (ties: the
    earlier)."""
    order = sorted(range(len(ladders)), key=lambda i: (distance(ladders[i]), i))
    return [ladders[i] for i in order[:n]]


def main(argv=None):
    args = arguments().parse_args(argv)
    slopes, lrs, depths, refined = SLOPES, LRS, (8, 16, 32, 64, 128), (32, 48, 64, 80, 96, 128)
    steps = args.steps
    if args.quick:
        slopes, lrs, depths, refined, steps = (0.2, 0.7), (0.1,), (2, 4), (3, 4), 20
        args.long_steps = 60
    run = _common.Run("pathological_depth", args)
    *data, source = mnist_flat(args.seed, args.quick)
    run.note(f"data: {source}")
    run.note(
        f"the plain network (main loss only), SGD without momentum, minibatches of "
        f"{args.batch_size}; a run fails at a train error of {args.fail_at:g} or more"
    )
    sweep = Sweep(run.path(".runs.json"), data, args, saved=run.path(".json"))

    coarse = [
        sweep.ladder("coarse", {"slope": s, **PAPER, "lr": lr}, depths, steps)
        for s in slopes
        for lr in lrs
    ]
    base = closest(coarse, 1)[0]["setting"]
    changes = [
        {"init": "glorot_normal"},
        {"bias": None},
        {"bias": 0.1},
        {"lr": round(base["lr"] * 3, 6)},
    ]
    choices = [sweep.ladder("choices", {**base, **c}, depths, steps) for c in changes]
    refine = [
        sweep.ladder("refine", ladder["setting"], refined, 2 * steps)
        for ladder in closest(coarse + choices, 2)
    ]
    chosen = closest(refine, 1)[0]
    long = [sweep.ladder("long", chosen["setting"], refined[-4:], args.long_steps)]
    ladders = coarse + choices + refine + long

    for ladder in ladders:
        figures = [sweep.runs[name] for name in ladder["runs"]]
        run.compare(
            f"{ladder['stage']}: {ladder['label']}, {ladder['steps']} steps: train error at "
            + ", ".join(str(r["depth"]) for r in figures),
            "-",
            " / ".join(f"{r['train_error']:.3f}" for r in figures),
        )
    run.compare(
        f"chosen: {chosen['label']}: breakdown depth (deepest trained) / first failing",
        f"{TARGET} (the maximal depth before things break down)",
        f"{chosen['deepest_trained']} / {chosen['first_failing']}",
    )
    for name in chosen["runs"]:
        r = sweep.runs[name]
        run.compare(
            f"chosen, depth {r['depth']}: train / held-out error [95%]",
            "-",
            " / ".join(
                _common.with_interval(r[f"{s}_error"], r[f"{s}_error_interval"])
                for s in ("train", "val")
            ),
        )
    results = {
        "target": TARGET,
        "fail_at": args.fail_at,
        "ladders": ladders,
        "chosen": chosen,
        "runs": sweep.runs,
    }
    run.save(results, figure=plot(ladders, sweep.runs, chosen, args.fail_at))
    sweep.path.unlink(missing_ok=True)


def plot(ladders, runs, chosen, fail_at):
    stages = ["coarse", "choices", "refine", "long"]
    figure, axes = plt.subplots(1, 4, figsize=(24, 5), sharey=True)
    for ax, stage in zip(axes, stages, strict=True):
        for ladder in (lad for lad in ladders if lad["stage"] == stage):
            figures = [runs[name] for name in ladder["runs"]]
            depths = [r["depth"] for r in figures]
            errors = np.array([r["train_error"] for r in figures])
            bounds = np.array([r["train_error_interval"] for r in figures])
            width = 2.5 if ladder is chosen else 1.2
            (line,) = ax.plot(depths, errors, "o-", lw=width, label=ladder["label"])
            ax.fill_between(depths, bounds[:, 0], bounds[:, 1], color=line.get_color(), alpha=0.2)
            held_out = [r["val_error"] for r in figures]
            ax.plot(depths, held_out, "x:", color=line.get_color(), lw=0.8)
        ax.axhline(fail_at, color="grey", ls="--", lw=0.8)
        ax.axvline(TARGET, color="grey", ls=":", lw=0.8)
        steps = next((lad["steps"] for lad in ladders if lad["stage"] == stage), 0)
        ax.set(
            title=f"{stage} ({steps} SGD steps)",
            xscale="log",
            xlabel="depth (layers)",
            ylim=(0, 1),
        )
        ax.set_xticks(sorted({r["depth"] for r in runs.values()}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("main output's error (o: train [95%], x: held out)")
    figure.suptitle(
        f"Plain MLP on MNIST: where training breaks down (bold: chosen, {chosen['label']})"
    )
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    main()
