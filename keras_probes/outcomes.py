"""Each held-out example's outcome, kept so a report's figures carry their uncertainty.

A probe's error on a split is the mean of one outcome per example: was it
right. Kept per example (`Outcomes`), the figure gets an interval and two
figures a paired test on the same examples (`kp.uncertainty`), from the
report alone. `Examples` says which examples a split holds: a fingerprint of
their inputs and labels (reports of other examples are never paired) and,
for per-token probes, the sequence of each row (tokens of one sequence are
not independent: they are resampled together).

Both are stored compactly in a report's JSON and CSV, as base64 text:
`Outcomes` takes 2 bits (correct, top-5 hit) and 4 bytes (the loss, float32)
per example, about 5.7 characters of base64; `Examples` keeps the sequences
as their lengths (zlib-compressed), a few bytes per sequence.
"""

import base64
import dataclasses
import hashlib
import zlib

import numpy as np

__all__ = ["Examples", "Outcomes", "fingerprint"]

# The metric each outcome is the per-example form of: the metric is its mean.
_METRIC_OF = {"error": "correct", "top5_error": "top5", "loss": "loss"}


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

    def values(self, metric: str) -> np.ndarray:
        """Each example's share of `metric`: `"error"`, `"top5_error"` (0 or 1) or `"loss"`;
        the metric is their mean. float64 `(n,)`."""
        if metric not in _METRIC_OF:
            raise ValueError(
                f"Outcomes are kept for {sorted(_METRIC_OF)}, not {metric!r}. "
                f"Received: metric={metric!r}"
            )
        value = getattr(self, _METRIC_OF[metric])
        return (~value if value.dtype == bool else value).astype(np.float64)

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


def fingerprint(*arrays) -> str:
    """A hex digest (sha256, 16 characters) of arrays' shapes, dtypes and bytes, in order."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def _b64(text, what):
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise ValueError(
            f"{what} text is not base64; the report file was altered. Write it again."
        ) from None
