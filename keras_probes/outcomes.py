"""Each held-out example's outcome, kept so a report's figures carry their uncertainty.

A probe's error on a split is the mean of one outcome per example: was it
right. Kept per example (`Outcomes` for class probes, `RegressionOutcomes`
for regression probes), the figure gets an interval and two figures a paired
test on the same examples (`kp.uncertainty`), from the report alone.
`Examples` says which examples a split holds: a fingerprint of their inputs
and labels (reports of other examples are never paired) and, for per-token
probes, the sequence of each row (tokens of one sequence are not
independent: they are resampled together).

Both are stored compactly in a report's JSON and CSV, as base64 text:
`Outcomes` takes 2 bits (correct, top-5 hit) and 4 bytes (the loss, float32)
per example, about 5.7 characters of base64; `RegressionOutcomes` 8 bytes
per example and target (target and prediction, float32), about 10.7
characters; `Examples` keeps the sequences as their lengths
(zlib-compressed), a few bytes per sequence.

Every figure is a function of means over the examples (`columns`): an error
or a loss is one mean, an R^2 is `1 - mean(r^2) / (mean(y^2) - mean(y)^2)`,
so that resampling examples resamples the figure.
"""

import base64
import dataclasses
import hashlib
import json
import zlib
from collections.abc import Callable

import numpy as np

__all__ = ["Examples", "Fingerprint", "Outcomes", "RegressionOutcomes", "decode", "fingerprint"]

_REGRESSION = "r:"  # the text of RegressionOutcomes starts so (":" is not base64)

# The metric each outcome is the per-example form of: the metric is its mean.
_METRIC_OF = {"loss": "loss", "error": "correct", "top5_error": "top5"}


@dataclasses.dataclass(frozen=True, eq=False)
class Outcomes:
    """One probe's outcome on every example of a split, in row order.

    Attributes:
        correct: bool `(n,)`, the top-1 prediction is the label.
        top5: bool `(n,)`, the label is among the 5 best classes.
        loss: float32 `(n,)`, the example's cross-entropy.

    The report's `error`, `top5_error` and `loss` are the means of `~correct`,
    `~top5` and `loss` (the loss within float32 rounding).
    """

    correct: np.ndarray
    top5: np.ndarray
    loss: np.ndarray

    def __post_init__(self):
        arrays = {
            "correct": np.asarray(self.correct, bool),
            "top5": np.asarray(self.top5, bool),
            "loss": np.asarray(self.loss, np.float32),
        }
        shapes = {name: a.shape for name, a in arrays.items()}
        if len({*shapes.values()}) != 1 or arrays["loss"].ndim != 1:
            raise ValueError(f"Outcomes must be three arrays of one shape (n,). Received: {shapes}")
        for name, array in arrays.items():
            object.__setattr__(self, name, array)

    def __len__(self) -> int:
        return len(self.loss)

    def __eq__(self, other):
        return isinstance(other, Outcomes) and all(
            np.array_equal(getattr(self, f), getattr(other, f)) for f in _METRIC_OF.values()
        )

    @property
    def metrics(self) -> list[str]:
        """The metrics these outcomes give."""
        return list(_METRIC_OF)

    def is_rate(self, metric: str) -> bool:
        """Whether `metric` is a rate of 0/1 outcomes (an error), else a mean or ratio."""
        return metric in ("error", "top5_error")

    def values(self, metric: str) -> np.ndarray:
        """Each example's share of `metric`: `"error"`, `"top5_error"` (0 or 1) or `"loss"`;
        the metric is their mean. float64 `(n,)`."""
        _check_metric(metric, self.metrics)
        value = getattr(self, _METRIC_OF[metric])
        return (~value if value.dtype == bool else value).astype(np.float64)

    def columns(self, metric: str) -> tuple[np.ndarray, Callable]:
        """`(columns (n, k), statistic)`: `metric` is `statistic(columns.mean(0))`."""
        return self.values(metric)[:, None], _first

    def encode(self) -> str:
        """Base64 text: the bits of `correct` and `top5`, then `loss` (float32, little-endian)."""
        n = len(self)
        blob = b"".join(
            [
                n.to_bytes(8, "little"),
                np.packbits(self.correct).tobytes(),
                np.packbits(self.top5).tobytes(),
                self.loss.astype("<f4").tobytes(),
            ]
        )
        return base64.b64encode(blob).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> "Outcomes":
        """The `Outcomes` of `encode`'s text; a `ValueError` if it is not one."""
        blob = _b64(text, "outcomes")
        n = int.from_bytes(blob[:8], "little") if len(blob) >= 8 else -1
        bits = (n + 7) // 8
        if n < 0 or len(blob) != 8 + 2 * bits + 4 * n:
            raise ValueError(
                f"outcomes text of {len(blob)} bytes is not an encoded Outcomes (cut short or "
                "altered); write the report again."
            )
        correct = np.unpackbits(np.frombuffer(blob, np.uint8, bits, 8), count=n)
        top5 = np.unpackbits(np.frombuffer(blob, np.uint8, bits, 8 + bits), count=n)
        loss = np.frombuffer(blob, "<f4", n, 8 + 2 * bits)
        if not np.isfinite(loss).all() or (loss < 0).any():
            raise ValueError("outcomes text holds a loss that is negative or not finite.")
        return cls(correct, top5, loss)


@dataclasses.dataclass(frozen=True, eq=False)
class RegressionOutcomes:
    """One regression probe's targets and predictions on every example of a split.

    Attributes:
        targets: the target names, as the report's metrics name them
            (`<target>_r2`, `<target>_mspe`).
        y: float32 `(n, targets)`, each example's targets.
        predictions: float32 `(n, targets)`, the probe's predictions.
    """

    targets: tuple[str, ...]
    y: np.ndarray
    predictions: np.ndarray

    def __post_init__(self):
        y = np.asarray(self.y, np.float32).reshape(len(self.y), -1)
        predictions = np.asarray(self.predictions, np.float32).reshape(len(self.predictions), -1)
        targets = tuple(self.targets)
        if y.shape != predictions.shape or y.shape[1] != len(targets):
            raise ValueError(
                f"RegressionOutcomes need targets and predictions of shape (n, {len(targets)}). "
                f"Received: {y.shape} and {predictions.shape}"
            )
        for name, value in (("targets", targets), ("y", y), ("predictions", predictions)):
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return len(self.y)

    def __eq__(self, other):
        return (
            isinstance(other, RegressionOutcomes)
            and other.targets == self.targets
            and np.array_equal(other.y, self.y)
            and np.array_equal(other.predictions, self.predictions)
        )

    @property
    def metrics(self) -> list[str]:
        return ["loss", *(f"{t}_{m}" for t in self.targets for m in ("r2", "mspe"))]

    def is_rate(self, metric: str) -> bool:
        return False

    def columns(self, metric: str) -> tuple[np.ndarray, Callable]:
        """`(columns (n, k), statistic)`: `metric` is `statistic(columns.mean(0))`; for
        `<target>_r2` the columns are the squared residual, the target and its square."""
        _check_metric(metric, self.metrics)
        y, residual = self.y.astype(np.float64), (self.y - self.predictions).astype(np.float64)
        if metric == "loss":
            return (residual**2).mean(axis=1, keepdims=True), _first
        target, kind = metric.rsplit("_", 1)
        i = self.targets.index(target)
        if kind == "mspe":
            return residual[:, i : i + 1] ** 2, _first
        return np.stack([residual[:, i] ** 2, y[:, i], y[:, i] ** 2], axis=1), _r2

    def encode(self) -> str:
        """`"r:"` and base64 text: the target names (JSON), then targets and predictions
        (float32, little-endian)."""
        names = json.dumps(list(self.targets)).encode()
        blob = b"".join(
            [
                len(self).to_bytes(8, "little"),
                len(names).to_bytes(4, "little"),
                names,
                self.y.astype("<f4").tobytes(),
                self.predictions.astype("<f4").tobytes(),
            ]
        )
        return _REGRESSION + base64.b64encode(blob).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> "RegressionOutcomes":
        """The `RegressionOutcomes` of `encode`'s text; a `ValueError` if it is not one."""
        blob = _b64(text[len(_REGRESSION) :], "outcomes")
        try:
            n, size = int.from_bytes(blob[:8], "little"), int.from_bytes(blob[8:12], "little")
            targets = tuple(json.loads(blob[12 : 12 + size]))
            k, start = len(targets), 12 + size
            if len(blob) != start + 8 * n * k:
                raise ValueError
        except ValueError:
            raise ValueError(
                "outcomes text is not an encoded RegressionOutcomes (cut short or altered); "
                "write the report again."
            ) from None
        y = np.frombuffer(blob, "<f4", n * k, start).reshape(n, k)
        predictions = np.frombuffer(blob, "<f4", n * k, start + 4 * n * k).reshape(n, k)
        return cls(targets, y, predictions)


def decode(text: str) -> "Outcomes | RegressionOutcomes":
    """Class or regression outcomes from their `encode`d text."""
    if not isinstance(text, str):
        raise ValueError(f"outcomes must be encoded text. Received: {type(text).__name__}")
    if text.startswith(_REGRESSION):
        return RegressionOutcomes.decode(text)
    return Outcomes.decode(text)


@dataclasses.dataclass(frozen=True, eq=False)
class Examples:
    """Which examples a split holds.

    Attributes:
        fingerprint: a hex digest of the examples' inputs and labels (or of
            the cached rows they became); two reports are paired only if
            their fingerprints are equal.
        sequences: int `(n,)`, the sequence of each row for per-token probes
            (rows of one sequence are contiguous), else `None`: every row is
            an example of its own.
    """

    fingerprint: str
    sequences: np.ndarray | None = None

    def __post_init__(self):
        if not isinstance(self.fingerprint, str) or not self.fingerprint:
            raise ValueError(
                f"`fingerprint` must be a non-empty string. Received: {self.fingerprint!r}"
            )
        if self.sequences is not None:
            sequences = np.asarray(self.sequences, np.int64)
            if sequences.ndim != 1 or (np.diff(sequences) < 0).any():
                raise ValueError(
                    "`sequences` must be (n,) non-decreasing sequence numbers: the tokens of "
                    "one sequence in contiguous rows."
                )
            object.__setattr__(self, "sequences", sequences)

    def __eq__(self, other):
        if not isinstance(other, Examples) or other.fingerprint != self.fingerprint:
            return False
        if self.sequences is None or other.sequences is None:
            return self.sequences is other.sequences
        return np.array_equal(self.sequences, other.sequences)

    def units(self, n: int) -> np.ndarray:
        """The resampling unit of each of `n` rows, numbered from 0: its sequence,
        or the row itself."""
        if self.sequences is None:
            return np.arange(n)
        if len(self.sequences) != n:
            raise ValueError(
                f"The split holds {len(self.sequences)} rows of sequences but {n} outcomes."
            )
        return np.unique(self.sequences, return_inverse=True)[1]

    def encode_sequences(self) -> str | None:
        """The sequences as base64 text of their zlib-compressed lengths, or `None`."""
        if self.sequences is None:
            return None
        _, lengths = np.unique(self.sequences, return_counts=True)
        return base64.b64encode(zlib.compress(lengths.astype("<u4").tobytes(), 9)).decode()

    @classmethod
    def decode(cls, fingerprint: str, sequences: str | None) -> "Examples":
        """`Examples` from a fingerprint and `encode_sequences`' text (or `None`)."""
        if sequences is None:
            return cls(fingerprint)
        try:
            lengths = np.frombuffer(zlib.decompress(_b64(sequences, "sequences")), "<u4")
        except zlib.error:
            raise ValueError(
                "sequences text is not encoded sequences; write the report again."
            ) from None
        return cls(fingerprint, np.repeat(np.arange(len(lengths)), lengths))


class Fingerprint:
    """`fingerprint` of arrays that arrive in batches of rows, whatever the batching.

    Call `update(*batch)` with the next rows (along the first axis) of the
    same arrays each time; `hexdigest()` is then `fingerprint` of the arrays
    whole. Rows of another dtype or shape than the ones before (sequences
    padded per batch, say) start a new run, recorded in the digest.

    Example:

    ```python
    digest = kp.outcomes.Fingerprint()
    for inputs, labels in batches:
        digest.update(inputs, labels)
    digest.hexdigest() == kp.outcomes.fingerprint(all_inputs, all_labels)
    ```
    """

    def __init__(self):
        # Per array: the sha256 of its bytes, and its runs [(dtype, row shape), rows].
        self._streams = None

    def update(self, *arrays) -> "Fingerprint":
        """Adds the next rows of every array; returns this `Fingerprint`."""
        if self._streams is None:
            self._streams = [(hashlib.sha256(), []) for _ in arrays]
        if len(arrays) != len(self._streams):
            raise ValueError(
                "Fingerprint.update takes the same number of arrays every time: "
                f"{len(self._streams)}. Received: {len(arrays)}"
            )
        for (digest, runs), array in zip(self._streams, arrays, strict=True):
            array = np.ascontiguousarray(array)
            kind = (array.dtype.str, array.shape[1:] if array.ndim else None)
            rows = len(array) if array.ndim else 1
            if runs and runs[-1][0] == kind:
                runs[-1][1] += rows
            else:
                runs.append([kind, rows])
            digest.update(_bytes(array))
        return self

    def hexdigest(self) -> str:
        """16 hex characters: the sha256 of every array's runs and bytes."""
        total = hashlib.sha256()
        for digest, runs in self._streams or []:
            total.update(repr(runs).encode())
            total.update(digest.digest())
        return total.hexdigest()[:16]


def fingerprint(*arrays) -> str:
    """A hex digest (sha256, 16 characters) of arrays' shapes, dtypes and bytes, in order;
    `Fingerprint` gives the same digest of the arrays streamed in batches."""
    return Fingerprint().update(*arrays).hexdigest()


def _bytes(array):
    """An array's bytes; Python objects' (strings') by value, never their addresses."""
    if array.dtype != object:
        return array.reshape(-1).view(np.uint8)
    items = [i if isinstance(i, bytes) else str(i).encode() for i in array.reshape(-1)]
    return b"".join(len(i).to_bytes(8, "little") + i for i in items)


def _first(means):
    return means[..., 0]


def _r2(means):
    """R^2 from the means of the squared residual, the target and its square."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - means[..., 0] / (means[..., 2] - means[..., 1] ** 2)


def _check_metric(metric, metrics):
    if metric not in metrics:
        raise ValueError(
            f"Outcomes are kept for {metrics}, not {metric!r}. Received: metric={metric!r}"
        )


def _b64(text, what):
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise ValueError(
            f"{what} text is not base64; the report file was altered. Write it again."
        ) from None
