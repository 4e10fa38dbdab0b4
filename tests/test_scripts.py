"""Every reproduction and example answers `--help` and resolves `--out` before it imports
TensorFlow, and writes to its committed folder (`results/`, `examples/out/`) only when it
runs the committed configuration: `--quick` and other variants write beside it.

The scripts run in a Python where TensorFlow, Keras and keras_probes cannot be imported:
what a script does before it would import them is all it can do there."""

import json
import re
import shlex
import subprocess
import sys

import pytest
from conftest import ROOT

RESULTS, EXAMPLES_OUT = ROOT / "results", ROOT / "examples" / "out"
REPRODUCTIONS = sorted(p.stem for p in (ROOT / "reproductions").glob("[!_]*.py"))
EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("[!_]*.py"))
SCRIPTS = [f"reproductions/{n}.py" for n in REPRODUCTIONS] + [f"examples/{n}.py" for n in EXAMPLES]

BLOCK = """
import sys
for name in ("tensorflow", "keras", "keras_hub", "keras_probes", "tensorflow_datasets"):
    sys.modules[name] = None  # `import name` raises ImportError
sys.path[:0] = [{examples!r}, {reproductions!r}]
"""
BLOCK = BLOCK.format(examples=str(ROOT / "examples"), reproductions=str(ROOT / "reproductions"))

# Runs `python <script> <args>` (sys.argv[1:]), TensorFlow blocked.
RUN = (
    BLOCK
    + """
import runpy
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
)

# Runs each script of the JSON list of `[script, args]` in sys.argv[1] until it has parsed
# its command line; prints the `--out` each resolved to, or why it did not get there.
RESOLVE = (
    BLOCK
    + """
import argparse, contextlib, json, runpy
import _outputs

class Parsed(BaseException):
    pass

plain, scripted = argparse.ArgumentParser.parse_args, _outputs.ScriptParser.parse_args

def parse_plain(self, *args, **kwargs):
    if not isinstance(self, _outputs.ScriptParser):
        raise Parsed("not an _outputs.ScriptParser: " + type(self).__name__)
    return plain(self, *args, **kwargs)

def parse_script(self, *args, **kwargs):
    raise Parsed(str(scripted(self, *args, **kwargs).out))

argparse.ArgumentParser.parse_args = parse_plain
_outputs.ScriptParser.parse_args = parse_script
outs = []
for script, args in json.loads(sys.argv[1]):
    sys.argv = [script, *args]
    try:
        with contextlib.redirect_stdout(sys.stderr):
            runpy.run_path(script, run_name="__main__")
        outs.append("ran to the end")
    except Parsed as parsed:
        outs.append(parsed.args[0])
    except BaseException as error:
        outs.append(f"{type(error).__name__}: {error}")
print(json.dumps(outs))
"""
)


def resolve(cases):
    """`[(script, args)]` -> the `--out` each script resolves, parsing its command line."""
    cases = [(str(ROOT / script), [str(a) for a in args]) for script, args in cases]
    result = subprocess.run(
        [sys.executable, "-c", RESOLVE, json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def committed_options(name):
    """The options of the committed run of `reproductions/<name>.py`, `--out` left out."""
    words = shlex.split(json.loads((RESULTS / f"{name}.json").read_text())["command"])[2:]
    if "--out" in words:
        del words[words.index("--out") : words.index("--out") + 2]
    return words


def help_of(script):
    """`python <script> --help`'s output; it must exit 0 and write nothing to stderr."""
    result = subprocess.run(
        [sys.executable, "-c", RUN, str(ROOT / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_is_answered_before_tensorflow_is_imported(script):
    shown = help_of(script)
    assert shown.startswith("usage:") and "--quick" in shown
    # The rule of the default --out is in the help.
    rule = " ".join(shown.split())
    assert "/variants/quick/" in rule and "--quick included" in rule
    if script.startswith("reproductions/"):
        assert "writes to results/variants/<the options that differ>/" in rule


def test_the_sweep_offers_the_variants_of_pathological():
    # The sweep names them itself: it parses its command line before it imports pathological.
    choices = [
        re.search(r"--variants \{([a-z,]+)\}", help_of(f"reproductions/{name}.py")).group(1)
        for name in ("pathological", "pathological_sweep")
    ]
    assert choices[0] == choices[1] == "plain,aux,skip"


def test_quick_runs_never_write_to_the_committed_folder():
    outs = resolve([(script, ["--quick"]) for script in SCRIPTS])
    for script, out in zip(SCRIPTS, outs, strict=True):
        folder = RESULTS if script.startswith("reproductions/") else EXAMPLES_OUT
        assert out.startswith(str(folder / "variants" / "quick")), (script, out)


def test_only_the_committed_configuration_writes_to_the_committed_folder(tmp_path):
    committed = [(f"reproductions/{n}.py", committed_options(n)) for n in REPRODUCTIONS]
    committed += [(f"examples/{n}.py", []) for n in EXAMPLES]
    cases = [
        ("reproductions/resnet50.py", []),  # ResNet-50 itself: the committed run is MobileNet's
        ("reproductions/resnet50.py", ["--model", "mobilenet", "--cache", tmp_path]),
        ("reproductions/inception_v3.py", ["--model", "mobilenet", "--l2", "1e-3"]),
        ("reproductions/toy.py", ["--seed", "1"]),
        ("reproductions/pathological.py", []),  # committed: --steps 10000
        ("reproductions/seeds.py", ["--only", "toy"]),  # --only keeps the others' summaries
        ("reproductions/seeds.py", ["--seeds", "3", "4"]),
        ("reproductions/toy.py", ["--quick", "--out", tmp_path]),
        ("examples/quickstart.py", ["--epochs", "10"]),
    ]
    outs = resolve(committed + cases)
    for (script, args), out in zip(committed, outs[: len(committed)], strict=True):
        folder = RESULTS if script.startswith("reproductions/") else EXAMPLES_OUT
        assert out == str(folder), (script, args, out)
    variants = RESULTS / "variants"
    assert outs[len(committed) :] == [
        str(variants / "model-resnet50"),
        str(RESULTS),
        str(variants / "l2-0.001"),
        str(variants / "seed-1"),
        str(variants / "steps-2000"),
        str(RESULTS),
        str(variants / "seeds-3-4"),
        str(tmp_path),
        str(EXAMPLES_OUT / "variants" / "epochs-10"),
    ]
