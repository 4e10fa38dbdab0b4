"""TensorBoard: per-probe curves grouped by point; ProbeMonitor's heatmap as an image."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import small_convnet
from tensorflow.core.util import event_pb2

import keras_probes as kp


def summaries(directory):
    """`{tag: [(step, tensor proto), ...]}` of the event files in `directory`."""
    found = {}
    for path in sorted(tf.io.gfile.glob(f"{directory}/events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value.tensor))
    return found


def test_keras_tensorboard_groups_every_probes_curves_by_point(digits, tmp_path):
    x, y, xt, yt = digits
    keras.utils.set_random_seed(0)
    probed = kp.ProbedModel(small_convnet(), points=["relu1", "gap"], num_classes=10)
    probed.compile()
    board = keras.callbacks.TensorBoard(log_dir=str(tmp_path))
    probed.fit(
        x[:256], y[:256], validation_data=(xt[:64], yt[:64]), epochs=2, callbacks=[board], verbose=0
    )
    for split in ("train", "validation"):
        written = summaries(tmp_path / split)
        for point in probed.points:
            # TensorBoard groups tags by what precedes the first '/': one group per point.
            expected = {f"epoch_{point}/{m}" for m in ("loss", "accuracy", "top5_accuracy")}
            assert expected <= set(written), (split, sorted(written))
        assert [step for step, _ in written["epoch_gap/loss"]] == [0, 1]


@pytest.mark.slow  # trains a convnet with probes refitted along the way
def test_probe_monitor_writes_its_heatmap_as_an_image(digits, tmp_path):
    x, y, xt, yt = digits
    keras.utils.set_random_seed(0)
    model = small_convnet()
    model.compile("adam", "sparse_categorical_crossentropy")
    monitor = kp.callbacks.ProbeMonitor(
        (x[:300], y[:300]),
        10,
        validation_data=(xt[:100], yt[:100]),
        points=["relu1", "gap"],
        log_dir=tmp_path,
        verbose=0,
    )
    model.fit(x[:256], y[:256], epochs=2, batch_size=64, callbacks=[monitor], verbose=0)
    written = summaries(tmp_path / "probes")
    assert list(written) == ["probes/val_error"]
    events = written["probes/val_error"]
    assert [step for step, _ in events] == monitor.history.steps  # 0, 4, 8
    # An image summary: width, height, then the PNG.
    image = events[-1][1].string_val
    assert image[2][:4] == b"\x89PNG" and int(image[0]) > 100 and int(image[1]) > 100
    assert np.isfinite(monitor.history.matrix("val_error")).all()
