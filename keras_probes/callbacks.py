"""Keras callbacks: early stopping per probe, and probes watching a model train."""

import io
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_probes import _files, _params, _validation, plots
from keras_probes.fitting import check_solver, fit_each
from keras_probes.model import ProbedModel
from keras_probes.reducers import TokenFeatures
from keras_probes.regression import RegressionProbedModel
from keras_probes.report import ProbeHistory, log_key
from keras_probes.solvers import LBFGSProbe, ProbeEstimator, RidgeProbe
from keras_probes.tasks import Classification, Regression

__all__ = ["BestProbeWeights", "ProbeMonitor"]

_MONITORABLE = ("loss", "accuracy", "top5_accuracy")


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
            `"val_loss"`, `"val_accuracy"`, `"val_top5_accuracy"` for class
            probes, `"val_<target>_r2"` or `"val_<target>_mspe"` for
            regression probes, or the same without `val_`. Defaults to
            `"val_loss"`.
        patience: number of epochs with no improvement after which a probe
            stops, as in `keras.callbacks.EarlyStopping`; `0` and `1` both
            stop it at its first epoch without improvement. Defaults to `0`.
        min_delta: smallest change that counts as an improvement.
            Defaults to `0`.
        mode: `"min"`, `"max"` or `"auto"` (max for accuracies and R^2,
            min otherwise). Defaults to `"auto"`.
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
        metric = monitor.removeprefix("val_")
        if metric not in _MONITORABLE and not metric.endswith(("_r2", "_mspe")):
            _params.refuse(
                "monitor",
                monitor,
                "one of 'val_loss', 'val_accuracy', 'val_top5_accuracy', "
                "'val_<target>_r2', 'val_<target>_mspe' or the same without 'val_'",
            )
        _params.check(
            {"patience": _params.Integer(0), "mode": _params.Options("auto", "min", "max")},
            patience=patience,
            mode=mode,
        )
        self.monitor = monitor
        self.patience = patience
        self.min_delta = abs(min_delta)
        if mode == "auto":
            higher = metric.endswith(("accuracy", "_r2"))
            mode = "max" if higher else "min"
        self.mode = mode
        self.verbose = verbose
        self.start_from_epoch = start_from_epoch

    def _key(self, point):
        prefix = "val_" if self.monitor.startswith("val_") else ""
        return prefix + log_key(point, self.monitor.removeprefix("val_"))

    def _improved(self, value, best):
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta

    def on_train_begin(self, logs=None):
        metric = self.monitor.removeprefix("val_")
        if metric not in self.model.task.monitorable():
            _params.refuse(
                "monitor",
                self.monitor,
                f"a metric of these probes ({self.model.task!r}): one of "
                f"{self.model.task.monitorable()}, with or without 'val_'",
            )
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
                        print(
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


class ProbeMonitor(keras.callbacks.Callback):
    """Probes at every chosen layer, fitted again and again while a model trains.

    Attach it to the `fit` of the model being trained, not of a probed model.
    At the scheduled moments it extracts, in one forward pass of the model as
    it is then (inference mode), the features of a fixed probe-training set
    and of a fixed validation set, fits every probe with `solver` (by default
    L-BFGS to its optimum, warm-started from its previous fit: the features
    drift slowly, so later fits take few iterations), and records the task's
    metrics: errors and losses of class probes, or R^2 and MSPE of
    regression probes (Graziani et al.'s RCVs over training). The
    result is `history`, a `kp.ProbeHistory` of points x measurements
    (Alain & Bengio, Fig. 7/8): `kp.plots.plot_history` draws it as a heatmap
    and `kp.plots.animate_history` as a GIF of the per-layer error curve.

    The training itself is untouched: the features are computed with
    `training=False` (no BatchNorm update, no dropout, no random draw), the
    probes are separate variables, and the optimizer never sees them. Same
    seed, same weights, with or without the monitor.

    Args:
        data: `(x, y)` arrays the probes are trained on, e.g. a few thousand
            training examples; integer labels, or targets `(n,)` / `(n,
            targets)` for regression probes. The inputs of a keras-hub task
            with a preprocessor may be raw (text): they go through it once,
            when training begins, as the task's `fit` reads its own. Token
            sequences are checked as `kp.ProbedModel.check_tokens` does.
        num_classes: number of classes the probes predict. Give either it
            or `targets`.
        validation_data: optional `(x, y)` arrays the probes are evaluated
            on (their `val_error`, `val_loss`).
        points: probe points, as `kp.ProbedModel` takes them. Defaults to
            `"all"`.
        reducers: reducers, as `kp.ProbedModel` takes them; `"tokens"` makes
            per-token probes, with labels `(n, tokens)`. Defaults to `"auto"`.
        unit: `"epoch"` or `"batch"`: what `every` and `at` count.
            Defaults to `"epoch"`.
        every: measure every `every` units. Defaults to `1`.
        at: measure at these unit counts only (e.g. batches
            `[100, 500, 2000]`), instead of `every`. Defaults to `None`.
        at_start: also measure before the first training step (once, not
            again at a later `fit` call). Defaults to `True`.
        max_examples: draw a fixed random subset of at most this many
            examples of `data` and of `validation_data` (seeded). Defaults
            to `None`: all of them.
        l2, max_iter, tol: the default solver's L-BFGS settings, as
            `kp.solvers.LBFGSProbe`. Default to `None`: that estimator's
            defaults (`1e-4`, `1000` and `1e-4`).
        standardize: fit each probe on its features standardised with the
            probe-training set's statistics of the moment, as
            `kp.solvers.LBFGSProbe(standardize=True)`: activations grow or
            shrink by orders of magnitude while a model trains (and across
            the layers of a deep one), and a fixed penalty on raw features
            would measure that scale along with the separability.
            Defaults to `True`.
        targets: for regression probes instead of class probes: the target
            names (or their number), as `kp.RegressionProbedModel` takes them.
        solver: the solver estimator fitted at every point and measurement.
            Defaults to `None`: `kp.solvers.LBFGSProbe` with the settings
            above for class probes, `kp.solvers.RidgeProbe()` (its penalties
            `kp.regression.ALPHAS`) for regression probes. A solver given carries its own settings:
            `l2`, `max_iter`, `tol` and `standardize` are then refused.
        batch_size: batch size of the feature extraction. Defaults to `256`.
        path: a JSON file the history is written to after every measurement
            (atomically): an interrupted run keeps what it measured. Missing
            directories are made; a directory at `path`, or an unwritable
            directory, is refused here (`IsADirectoryError`,
            `NotADirectoryError`, `PermissionError`), not mid-training.
            Defaults to `None`.
        log_dir: a TensorBoard log directory: after every measurement the
            layers x measurements heatmap of the error (`val_error` with
            validation data, else `train_error`) is written as an image
            summary `probes/<metric>` at the training step, in
            `log_dir/probes`. Checked here as `path` is. Defaults to `None`.
        seed: seed of the subsets. Defaults to `0`.
        verbose: `1` prints a line per measurement. Defaults to `1`.

    Attributes:
        history: the `kp.ProbeHistory`; for class probes its metrics are
            `train_error`, `train_loss`, `objective` (loss plus penalty),
            `grad_norm` (the fits' optimality certificates), `converged`
            (1.0, or 0.0 for a fit stopped short of its optimum), `l2` and,
            with validation data, `val_error` and `val_loss`; for regression
            probes `train_<target>_r2`, `train_<target>_mspe` (and the same
            with `val_`), `<target>_alpha` and `converged`.
        probed: the `kp.ProbedModel` whose heads hold the latest fit.

    Example:

    ```python
    monitor = kp.callbacks.ProbeMonitor(
        (x_train[:2000], y_train[:2000]), num_classes=10,
        validation_data=(x_val, y_val), unit="batch", every=100,
        path="history.json")
    model.fit(x_train, y_train, epochs=5, callbacks=[monitor])
    kp.plots.plot_history(monitor.history, "val_error").savefig("heatmap.png")
    ```
    """

    def __init__(
        self,
        data,
        num_classes: int | None = None,
        validation_data=None,
        points="all",
        reducers="auto",
        unit: str = "epoch",
        every: int = 1,
        at=None,
        at_start: bool = True,
        max_examples: int | None = None,
        l2: float | None = None,
        max_iter: int | None = None,
        tol: float | None = None,
        standardize: bool | None = None,
        batch_size: int = 256,
        path=None,
        log_dir=None,
        seed: int = 0,
        verbose: int = 1,
        *,
        targets=None,
        solver: ProbeEstimator | None = None,
    ):
        super().__init__()
        _params.check(
            {
                "unit": _params.Options("epoch", "batch"),
                "every": _params.Integer(1),
                "max_examples": [_params.Integer(1), None],
                "batch_size": _params.Integer(1),
            },
            unit=unit,
            every=every,
            max_examples=max_examples,
            batch_size=batch_size,
        )
        if (num_classes is None) == (targets is None):
            raise ValueError(
                "Give either `num_classes` (class probes) or `targets` (regression probes). "
                f"Received: num_classes={num_classes!r}, targets={targets!r}"
            )
        lbfgs = {"l2": l2, "max_iter": max_iter, "tol": tol, "standardize": standardize}
        given = sorted(name for name, value in lbfgs.items() if value is not None)
        if given and (solver is not None or targets is not None):
            raise ValueError(
                f"{given} are settings of the default L-BFGS solver of class probes; "
                + (
                    "set them on the `solver` given instead."
                    if solver is not None
                    else "regression probes are fitted by `solver=`, RidgeProbe by default."
                )
            )
        if solver is None and targets is None:
            # LBFGSProbe's own defaults, but the monitor standardises (see `standardize`).
            given = {k: v for k, v in lbfgs.items() if v is not None}
            solver = LBFGSProbe(**{"standardize": True, **given})
        self.solver = solver if solver is not None else RidgeProbe()
        self.num_classes, self.targets = num_classes, targets
        task = Classification(num_classes) if targets is None else Regression(targets)
        check_solver(self.solver, task)
        self.splits = {"train": _subset(data, "data", max_examples, seed)}
        if validation_data is not None:
            self.splits["val"] = _subset(validation_data, "validation_data", max_examples, seed)
        # Per-token labels are checked against the padding mask once the probed
        # model exists (`on_train_begin`); others now.
        self._checked = not _may_keep_tokens(reducers)
        if self._checked:
            self._check_targets(task)
        self._kept = {}
        self.points, self.reducers = points, reducers
        self.unit, self.every = unit, every
        self.at = None if at is None else sorted({int(a) for a in at})
        self.at_start = at_start
        self.batch_size = batch_size
        self.path = None if path is None else Path(path)
        self.log_dir = None if log_dir is None else Path(log_dir)
        # Written at every measurement: refused now rather than mid-training.
        if self.path is not None:
            _check_writable(self.path, "path")
        if self.log_dir is not None:
            _check_writable(self.log_dir, "log_dir")
        self._writer = None
        self.verbose = verbose
        self.history = None
        self.probed = None

    def _due(self, count):
        return count in self.at if self.at is not None else count % self.every == 0

    def _check_targets(self, task):
        self.splits = {
            split: (x, task.check_targets(y, num_examples=len(y)))
            for split, (x, y) in self.splits.items()
        }
        self._checked = True

    def on_train_begin(self, logs=None):
        if self.probed is None:
            settings = {"points": self.points, "reducers": self.reducers}
            settings["name"] = f"{self.model.name}_monitor"
            if self.targets is None:
                self.probed = ProbedModel(self.model, num_classes=self.num_classes, **settings)
            else:
                self.probed = RegressionProbedModel(self.model, targets=self.targets, **settings)
            self.history = ProbeHistory(
                self.probed.points, num_classes=self.num_classes, model=self.model.name
            )
            for split, (x, y) in self.splits.items():
                if self.probed.preprocessor is not None:
                    # A keras-hub task's raw inputs (text), as its `fit` reads them.
                    x = _preprocessed(self.probed, x, self.batch_size)
                self.probed.check_tokens(x, "data" if split == "train" else "validation_data")
                self.splits[split] = (x, y)
            if self.probed.per_token:
                # Each kept token is an example: its label, and where it is in `x`.
                for split, (x, y) in self.splits.items():
                    kept = np.asarray(self.probed.kept_tokens(x)).astype(bool)
                    labels = _validation.check_token_labels(y, kept, self.num_classes)
                    self.splits[split], self._kept[split] = (x, labels), kept
            elif not self._checked:
                self._check_targets(self.probed.task)
        self._epoch = 0
        if self.at_start and not self.history.steps:
            self._measure(epoch=0.0)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.unit == "batch" and self._due(self._step()):
            steps = self.params.get("steps")
            self._measure(epoch=self._epoch + ((batch + 1) / steps if steps else 0.0))

    def on_epoch_end(self, epoch, logs=None):
        if self.unit == "epoch" and self._due(epoch + 1):
            self._measure(epoch=float(epoch + 1))

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def _measure(self, epoch):
        step = self._step()
        if self.history.steps and step <= self.history.steps[-1]:
            return  # already measured at this step
        start = time.perf_counter()
        features = {
            split: self.probed.feature_model.predict(x, batch_size=self.batch_size, verbose=0)
            for split, (x, _) in self.splits.items()
        }
        for split, kept in self._kept.items():  # per-token probes: a row per kept token
            features[split] = {p: f[kept] for p, f in features[split].items()}
        task = self.probed.task
        report = fit_each(
            self.solver,
            task,
            self.probed.points,
            lambda split, point: features[split][point],
            {split: y for split, (_, y) in self.splits.items()},
            heads=self.probed.heads,
            verbose=0,
        )
        train = report.results["train"][self.probed.points[0]]
        values = {
            name: report.values("train", name) for name in train if name not in task.scores_names()
        }
        for split in self.splits:
            for metric in task.history_metrics():
                values[f"{split}_{metric}"] = report.values(split, metric)
        self.history.append(step, epoch, values)
        if self.path is not None:
            self.history.to_json(self.path)
        if self.log_dir is not None:
            self._write_image(step)
        if self.verbose:
            key = self._headline()
            errors = values[key]
            best = max if task.higher_is_better(task.history_metrics()[0]) else min
            first, last = self.probed.points[0], self.probed.points[-1]
            print(
                f"ProbeMonitor, step {step} (epoch {epoch:.2f}): {key} {errors[first]:.3f} "
                f"({first}) ... {errors[last]:.3f} ({last}), best {best(errors.values()):.3f}; "
                f"{len(errors)} probes in {time.perf_counter() - start:.1f} s"
            )

    def _headline(self):
        """The history metric worth a glance: the task's first, held out if possible."""
        split = "val" if "val" in self.splits else "train"
        return f"{split}_{self.probed.task.history_metrics()[0]}"

    def _write_image(self, step):
        metric = self._headline()
        figure = plots.plot_history(self.history, metric)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80)
        image = tf.image.decode_png(buffer.getvalue(), channels=3)[None]
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir / "probes"))
        with self._writer.as_default():
            tf.summary.image(f"probes/{metric}", image, step=step)
        self._writer.flush()


def _check_writable(path: Path, argument: str) -> None:
    """Refuses a history file (`argument="path"`) or a log directory (`"log_dir"`) that
    could not be written: a directory where the file goes, a file where a directory
    goes, or a nearest existing directory that is not writable. Missing directories
    are fine: the first write makes them."""
    received = f"{argument}={str(path)!r}"
    if argument == "path" and path.is_dir():
        raise IsADirectoryError(
            f"ProbeMonitor writes its history to the JSON file {received}, which is a "
            f"directory. Pass a file path, e.g. path={str(path / 'history.json')!r}."
        )
    _files.check_writable(
        path.parent if argument == "path" else path,
        f"ProbeMonitor cannot write {received}",
        "Pass a path whose directories are directories.",
    )


def _preprocessed(probed, x, batch_size):
    """Raw inputs `x` through the probed task's preprocessor, as arrays."""
    batches = list(probed.preprocess(x, batch_size=batch_size)[0].as_numpy_iterator())
    return keras.tree.map_structure(lambda *parts: np.concatenate(parts), *batches)


def _may_keep_tokens(reducers) -> bool:
    """Whether `reducers` may make per-token probes (labels `(n, tokens)`)."""
    specs = reducers.values() if isinstance(reducers, dict) else [reducers]
    return any(
        isinstance(spec, TokenFeatures) or (isinstance(spec, str) and spec == "tokens")
        for spec in specs
    )


def _subset(data, name, max_examples, seed):
    if not (isinstance(data, tuple | list) and len(data) == 2):
        raise ValueError(
            f"`{name}` must be a tuple `(x, y)` of arrays, a fixed set the probes are "
            f"fitted on at every measurement. Received: {type(data).__name__}"
        )
    # Inputs may be several arrays (a dict, e.g. token ids and a padding mask).
    x, y = keras.tree.map_structure(np.asarray, data[0]), np.asarray(data[1])
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    shapes = [a.shape for a in keras.tree.flatten(x)]
    if any(len(shape) == 0 or shape[0] != len(y) for shape in shapes) or len(y) == 0:
        raise ValueError(
            f"`{name}` must hold as many labels as inputs, at least one. "
            f"Received: inputs of shape {shapes[0] if len(shapes) == 1 else shapes}, "
            f"y of shape {y.shape}"
        )
    if max_examples is not None and max_examples < len(y):
        keep = np.sort(np.random.default_rng(seed).permutation(len(y))[:max_examples])
        x, y = keras.tree.map_structure(lambda a: a[keep], x), y[keep]
    return x, y
