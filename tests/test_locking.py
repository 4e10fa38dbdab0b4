"""Locks on every platform: one helper (`_files.locked`), no `fcntl` needed to import or write."""

import subprocess
import sys
import threading
import time

import pytest

from keras_probes import _files

_WITHOUT_FCNTL = """
import sys
sys.modules["fcntl"] = None  # as on Windows, where there is no fcntl module
import keras, numpy as np
import keras_probes as kp

directory = sys.argv[1]
inputs = keras.Input((4,), name="x")
base = keras.Model(inputs, keras.layers.Dense(3, name="dense")(inputs))
probed = kp.ProbedModel(base, points=["dense"], num_classes=2)
x, y = np.arange(32, dtype="float32").reshape(8, 4), np.arange(8) % 2
cache = kp.FeatureCache.write(probed, (x, y), directory + "/cache", batch_size=4, verbose=0)
assert kp.FeatureCache.open(directory + "/cache", model=probed).num_examples("train") == 8
for head in probed.heads:  # as if fitted: export refuses probes still at their zeros
    head.set_weights([np.full_like(w, 0.1) for w in head.get_weights()])
path = kp.export_serving(probed, directory + "/serving/probes", heads_only=True)
print("fcntl" in sys.modules and sys.modules["fcntl"] is None, path.name)
"""


@pytest.mark.slow  # a subprocess of its own: several seconds
def test_import_cache_write_and_export_without_fcntl(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_FCNTL, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["True", "1"]
    assert (tmp_path / "serving" / "probes" / "1" / "saved_model.pb").exists()


def test_a_held_lock_refuses_or_waits(tmp_path):
    path = tmp_path / ".lock"
    held, release = threading.Event(), threading.Event()

    def hold():
        with _files.locked(path):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    with pytest.raises(BlockingIOError, match=str(path)), _files.locked(path, wait=False):
        pass
    threading.Timer(0.3, release.set).start()
    started = time.monotonic()
    with _files.locked(path):  # waits for the holder
        assert time.monotonic() - started >= 0.2
    holder.join()
    with _files.locked(path, wait=False):  # free again
        pass
