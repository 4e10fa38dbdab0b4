"""The protocol both ImageNet reproductions share (Alain & Bengio, Sec. 4.1 and 4.2).

A pretrained `keras.applications` network is probed at its preset points: the
features of every point over the train and val images are extracted once into a
`kp.FeatureCache` (resumable, re-used by a second run), then each probe is fitted
to its convex optimum by L-BFGS, its penalty chosen per point by 5-fold
cross-validation on the train images (`kp.solvers.LBFGSProbeCV(cv=5)`; `--l2`
fixes one instead). Not on val: it is the split reported, and the only
held-out one, so a penalty chosen there would bias the errors low, and
halving it would widen every interval by about 1.4x. The probes' val errors
are set beside the pretrained network's own classifier on the same images and
classes: its 1000-way ImageNet scores restricted to the dataset's classes,
argmax among those.

Every held-out figure comes with its 95% interval, from each val image's
outcome that the report keeps (`report.interval`: Wilson's score interval for
error rates, a percentile bootstrap over images for losses); the monotonicity
with its bootstrap interval; each point against the next deeper one by
McNemar's exact test, Holm-adjusted over all the pairs
(`report.compare_adjacent`); and the last probe against the pretrained
classifier on the same images by McNemar's exact test
(`kp.uncertainty.paired_rates`).

`resnet50.py` and `inception_v3.py` differ only in the network, the reducer
(average pooling, or 1000 fixed random features) and what they compare with the
paper; each parses its command line with `_common.imagenet_parser` and passes
it and an `Experiment` to `main`. Import `_common` before this module: it points
Keras at the shared weight files before Keras is imported.
"""

import argparse
import dataclasses
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_probes as kp  # noqa: E402

__all__ = ["MODELS", "Experiment", "ModelSpec", "load_base", "main"]

#: Images per class of the `--quick` smoke run: (train, val).
QUICK_PER_CLASS = (4, 2)
#: Examples per cache shard (about): an interrupted extraction loses at most this many.
SHARD_EXAMPLES = 256
#: The confidence level of every interval, and 1 - the level of every test.
LEVEL = 0.95
#: The name of the pretrained network's own classifier in paired comparisons.
PRETRAINED = "pretrained classifier"
#: Folds of train that `--l2 auto` chooses each probe's penalty on.
CV_FOLDS = 5


@dataclass(frozen=True)
class ModelSpec:
    """A `keras.applications` network and how it is probed and fed.

    Args:
        label: its name in print, e.g. `"ResNet-50"`.
        call: the Keras call that builds it, as text (`{weights}` filled in).
        build: `weights -> keras.Model`, the real `keras.applications` call.
        preset: the probe points (a `kp.points` preset), which also say how the
            network is fed: `preprocess` and `image_size` are the preset's.
        weight_file: the ImageNet weight file Keras looks for in `$KERAS_HOME/models/`.
    """

    label: str
    call: str
    build: Callable[[str | None], keras.Model]
    preset: str
    weight_file: str

    @property
    def preprocess(self) -> str:
        """The `keras.applications` preprocessing mode of the preset's family."""
        return kp.points.PRESETS[self.preset].preprocess

    @property
    def image_size(self) -> tuple[int, int]:
        """The input `(height, width)` of the preset's family."""
        return kp.points.PRESETS[self.preset].image_size


MODELS = {
    "resnet50": ModelSpec(
        "ResNet-50",
        "keras.applications.ResNet50(weights={weights})",
        lambda weights: keras.applications.ResNet50(weights=weights),
        "resnet50",
        # keras/src/applications/resnet.py: f"{weights_name}_weights_tf_dim_ordering_tf_kernels.h5"
        "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
    ),
    "inception_v3": ModelSpec(
        "Inception v3",
        "keras.applications.InceptionV3(weights={weights})",
        lambda weights: keras.applications.InceptionV3(weights=weights),
        "inception_v3",
        "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
    ),
    "mobilenet": ModelSpec(
        "MobileNet (alpha 0.75)",
        "keras.applications.MobileNet(alpha=0.75, weights={weights})",
        lambda weights: keras.applications.MobileNet(alpha=0.75, weights=weights),
        "mobilenet",
        "mobilenet_7_5_224_tf.h5",
    ),
}


@dataclass(frozen=True)
class Experiment:
    """What a reproduction script adds to the shared protocol.

    Args:
        name: the script's name, also of its results files.
        section: where the paper describes it, e.g. `"Sec. 4.1"`.
        model: the paper's network, a key of `MODELS`.
        reducer: `"gap"` (average pooling) or `"random"` (`kp.RandomSubset`).
        compare: `(run, results)`: adds the paper-vs-ours rows.
        figure: `(report, results) -> Figure`.
        notes: `results -> [str]`: the experiment's own notes.
    """

    name: str
    section: str
    model: str
    reducer: str
    compare: Callable
    figure: Callable
    notes: Callable = lambda results: []
    random_features: int = 1000


# -- the network ---------------------------------------------------------------


def weights_folder() -> Path:
    """Where `keras.applications` looks for weight files: `$KERAS_HOME/models`, resolved."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return (Path(home) / "models").resolve()


def load_base(model: str, weights: str, script: str) -> keras.Model:
    """Builds the network with the real `keras.applications` call (it downloads online).

    Without the weight file and without the network, prints one line naming the
    file, the folder to put it in and the MobileNet command, and exits with 2.
    """
    spec = MODELS[model]
    try:
        return spec.build(None if weights == "none" else "imagenet")
    except Exception as error:  # keras' get_file raises a bare Exception when offline
        folder = weights_folder()
        if weights == "none" or (folder / spec.weight_file).is_file():
            raise  # not a missing weight file
        reason = " ".join(str(error).split(" -- ")[-1].split())[:120]
        print(
            f"{script}.py: error: the {spec.label} ImageNet weights, {spec.weight_file}, are "
            f"not in {folder}/ ($KERAS_HOME/models/) and could not be downloaded ({reason}): "
            "put the file there, or run the same protocol on the pretrained MobileNet "
            f"(alpha 0.75) whose weights are there: python reproductions/{script}.py "
            "--model mobilenet",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


# -- the images ----------------------------------------------------------------


@dataclass
class ImageData:
    """Train and val images as batched `(preprocessed images, int labels)` datasets."""

    train: tf.data.Dataset
    val: tf.data.Dataset
    class_names: list[str]
    source: str
    tag: str  # a short name of the data, for the default cache folder


def load_data(data: str, spec: ModelSpec, batch_size: int, quick: bool, data_dir=None):
    """Resolves `--data` and loads the train and val images for `spec`'s network.

    `"imagenette"`: an already prepared TFDS `imagenette`, else the shared
    offline folder, else a TFDS download (never a download that could hang when
    the shared folder is there). A folder: it needs `train/` and `val/`, one
    sub-folder per class in each. Anything else: a TFDS dataset name.
    """
    if data == "imagenette":
        if _tfds_prepared("imagenette", data_dir):
            return _tfds_data("imagenette", spec, batch_size, quick, data_dir)
        try:
            folder = kp.datasets.imagenette_dir()
        except FileNotFoundError:
            return _tfds_data("imagenette", spec, batch_size, quick, data_dir)
        images = _folder_data(folder, spec, batch_size, quick)
        images.source = (
            f"Imagenette, the shared offline subset {folder} (the first 300 train and 100 "
            "val images of each of the 10 classes of fastai's imagenette2, 224x224)"
            + (" (quick: a part of it)" if quick else "")
        )
        images.tag = "imagenette"
        return images
    if Path(data).is_dir():
        return _folder_data(Path(data), spec, batch_size, quick)
    return _tfds_data(data, spec, batch_size, quick, data_dir)


def _folder_data(folder: Path, spec, batch_size, quick):
    missing = [s for s in ("train", "val") if not (folder / s).is_dir()]
    if missing:
        raise ValueError(
            f"The image folder {folder} has no {' and no '.join(f'{s}/' for s in missing)} "
            "sub-folder: pass a folder holding train/ and val/, each with one sub-folder of "
            f"images per class. Received: --data {folder}"
        )
    train_dir, val_dir = folder / "train", folder / "val"
    if quick:
        train_dir = kp.datasets.balanced_subset(train_dir, QUICK_PER_CLASS[0])
        val_dir = kp.datasets.balanced_subset(val_dir, QUICK_PER_CLASS[1])
    train, names = kp.datasets.image_folder(train_dir, spec.image_size, batch_size, spec.preprocess)
    val, val_names = kp.datasets.image_folder(val_dir, spec.image_size, batch_size, spec.preprocess)
    kp.datasets.check_same_classes(
        names, val_names, labels=(str(folder / "train"), str(folder / "val"))
    )
    quick_text = (
        f" (quick: {QUICK_PER_CLASS[0]} train and {QUICK_PER_CLASS[1]} val images per class)"
    )
    return ImageData(
        train,
        val,
        names,
        f"image folder {folder}" + (quick_text if quick else ""),
        re.sub(r"[^A-Za-z0-9]+", "_", folder.name).strip("_") or "folder",
    )


def _tfds_prepared(name, data_dir):
    from absl import logging as absl_logging

    # Looking is not preparing: no "has no dataset_info.json" warning for a missing dataset.
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        import tensorflow_datasets as tfds

        return tfds.builder(name, data_dir=data_dir).is_prepared()
    except Exception:  # no TFDS, or an unknown name: not prepared
        return False
    finally:
        absl_logging.set_verbosity(verbosity)


def _tfds_data(name, spec, batch_size, quick, data_dir):
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        print(f"Downloading and preparing the TFDS dataset {name!r} ...")
        builder.download_and_prepare()
    splits = list(builder.info.splits)
    val_split = next((s for s in ("validation", "val", "test") if s in splits), None)
    if "train" not in splits or val_split is None:
        raise ValueError(
            f"The TFDS dataset {name!r} has splits {splits}; the probes need 'train' and one "
            f"of 'validation', 'val', 'test'. Received: --data {name}"
        )
    label = builder.info.features[builder.info.supervised_keys[1]]
    sizes = (len(label.names) * QUICK_PER_CLASS[0], len(label.names) * QUICK_PER_CLASS[1])
    train_split, val_split = (
        (f"train[:{sizes[0]}]", f"{val_split}[:{sizes[1]}]") if quick else ("train", val_split)
    )
    train, _ = kp.datasets.tfds_images(
        name, train_split, spec.image_size, batch_size, spec.preprocess, data_dir
    )
    val, _ = kp.datasets.tfds_images(
        name, val_split, spec.image_size, batch_size, spec.preprocess, data_dir
    )
    return ImageData(
        train,
        val,
        list(label.names),
        f"TFDS {name!r}, splits {train_split!r} (train) and {val_split!r} (val)",
        re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") + "_tfds",
    )


# -- the run -------------------------------------------------------------------


def _default_cache(experiment, args, data_tag):
    parts = [experiment.name, args.model]
    if args.weights == "none":
        parts.append(f"random{args.seed}")
    elif experiment.reducer == "random" and args.seed:
        parts.append(f"seed{args.seed}")
    if data_tag != "imagenette":
        parts.append(data_tag)
    if args.quick:
        parts.append("quick")
    return _common.ROOT / ".cache" / "reproductions" / "-".join(parts)


def _fail(script, message):
    print(f"{script}.py: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(2)


def main(args: argparse.Namespace, experiment: Experiment) -> dict:
    """Runs the protocol with the options of `_common.imagenet_parser`; writes
    `<args.out>/<name>.json` and `.png`; returns the results."""
    # Several machines: every worker runs this same command with its own TF_CONFIG
    # (README, "Scale"); the strategy must exist before any other TensorFlow work.
    strategy = kp.distribute.strategy_from_tf_config()
    script, spec = experiment.name, MODELS[args.model]
    keras.utils.set_random_seed(args.seed)
    # First the network: without its weights nothing else is worth doing.
    base = load_base(args.model, args.weights, script)
    try:
        images = load_data(args.data, spec, args.batch_size, args.quick, args.data_dir)
    except (ValueError, FileNotFoundError) as error:
        _fail(script, error)
    run = _common.Run(script, args)
    weights_text = "'imagenet'" if args.weights == "imagenet" else "None"
    call = spec.call.format(weights=weights_text)
    stand_in = args.model != experiment.model
    paper = MODELS[experiment.model].label
    described = f"{spec.label}, {'ImageNet' if args.weights == 'imagenet' else 'random'} weights"
    print(f"Model: {described}: {call}" + (f", standing in for {paper}" if stand_in else ""))
    if stand_in:
        run.note(
            f"The network is {spec.label} ({call}), standing in for the paper's {paper}, "
            f"whose weights ({MODELS[experiment.model].weight_file}) are not available "
            f"offline. Same protocol; its points are the preset {spec.preset!r}."
        )
    if args.weights == "none":
        run.note(f"Random weights (seed {args.seed}), not the pretrained ones: a smoke test.")
    print(f"Data: {images.source}")

    try:
        indices = kp.datasets.imagenet_indices(images.class_names)
    except ValueError:  # not ImageNet classes known here: no pretrained reference
        indices = None

    if experiment.reducer == "random":
        reducers = kp.RandomSubset(experiment.random_features, seed=args.seed)
        reducer_text = (
            f"{experiment.random_features} fixed random features per point "
            f"(kp.RandomSubset({experiment.random_features}, seed={args.seed}))"
        )
    else:
        reducers, reducer_text = "gap", "global average pooling per channel"
    probed = kp.ProbedModel(
        base, points=spec.preset, num_classes=len(images.class_names), reducers=reducers
    )
    print(f"Points: {len(probed.points)} (preset {spec.preset!r}), {reducer_text}")

    directory = args.cache or _default_cache(experiment, args, images.tag)
    shard_size = args.batch_size * max(1, SHARD_EXAMPLES // args.batch_size)
    seconds = {}
    with strategy.scope():  # each worker extracts its share; L-BFGS all-reduces
        try:
            for split, dataset in (("train", images.train), ("val", images.val)):
                start = time.perf_counter()
                print(f"Features of the {split} images -> {directory}")
                kp.FeatureCache.write(
                    probed,
                    dataset,
                    directory,
                    split=split,
                    batch_size=args.batch_size,
                    shard_size=shard_size,
                    verbose=1,
                )
                seconds[f"cache_{split}"] = round(time.perf_counter() - start, 1)
            cache = kp.FeatureCache.open(directory, model=probed)
        except kp.CacheError as error:
            _fail(script, f"{error} (or pass another --cache folder)")
        num_train, num_val = cache.num_examples("train"), cache.num_examples("val")

        start = time.perf_counter()
        if args.l2 == "auto":
            # The penalty chosen per point on folds of train, never on val: val is the
            # split the errors are reported on, and the only held-out one.
            # Stratified folds: no more than the rarest class has images (--quick: 4).
            _, labels = cache.arrays("train", points=[])
            folds = int(max(2, min(CV_FOLDS, np.unique(labels, return_counts=True)[1].min())))
            solver = kp.solvers.LBFGSProbeCV(cv=folds, seed=args.seed)
            how = f"l2 chosen per point by {folds}-fold cross-validation on train"
            report = _fit(probed, cache, solver, f"{how}; {num_train} images")
        else:
            how = f"l2={args.l2:g}"
            report = _fit(probed, cache, "lbfgs", f"{how}; {num_train} images", l2=args.l2)
        seconds["fit"] = round(time.perf_counter() - start, 1)

    mistakes = None
    if args.weights == "imagenet" and indices is not None:
        start = time.perf_counter()
        mistakes = pretrained_mistakes(base, images.val, indices, cache)
        seconds["pretrained_val"] = round(time.perf_counter() - start, 1)
    measured = intervals_and_tests(report, "val", mistakes)

    print(f"\nProbes on {described}; {images.source}:\n")
    print(report.table(metrics=["loss", "error", "grad_norm", "l2"], intervals=True, level=LEVEL))
    adjacent = measured["adjacent"]
    print(
        f"Adjacent points whose val errors differ (McNemar exact, Holm over {len(adjacent)} "
        f"pairs, {1 - LEVEL:g}): {measured['adjacent_significant']} of {len(adjacent)}"
        + "".join(f"\n  {c['a']} -> {c['b']}: {c['text']}" for c in adjacent if c["significant"])
    )
    if mistakes is not None:
        among, full = (
            interval_text(measured[key], measured[f"{key}_interval"], 4)
            for key in ("pretrained_val_error", "pretrained_val_error_1000way")
        )
        print(
            f"Pretrained {spec.label}'s own classifier on the same {num_val} val images: error "
            f"{among} among the {len(images.class_names)} classes (1000-way ImageNet top-1 "
            f"error {full}).\nThe last probe against it, on the same images: "
            f"{measured['last_probe_vs_pretrained']['text']}"
        )

    train = report.results["train"]
    results = {
        "experiment": f"Alain & Bengio (arXiv 1610.01644), {experiment.section}",
        "model": spec.label,
        "model_call": call,
        "paper_model": paper,
        "stands_in_for_paper_model": stand_in,
        "weights": args.weights,
        "preset": spec.preset,
        "preprocess": spec.preprocess,
        "image_size": list(spec.image_size),
        "reducer": reducer_text,
        "data": args.data,
        "data_source": images.source,
        "num_train": num_train,
        "num_val": num_val,
        "num_classes": len(images.class_names),
        "class_names": images.class_names,
        "points": list(probed.points),
        "point_shapes": {p: list(base.get_layer(p).output.shape[1:]) for p in probed.points},
        "feature_sizes": cache.feature_sizes,
        "solver": f"LBFGSProbeCV(cv={folds})" if args.l2 == "auto" else "lbfgs",
        "l2": args.l2,
        "l2_chosen": {p: train[p]["l2"] for p in probed.points},
        "sklearn_C": {p: 1 / (train[p]["l2"] * num_train) for p in probed.points},
        "val_error": _rounded(report.errors("val")),
        "val_loss": report.losses("val"),
        "val_top5_error": _rounded(report.top5_errors("val")),
        "level": LEVEL,
        **{key: measured[key] for key in INTERVAL_KEYS},
        "train_error": _rounded(report.errors("train")),
        "train_loss": report.losses("train"),
        "grad_norm": {p: train[p]["grad_norm"] for p in probed.points},
        "objective": {p: train[p]["objective"] for p in probed.points},
        **{key: measured[key] for key in PRETRAINED_KEYS},
        "monotonicity": _finite(report.monotonicity("val")),
        "monotonicity_interval": measured["monotonicity_interval"],
        "adjacent": adjacent,
        "adjacent_significant": measured["adjacent_significant"],
        "monotonicity_train": _finite(report.monotonicity("train")),
        "cache": str(directory),
        "seconds": seconds,
    }
    run.note(
        f"Data: {images.source}; {num_train} train / {num_val} val images of "
        f"{len(images.class_names)} classes, where the paper used ImageNet's 1000 classes "
        "(1.28M train / 50,000 val images). Fewer classes make the absolute errors far "
        "smaller than the paper's: compare the shape (monotonicity with depth, probes "
        "against the pretrained head), not the values."
    )
    run.note(
        f"Probes fitted to their optimum by L-BFGS on cached features ({how}), not "
        "by the paper's minibatch training; grad_norm is each fit's optimality certificate."
    )
    if args.l2 == "auto":
        chosen = sorted(set(results["l2_chosen"].values()))
        run.note(
            f"Each probe's penalty is chosen among {len(kp.solvers.L2S)} penalties "
            f"({min(kp.solvers.L2S):g} to {max(kp.solvers.L2S):g}) by {folds}-fold "
            "cross-validation on the train images (kp.solvers.LBFGSProbeCV(cv="
            f"{folds}): stratified folds, the path warm-started), never on val: val is the "
            "only held-out split and the one the errors are reported on, so choosing there "
            "would bias them low, and halving it (one half to choose, one to report) would "
            "widen every interval by about 1.4x and weaken the paired tests. Chosen: "
            f"{', '.join(f'{l2:g}' for l2 in chosen)} (per point in l2_chosen)."
        )
    run.note(
        f"Intervals are {LEVEL:.0%} intervals over the {num_val} val images: Wilson's score "
        "interval for error rates, a percentile bootstrap (2000 resamples) for losses and for "
        "the monotonicity. Adjacent points are compared by McNemar's exact test on the same "
        f"images, Holm-adjusted over the {len(adjacent)} pairs; the last probe against the "
        "pretrained classifier by McNemar's exact test too. Significant: p < "
        f"{1 - LEVEL:g}."
    )
    if args.weights == "imagenet" and indices is None:
        run.note("The data's classes are not ImageNet classes known here: no pretrained reference.")
    for text in experiment.notes(results):
        run.note(text)
    experiment.compare(run, results)
    if kp.distribute.workers(strategy)[0] == 0:  # one worker writes the results
        # The report keeps each val image's outcome: `keras-probes compare` and
        # `ProbeReport.interval` read it again.
        report.to_json(run.path("_report.json"))
        run.save(results, figure=experiment.figure(report, results))
    return results


# -- uncertainty ---------------------------------------------------------------

#: The intervals of the probes' val figures, `{point: [low, high]}` each.
INTERVAL_KEYS = ("val_error_interval", "val_top5_error_interval", "val_loss_interval")
#: The pretrained classifier's figures (`None` without a pretrained reference).
PRETRAINED_KEYS = (
    "pretrained_val_error",
    "pretrained_val_error_interval",
    "pretrained_val_error_1000way",
    "pretrained_val_error_1000way_interval",
    "last_probe_vs_pretrained",
)


def pretrained_mistakes(base: keras.Model, val: tf.data.Dataset, indices, cache) -> dict:
    """The pretrained classifier's mistake on each val image, in the cache's row order.

    Among the dataset's classes (its scores at `indices`, argmax among those,
    as `kp.models.classifier_errors`) and 1000-way. Kept per image so that
    its error gets an interval and the last probe a paired test against it.

    Returns:
        `{"among": bool (n,), "full": bool (n,)}`.

    Raises:
        ValueError: the val images' labels are not the cache's, in its order
            (the paired test needs the same images in the same order).
    """
    indices = np.asarray(indices)
    infer = tf.function(lambda x: base(x, training=False))
    among, full, labels = [], [], []
    for x, y in val:
        scores, y = infer(x).numpy(), y.numpy().astype("int64")
        among.append(np.argmax(scores[:, indices], axis=1) != y)
        full.append(np.argmax(scores, axis=1) != indices[y])
        labels.append(y)
    _, cached = cache.arrays("val", points=[])
    if not np.array_equal(np.concatenate(labels), cached):
        raise ValueError(
            "The val images' labels differ from the feature cache's, in its row order: the "
            "pretrained classifier cannot be paired with the probes image by image. Pass "
            "another --cache folder (this one holds other images)."
        )
    return {"among": np.concatenate(among), "full": np.concatenate(full)}


def comparison_record(comparison: kp.uncertainty.Comparison) -> dict:
    """A paired comparison as JSON: its fields, `significant` and a line of text."""
    record = dataclasses.asdict(comparison)
    if record["adjusted_pvalue"] is None:
        del record["adjusted_pvalue"]
    else:
        record["holm_pvalue"] = record.pop("adjusted_pvalue")
    record["significant"] = comparison.significant()
    p = record.get("holm_pvalue", comparison.pvalue)
    record["text"] = (
        f"{comparison.difference:+.3f} [{comparison.low:+.3f}, {comparison.high:+.3f}], "
        f"{f'p={p:.2g}' if p > 0 else 'p<1e-300'}{' (Holm)' if 'holm_pvalue' in record else ''}, "
        f"{comparison.test}: " + ("significant" if record["significant"] else "not significant")
    )
    return record


def intervals_and_tests(report: kp.ProbeReport, split: str, mistakes: dict | None) -> dict:
    """The intervals and paired tests of the probes' figures on `split`, and of the
    pretrained classifier's error given its `mistakes` (`pretrained_mistakes`)."""
    points = report.points
    result = {
        f"{split}_{metric}_interval": {
            p: _outward(bounds) for p, bounds in report.intervals(split, metric, LEVEL).items()
        }
        for metric in ("error", "top5_error", "loss")
    }
    _, low, high = report.monotonicity(split, level=LEVEL)
    result["monotonicity_interval"] = _outward((low, high))
    adjacent = [comparison_record(c) for c in report.compare_adjacent(split, level=LEVEL)]
    result["adjacent"] = adjacent
    result["adjacent_significant"] = sum(c["significant"] for c in adjacent)
    result.update(dict.fromkeys(PRETRAINED_KEYS))
    if mistakes is not None:
        for key, wrong in (("", mistakes["among"]), ("_1000way", mistakes["full"])):
            result[f"pretrained_{split}_error{key}"] = round(float(np.mean(wrong)), 6)
            bounds = kp.uncertainty.rate_interval(wrong.astype(float), level=LEVEL)
            result[f"pretrained_{split}_error{key}_interval"] = _outward(bounds)
        last = points[-1]
        probe_wrong = report.outcomes[split][last].values("error")
        paired = kp.uncertainty.paired_rates(probe_wrong, mistakes["among"], level=LEVEL)
        paired = dataclasses.replace(paired, a=last, b=PRETRAINED, split=split, metric="error")
        result["last_probe_vs_pretrained"] = comparison_record(paired)
    return result


def interval_text(value: float, bounds, digits: int = 3) -> str:
    """`"0.031 [0.021, 0.044]"`."""
    return f"{value:.{digits}f} [{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]"


def _outward(bounds) -> list[float]:
    """An interval rounded to 6 decimals outward: it still holds its figure."""
    low, high = bounds
    return [math.floor(low * 1e6) / 1e6, math.ceil(high * 1e6) / 1e6]


def _fit(probed, cache, solver, what, **settings):
    print(f"Fitting {len(probed.points)} probes by L-BFGS ({what})")
    return kp.fit_probes(probed, cache, solver=solver, verbose=1, **settings)


def title(results: dict, what: str) -> str:
    """The figure title: the network first, then the experiment and data."""
    weights = "ImageNet weights" if results["weights"] == "imagenet" else "random weights"
    model = f"{results['model']}, {weights}"
    if results["stands_in_for_paper_model"]:
        model += f" (standing in for {results['paper_model']})"
    return (
        f"{model}\n{what}\n{results['num_classes']} classes, "
        f"{results['num_train']} train / {results['num_val']} val images"
    )


def _finite(value):
    return None if value is None or math.isnan(value) else value


def _rounded(errors: dict) -> dict:
    """Error rates computed in float32 (0.7299999892) as the fractions they are (0.73)."""
    return {point: round(value, 6) for point, value in errors.items()}
