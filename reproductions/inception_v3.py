"""Inception v3 probed on 1000 random features per block (Alain & Bengio, Sec. 4.2, App. C).

The paper probes Inception v3 on ImageNet after two weeks of training and draws
the probes' errors as colours on the network's diagram (Fig. 5: red is bad,
green is good): the smooth gradient from the input to the output shows linear
separability growing monotonically with depth. Its early layers have millions of
features, so each probe sees only 1000 fixed random ones (App. C).

Here `keras.applications.InceptionV3(weights="imagenet")` (299x299 inputs) is
probed at the outputs of its 11 mixed blocks (`points="inception_v3"`), each
reduced to 1000 fixed random features (`kp.RandomSubset(1000, seed)`). As in
`resnet50.py`, the features of the train and val images are cached once
(`kp.FeatureCache`, resumable and re-used) and each probe is fitted to its
optimum by L-BFGS. It prints the val error per point, the monotonicity (minus
Kendall's tau of error against depth) and the pretrained network's own error
on the same images and classes, every figure with its 95% interval over the
val images (which adjacent points differ: McNemar's exact test, Holm-adjusted;
the last probe against the main head: McNemar on the same images), and draws
Fig. 5 as a row of boxes coloured by error, each with its interval, the
pretrained classifier ("main head") last: inception_v3.json,
inception_v3_report.json (the `kp.ProbeReport`, with each val image's outcome)
and inception_v3.png, to results/ for the committed run (`--model mobilenet`,
below), elsewhere for any other (see `--out`).

Data as in `resnet50.py`: Imagenette by default (TFDS if prepared, else the
shared offline subset of 3000 train / 1000 val images), or any TFDS name or
image folder with `--data`. With 10 classes the errors are far smaller than the
paper's 1000-class ones: compare the shape.

Offline, the Inception v3 weight file is not available: the script then stops
with one line naming the file and the folder, and `--model mobilenet` runs the
same protocol (1000 random features per point) on the pretrained MobileNet
(alpha 0.75) of the shared cache, at its 14 preset points.

    python reproductions/inception_v3.py                  # Inception v3 (needs its weights)
    python reproductions/inception_v3.py --model mobilenet   # 7 minutes here, cross-validating
    python reproductions/inception_v3.py --quick --weights none   # smoke run, random weights
"""

import _common  # noqa: I001  (first: it points Keras at the shared weight files)


def arguments():
    """The command line (the committed run is MobileNet's: no Inception v3 weights here)."""
    return _common.imagenet_parser(
        __doc__, "inception_v3", "inception_v3", committed=["--model mobilenet"]
    )


if __name__ == "__main__":
    arguments().parse_args()  # --help and usage errors before TensorFlow is imported (below)

import _imagenet  # noqa: E402

import keras_probes as kp  # noqa: E402


def compare(run: _common.Run, results: dict) -> None:
    """The paper's Inception v3 observations (1000 ImageNet classes) beside ours, ours
    with their 95% intervals and the differences we state with their paired tests."""
    points = results["points"]
    errors, bounds = results["val_error"], results["val_error_interval"]
    run.compare(
        "monotonicity of val error with depth (-Kendall tau)",
        paper="~1 (smooth colours)",
        ours=_imagenet.interval_text(results["monotonicity"], results["monotonicity_interval"]),
    )
    run.compare(
        "val error of the first probe",
        paper="high (red)",
        ours=_imagenet.interval_text(errors[points[0]], bounds[points[0]]),
    )
    run.compare(
        "val error of the last probe",
        paper="low (green)",
        ours=_imagenet.interval_text(errors[points[-1]], bounds[points[-1]]),
    )
    rises = [c for c in results["adjacent"] if c["difference"] < 0]
    run.compare(
        "adjacent points where the deeper is worse (significant, McNemar with Holm)",
        paper="none (smooth)",
        ours=f"{len(rises)} of {len(results['adjacent'])} "
        f"({sum(c['significant'] for c in rises)} significant)",
    )
    pretrained = results["pretrained_val_error"]
    known = pretrained is not None
    run.compare(
        "main head's own top-1 val error",
        paper="not given",
        ours=_imagenet.interval_text(pretrained, results["pretrained_val_error_interval"])
        if known
        else "n/a",
    )
    run.compare(
        "last probe minus main head's error",
        paper="not given",
        ours=results["last_probe_vs_pretrained"]["text"] if known else "n/a",
    )
    run.compare(
        "auxiliary head ahead of the main head",
        paper="slightly",
        ours="n/a (no aux head)",
    )


def figure(report: kp.ProbeReport, results: dict):
    """The paper's Fig. 5: the probes as boxes along depth coloured by error, main head last."""
    references = {}
    if results["weights"] == "imagenet":
        bounds = results["pretrained_val_error_interval"]
        label = "main head (pretrained)"
        if bounds is not None:
            label += f"\n[{bounds[0]:.3f}, {bounds[1]:.3f}]"
        references[label] = results["pretrained_val_error"]
    return kp.plots.plot_error_colors(
        report,
        split="val",
        references=references,
        title=_imagenet.title(
            results,
            "Alain & Bengio Sec. 4.2 / Fig. 5 protocol: probes on 1000 random features at "
            f"{len(results['points'])} points, fitted by L-BFGS",
        ),
    )


def notes(results: dict) -> list[str]:
    sizes = {p: 1 for p in results["points"]}
    for point, shape in results["point_shapes"].items():
        for dim in shape:
            sizes[point] *= dim
    smallest, largest = min(sizes.values()), max(sizes.values())
    separated = sum(error == 0 for error in results["train_error"].values())
    result = [
        f"Each probe sees 1000 fixed random features of its point (App. C), out of "
        f"{smallest:,} to {largest:,}. The paper's Fig. 5 colours probe training error "
        "after 2 weeks of training; ours colours val error: with 1000 features and "
        f"{results['num_train']} train images the train error is 0 at {separated} of "
        f"{len(sizes)} points (in the JSON).",
        "keras.applications.InceptionV3 has no auxiliary head to compare with the main one.",
    ]
    if results["stands_in_for_paper_model"]:
        result.append(
            "The points are MobileNet's stem and its 13 depthwise-separable blocks, not "
            "Inception v3's 11 mixed blocks."
        )
    return result


EXPERIMENT = _imagenet.Experiment(
    name="inception_v3",
    section="Sec. 4.2 and App. C (Inception v3)",
    model="inception_v3",
    reducer="random",
    compare=compare,
    figure=figure,
    notes=notes,
)


def main(argv=None) -> dict:
    return _imagenet.main(arguments().parse_args(argv), EXPERIMENT)


if __name__ == "__main__":
    main()
