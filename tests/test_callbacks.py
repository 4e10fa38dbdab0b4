"""BestProbeWeights: per-probe early stopping that restores each probe's best epoch."""

import keras
import numpy as np
import pytest

import keras_probes as kp


class RecordProbeWeights(keras.callbacks.Callback):
    """Keeps every probe's weights and val loss at the end of every epoch."""

    def on_train_begin(self, logs=None):
        self.weights, self.val_losses = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append({p: self.model.get_probe(p).get_weights() for p in self.model.points})
        self.val_losses.append({p: logs[f"val_{p}/loss"] for p in self.model.points})


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
@pytest.mark.numerics
def test_each_probe_ends_with_the_weights_of_its_best_epoch(convnet, digits):
    x, y, xt, yt = digits
    # Validation labels that the features cannot predict: val loss soon rises,
    # at a different epoch for each probe.
    rng = np.random.default_rng(0)
    y_val = rng.permutation(yt[:200])
    probed = kp.ProbedModel(convnet, points=["relu1", "relu2", "gap"], num_classes=10)
    probed.compile(keras.optimizers.Adam(0.05))
    best = kp.callbacks.BestProbeWeights(patience=2)
    record = RecordProbeWeights()
    probed.fit(
        x[:512],
        y[:512],
        validation_data=(xt[:200], y_val),
        epochs=15,
        batch_size=64,
        callbacks=[record, best],
        verbose=0,
    )
    epochs_run = len(record.val_losses)
    assert epochs_run < 15  # stopped once every probe had stopped
    for point in probed.points:
        stopped = best.stopped_epoch_[point]
        considered = record.val_losses[: (stopped if stopped is not None else epochs_run) + 1]
        best_epoch = int(np.argmin([losses[point] for losses in considered]))
        assert best.best_epoch_[point] == best_epoch
        assert best.best_[point] == pytest.approx(considered[best_epoch][point])
        for actual, expected in zip(
            probed.get_probe(point).get_weights(), record.weights[best_epoch][point], strict=True
        ):
            np.testing.assert_array_equal(actual, expected)
    assert all(e is not None for e in best.stopped_epoch_.values())


def test_missing_validation_lists_the_log_keys(convnet, digits):
    x, y, _, _ = digits
    probed = kp.ProbedModel(convnet, points=["relu1"], num_classes=10)
    probed.compile()
    with pytest.raises(ValueError, match=r"'val_relu1/loss', which never appeared.*keys: \['loss'"):
        probed.fit(x[:64], y[:64], callbacks=[kp.callbacks.BestProbeWeights()], verbose=0)


def test_mode_follows_the_monitor():
    assert kp.callbacks.BestProbeWeights(monitor="val_accuracy").mode == "max"
    assert kp.callbacks.BestProbeWeights(monitor="loss").mode == "min"
    with pytest.raises(ValueError, match="`mode` must be"):
        kp.callbacks.BestProbeWeights(mode="up")


@pytest.mark.numerics
def test_start_from_epoch_delays_stopping(convnet, digits):
    x, y, xt, yt = digits
    y_val = np.random.default_rng(0).permutation(yt[:100])
    probed = kp.ProbedModel(convnet, points=["relu2"], num_classes=10)
    probed.compile(keras.optimizers.Adam(0.05))
    best = kp.callbacks.BestProbeWeights(patience=0, start_from_epoch=4)
    history = probed.fit(
        x[:256], y[:256], validation_data=(xt[:100], y_val), epochs=8, callbacks=[best], verbose=0
    )
    stopped = best.stopped_epoch_["relu2"]
    assert stopped is not None and stopped >= 4
    assert len(history.epoch) == stopped + 1


def test_epochs_without_validation_are_skipped(convnet, digits):
    x, y, xt, yt = digits
    probed = kp.ProbedModel(convnet, points=["relu2"], num_classes=10)
    probed.compile()
    best = kp.callbacks.BestProbeWeights(patience=5)
    history = probed.fit(
        x[:128],
        y[:128],
        validation_data=(xt[:64], yt[:64]),
        validation_freq=2,
        epochs=4,
        callbacks=[best],
        verbose=0,
    )
    assert len(history.epoch) == 4
    assert best.best_epoch_["relu2"] in (1, 3)


def test_monitor_is_checked_up_front():
    with pytest.raises(ValueError, match="`monitor` must be one of"):
        kp.callbacks.BestProbeWeights(monitor="val_acc")
