"""Per-token probes on a character-level transformer trained on CPython's own sources.

A small causal transformer (keras-hub `TokenAndPositionEmbedding` and
`TransformerDecoder` blocks) learns to predict the next character of Python
source: the standard library of the running Python (its `Lib/`, named in
`FILES` and printed, split by file into train, validation and test). Every
character is then labelled with the category Python's own `tokenize` gives the
token it belongs to:

    name, keyword, operator, number, string, comment, whitespace

(`NAME` tokens split by `keyword.iskeyword`, so soft keywords such as `match`
are names; `whitespace` is every character outside a token: spaces,
newlines, indentation and line continuations). A linear probe per character
(Alain & Bengio, arXiv 1610.01644; `reducers="tokens"`) reads that category
from the embedding and from every block, for four sets of features:

1. the transformer before training (its initial random weights);
2. after training, a few CPU minutes as a next-character language model;
3. a re-initialised copy (`kp.controls.reinitialized_probes`): the same
   architecture, fresh random weights;
4. Hewitt & Liang's (2019) control task on the trained and on the untrained
   features (`kp.controls.control_task_probes`): every character gets one
   fixed random category, so a probe can solve it only by memorising
   characters. Selectivity = accuracy on the real task minus accuracy on the
   control task, per point.

The character decides its category only in part: a letter belongs to a name,
a keyword, a string or a comment depending on what came before it (and, for a
keyword, after it). Two guesses that read no model frame the errors: always
the most frequent category, and each character's most frequent category.

Windows are `--length` characters; each file's last window is shorter and
padded (the `padding_mask` input), and padded positions carry no label (-1).

Every test figure comes with its 95% interval, and every difference the
README states with a paired test on the same test characters. Characters of
one window are not independent, so the windows are the unit: Wilson's
interval at the effective number of characters (the design effect between
windows), and the cluster-robust McNemar (Obuchowski) for two error rates
(`kp.uncertainty`); a difference of two selectivities, the paired bootstrap
over windows. Where a question tests several pairs at once (every point, say)
the p-values are Holm-adjusted over them.

Run it from the repository root:

```
python examples/code_tokens.py               # 5 to 9 minutes on 2 CPU cores
python examples/code_tokens.py --quick       # a tiny smoke run, about a minute
python examples/code_tokens.py --train-steps 1000 --out /tmp/code_tokens
```

It prints the probe test error per point and condition and writes
`code_tokens_table.txt`, `code_tokens_report.json` (a `kp.ProbeReport`: one
split per condition), `code_tokens.json` (every number, the settings, the
Python version, the files and the timings) and `code_tokens_errors.png` to
`--out`: by default `examples/out/`, and `examples/out/variants/quick/` for `--quick`
(other options: see `--help`).
"""

import dataclasses
import hashlib
import io
import json
import keyword
import os
import platform
import sys
import sysconfig
import tempfile
import time
import tokenize
from pathlib import Path

import _outputs

OUT = Path(__file__).resolve().parent / "out"


def arguments() -> _outputs.ScriptParser:
    """The command line, built before TensorFlow is imported."""
    parser = _outputs.ScriptParser(OUT, description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=128, help="window length (characters)")
    parser.add_argument("--dim", type=int, default=64, help="transformer width")
    parser.add_argument("--blocks", type=int, default=4, help="transformer blocks")
    parser.add_argument("--heads", type=int, default=4, help="attention heads")
    parser.add_argument("--train-steps", type=int, default=600, help="language-model steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument(
        "--probe-windows",
        type=int,
        default=500,
        help="train windows the probes learn from (val and test: all windows of their files)",
    )
    parser.add_argument("--l2", type=float, default=1e-3, help="L2 penalty of the probes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny run for smoke tests: a small model, few windows, one training step",
    )
    return parser


if __name__ == "__main__":
    arguments().parse_args()  # --help and usage errors before TensorFlow is imported (below)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # fewer TensorFlow C++ start-up logs

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy.special import logsumexp  # noqa: E402

import keras_probes as kp  # noqa: E402

#: The probes' classes, in label order.
CATEGORIES = ("name", "keyword", "operator", "number", "string", "comment", "whitespace")
WHITESPACE = CATEGORIES.index("whitespace")
_TOKEN_CATEGORY = {
    tokenize.OP: CATEGORIES.index("operator"),
    tokenize.NUMBER: CATEGORIES.index("number"),
    tokenize.STRING: CATEGORIES.index("string"),
    tokenize.COMMENT: CATEGORIES.index("comment"),
}

# The training files: 57 modules, about 2.2 million characters in Python 3.11.
_TRAIN_FILES = """
argparse.py ast.py base64.py bisect.py calendar.py cmd.py code.py colorsys.py
configparser.py contextlib.py copy.py dataclasses.py difflib.py dis.py enum.py
fnmatch.py functools.py getopt.py gettext.py glob.py gzip.py hmac.py inspect.py
ipaddress.py json/__init__.py json/decoder.py json/encoder.py linecache.py locale.py
logging/__init__.py netrc.py numbers.py operator.py optparse.py os.py
pickle.py pprint.py queue.py random.py secrets.py selectors.py shutil.py socket.py
statistics.py subprocess.py tarfile.py tempfile.py threading.py timeit.py tokenize.py
traceback.py types.py typing.py uuid.py warnings.py weakref.py zipfile.py
"""

#: Standard-library modules, relative to `sysconfig.get_paths()["stdlib"]`, split by file so
#: that no text of a test file is ever trained on. Chosen on CPython 3.11; all are in 3.8-3.13.
FILES = {
    "train": tuple(_TRAIN_FILES.split()),
    "val": ("csv.py", "string.py", "sched.py"),
    "test": ("fractions.py", "heapq.py", "shlex.py", "textwrap.py"),
}

#: Character ids: 0 is padding, 1 any character outside this alphabet (a few non-ASCII
#: letters in comments and strings), then tab, newline and printable ASCII.
ALPHABET = "\t\n" + "".join(map(chr, range(32, 127)))
VOCABULARY_SIZE = 2 + len(ALPHABET)
_CHAR_IDS = {c: i + 2 for i, c in enumerate(ALPHABET)}


def char_categories(text: str, name: str = "<text>") -> np.ndarray:
    """The `tokenize` category of every character of Python source, as `CATEGORIES` indices.

    Args:
        text: the source.
        name: its name, for error messages. Defaults to `"<text>"`.

    Returns:
        `(len(text),)` int64.
    """
    # tokenize reports (row, column) in characters; rows are split at "\n" only.
    line_starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    labels = np.full(len(text), WHITESPACE, dtype=np.int64)
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.ERRORTOKEN:
            raise ValueError(f"{name}: tokenize cannot read {token.string!r} at {token.start}.")
        if token.type == tokenize.NAME:
            category = CATEGORIES.index("keyword" if keyword.iskeyword(token.string) else "name")
        else:
            category = _TOKEN_CATEGORY.get(token.type)
        if category is None:  # NEWLINE, NL, INDENT, DEDENT, ENDMARKER: whitespace or empty
            continue
        start = line_starts[token.start[0] - 1] + token.start[1]
        end = line_starts[token.end[0] - 1] + token.end[1]
        labels[start:end] = category
    return labels


def encode(text: str) -> np.ndarray:
    """Character ids of `text`: `(len(text),)` int32, 1 for characters outside `ALPHABET`."""
    return np.fromiter((_CHAR_IDS.get(c, 1) for c in text), dtype=np.int32, count=len(text))


def windows(ids: np.ndarray, labels: np.ndarray, length: int):
    """Cuts one file into consecutive windows of `length` characters, the last one padded.

    Returns:
        `(token_ids, next_ids, labels)`, each `(num_windows, length)`:
        character ids (0 at padding), the id of the character that follows each
        one (0 after the file's last character: no loss), and the categories
        (-1 at padding: no loss, no metric).
    """
    count = -(-len(ids) // length)
    token_ids = np.zeros((count, length), np.int32)
    next_ids = np.zeros((count, length), np.int32)
    categories = np.full((count, length), -1, np.int64)
    token_ids.flat[: len(ids)] = ids
    next_ids.flat[: len(ids) - 1] = ids[1:]
    categories.flat[: len(ids)] = labels
    return token_ids, next_ids, categories


def load_sources(length: int, files: dict[str, tuple[str, ...]] = FILES):
    """Reads, labels and windows the standard-library files of the running Python.

    Args:
        length: window length in characters.
        files: `{split: relative paths}`. Defaults to `FILES`.

    Returns:
        `(data, manifest)`: `data` is `{split: (token_ids, next_ids, labels)}`
        (see `windows`); `manifest` is `{split: [{"file", "chars", "sha256"}]}`.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    data, manifest = {}, {}
    for split, names in files.items():
        parts, manifest[split] = [], []
        for name in names:
            path = root / name
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} is not in the standard library of Python "
                    f"{platform.python_version()}. Edit FILES to name files it has."
                )
            text = path.read_text(encoding="utf-8")
            parts.append(windows(encode(text), char_categories(text, name), length))
            digest = hashlib.sha256(text.encode()).hexdigest()
            manifest[split].append({"file": name, "chars": len(text), "sha256": digest})
        data[split] = tuple(np.concatenate(columns) for columns in zip(*parts, strict=True))
    return data, manifest


def baselines(data) -> dict[str, np.ndarray]:
    """The test mistakes of two guesses that read no model, learned on all training windows.

    Returns:
        `{label: mistakes}`, bool `(test characters,)` in the order of the
        probes' rows (window by window, padding left out): always the most
        frequent category, and each character's most frequent category (the
        best any rule that sees only the character itself can do). Their
        means are the guesses' test errors.
    """
    (train_ids, _, train_labels), (test_ids, _, test_labels) = data["train"], data["test"]
    kept, test_kept = train_labels >= 0, test_labels >= 0
    counts = np.zeros((VOCABULARY_SIZE, len(CATEGORIES)), np.int64)
    np.add.at(counts, (train_ids[kept], train_labels[kept]), 1)
    by_character = counts.argmax(axis=1)
    truth = test_labels[test_kept]
    return {
        "always the most frequent category": truth != counts.sum(axis=0).argmax(),
        "each character's most frequent category": truth != by_character[test_ids[test_kept]],
    }


def model_inputs(token_ids: np.ndarray) -> dict[str, np.ndarray]:
    """The model's inputs for a batch of windows: ids and the mask of real characters."""
    return {"token_ids": token_ids, "padding_mask": token_ids != 0}


def build_transformer(
    length: int, dim: int, blocks: int, heads: int, intermediate_dim: int
) -> keras.Model:
    """A causal character-level transformer with a next-character head.

    Block `i` is the layer `transformer_layer_{i}`, as in keras-hub backbones,
    so that `points="blocks"` finds the blocks. The blocks normalise first
    (pre-LN): their outputs are the residual stream, which trains quickly.

    Args:
        length: the longest window (the position embedding's length).
        dim: width of the embedding and of every block.
        blocks: number of `TransformerDecoder` blocks (self-attention only).
        heads: attention heads per block.
        intermediate_dim: width of each block's feed-forward layer.

    Returns:
        A Functional model `{"token_ids", "padding_mask"}` -> next-character
        logits `(batch, tokens, VOCABULARY_SIZE)`.
    """
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((None,), dtype="bool", name="padding_mask")
    x = keras_hub.layers.TokenAndPositionEmbedding(
        VOCABULARY_SIZE,
        length,
        dim,
        embeddings_initializer="glorot_uniform",
        name="token_and_position_embedding",
    )(token_ids)
    for i in range(blocks):
        x = keras_hub.layers.TransformerDecoder(
            intermediate_dim, heads, normalize_first=True, name=f"transformer_layer_{i}"
        )(x, decoder_padding_mask=padding_mask)
    x = keras.layers.LayerNormalization(name="final_norm")(x)
    logits = keras.layers.Dense(VOCABULARY_SIZE, name="next_char_logits")(x)
    return keras.Model(
        {"token_ids": token_ids, "padding_mask": padding_mask}, logits, name="char_transformer"
    )


def train_language_model(model, data, steps: int, batch_size: int, learning_rate: float, seed):
    """Trains `model` to predict the next character, in `steps` steps of Adam.

    Returns:
        `{"seconds", "steps", "train_loss", "val_loss", "val_bits_per_char",
        "val_accuracy"}`: the mean loss of the last (up to) 100 steps, and the
        loss and next-character accuracy on all the validation windows.
    """
    token_ids, next_ids, _ = data["train"]
    log_every = min(100, steps)
    warmup = max(1, steps // 10)
    # A linear warm-up over the first tenth, then a cosine decay to zero.
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate / warmup, decay_steps=steps, warmup_target=learning_rate, warmup_steps=warmup
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        # Id 0 is padding and the end of a file: no next character to predict.
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
    )
    dataset = (
        tf.data.Dataset.from_tensor_slices((model_inputs(token_ids), next_ids))
        .shuffle(len(token_ids), seed=seed)
        .repeat()
        .batch(batch_size)
    )
    start = time.perf_counter()
    history = model.fit(
        dataset, epochs=-(-steps // log_every), steps_per_epoch=log_every, shuffle=False, verbose=2
    )
    seconds = time.perf_counter() - start
    # Scored here, at exactly the positions that have a next character (Keras' accuracy
    # would count the padded ones too).
    val_ids, val_next, _ = data["val"]
    logits = model.predict(model_inputs(val_ids), batch_size=64, verbose=0).astype("float64")
    kept = val_next != 0
    log_probs = logits - logsumexp(logits, axis=-1, keepdims=True)
    val_loss = -np.take_along_axis(log_probs, val_next[..., None], axis=-1)[..., 0][kept].mean()
    return {
        "seconds": seconds,
        "steps": steps,
        "train_loss": history.history["loss"][-1],
        "val_loss": float(val_loss),
        "val_bits_per_char": float(val_loss / np.log(2)),
        "val_accuracy": float(np.mean(logits.argmax(axis=-1)[kept] == val_next[kept])),
    }


def probe_points(model: keras.Model) -> list[str]:
    """The embedding and every block, input side first."""
    return kp.points.resolve(model, ["token_and_position_embedding", "blocks"])


def probe(model, points, probe_data, directory: Path, l2: float, seed: int, label: str):
    """Per-character probes at `points` of `model`, and their control task.

    Args:
        model: the transformer as it is now.
        points: probe points.
        probe_data: `{split: (inputs, labels)}`, labels `(n, length)`, -1 at padding.
        directory: a fresh folder for the feature cache.
        l2: L2 penalty of the probes (`kp.fit_probes`).
        seed: seed of the control task's labels.
        label: the condition's name, for progress lines.

    Returns:
        `(probed, report, control, windows)`: the probed model, the probes'
        report, the control task's report (splits train, val, test), and the
        window of each test row (`FeatureCache.sequences`), the unit the
        intervals resample.
    """
    start = time.perf_counter()
    probed = kp.ProbedModel(model, points=points, num_classes=len(CATEGORIES), reducers="tokens")
    for split, split_data in probe_data.items():
        cache = kp.FeatureCache.write(probed, split_data, directory, split=split, verbose=0)
    labels = probe_data["test"][1]
    if not np.array_equal(cache.arrays("test", points=[])[1], labels[labels >= 0]):
        raise AssertionError("The cache's test rows are not the test characters in order.")
    report = kp.fit_probes(probed, cache, solver="lbfgs", l2=l2, verbose=0)
    control = kp.controls.control_task_probes(probed, cache, l2=l2, seed=seed, verbose=0)
    print(f"  {label}: {len(points)} points probed in {time.perf_counter() - start:.0f} s")
    return probed, report, control, cache.sequences("test")


#: Legend labels of the conditions (the report's splits).
CONDITIONS = {
    "untrained": "untrained (initial weights)",
    "trained": "trained",
    "reinit": "re-initialised copy",
    "control/untrained": "control task, untrained features",
    "control/trained": "control task, trained features",
}
COLORS = {"untrained": "C0", "trained": "C1", "reinit": "C2"}


def format_table(report: kp.ProbeReport, tests: dict) -> str:
    """Two text tables per point: the probe test error of every condition, then the control
    task's error and the selectivities, each with its 95% interval."""
    width = max(len("point"), *map(len, report.points))

    def block(title, columns):
        cells = {
            name: [_cell(values[p], bounds[p]) for p in report.points]
            for name, (values, bounds) in columns.items()
        }
        sizes = {name: max(len(name), *map(len, cells[name])) for name in columns}
        header = f"{'point':<{width}}  " + "  ".join(f"{n:>{sizes[n]}}" for n in columns)
        lines = [title, header, "-" * len(header)]
        for i, point in enumerate(report.points):
            row = "  ".join(f"{cells[n][i]:>{sizes[n]}}" for n in columns)
            lines.append(f"{point:<{width}}  {row}")
        return lines

    def errors(split):
        return report.errors(split), {p: report.interval(split, p) for p in report.points}

    def selectivity(split):
        comparisons = tests[f"selectivity, {split}"]
        return (
            report.values(split, "selectivity"),
            {p: (c.low, c.high) for p, c in comparisons.items()},
        )

    first = block(
        "probe test error [95% interval, windows resampled]",
        {split: errors(split) for split in ("untrained", "trained", "reinit")},
    )
    second = block(
        "control task error, and selectivity = accuracy - control task accuracy [95% interval]",
        {
            **{f"control {s}": errors(f"control/{s}") for s in ("untrained", "trained")},
            **{f"selectivity {s}": selectivity(s) for s in ("untrained", "trained")},
        },
    )
    return "\n".join(first + [""] + second)


def _cell(value, bounds):
    return f"{value:.4f} [{bounds[0]:.4f}, {bounds[1]:.4f}]"


def paired_tests(report: kp.ProbeReport, windows: np.ndarray, guesses: dict) -> dict:
    """Every difference the README states, paired on the same test characters.

    Args:
        report: one split per condition of `CONDITIONS`, with its outcomes.
        windows: the window of each test row (the resampling unit).
        guesses: `{label: mistakes}` of the guesses that read no model (`baselines`).

    Returns:
        `{question: {name: kp.uncertainty.Comparison}}`; within a question the
        p-values are Holm-adjusted over its comparisons (`adjusted_pvalue`).
    """
    points = report.points
    first, last = points[0], points[-1]

    def wrong(split, point):
        return report.outcomes[split][point].values("error")

    def rates(a, b, a_name, b_name):
        result = kp.uncertainty.paired_rates(a, b, units=windows)
        return dataclasses.replace(result, a=a_name, b=b_name, split="test", metric="error")

    def holm(comparisons):
        adjusted = kp.uncertainty.holm([c.pvalue for c in comparisons.values()])
        return {
            name: dataclasses.replace(c, adjusted_pvalue=float(p))
            for (name, c), p in zip(comparisons.items(), adjusted, strict=True)
        }

    rule_label = "each character's most frequent category"
    rule = guesses[rule_label].astype(float)
    tests = {
        # After training the error is lower at every point (trained - untrained).
        "trained minus untrained error": holm(
            {p: rates(wrong("trained", p), wrong("untrained", p), p, p) for p in points}
        ),
        # Each point of the random networks against the best character-only rule.
        "untrained and re-initialised error minus the character rule": holm(
            {
                f"{split} {p}": rates(wrong(split, p), rule, p, rule_label)
                for split in ("untrained", "reinit")
                for p in points
            }
        ),
        # The trained error, point by point along depth.
        "trained error, each point minus the one before": holm(
            {
                f"{b} - {a}": rates(wrong("trained", b), wrong("trained", a), b, a)
                for a, b in zip(points, points[1:], strict=False)
            }
        ),
    }
    for split in ("untrained", "reinit"):
        # The random networks' error at the last point minus at the first.
        tests[f"{split} error, last minus first point"] = {
            f"{last} - {first}": rates(wrong(split, last), wrong(split, first), last, first)
        }
    for split in ("untrained", "trained"):
        control = f"control/{split}"
        # Selectivity = control error - error: its interval and test.
        tests[f"selectivity, {split}"] = holm(
            {p: rates(wrong(control, p), wrong(split, p), control, split) for p in points}
        )
        # The control task error at the last point minus at the first.
        tests[f"control task error, {split}, last minus first point"] = {
            f"{last} - {first}": rates(wrong(control, last), wrong(control, first), last, first)
        }
        # Selectivity at the last point minus at the first: a difference of two
        # differences, per character in {-2, ..., 2}: the paired bootstrap over windows.
        gains = {p: wrong(control, p) - wrong(split, p) for p in (first, last)}
        change = kp.uncertainty.paired_means(gains[last], gains[first], units=windows)
        tests[f"selectivity, {split}, last minus first point"] = {
            f"{last} - {first}": dataclasses.replace(
                change, a=last, b=first, split="test", metric="selectivity"
            )
        }
    return tests


def tested(comparison: kp.uncertainty.Comparison) -> str:
    """A comparison in words: difference [interval], p (Holm), the test, the verdict."""
    adjusted = comparison.adjusted_pvalue is not None
    p = comparison.adjusted_pvalue if adjusted else comparison.pvalue
    verdict = "significant" if comparison.significant() else "not significant"
    return (
        f"{comparison.difference:+.4f} [{comparison.low:+.4f}, {comparison.high:+.4f}], "
        f"{f'p={p:.2g}' if p > 0 else 'p<1e-300'}{' (Holm)' if adjusted else ''}, "
        f"{comparison.test}: {verdict}"
    )


def comparison_json(comparison: kp.uncertainty.Comparison) -> dict:
    """A comparison as plain data, with its verdict."""
    return {**dataclasses.asdict(comparison), "significant": comparison.significant()}


def plot(report: kp.ProbeReport, references: dict[str, float], tests: dict) -> Figure:
    """Probe test error per point for each condition, and selectivity, each with its
    95% interval as a band.

    Args:
        report: one split per condition of `CONDITIONS`, all on the test files,
            with their outcomes.
        references: `{label: test error}` of guesses that read no model (`baselines`).
        tests: `paired_tests`' comparisons (the selectivities' intervals).

    Returns:
        The figure; nothing is shown.
    """
    points, depths = report.points, range(len(report.points))
    figure = Figure(figsize=(12, 4.8), layout="constrained")
    errors, selectivity = figure.subplots(1, 2)
    for split, label in CONDITIONS.items():
        control = split.startswith("control/")
        color = COLORS[split.removeprefix("control/")]
        errors.plot(
            depths,
            list(report.errors(split).values()),
            color=color,
            marker="s" if control else "o",
            linestyle="--" if control else "-",
            label=label,
        )
        bounds = [report.interval(split, p) for p in points]
        errors.fill_between(depths, *zip(*bounds, strict=True), color=color, alpha=0.2, lw=0)
    for (label, value), style in zip(references.items(), (":", "-."), strict=True):
        errors.axhline(value, color="grey", linestyle=style, label=label)
    errors.set_ylim(0, 1.0)
    errors.set_ylabel(f"test error ({len(CATEGORIES)} categories)")
    errors.set_title("Per-character probe error (bands: 95% intervals, windows resampled)")
    for split in ("untrained", "trained"):
        values = list(report.values(split, "selectivity").values())
        selectivity.plot(depths, values, color=COLORS[split], marker="o", label=CONDITIONS[split])
        bounds = [(c.low, c.high) for c in tests[f"selectivity, {split}"].values()]
        selectivity.fill_between(
            depths, *zip(*bounds, strict=True), color=COLORS[split], alpha=0.2, lw=0
        )
    selectivity.axhline(0, color="grey", linewidth=0.8)
    selectivity.set_ylabel("selectivity: accuracy - control task accuracy")
    selectivity.set_title("Selectivity against the per-character control task")
    for ax in (errors, selectivity):
        ax.set_xticks(depths, points, rotation=30, ha="right", fontsize=8)
        ax.set_xlabel("probe point (input side first)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(
        f"tokenize categories of CPython {platform.python_version()}'s standard library, "
        f"read by linear probes from {report.model}"
    )
    return figure


def _figures(report: kp.ProbeReport) -> kp.ProbeReport:
    """The report without its examples' outcomes."""
    return dataclasses.replace(report, outcomes={}, examples={})


def main(argv=None):
    args = arguments().parse_args(argv)
    files = FILES
    if args.quick:
        args.length, args.dim, args.blocks, args.heads = 32, 16, 2, 2
        args.train_steps, args.batch_size, args.probe_windows = 1, 8, 24
        files = {"train": FILES["train"][:3], "val": FILES["val"][-1:], "test": ("heapq.py",)}
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    timings = {}

    print(f"Python {sys.version.split()[0]}: {sysconfig.get_paths()['stdlib']}")
    data, manifest = load_sources(args.length, files)
    for split, entries in manifest.items():
        names = ", ".join(entry["file"] for entry in entries)
        chars = sum(entry["chars"] for entry in entries)
        print(f"  {split}: {chars} characters, {len(data[split][0])} windows: {names}")
    timings["data"] = time.perf_counter() - start

    # The probes learn from a seeded sample of training windows, and are scored on every
    # validation and test window (each file's last, padded window included).
    sample = np.sort(rng.choice(len(data["train"][0]), args.probe_windows, replace=False))
    probe_data = {
        "train": (model_inputs(data["train"][0][sample]), data["train"][2][sample]),
        **{s: (model_inputs(data[s][0]), data[s][2]) for s in ("val", "test")},
    }
    frequencies = {
        split: np.bincount(labels[labels >= 0], minlength=len(CATEGORIES)) / (labels >= 0).sum()
        for split, (_, labels) in probe_data.items()
    }
    guesses = baselines(data)
    references = {label: float(np.mean(wrong)) for label, wrong in guesses.items()}
    shares = zip(CATEGORIES, frequencies["test"], strict=True)
    print("Category frequencies on the test split: " + ", ".join(f"{c} {f:.3f}" for c, f in shares))

    model = build_transformer(args.length, args.dim, args.blocks, args.heads, 4 * args.dim)
    points = probe_points(model)
    print(f"{model.name}: {model.count_params()} parameters; probe points {points}")

    with tempfile.TemporaryDirectory(prefix="code_tokens_") as temporary:
        caches = Path(temporary)
        print("Probing the untrained transformer (its initial weights)...")
        tick = time.perf_counter()
        _, untrained, untrained_control, windows = probe(
            model, points, probe_data, caches / "untrained", args.l2, args.seed, "untrained"
        )
        timings["probe_untrained"] = time.perf_counter() - tick

        print(f"Training it as a next-character language model for {args.train_steps} steps...")
        language_model = train_language_model(
            model, data, args.train_steps, args.batch_size, args.learning_rate, args.seed
        )
        timings["train"] = language_model["seconds"]
        print(
            f"  {language_model['seconds']:.0f} s; last train loss "
            f"{language_model['train_loss']:.3f}, validation loss "
            f"{language_model['val_loss']:.3f} ({language_model['val_bits_per_char']:.2f} "
            f"bits/char), next-character accuracy {language_model['val_accuracy']:.3f}"
        )

        print("Probing the trained transformer...")
        tick = time.perf_counter()
        probed, trained, trained_control, _ = probe(
            model, points, probe_data, caches / "trained", args.l2, args.seed, "trained"
        )
        timings["probe_trained"] = time.perf_counter() - tick

        print("Probing a re-initialised copy (same architecture, fresh random weights)...")
        tick = time.perf_counter()
        reinitialized = kp.controls.reinitialized_probes(
            probed,
            probe_data,
            l2=args.l2,
            seed=args.seed + 1,
            directory=caches / "reinitialized",
            verbose=0,
        )
        timings["probe_reinitialized"] = time.perf_counter() - tick
        print(
            f"  re-initialised: {len(points)} points probed in {time.perf_counter() - tick:.0f} s"
        )

    # One split per condition, each the test files' characters, with each character's
    # outcome and its window (the cache's sequences): the unit the intervals resample.
    reports = {
        "untrained": untrained.with_selectivity(untrained_control, "test"),
        "trained": trained.with_selectivity(trained_control, "test"),
        "reinit": reinitialized,
        "control/untrained": untrained_control,
        "control/trained": trained_control,
    }
    report = kp.ProbeReport(
        points,
        {name: condition.results["test"] for name, condition in reports.items()},
        len(CATEGORIES),
        model.name,
        outcomes={name: condition.outcomes["test"] for name, condition in reports.items()},
        examples={name: condition.examples["test"] for name, condition in reports.items()},
    )
    tests = paired_tests(report, windows, guesses)
    table = format_table(report, tests)
    num_test = int((probe_data["test"][1] >= 0).sum())
    print(
        f"\nProbe error per point on the test split ({num_test} characters in "
        f"{len(np.unique(windows))} windows):\n"
    )
    print(table)
    reference_intervals = {
        label: kp.uncertainty.rate_interval(wrong.astype(float), units=windows)
        for label, wrong in guesses.items()
    }
    guessed = "\n".join(
        f"Guessing {label}: test error {_cell(references[label], reference_intervals[label])}"
        for label in guesses
    )
    print(guessed)
    monotonicity = report.monotonicity("trained", level=0.95)
    lines = [
        "monotonicity of the trained test error with depth (-Kendall tau): "
        f"{monotonicity[0]:.3f} [{monotonicity[1]:.3f}, {monotonicity[2]:.3f}]",
        "",
        "Paired tests on the same test characters (windows resampled; Holm within a question):",
    ]
    for question, comparisons in tests.items():
        lines.append(f"{question}:")
        lines += [f"  {name}: {tested(c)}" for name, c in comparisons.items()]
    print("\n".join(lines))

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "code_tokens_table.txt").write_text(
        f"{table}\n{guessed}\n" + "\n".join(lines) + "\n"
    )
    report.to_json(args.out / "code_tokens_report.json")
    figure = plot(report, references, tests)
    figure.savefig(args.out / "code_tokens_errors.png", dpi=120)
    timings["total"] = time.perf_counter() - start
    record = {
        "python": sys.version,
        "stdlib": sysconfig.get_paths()["stdlib"],
        "platform": platform.platform(),
        "versions": {
            "keras": keras.__version__,
            "keras_hub": keras_hub.__version__,
            "tensorflow": tf.__version__,
            "keras_probes": kp.__version__,
        },
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "categories": list(CATEGORIES),
        "files": manifest,
        "windows": {split: len(x["token_ids"]) for split, (x, _) in probe_data.items()},
        "characters": {split: int((y >= 0).sum()) for split, (_, y) in probe_data.items()},
        "category_frequencies": {s: f.tolist() for s, f in frequencies.items()},
        "reference_test_errors": references,
        "reference_test_error_intervals": reference_intervals,
        "level": 0.95,
        "test_error_intervals": {
            split: {p: list(report.interval(split, p)) for p in points} for split in report.splits
        },
        "monotonicity_trained": list(monotonicity),
        "paired_tests": {
            question: {name: comparison_json(c) for name, c in comparisons.items()}
            for question, comparisons in tests.items()
        },
        "parameters": model.count_params(),
        "language_model": language_model,
        "points": points,
        # The figures alone: each character's outcomes (megabytes) are in
        # code_tokens_report.json.
        "report": _figures(report).to_dict(),
        "reports": {
            "trained": _figures(trained).to_dict(),
            "untrained": _figures(untrained).to_dict(),
            "reinit": _figures(reinitialized).to_dict(),
            "control/trained": _figures(trained_control).to_dict(),
            "control/untrained": _figures(untrained_control).to_dict(),
        },
        "seconds": timings,
    }
    (args.out / "code_tokens.json").write_text(json.dumps(record, indent=1) + "\n")
    print(
        f"\nWrote code_tokens_{{table.txt,report.json,errors.png}} and code_tokens.json "
        f"to {args.out}"
    )
    print(f"Total time: {timings['total']:.0f} s")


if __name__ == "__main__":
    main()
