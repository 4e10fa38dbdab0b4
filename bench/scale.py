"""ImageNet scale on this machine: streamed L-BFGS against the matmul limit, memory against
the cache, and extraction on two workers against one.

Alain & Bengio probe ResNet-50 on ImageNet: 1.28 M images, 17 points, 15,168
pooled features per image, 1000 classes. This measures, side by side in one run,
what that protocol costs here:

1. Out-of-core L-BFGS. A synthetic ImageNet-shaped split is written as a real
   `kp.FeatureCache` (`--rows` x `--features` float16, `--classes` classes;
   by default 262,144 x 2,048 x 1,000: the last ResNet-50 block of a fifth of
   ImageNet, 1 GiB), from a model whose one point is its input (class means
   plus noise, generated per index inside tf.data). Then, on that cache:
   - the time to read the split once (memory-mapped shards, page cache);
   - this machine's float32 matmul throughput, on the objective's own chunk
     shape, and from it the limit: an evaluation of the objective needs two
     matrix products of `2 n d c` flops each (logits, gradient);
   - `kp.solvers.LBFGSProbe`'s time per iteration, streaming the shards
     (`(t(1 + m iterations) - t(1 iteration)) / m`), against that limit;
   - the fit's peak anonymous memory (RssAnon, sampled) against the cache.
2. Extraction. `kp.FeatureCache.write` of ResNet-50 (random weights, 224x224,
   the 17 points) over `--images` synthetic images: one process against two
   `MultiWorkerMirroredStrategy` workers on 127.0.0.1 (TF_CONFIG), each given
   one core (`TF_NUM_INTRAOP_THREADS=1`), as one worker per machine would
   have its machine; and one process with all cores. Throughput counts the
   write only, after a one-batch warm-up write (not TensorFlow's start, the
   workers' handshake nor the tracing of the feature model). Every worker
   reads the whole input stream (each hashes and extracts only its own shards).
3. The extrapolation to the full protocol on this machine and per worker added,
   from these measurements.

    python bench/scale.py                 # about 10 minutes here
    python bench/scale.py --quick         # smoke run: 16k x 256 x 100, 32 images
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_probes as kp  # noqa: E402

#: The paper's protocol: ImageNet's train split, ResNet-50's 17 pooled points.
PAPER_ROWS, PAPER_FEATURES, PAPER_CLASSES = 1_281_167, 15_168, 1000


def anon_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def synthetic_cache(directory, rows, features, classes, batch=1024):
    """A real FeatureCache of `rows` class-conditional float16 vectors (one point)."""
    inputs = keras.Input((features,), name="features")
    model = keras.Model(inputs, keras.layers.Identity(name="same")(inputs), name="synthetic")
    probed = kp.ProbedModel(model, points=["same"], num_classes=classes)
    means = tf.constant(np.random.default_rng(0).normal(size=(classes, features)), tf.float32)

    def example(index):
        label = tf.cast(index % classes, tf.int32)
        noise = tf.random.stateless_normal([features], seed=tf.stack([index, 1]))
        return tf.gather(means, label) * 0.3 + noise, label

    data = tf.data.Dataset.range(rows).map(example, num_parallel_calls=tf.data.AUTOTUNE)
    started = time.perf_counter()
    kp.FeatureCache.write(
        probed, data.batch(batch), directory, "train", batch_size=batch, dtype="float16", verbose=0
    )
    return probed, time.perf_counter() - started


def matmul_flops(rows, features, classes, repeats=5) -> float:
    """Float32 flop/s of the objective's chunk product, (rows x d) @ (d x c), measured."""
    x = tf.random.normal([rows, features])
    w = tf.random.normal([features, classes])
    product = tf.function(lambda: tf.reduce_sum(tf.matmul(x, w)))
    product().numpy()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        product().numpy()
        times.append(time.perf_counter() - started)
    return 2 * rows * features * classes / np.median(times)


def timed_fit(features, labels, classes, iterations, sample=False):
    """Seconds of an L-BFGS fit of `iterations` iterations; with `sample`, also the peak
    growth of anonymous memory during it (MiB)."""
    before, peak, running = anon_mib(), [0.0], [sample]

    def sampler():
        while running[0]:
            peak[0] = max(peak[0], anon_mib())
            time.sleep(0.01)

    thread = threading.Thread(target=sampler)
    thread.start()
    started = time.perf_counter()
    probe = kp.solvers.LBFGSProbe(l2=1e-4, max_iter=iterations).fit(features, labels, classes)
    seconds = time.perf_counter() - started
    running[0] = False
    thread.join()
    return seconds, probe.n_iter_, max(peak[0] - before, 0.0)


_WORKER = """
import json, os, sys, time
rank, ports, directory, images = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
ports = [p for p in ports.split(",") if p]
if len(ports) > 1:
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
        "task": {"type": "worker", "index": rank},
    })
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import tensorflow as tf
strategy = (tf.distribute.MultiWorkerMirroredStrategy() if len(ports) > 1
            else tf.distribute.get_strategy())
import keras, numpy as np
import keras_probes as kp

keras.utils.set_random_seed(0)
base = keras.applications.ResNet50(weights=None)
probed = kp.ProbedModel(base, points="resnet50", num_classes=1000)

def image(index):
    return (tf.random.stateless_uniform([224, 224, 3], seed=tf.stack([index, 0]), maxval=255),
            tf.cast(index % 1000, tf.int32))

data = tf.data.Dataset.range(images).map(image).batch(32)
with strategy.scope():
    # A first batch, written aside, traces the feature model: the timed write is the
    # steady state, as over ImageNet's 40,000 batches.
    kp.FeatureCache.write(probed, data.take(1), directory + "-warm-up", "train", batch_size=32,
                          verbose=0)
    started = time.perf_counter()
    kp.FeatureCache.write(probed, data, directory, "train", batch_size=32, shard_size=32,
                          verbose=0)
    seconds = time.perf_counter() - started
print("SECONDS", seconds, flush=True)
"""


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def extraction(root: Path, images: int, workers: int, threads: int | None) -> float:
    """Images/s of a ResNet-50 cache write by `workers` processes (`threads` cores each)."""
    script = root / "worker.py"
    script.write_text(textwrap.dedent(_WORKER))
    directory = root / f"cache-{workers}-{threads}"
    ports = ",".join(map(str, free_ports(workers))) if workers > 1 else ""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    if threads is not None:
        env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS="1")
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), ports, str(directory), str(images)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(workers)
    ]
    seconds = []
    for process in processes:
        out, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(err[-3000:])
        seconds.append(float(out.split("SECONDS")[1].split()[0]))
    return images / max(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=262_144)
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=3, help="timed L-BFGS iterations")
    parser.add_argument("--images", type=int, default=512, help="images per extraction")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="write the figures to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.features, args.classes, args.images = 16_384, 256, 100, 32
        args.iterations = 2
    n, d, c = args.rows, args.features, args.classes
    figures = {"rows": n, "features": d, "classes": c}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        root = Path(tmp)
        held = n * d * 2 <= kp.solvers.HELD_BYTES  # small enough to be held in memory
        print(f"1. {'held' if held else 'streamed'} L-BFGS: {n:,} x {d:,} float16, {c:,} classes")
        probed, write_s = synthetic_cache(root / "cache", n, d, c)
        cache = kp.FeatureCache.open(root / "cache", model=probed)
        features, labels = cache.features("train", "same"), cache.arrays("train", [])[1]
        cache_mib = n * d * 2 / 2**20
        started = time.perf_counter()
        rows = 1 << 14
        for start in range(0, n, rows):
            np.asarray(features[start : start + rows], np.float32).sum()
        read_s = time.perf_counter() - started
        chunk_rows = max(1, kp.solvers.CHUNK_BYTES // (4 * d))
        flops = matmul_flops(min(chunk_rows, n), d, c)
        limit = 2 * (2 * n * d * c) / flops
        first, _, _ = timed_fit(features, labels, c, 1)
        total, done, growth = timed_fit(features, labels, c, 1 + args.iterations, sample=True)
        per_iteration = (total - first) / max(done - 1, 1)
        figures.update(
            streamed=not held,
            cache_mib=cache_mib,
            write_s=write_s,
            read_s=read_s,
            read_mib_s=cache_mib / read_s,
            matmul_gflops=flops / 1e9,
            limit_s=limit,
            iteration_s=per_iteration,
            ratio_to_limit=per_iteration / limit,
            moments_and_first_iteration_s=first,
            peak_growth_mib=growth,
        )
        print(f"   cache {cache_mib:,.0f} MiB written in {write_s:.1f} s; read once in "
              f"{read_s:.2f} s ({cache_mib / read_s:,.0f} MiB/s)")  # fmt: skip
        print(f"   matmul: {flops / 1e9:,.0f} GFLOP/s -> limit {limit:.2f} s per evaluation")
        print(f"   L-BFGS: {per_iteration:.2f} s per iteration = {per_iteration / limit:.2f}x "
              f"the limit; the first (with the moments pass) {first:.2f} s")  # fmt: skip
        # L-BFGS keeps `memory` (20) pairs of parameter-sized float64 vectors.
        history = 2 * min(done, 20) * (d * c + c) * 8 / 2**20
        figures.update(lbfgs_history_mib=history)
        print(f"   peak memory growth {growth:,.0f} MiB = {growth / cache_mib:.2f}x the cache, "
              f"of which L-BFGS's history of {min(done, 20)} pairs {history:,.0f} MiB")  # fmt: skip

        print(f"2. extraction: ResNet-50, 17 points, {args.images} images of 224x224")
        one = extraction(root, args.images, 1, 1)
        two = extraction(root, args.images, 2, 1)
        full = extraction(root, args.images, 1, None)
        figures.update(extract_one_core=one, extract_two_workers=two, extract_all_cores=full)
        print(f"   1 worker, 1 core: {one:.1f} images/s; 2 workers, 1 core each: {two:.1f} "
              f"({two / one:.2f}x); 1 process, all {os.cpu_count()} cores: {full:.1f}")  # fmt: skip

    # 3. The paper's protocol: L-BFGS's cost scales with n * d * c per iteration.
    scale = PAPER_ROWS * PAPER_FEATURES * PAPER_CLASSES / (n * d * c)
    paper_iteration = per_iteration * scale
    paper_extract = PAPER_ROWS / full
    figures.update(paper_iteration_s=paper_iteration, paper_extract_s=paper_extract)
    efficiency = two / one / 2
    print("3. the full protocol (1.28 M images, 17 points, 15,168 features, 1000 classes) here:")
    print(f"   extraction {paper_extract / 3600:.1f} h; one L-BFGS iteration over all 17 "
          f"probes {paper_iteration / 60:.1f} min, 100 iterations "
          f"{100 * paper_iteration / 3600:.1f} h")  # fmt: skip
    print(f"   per worker added (two workers on one machine ran at {efficiency:.2f} of twice "
          f"one): W workers divide both by about {efficiency:.2f} * W")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
