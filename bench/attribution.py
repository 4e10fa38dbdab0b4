"""The cost of concept attribution: a directional derivative against a forward pass.

Measures, side by side in one process, on the pretrained MobileNet (alpha
0.75, ImageNet weights from the shared offline cache) and real images
(the first Imagenette val images, 224x224, `mobilenet.preprocess_input`,
whole batches):

* forward: `model.predict`, the plain forward pass;
* derivative at a mid point (`conv_pw_7_relu`), at a late one
  (`conv_pw_12_relu`) and at the last block (`conv_pw_13_relu`, after which
  the model is linear: its derivative is one constant for every image, and
  TensorFlow prunes the forward pass it does not depend on):
  `kp.attribution.directional_derivatives(model, point,
  direction, x, target)` on the same batches of images, a random unit
  direction of the point's channel count (placed at every position, as a CAV
  fitted on pooled features is). One forward and one backward pass per
  batch; the backward pass runs from the logit down to the point only.

Each call of `directional_derivatives` re-traces the model with the direction
added at the point and builds and traces its predict loop: a fixed cost per
call. So the images are fed from a generator (`tf.data.Dataset.from_generator`)
that notes when each batch is asked for: in steady state, the time between two
requests is one step of the loop, whatever it prefetches. The cost per batch is
the median steady step (the first `--skip` steps of each call left out: the
first step runs once-only work), the same way for `model.predict` on the same images and batch size;
their ratio, derivative / forward, is the figure the closing note asks for.
The whole calls' times are printed beside it, and the fixed cost per call (a
whole call minus its steps at the steady cost). One warm-up call of each way
first, then `--repeats` calls of each, interleaved (the order rotates) so
background load hits every way alike.

Then one `kp.attribution.tcav_report` call (two concepts, two points, one
class), broken down from outside, without changing the library: the time in
the feature model's `predict` (every concept and random image's pooled
features at both points, one pass), in `kp.attribution.concept_activation_vectors`
(every CAV fit: LBFGSProbeCV, 3 folds), in the derivative loop's `predict`
(the class's images, all CAVs at both points at once) and the rest (tracing
the model, building the feature and derivative models, the t-tests). The
concepts are two Imagenette classes' train images (golf balls, parachutes:
only their cost matters here), the random images ImageNet's one image per
class (`imagenet_samples`), the class Imagenette's tench.

    nice -n 10 python bench/attribution.py             # ~5 minutes here (4 CPU minutes)
    nice -n 10 python bench/attribution.py --quick     # smoke run, ~1 CPU minute
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import _offline  # noqa: E402  (imports neither keras nor keras_probes)

_offline.use_shared_keras_cache()  # before keras is imported: it reads KERAS_HOME once
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_probes as kp  # noqa: E402

MID, LATE = "conv_pw_7_relu", "conv_pw_12_relu"
# After the last block the model is linear (average pooling, the 1x1 classifier): the
# derivative there is one constant for every image, and TensorFlow prunes the forward
# pass it does not depend on.
LAST = "conv_pw_13_relu"
TENCH = 0  # ImageNet index of Imagenette's n01440764
CONCEPTS = {"golf_ball": "n03445777", "parachute": "n03888257"}
# Every directional_derivatives call builds (and traces) its own loop: TF's retracing
# warning counts those, though none of them retraces.
tf.get_logger().setLevel("ERROR")


def imagenette(split: str, wnid: str, count: int) -> np.ndarray:
    """The first `count` images of one Imagenette class, as MobileNet takes them."""
    folder = kp.datasets.imagenette_dir() / split
    dataset, names = kp.datasets.image_folder(folder, (224, 224), 32, preprocess="tf")
    label = names.index(wnid)
    kept = [x[y == label] for x, y in dataset.as_numpy_iterator() if (y == label).any()]
    return np.concatenate(kept)[:count]


def imagenette_val(count: int) -> np.ndarray:
    """The first `count` Imagenette val images (100 per class, sorted by class)."""
    folder = kp.datasets.imagenette_dir() / "val"
    dataset, _ = kp.datasets.image_folder(folder, (224, 224), 32, preprocess="tf")
    return np.concatenate([x for x, _ in dataset.take(-(-count // 32)).as_numpy_iterator()])[:count]


def imagenet_samples(count: int) -> np.ndarray:
    """The first `count` of ImageNet's one-image-per-class samples, resized to 224x224."""
    folder = _offline.shared_data_dir() / "imagenet_samples"
    dataset = keras.utils.image_dataset_from_directory(
        folder, labels=None, image_size=(224, 224), batch_size=32, shuffle=False, verbose=False
    )
    images = np.concatenate([x for x in dataset.take(-(-count // 32)).as_numpy_iterator()])
    return keras.applications.mobilenet.preprocess_input(images[:count])


class BatchClock:
    """Images fed to a predict loop one batch at a time from a generator that notes
    when each batch is asked for, nothing prefetched: the time between two requests
    is the time of one step, tracing and building left out."""

    def __init__(self, x, batch_size):
        self.x, self.batch_size, self.stamps = x, batch_size, []

    def dataset(self):
        def batches():
            for i in range(0, len(self.x), self.batch_size):
                self.stamps.append(time.perf_counter())
                yield self.x[i : i + self.batch_size]
            self.stamps.append(time.perf_counter())

        self.stamps = []
        spec = tf.TensorSpec((None, *self.x.shape[1:]), tf.float32)
        # No batch asked for ahead of its step: tf.data's automatic prefetching off.
        options = tf.data.Options()
        options.autotune.enabled = False
        options.experimental_optimization.inject_prefetch = False
        dataset = tf.data.Dataset.from_generator(batches, output_signature=spec)
        return dataset.with_options(options)

    def steps(self, skip):
        """The seconds between successive requests (the last: for the end), the first
        `skip` left out (the first step runs once-only work)."""
        return list(np.diff(self.stamps)[skip:])


def per_batch_costs(model, x, batch_size, repeats, skip):
    """`{way: (steady seconds per batch, seconds per call)}`: medians over every
    steady step of `repeats` calls, and over the calls."""
    rng = np.random.default_rng(0)
    directions = {}
    for point in (MID, LATE, LAST):
        d = rng.standard_normal(model.get_layer(point).output.shape[-1])
        directions[point] = d / np.linalg.norm(d)
    clock = BatchClock(x, batch_size)
    ways = {
        "forward (predict)": lambda data: model.predict(data, verbose=0),
        **{
            f"derivative @ {point}": lambda data, p=point: kp.attribution.directional_derivatives(
                model, p, directions[p], data, TENCH, verbose=0
            )
            for point in (MID, LATE, LAST)
        },
    }
    for name, way in ways.items():
        start = time.perf_counter()
        way(clock.dataset())
        print(f"  warm-up {name}: {time.perf_counter() - start:.1f} s", flush=True)
    steps = {name: [] for name in ways}
    calls = {name: [] for name in ways}
    per_call = {name: [] for name in ways}  # each call's median step
    spread = {}
    names = list(ways)
    for rep in range(repeats):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            start = time.perf_counter()
            values = np.asarray(ways[name](clock.dataset()))
            calls[name].append(time.perf_counter() - start)
            spread[name] = (float(np.std(values)), float(np.mean(np.abs(values))))
            steps[name] += clock.steps(skip)
            per_call[name].append(statistics.median(clock.steps(skip)))
        done = ", ".join(f"{n} {calls[n][-1]:.1f} s" for n in order)
        print(f"  rep {rep + 1}: {done}", flush=True)
    for name in names:
        ways[name](clock.dataset())
        shown = " ".join(f"{t:.2f}" for t in np.diff(clock.stamps))
        print(f"  {name}: seconds between requests (the last: the end) {shown}")
    for name in names[1:]:
        sd, size = spread[name]
        print(f"  {name}: derivatives' sd over the images {sd:.3g} (mean |d| {size:.3g})")
    forward = names[0]
    paired = {
        name: statistics.median(
            a / b for a, b in zip(per_call[name], per_call[forward], strict=True)
        )
        for name in ways
    }
    fastest = {name: min(steps[name]) / min(steps[forward]) for name in ways}
    costs = {name: (statistics.median(steps[name]), statistics.median(calls[name]))
             for name in ways}  # fmt: skip
    return costs, paired, fastest


class Stopwatch:
    """Time spent in wrapped calls, by part: `wrap(part, fn)` returns `fn` timed."""

    def __init__(self):
        self.seconds = {}

    def add(self, part, seconds):
        self.seconds[part] = self.seconds.get(part, 0.0) + seconds

    def wrap(self, part, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(part(*args) if callable(part) else part, time.perf_counter() - start)

        return timed


def tcav_breakdown(model, concepts, random, x, runs, batch_size):
    """`{part: seconds}` of one `tcav_report` call, timed from outside: the feature
    model's predict, each CAV fit, the derivative loop's predict, and the total."""
    watch = Stopwatch()
    fit, predict = kp.attribution.concept_activation_vectors, keras.Model.predict

    def part(self, *args):
        name = self.name
        return "features" if name.endswith("_features") else (
            "derivatives" if name.endswith("_derivatives") else "other predict")  # fmt: skip

    kp.attribution.concept_activation_vectors = watch.wrap("CAV fits", fit)
    keras.Model.predict = watch.wrap(part, predict)
    try:
        start = time.perf_counter()
        report = kp.attribution.tcav_report(
            model, [MID, LATE], concepts, random, {TENCH: x}, runs=runs, seed=0,
            batch_size=batch_size, verbose=0,
        )  # fmt: skip
        total = time.perf_counter() - start
    finally:
        kp.attribution.concept_activation_vectors, keras.Model.predict = fit, predict
    return watch.seconds, total, report


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=160, help="images per timed call")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per way")
    parser.add_argument("--skip", type=int, default=1, help="steps of each call left out")
    parser.add_argument("--runs", type=int, default=10, help="tcav_report's runs")
    parser.add_argument("--concept-images", type=int, default=40, help="per concept")
    parser.add_argument("--random-images", type=int, default=120)
    parser.add_argument("--class-images", type=int, default=50)
    parser.add_argument("--no-tcav", action="store_true", help="the derivatives' costs only")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args()
    if args.quick:
        args.images, args.repeats, args.runs, args.batch_size = 80, 1, 2, 16
        args.concept_images, args.random_images, args.class_images = 8, 20, 16

    start = time.perf_counter()
    model = keras.applications.MobileNet(alpha=0.75, weights="imagenet")
    # Whole batches only: a last, smaller batch is a new shape, traced again in every call.
    args.images -= args.images % args.batch_size
    x = imagenette_val(args.images)
    print(f"MobileNet (alpha 0.75, ImageNet), {args.images} Imagenette val images of 224x224, "
          f"batch {args.batch_size}; one warm-up call of each way, then {args.repeats} timed "
          "calls, interleaved", flush=True)  # fmt: skip
    costs, paired, fastest = per_batch_costs(model, x, args.batch_size, args.repeats, args.skip)
    batches = -(-args.images // args.batch_size)
    forward_step, forward_call = costs["forward (predict)"]
    print(f"\n{'way':<28}{'s/batch':>9}{'ms/image':>10}{'x forward':>11}{'paired':>8}"
          f"{'fastest':>9}{'s/call':>9}{'x forward':>11}{'fixed s/call':>14}")  # fmt: skip
    for name, (step, call) in costs.items():
        print(f"{name:<28}{step:>9.3f}{1000 * step / args.batch_size:>10.1f}"
              f"{step / forward_step:>11.2f}{paired[name]:>8.2f}{fastest[name]:>9.2f}"
              f"{call:>9.2f}{call / forward_call:>11.2f}"
              f"{call - batches * step:>14.2f}")  # fmt: skip
    print(f"(s/batch: the median steady step over all calls, the first {args.skip} of each "
          "call left out; x forward: its ratio to predict's; paired: the median over the "
          "repetitions of the ratio of the two calls' median steps in one repetition; fastest: "
          f"the ratio of the fastest steps; s/call: a whole call on {args.images} images; "
          f"fixed: s/call minus {batches} steady steps, tracing and building)")  # fmt: skip
    if args.no_tcav:
        print(f"total {time.perf_counter() - start:.0f} s")
        return

    concepts = {name: imagenette("train", wnid, args.concept_images)
                for name, wnid in CONCEPTS.items()}  # fmt: skip
    random = imagenet_samples(args.random_images)
    classes = imagenette("val", "n01440764", args.class_images)
    print(f"\ntcav_report: concepts {', '.join(f'{k} ({len(v)})' for k, v in concepts.items())}, "
          f"random {len(random)} (imagenet_samples), class {TENCH} ({len(classes)} images), "
          f"points {MID} and {LATE}, runs {args.runs}: {(len(concepts) + 1) * args.runs * 2} "
          "CAVs (LBFGSProbeCV, 3 folds)", flush=True)  # fmt: skip
    parts, total, report = tcav_breakdown(
        model, concepts, random, classes, args.runs, args.batch_size
    )
    print(report.table())
    rest = total - sum(parts.values())
    for name, seconds in [*sorted(parts.items(), key=lambda kv: -kv[1]), ("the rest", rest)]:
        print(f"  {name:<14}{seconds:>8.2f} s  {seconds / total:>6.1%}")
    print(f"  {'total':<14}{total:>8.2f} s")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
