"""The `keras-probes` command line: a thin layer over the public API.

    keras-probes cache MODEL --data DATA --out CACHE [--split train] [--points ...]
    keras-probes fit MODEL --cache CACHE [--solver lbfgs] [--l2 1e-4] [--report report.json]

MODEL is a `.keras` file: a saved `kp.ProbedModel`, or any Keras model to be
probed (then `--points` chooses where). DATA is an image folder (one
sub-folder per class) or a TFDS dataset name. Errors are one line on stderr
and exit status 2; `--help` on each command tells the rest.
"""

import argparse
import os
import re
import sys
from pathlib import Path

__all__ = ["main"]


def _parser():
    parser = argparse.ArgumentParser(
        prog="keras-probes",
        description="Linear classifier probes for any Keras model (Alain & Bengio, 1610.01644).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cache = commands.add_parser(
        "cache",
        help="extract every probe point's features of a dataset split to a feature cache",
        description=(
            "Runs the model once over a dataset split and writes each probe point's "
            "(reduced) features to CACHE, checksummed and resumable: run the same command "
            "again after an interruption and it resumes from the first missing shard."
        ),
    )
    cache.add_argument("model", help="a .keras file: a saved ProbedModel or any Keras model")
    cache.add_argument(
        "--data",
        required=True,
        help="an image folder (one sub-folder of images per class) or a TFDS dataset name",
    )
    cache.add_argument("--out", required=True, help="the cache directory (splits accumulate)")
    cache.add_argument(
        "--split", default="train", help="split name in the cache (default: %(default)s)"
    )
    cache.add_argument(
        "--tfds-split",
        help="the TFDS split to read, e.g. 'train[:10%%]' (default: the value of --split)",
    )
    cache.add_argument("--data-dir", help="TFDS data directory (default: TFDS's own)")
    cache.add_argument(
        "--points",
        nargs="+",
        default=["all"],
        help="for a plain model: a preset (resnet50, inception_v3, mobilenet, vgg16), 'all', "
        "or layer names (default: all)",
    )
    cache.add_argument(
        "--reducers",
        default="auto",
        choices=["auto", "gap", "flatten"],
        help="for a plain model: how each point becomes a vector (default: %(default)s)",
    )
    cache.add_argument(
        "--num-classes",
        type=int,
        help="for a plain model: classes of the probes (default: those of the data)",
    )
    cache.add_argument(
        "--preprocess",
        default="none",
        choices=["none", "tf", "caffe", "torch"],
        help="image preprocessing of keras.applications: 'tf' for MobileNet/Inception, "
        "'caffe' for ResNet50/VGG, 'torch' for DenseNet (default: %(default)s, pixels 0..255)",
    )
    cache.add_argument("--batch-size", type=int, default=64, help="default: %(default)s")
    cache.add_argument("--shard-size", type=int, help="examples per shard (default: about 4096)")
    cache.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    cache.add_argument(
        "--overwrite", action="store_true", help="rewrite the split, e.g. after its data changed"
    )

    fit = commands.add_parser(
        "fit",
        help="train the probes on a feature cache and report every split",
        description=(
            "Trains every probe on the cache's train split (L-BFGS to the optimum, or the "
            "paper's minibatch RMSprop/Adam with early stopping on the validation split), "
            "prints the report and optionally saves it and the trained probed model."
        ),
    )
    fit.add_argument("model", help="the .keras file the cache was written from")
    fit.add_argument("--cache", required=True, help="the cache directory")
    fit.add_argument("--solver", default="lbfgs", choices=["lbfgs", "rmsprop", "adam"])
    fit.add_argument("--l2", type=float, default=1e-4, help="L2 penalty (default: %(default)s)")
    fit.add_argument("--train", default="train", help="split to train on (default: %(default)s)")
    fit.add_argument(
        "--validation",
        default="auto",
        help="split for early stopping, or 'none' (default: val or validation if any)",
    )
    fit.add_argument("--max-iter", type=int, default=1000, help="L-BFGS iterations")
    fit.add_argument("--epochs", type=int, default=50, help="minibatch epochs")
    fit.add_argument("--patience", type=int, default=3, help="minibatch early-stopping patience")
    fit.add_argument("--learning-rate", type=float, default=1e-3, help="minibatch learning rate")
    fit.add_argument("--report", help="write the report here (.json or .csv)")
    fit.add_argument("--save", help="save the probed model with its trained probes (.keras)")
    for command in (cache, fit):
        command.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _load_model(path):
    import keras

    if not Path(path).is_file():
        raise FileNotFoundError(f"No model file at {path}.")
    return keras.models.load_model(path, compile=False)


def _probed(model, points, reducers, num_classes):
    """`model` if it is a saved `ProbedModel`, else a `ProbedModel` probing it."""
    import keras_probes as kp

    if isinstance(model, kp.ProbedModel):
        return model
    if num_classes is None:
        raise ValueError("The model file holds a plain model: pass --num-classes.")
    if len(points) == 1 and points[0] in ("all", *kp.points.PRESETS):
        points = points[0]
    return kp.ProbedModel(model, points=points, num_classes=num_classes, reducers=reducers)


def _images(args, model_input_shape):
    import keras_probes as kp

    height, width, channels = model_input_shape[1:4]
    if None in (height, width, channels):
        raise ValueError(
            f"The model takes images of shape {model_input_shape}; the command line needs a "
            "fixed height, width and channels to resize the images."
        )
    if Path(args.data).is_dir():
        color = "rgb" if channels == 3 else "grayscale"
        dataset, names = kp.datasets.image_folder(
            args.data, (height, width), args.batch_size, args.preprocess, color
        )
        return dataset, len(names)
    return kp.datasets.tfds_images(
        args.data,
        args.tfds_split or args.split,
        (height, width),
        args.batch_size,
        args.preprocess,
        args.data_dir,
        channels,
    )


def _cache(args):
    import keras_probes as kp

    model = _load_model(args.model)
    base = model.base if isinstance(model, kp.ProbedModel) else model
    dataset, data_classes = _images(args, tuple(base.inputs[0].shape))
    probed = _probed(model, args.points, args.reducers, args.num_classes or data_classes)
    cache = kp.FeatureCache.write(
        probed,
        dataset,
        args.out,
        split=args.split,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        dtype=args.dtype,
        overwrite=args.overwrite,
        verbose=0 if args.quiet else 1,
    )
    print(
        f"{args.out}: split {args.split!r}, {cache.num_examples(args.split)} examples, "
        f"{len(cache.points)} points ({', '.join(cache.points)})"
    )


def _fit(args):
    import keras_probes as kp

    cache = kp.FeatureCache.open(args.cache)
    probed = _probed(_load_model(args.model), cache.points, cache.reducers, cache.num_classes)
    report = kp.fit_probes(
        probed,
        cache,
        solver=args.solver,
        l2=args.l2,
        train=args.train,
        validation=None if args.validation == "none" else args.validation,
        max_iter=args.max_iter,
        epochs=args.epochs,
        patience=args.patience,
        learning_rate=args.learning_rate,
        verbose=0 if args.quiet else 1,
    )
    print(report.table(metrics=["loss", "error", "grad_norm"]))
    if args.report:
        (report.to_csv if args.report.endswith(".csv") else report.to_json)(args.report)
        print(f"report: {args.report}")
    if args.save:
        probed.save(args.save)
        print(f"probed model: {args.save}")


def main(argv=None) -> int:
    """Runs the command line; returns the exit status (0, or 2 on an error)."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        {"cache": _cache, "fit": _fit}[args.command](args)
    except (ValueError, TypeError, OSError, tf.errors.InvalidArgumentError) as error:
        print(f"keras-probes {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    return 0


def _one_line(error):
    message = getattr(error, "message", None) or str(error)
    # A check failing inside the input pipeline: its own words, not TF's frame.
    found = re.search(r"assertion failed: \[(.*?)\]", message)
    return " ".join((found.group(1) if found else message).split())


if __name__ == "__main__":
    sys.exit(main())
