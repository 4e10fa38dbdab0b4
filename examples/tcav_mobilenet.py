"""TCAV on a pretrained ImageNet MobileNet: which concepts do Imagenette classes depend on?

Kim et al.'s (2018) Testing with Concept Activation Vectors, with
`kp.attribution.tcav_report`, on
`keras.applications.MobileNet(alpha=0.75, weights="imagenet")` (its 1000-way
classifier; the logit before the softmax is differentiated) at four blocks
from shallow to deep, for five Imagenette classes (their ImageNet indices;
their Imagenette `val` images are the class examples). A concept is a set of
images anyone can make:

- textures drawn with NumPy and scikit-image at 224x224: `striped`, `zigzag`,
  `checkered` and `dotted` (polka dots on a square or hexagonal lattice), each
  image with its own random orientation, spacing, phase and two random
  colours of different brightness (seeded), so that only the pattern is
  common to a set;
- colours, chosen by `kp.concepts` measures among the 1000 ImageNet sample
  images (one per class, `../shared/data/imagenet_samples`): the images of
  most `green` and most `blue` hue ratio and of most `whiteness` (each
  measured on the 224x224 centre crop averaged down to 112x112; each image in
  one set at most);
- `random`: a held-out set of those ImageNet images, drawn at random: the
  sanity check. Being as random as the random sets, it should be significant
  for no class at any point.

The random examples are the other ImageNet sample images (images of many
classes; none of them is in a concept set, so the random sets lack the
greenest, bluest and whitest images the colour concepts took). For each
point, `runs` CAVs per concept, each fitted on its own disjoint share of the
concept's images and of the random images, and `runs` random-vs-random CAVs
on further disjoint shares: each class's TCAV scores along the concept's CAVs
are tested against the scores along the random CAVs (two-sided t-test), and
the p-values of all concepts, points and classes together are Holm-adjusted.
A CAV is fitted on the point's channel averages and placed at every position
of the feature map (`kp.attribution.directional_derivatives`).

The deepest point is `conv_pw_12_relu`, not the last block's: after
`conv_pw_13_relu` the network only averages and applies its linear
classifier, so the derivative along any direction there is the same for every
image (each TCAV score would be 0 or 1).

Offline, the weights come from the shared data folder (see `_offline.py`), the
images from its Imagenette subset and its ImageNet samples.

Run it from the repository root:

```
python examples/tcav_mobilenet.py              # minutes on 2 CPU cores (see the README)
python examples/tcav_mobilenet.py --quick      # a smoke run: 2 runs, 2 points, 2 classes
python examples/tcav_mobilenet.py --runs 12 --per-run 8 --out /tmp/tcav
```

It prints the TCAV table (every score with its random CAVs' score and its
Holm-adjusted p-value) and, per class, the concepts it depends on
significantly, and writes `tcav_mobilenet_table.txt`,
`tcav_mobilenet_report.json` (`kp.attribution.TCAVReport.to_json`),
`tcav_mobilenet.json` (every score and p-value, the image sets, the settings,
the versions and the timings) and `tcav_mobilenet.png` (`kp.plots.plot_tcav`)
to `--out`: by default `examples/out/`, and `examples/out/variants/quick/` for
`--quick` (other options: see `--help`), as every example; the committed run's
files are copied into `results/`.
"""

import _offline
import _outputs

_offline.use_shared_keras_cache()  # before keras is imported: it reads KERAS_HOME once

import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"

#: The classes tested: ImageNet index -> name (all Imagenette classes).
CLASSES = {
    574: "golf ball",
    569: "garbage truck",
    497: "church",
    701: "parachute",
    566: "French horn",
}
#: The points, shallow to deep (`kp.points.resolve(model, "blocks")` lists them all).
POINTS = ("conv_pw_3_relu", "conv_pw_5_relu", "conv_pw_9_relu", "conv_pw_12_relu")
#: Colour concepts: name -> the `kp.concepts` measure whose highest images make it.
COLOURS = {"green": "green", "blue": "blue", "white": "whiteness"}
#: The side of the images a colour is measured on (the 224x224 crop, averaged down).
MEASURE_SIZE = 112
SIZE = 224


def arguments() -> _outputs.ScriptParser:
    """The command line, built before TensorFlow is imported."""
    parser = _outputs.ScriptParser(OUT, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", type=int, default=8, help="CAVs per concept and point, and random CAVs"
    )
    parser.add_argument(
        "--per-run", type=int, default=12, help="images of each concept per run (CAV)"
    )
    parser.add_argument(
        "--class-images", type=int, default=100, help="Imagenette val images per class"
    )
    parser.add_argument(
        "--classes",
        type=int,
        nargs="+",
        default=list(CLASSES),
        choices=list(CLASSES),
        help="ImageNet indices of the classes tested",
    )
    parser.add_argument("--points", nargs="+", default=list(POINTS), help="layer names")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 runs of 4 images, 80 ImageNet images, 2 points, 2 classes of 6 images",
    )
    return parser


if __name__ == "__main__":
    arguments().parse_args()  # --help and usage errors before TensorFlow is imported (below)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # fewer TensorFlow C++ start-up logs

import keras  # noqa: E402
import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import scipy  # noqa: E402
import skimage  # noqa: E402
import sklearn  # noqa: E402
import tensorflow as tf  # noqa: E402
from skimage import filters  # noqa: E402

import keras_probes as kp  # noqa: E402

#: The Rec. 601 luma weights: two colours of one texture image differ in brightness.
LUMA = np.array([0.299, 0.587, 0.114])


# -- textures ---------------------------------------------------------------------


def _rotated(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates `(u, v)` along a random orientation."""
    theta = rng.uniform(0.0, np.pi)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    return x * np.cos(theta) + y * np.sin(theta), -x * np.sin(theta) + y * np.cos(theta)


def _paint(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A pattern `mask` in two random colours (luma at least 60 apart), its edges
    smoothed (scikit-image's Gaussian filter) and a little pixel noise added."""
    while True:
        ink, paper = rng.uniform(0.0, 255.0, size=(2, 3))
        if abs(LUMA @ (ink - paper)) > 60.0:
            break
    weight = filters.gaussian(mask.astype(np.float64), sigma=0.8)[..., None]
    image = weight * ink + (1.0 - weight) * paper + rng.normal(0.0, 6.0, (SIZE, SIZE, 3))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def striped(rng: np.random.Generator) -> np.ndarray:
    """Straight stripes: period 10-40 pixels, duty 35-65%."""
    u, _ = _rotated(rng)
    period = rng.uniform(10.0, 40.0)
    return _paint((u / period + rng.uniform()) % 1.0 < rng.uniform(0.35, 0.65), rng)


def zigzag(rng: np.random.Generator) -> np.ndarray:
    """Zigzag stripes: stripes 14-40 pixels apart, bent by a triangle wave."""
    u, v = _rotated(rng)
    period, wavelength = rng.uniform(14.0, 40.0), rng.uniform(16.0, 48.0)
    amplitude = rng.uniform(0.3, 0.8) * wavelength
    phase = u / wavelength
    triangle = 4.0 * np.abs(phase - np.floor(phase + 0.5)) - 1.0
    bent = (v + amplitude * triangle) / period + rng.uniform()
    return _paint(bent % 1.0 < rng.uniform(0.35, 0.6), rng)


def checkered(rng: np.random.Generator) -> np.ndarray:
    """A checkerboard of 10-40-pixel cells."""
    u, v = _rotated(rng)
    cell = rng.uniform(10.0, 40.0)
    return _paint((np.floor(u / cell) + np.floor(v / cell)) % 2 == 0, rng)


def dotted(rng: np.random.Generator) -> np.ndarray:
    """Polka dots 14-44 pixels apart on a square or hexagonal lattice, radius 20-38%
    of the spacing."""
    u, v = _rotated(rng)
    step = rng.uniform(14.0, 44.0)
    radius = rng.uniform(0.2, 0.38) * step
    row = np.round(v / step)
    shift = 0.5 * (row % 2) if rng.uniform() < 0.5 else 0.0  # hexagonal: odd rows shifted
    du = u / step - shift - np.round(u / step - shift)
    dv = v / step - row
    return _paint((du**2 + dv**2) * step**2 < radius**2, rng)


TEXTURES = {"striped": striped, "zigzag": zigzag, "checkered": checkered, "dotted": dotted}


def textures(count: int, seed: int) -> dict[str, np.ndarray]:
    """`count` images of each texture, uint8 `(count, 224, 224, 3)`; each texture
    its own seeded stream."""
    sets = {}
    for index, (name, draw) in enumerate(TEXTURES.items()):
        rng = np.random.default_rng([seed, index])
        sets[name] = np.stack([draw(rng) for _ in range(count)])
    return sets


# -- real images --------------------------------------------------------------------


def read_images(paths: list[Path]) -> np.ndarray:
    """RGB uint8 `(n, 224, 224, 3)`: each image's 224x224 centre crop."""
    images = []
    for path in paths:
        with PIL.Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
        top, left = (array.shape[0] - SIZE) // 2, (array.shape[1] - SIZE) // 2
        if top < 0 or left < 0:
            raise ValueError(f"{path} is smaller than {SIZE}x{SIZE}: {array.shape[:2]}")
        images.append(array[top : top + SIZE, left : left + SIZE])
    return np.stack(images)


def colour_sets(images: np.ndarray, count: int) -> tuple[dict[str, np.ndarray], dict]:
    """The `count` images highest in each colour measure (`COLOURS`), each image in one
    set at most (chosen in `COLOURS`' order).

    Returns:
        `({concept: indices into images}, {concept: {"measure", "lowest", "median_all"}})`.
    """
    factor = SIZE // MEASURE_SIZE
    small = images.reshape(len(images), MEASURE_SIZE, factor, MEASURE_SIZE, factor, 3)
    values = kp.concepts.measure(small.mean(axis=(2, 4)), list(COLOURS.values()))
    taken = np.zeros(len(images), bool)
    chosen, summary = {}, {}
    for concept, measure in COLOURS.items():
        order = [i for i in np.argsort(-values[measure], kind="stable") if not taken[i]]
        chosen[concept] = np.array(order[:count])
        taken[chosen[concept]] = True
        summary[concept] = {
            "measure": measure,
            "lowest": float(values[measure][chosen[concept]].min()),
            "median_all": float(np.median(values[measure])),
        }
    return chosen, summary


def imagenette_val(wnid: str, count: int) -> list[Path]:
    """The first `count` val images of one Imagenette class, in sorted order."""
    paths = sorted((kp.datasets.imagenette_dir() / "val" / wnid).glob("*.JPEG"))
    if len(paths) < count:
        raise ValueError(f"Imagenette val/{wnid} has {len(paths)} images; {count} asked for.")
    return paths[:count]


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 in [-1, 1], as MobileNet was trained."""
    return keras.applications.mobilenet.preprocess_input(images.astype("float32"))


# -- the run ----------------------------------------------------------------------------


def summary_lines(report: kp.attribution.TCAVReport, alpha: float = 0.05) -> list[str]:
    """Per class, the concepts significant at some point (Holm), with direction."""
    lines = []
    for target in report.targets:
        found = []
        for concept in report.concepts:
            for point in report.points:
                r = report.get(concept, point, target)
                if r.significant(alpha):
                    sign = "+" if r.score > r.random_score else "-"
                    found.append(
                        f"{concept}{sign} @ {point} {r.score:.2f} vs {r.random_score:.2f} "
                        f"(p={r.adjusted_pvalue:.2g})"
                    )
        name = CLASSES.get(target, str(target))
        lines.append(f"{name} ({target}): " + ("; ".join(found) if found else "none"))
    return lines


def main(argv=None):
    args = arguments().parse_args(argv)
    samples = 1000
    if args.quick:
        args.runs, args.per_run, args.class_images, samples = 2, 4, 6, 80
        args.points, args.classes = [args.points[0], args.points[-1]], args.classes[:2]
    start = time.perf_counter()
    timings = {}
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    count = args.runs * args.per_run  # images per concept

    # Real images: the ImageNet samples (colour concepts, the random concept, the random
    # pool) and the class examples.
    sample_dir = _offline.shared_data_dir() / "imagenet_samples"
    sample_paths = sorted(sample_dir.glob("*.jpg"))
    if len(sample_paths) != 1000:
        raise FileNotFoundError(f"{sample_dir} holds {len(sample_paths)} images, not 1000.")
    if samples < len(sample_paths):
        keep = np.sort(rng.choice(len(sample_paths), samples, replace=False))
        sample_paths = [sample_paths[i] for i in keep]
    wnids = {index: wnid for wnid, index in kp.datasets.IMAGENETTE_CLASSES.items()}
    class_paths = {k: imagenette_val(wnids[k], args.class_images) for k in args.classes}
    tick = time.perf_counter()
    samples_uint8 = read_images(sample_paths)
    classes = {k: preprocess(read_images(paths)) for k, paths in class_paths.items()}
    timings["read images"] = time.perf_counter() - tick

    tick = time.perf_counter()
    chosen, colour_summary = colour_sets(samples_uint8, count)
    timings["colour measures"] = time.perf_counter() - tick
    rest = np.setdiff1d(np.arange(len(sample_paths)), np.concatenate(list(chosen.values())))
    chosen["random"] = np.sort(rng.choice(rest, count, replace=False))
    pool = np.setdiff1d(rest, chosen["random"])
    print(
        f"{len(sample_paths)} ImageNet sample images: {count} per colour concept "
        f"({', '.join(COLOURS)}), {count} held out as the random concept, {len(pool)} random"
    )
    for concept, figures in colour_summary.items():
        print(
            f"  {concept}: {figures['measure']} >= {figures['lowest']:.3f} "
            f"(median of all: {figures['median_all']:.3f})"
        )

    tick = time.perf_counter()
    concepts = textures(count, args.seed)
    timings["draw textures"] = time.perf_counter() - tick
    concepts = {name: preprocess(images) for name, images in concepts.items()}
    for concept in [*COLOURS, "random"]:
        concepts[concept] = preprocess(samples_uint8[chosen[concept]])
    random = preprocess(samples_uint8[pool])
    del samples_uint8

    # The real loading call: it downloads when online; offline the file is in the
    # shared Keras cache that _offline.py points KERAS_HOME at.
    model = keras.applications.MobileNet(alpha=0.75, weights="imagenet")
    print(
        f"TCAV: {len(concepts)} concepts x {len(args.points)} points x {len(classes)} classes, "
        f"{args.runs} runs of {args.per_run} concept images against "
        f"{len(random) // (3 * args.runs)}+ random images, "
        f"{args.class_images} images per class"
    )
    tick = time.perf_counter()
    report = kp.attribution.tcav_report(
        model,
        args.points,
        concepts,
        random,
        classes,
        runs=args.runs,
        seed=args.seed,
        batch_size=args.batch_size,
        verbose=2,
    )
    timings["tcav_report"] = time.perf_counter() - tick

    table = report.table()
    summary = summary_lines(report)
    sanity = [r for r in report.results if r.concept == "random"]
    false_positives = sum(r.significant() for r in sanity)
    sanity_line = (
        f"Sanity check: the held-out random concept is significant in {false_positives} of "
        f"{len(sanity)} tests (Holm); smallest unadjusted p = "
        f"{min(r.pvalue for r in sanity):.3g}"
    )
    print(f"\n{table}\n")
    print("Concepts each class depends on (Holm-adjusted p < 0.05; + raises, - lowers the logit):")
    print("\n".join(f"  {line}" for line in summary))
    print(sanity_line)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tcav_mobilenet_table.txt").write_text(
        f"{table}\n\nConcepts each class depends on (Holm-adjusted p < 0.05; + raises, - lowers "
        "the logit):\n" + "\n".join(summary) + f"\n{sanity_line}\n"
    )
    report.to_json(args.out / "tcav_mobilenet_report.json")
    kp.plots.plot_tcav(report, class_names=CLASSES).savefig(args.out / "tcav_mobilenet.png", dpi=90)
    timings["total"] = time.perf_counter() - start
    # CPU seconds of all the process's threads: the wall time of a run alone on the
    # machine is about this over the cores it uses (other jobs share them here).
    timings["cpu"] = time.process_time()

    record = {
        "python": sys.version,
        "platform": platform.platform(),
        "versions": {
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__,
            "scikit-image": skimage.__version__,
            "keras_probes": kp.__version__,
        },
        "settings": {
            **{k: v for k, v in vars(args).items() if k != "out"},
            "model": "keras.applications.MobileNet(alpha=0.75, weights='imagenet')",
            "imagenet_samples": len(sample_paths),
            "test": "two-sided t-test of the concept CAVs' scores against the random CAVs' "
            "(equal variances), Holm-adjusted over all concepts, points and classes",
        },
        "classes": {
            str(k): {"name": CLASSES[k], "wnid": wnids[k], "images": [p.name for p in paths]}
            for k, paths in class_paths.items()
        },
        "concepts": {
            **{
                name: {"kind": "texture", "images": count, "drawn by": draw.__doc__}
                for name, draw in TEXTURES.items()
            },
            **{
                name: {
                    "kind": "colour",
                    **colour_summary[name],
                    "images": [sample_paths[i].name for i in chosen[name]],
                }
                for name in COLOURS
            },
            "random": {
                "kind": "held-out random ImageNet sample images (the sanity check)",
                "images": [sample_paths[i].name for i in chosen["random"]],
            },
        },
        "random_images": [sample_paths[i].name for i in pool],
        "results": [r.to_dict() for r in report.results],
        "summary": summary,
        "sanity_check": {
            "tests": len(sanity),
            "significant": false_positives,
            "pvalues": [r.pvalue for r in sanity],
            "adjusted_pvalues": [r.adjusted_pvalue for r in sanity],
        },
        "seconds": timings,
    }
    (args.out / "tcav_mobilenet.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"\nWrote tcav_mobilenet{{.json,_report.json,_table.txt,.png}} to {args.out}")
    print(
        f"Total time: {timings['total']:.0f} s (TCAV: {timings['tcav_report']:.0f} s), "
        f"{timings['cpu']:.0f} CPU seconds"
    )


if __name__ == "__main__":
    main()
