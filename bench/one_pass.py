"""One forward pass feeds every probe: throughput of a probed ResNet-50.

Measures, side by side in one process, images/s of three ways to run
`keras.applications.ResNet50(weights=None)` on random float32 images:

* plain:  the base model alone (its own 1000-way classifier included);
* probed: `kp.ProbedModel(base, points="resnet50", num_classes=1000)`, i.e. one
  pass of the base up to `conv5_block3_out` feeding 17 softmax probes;
* naive:  17 separate sub-models `keras.Model(base.input, layer.output)` +
  global average pooling + `Dense(1000, softmax)`, run one after the other
  (17 forward passes per batch).

Every model is called the same way, as `tf.function(lambda x: m(x, training=False))`
(each naive sub-model is its own `tf.function`, so the runtime cannot merge
their shared work), after warm-up batches. The repetitions are interleaved
(plain and probed alternate first; naive, while timed, takes turns in
first, middle and last place) so background load hits all of them;
the images/s come from the median time per batch, the ratios are medians of
the per-repetition ratios. The naive way costs ~13 plain passes, so it is timed
on fewer batches (`--naive-batches`).

Target: probed/plain time ratio <= 1.05 (probing costs at most 5% over the
plain forward pass); naive/probed shows what the single pass saves.

    python bench/one_pass.py --batches 20 --naive-batches 3
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_probes as kp  # noqa: E402

TARGET = 1.05
# The 17 naive sub-models are 17 tf.functions traced in a row: TF's retracing
# warning counts those too, though none of them ever retraces.
tf.get_logger().setLevel("ERROR")


def compiled(model):
    return tf.function(lambda x: model(x, training=False))


def naive_models(base, points, num_classes):
    models = []
    for point in points:
        features = keras.layers.GlobalAveragePooling2D()(base.get_layer(point).output)
        probs = keras.layers.Dense(num_classes, activation="softmax")(features)
        models.append(keras.Model(base.input, probs, name=f"naive_{point}"))
    return models


def timed(fns, x):
    """Seconds to run every function of `fns` on `x`, one after the other."""
    start = time.perf_counter()
    for fn in fns:
        keras.tree.map_structure(lambda t: t.numpy(), fn(x))
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=20, help="timed batches, plain and probed")
    parser.add_argument("--naive-batches", type=int, default=3, help="timed batches, naive")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches per model")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()

    shape = (args.image_size, args.image_size, 3)
    base = keras.applications.ResNet50(weights=None, input_shape=shape)
    probed = kp.ProbedModel(base, points="resnet50", num_classes=1000)
    runs = {
        "plain": [compiled(base)],
        "probed": [compiled(probed)],
        "naive": [compiled(m) for m in naive_models(base, probed.points, 1000)],
    }
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((args.batch_size, *shape), dtype=np.float32))

    print(f"ResNet-50, {len(probed.points)} points, batch {args.batch_size}, {shape}; ", end="")
    print(f"{args.warmup} warm-up, then {args.batches} timed batches ", end="")
    print(f"({args.naive_batches} for naive)", flush=True)
    for name, fns in runs.items():
        for _ in range(args.warmup):
            seconds = timed(fns, x)
        print(f"  warm-up {name:<6} {seconds:7.2f} s/batch", flush=True)

    times = {name: [] for name in runs}
    for rep in range(args.batches):
        order = ["plain", "probed"] if rep % 2 == 0 else ["probed", "plain"]
        if rep < args.naive_batches:
            order.insert(rep % 3, "naive")
        for name in order:
            times[name].append(timed(runs[name], x))
        done = ", ".join(f"{n} {times[n][-1]:.2f} s" for n in order)
        print(f"  rep {rep + 1:>2}: {done}", flush=True)

    def paired(a, b):  # median over the repetitions where both ran
        return statistics.median(ta / tb for ta, tb in zip(times[a], times[b], strict=False))

    print(f"\n{'model':<8}{'passes':>8}{'batches':>9}{'median s/batch':>16}{'images/s':>10}")
    for name, fns in runs.items():
        seconds = statistics.median(times[name])
        row = f"{name:<8}{len(fns):>8}{len(times[name]):>9}{seconds:>16.3f}"
        print(row + f"{args.batch_size / seconds:>10.1f}")
    ratio = paired("probed", "plain")
    verdict = "ok" if ratio <= TARGET else "ABOVE TARGET"
    print(f"\nprobed/plain time ratio: {ratio:.3f} (target <= {TARGET}: {verdict})")
    best = min(times["probed"]) / min(times["plain"])
    print(f"  same, fastest batch of each (least disturbed by other load): {best:.3f}")
    print(f"naive/probed time ratio: {paired('naive', 'probed'):.2f}")


if __name__ == "__main__":
    main()
