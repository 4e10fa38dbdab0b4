"""Keras callbacks for probe training."""

import keras
import numpy as np

__all__ = ["BestProbeWeights"]


class BestProbeWeights(keras.callbacks.Callback):
    """Early stopping per probe: each probe keeps the weights of its best epoch.

    The protocol of Alain & Bengio: every probe is early-stopped on its own
    validation loss. A probe stops once `monitor` has not improved for
    `patience` epochs; training ends when every probe has stopped, and each
    probe's weights are then restored from its best epoch. All probes share
    one forward pass of the base, so probes that stopped early ride along at
    no extra cost; their later epochs are simply discarded.

    Args:
        monitor: the quantity per probe, as a log key without the point:
            `"val_loss"`, `"val_accuracy"`, `"val_top5_accuracy"`, or the
            same without `val_`. Defaults to `"val_loss"`.
        patience: number of epochs with no improvement after which a probe
            stops, as in `keras.callbacks.EarlyStopping`; `0` and `1` both
            stop it at its first epoch without improvement. Defaults to `0`.
        min_delta: smallest change that counts as an improvement.
            Defaults to `0`.
        mode: `"min"`, `"max"` or `"auto"` (max for accuracies, min
            otherwise). Defaults to `"auto"`.
        verbose: `1` prints when a probe stops. Defaults to `0`.
        start_from_epoch: epochs to wait before a probe may stop, e.g. while a
            large learning rate makes the first validation losses noisy; the
            best weights are still tracked from the first epoch. Defaults to `0`.

    Attributes:
        best_: `{point: best monitored value}`.
        best_epoch_: `{point: epoch of that value}` (0-based).
        stopped_epoch_: `{point: epoch at which it stopped}`, or `None` for
            probes still improving when training ended.

    Example:

    ```python
    probed.fit(x, y, validation_data=(xv, yv), epochs=50,
               callbacks=[kp.callbacks.BestProbeWeights(patience=3)])
    ```
    """

    def __init__(
        self,
        monitor="val_loss",
        patience=0,
        min_delta=0.0,
        mode="auto",
        verbose=0,
        start_from_epoch=0,
    ):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"`mode` must be 'auto', 'min' or 'max'. Received: mode={mode!r}")
        if monitor.removeprefix("val_") not in ("loss", "accuracy", "top5_accuracy"):
            raise ValueError(
                "`monitor` must be one of 'val_loss', 'val_accuracy', 'val_top5_accuracy' "
                f"or the same without 'val_'. Received: monitor={monitor!r}"
            )
        if patience < 0:
            raise ValueError(f"`patience` must be >= 0. Received: patience={patience!r}")
        self.monitor = monitor
        self.patience = patience
        self.min_delta = abs(min_delta)
        if mode == "auto":
            mode = "max" if monitor.endswith("accuracy") else "min"
        self.mode = mode
        self.verbose = verbose
        self.start_from_epoch = start_from_epoch

    def _key(self, point):
        prefix = "val_" if self.monitor.startswith("val_") else ""
        return f"{prefix}{point}_{self.monitor.removeprefix('val_')}"

    def _improved(self, value, best):
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta

    def on_train_begin(self, logs=None):
        points = self.model.points
        worst = np.inf if self.mode == "min" else -np.inf
        self.best_ = dict.fromkeys(points, worst)
        self.best_epoch_ = dict.fromkeys(points)
        self.stopped_epoch_ = dict.fromkeys(points)
        self._wait = dict.fromkeys(points, 0)
        self._best_weights = {}
        self._keys_missing = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor.startswith("val_") and not any(k.startswith("val_") for k in logs):
            self._keys_missing = sorted(logs)
            return  # no validation this epoch (`validation_freq` > 1, or none at all)
        self._keys_missing = None
        for point in self.model.points:
            if self.stopped_epoch_[point] is not None:
                continue
            key = self._key(point)
            if key not in logs:
                raise ValueError(
                    f"BestProbeWeights monitors {key!r}, which is not in the logs. "
                    f"Available keys: {sorted(logs)}. Pass validation_data to fit() "
                    "for 'val_' quantities, or another `monitor`. "
                    f"Received: monitor={self.monitor!r}"
                )
            value = float(logs[key])
            if self._improved(value, self.best_[point]):
                self.best_[point] = value
                self.best_epoch_[point] = epoch
                self._wait[point] = 0
                self._best_weights[point] = self.model.get_probe(point).get_weights()
            else:
                self._wait[point] += 1
                stop = self._wait[point] >= max(self.patience, 1)
                if stop and epoch >= self.start_from_epoch:
                    self.stopped_epoch_[point] = epoch
                    if self.verbose:
                        keras.utils.io_utils.print_msg(
                            f"Epoch {epoch + 1}: probe {point!r} stopped; best "
                            f"{self.monitor} {self.best_[point]:.4f} at epoch "
                            f"{self.best_epoch_[point] + 1}."
                        )
        if all(e is not None for e in self.stopped_epoch_.values()):
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if not self._best_weights and self._keys_missing is not None:
            raise ValueError(
                f"BestProbeWeights monitors {self._key(self.model.points[0])!r}, which "
                f"never appeared in the logs. Available keys: {self._keys_missing}. Pass "
                "validation_data to fit() for 'val_' quantities, or another `monitor`. "
                f"Received: monitor={self.monitor!r}"
            )
        for point, weights in self._best_weights.items():
            self.model.get_probe(point).set_weights(weights)
