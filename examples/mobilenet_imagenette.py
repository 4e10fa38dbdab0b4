"""Linear probes on a pretrained ImageNet MobileNet, measured on Imagenette.

Fits a linear classifier probe (Alain & Bengio, arXiv 1610.01644, Sec. 4) at
the stem and at each of the 13 depthwise-separable blocks of
`keras.applications.MobileNet(alpha=0.75, weights="imagenet")` (the
`points="mobilenet"` preset; feature maps are average-pooled per channel, as
the paper does for ResNet-50). The probes learn the 10 Imagenette classes on
the Imagenette `train` images, each one early-stopped on its own loss on 20% of
them held out (`kp.callbacks.BestProbeWeights`), and are evaluated on the
Imagenette `val` images. The error should fall almost steadily with depth.

As a reference, the pretrained network's own classifier is scored on the same
images and the same 10 classes: its 1000-way scores at the 10 Imagenette
classes' ImageNet indices, argmax among those 10. It is drawn as a dashed line.

Every val error comes with its 95% interval (Wilson's, from each val image's
outcome, which the report keeps; the monotonicity with its bootstrap
interval), adjacent blocks are compared by McNemar's exact test on the same
images (Holm-adjusted over the 13 pairs), and so is the last probe against
the pretrained classifier.

Offline, the weights come from the shared data folder (see `_offline.py`) and
the images from its 224x224 Imagenette subset (300 train and 100 val images per
class): `kp.datasets.imagenette_dir()`.

Run it from the repository root:

```
python examples/mobilenet_imagenette.py                 # 5 to 40 minutes on 2 CPU cores
python examples/mobilenet_imagenette.py --quick         # a smoke run: 20 images per class
python examples/mobilenet_imagenette.py --probe-epochs 20 --out /tmp/probes
```

It prints the probe errors per block with their intervals and the paired tests,
and writes `mobilenet_imagenette_table.txt`,
`mobilenet_imagenette_report.json` and `mobilenet_imagenette_errors.png` to
`--out`: by default `examples/out/`, and `examples/out/variants/quick/` for `--quick`
(other options: see `--help`).
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
    parser.add_argument("--probe-epochs", type=int, default=15, help="most epochs per probe")
    # The large early steps make the held-out loss noisy in the first epochs: a short
    # patience would stop probes in that noise, before the step size has decayed.
    parser.add_argument("--patience", type=int, default=10, help="early-stopping patience")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--held-out", type=float, default=0.2, help="fraction of train for early stopping"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 20 train and 10 val images per class, 1 probe epoch",
    )
    return parser


if __name__ == "__main__":
    arguments().parse_args()  # --help and usage errors before TensorFlow is imported (below)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # fewer TensorFlow C++ start-up logs

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_probes as kp  # noqa: E402

IMAGE_SIZE = (224, 224)
#: The confidence level of every interval, and 1 - the level of every test.
LEVEL = 0.95


class EpochLog(keras.callbacks.Callback):
    """Prints one short line per probe epoch (Keras' own line lists 168 metrics).

    Args:
        stopper: the `BestProbeWeights` callback, to count the probes still training.
    """

    def __init__(self, stopper: kp.callbacks.BestProbeWeights):
        super().__init__()
        self.stopper = stopper

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        errors = [1 - logs[f"val_{p}/accuracy"] for p in self.model.points]
        training = sum(e is None for e in self.stopper.stopped_epoch_.values())
        print(
            f"  epoch {epoch + 1}: {time.perf_counter() - self._start:.0f} s, held-out error "
            f"{errors[0]:.3f} ({self.model.points[0]}) ... {errors[-1]:.3f} "
            f"({self.model.points[-1]}), {training} of {len(errors)} probes still training"
        )


def load_imagenette(train_dir: Path, val_dir: Path, batch_size: int, held_out: float, seed: int):
    """The train images, split into probe training and early stopping, and the val images.

    Returns:
        `(train, stop, val, class_names)`: batched datasets of
        `(preprocessed images, int labels)`, labels 0..9 in sorted-wnid order.
    """
    common = dict(image_size=IMAGE_SIZE, batch_size=batch_size, label_mode="int")
    train, stop = keras.utils.image_dataset_from_directory(
        train_dir, validation_split=held_out, subset="both", seed=seed, **common
    )
    val = keras.utils.image_dataset_from_directory(val_dir, shuffle=False, **common)
    class_names = train.class_names
    if class_names != sorted(kp.datasets.IMAGENETTE_CLASSES) or val.class_names != class_names:
        raise ValueError(f"Unexpected Imagenette class folders in {train_dir}: {class_names}")

    def preprocess(x, y):  # pixels 0..255 -> [-1, 1], as MobileNet was trained
        return keras.applications.mobilenet.preprocess_input(x), y

    train, stop, val = (
        ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
        for ds in (train, stop, val)
    )
    return train, stop, val, class_names


def pretrained_mistakes(base: keras.Model, val, indices) -> tuple[np.ndarray, np.ndarray]:
    """The pretrained classifier's mistake on each val image, in the dataset's order.

    Its scores at the dataset's classes' ImageNet `indices`, argmax among
    those (as `kp.models.classifier_errors`), and its 1000-way argmax. Kept
    per image so that its error gets an interval and the probes a paired test
    against it.

    Returns:
        `(among the classes, 1000-way)`, bool `(n,)` each.
    """
    indices = np.asarray(indices)
    infer = tf.function(lambda x: base(x, training=False))
    among, full = [], []
    for x, y in val:
        scores, y = infer(x).numpy(), y.numpy()
        among.append(np.argmax(scores[:, indices], axis=1) != y)
        full.append(np.argmax(scores, axis=1) != indices[y])
    return np.concatenate(among), np.concatenate(full)


def interval_text(mistakes: np.ndarray) -> str:
    """`"0.0200 [0.0130, 0.0307]"`: an error rate and its Wilson interval."""
    low, high = kp.uncertainty.rate_interval(mistakes, level=LEVEL)
    return f"{mistakes.mean():.4f} [{low:.4f}, {high:.4f}]"


def tested(comparison: kp.uncertainty.Comparison) -> str:
    """A comparison in one line, with its verdict."""
    return f"{comparison}: {'significant' if comparison.significant() else 'not significant'}"


def main(argv=None):
    args = arguments().parse_args(argv)
    if args.quick:
        args.probe_epochs = 1
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)

    root = kp.datasets.imagenette_dir()
    train_dir, val_dir = root / "train", root / "val"
    if args.quick:  # links to the first 20 train and 10 val images of each class
        train_dir = kp.datasets.balanced_subset(train_dir, 20)
        val_dir = kp.datasets.balanced_subset(val_dir, 10)
    print(f"Imagenette: {root}{' (quick: a subset)' if args.quick else ''}")
    train, stop, val, class_names = load_imagenette(
        train_dir, val_dir, args.batch_size, args.held_out, args.seed
    )

    # The real loading call: it downloads when online; offline the file is in the
    # shared Keras cache that _offline.py points KERAS_HOME at.
    base = keras.applications.MobileNet(alpha=0.75, weights="imagenet")
    probed = kp.ProbedModel(base, points="mobilenet", num_classes=10)
    # Pooled ReLU6 features are all positive and strongly correlated: an ill-conditioned
    # problem for minibatch training. With the paper's RMSprop(1e-3) the shallow and middle
    # probes are still far from their optimum after 10 epochs; Adam with a large, cosine-
    # decayed step gets much closer in the few epochs that fit in minutes here (each epoch
    # re-runs MobileNet).
    schedule = keras.optimizers.schedules.CosineDecay(
        2e-2, decay_steps=args.probe_epochs * int(train.cardinality())
    )
    probed.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule))
    print(
        f"Training {len(probed.points)} probes on {base.name}, at most {args.probe_epochs} epoch(s)"
    )
    # Each epoch runs MobileNet once over the train images: the probes share that
    # pass, and a probe that stopped early rides along until all have stopped.
    stopper = kp.callbacks.BestProbeWeights(patience=args.patience)
    fit_start = time.perf_counter()
    probed.fit(
        train,
        validation_data=stop,
        epochs=args.probe_epochs,
        callbacks=[stopper, EpochLog(stopper)],
        shuffle=False,  # `train` reshuffles itself every epoch; Keras warns otherwise
        verbose=0,
    )
    best = [stopper.best_epoch_[p] + 1 for p in probed.points]
    print(f"Probes trained in {time.perf_counter() - fit_start:.0f} s; best epochs: {best}")

    # `val` is not shuffled: the outcomes and the pretrained mistakes below are in one order.
    report = probed.evaluate_probes(val, split="val", verbose=0)
    # The pretrained classifier's own mistakes on the same task: its ImageNet scores at the
    # 10 Imagenette classes only (10-way), and plain ImageNet top-1 (1000-way).
    among, full = pretrained_mistakes(base, val, kp.datasets.imagenet_indices(class_names))
    table = report.table(intervals=True, level=LEVEL)
    n_val = len(among)
    last = probed.points[-1]
    paired = kp.uncertainty.paired_rates(
        report.outcomes["val"][last].values("error"), among, level=LEVEL
    )
    paired = dataclasses.replace(paired, a=last, b="pretrained", split="val", metric="error")
    adjacent = report.compare_adjacent("val", level=LEVEL)
    reference = "\n".join(
        [
            f"Pretrained MobileNet's own classifier on the same {n_val} val images: error "
            f"{interval_text(among)} among the 10 Imagenette classes (1000-way ImageNet top-1 "
            f"error {interval_text(full)}).",
            f"The last probe against it, on the same images: {tested(paired)}",
            f"Adjacent blocks whose val errors differ (McNemar exact, Holm over "
            f"{len(adjacent)} pairs): {sum(c.significant() for c in adjacent)} of "
            f"{len(adjacent)}",
            *(f"  {tested(c)}" for c in adjacent),
        ]
    )
    print(
        f"\nProbe loss and error per point on Imagenette val ({n_val} images), "
        f"[{LEVEL:.0%} interval]:\n"
    )
    print(table)
    print(reference)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mobilenet_imagenette_table.txt").write_text(f"{table}\n{reference}\n")
    report.to_json(args.out / "mobilenet_imagenette_report.json")
    figure = kp.plots.plot_errors(
        report,
        references={
            f"pretrained MobileNet's own classifier (10-way), {interval_text(among)}": float(
                among.mean()
            )
        },
        title="Linear probes on MobileNet (alpha 0.75, ImageNet weights), Imagenette val",
    )
    figure.savefig(args.out / "mobilenet_imagenette_errors.png", dpi=120)
    print(f"\nWrote mobilenet_imagenette_{{errors.png,report.json,table.txt}} to {args.out}")
    print(f"Total time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
