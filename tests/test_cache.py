"""FeatureCache: exact features, atomic resumable writes, refusal of corrupt or stale caches."""

import json
import os
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
    """{relative path: bytes} of every file under `directory`."""
    directory = Path(directory)
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_cached_features_are_the_models_features(setup, tmp_path):
    probed, x, y, xt, yt = setup
    write(probed, (x, y), tmp_path, "train")
    write(probed, (xt, yt), tmp_path, "test")
    cache = kp.FeatureCache.open(tmp_path, model=probed)
    assert cache.splits == ["train", "test"] and cache.points == probed.points
    assert cache.num_examples("train") == 600 and cache.num_classes == 10
    assert cache.feature_sizes == {"image": 1, "relu1": 8, "pool1": 1352, "relu2": 16, "gap": 16}
    features, labels = cache.arrays("train")
    expected = probed.extract_features(x)
    for point in probed.points:
        assert features[point].dtype == np.float32
        np.testing.assert_array_equal(features[point], np.asarray(expected[point]))
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


def test_float16_overflow_is_refused(tmp_path):
    inputs = keras.Input((4,), name="x")
    outputs = keras.layers.Dense(3, kernel_initializer=keras.initializers.Constant(1e5))(inputs)
    probed = kp.ProbedModel(keras.Model(inputs, outputs), points="all", num_classes=2)
    data = (np.ones((8, 4), "float32"), np.zeros(8, "int64"))
    with pytest.raises(ValueError, match="exceed float16's range.*dtype='float32'"):
        kp.FeatureCache.write(probed, data, tmp_path, dtype="float16", batch_size=8, verbose=0)


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
        kp.CacheError, match="another model.*manifest.json.*architecture or weights"
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
base = keras.models.load_model(model_file)
probed = kp.ProbedModel(base, points={points!r}, num_classes=10, reducers={reducers!r})
data = np.load(data_file)
slow = lambda x, y: (tf.py_function(lambda t: (time.sleep(0.1), t)[1], [x], tf.float32), y)
dataset = tf.data.Dataset.from_tensor_slices((data["x"], data["y"])).batch(50).map(slow)
kp.FeatureCache.write(probed, dataset, directory, batch_size=50, shard_size=100, verbose=0)
"""


def test_sigkill_mid_write_then_resume_gives_identical_bytes(setup, tmp_path):
    probed, x, y, *_ = setup
    probed.base.save(tmp_path / "base.keras")
    np.savez(tmp_path / "data.npz", x=x, y=y)
    script = tmp_path / "writer.py"
    script.write_text(_WRITER.format(points=POINTS, reducers=REDUCERS))
    killed = tmp_path / "killed"
    args = [sys.executable, str(script), str(killed), str(tmp_path / "base.keras")]
    process = subprocess.Popen([*args, str(tmp_path / "data.npz")], env=os.environ.copy())
    manifest = killed / "manifest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if (
            manifest.exists()
            and len(json.loads(manifest.read_text())["splits"]["train"]["shards"]) >= 2
        ):
            break
        time.sleep(0.02)
    assert process.poll() is None, "the writer ended before it could be killed"
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
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
import keras_probes as kp

directory, model_file, data_file = sys.argv[1:4]
data = np.load(data_file)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    probed = kp.ProbedModel(keras.models.load_model(model_file), points={points!r},
                            num_classes=10, reducers={reducers!r})
    cache = kp.FeatureCache.write(probed, (data["x"], data["y"]), directory, batch_size=50,
                                  shard_size=100, verbose=0)
    report = kp.fit_probes(probed, cache, solver="lbfgs", l2=1e-3, verbose=0)
    objectives = [report.results["train"][p]["objective"] for p in probed.points]
    # Minibatch training is Keras' own fit, distributed by the strategy.
    for head in probed.heads:
        head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    kp.fit_probes(probed, cache, solver="adam", validation=None, epochs=2, verbose=0)
    assert np.abs(probed.get_probe("gap").get_weights()[0]).max() > 0
print("replicas", strategy.num_replicas_in_sync)
np.save(directory + ".objectives.npy", objectives)
"""


@pytest.mark.slow
def test_cache_and_lbfgs_under_mirrored_strategy_equal_single_device(setup, tmp_path):
    probed, x, y, *_ = setup
    probed.base.save(tmp_path / "base.keras")
    np.savez(tmp_path / "data.npz", x=x, y=y)
    script = tmp_path / "mirrored.py"
    script.write_text(textwrap.dedent(_MIRRORED.format(points=POINTS, reducers=REDUCERS)))
    mirrored = tmp_path / "mirrored"
    args = [str(mirrored), str(tmp_path / "base.keras"), str(tmp_path / "data.npz")]
    result = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas 2" in result.stdout

    single = tmp_path / "single"
    cache = write(probed, (x, y), single)
    assert files_of(mirrored) == files_of(single)
    report = kp.fit_probes(probed, cache, solver="lbfgs", l2=1e-3, verbose=0)
    # The same convex problems, summed over two replicas: the same optima.
    objectives = [report.results["train"][p]["objective"] for p in probed.points]
    np.testing.assert_allclose(np.load(str(mirrored) + ".objectives.npy"), objectives, rtol=1e-5)
