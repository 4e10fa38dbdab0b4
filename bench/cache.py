"""Probe-training epochs from a feature cache vs epochs that re-run the base.

Alain & Bengio (Appendix B) extract features once to disk because re-running
ResNet-50 for every probe epoch is ~60x slower than reading features back.
This measures the same, side by side in one process, on
`keras.applications.ResNet50(weights=None)` with the paper's 17 points
(average-pooled, 15,168 features per image) and `--classes` probe classes:

* re-run: `ProbedModel.fit` over images, every epoch running ResNet-50 (one
  pass for all 17 probes) and training the heads;
* cache:  `kp.fit_probes(solver="rmsprop")` over a `FeatureCache` of the same
  model: each probe trained on its point's features, read once from the
  memory-mapped `.npy` shards before its epochs (a read the epoch times leave
  out), for the same epochs (one cached epoch is the sum, over the probes, of
  each probe's epoch), at batch 32 (as the re-run) and 256;
  and the cache's shuffled dataset read alone, without training, to show
  what the disk side costs.

Run for 10 classes (Imagenette, the reproductions' setting) and 1000
(ImageNet): with 1000 classes the heads' own arithmetic (15,168 x 1000
multiply-adds per image, twice, plus the RMSprop update of 15 M weights)
bounds a cached epoch on a CPU.

Images are random float32 224x224x3, generated per index from a seed inside
the input pipeline (no image array held in memory), labels random. Each way
runs `--epochs` timed epochs after one warm-up epoch (tracing); images/s come
from the median epoch time. The cache is written once beforehand (that time
is printed too: it is one plain forward pass over the data).

Target: cache/re-run images/s >= 100 (the paper: 60).

    python bench/cache.py --rerun-images 256 --cache-images 2048 --epochs 3
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_probes as kp  # noqa: E402

TARGET = 100.0


class EpochTimer(keras.callbacks.Callback):
    """Epoch times of every `fit` it is passed to: one per probe under `kp.fit_probes`."""

    def __init__(self):
        super().__init__()
        self.fits = []

    def on_train_begin(self, logs=None):
        self.fits.append([])

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.fits[-1].append(time.perf_counter() - self.start)

    def epoch_seconds(self):
        """One epoch of every probe: the sum over fits of each one's median epoch, the
        first epoch of each (tracing) left out."""
        return sum(statistics.median(times[1:]) for times in self.fits)


def images(n, classes, batch_size):
    """`n` random images, the same for a given index every time, and random labels."""

    def example(i):
        seed = tf.stack([tf.cast(i, tf.int32), 0])
        image = tf.random.stateless_uniform((224, 224, 3), seed, -1.0, 1.0)
        label = tf.random.stateless_uniform((), seed, 0, classes, dtype=tf.int32)
        return image, label

    return tf.data.Dataset.range(n).map(example).batch(batch_size).prefetch(2)


def rate(n, timer):
    return n / timer.epoch_seconds()


def measure(base, classes, args):
    """Rows `(way, batch, images, images/s)` for probes of `classes` classes."""
    probed = kp.ProbedModel(base, points="resnet50", num_classes=classes)
    directory = tempfile.mkdtemp(prefix="bench_cache_", dir=args.dir)
    start = time.perf_counter()
    cache = kp.FeatureCache.write(
        probed, images(args.cache_images, classes, 32), directory, batch_size=32,
        shard_size=1024, dtype=args.dtype, verbose=0,
    )  # fmt: skip
    write = time.perf_counter() - start
    size = sum(f.stat().st_size for f in cache.directory.rglob("*.npy")) / 2**20
    print(
        f"{classes} classes: cache written once, {args.cache_images} images in {write:.1f} s "
        f"({args.cache_images / write:.1f} images/s), {size:.0f} MiB of {args.dtype}"
    )
    epochs = args.epochs + 1
    rerun = EpochTimer()
    probed.compile(optimizer="rmsprop")
    data = images(args.rerun_images, classes, 32)
    probed.fit(data, epochs=epochs, callbacks=[rerun], shuffle=False, verbose=0)
    rows = [("re-run ResNet-50 every epoch", 32, args.rerun_images, rate(args.rerun_images, rerun))]
    for batch_size in (32, 256):
        timer = EpochTimer()
        kp.fit_probes(
            probed, cache, solver="rmsprop", validation=None, epochs=epochs,
            batch_size=batch_size, callbacks=[timer], verbose=0,
        )  # fmt: skip
        speed = rate(args.cache_images, timer)
        rows.append((f"read the cache ({args.dtype})", batch_size, args.cache_images, speed))
    # Reading alone, no training: how fast the disk side is.
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for _ in cache.dataset("train", 256, shuffle=True, seed=0):
            pass
        times.append(time.perf_counter() - start)
    speed = args.cache_images / statistics.median(times[1:])
    rows.append(("  reading only, no training", 256, args.cache_images, speed))
    shutil.rmtree(directory)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rerun-images", type=int, default=256)
    parser.add_argument("--cache-images", type=int, default=2048)
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per way")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--dir", help="where to write the caches (default: the temp folder)")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    base = keras.applications.ResNet50(weights=None)
    print(
        f"ResNet-50 (random weights), the 17 points of the paper, 15168 features per image; "
        f"{os.cpu_count()} CPUs, TensorFlow {tf.__version__}"
    )
    results = {classes: measure(base, classes, args) for classes in args.classes}
    print(f"\n{'classes':>7}  {'probe-training epochs':<30} {'batch':>5} {'images':>7} "
          f"{'images/s':>9} {'x re-run':>9}")  # fmt: skip
    for classes, rows in results.items():
        for name, batch_size, n, speed in rows:
            print(
                f"{classes:>7}  {name:<30} {batch_size:>5} {n:>7} {speed:>9.1f} "
                f"{speed / rows[0][3]:>9.1f}"
            )
    for classes, rows in results.items():
        best = max(speed for *_, speed in rows[1:-1]) / rows[0][3]
        verdict = "met" if best >= TARGET else "NOT met"
        print(f"{classes} classes: cache/re-run {best:.0f}x (target >= {TARGET:.0f}x): {verdict}")


if __name__ == "__main__":
    main()
