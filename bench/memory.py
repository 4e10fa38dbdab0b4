"""Peak memory of probing InceptionV3's eleven mixed blocks with random subsets.

Alain & Bengio (Sec. 3.4) keep 1000 random features per layer for Inception v3,
because a probe on the flattened output of an early block would need a kernel
of millions x 1000 floats. This measures the peak resident memory (max RSS,
`ru_maxrss`) of one `predict` on a batch of random images by

* base:   `keras.applications.InceptionV3(weights=None)` alone;
* probed: `kp.ProbedModel(base, points="inception_v3", num_classes=1000,
  reducers=kp.RandomSubset(1000))`, probes at mixed0..mixed10;

each in its own fresh subprocess (this script re-runs itself with `--child`), so
neither peak includes the other's allocations. Target: probed/base <= 1.5.

It also prints, from the layers' output shapes only (nothing allocated), the
float32 bytes the probe kernels would take with `reducers="flatten"`.

    python bench/memory.py --batch-size 8
"""

import argparse
import json
import os
import resource
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGET = 1.5
NUM_CLASSES = 1000
MIB = 2**20


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB  # KiB on Linux


def child(kind, batch_size, image_size):
    import keras
    import numpy as np

    import keras_probes as kp

    result = {"import_mib": peak_mib()}
    shape = (image_size, image_size, 3)
    base = keras.applications.InceptionV3(weights=None, input_shape=shape)
    points = kp.points.resolve(base, "inception_v3")
    if kind == "flattened-estimate":
        sizes = [int(np.prod(base.get_layer(p).output.shape[1:])) for p in points]
        result["kernel_bytes"] = sum(sizes) * NUM_CLASSES * 4
        result["features"] = dict(zip(points, sizes, strict=True))
    else:
        model = base
        if kind == "probed":
            model = kp.ProbedModel(
                base, points="inception_v3", num_classes=NUM_CLASSES, reducers=kp.RandomSubset(1000)
            )
        x = np.random.default_rng(0).random((batch_size, *shape), dtype=np.float32)
        model.predict(x, batch_size=batch_size, verbose=0)
    result["peak_mib"] = peak_mib()
    print(json.dumps(result))


def run_child(kind, args):
    command = [sys.executable, __file__, "--child", kind]
    command += ["--batch-size", str(args.batch_size), "--image-size", str(args.image_size)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"child {kind!r} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=299)
    parser.add_argument("--child", choices=["base", "probed", "flattened-estimate"])
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.batch_size, args.image_size)

    print(f"InceptionV3, 11 points, one predict of {args.batch_size} x {args.image_size}^2 x 3")
    base, probed = run_child("base", args), run_child("probed", args)
    print(f"\n{'process':<8}{'peak RSS MiB':>14}{'after import MiB':>18}{'model+predict MiB':>19}")
    for name, r in (("base", base), ("probed", probed)):
        used = r["peak_mib"] - r["import_mib"]
        print(f"{name:<8}{r['peak_mib']:>14.0f}{r['import_mib']:>18.0f}{used:>19.0f}")
    ratio = probed["peak_mib"] / base["peak_mib"]
    above = (probed["peak_mib"] - probed["import_mib"]) / (base["peak_mib"] - base["import_mib"])
    verdict = "ok" if ratio <= TARGET else "ABOVE TARGET"
    print(f"\nprobed/base peak RSS ratio: {ratio:.3f} (target <= {TARGET}: {verdict})")
    print(f"probed/base ratio above the import baseline: {above:.3f}")

    estimate = run_child("flattened-estimate", args)
    print(f"\nreducers='flatten' instead, float32 probe kernels (features x {NUM_CLASSES} x 4 B):")
    for point, size in estimate["features"].items():
        print(f"  {point:<8}{size:>12,} features{size * NUM_CLASSES * 4 / 2**30:>10.2f} GiB")
    total = estimate["kernel_bytes"]
    print(f"  {'total':<8}{sum(estimate['features'].values()):>12,} features", end="")
    print(f"{total / 2**30:>10.2f} GiB ({total:,} bytes)")


if __name__ == "__main__":
    main()
