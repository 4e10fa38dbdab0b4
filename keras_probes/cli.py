"""The `keras-probes` command line: a thin layer over the public API.

    keras-probes probe MODEL --data DATA [--val-data DATA] --out DIR [--points ...]
    keras-probes report REPORT [--metrics error] [--splits val] [--intervals [--level 0.95]]
    keras-probes compare REPORT A B | A --other CONTROL | --adjacent [--metric error]
        [--split test] [--level 0.95]
    keras-probes plot REPORT --out FIGURE.png [--metric error]
    keras-probes export PROBED.keras --out BASE_DIR [--version N] [--heads-only]
        [--allow-unfitted] [--allow-new-signatures]
    keras-probes cache MODEL --data DATA --out CACHE [--split train] [--points ...]
    keras-probes fit MODEL --cache CACHE [--solver lbfgs] [--l2 1e-4|auto] [--report r.json]
    keras-probes tcav MODEL --point P [P ...] --concept DIR [--concept DIR ...] --random DIR
        --class DIR [--target K] [--class DIR [--target K] ...] --out DIR [--runs 20]

MODEL is a `.keras` file (a saved `kp.ProbedModel`, or any Keras model to be
probed: then `--points` chooses where) or a SavedModel directory (opaque: its
serving outputs are the points). DATA is an image folder (one sub-folder per
class) or a TFDS dataset name, read as the model takes it (its input size;
`--preprocess` and, for an input of open size, `--image-size` default to those
of the model's family, found in the model whatever `--points` says; an RGB
model of no known family needs `--preprocess`). A `.keras` file holding Python
code (a `Lambda` layer) is loaded only with `--unsafe-deserialization`. Every
option is checked when parsed, before anything is read: numbers against their
range, output files against their suffix and directory. Errors are one line on
stderr and exit status 2, in the options' spelling; `probe` prints each step
it starts on stdout; `--help` on each command tells the rest. Only the
commands that run a model import TensorFlow: `--help`, `report`, `compare` and
`plot` start at once.

On several machines, run the same command on every worker with its own
`TF_CONFIG` (`{"cluster": {"worker": [...]}, "task": {"type": "worker",
"index": i}}`) and a shared `--out`/`--cache` directory: the commands then
run under `tf.distribute.MultiWorkerMirroredStrategy`, each worker extracts
its share of the shards and L-BFGS all-reduces the workers' sums; only the
first worker writes reports, figures and models.
"""

import argparse
import ast
import os
import re
import sys
from pathlib import Path

from keras_probes import _params, _solver_settings

__all__ = ["main"]


class _UsageError(Exception):
    """A command line that cannot run: answered in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line (no usage block) for `main` to print."""

    def error(self, message):
        raise _UsageError(f"{self.prog}: error: {message}")


def _checked(cast, accepted, accept):
    """An argparse `type`: `cast(text)`, refused unless `accept(value)`, in one message
    shape: "argument --l2: must be a finite number >= 0. Received: -1"."""

    def parse(text):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"must be {accepted}. Received: {text}")
        return value

    return parse


_AT_LEAST_1 = _checked(int, "an integer >= 1", lambda v: v >= 1)
_AT_LEAST_2 = _checked(int, "an integer >= 2", lambda v: v >= 2)


def _output_file(*suffixes, why=""):
    """An argparse `type` for a file to write: one of `suffixes` (any if none), in a
    directory that exists (it is not created: a mistyped path fails at once)."""

    def parse(text):
        path = Path(text)
        if suffixes and path.suffix not in suffixes:
            raise argparse.ArgumentTypeError(
                f"must end in {' or '.join(suffixes)}{why}. Received: {text}"
            )
        _check_parent(path, text)
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a directory, not a file.")
        return text

    return parse


def _figure_file(text):
    """An argparse `type` for a figure: a suffix matplotlib writes (it would otherwise
    append `.png` to the name given), in a directory that exists."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffixes = sorted(f".{kind}" for kind in FigureCanvasBase.get_supported_filetypes())
    if Path(text).suffix.lower() not in suffixes:
        raise argparse.ArgumentTypeError(
            "must end in .png, .pdf, .svg or another suffix matplotlib writes "
            f"({' '.join(suffixes)}). Received: {text}"
        )
    return _output_file()(text)


def _output_dir(text):
    """An argparse `type` for a directory to write into, created if missing."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a directory.")
    return text


def _check_parent(path, text):
    parent = path.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(
            f"its directory {parent} does not exist; create it first. Received: {text}"
        )
    if not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError(
            f"its directory {parent} is not writable. Received: {text}"
        )


def _add_model_options(command):
    """Options of commands that probe a model file on images."""
    # No defaults here: `None` is "not given", refused with a ProbedModel (`_plain_options`).
    command.add_argument(
        "--points",
        nargs="+",
        help="for a plain model: a preset (resnet50, inception_v3, mobilenet, vgg16), 'all', "
        "'blocks' (every block output of a known family), or layer names (default: all)",
    )
    command.add_argument(
        "--reducers",
        choices=["auto", "gap", "flatten"],
        help="for a plain model: how each point becomes a vector (default: auto)",
    )
    command.add_argument(
        "--num-classes",
        type=_AT_LEAST_2,
        help="for a plain model: classes of the probes (default: those of the data)",
    )
    _add_image_options(command)
    command.add_argument("--batch-size", type=_AT_LEAST_1, default=64, help="default: %(default)s")


def _add_image_options(command, tfds: bool = True):
    """How images are read: preprocessing, size and (`tfds`) the TFDS data directory; their
    defaults are those of the model's family (kp.datasets.images_for_model)."""
    command.add_argument(
        "--preprocess",
        choices=["none", "tf", "caffe", "torch"],
        help="image preprocessing of keras.applications: 'tf' for MobileNet/Inception, "
        "'caffe' for ResNet50/VGG, 'torch' for DenseNet, 'none' keeps pixels 0..255 "
        "(default: the model's family's, found whatever --points says, e.g. caffe for a "
        "ResNet50; none for a grayscale model; required for an RGB model of no known family)",
    )
    command.add_argument(
        "--image-size",
        nargs=2,
        type=_AT_LEAST_1,
        metavar=("HEIGHT", "WIDTH"),
        help="the size images are resized to, for a model whose input size is open "
        "(default: the model's input size, else its family's)",
    )
    if tfds:
        command.add_argument("--data-dir", help="TFDS data directory (default: TFDS's own)")
    else:
        command.set_defaults(data_dir=None)  # image folders only, never TFDS


#: The image files Keras lists (`keras.utils.image_dataset_from_directory`), by suffix.
_IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


def _images_under(path):
    """The image files under `path`, in it and its sub-folders, as Keras lists them."""
    for root, _, names in os.walk(path):
        for name in names:
            if name.lower().endswith(_IMAGE_SUFFIXES):
                yield Path(root) / name


def _image_dir(text):
    """An argparse `type` for a folder of images (directly or in sub-folders)."""
    path = Path(text)
    if not path.is_dir():
        what = "a file, not a folder" if path.exists() else "missing"
        raise argparse.ArgumentTypeError(
            f"no image folder at {text} (it is {what}); pass a folder of images."
        )
    if next(_images_under(path), None) is None:
        raise argparse.ArgumentTypeError(
            f"{text} holds no images ({', '.join(_IMAGE_SUFFIXES)}, in it or its "
            "sub-folders); put the images in it."
        )
    return text


def _add_tcav_options(command):
    """The options of `tcav`: the model, its points, the image folders and the test."""
    command.add_argument(
        "model",
        help="a .keras file of a Keras model giving class scores (a saved ProbedModel: its "
        "base model) or a SavedModel directory",
    )
    command.add_argument(
        "--point",
        required=True,
        nargs="+",
        action="extend",
        help="the layers where the concepts are tested, as kp.points names them (e.g. "
        "conv_pw_11_relu); one or more, or the option repeated",
    )
    command.add_argument(
        "--concept",
        required=True,
        action="append",
        type=_image_dir,
        metavar="DIR",
        help="a folder of a concept's images, named by the folder (repeat for more concepts)",
    )
    command.add_argument(
        "--random",
        required=True,
        type=_image_dir,
        metavar="DIR",
        help="a folder of random images (e.g. of many classes): the counter-examples of every "
        "concept and the random-vs-random null",
    )
    command.add_argument(
        "--class",
        dest="classes",
        required=True,
        action="append",
        type=_image_dir,
        metavar="DIR",
        help="a folder of one class's images (repeat for more classes)",
    )
    command.add_argument(
        "--target",
        action="append",
        type=_checked(int, "an integer >= 0", lambda v: v >= 0),
        metavar="K",
        help="the class index of each --class, in order (default: from each folder's name: "
        "a leading number, e.g. 340 or 340_zebra, or an Imagenette WordNet id)",
    )
    command.add_argument(
        "--out", required=True, type=_output_dir, help="the output directory (created if missing)"
    )
    command.add_argument(
        "--runs",
        type=_AT_LEAST_2,
        default=20,
        help="concept activation vectors per concept and point, and random-vs-random ones "
        "(default: %(default)s)",
    )
    command.add_argument(
        "--seed",
        type=_checked(int, "an integer >= 0", lambda v: v >= 0),
        default=0,
        help="seed of the disjoint shares (default: %(default)s)",
    )
    command.add_argument(
        "--l2",
        type=_penalty,
        default="auto",
        help="the vectors' L2 penalty, or 'auto': chosen for each vector on 3 folds of its "
        "images (kp.solvers.LBFGSProbeCV, the library's default); a number fits each vector "
        "once (kp.solvers.LBFGSProbe), faster, and needs a third of the images "
        "(default: %(default)s)",
    )
    command.add_argument(
        "--reducer",
        default="auto",
        choices=["auto", "gap", "flatten", "mean", "first", "last"],
        help="how each point's activations are pooled for the vectors and how the vectors are "
        "placed back (default: %(default)s: every position of a spatial map)",
    )
    _add_image_options(command, tfds=False)
    command.add_argument("--batch-size", type=_AT_LEAST_1, default=32, help="default: %(default)s")


def _check_tcav(args):
    """`tcav`'s checks between options: one --target per --class (or none), no class
    twice, no two concepts of one name."""
    prefix = "keras-probes tcav: error:"
    if args.target is not None and len(args.target) != len(args.classes):
        raise _UsageError(
            f"{prefix} {_count(len(args.classes), '--class folder')} and "
            f"{_count(len(args.target), '--target')}: give one --target K after each --class "
            "DIR, or none (each folder's name then gives its class index)."
        )
    if args.target is not None and len(set(args.target)) < len(args.target):
        twice = next(k for k in args.target if args.target.count(k) > 1)
        raise _UsageError(
            f"{prefix} --target {twice} is given twice; put that class's images in one folder."
        )
    names = [_folder_name(folder) for folder in args.concept]
    for name in names:
        if names.count(name) > 1:
            folders = [f for f, n in zip(args.concept, names, strict=True) if n == name]
            raise _UsageError(
                f"{prefix} two --concept folders are named {name!r} ({', '.join(folders)}); a "
                "concept is named by its folder: rename one."
            )


#: The options of some solvers only, by argparse name, and the solvers that take them (as
#: the solvers declare their settings): given with another --solver, they are refused;
#: left out, `kp.fit_probes` keeps the solver's default.
_SOLVER_OPTIONS = {
    name: tuple(solver for solver, settings in _solver_settings.NAMED.items() if name in settings)
    for name in ("max_iter", "epochs", "patience", "learning_rate")
}


def _declared(setting):
    """An argparse `type` for a solver setting: its declared constraint, in the options'
    message shape ("must be an integer >= 1. Received: 0")."""
    c = setting.constraint
    if isinstance(c, _params.Integer):
        return _checked(int, _params.Integer(c.low, c.high).describe(), c.accepts)
    return _checked(float, _params.Real(c.low, c.high, open_low=c.open_low).describe(), c.accepts)


def _penalty(text):
    """`--l2`: a penalty, or `auto` (chosen on the validation split)."""
    return text if text == "auto" else _declared(_solver_settings.LBFGS["l2"])(text)


def _add_fit_options(command):
    """Options of commands that fit probes on a cache; defaults and checks are the solvers'
    declared ones."""
    command.add_argument("--solver", default="lbfgs", choices=list(_solver_settings.NAMED))
    paths = _solver_settings.L2S
    command.add_argument(
        "--l2",
        type=_penalty,
        default=_solver_settings.LBFGS["l2"].default,
        help=f"L2 penalty, or 'auto': chosen at every point on the validation split among "
        f"{len(paths)} from {min(paths):g} to {max(paths):g} (kp.solvers.LBFGSProbeCV, "
        "--solver lbfgs only) (default: %(default)s)",
    )
    for name, solvers in _SOLVER_OPTIONS.items():
        setting = _solver_settings.NAMED[solvers[0]][name]
        command.add_argument(
            "--" + name.replace("_", "-"),
            type=_declared(setting),
            help=f"{setting.help}, --solver {'/'.join(solvers)} only "
            f"(default: {setting.default:g})",
        )


#: The commands, in the order of `--help`: `(summary, description)`.
_COMMANDS = {
    "probe": (
        "probe a model on a dataset in one go: cache, fit, report, plot",
        (
            "Extracts every probe point's features of DATA (and of --val-data) into "
            "OUT/cache, fits the probes (L-BFGS to the optimum by default), and writes "
            "OUT/report.json, OUT/report.csv, OUT/errors.png and OUT/probed.keras (the model "
            "with its fitted probes, ready for `keras-probes export`). Run it again after an "
            "interruption: the cache resumes."
        ),
    ),
    "report": (
        "print a saved report as a table",
        (
            "Prints a report written by `probe` or `fit` (JSON or CSV) as a table; with "
            "--intervals, each held-out figure with its confidence interval (Wilson's for "
            "error rates, a bootstrap for losses, from each example's outcome), or the "
            "standard deviation over the runs of a combined report."
        ),
    ),
    "compare": (
        "test whether two probes' figures differ, on the same examples",
        (
            "A paired test on the held-out examples of a report: two points of it (A B), one "
            "point against the same point of a control report of the same examples (A "
            "--other CONTROL: selectivity), or every point against the next deeper one "
            "(--adjacent, p-values with Holm's adjustment). Prints the difference A - B, its "
            "confidence interval, the two-sided p-value and the test (McNemar's exact test "
            "for error rates, the paired bootstrap for losses), and whether it is significant."
        ),
    ),
    "plot": (
        "plot a saved report: a metric against depth, one line per split",
        "Draws a report's metric per probe point, input side first (paper Fig. 3/4b).",
    ),
    "export": (
        "export a saved ProbedModel as a TensorFlow Serving model version",
        (
            "Writes OUT/<version>/ (a SavedModel with a serving_default signature for all "
            "probes and probe_<point> per probe, and TF Serving warm-up requests) and adds "
            "the model to models.config beside OUT. An existing version is never overwritten."
        ),
    ),
    "cache": (
        "extract every probe point's features of a dataset split to a feature cache",
        (
            "Runs the model once over a dataset split and writes each probe point's "
            "(reduced) features to CACHE, checksummed and resumable: run the same command "
            "again after an interruption and it resumes from the first missing shard."
        ),
    ),
    "fit": (
        "train the probes on a feature cache and report every split",
        (
            "Trains every probe on the cache's train split (L-BFGS to the optimum, or the "
            "paper's minibatch RMSprop/Adam with early stopping on the validation split), "
            "prints the report and optionally saves it and the trained probed model."
        ),
    ),
    "tcav": (
        "test how much a class's prediction depends on concepts (TCAV), on image folders",
        (
            "Kim et al.'s TCAV (kp.attribution.tcav_report): at each --point, --runs concept "
            "activation vectors per --concept folder, each fitted on its own disjoint share "
            "of the concept's and the --random folder's images, and as many random-vs-random "
            "vectors (the null); the score of each is the fraction of a --class folder's "
            "images whose class logit grows along it. Every score is tested against the "
            "random ones (two-sided t-test, Holm-adjusted over all concepts, points and "
            "classes). Prints the table and writes OUT/tcav.json, OUT/tcav.txt and "
            "OUT/tcav.png. A folder holds its images directly or in sub-folders; a concept "
            "is named by its folder. The --random folder needs 3 x --runs x 3 images and "
            "each --concept folder --runs x 3 (three folds choose each vector's penalty; "
            "with a fixed --l2, a third of that)."
        ),
    ),
}


def _parser():
    parser = _Parser(
        prog="keras-probes",
        description="Linear classifier probes for any Keras model (Alain & Bengio, 1610.01644).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {
        name: subparsers.add_parser(name, help=summary, description=description)
        for name, (summary, description) in _COMMANDS.items()
    }

    probe = commands["probe"]
    probe.add_argument(
        "model", help="a .keras file (a ProbedModel or any Keras model) or a SavedModel directory"
    )
    probe.add_argument(
        "--data", required=True, help="training images: an image folder or a TFDS dataset name"
    )
    probe.add_argument("--val-data", help="held-out images, as --data (default: none)")
    probe.add_argument(
        "--tfds-split", default="train", help="TFDS split of --data (default: %(default)s)"
    )
    probe.add_argument(
        "--val-tfds-split", default="test", help="TFDS split of --val-data (default: %(default)s)"
    )
    probe.add_argument(
        "--out", required=True, type=_output_dir, help="the output directory (created if missing)"
    )
    _add_model_options(probe)
    _add_fit_options(probe)

    report = commands["report"]
    report.add_argument("report", help="a report file, .json or .csv")
    report.add_argument("--splits", nargs="+", help="splits to show (default: all)")
    report.add_argument("--metrics", nargs="+", help="metrics to show, e.g. error (default: all)")
    report.add_argument(
        "--intervals",
        action="store_true",
        help="each figure with its interval, value [low, high], where the report keeps its "
        "examples' outcomes (held-out splits), or mean ± sd over a combined report's runs",
    )
    report.add_argument(
        "--level", type=_CONFIDENCE, help="the intervals' confidence level (default: 0.95)"
    )

    compare = commands["compare"]
    compare.add_argument("report", help="a report file, .json or .csv")
    compare.add_argument("a", nargs="?", metavar="A", help="a probe point")
    compare.add_argument("b", nargs="?", metavar="B", help="another probe point (A - B)")
    compare.add_argument(
        "--other",
        metavar="CONTROL",
        help="a control report of the same examples: A here minus A there",
    )
    compare.add_argument(
        "--adjacent",
        action="store_true",
        help="every point against the next deeper one, p-values adjusted together (Holm)",
    )
    compare.add_argument(
        "--metric",
        default="error",
        help="error, top5_error or loss; a regression probe's <target>_r2 or <target>_mspe "
        "(default: %(default)s)",
    )
    compare.add_argument(
        "--split", help="a held-out split (default: the report's only one with outcomes)"
    )
    compare.add_argument(
        "--level",
        type=_CONFIDENCE,
        default=0.95,
        help="the interval's confidence level (default: %(default)s); significant: p below "
        "1 - level",
    )

    plot = commands["plot"]
    plot.add_argument("report", help="a report file, .json or .csv")
    plot.add_argument(
        "--out",
        required=True,
        type=_figure_file,
        help="the figure file, e.g. errors.png or .pdf, in an existing directory",
    )
    plot.add_argument("--metric", default="error", help="default: %(default)s")
    plot.add_argument("--splits", nargs="+", help="splits to draw (default: all)")
    plot.add_argument("--title", help="figure title (default: the model's name)")
    plot.add_argument("--log", action="store_true", help="logarithmic metric axis")

    export = commands["export"]
    export.add_argument("model", help="a .keras file of a ProbedModel (e.g. OUT/probed.keras)")
    export.add_argument(
        "--out", required=True, help="the model's base directory, e.g. serving/probes"
    )
    export.add_argument(
        "--version", type=_AT_LEAST_1, help="version number (default: the next free one)"
    )
    export.add_argument(
        "--heads-only",
        action="store_true",
        help="serve the probe heads over reduced features instead of the whole model",
    )
    export.add_argument(
        "--allow-unfitted",
        action="store_true",
        help="export probes never fitted (all-zero heads: the same answer for every input)",
    )
    export.add_argument(
        "--allow-new-signatures",
        action="store_true",
        help="publish a version whose signatures differ from the latest version's "
        "(its clients break when the server moves to it)",
    )
    export.add_argument("--model-name", help="name in models.config (default: OUT's name)")
    export.add_argument(
        "--server-root",
        help="where the server sees OUT's parent, for models.config (e.g. /models)",
    )
    export.add_argument(
        "--warmup-data",
        help="an image folder or TFDS dataset whose first 3 images make the warm-up "
        "requests (default: one image of zeros)",
    )
    _add_image_options(export)  # of the warm-up images

    cache = commands["cache"]
    cache.add_argument("model", help="a .keras file: a saved ProbedModel or any Keras model")
    cache.add_argument(
        "--data",
        required=True,
        help="an image folder (one sub-folder of images per class) or a TFDS dataset name",
    )
    cache.add_argument(
        "--out",
        required=True,
        type=_output_dir,
        help="the cache directory (created if missing; splits accumulate)",
    )
    cache.add_argument(
        "--split", default="train", help="split name in the cache (default: %(default)s)"
    )
    cache.add_argument(
        "--tfds-split",
        help="the TFDS split to read, e.g. 'train[:10%%]' (default: the value of --split)",
    )
    _add_model_options(cache)
    cache.add_argument(
        "--shard-size",
        type=_AT_LEAST_1,
        help="examples per shard, a multiple of --batch-size (default: about 4096)",
    )
    cache.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    cache.add_argument(
        "--overwrite", action="store_true", help="rewrite the split, e.g. after its data changed"
    )

    fit = commands["fit"]
    fit.add_argument("model", help="the .keras file the cache was written from")
    fit.add_argument("--cache", required=True, help="the cache directory")
    fit.add_argument("--train", default="train", help="split to train on (default: %(default)s)")
    fit.add_argument(
        "--validation",
        default="auto",
        help="held-out split for early stopping and --l2 auto, or 'none' (default: val, "
        "validation or valid if any)",
    )
    _add_fit_options(fit)
    fit.add_argument(
        "--report",
        type=_output_file(".json", ".csv"),
        help="write the report here (.json or .csv, in an existing directory)",
    )
    fit.add_argument(
        "--save",
        type=_output_file(".keras", why=", the format `keras-probes export` reads"),
        help="save the probed model with its trained probes (.keras, in an existing directory)",
    )
    _add_tcav_options(commands["tcav"])
    for command in (probe, cache, fit, export, commands["tcav"]):
        command.add_argument("--quiet", action="store_true", help="no progress bars")
        command.add_argument(
            "--unsafe-deserialization",
            action="store_true",
            help="load a .keras file that holds Python code (a Lambda layer's function), "
            "which loading runs: only for a file you trust (Keras' safe_mode=False)",
        )
    parser.commands = commands
    return parser


def _command_parser(name):
    """The parser of one command, e.g. to spell its options in a message."""
    return _parser().commands[name]


def _check_across(args):
    """Checks between options, before anything is read."""
    if args.command == "tcav":
        _check_tcav(args)
    shard_size, batch_size = getattr(args, "shard_size", None), getattr(args, "batch_size", None)
    if shard_size is not None and shard_size % batch_size:
        raise _UsageError(
            f"keras-probes {args.command}: error: --shard-size {shard_size} must be a multiple "
            f"of --batch-size {batch_size}, so that every shard holds whole batches."
        )
    solver = getattr(args, "solver", None)
    if solver not in (None, "lbfgs") and args.l2 == "auto":
        raise _UsageError(
            f"keras-probes {args.command}: error: --l2 auto chooses the penalty of --solver "
            f"lbfgs only; --solver {solver} takes a number, e.g. --l2 1e-4."
        )
    for name, solvers in _SOLVER_OPTIONS.items():
        if solver is not None and getattr(args, name) is not None and solver not in solvers:
            raise _UsageError(
                f"keras-probes {args.command}: error: --{name.replace('_', '-')} is only used by "
                f"--solver {'/'.join(solvers)}; it has no effect with --solver {solver}."
            )


def _library():
    """`keras_probes` with every submodule imported, whether or not the package imports
    them on first use (as it may in the command line, for the text commands): every
    Keras class is registered before a saved model is loaded."""
    import keras_probes as kp

    for name in kp.__all__:
        getattr(kp, name)
    return kp


def _points(args):
    """`--points` as `kp.ProbedModel` takes them: one preset or 'all' is that name."""
    from keras_probes.points import PRESETS

    points = args.points or ["all"]
    if len(points) == 1 and points[0] in ("all", "blocks", *PRESETS):
        return points[0]
    return points


def _load_model(args):
    """MODEL as `kp.models.load_model` opens it, Python code only if the user trusts it."""
    from keras_probes import models

    return models.load_model(args.model, safe_mode=not args.unsafe_deserialization)


def _plain_options(args, model):
    """Refuses the options that only say how to probe a plain model, given with a saved
    `kp.ProbedModel` (which keeps its own): they would be silently ignored."""
    from keras_probes.model import ProbedModel

    if not isinstance(model, ProbedModel):
        return
    given = [
        option
        for option, value in (
            ("--points", args.points),
            ("--num-classes", args.num_classes),
            ("--reducers", args.reducers),
        )
        if value is not None
    ]
    if given:
        raise ValueError(
            f"{args.model} is a saved ProbedModel, with its own points "
            f"({', '.join(model.points)}), reducers and {model.num_classes} classes: "
            f"{' and '.join(given)} only applies to a plain model. Leave "
            f"{' and '.join(given)} out, or pass the file of the model to probe."
        )


def _as_probed(args, model, num_classes):
    from keras_probes import models

    return models.as_probed(model, _points(args), num_classes, args.reducers or "auto")


def _images(args, model, source, split, batch_size=None):
    """`(dataset, class_names)` of an image folder or a TFDS dataset, as `model` takes
    them: the preprocessing and size of the options, else of the `--points` preset,
    else of the model's family (`kp.datasets.images_for_model` finds it)."""
    from keras_probes import datasets
    from keras_probes.points import PRESETS

    points = _points(args) if hasattr(args, "points") else None
    return datasets.images_for_model(
        model,
        source,
        batch_size or args.batch_size,
        args.preprocess,
        preset=points if isinstance(points, str) and points in PRESETS else None,
        image_size=args.image_size,
        split=split,
        data_dir=args.data_dir,
    )


def _cache(args):
    kp = _library()

    model = _load_model(args)
    _plain_options(args, model)
    dataset, class_names = _images(args, model, args.data, args.tfds_split or args.split)
    probed = _as_probed(args, model, args.num_classes or len(class_names))
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


def _fit_and_report(probed, cache, args, train="train", validation="auto"):
    """`kp.fit_probes` with the options given: those of another solver are refused when
    parsed, and one left out keeps the library's default."""
    kp = _library()

    given = {name: getattr(args, name) for name in _SOLVER_OPTIONS}
    report = kp.fit_probes(
        probed,
        cache,
        solver=args.solver,
        l2=args.l2,
        train=train,
        validation=validation,
        verbose=0 if args.quiet else 1,
        **{name: value for name, value in given.items() if value is not None},
    )
    print(report.table(metrics=["loss", "error", "grad_norm"]))
    return report


def _fit(args):
    kp = _library()

    cache = kp.FeatureCache.open(args.cache)
    model = _load_model(args)
    cache.check_model(model)  # another model's cache is said so, not "Unknown probe point"
    probed = kp.models.as_probed(model, cache.points, cache.num_classes, cache.reducers)
    validation = None if args.validation == "none" else args.validation
    report = _fit_and_report(probed, cache, args, args.train, validation)
    if not _writes_outputs():
        return
    if args.report:
        _write_report(report, args.report)
        print(f"report: {args.report}")
    if args.save:
        probed.save(args.save)
        print(f"probed model: {args.save}")


def _write_report(report, path):
    (report.to_csv if str(path).endswith(".csv") else report.to_json)(path)


def _step(number, text):
    """One line saying which of `probe`'s steps starts, on stdout with the progress bars."""
    print(f"[{number}/5] {text}", flush=True)


def _count(n, noun):
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _probe(args):
    kp = _library()

    out = Path(args.out)
    _step(1, f"loading the model {args.model}")
    model = _load_model(args)
    _plain_options(args, model)
    sources = f"--data {args.data}" + (f" and --val-data {args.val_data}" if args.val_data else "")
    _step(2, f"reading the images of {sources}")
    splits = {"train": _images(args, model, args.data, args.tfds_split)}
    if args.val_data:
        splits["val"] = _images(args, model, args.val_data, args.val_tfds_split)
        kp.datasets.check_same_classes(
            splits["train"][1],
            splits["val"][1],
            sources=(args.data, args.val_data),
            labels=("--data", "--val-data"),
        )
    probed = _as_probed(args, model, args.num_classes or len(splits["train"][1]))
    points = len(probed.points)
    _step(3, f"extracting the features of {_count(points, 'point')} into {out / 'cache'}")
    for split, (dataset, _) in splits.items():
        kp.FeatureCache.write(
            probed,
            dataset,
            out / "cache",
            split=split,
            batch_size=args.batch_size,
            verbose=0 if args.quiet else 1,
        )
    cache = kp.FeatureCache.open(out / "cache", model=probed)
    _step(
        4,
        f"fitting {_count(points, 'probe')} ({args.solver}) and evaluating "
        f"{'it' if points == 1 else 'them'} on {', '.join(splits)}",
    )
    report = _fit_and_report(probed, cache, args)
    if not _writes_outputs():
        return
    _step(5, f"writing report.json, report.csv, errors.png and probed.keras to {out}")
    _write_report(report, out / "report.json")
    _write_report(report, out / "report.csv")
    kp.plots.plot_errors(report).savefig(out / "errors.png", dpi=110)
    probed.save(out / "probed.keras")
    print(f"wrote report.json, report.csv, errors.png, probed.keras and cache/ to {out}")


def _read_report(path):
    from keras_probes.report import ProbeReport

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No report at {path}.")
    return ProbeReport.from_csv(path) if path.suffix == ".csv" else ProbeReport.from_json(path)


def _report(args):
    report = _read_report(args.report)
    for kind, asked, known in (
        ("split", args.splits, report.splits),
        ("metric", args.metrics, report.metrics),
    ):
        unknown = [a for a in asked or [] if a not in known]
        if unknown:
            raise ValueError(f"No {kind} {unknown[0]!r} in {args.report}; it has {known}.")
    if args.level is not None and not args.intervals:
        raise ValueError("--level is the confidence level of the intervals: pass --intervals too.")
    shown = args.splits or report.splits
    if args.intervals and not report.runs and not set(shown) & set(report.outcomes):
        raise ValueError(_no_outcomes(args.report, f" on splits {shown}", "its figures have"))
    level = 0.95 if args.level is None else args.level
    print(report.table(args.splits, args.metrics, intervals=args.intervals, level=level))


#: `--level`: a confidence level.
_CONFIDENCE = _checked(float, "a confidence level in (0, 1)", lambda v: 0 < v < 1)


def _no_outcomes(path, where, what):
    return (
        f"{path} keeps no examples' outcomes{where}, so {what} no intervals: reports of "
        "`keras-probes fit` and `probe` keep each held-out example's outcome (reports of "
        "older versions do not). Fit the probes again."
    )


def _compare(args):
    asked = [*filter(None, (args.a, args.b))]
    asked += [f"--other {args.other}"] * bool(args.other) + ["--adjacent"] * args.adjacent
    wanted = [bool(args.a), bool(args.b), bool(args.other), args.adjacent]
    if wanted not in ([True, True, False, False], [True, False, True, False], [False] * 3 + [True]):
        raise ValueError(
            "Name two points (A B), one point and --other CONTROL, or --adjacent. "
            f"Received: {' '.join(asked) or 'nothing'}"
        )
    report = _read_report(args.report)
    other = _read_report(args.other) if args.other else None
    for point in filter(None, (args.a, args.b)):
        if point not in report.points:
            raise ValueError(f"No point {point!r} in {args.report}; it has {report.points}.")
    split = args.split or _held_out_split(report, args.report)
    alpha = f"{(1 - args.level) * 100:.3g}% level"
    if args.adjacent:
        pairs = report.compare_adjacent(split, args.metric, args.level)
        if not pairs:
            raise ValueError(
                f"{args.report} keeps the outcomes of fewer than two points on split {split!r}: "
                "nothing is adjacent."
            )
        print(
            f"{split} {args.metric}, each point against the next deeper one (Holm's adjustment "
            f"over {len(pairs)} pairs):"
        )
        for pair in pairs:
            print(f"{pair}: {'significant' if pair.significant() else 'not significant'}")
        differ = [f"{pair.a} and {pair.b}" for pair in pairs if pair.significant()]
        print(
            f"differ at the {alpha}: {'; '.join(differ)}"
            if differ
            else f"no adjacent points differ at the {alpha}"
        )
        return
    comparison = report.compare(
        split, args.a, args.b, other=other, metric=args.metric, level=args.level
    )
    values = report.values(split, args.metric)
    if other is None:
        figures = f"{args.a} {values[args.a]:.4f}, {args.b} {values[args.b]:.4f}"
    else:
        theirs = other.values(split, args.metric)[args.a]
        figures = f"{args.a} {values[args.a]:.4f} in {args.report}, {theirs:.4f} in {args.other}"
    verdict = (
        f"the difference is significant at the {alpha}"
        if comparison.significant()
        else f"no significant difference at the {alpha}"
    )
    print(comparison)
    print(f"{split} {args.metric}: {figures}; {verdict}")


def _held_out_split(report, path):
    """The report's only split with outcomes: what `compare` tests without --split."""
    kept = [split for split in report.splits if split in report.outcomes]
    if not kept:
        raise ValueError(_no_outcomes(path, "", "its figures have"))
    if len(kept) > 1:
        raise ValueError(f"{path} keeps outcomes for splits {kept}: pass --split, one of them.")
    return kept[0]


def _plot(args):
    from keras_probes import plots

    figure = plots.plot_errors(
        _read_report(args.report),
        splits=args.splits,
        metric=args.metric,
        title=args.title,
        yscale="log" if args.log else "linear",
    )
    figure.savefig(args.out, dpi=110)
    print(f"figure: {args.out}")


def _export(args):
    import numpy as np

    kp = _library()

    model = _load_model(args)
    if not isinstance(model, kp.ProbedModel):
        raise TypeError(
            f"{args.model} holds a plain {type(model).__name__}, not a ProbedModel with fitted "
            "probes: make one with `keras-probes probe` (OUT/probed.keras) or `fit --save`."
        )
    warmup = None
    if args.warmup_data:
        dataset, _ = _images(args, model, args.warmup_data, "train", batch_size=3)
        warmup = np.asarray(next(iter(dataset))[0])
        if args.heads_only:
            warmup = {p: np.asarray(v) for p, v in model.extract_features(warmup).items()}
    path = kp.export_serving(
        model,
        args.out,
        version=args.version,
        heads_only=args.heads_only,
        allow_unfitted=args.allow_unfitted,
        allow_new_signatures=args.allow_new_signatures,
        warmup=warmup,
        model_name=args.model_name,
        server_root=args.server_root,
    )
    print(f"exported {path}")


def _folder_name(folder):
    """A folder's own name, whatever the path's spelling (`.`, a trailing `/`)."""
    return Path(os.path.abspath(folder)).name


def _class_indices(args):
    """`{class index: folder}`: the --target of each --class, else the index its name
    gives (a leading number, or an Imagenette WordNet id)."""
    from keras_probes import datasets

    if args.target is not None:
        return dict(zip(args.target, args.classes, strict=True))
    indices = {}
    for folder in args.classes:
        name = _folder_name(folder)
        number = re.match(r"\d+(?![^\W_])", name)
        if number:
            index = int(number.group())
        elif name in datasets.IMAGENETTE_CLASSES:
            index = int(datasets.imagenet_indices([name])[0])
        else:
            raise ValueError(
                f"--class {folder}: its name {name!r} gives no class index; pass --target K "
                "after each --class DIR, or name the folder by its index (e.g. 340 or "
                "340_zebra) or by an Imagenette WordNet id (e.g. n01440764)."
            )
        if index in indices:
            raise ValueError(
                f"--class {indices[index]} and --class {folder} are both class {index}; put "
                "that class's images in one folder."
            )
        indices[index] = folder
    return indices


def _folder_images(args, model, folder):
    """Every image under `folder` (in it or its sub-folders) as one array, read and
    preprocessed as `_images` reads a dataset for `model`: the folder is the only
    class of a temporary folder (a link to it)."""
    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory(prefix="keras_probes_tcav_") as parent:
        link = Path(parent) / "images"
        link.symlink_to(Path(folder).resolve(), target_is_directory=True)
        try:
            dataset, _ = _images(args, model, parent, "train")
            return np.concatenate([np.asarray(images) for images, _ in dataset])
        except (ValueError, OSError, *_tensorflow_errors()) as error:
            # The files' paths as the user gave them, not the link's.
            message = _one_line(error).replace(str(link), folder.rstrip("/\\"))
            raise ValueError(message.replace(parent, folder)) from None


def _tcav(args):
    kp = _library()

    out = Path(args.out)
    classes = _class_indices(args)
    print(f"[1/4] loading the model {args.model}", flush=True)
    model = _load_model(args)
    if isinstance(model, kp.ProbedModel):
        model = model.base
    print("[2/4] reading the images", flush=True)
    concepts = {
        _folder_name(folder): _folder_images(args, model, folder) for folder in args.concept
    }
    random = _folder_images(args, model, args.random)
    inputs = {k: _folder_images(args, model, folder) for k, folder in classes.items()}
    counts = [f"concept {name!r} {len(x)}" for name, x in concepts.items()]
    counts += [f"random {len(random)}"] + [f"class {k} {len(x)}" for k, x in inputs.items()]
    print(f"      images: {', '.join(counts)}", flush=True)
    points = len(args.point)
    print(
        f"[3/4] fitting {args.runs} concept activation vectors per concept and "
        f"{args.runs} random ones at {_count(points, 'point')}; the derivatives of "
        f"{len(classes)} {'class' if len(classes) == 1 else 'classes'}",
        flush=True,
    )
    # A CAV's problem is small: float64, as the library's default solver (LBFGSProbeCV).
    solver = None if args.l2 == "auto" else kp.solvers.LBFGSProbe(l2=args.l2, dtype="float64")
    try:
        report = kp.attribution.tcav_report(
            model,
            args.point,
            concepts,
            random,
            inputs,
            runs=args.runs,
            seed=args.seed,
            reducer=args.reducer,
            solver=solver,
            batch_size=args.batch_size,
            verbose=0 if args.quiet else 1,
        )
    except ValueError as error:
        raise ValueError(_tcav_message(str(error), args)) from None
    table = report.table()
    print(table)
    if not _writes_outputs():
        return
    print(f"[4/4] writing tcav.json, tcav.txt and tcav.png to {out}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    report.to_json(out / "tcav.json")
    (out / "tcav.txt").write_text(table + "\n")
    # Each panel names its class's folder (unless the name is the index alone).
    names = {k: _folder_name(folder) for k, folder in classes.items()}
    names = {k: name for k, name in names.items() if name != str(k)}
    kp.plots.plot_tcav(report, class_names=names).savefig(out / "tcav.png", dpi=110)
    print(f"wrote tcav.json, tcav.txt and tcav.png to {out}")


def _tcav_message(message, args):
    """The library's message in the command line's words: a concept's and the random
    examples are their folders; runs are --runs."""
    for folder in args.concept:
        message = message.replace(f"`concepts[{_folder_name(folder)!r}]`", f"--concept {folder}")
    message = message.replace("`random`", f"--random {args.random}")
    return message.replace("examples", "images").replace("fewer runs", "fewer --runs")


#: The commands that read no model: they never import TensorFlow, so they start at once.
_TEXT_COMMANDS = ("report", "compare", "plot")


def main(argv=None) -> int:
    """Runs the command line; returns the exit status (0, or 2 on an error)."""
    try:
        parser = _parser()
        args = parser.parse_args(argv)
        _check_across(args)
    except _UsageError as error:
        print(_one_line(error), file=sys.stderr)
        return 2
    # Before TensorFlow is imported (by the commands that need it): its C++ logs.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    commands = {"probe": _probe, "report": _report, "plot": _plot, "export": _export}
    commands.update(cache=_cache, fit=_fit, compare=_compare, tcav=_tcav)
    try:
        if args.command in _TEXT_COMMANDS:
            commands[args.command](args)
        else:
            from keras_probes import distribute

            with distribute.strategy_from_tf_config().scope():
                commands[args.command](args)
    except Exception as error:
        if not isinstance(error, (ValueError, TypeError, OSError, *_tensorflow_errors())):
            raise
        message = _as_options(_one_line(error), parser.commands[args.command])
        print(f"keras-probes {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


def _tensorflow_errors():
    """TensorFlow's op errors, if it was imported (a text command never imports it)."""
    tf = sys.modules.get("tensorflow")
    return (tf.errors.OpError,) if tf is not None else ()


def _writes_outputs() -> bool:
    """Whether this process writes reports, figures and models: the first worker only."""
    from keras_probes import distribute

    return distribute.workers()[0] == 0


def _one_line(error):
    message = getattr(error, "message", None) or str(error)
    # A check failing inside the input pipeline: its own words, not TF's frame.
    found = re.search(r"assertion failed: \[(.*?)\]", message)
    return " ".join((found.group(1) if found else message).split())


#: The library's keyword names that a command's option spells otherwise.
_RENAMED = {"export": {"base_dir": "--out", "warmup": "--warmup-data"}}
#: The library's settings that are one flag of the command line.
_FLAGS = {"safe_mode=False": "--unsafe-deserialization"}
#: A keyword's value in a message: a quoted string, a list or tuple, or one token.
_VALUE = r"""'[^']*'|"[^"]*"|\[[^\]]*\]|\([^)]*\)|-?[\w.+-]*\w"""


def _as_options(message, command):
    """`message` of the Python API in the spelling of `command`'s options: "`version`"
    becomes "--version", "version=3" "--version 3", "version=None" "no --version",
    "overwrite=True" "--overwrite", "image_size=[32, 32]" "--image-size 32 32",
    "safe_mode=False" "--unsafe-deserialization". Only the names of the command's own
    options are translated."""
    options = {
        action.dest: action.option_strings[-1]
        for action in command._actions
        if action.option_strings and action.option_strings[-1].startswith("--")
    }
    options.update(_RENAMED.get(command.prog.split()[-1], {}))
    for phrase, flag in _FLAGS.items():
        if flag in options.values():
            message = message.replace(phrase, flag)
    names = "|".join(sorted(map(re.escape, options), key=len, reverse=True))
    message = re.sub(rf"`({names})`", lambda m: options[m.group(1)], message)

    def spell(match):
        option, value = options[match.group(1)], match.group(2)
        if value is None or value == "True":
            return option
        if value in ("None", "False"):
            return f"no {option}"
        return f"{option} {_as_words(value)}"

    message = re.sub(rf"(?<![\w.`])({names})=({_VALUE})?", spell, message)
    # A message that gave the option beside the keyword says it once now.
    return re.sub(r"(--[\w-]+) \(\1\)", r"\1", message)


def _as_words(value):
    """A Python value as command-line words: `'tf'` -> tf, `[32, 32]` -> 32 32, and a
    placeholder tuple `(height, width)` -> HEIGHT WIDTH, as argparse shows metavars."""
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        if value[:1] in "([":
            return " ".join(part.strip().upper() for part in value[1:-1].split(","))
        return value
    if isinstance(parsed, list | tuple):
        return " ".join(str(item) for item in parsed)
    return str(parsed)


if __name__ == "__main__":
    sys.exit(main())
