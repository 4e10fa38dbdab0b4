"""What every reproduction shares: the offline Keras cache, the command line,
the results files and the paper's figures printed beside ours.

Import it first, before keras: Keras reads `KERAS_HOME` once, when it is
imported, and `use_shared_keras_cache` points it at the shared weight files. It
imports neither keras nor keras_probes, so that a script builds and parses its
command line (`--help`, usage errors, the output folder) before it imports them.

Where a run writes (`--out`) follows `examples/_outputs.py`: `results/` for the
committed configuration, `results/variants/<the options that differ>/` for any
other, `--quick` included.
"""

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"

# _offline.py and _outputs.py, shared with the examples (and _offline with the tests)
sys.path.insert(0, str(ROOT / "examples"))
import _offline  # noqa: E402  (imports neither keras nor keras_probes)
import _outputs  # noqa: E402  (neither)

_offline.use_shared_keras_cache()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # fewer TensorFlow C++ start-up logs
# Before NumPy is imported. L-BFGS makes many tiny BLAS calls; OpenBLAS's threads
# spin-wait for each other, and on a busy 2-core machine one fit then took 10-50 s
# instead of 0.3 s. TensorFlow's own kernels do not use OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__all__ = [
    "RESULTS",
    "ROOT",
    "Run",
    "comparison_json",
    "imagenet_parser",
    "parser",
    "rate_interval",
    "tested",
    "tested_together",
    "train",
    "with_interval",
]


def parser(
    doc: str, committed: Sequence[str] = ("",), neutral: Sequence[str] = ()
) -> _outputs.ScriptParser:
    """The options every reproduction takes: `--out`, `--quick`, `--seed`.

    Args:
        doc: the script's docstring: its first paragraph describes, the rest
            closes the help.
        committed: the options of the runs whose files are in `results/`, each
            a command line (`""`: the defaults); any other run writes to
            `results/variants/<the options that differ>/`. Defaults to `("",)`.
        neutral: the options that do not change the results (`"--cache"`).
            Defaults to `()`.

    Returns:
        The parser; its `parse_args` resolves `--out`.
    """
    first, _, rest = doc.partition("\n\n")
    result = _outputs.ScriptParser(
        RESULTS,
        committed,
        neutral,
        description=first,
        epilog=rest,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    result.add_argument(
        "--quick", action="store_true", help="a smoke run at a tiny scale (tests use it)"
    )
    result.add_argument("--seed", type=int, default=0, help="seed of everything random")
    return result


def penalty(text: str) -> float | str:
    """`--l2`: a number, or `auto`."""
    return text if text == "auto" else float(text)


def imagenet_parser(
    doc: str, name: str, model: str, committed: Sequence[str] = ("",)
) -> _outputs.ScriptParser:
    """`parser` plus the options of the ImageNet reproductions (run by `_imagenet.main`).

    Args:
        doc: the script's docstring.
        name: the script's name, also of its results files and default cache.
        model: the paper's network, a key of `_imagenet.MODELS`.
        committed: as in `parser`; `--cache` and `--data-dir` are neutral.
    """
    result = parser(doc, committed, neutral=("--cache", "--data-dir"))
    result.add_argument(
        "--model",
        choices=[model, "mobilenet"],
        default=model,
        help="the network (default: %(default)s; mobilenet: MobileNet alpha 0.75, whose "
        "weights are in the shared offline cache)",
    )
    result.add_argument(
        "--weights",
        choices=["imagenet", "none"],
        default="imagenet",
        help="pretrained ImageNet weights, or none (random weights, seeded) (default: imagenet)",
    )
    result.add_argument(
        "--data",
        default="imagenette",
        help="'imagenette' (TFDS if prepared, else the shared offline folder), a TFDS dataset "
        "name, or an image folder with train/ and val/ (one sub-folder per class in each) "
        "(default: %(default)s)",
    )
    result.add_argument("--data-dir", help="TFDS data directory (default: TFDS's own)")
    result.add_argument(
        "--l2",
        type=penalty,
        default="auto",
        help="L2 penalty of every probe, l2/2 ||kernel||^2 (scikit-learn's C = 1/(l2 n_train)), "
        "or 'auto': chosen per point by 5-fold cross-validation on train, never on val, the "
        "split reported (default: %(default)s)",
    )
    result.add_argument(
        "--cache",
        type=Path,
        help="feature cache folder; an interrupted run resumes there, a second run re-uses it "
        f"(default: {ROOT}/.cache/reproductions/{name}-<model>[-...])",
    )
    result.add_argument(
        "--batch-size", type=int, default=32, help="images per forward pass (default: 32)"
    )
    return result


def train(model, x, y, epochs, seed, validation=None, callbacks=(), batch_size=128, optimizer=None):
    """Trains a classifier of logits on the labels given, from `seed`, with `optimizer`
    (default Adam(1e-3)); returns the Keras history."""
    import keras

    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model.fit(
        x,
        y,
        validation_data=validation,
        epochs=epochs,
        batch_size=batch_size,
        callbacks=list(callbacks),
        verbose=0,
    )


def rate_interval(rate: float, n: int, level: float = 0.95) -> list[float]:
    """The Wilson interval of a rate measured on `n` independent examples, for rates
    kept without their examples' outcomes (a `ProbeHistory`, a Keras log): it depends on
    the count `round(rate * n)` and `n` alone (`kp.uncertainty.rate_interval`)."""
    import numpy as np

    from keras_probes import uncertainty

    values = np.zeros(n)
    values[: round(rate * n)] = 1
    return list(uncertainty.rate_interval(values, level=level))


def with_interval(value: float, bounds, digits: int = 3) -> str:
    """`value [low, high]`: a figure as the README's tables write it."""
    low, high = bounds
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def tested(comparison) -> str:
    """A `kp.uncertainty.Comparison` in words: difference [interval], p, the verdict."""
    adjusted = comparison.adjusted_pvalue is not None
    p = comparison.adjusted_pvalue if adjusted else comparison.pvalue
    verdict = "significant" if comparison.significant() else "not significant"
    return (
        f"{comparison.difference:+.3f} [{comparison.low:+.3f}, {comparison.high:+.3f}], "
        f"p={p:.2g}{' (Holm)' if adjusted else ''}, {verdict}"
    )


def tested_together(comparisons: dict, family: str = "") -> dict:
    """`{name: Comparison}` tested as one family (the comparisons of one question):
    each with Holm's adjusted p-value, which `significant()` then uses; returns them
    and prints one line each."""
    import dataclasses

    from keras_probes import uncertainty

    adjusted = uncertainty.holm([c.pvalue for c in comparisons.values()])
    result = {
        name: dataclasses.replace(c, adjusted_pvalue=float(p))
        for (name, c), p in zip(comparisons.items(), adjusted, strict=True)
    }
    width = max(map(len, result), default=0)
    print(f"\n{family or 'paired tests'}: Holm's adjustment over these {len(result)}")
    for name, c in result.items():
        print(f"  {name:{width}}  {tested(c)}  [{c.test}]")
    return result


def comparison_json(comparison) -> dict:
    """A `Comparison` as plain data, with its verdict."""
    import dataclasses

    return {**dataclasses.asdict(comparison), "significant": comparison.significant()}


class Run:
    """One reproduction's results: settings, our figures beside the paper's, files.

    Args:
        name: the script's name; files are `<out>/<name>.json`, `.png`, `.gif`.
        args: the parsed command line.

    Example:

    ```python
    run = Run("toy", args)
    run.compare("error at the input", paper="~0", ours=0.01)
    run.save(results={...}, figure=fig)
    ```
    """

    def __init__(self, name: str, args: argparse.Namespace):
        self.name, self.args = name, args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        print(f"{name}: results to {self.out}", flush=True)
        self.comparison: list[dict] = []
        self.notes: list[str] = []
        self._start = time.perf_counter()

    def path(self, suffix: str) -> Path:
        return self.out / f"{self.name}{suffix}"

    def note(self, text: str) -> None:
        """A line on how this run differs from the paper (data, scale); printed and saved."""
        print(f"note: {text}")
        self.notes.append(text)

    def compare(self, quantity: str, paper, ours) -> None:
        """One row of the paper-vs-ours table."""
        self.comparison.append({"quantity": quantity, "paper": paper, "ours": ours})

    def save(self, results: dict, figure=None, animations: dict | None = None) -> Path:
        """Writes `<name>.json` (atomically), `<name>.png` and any GIFs; prints the table.

        Args:
            results: the measurements, JSON-serialisable.
            figure: a Matplotlib figure, saved as `<name>.png`.
            animations: `{suffix: function(path)}` writing e.g. `_plain.gif`.

        Returns:
            The JSON path.
        """
        import keras
        import tensorflow as tf

        files = []
        if figure is not None:
            figure.savefig(self.path(".png"), dpi=110)
            files.append(self.path(".png").name)
        for suffix, write in (animations or {}).items():
            write(self.path(suffix))
            files.append(self.path(suffix).name)
        payload = {
            "name": self.name,
            "command": " ".join(["python", f"reproductions/{self.name}.py", *sys.argv[1:]]),
            "quick": bool(self.args.quick),
            "seed": self.args.seed,
            "seconds": round(time.perf_counter() - self._start, 1),
            "versions": {
                "python": platform.python_version(),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
            },
            "notes": self.notes,
            "paper_vs_ours": self.comparison,
            "results": results,
            "files": files,
        }
        path = self.path(".json")
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(payload, indent=1, default=_plain) + "\n")
        partial.replace(path)
        self._print_comparison()
        print(f"wrote {', '.join([path.name, *files])} to {self.out} in {payload['seconds']:.0f} s")
        return path

    def _print_comparison(self):
        if not self.comparison:
            return
        width = max(len(row["quantity"]) for row in self.comparison)
        print(f"\n{'':{width}}  {'paper':>14}  {'ours':>10}")
        for row in self.comparison:
            print(f"{row['quantity']:{width}}  {_cell(row['paper']):>14}  {_cell(row['ours']):>10}")
        print()


def _cell(value):
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _plain(value):
    """NumPy scalars and arrays as JSON numbers and lists; comparisons as `comparison_json`."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "significant"):  # a kp.uncertainty.Comparison
        return comparison_json(value)
    raise TypeError(f"Not JSON-serialisable: {type(value).__name__}")
