"""The command line's start: the commands that run no model never import TensorFlow."""

import os
import subprocess
import sys

import pytest
from conftest import make_report


def _command_line(tmp_path, *argv, python=()):
    """`python -m keras_probes.cli *argv` in a fresh process, TF's log level unset."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, *python, "-m", "keras_probes.cli", *argv], capture_output=True,
        text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, result.stderr


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
def test_text_commands_never_import_tensorflow(tmp_path):
    # `--help` and `report` start at once and print nothing on stderr: TensorFlow (and
    # its start-up logs) is imported only by the commands that run a model.
    make_report().to_json(tmp_path / "r.json")
    out, err = _command_line(tmp_path, "--help")
    assert "usage: keras-probes" in out and err == ""
    out, err = _command_line(tmp_path, "report", "r.json")
    assert "val" in out and "error" in out and err == ""
    _, imports = _command_line(tmp_path, "report", "r.json", python=("-X", "importtime"))
    imported = {line.split("|")[-1].strip() for line in imports.splitlines() if "|" in line}
    assert "keras_probes.report" in imported
    assert not imported & {"tensorflow", "keras", "tensorflow_datasets", "matplotlib"}


def test_the_console_script_imports_no_tensorflow_for_help(tmp_path):
    # The installed `keras-probes` script, as a user runs it (PYTHONPROFILEIMPORTTIME is
    # `-X importtime` for a script).
    script = os.path.join(os.path.dirname(sys.executable), "keras-probes")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [script, "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
    )  # fmt: skip
    assert result.returncode == 0 and "usage: keras-probes" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "keras_probes.cli" in imported
    assert not imported & {"tensorflow", "keras", "tensorflow_datasets"}
