"""Per-token probes of a token-level transformer trained on CPython's own sources.

A small causal transformer (keras-hub `TokenAndPositionEmbedding` and
`TransformerDecoder` blocks) learns to predict the next token of Python source:
the standard library of the running Python (its `Lib/`, named in `FILES` and
printed, split by file into train, validation and test). Tokens are those of
Python's own `tokenize` (names, keywords, operators, numbers, strings,
comments, newlines, indents), and the vocabulary is the `--vocabulary` most
frequent token strings of the training files, plus one out-of-vocabulary id
per kind of token (a rare name, a rare string, ...).

Every name (a `NAME` token that is not a keyword) is labelled with its
syntactic role, read from Python's `ast`:

    definition   the name a `def` or `class` statement defines
    parameter    a parameter of a function or lambda (`ast.arg`)
    keyword      the keyword of a keyword argument in a call (`f(key=...)`)
    import       a name in an `import` or `from ... import` statement
    call         the function a call calls (`f(...)`, or `g` in `x.g(...)`)
    attribute    any other attribute (`y` in `x.y`)
    store        a variable assigned to (`x = ...`, `for x in ...`, ...)
    load         a variable read

(first match in that order; names none of them covers, such as those of
`global` statements or `except ... as e`, are left out). Every other token is
not an example: it has the label -1, and the `padding_mask` input marks the
names, so that a per-token probe (`reducers="tokens"`) has one row per name.
The transformer masks its own padding from the token ids: `padding_mask`
changes no feature.

The type of a name does not decide its role: `self` is a parameter in a
`def` and read everywhere else, `x` is stored, read, a parameter or a
keyword. A linear probe per name (Alain & Bengio, arXiv 1610.01644) reads the
role from the embedding and from every block, for four sets of features:

1. the transformer before training (its initial random weights);
2. after training, a few CPU minutes as a next-token language model;
3. a re-initialised copy (`kp.controls.reinitialized_probes`): the same
   architecture, fresh random weights;
4. Hewitt & Liang's (2019) control task on the trained and on the untrained
   features (`kp.controls.control_task_probes`): every token type gets one
   fixed random role, so a probe can solve it only by memorising types.
   Selectivity = accuracy on the real task minus accuracy on the control
   task, per point.

Then Hewitt & Liang's capacity question: the real and the control probes of
the trained transformer refitted along a path of L2 penalties (the path
`kp.solvers.LBFGSProbeCV` walks), selectivity at each; and, where
`kp.controls.description_length` exists, Voita & Titov's (2020) online code:
the codelength and compression of the real and of the control task per point.

The model is causal: the features at a name see only the tokens before it and
the name itself, while the role often shows in the token after it (`(` for a
call, `=` for a store or a keyword). What a probe reads there is what the
language model has learned to expect. Three guesses that read no model frame
the errors: always the most frequent role, each name's most frequent role (the
best any rule that sees only the type can do), and each (previous token, name)
pair's most frequent role (one token of context).

Every test figure comes with its 95% interval, and every difference the
README states with a paired test on the same test names. Names of one window
are not independent, so the windows are the unit: Wilson's interval at the
effective number of names (the design effect between windows), and the
cluster-robust McNemar (Obuchowski) for two error rates (`kp.uncertainty`); a
difference of two selectivities, the paired bootstrap over windows. Where a
question tests several pairs at once (every point, say) the p-values are
Holm-adjusted over them.

Run it from the repository root:

```
python examples/code_tokens.py               # 26 minutes on 2 busy CPU cores (README)
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

import ast
import collections
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

#: The L2 penalties of the capacity path (`--path`): strongest first, as
#: `kp.solvers.LBFGSProbeCV` walks them.
PATH = (10.0, 1.0, 0.1, 1e-2, 1e-3, 1e-4, 1e-5)


def arguments() -> _outputs.ScriptParser:
    """The command line, built before TensorFlow is imported."""
    parser = _outputs.ScriptParser(OUT, description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=128, help="window length (tokens)")
    parser.add_argument(
        "--vocabulary", type=int, default=4000, help="token strings kept in the vocabulary"
    )
    parser.add_argument("--dim", type=int, default=64, help="transformer width")
    parser.add_argument("--blocks", type=int, default=4, help="transformer blocks")
    parser.add_argument("--heads", type=int, default=4, help="attention heads")
    parser.add_argument("--train-steps", type=int, default=600, help="language-model steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument(
        "--probe-windows",
        type=int,
        default=1000,
        help="train windows the probes learn from (val and test: all windows of their files)",
    )
    parser.add_argument("--l2", type=float, default=1e-3, help="L2 penalty of the probes")
    parser.add_argument(
        "--path",
        type=float,
        nargs="+",
        default=list(PATH),
        help="the L2 penalties of the capacity path (trained transformer, every point)",
    )
    parser.add_argument(
        "--orders", type=int, default=3, help="orders of the train rows the online code is run on"
    )
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

#: The probes' classes, in label order: the syntactic role of a name.
ROLES = ("definition", "parameter", "keyword", "import", "call", "attribute", "store", "load")
_ROLE = {role: i for i, role in enumerate(ROLES)}

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
#: that no text of a test file is ever trained on. Chosen on CPython 3.11; all are in 3.9-3.13
#: (the roles need the positions `ast` gives keyword arguments since 3.9).
FILES = {
    "train": tuple(_TRAIN_FILES.split()),
    "val": ("csv.py", "string.py", "sched.py", "bdb.py", "filecmp.py"),
    "test": (
        *("fractions.py", "heapq.py", "shlex.py", "textwrap.py", "ftplib.py"),
        *("pstats.py", "trace.py", "webbrowser.py", "smtplib.py", "plistlib.py"),
    ),
}

#: Token ids: 0 is padding, then one out-of-vocabulary id per kind of token, then the
#: vocabulary (the most frequent token strings of the training files).
KINDS = ("name", "number", "string", "comment", "operator", "other")
SPECIAL = ("<pad>", *(f"<rare {kind}>" for kind in KINDS))
#: What stands for the tokens whose text says nothing (indentation, line ends).
_LAYOUT = {
    tokenize.NEWLINE: "<newline>",
    tokenize.NL: "<nl>",
    tokenize.INDENT: "<indent>",
    tokenize.DEDENT: "<dedent>",
}


def _kind(token: tokenize.TokenInfo) -> str:
    kinds = {
        tokenize.NAME: "name",
        tokenize.NUMBER: "number",
        tokenize.STRING: "string",
        tokenize.COMMENT: "comment",
        tokenize.OP: "operator",
    }
    return kinds.get(token.type, "other")


def name_roles(text: str, name: str = "<text>") -> tuple[list[str], list[str], np.ndarray]:
    """The tokens of Python source, and the syntactic role of every name among them.

    Args:
        text: the source.
        name: its name, for error messages. Defaults to `"<text>"`.

    Returns:
        `(strings, kinds, roles)`: each token's text (`<newline>`, `<indent>`,
        ... for layout), its kind (`KINDS`) and its role (`ROLES` index), -1 for
        every token that is not a name, and for the few names no role covers.
    """
    tree = ast.parse(text, filename=name)
    lines = text.splitlines(keepends=True)

    # ast gives columns in UTF-8 bytes, tokenize in characters.
    def position(line, byte_column):
        return line, len(lines[line - 1].encode("utf-8")[:byte_column].decode("utf-8"))

    roles, imports, definitions = {}, [], []

    def put(line, byte_column, role):  # the first role given to a position wins
        roles.setdefault(position(line, byte_column), _ROLE[role])

    def attribute_start(node):  # `x.attr` ends with `attr`
        return node.end_lineno, node.end_col_offset - len(node.attr.encode("utf-8"))

    nodes = list(ast.walk(tree))
    for node in nodes:  # calls first: a called name or attribute is a call
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            put(node.func.lineno, node.func.col_offset, "call")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            put(*attribute_start(node.func), "call")
    for node in nodes:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            definitions.append((position(node.lineno, node.col_offset), node.name))
        elif isinstance(node, ast.arg):
            put(node.lineno, node.col_offset, "parameter")
        elif isinstance(node, ast.keyword) and node.arg is not None:
            put(node.lineno, node.col_offset, "keyword")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            end = position(node.end_lineno, node.end_col_offset)
            imports.append((position(node.lineno, node.col_offset), end))
        elif isinstance(node, ast.Attribute):
            put(*attribute_start(node), "attribute")
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            put(node.lineno, node.col_offset, "store")
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            put(node.lineno, node.col_offset, "load")

    tokens = [
        token
        for token in tokenize.generate_tokens(io.StringIO(text).readline)
        if token.type != tokenize.ENDMARKER
    ]
    for token in tokens:
        if token.type == tokenize.ERRORTOKEN:
            raise ValueError(f"{name}: tokenize cannot read {token.string!r} at {token.start}.")
    labels = np.full(len(tokens), -1, np.int64)
    is_name = [t.type == tokenize.NAME and not keyword.iskeyword(t.string) for t in tokens]
    index = {token.start: i for i, token in enumerate(tokens)}
    for start, defined in definitions:  # the first such name after `def` or `class`
        i = index[start]
        while not (is_name[i] and tokens[i].string == defined):
            i += 1
        labels[i] = _ROLE["definition"]
    imports.sort()
    for i, token in enumerate(tokens):
        if not is_name[i] or labels[i] >= 0:
            continue
        if token.start in roles:
            labels[i] = roles[token.start]
        elif any(first <= token.start and token.end <= last for first, last in imports):
            labels[i] = _ROLE["import"]
    strings = [_LAYOUT.get(token.type, token.string) for token in tokens]
    return strings, [_kind(token) for token in tokens], labels


class Vocabulary:
    """Token strings to ids: the `size` most frequent of the training files, then one
    out-of-vocabulary id per kind (`SPECIAL`); 0 is padding.

    Args:
        counts: `{(string, kind): count}` over the training files.
        size: how many token strings to keep.
    """

    def __init__(self, counts: collections.Counter, size: int):
        kept = [key for key, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]]
        self.strings = [*SPECIAL, *(string for string, _ in kept)]
        self.ids = {key: len(SPECIAL) + i for i, key in enumerate(kept)}
        self.coverage = sum(counts[key] for key in kept) / sum(counts.values())

    def __len__(self):
        return len(self.strings)

    def encode(self, strings, kinds) -> np.ndarray:
        """`(len(strings),)` int32 ids; a rare token gets its kind's `<rare ...>` id."""
        rare = {kind: SPECIAL.index(f"<rare {kind}>") for kind in KINDS}
        return np.array(
            [self.ids.get((s, k), rare[k]) for s, k in zip(strings, kinds, strict=True)], np.int32
        )


def windows(ids: np.ndarray, labels: np.ndarray, length: int):
    """Cuts one file into consecutive windows of `length` tokens, the last one padded.

    Returns:
        `(token_ids, next_ids, labels, previous_ids)`, each `(num_windows, length)`:
        token ids (0 at padding), the id of the token that follows each one (0
        after the file's last token: no loss), the roles (-1 at padding and at
        every token that is not a labelled name), and the id of the token
        before each one in the file (0 before the first), for a guess.
    """
    count = -(-len(ids) // length)
    token_ids = np.zeros((count, length), np.int32)
    next_ids = np.zeros((count, length), np.int32)
    previous_ids = np.zeros((count, length), np.int32)
    roles = np.full((count, length), -1, np.int64)
    token_ids.flat[: len(ids)] = ids
    next_ids.flat[: len(ids) - 1] = ids[1:]
    previous_ids.flat[1 : len(ids)] = ids[:-1]
    roles.flat[: len(ids)] = labels
    return token_ids, next_ids, roles, previous_ids


def load_sources(length: int, vocabulary_size: int, files: dict[str, tuple[str, ...]] = FILES):
    """Reads, tokenizes, labels and windows the standard-library files of the running Python.

    Args:
        length: window length in tokens.
        vocabulary_size: how many token strings the vocabulary keeps.
        files: `{split: relative paths}`, with a `"train"` split. Defaults to `FILES`.

    Returns:
        `(data, vocabulary, manifest)`: `data` is `{split: (token_ids, next_ids,
        labels, previous_ids)}` (see `windows`); `vocabulary` a `Vocabulary` of
        the training files; `manifest` is `{split: [{"file", "chars", "tokens",
        "names", "sha256"}]}`.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    sources, manifest = {}, {}
    for split, names in files.items():
        sources[split], manifest[split] = [], []
        for name in names:
            path = root / name
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} is not in the standard library of Python "
                    f"{platform.python_version()}. Edit FILES to name files it has."
                )
            text = path.read_text(encoding="utf-8")
            strings, kinds, labels = name_roles(text, name)
            sources[split].append((strings, kinds, labels))
            manifest[split].append(
                {
                    "file": name,
                    "chars": len(text),
                    "tokens": len(strings),
                    "names": int((labels >= 0).sum()),
                    "sha256": hashlib.sha256(text.encode()).hexdigest(),
                }
            )
    counts = collections.Counter(
        (s, k)
        for strings, kinds, _ in sources["train"]
        for s, k in zip(strings, kinds, strict=True)
    )
    vocabulary = Vocabulary(counts, vocabulary_size)
    data = {}
    for split, parts in sources.items():
        cut = [windows(vocabulary.encode(s, k), labels, length) for s, k, labels in parts]
        data[split] = tuple(np.concatenate(columns) for columns in zip(*cut, strict=True))
    return data, vocabulary, manifest


def baselines(data) -> dict[str, np.ndarray]:
    """The test mistakes of three guesses that read no model, learned on all training windows.

    Returns:
        `{label: mistakes}`, bool `(test names,)` in the order of the probes'
        rows (window by window): always the most frequent role; each name's most
        frequent role (the best any rule that sees only the type can do); and
        each (previous token, name) pair's most frequent role, falling back to
        the name's, then to the most frequent role, for pairs or names never
        seen in training. Their means are the guesses' test errors.
    """
    train_ids, _, train_labels, train_previous = data["train"]
    test_ids, _, test_labels, test_previous = data["test"]
    kept, test_kept = train_labels >= 0, test_labels >= 0
    labels = train_labels[kept]
    overall = np.bincount(labels, minlength=len(ROLES)).argmax()

    def majority(keys):
        counts = collections.defaultdict(lambda: np.zeros(len(ROLES), np.int64))
        for key, label in zip(keys, labels, strict=True):
            counts[key][label] += 1
        return {key: int(c.argmax()) for key, c in counts.items()}

    by_name = majority(train_ids[kept].tolist())
    by_pair = majority(zip(train_previous[kept].tolist(), train_ids[kept].tolist(), strict=True))
    names, previous = test_ids[test_kept].tolist(), test_previous[test_kept].tolist()
    name_guess = np.array([by_name.get(t, overall) for t in names])
    pair_guess = np.array(
        [by_pair.get((p, t), by_name.get(t, overall)) for p, t in zip(previous, names, strict=True)]
    )
    truth = test_labels[test_kept]
    return {
        "always the most frequent role": truth != overall,
        "each name's most frequent role": truth != name_guess,
        "each (previous token, name) pair's most frequent role": truth != pair_guess,
    }


def model_inputs(token_ids: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The model's inputs for a batch of windows: ids, and the names as `padding_mask`
    (the tokens the per-token probes take as examples)."""
    return {"token_ids": token_ids, "padding_mask": labels >= 0}


def build_transformer(
    length: int, vocabulary_size: int, dim: int, blocks: int, heads: int, intermediate_dim: int
) -> keras.Model:
    """A causal token-level transformer with a next-token head.

    Block `i` is the layer `transformer_layer_{i}`, as in keras-hub backbones,
    so that `points="blocks"` finds the blocks. The blocks normalise first
    (pre-LN): their outputs are the residual stream, which trains quickly.
    Attention skips the padding (id 0), read from the ids; the `padding_mask`
    input is what per-token probes read to know which tokens are examples (here
    the names), and changes no output.

    Args:
        length: the longest window (the position embedding's length).
        vocabulary_size: the number of token ids.
        dim: width of the embedding and of every block.
        blocks: number of `TransformerDecoder` blocks (self-attention only).
        heads: attention heads per block.
        intermediate_dim: width of each block's feed-forward layer.

    Returns:
        A Functional model `{"token_ids", "padding_mask"}` -> next-token logits
        `(batch, tokens, vocabulary_size)`.
    """
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((None,), dtype="bool", name="padding_mask")
    x = keras_hub.layers.TokenAndPositionEmbedding(
        vocabulary_size,
        length,
        dim,
        embeddings_initializer="glorot_uniform",
        name="token_and_position_embedding",
    )(token_ids)
    attention_mask = keras.ops.not_equal(token_ids, 0)
    for i in range(blocks):
        x = keras_hub.layers.TransformerDecoder(
            intermediate_dim, heads, normalize_first=True, name=f"transformer_layer_{i}"
        )(x, decoder_padding_mask=attention_mask)
    x = keras.layers.LayerNormalization(name="final_norm")(x)
    logits = keras.layers.Dense(vocabulary_size, name="next_token_logits")(x)
    return keras.Model(
        {"token_ids": token_ids, "padding_mask": padding_mask}, logits, name="code_transformer"
    )


def train_language_model(model, data, steps: int, batch_size: int, learning_rate: float, seed):
    """Trains `model` to predict the next token, in `steps` steps of Adam.

    Returns:
        `{"seconds", "steps", "train_loss", "val_loss", "val_bits_per_token",
        "val_accuracy", "val_name_accuracy"}`: the mean loss of the last (up
        to) 100 steps, and on all the validation windows the loss, the
        next-token accuracy, and that accuracy where the next token is a name.
    """
    token_ids, next_ids, labels, _ = data["train"]
    log_every = min(100, steps)
    warmup = max(1, steps // 10)
    # A linear warm-up over the first tenth, then a cosine decay to zero.
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate / warmup, decay_steps=steps, warmup_target=learning_rate, warmup_steps=warmup
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        # Id 0 is padding and the end of a file: no next token to predict.
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
    )
    dataset = (
        tf.data.Dataset.from_tensor_slices((model_inputs(token_ids, labels), next_ids))
        .shuffle(len(token_ids), seed=seed)
        .repeat()
        .batch(batch_size)
    )
    start = time.perf_counter()
    history = model.fit(
        dataset, epochs=-(-steps // log_every), steps_per_epoch=log_every, shuffle=False, verbose=2
    )
    seconds = time.perf_counter() - start
    # Scored here, at exactly the positions that have a next token (Keras' accuracy
    # would count the padded ones too).
    val_ids, val_next, val_labels, _ = data["val"]
    logits = model.predict(model_inputs(val_ids, val_labels), batch_size=64, verbose=0)
    logits = logits.astype("float64")
    kept = val_next != 0
    log_probs = logits - logsumexp(logits, axis=-1, keepdims=True)
    val_loss = -np.take_along_axis(log_probs, val_next[..., None], axis=-1)[..., 0][kept].mean()
    hits = logits.argmax(axis=-1) == val_next
    # The next token is a labelled name: the label of position i + 1.
    next_is_name = np.zeros_like(kept)
    next_is_name[:, :-1] = val_labels[:, 1:] >= 0
    return {
        "seconds": seconds,
        "steps": steps,
        "train_loss": history.history["loss"][-1],
        "val_loss": float(val_loss),
        "val_bits_per_token": float(val_loss / np.log(2)),
        "val_accuracy": float(np.mean(hits[kept])),
        "val_name_accuracy": float(np.mean(hits[next_is_name & kept])),
    }


def probe_points(model: keras.Model) -> list[str]:
    """The embedding and every block, input side first."""
    return kp.points.resolve(model, ["token_and_position_embedding", "blocks"])


def probe(model, points, probe_data, directory: Path, l2: float, seed: int, label: str):
    """Per-name probes at `points` of `model`, and their control task.

    Args:
        model: the transformer as it is now.
        points: probe points.
        probe_data: `{split: (inputs, labels)}`, labels `(n, length)`, -1 off names.
        directory: a fresh folder for the feature cache.
        l2: L2 penalty of the probes (`kp.fit_probes`).
        seed: seed of the control task's labels.
        label: the condition's name, for progress lines.

    Returns:
        `(probed, cache, report, control)`: the probed model, its feature cache,
        the probes' report and the control task's report (splits train, val,
        test).
    """
    start = time.perf_counter()
    probed = kp.ProbedModel(model, points=points, num_classes=len(ROLES), reducers="tokens")
    for split, split_data in probe_data.items():
        cache = kp.FeatureCache.write(probed, split_data, directory, split=split, verbose=0)
    labels = probe_data["test"][1]
    if not np.array_equal(cache.arrays("test", points=[])[1], labels[labels >= 0]):
        raise AssertionError("The cache's test rows are not the test names in order.")
    report = kp.fit_probes(probed, cache, solver="lbfgs", l2=l2, verbose=0)
    control = kp.controls.control_task_probes(probed, cache, l2=l2, seed=seed, verbose=0)
    print(f"  {label}: {len(points)} points probed in {time.perf_counter() - start:.0f} s")
    return probed, cache, report, control


def capacity_path(probed, cache, l2s, seed: int) -> dict:
    """Hewitt & Liang's capacity question along an L2 path: the real and the control
    probes of every point refitted at each penalty, with selectivity on test.

    Returns:
        `{l2: {"real": report, "control": report, "selectivity": {point:
        Comparison}}}`: selectivity is the control task's test error minus
        the real task's (`control.compare("test", point, other=real)`: windows
        resampled), Holm-adjusted over the points at each penalty.
    """
    path = {}
    for l2 in l2s:
        tick = time.perf_counter()
        real = kp.fit_probes(probed, cache, solver=kp.solvers.LBFGSProbe(l2=l2), verbose=0)
        control = kp.controls.control_task_probes(probed, cache, l2=l2, seed=seed, verbose=0)
        comparisons = {p: control.compare("test", p, other=real) for p in probed.points}
        path[l2] = {"real": real, "control": control, "selectivity": holm(comparisons)}
        print(f"  l2={l2:g}: {time.perf_counter() - tick:.0f} s")
    return path


def description_lengths(probed, cache, l2: float, seed: int, orders: int) -> dict | None:
    """Voita & Titov's online code of the real and of the control task, for `orders`
    orders of the train rows, or `None` where this keras-probes has no
    `kp.controls.description_length`.

    Returns:
        `{"fractions", "orders", "real": {point: figures}, "control": {point:
        figures}}`: per point, `codelength`, `uniform_codelength` and
        `compression`, each a list over the orders (rows shuffled with seeds
        `seed`, `seed + 1`, ...).
    """
    if not hasattr(kp.controls, "description_length"):
        return None
    train_labels = cache.arrays("train", points=[])[1]
    control_labels = kp.controls.control_task_labels(
        cache.token_ids("train"), train_labels, seed=seed, num_classes=len(ROLES)
    )
    # Voita & Titov's blocks, less any first ones that hold no row of a small split.
    fractions = [f for f in MDL_FRACTIONS if int(f * len(train_labels)) >= 1]
    seeds = [seed + i for i in range(orders)]
    result = {"fractions": fractions, "orders": seeds}
    for task, labels in (("real", None), ("control", control_labels)):
        reports = [
            kp.controls.description_length(
                probed,
                cache,
                fractions=fractions,
                solver=kp.solvers.LBFGSProbe(l2=l2),
                labels=labels,
                seed=order,
                verbose=0,
            )
            for order in seeds
        ]
        result[task] = {
            point: {
                key: [r.results["train"][point][key] for r in reports]
                for key in ("codelength", "uniform_codelength", "compression")
            }
            for point in probed.points
        }
    return result


#: The online code's blocks (Voita & Titov's: 0.1%, 0.2%, ... of the train rows).
MDL_FRACTIONS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)


def holm(comparisons: dict) -> dict:
    """The comparisons with Holm's `adjusted_pvalue` over all of them."""
    adjusted = kp.uncertainty.holm([c.pvalue for c in comparisons.values()])
    return {
        name: dataclasses.replace(c, adjusted_pvalue=float(p))
        for (name, c), p in zip(comparisons.items(), adjusted, strict=True)
    }


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
    columns = {
        split: (report.errors(split), {p: report.interval(split, p) for p in report.points})
        for split in ("untrained", "trained", "reinit")
    }
    first = _block(report.points, "probe test error [95% interval, windows resampled]", columns)
    columns = {
        f"control {s}": (
            report.errors(f"control/{s}"),
            {p: report.interval(f"control/{s}", p) for p in report.points},
        )
        for s in ("untrained", "trained")
    }
    for split in ("untrained", "trained"):
        comparisons = tests[f"selectivity, {split}"]
        columns[f"selectivity {split}"] = (
            report.values(split, "selectivity"),
            {p: (c.low, c.high) for p, c in comparisons.items()},
        )
    second = _block(
        report.points,
        "control task error, and selectivity = accuracy - control task accuracy [95% interval]",
        columns,
    )
    return "\n".join(first + [""] + second)


def _block(rows, title, columns, row_name="point", number=".4f"):
    """A text table: `columns` is `{name: ({row: value}, {row: (low, high)})}`."""
    cells = {
        name: [_cell(values[r], bounds[r], number) for r in rows]
        for name, (values, bounds) in columns.items()
    }
    labels = [format(r, "g") if isinstance(r, float) else str(r) for r in rows]
    width = max(len(row_name), *map(len, labels))
    sizes = {name: max(len(name), *map(len, cells[name])) for name in columns}
    header = f"{row_name:<{width}}  " + "  ".join(f"{n:>{sizes[n]}}" for n in columns)
    lines = [title, header, "-" * len(header)]
    for i, label in enumerate(labels):
        row = "  ".join(f"{cells[n][i]:>{sizes[n]}}" for n in columns)
        lines.append(f"{label:<{width}}  {row}")
    return lines


def _cell(value, bounds, number=".4f"):
    return f"{value:{number}} [{bounds[0]:{number}}, {bounds[1]:{number}}]"


def path_table(path: dict, points: list[str]) -> str:
    """Selectivity per penalty and point [95% interval], then the real and the
    control task's test errors."""
    l2s = list(path)
    selectivity = {
        p: (
            {l2: path[l2]["selectivity"][p].difference for l2 in l2s},
            {l2: (path[l2]["selectivity"][p].low, path[l2]["selectivity"][p].high) for l2 in l2s},
        )
        for p in points
    }
    lines = _block(
        l2s,
        "selectivity along the L2 path (trained transformer) [95% interval, windows resampled]",
        selectivity,
        row_name="l2",
    )
    for task in ("real", "control"):
        errors = {
            p: (
                {l2: path[l2][task].errors("test")[p] for l2 in l2s},
                {l2: path[l2][task].interval("test", p) for l2 in l2s},
            )
            for p in points
        }
        title = f"{task} task test error along the L2 path"
        lines += [""] + _block(l2s, title, errors, row_name="l2")
    return "\n".join(lines)


def mdl_table(mdl: dict, points: list[str]) -> str:
    """The online codelength (kbits) and compression of the real and the control task:
    the mean over the row orders [their least, their largest]."""

    def cell(values, scale=1.0, number=".3f"):
        values = np.asarray(values) / scale
        return _cell(values.mean(), (values.min(), values.max()), number)

    columns = {}
    for task in ("real", "control"):
        figures = {p: mdl[task][p] for p in points}
        columns[f"{task} kbits"] = [cell(figures[p]["codelength"], 1e3, ".2f") for p in points]
        columns[f"{task} compression"] = [cell(figures[p]["compression"]) for p in points]
    columns["uniform kbits"] = [
        f"{mdl['real'][p]['uniform_codelength'][0] / 1e3:.2f}" for p in points
    ]
    width = max(len("point"), *map(len, points))
    sizes = {name: max(len(name), *map(len, cells)) for name, cells in columns.items()}
    header = f"{'point':<{width}}  " + "  ".join(f"{n:>{sizes[n]}}" for n in columns)
    lines = [
        "online codelength (Voita & Titov) of the probes' train names, trained transformer: "
        f"the mean over {len(mdl['orders'])} orders of the rows [least, largest]",
        header,
        "-" * len(header),
    ]
    for i, p in enumerate(points):
        row = "  ".join(f"{columns[n][i]:>{sizes[n]}}" for n in columns)
        lines.append(f"{p:<{width}}  {row}")
    return "\n".join(lines)


def paired_tests(report: kp.ProbeReport, windows: np.ndarray, guesses: dict) -> dict:
    """Every difference the README states, paired on the same test names.

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

    name_label = "each name's most frequent role"
    pair_label = "each (previous token, name) pair's most frequent role"
    by_name, by_pair = (guesses[k].astype(float) for k in (name_label, pair_label))
    tests = {
        # After training the error is lower at every point (trained - untrained).
        "trained minus untrained error": holm(
            {p: rates(wrong("trained", p), wrong("untrained", p), p, p) for p in points}
        ),
        # Each point of each model against the best rule that sees only the name.
        "error minus the name rule": holm(
            {
                f"{split} {p}": rates(wrong(split, p), by_name, p, name_label)
                for split in ("untrained", "reinit", "trained")
                for p in points
            }
        ),
        # ... and against the rule that also sees the previous token.
        "error minus the (previous token, name) rule": holm(
            {
                f"{split} {p}": rates(wrong(split, p), by_pair, p, pair_label)
                for split in ("untrained", "reinit", "trained")
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
        # differences, per name in {-2, ..., 2}: the paired bootstrap over windows.
        gains = {p: wrong(control, p) - wrong(split, p) for p in (first, last)}
        change = kp.uncertainty.paired_means(gains[last], gains[first], units=windows)
        tests[f"selectivity, {split}, last minus first point"] = {
            f"{last} - {first}": dataclasses.replace(
                change, a=last, b=first, split="test", metric="selectivity"
            )
        }
    # Trained selectivity minus untrained, per point: the paired bootstrap over windows.
    tests["selectivity, trained minus untrained"] = holm(
        {
            p: dataclasses.replace(
                kp.uncertainty.paired_means(
                    wrong("control/trained", p) - wrong("trained", p),
                    wrong("control/untrained", p) - wrong("untrained", p),
                    units=windows,
                ),
                a="trained",
                b="untrained",
                split="test",
                metric="selectivity",
            )
            for p in points
        }
    )
    return tests


def path_tests(path: dict, windows: np.ndarray) -> dict:
    """Selectivity between neighbouring penalties of the path, per point: the paired
    bootstrap over windows of (weaker penalty - stronger), Holm over all of them."""
    l2s = list(path)
    comparisons = {}
    for strong, weak in zip(l2s, l2s[1:], strict=False):
        for p in path[strong]["selectivity"]:

            def gain(l2, p=p):
                real = path[l2]["real"].outcomes["test"][p].values("error")
                control = path[l2]["control"].outcomes["test"][p].values("error")
                return control - real

            change = kp.uncertainty.paired_means(gain(weak), gain(strong), units=windows)
            comparisons[f"{p}: l2 {weak:g} - {strong:g}"] = dataclasses.replace(
                change, a=f"l2={weak:g}", b=f"l2={strong:g}", split="test", metric="selectivity"
            )
    return {"selectivity, each penalty minus the stronger one before": holm(comparisons)}


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


def plot(
    report: kp.ProbeReport,
    references: dict[str, float],
    tests: dict,
    path: dict,
    mdl: dict | None,
) -> Figure:
    """Probe test error per point for each condition; selectivity per point; selectivity
    along the L2 path; the online code's compression per point (where measured). Bands:
    95% intervals.

    Args:
        report: one split per condition of `CONDITIONS`, all on the test files,
            with their outcomes.
        references: `{label: test error}` of guesses that read no model (`baselines`).
        tests: `paired_tests`' comparisons (the selectivities' intervals).
        path: `capacity_path`'s result.
        mdl: `description_lengths`' result, or `None`.

    Returns:
        The figure; nothing is shown.
    """
    points, depths = report.points, range(len(report.points))
    figure = Figure(figsize=(13, 9.6), layout="constrained")
    (errors, selectivity), (capacity, compression) = figure.subplots(2, 2)
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
    for (label, value), style in zip(references.items(), (":", "-.", (0, (5, 5))), strict=True):
        errors.axhline(value, color="grey", linestyle=style, label=f"guess: {label}")
    errors.set_ylim(0, 1.0)
    errors.set_ylabel(f"test error ({len(ROLES)} roles)")
    errors.set_title("Per-name probe error (bands: 95% intervals, windows resampled)")
    for split in ("untrained", "trained"):
        values = list(report.values(split, "selectivity").values())
        selectivity.plot(depths, values, color=COLORS[split], marker="o", label=CONDITIONS[split])
        bounds = [(c.low, c.high) for c in tests[f"selectivity, {split}"].values()]
        selectivity.fill_between(
            depths, *zip(*bounds, strict=True), color=COLORS[split], alpha=0.2, lw=0
        )
    selectivity.axhline(0, color="grey", linewidth=0.8)
    selectivity.set_ylabel("selectivity: accuracy - control task accuracy")
    selectivity.set_title("Selectivity against the per-type control task")
    for ax in (errors, selectivity):
        ax.set_xticks(depths, points, rotation=20, ha="right", fontsize=8)
        ax.set_xlabel("probe point (input side first)")
    l2s = list(path)
    for i, p in enumerate(points):
        comparisons = [path[l2]["selectivity"][p] for l2 in l2s]
        color = f"C{i}"
        capacity.plot(l2s, [c.difference for c in comparisons], marker="o", color=color, label=p)
        capacity.fill_between(
            l2s, [c.low for c in comparisons], [c.high for c in comparisons], color=color,
            alpha=0.15, lw=0,
        )  # fmt: skip
    capacity.set_xscale("log")
    capacity.invert_xaxis()  # capacity grows to the right
    capacity.axhline(0, color="grey", linewidth=0.8)
    capacity.set_xlabel("L2 penalty of the probes (weaker: more capacity ->)")
    capacity.set_ylabel("selectivity (trained transformer)")
    capacity.set_title("Selectivity along the L2 path, per point")
    if mdl is None:
        compression.set_axis_off()
        compression.text(0.5, 0.5, "kp.controls.description_length: not available", ha="center")
    else:
        for task, style in (("real", "-"), ("control", "--")):
            values = [np.asarray(mdl[task][p]["compression"]) for p in points]
            label = "role" if task == "real" else "control task"
            means = [v.mean() for v in values]
            compression.plot(depths, means, marker="o", linestyle=style, color="C1", label=label)
            compression.fill_between(
                depths, [v.min() for v in values], [v.max() for v in values], color="C1",
                alpha=0.2, lw=0,
            )  # fmt: skip
        compression.axhline(1, color="grey", linewidth=0.8)
        compression.set_xticks(depths, points, rotation=20, ha="right", fontsize=8)
        compression.set_xlabel("probe point (input side first)")
        compression.set_ylabel("compression: uniform / online codelength")
        compression.set_title(
            f"Online code (Voita & Titov), trained (band: {len(mdl['orders'])} row orders)"
        )
    for ax in (errors, selectivity, capacity, compression):
        if ax.axison:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    figure.suptitle(
        f"Syntactic roles of the names in CPython {platform.python_version()}'s standard "
        f"library, read by linear probes from {report.model}"
    )
    return figure


def _figures(report: kp.ProbeReport) -> kp.ProbeReport:
    """The report without its examples' outcomes."""
    return dataclasses.replace(report, outcomes={}, examples={})


def main(argv=None):
    args = arguments().parse_args(argv)
    files = FILES
    if args.quick:
        args.length, args.vocabulary, args.dim, args.blocks, args.heads = 32, 300, 16, 2, 2
        args.train_steps, args.batch_size, args.probe_windows = 1, 8, 48
        args.path, args.orders = args.path[:: max(1, len(args.path) // 2)][:2], 1
        files = {"train": FILES["train"][:3], "val": FILES["val"][-1:], "test": ("heapq.py",)}
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    timings = {}

    print(f"Python {sys.version.split()[0]}: {sysconfig.get_paths()['stdlib']}")
    data, vocabulary, manifest = load_sources(args.length, args.vocabulary, files)
    for split, entries in manifest.items():
        names = ", ".join(entry["file"] for entry in entries)
        tokens = sum(entry["tokens"] for entry in entries)
        labelled = sum(entry["names"] for entry in entries)
        print(
            f"  {split}: {tokens} tokens ({labelled} labelled names), "
            f"{len(data[split][0])} windows: {names}"
        )
    print(
        f"Vocabulary: {len(vocabulary)} ids ({args.vocabulary} token strings and "
        f"{len(SPECIAL)} special), covering {vocabulary.coverage:.3f} of the training tokens"
    )
    timings["data"] = time.perf_counter() - start

    # The probes learn from a seeded sample of training windows, and are scored on every
    # validation and test window; windows without a labelled name hold no example.
    with_names = {s: np.flatnonzero((data[s][2] >= 0).any(axis=1)) for s in data}
    sample = np.sort(rng.choice(with_names["train"], args.probe_windows, replace=False))
    chosen = {"train": sample, "val": with_names["val"], "test": with_names["test"]}
    probe_data = {
        s: (model_inputs(data[s][0][rows], data[s][2][rows]), data[s][2][rows])
        for s, rows in chosen.items()
    }
    frequencies = {
        split: np.bincount(labels[labels >= 0], minlength=len(ROLES)) / (labels >= 0).sum()
        for split, (_, labels) in probe_data.items()
    }
    test_data = tuple(column[chosen["test"]] for column in data["test"])
    guesses = baselines({"train": data["train"], "test": test_data})
    references = {label: float(np.mean(wrong)) for label, wrong in guesses.items()}
    shares = zip(ROLES, frequencies["test"], strict=True)
    print("Role frequencies on the test split: " + ", ".join(f"{c} {f:.3f}" for c, f in shares))
    names = {s: data[s][0][chosen[s]][labels >= 0] for s, (_, labels) in probe_data.items()}
    types = {s: len(np.unique(ids)) for s, ids in names.items()}
    unseen = float(np.mean(~np.isin(names["test"], names["train"])))
    print(
        f"Name types: {types}; {unseen:.3f} of the test names are of a type the probes' "
        "train names lack"
    )

    model = build_transformer(
        args.length, len(vocabulary), args.dim, args.blocks, args.heads, 4 * args.dim
    )
    points = probe_points(model)
    print(f"{model.name}: {model.count_params()} parameters; probe points {points}")

    with tempfile.TemporaryDirectory(prefix="code_tokens_") as temporary:
        caches = Path(temporary)
        print("Probing the untrained transformer (its initial weights)...")
        tick = time.perf_counter()
        _, _, untrained, untrained_control = probe(
            model, points, probe_data, caches / "untrained", args.l2, args.seed, "untrained"
        )
        timings["probe_untrained"] = time.perf_counter() - tick

        print(f"Training it as a next-token language model for {args.train_steps} steps...")
        language_model = train_language_model(
            model, data, args.train_steps, args.batch_size, args.learning_rate, args.seed
        )
        timings["train"] = language_model["seconds"]
        print(
            f"  {language_model['seconds']:.0f} s; last train loss "
            f"{language_model['train_loss']:.3f}, validation loss "
            f"{language_model['val_loss']:.3f} ({language_model['val_bits_per_token']:.2f} "
            f"bits/token), next-token accuracy {language_model['val_accuracy']:.3f} "
            f"({language_model['val_name_accuracy']:.3f} where the next token is a name)"
        )

        print("Probing the trained transformer...")
        tick = time.perf_counter()
        probed, cache, trained, trained_control = probe(
            model, points, probe_data, caches / "trained", args.l2, args.seed, "trained"
        )
        windows = cache.sequences("test")
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
        seconds = timings["probe_reinitialized"]
        print(f"  re-initialised: {len(points)} points probed in {seconds:.0f} s")

        print(f"The capacity path: real and control probes at l2 = {args.path}...")
        tick = time.perf_counter()
        path = capacity_path(probed, cache, args.path, args.seed)
        timings["capacity_path"] = time.perf_counter() - tick

        tick = time.perf_counter()
        mdl = description_lengths(probed, cache, args.l2, args.seed, args.orders)
        timings["description_length"] = time.perf_counter() - tick
        if mdl is None:
            print("No kp.controls.description_length in this keras-probes: no online code.")
        else:
            print(f"Online codes (real and control task): {timings['description_length']:.0f} s")

    # One split per condition, each the test files' names, with each name's outcome
    # and its window (the cache's sequences): the unit the intervals resample.
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
        len(ROLES),
        model.name,
        outcomes={name: condition.outcomes["test"] for name, condition in reports.items()},
        examples={name: condition.examples["test"] for name, condition in reports.items()},
    )
    tests = paired_tests(report, windows, guesses)
    tests.update(path_tests(path, windows))
    table = format_table(report, tests)
    num_test = int((probe_data["test"][1] >= 0).sum())
    print(
        f"\nProbe error per point on the test split ({num_test} names in "
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
    extra = "\n\n" + path_table(path, points)
    if mdl is not None:
        extra += "\n\n" + mdl_table(mdl, points)
    print(extra)
    monotonicity = report.monotonicity("trained", level=0.95)
    lines = [
        "monotonicity of the trained test error with depth (-Kendall tau): "
        f"{monotonicity[0]:.3f} [{monotonicity[1]:.3f}, {monotonicity[2]:.3f}]",
        "",
        "Paired tests on the same test names (windows resampled; Holm within a question):",
    ]
    for question, comparisons in tests.items():
        lines.append(f"{question}:")
        lines += [f"  {name}: {tested(c)}" for name, c in comparisons.items()]
    print("\n".join(lines))

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "code_tokens_table.txt").write_text(
        f"{table}\n{guessed}{extra}\n\n" + "\n".join(lines) + "\n"
    )
    report.to_json(args.out / "code_tokens_report.json")
    figure = plot(report, references, tests, path, mdl)
    figure.savefig(args.out / "code_tokens_errors.png", dpi=110)
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
        "roles": list(ROLES),
        "files": manifest,
        "vocabulary": {"ids": len(vocabulary), "coverage": vocabulary.coverage},
        "windows": {split: len(x["token_ids"]) for split, (x, _) in probe_data.items()},
        "names": {split: int((y >= 0).sum()) for split, (_, y) in probe_data.items()},
        "name_types": types,
        "test_names_of_unseen_types": unseen,
        "role_frequencies": {s: f.tolist() for s, f in frequencies.items()},
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
        "capacity_path": {
            str(l2): {
                "selectivity": {p: comparison_json(c) for p, c in step["selectivity"].items()},
                "real": _figures(step["real"]).to_dict(),
                "control": _figures(step["control"]).to_dict(),
            }
            for l2, step in path.items()
        },
        "description_length": None if mdl is None else {"l2": args.l2, **mdl},
        "parameters": model.count_params(),
        "language_model": language_model,
        "points": points,
        # The figures alone: each name's outcomes (megabytes) are in
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
