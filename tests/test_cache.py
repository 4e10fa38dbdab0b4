"""FeatureCache: exact features, atomic resumable writes, refusal of corrupt or stale caches."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import small_convnet

import keras_probes as kp
from keras_probes.cli import main as cli_main

POINTS = ["image", "relu1", "pool1", "relu2", "gap"]
REDUCERS = {"pool1": "flatten"}  # one wide point (1352 features) among pooled ones


@pytest.fixture(scope="module")
def setup(digits):
    keras.utils.set_random_seed(0)
    base = small_convnet()
    probed = kp.ProbedModel(base, points=POINTS, num_classes=10, reducers=REDUCERS)
    x, y, xt, yt = digits
    return probed, x[:600], y[:600], xt[:200], yt[:200]


def write(probed, data, directory, split="train", **kwargs):
    settings = {"batch_size": 50, "shard_size": 100, "verbose": 0, **kwargs}
    return kp.FeatureCache.write(probed, data, directory, split=split, **settings)


def files_of(directory):
    """{relative path: bytes} of every file under `directory` but lock files (as locked,
    empty or not); a writer's `.pid` file and temporary files count, so must be gone."""
    directory = Path(directory)
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.suffix != ".lock"
    }


@pytest.mark.numerics
def test_cached_features_are_the_models_features(setup, tmp_path):
    probed, x, y, xt, yt = setup
    write(probed, (x, y), tmp_path, "train")
    write(probed, (xt, yt), tmp_path, "test")
    cache = kp.FeatureCache.open(tmp_path, model=probed)
    assert cache.splits == ["train", "test"] and cache.points == probed.points
    assert cache.num_examples("train") == 600 and cache.num_classes == 10
    assert cache.feature_sizes == {"image": 1, "relu1": 8, "pool1": 1352, "relu2": 16, "gap": 16}
    features, labels = cache.arrays("train")
    # Bit for bit: the same computation, the compiled feature model on the same batches of 50.
    extract = tf.function(probed.extract_features)
    same = [extract(x[i : i + 50]) for i in range(0, 600, 50)]
    # Within float32 rounding: eager, on all 600 at once (other batch size, other kernels).
    whole = probed.extract_features(x)
    for point in probed.points:
        assert features[point].dtype == np.float32
        expected = np.concatenate([np.asarray(batch[point]) for batch in same])
        np.testing.assert_array_equal(features[point], expected)
        other = np.asarray(whole[point])
        scale = np.abs(other).max()
        np.testing.assert_allclose(features[point], other, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_array_equal(labels, y)
    # Read back as tf.data: in order without shuffling, a reproducible permutation with it.
    batches = list(cache.dataset("test", batch_size=64))
    assert [len(b[1]) for b in batches] == [64, 64, 64, 8]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), yt)
    tf_features = np.concatenate([b[0]["gap"] for b in batches])
    np.testing.assert_array_equal(tf_features, cache.arrays("test")[0]["gap"])
    shuffled = [np.concatenate([b[1] for b in cache.dataset("train", 64, True, seed=1)])]
    shuffled.append(np.concatenate([b[1] for b in cache.dataset("train", 64, True, seed=1)]))
    np.testing.assert_array_equal(shuffled[0], shuffled[1])
    assert not np.array_equal(shuffled[0], y)
    np.testing.assert_array_equal(np.sort(shuffled[0]), np.sort(y))


@pytest.mark.numerics
def test_dataset_input_equals_array_input(setup, tmp_path):
    probed, x, y, *_ = setup
    write(probed, (x, y), tmp_path / "arrays")
    # Batches of another size are re-cut into the cache's own batches.
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(37)
    write(probed, dataset, tmp_path / "dataset")
    arrays, from_dataset = files_of(tmp_path / "arrays"), files_of(tmp_path / "dataset")
    manifest = arrays.pop("manifest.json"), from_dataset.pop("manifest.json")
    assert arrays == from_dataset
    splits = [json.loads(m)["splits"]["train"] for m in manifest]
    assert splits[0]["num_examples"] == splits[1]["num_examples"] == 600


@pytest.mark.numerics
def test_float16_storage_round_trips_within_float16_precision(setup, tmp_path):
    probed, x, y, *_ = setup
    write(probed, (x, y), tmp_path / "f32")
    write(probed, (x, y), tmp_path / "f16", dtype="float16")
    full = kp.FeatureCache.open(tmp_path / "f32").arrays("train")[0]
    half_cache = kp.FeatureCache.open(tmp_path / "f16", model=probed)
    half = half_cache.arrays("train")[0]
    for point in probed.points:
        assert half[point].dtype == np.float16
        np.testing.assert_allclose(
            half[point].astype(np.float32), full[point], rtol=2**-11, atol=2**-24
        )
    batch = next(iter(half_cache.dataset("train", batch_size=600)))[0]
    assert batch["pool1"].dtype == tf.float32
    np.testing.assert_array_equal(batch["pool1"].numpy(), half["pool1"].astype(np.float32))
    size = lambda d: sum(p.stat().st_size for p in (tmp_path / d).rglob("*.npy"))  # noqa: E731
    assert size("f16") < 0.6 * size("f32")


def test_float16_overflow_is_refused_and_float32_then_works(tmp_path):
    probed = constant_model(1e5)
    data = (np.ones((8, 4), "float32"), np.zeros(8, "int64"))
    with pytest.raises(ValueError, match="exceed float16's range.*dtype='float32'"):
        kp.FeatureCache.write(probed, data, tmp_path, dtype="float16", batch_size=8, verbose=0)
    # An error in the first shard leaves a cache that the advised call completes.
    cache = kp.FeatureCache.write(probed, data, tmp_path, dtype="float32", batch_size=8, verbose=0)
    assert cache.num_examples("train") == 8


def test_flipped_byte_missing_shard_and_other_model_are_refused(setup, tmp_path):
    probed, x, y, *_ = setup
    write(probed, (x, y), tmp_path)
    original = files_of(tmp_path)
    shard = tmp_path / "train" / "features" / "002_pool1" / "shard-00003.npy"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(kp.CacheError, match=rf"{shard}.*corrupt.*sha256.*Rebuild it"):
        kp.FeatureCache.open(tmp_path, model=probed)
    # Writing again keeps the intact shards and rewrites from the first bad one.
    write(probed, (x, y), tmp_path)
    assert files_of(tmp_path) == original

    labels = tmp_path / "train" / "labels" / "shard-00001.npy"
    labels.unlink()
    with pytest.raises(kp.CacheError, match=rf"{labels} is missing \(shard 1 of split 'train'\)"):
        kp.FeatureCache.open(tmp_path)
    write(probed, (x, y), tmp_path)
    assert files_of(tmp_path) == original

    # Same architecture, other weights: the features would be silently wrong.
    keras.utils.set_random_seed(1)
    other = kp.ProbedModel(small_convnet(), points=POINTS, num_classes=10, reducers=REDUCERS)
    with pytest.raises(
        kp.CacheError, match=r"another model.*layer 'conv1' \(Conv2D\) has other weights"
    ):
        kp.FeatureCache.open(tmp_path, model=other)
    with pytest.raises(kp.CacheError, match="another model"):
        write(other, (x, y), tmp_path)
    # Same model, other points or reducers.
    fewer = kp.ProbedModel(probed.base, points=POINTS[:2], num_classes=10)
    with pytest.raises(kp.CacheError, match="other probe points or reducers"):
        kp.FeatureCache.open(tmp_path, model=fewer)
    pooled = kp.ProbedModel(probed.base, points=POINTS, num_classes=10)
    with pytest.raises(kp.CacheError, match="other probe points or reducers"):
        kp.FeatureCache.open(tmp_path, model=pooled)


def test_resuming_with_other_data_or_settings_is_refused(setup, tmp_path):
    probed, x, y, *_ = setup
    write(probed, (x, y), tmp_path)
    with pytest.raises(kp.CacheError, match="differs from the data"):
        write(probed, (x[::-1], y[::-1]), tmp_path)
    with pytest.raises(kp.CacheError, match="started with {'shard_size': 100}"):
        write(probed, (x, y), tmp_path, shard_size=200)
    write(probed, (x[:300], y[:300]), tmp_path, overwrite=True)
    assert kp.FeatureCache.open(tmp_path).num_examples("train") == 300


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split": "a/b"}, "plain name"),
        ({"split": ".."}, "plain name"),
        ({"split": "."}, "plain name"),
        ({"split": ".lock"}, "plain name"),
        ({"split": "manifest.json"}, "plain name"),
        ({"split": "x" * 101}, "up to 100 letters"),
        ({"shard_size": 120}, "multiple of `batch_size`"),
        ({"batch_size": 0}, "positive integer"),
        ({"dtype": "int8"}, "`dtype` must be one of"),
    ],
)
def test_bad_write_arguments(setup, tmp_path, kwargs, message):
    probed, x, y, *_ = setup
    with pytest.raises(ValueError, match=message):
        write(probed, (x, y), tmp_path, **kwargs)


def test_bad_directories_and_data(setup, tmp_path):
    probed, x, y, *_ = setup
    with pytest.raises(kp.CacheError, match="No feature cache at"):
        kp.FeatureCache.open(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(kp.CacheError, match="not empty and holds no feature cache"):
        write(probed, (x, y), tmp_path)
    (tmp_path / "notes.txt").unlink()
    (tmp_path / "manifest.json").write_text("{truncated")
    with pytest.raises(kp.CacheError, match="manifest.*is corrupt"):
        kp.FeatureCache.open(tmp_path)
    with pytest.raises(ValueError, match=r"Labels must lie in \[0, num_classes\) = \[0, 10\)"):
        write(probed, (x, y + 10), tmp_path / "labels")
    with pytest.raises(TypeError, match="`data` must be `\\(x, y\\)` arrays"):
        write(probed, x, tmp_path / "x_only")
    cache = write(probed, (x, y), tmp_path / "ok")
    with pytest.raises(kp.CacheError, match="has no split 'val'; it has \\['train'\\]"):
        cache.dataset("val")


_WRITER = """
import sys, time
import keras, numpy as np, tensorflow as tf
import keras_probes as kp

directory, model_file, data_file = sys.argv[1:4]
split, pause = (sys.argv[4], float(sys.argv[5])) if len(sys.argv) > 4 else ("train", 0.1)
base = keras.models.load_model(model_file)
probed = kp.ProbedModel(base, points={points!r}, num_classes=10, reducers={reducers!r})
data = np.load(data_file)
slow = lambda x, y: (tf.py_function(lambda t: (time.sleep(pause), t)[1], [x], tf.float32), y)
dataset = tf.data.Dataset.from_tensor_slices((data["x"], data["y"])).batch(50).map(slow)
kp.FeatureCache.write(probed, dataset, directory, split, batch_size=50, shard_size=100, verbose=0)
print("written", split)
"""


def start_writer(probed, x, y, tmp_path, directory, split="train", pause=0.1):
    """A `FeatureCache.write` of `(x, y)` in another process, `pause` seconds per batch."""
    if not (tmp_path / "writer.py").exists():
        probed.base.save(tmp_path / "base.keras")
        np.savez(tmp_path / "data.npz", x=x, y=y)
        (tmp_path / "writer.py").write_text(_WRITER.format(points=POINTS, reducers=REDUCERS))
    args = [tmp_path / "writer.py", directory, tmp_path / "base.keras", tmp_path / "data.npz"]
    return subprocess.Popen(
        [sys.executable, *map(str, args), split, str(pause)],
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(process, condition, timeout=120):
    """Polls `condition()` until it holds; fails if `process` ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"the writer ended first: {process.communicate()[1][-2000:]}")


def recorded_shards(directory, split="train"):
    manifest = Path(directory) / "manifest.json"
    if not manifest.exists():
        return None
    record = json.loads(manifest.read_text())["splits"].get(split)
    return None if record is None else len(record["shards"])


@pytest.mark.slow  # a subprocess of its own: several seconds
def test_sigkill_mid_write_then_resume_gives_identical_bytes(setup, tmp_path):
    probed, x, y, *_ = setup
    killed = tmp_path / "killed"
    process = start_writer(probed, x, y, tmp_path, killed)
    manifest = killed / "manifest.json"
    wait_for(process, lambda: (recorded_shards(killed) or 0) >= 2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    recorded = json.loads(manifest.read_text())["splits"]["train"]
    assert not recorded["complete"] and 2 <= len(recorded["shards"]) < 6
    with pytest.raises(kp.CacheError, match="incomplete.*resumes from the first missing shard"):
        kp.FeatureCache.open(killed, model=probed).arrays("train")

    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(50)
    write(probed, data, killed)  # resume
    write(probed, data, tmp_path / "whole")  # uninterrupted
    assert files_of(killed) == files_of(tmp_path / "whole")


_MIRRORED = """
import sys
import tensorflow as tf
replicas = int(sys.argv[4])
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
import keras, numpy as np
import keras_probes as kp

directory, model_file, data_file = sys.argv[1:4]
data = np.load(data_file)
strategy = tf.distribute.MirroredStrategy([f"/cpu:{{i}}" for i in range(replicas)])
with strategy.scope():
    probed = kp.ProbedModel(keras.models.load_model(model_file), points={points!r},
                            num_classes=10, reducers={reducers!r})
    cache = kp.FeatureCache.write(probed, (data["x"], data["y"]), directory, batch_size=50,
                                  shard_size=100, verbose=0)
    # Probe fitting evaluates with Keras, whose distributed evaluate needs batches that
    # the replicas divide evenly (256 rows here): fitted with 2 replicas only.
    if replicas == 2:
        report = kp.fit_probes(probed, cache, solver="lbfgs", l2=1e-3, verbose=0)
        objectives = [report.results["train"][p]["objective"] for p in probed.points]
        np.save(directory + ".objectives.npy", objectives)
        # Minibatch training is Keras' own fit, distributed by the strategy.
        for head in probed.heads:
            head.set_weights([np.zeros_like(w) for w in head.get_weights()])
        kp.fit_probes(probed, cache, solver="adam", validation=None, epochs=2, verbose=0)
        assert np.abs(probed.get_probe("gap").get_weights()[0]).max() > 0
print("replicas", strategy.num_replicas_in_sync)
"""


@pytest.mark.slow
@pytest.mark.numerics
@pytest.mark.parametrize("replicas", [2, 3])
def test_cache_and_lbfgs_under_mirrored_strategy_equal_single_device(setup, tmp_path, replicas):
    probed, x, y, *_ = setup
    # 590 examples: a short last batch (40), and with 3 replicas a last group of 2 batches.
    x, y = x[:590], y[:590]
    probed.base.save(tmp_path / "base.keras")
    np.savez(tmp_path / "data.npz", x=x, y=y)
    script = tmp_path / "mirrored.py"
    script.write_text(textwrap.dedent(_MIRRORED.format(points=POINTS, reducers=REDUCERS)))
    mirrored = tmp_path / "mirrored"
    args = [mirrored, tmp_path / "base.keras", tmp_path / "data.npz", replicas]
    result = subprocess.run(
        [sys.executable, str(script), *map(str, args)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"replicas {replicas}" in result.stdout

    single = tmp_path / "single"
    cache = write(probed, (x, y), single)
    assert files_of(mirrored) == files_of(single)
    if replicas != 2:
        return
    report = kp.fit_probes(probed, cache, solver="lbfgs", l2=1e-3, verbose=0)
    # The same convex problems, summed over the replicas: the same optima, up to where
    # L-BFGS stops (gradient 1e-4) on float32 sums cut differently (seen 1.2e-5 relative
    # under TF_ENABLE_ONEDNN_OPTS=0 ONEDNN_MAX_CPU_ISA=AVX2).
    objectives = [report.results["train"][p]["objective"] for p in probed.points]
    np.testing.assert_allclose(np.load(str(mirrored) + ".objectives.npy"), objectives, rtol=1e-4)


@pytest.mark.slow  # 15 s: subprocesses killed; the SIGKILL resume stays in the fast tier
def test_kill_or_error_in_the_first_shard_resumes(setup, tmp_path):
    probed, x, y, *_ = setup
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(50)
    whole = files_of(write(probed, data, tmp_path / "whole").directory)
    # SIGKILL before the first shard is complete: the manifest is already there.
    killed = tmp_path / "killed"
    process = start_writer(probed, x, y, tmp_path, killed, pause=1.0)
    wait_for(process, lambda: recorded_shards(killed) == 0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert recorded_shards(killed) == 0
    write(probed, data, killed)
    assert files_of(killed) == whole
    # Killed again, then rewritten with overwrite=True: the same bytes.
    process = start_writer(probed, x, y, tmp_path, tmp_path / "again", pause=1.0)
    wait_for(process, lambda: recorded_shards(tmp_path / "again") == 0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    write(probed, data, tmp_path / "again", overwrite=True)
    assert files_of(tmp_path / "again") == whole


@pytest.mark.slow  # 12 s: two writer processes
def test_two_processes_write_two_splits_and_both_are_kept(setup, tmp_path):
    probed, x, y, *_ = setup
    shared = tmp_path / "shared"
    writers = [
        start_writer(probed, x, y, tmp_path, shared, split, pause=0.05) for split in ("a", "b")
    ]
    for writer in writers:
        out, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err[-2000:]
    cache = kp.FeatureCache.open(shared, model=probed)
    assert sorted(cache.complete_splits) == ["a", "b"]
    # Each split holds the bytes a lone writer gives.
    write(probed, (x, y), tmp_path / "alone", "a")
    alone = files_of(tmp_path / "alone")
    together = files_of(shared)
    for name, data in alone.items():
        if name.startswith("a/"):
            assert together[name] == data
            assert together["b/" + name[2:]] == data


@pytest.mark.slow  # 11 s: two writer processes
def test_a_second_writer_of_the_same_split_is_refused(setup, tmp_path):
    probed, x, y, *_ = setup
    shared = tmp_path / "shared"
    first = start_writer(probed, x, y, tmp_path, shared, pause=0.3)
    wait_for(first, lambda: recorded_shards(shared) is not None)
    with pytest.raises(kp.CacheError, match=rf"Another process \(pid {first.pid}\) is writing"):
        write(probed, (x, y), shared)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert kp.FeatureCache.open(shared, model=probed).num_examples("train") == 600


@keras.saving.register_keras_serializable(package="keras_probes_tests")
class SmallestBatch(keras.layers.Layer):
    """Identity that keeps the smallest batch it has seen in a variable."""

    def build(self, input_shape):
        self.smallest = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(1e9), trainable=False
        )

    def call(self, inputs):
        size = keras.ops.cast(keras.ops.shape(inputs)[0], "float32")
        self.smallest.assign(keras.ops.minimum(self.smallest, size))
        return inputs


@pytest.mark.numerics
def test_every_batch_is_computed_at_batch_size(setup, tmp_path):
    probed, x, y, *_ = setup
    inputs = keras.Input((28, 28, 1))
    watcher = SmallestBatch()
    outputs = keras.layers.Conv2D(4, 3, name="conv")(watcher(inputs))
    watched = kp.ProbedModel(keras.Model(inputs, outputs), points=["conv"], num_classes=10)
    cache = write(watched, (x[:590], y[:590]), tmp_path)
    assert float(watcher.smallest.numpy()) == 50.0  # the last 40 examples padded to 50
    assert cache.num_examples("train") == 590
    # So an example's features do not depend on where its batch ends.
    longer = write(watched, (x, y), tmp_path / "longer")
    np.testing.assert_array_equal(
        cache.arrays("train")[0]["conv"], longer.arrays("train")[0]["conv"][:590]
    )


def unnamed_mlp(activation="relu"):
    """A small model whose layers all carry Keras' auto-generated names."""
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(16, activation=activation)(h)
    return keras.Model(inputs, keras.layers.Dense(10)(h))


def test_fingerprint_is_the_computation_not_names_or_compile_state(setup, tmp_path):
    _, x, y, *_ = setup
    keras.utils.set_random_seed(0)
    base = unnamed_mlp()
    probed = kp.ProbedModel(base, points="all", num_classes=10)
    write(probed, (x, y), tmp_path)
    # Rebuilt in the same process: other auto-generated names, equal weights.
    twin = unnamed_mlp()
    twin.set_weights(base.get_weights())
    assert [layer.name for layer in twin.layers] != [layer.name for layer in base.layers]
    same = kp.ProbedModel(twin, points=[p for p in kp.points.available(twin)], num_classes=10)
    kp.FeatureCache.open(tmp_path, model=same)
    # Compiled, saved, loaded with and without its compile state.
    twin.compile("adam", "sparse_categorical_crossentropy")
    kp.FeatureCache.open(tmp_path, model=same)
    twin.save(tmp_path / "twin.keras")
    for compile in (True, False):
        loaded = keras.models.load_model(tmp_path / "twin.keras", compile=compile)
        reloaded = kp.ProbedModel(loaded, points="all", num_classes=10)
        kp.FeatureCache.open(tmp_path, model=reloaded)
        write(reloaded, (x, y), tmp_path)  # and resumes as the same model
    # Another weight, or another layer config: refused, naming the layer.
    changed = unnamed_mlp()
    weights = base.get_weights()
    weights[-1] = weights[-1] + 1.0
    changed.set_weights(weights)
    other = kp.ProbedModel(changed, points="all", num_classes=10)
    with pytest.raises(kp.CacheError, match=r"layer '[a-z_0-9]+' \(Dense\) has other weights"):
        kp.FeatureCache.open(tmp_path, model=other)
    tanh = unnamed_mlp("tanh")
    tanh.set_weights(base.get_weights())
    with pytest.raises(kp.CacheError, match=r"layer '[a-z_0-9]+' \(Dense\) has another config"):
        kp.FeatureCache.open(tmp_path, model=kp.ProbedModel(tanh, points="all", num_classes=10))


def test_num_classes_is_part_of_the_cache_identity(setup, tmp_path):
    probed, x, y, *_ = setup
    # A first write with too few classes fails at its first batch, before any shard ...
    few = kp.ProbedModel(probed.base, points=POINTS, num_classes=3, reducers=REDUCERS)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(50)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Labels must lie in"):
        write(few, dataset, tmp_path)
    # ... so the right number starts the cache anew, and probes fit on it.
    cache = write(probed, dataset, tmp_path)
    assert cache.num_classes == 10
    assert json.loads((tmp_path / "manifest.json").read_text())["model"]["num_classes"] == 10
    # Once shards exist, another number of classes is refused, saying so.
    more = kp.ProbedModel(probed.base, points=POINTS, num_classes=12, reducers=REDUCERS)
    with pytest.raises(kp.CacheError, match="num_classes=10.*num_classes=12"):
        kp.FeatureCache.open(tmp_path, model=more)
    with pytest.raises(kp.CacheError, match="num_classes=10.*num_classes=12.*new directory"):
        write(more, dataset, tmp_path, "val")
    report = kp.fit_probes(probed, cache, l2=1e-3, max_iter=20, verbose=0)
    assert report.points == probed.points


def constant_model(kernel, activation=None):
    inputs = keras.Input((4,), name="x")
    dense = keras.layers.Dense(3, kernel_initializer=keras.initializers.Constant(kernel))
    outputs = keras.layers.Activation(activation or "linear", name="out")(dense(inputs))
    return kp.ProbedModel(keras.Model(inputs, outputs), points=["out"], num_classes=2)


@pytest.mark.parametrize(
    "kernel, activation, dtype, message",
    [
        (
            1.0,
            keras.ops.log,
            "float32",
            "NaN or infinite values for 8 example.*index \\[0, 1, 2\\]",
        ),
        (1e38, None, "float32", "NaN or infinite values"),
        (1e38, None, "float16", "NaN or infinite values"),
        (1e-7, None, "float16", "3 feature.*below float16's normal range.*dtype='float32'"),
    ],
)
def test_features_that_cannot_be_stored_are_refused(tmp_path, kernel, activation, dtype, message):
    probed = constant_model(kernel, activation)
    data = (-np.ones((8, 4), "float32"), np.zeros(8, "int64"))
    with pytest.raises(ValueError, match=message):
        kp.FeatureCache.write(probed, data, tmp_path, dtype=dtype, batch_size=4, verbose=0)
    assert recorded_shards(tmp_path) == 0


def test_fractional_labels_in_a_stream_are_refused(setup, tmp_path):
    probed, x, y, *_ = setup
    labels = y[:100].astype("float32") + 0.5
    dataset = tf.data.Dataset.from_tensor_slices((x[:100], labels)).batch(50)
    with pytest.raises(tf.errors.InvalidArgumentError, match="integer class indices"):
        write(probed, dataset, tmp_path)


def test_a_damaged_manifest_is_refused_in_one_line(setup, tmp_path):
    probed, x, y, *_ = setup
    write(probed, (x[:100], y[:100]), tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for damage in ("splits", "model"):
        broken = {k: v for k, v in manifest.items() if k != damage}
        (tmp_path / "manifest.json").write_text(json.dumps(broken))
        with pytest.raises(kp.CacheError, match=f"incomplete or damaged \\(no '{damage}'"):
            kp.FeatureCache.open(tmp_path)
    escaping = {**manifest, "splits": {"..": manifest["splits"]["train"]}}
    (tmp_path / "manifest.json").write_text(json.dumps(escaping))
    with pytest.raises(kp.CacheError, match="a split named '..'"):
        kp.FeatureCache.open(tmp_path)


def test_points_of_long_names_are_cached(tmp_path):
    # A point's directory holds its whole name (nested sub-models make long paths).
    inputs = keras.Input((4,), name="x")
    outputs = keras.layers.Dense(3, name="dense_" + "x" * 120)(inputs)
    probed = kp.ProbedModel(keras.Model(inputs, outputs), points="all", num_classes=2)
    data = (np.ones((8, 4), "float32"), np.zeros(8, "int64"))
    kp.FeatureCache.write(probed, data, tmp_path, batch_size=8, verbose=0)
    assert kp.FeatureCache.open(tmp_path, model=probed).num_examples("train") == 8


def one_line(error_info, limit=300):
    """The message of a raised error, checked to be one line of at most `limit` characters
    besides the paths it names (as long as the user makes them)."""
    message = str(error_info.value)
    brief = re.sub(r"/\S+?(?=[\s:,.;]*(\s|$))", "<path>", message)
    assert "\n" not in message and len(brief) <= limit, (len(brief), message)
    return message


def other_model():
    """A model of other layers than `small_convnet` (same input)."""
    inputs = keras.Input((28, 28, 1), name="image")
    hidden = keras.layers.Flatten(name="flat")(inputs)
    return keras.Model(inputs, keras.layers.Dense(10, name="out")(hidden), name="mlp")


def test_another_models_cache_is_named_in_one_line(setup, tmp_path, capsys):
    probed, x, y, *_ = setup
    cache = write(probed, (x[:100], y[:100]), tmp_path / "cache")
    other = kp.ProbedModel(other_model(), points=["flat"], num_classes=10)
    with pytest.raises(kp.CacheError) as info:
        kp.fit_probes(other, cache, verbose=0)
    message = one_line(info)
    assert "another model" in message and "'convnet'" in message and "'mlp'" in message
    assert "3 layers" in message and "kp.FeatureCache.write" in message
    assert "keras-probes cache" in message
    # A plain model, as `keras-probes fit MODEL --cache CACHE` loads one: the same words,
    # not "Unknown probe point" (the cache's points are not layers of that model).
    with pytest.raises(kp.CacheError) as info:
        cache.check_model(other.base)
    assert one_line(info) == message
    cache.check_model(probed.base)  # its own model's base is accepted
    other.base.save(tmp_path / "mlp.keras")
    status = cli_main(
        ["fit", str(tmp_path / "mlp.keras"), "--cache", str(tmp_path / "cache"), "--quiet"]
    )
    assert status == 2
    printed = capsys.readouterr().err.strip()
    assert "another model" in printed and "Unknown probe point" not in printed


def test_other_points_or_reducers_are_named_briefly(setup, tmp_path):
    probed, x, y, *_ = setup
    write(probed, (x[:100], y[:100]), tmp_path)
    fewer = kp.ProbedModel(probed.base, points=POINTS[:2], num_classes=10)
    with pytest.raises(kp.CacheError) as info:
        kp.FeatureCache.open(tmp_path, model=fewer)
    message = one_line(info)
    assert "probes 2 points" in message and "5" in message and "'config'" not in message
    # pool1 pooled instead of flattened: the point and both reducers are named, no configs.
    pooled = kp.ProbedModel(probed.base, points=POINTS, num_classes=10)
    with pytest.raises(kp.CacheError) as info:
        kp.FeatureCache.open(tmp_path, model=pooled)
    message = one_line(info)
    assert "'pool1'" in message and "Flatten" in message and "GlobalAveragePooling" in message
    assert "dtype" not in message and "build_config" not in message
    # Same reducer class, another setting: the setting is named.
    subset = kp.ProbedModel(
        probed.base, points=POINTS, num_classes=10, reducers={"pool1": kp.RandomSubset(7)}
    )
    write(subset, (x[:100], y[:100]), tmp_path / "subset")
    other_k = kp.ProbedModel(
        probed.base, points=POINTS, num_classes=10, reducers={"pool1": kp.RandomSubset(5)}
    )
    with pytest.raises(kp.CacheError) as info:
        kp.FeatureCache.open(tmp_path / "subset", model=other_k)
    assert "'pool1'" in one_line(info) and "k=5" in one_line(info) and "k=7" in one_line(info)


def test_a_cache_directory_that_is_a_file_is_refused_in_one_line(setup, tmp_path):
    probed, x, y, *_ = setup
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    with pytest.raises(NotADirectoryError) as info:
        write(probed, (x[:100], y[:100]), path)
    assert f"{path} is a file" in one_line(info) and "directory" in one_line(info)
    with pytest.raises(NotADirectoryError) as info:
        write(probed, (x[:100], y[:100]), path / "cache")
    assert f"{path} is a file" in one_line(info)
    with pytest.raises(kp.CacheError) as info:
        kp.FeatureCache.open(path)
    assert f"{path} is a file" in one_line(info) and "FeatureCache.write" in one_line(info)
    assert path.read_text() == "mine"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "`batch_size` must be an integer >= 1. Received: batch_size=0"),
        ({"batch_size": 2.5}, "`batch_size` must be an integer >= 1"),
        ({"shuffle": "yes"}, "`shuffle` must be True or False"),
        ({"shuffle_buffer": 0}, "`shuffle_buffer` must be an integer >= 1 or None"),
        ({"seed": "0"}, "`seed` must be an integer"),
    ],
)
def test_bad_dataset_arguments(setup, tmp_path, kwargs, message):
    probed, x, y, *_ = setup
    cache = write(probed, (x[:100], y[:100]), tmp_path)
    with pytest.raises(ValueError, match=re.escape(message)):
        cache.dataset("train", **kwargs)


def test_a_generator_is_refused_naming_what_is_accepted(setup, tmp_path):
    probed, x, y, *_ = setup
    batches = ((x[i : i + 50], y[i : i + 50]) for i in range(0, 100, 50))
    with pytest.raises(TypeError) as info:
        write(probed, batches, tmp_path)
    message = one_line(info)
    assert "generator" in message and "tf.data.Dataset.from_generator" in message
    assert "(x, y)" in message
    assert not (tmp_path / "manifest.json").exists()


def test_a_resume_deletes_the_manifest_temporary_files_a_kill_left(setup, tmp_path):
    probed, x, y, *_ = setup
    write(probed, (x[:200], y[:200]), tmp_path / "whole")
    killed = tmp_path / "killed"
    write(probed, (x[:100], y[:100]), killed, shard_size=50)
    # What a writer killed while replacing the manifest leaves: its temporary file,
    # half written, under the name `_files.atomic_write` gives it.
    stale = killed / ".manifest.json.4242.0badc0de.tmp"
    stale.write_text('{"format": "keras_probes.FeatureCache", "vers')
    write(probed, (x[:200], y[:200]), killed, overwrite=True)
    assert not stale.exists()
    assert files_of(killed) == files_of(tmp_path / "whole")


def test_labels_as_a_python_list_are_cached(setup, tmp_path):
    probed, x, y, *_ = setup
    write(probed, (x[:100], y[:100]), tmp_path / "array")
    write(probed, (x[:100], [int(label) for label in y[:100]]), tmp_path / "list")
    assert files_of(tmp_path / "list") == files_of(tmp_path / "array")


def test_progress_shows_known_sizes_and_integer_counts(setup, tmp_path, capsys):
    probed, x, y, *_ = setup
    write(probed, (x[:100], y[:100]), tmp_path / "arrays", shard_size=50, verbose=1)
    printed = capsys.readouterr().out
    assert "100/100" in printed and "Unknown" not in printed
    assert re.search(r"\b2 shards\b", printed) and "1.0000" not in printed, printed
    # A dataset of known size (as an image folder is): its batches are counted.
    dataset = tf.data.Dataset.from_tensor_slices((x[:100], y[:100])).batch(20)
    write(probed, dataset, tmp_path / "dataset", shard_size=50, verbose=1)
    printed = capsys.readouterr().out
    assert "5/5" in printed and "Unknown" not in printed, printed
    assert re.search(r"\b100 examples\b", printed) and ".0000" not in printed, printed
    # Resumed: the shards already there are said so.
    write(probed, dataset, tmp_path / "dataset", shard_size=50, verbose=1)
    assert re.search(r"\b2 already\b", capsys.readouterr().out)


def test_pooled_rows_are_examples_and_have_no_sequences(setup, tmp_path):
    probed, x, y, *_ = setup
    cache = write(probed, (x[:100], y[:100]), tmp_path)
    assert cache.sequences("train") is None
    assert not (tmp_path / "train" / "sequences").exists()
    shard = json.loads((tmp_path / "manifest.json").read_text())["splits"]["train"]["shards"][0]
    assert set(shard["sha256"]) == {*POINTS, "labels"}


def test_fingerprint_names_the_examples_not_the_model(setup, tmp_path):
    probed, x, y, *_ = setup
    x, y = x[:100], y[:100]
    fingerprint = write(probed, (x, y), tmp_path / "trained").fingerprint("train")
    assert re.fullmatch("[0-9a-f]{16}", fingerprint)
    assert kp.FeatureCache.open(tmp_path / "trained").fingerprint("train") == fingerprint
    # A re-initialised control probed at other points with other reducers: the same
    # examples, so the same fingerprint; its reports are paired with the model's.
    control = kp.ProbedModel(
        kp.flawed.reinitialize(probed.base, seed=1), points=["relu2"], num_classes=10
    )
    assert write(control, (x, y), tmp_path / "control").fingerprint("train") == fingerprint
    # One label changed, or the examples in another order: other examples.
    relabelled = y.copy()
    relabelled[7] = (relabelled[7] + 1) % 10
    other = write(probed, (x, relabelled), tmp_path / "relabelled").fingerprint("train")
    shuffled = write(probed, (x[::-1], y[::-1]), tmp_path / "shuffled").fingerprint("train")
    assert len({fingerprint, other, shuffled}) == 3
