"""ResNet-50 probed at its 17 meaningful layers (Alain & Bengio, arXiv 1610.01644, Sec. 4.1).

The paper probes the pretrained Keras ResNet-50 on ImageNet at the stem and the
16 residual block outputs, each feature map average-pooled per channel, and
finds that the probes' validation error falls almost monotonically with depth
(the last probes at about 0.41 and 0.39, the network's own top-1 error about
0.25).

Here `keras.applications.ResNet50(weights="imagenet")` is probed at the same 17
points (`points="resnet50"`, average pooling). The features of the train and
val images are extracted once into a feature cache (`kp.FeatureCache`: an
interrupted run resumes, a second run re-uses it), then every probe is fitted
to its optimum by L-BFGS, its penalty chosen per point by 5-fold
cross-validation on the train images (`kp.solvers.LBFGSProbeCV(cv=5)`; val is
the split reported, so it is not used to choose; `--l2 1e-4` fixes one). It
prints the val error per point, the monotonicity (minus Kendall's tau of error
against depth) and, beside them, the pretrained network's own error on the
same images and classes (its 1000-way scores restricted to the dataset's
classes), every figure with its 95% interval over the val images; which
adjacent points differ (McNemar's exact test, Holm-adjusted) and whether the
last probe differs from the pretrained classifier (McNemar, same images).
It writes resnet50.json, resnet50_report.json (the `kp.ProbeReport`, with
each val image's outcome) and resnet50.png (error bands): to results/ for the
committed run (`--model mobilenet`, below), elsewhere for any other (see `--out`).

Data: real images of ImageNet classes, by default Imagenette (10 classes): TFDS
`imagenette` if already prepared, else the shared offline subset (3000 train /
1000 val images), else a TFDS download. `--data` takes any TFDS name or image
folder (with train/ and val/). With 10 classes the errors are far smaller than
the paper's 1000-class ones: compare the shape.

Offline, the ResNet-50 weight file is not available: the script then stops
with one line naming the file and the folder, and `--model mobilenet` runs the
same protocol on the pretrained MobileNet (alpha 0.75) of the shared cache.

    python reproductions/resnet50.py                  # ResNet-50 (needs its weights)
    python reproductions/resnet50.py --model mobilenet   # 14 minutes here, cross-validating
    python reproductions/resnet50.py --quick --weights none   # smoke run, random weights
    python reproductions/resnet50.py --data path/to/folder --cache /tmp/cache --l2 1e-3
"""

import _common  # noqa: I001  (first: it points Keras at the shared weight files)


def arguments():
    """The command line (the committed run is MobileNet's: no ResNet-50 weights here)."""
    return _common.imagenet_parser(__doc__, "resnet50", "resnet50", committed=["--model mobilenet"])


if __name__ == "__main__":
    arguments().parse_args()  # --help and usage errors before TensorFlow is imported (below)

import _imagenet  # noqa: E402

import keras_probes as kp  # noqa: E402

# The paper's Fig. 4a: validation errors of the last two probes (conv5 blocks,
# 7x7x2048), and the pretrained ResNet-50's own top-1 validation error (Fig. 4b;
# Keras documents ResNet50's top-1 accuracy as 0.749).
PAPER_LAST_PROBES = (0.41, 0.39)
PAPER_PRETRAINED_ERROR = 0.25


def compare(run: _common.Run, results: dict) -> None:
    """The paper's ResNet-50 figures (1000 ImageNet classes) beside ours, ours with their
    95% intervals and the differences we state with their paired tests."""
    points = results["points"]
    errors, bounds = results["val_error"], results["val_error_interval"]
    last_two = ", ".join(_imagenet.interval_text(errors[p], bounds[p]) for p in points[-2:])
    between = next(c for c in results["adjacent"] if c["a"] == points[-2])
    run.compare(
        "monotonicity of val error with depth (-Kendall tau)",
        paper="almost 1",
        ours=_imagenet.interval_text(results["monotonicity"], results["monotonicity_interval"]),
    )
    run.compare(
        "val error of the last two probes",
        paper=f"{PAPER_LAST_PROBES[0]}, {PAPER_LAST_PROBES[1]}",
        ours=f"{last_two}; difference {between['text']}",
    )
    pretrained = results["pretrained_val_error"]
    known = pretrained is not None
    run.compare(
        "pretrained model's own val error, probes' classes",
        paper=f"~{PAPER_PRETRAINED_ERROR}",
        ours=_imagenet.interval_text(pretrained, results["pretrained_val_error_interval"])
        if known
        else "n/a",
    )
    run.compare(
        "pretrained model's own val error, 1000-way top-1",
        paper=f"~{PAPER_PRETRAINED_ERROR}",
        ours=_imagenet.interval_text(
            results["pretrained_val_error_1000way"],
            results["pretrained_val_error_1000way_interval"],
        )
        if known
        else "n/a",
    )
    run.compare(
        "last probe minus pretrained model's error",
        paper=f"~{PAPER_LAST_PROBES[1] - PAPER_PRETRAINED_ERROR:+.2f}",
        ours=results["last_probe_vs_pretrained"]["text"] if known else "n/a",
    )


def figure(report: kp.ProbeReport, results: dict):
    """Probe error against depth (the paper's Fig. 4b), with the pretrained head's error."""
    references = {}
    if results["pretrained_val_error"] is not None:
        error = results["pretrained_val_error"]
        text = _imagenet.interval_text(error, results["pretrained_val_error_interval"])
        label = f"pretrained {results['model']}'s own classifier, val ({text})"
        references[label] = error
    reducer = "average-pooled" if "pooling" in results["reducer"] else "random-feature"
    return kp.plots.plot_errors(
        report,
        splits=["train", "val"],
        references=references,
        title=_imagenet.title(
            results,
            f"Alain & Bengio Sec. 4.1 protocol: linear probes at {len(results['points'])} "
            f"{reducer} points, fitted by L-BFGS",
        ),
    )


def notes(results: dict) -> list[str]:
    if results["stands_in_for_paper_model"]:
        return [
            f"The paper's 17 points are ResNet-50's stem and residual blocks; here the "
            f"{len(results['points'])} points are MobileNet's stem and its 13 "
            "depthwise-separable blocks."
        ]
    return []


EXPERIMENT = _imagenet.Experiment(
    name="resnet50",
    section="Sec. 4.1 (ResNet-50)",
    model="resnet50",
    reducer="gap",
    compare=compare,
    figure=figure,
    notes=notes,
)


def main(argv=None) -> dict:
    return _imagenet.main(arguments().parse_args(argv), EXPERIMENT)


if __name__ == "__main__":
    main()
