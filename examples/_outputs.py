"""Where a script writes when `--out` is not given: one rule for the reproductions and
the examples.

- The committed configuration (the options of the run whose files are in the
  repository; for an example, its default options) writes to the script's folder:
  `results/` for the reproductions, `examples/out/` for the examples.
- Any other configuration, `--quick` included, writes to
  `<folder>/variants/<the options that differ>/`, e.g. `results/variants/quick/` or
  `results/variants/l2-0.001/` (gitignored): a smoke run or an experiment never
  overwrites the committed files, and two variants never overwrite each other.
- `--out` writes where it says.

Options that only say where things are (a cache folder, a data directory) are
`neutral`: they neither make a run a variant nor name its folder.

This module imports neither keras nor keras_probes: the scripts parse their command
line (and answer `--help`) before they import TensorFlow.
"""

import argparse
import hashlib
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

__all__ = ["VARIANTS", "ScriptParser"]

ROOT = Path(__file__).resolve().parents[1]
#: The sub-folder of a script's folder that holds the runs of other configurations.
VARIANTS = "variants"


class ScriptParser(argparse.ArgumentParser):
    """An `ArgumentParser` with `--out`, whose default follows the configuration run.

    `parse_args` sets `out` to `folder` when the options are those of a committed
    configuration (`neutral` ones aside), else to `folder/variants/<options>`,
    named by the options that differ from the closest committed configuration:
    `quick`, `model-resnet50`, `l2-0.001_seed-1`.

    Args:
        folder: where the committed configuration writes.
        committed: the committed configurations, each a command line of options
            (`""`: the defaults). Defaults to `("",)`.
        neutral: the options that do not change the results, e.g. `"--cache"`.
            Defaults to `()`.
        **kwargs: the other arguments of `argparse.ArgumentParser`.
    """

    def __init__(
        self,
        folder: Path,
        committed: Sequence[str] = ("",),
        neutral: Sequence[str] = (),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.folder = Path(folder)
        self.committed = [shlex.split(options) for options in committed]
        self.neutral = {"out", *(option.lstrip("-").replace("-", "_") for option in neutral)}
        shown = _relative(self.folder)
        if list(committed) == [""]:
            when = "the options are the defaults"
        else:
            runs = " or ".join(f"'{c}'" if c else "the defaults" for c in committed)
            when = f"the options are those of the committed run: {runs}"
        aside = f" ({' and '.join(neutral)} aside)" if neutral else ""
        self.add_argument(
            "--out",
            type=Path,
            help=f"output folder. Default: {shown}/ when {when}{aside}; any other run, --quick "
            f"included, writes to {shown}/{VARIANTS}/<the options that differ>/ (e.g. "
            f"{shown}/{VARIANTS}/quick/), never over that run's files",
        )

    def parse_args(self, args=None, namespace=None) -> argparse.Namespace:
        parsed = super().parse_args(args, namespace)
        if parsed.out is None:
            parsed.out = self.default_out(parsed)
        return parsed

    def default_out(self, parsed: argparse.Namespace) -> Path:
        """`folder` for a committed configuration, else `folder/variants/<options>`."""
        parse = super().parse_args  # the committed options, parsed as given
        differences = min(
            (self._differences(parsed, parse(options)) for options in self.committed), key=len
        )
        if not differences:
            return self.folder
        name = "_".join(differences)
        if len(name) > 80:  # a long list of options: its start and a digest
            name = f"{name[:60]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
        return self.folder / VARIANTS / name

    def _differences(self, parsed, committed) -> list[str]:
        """`name[-value]` of every option whose value differs from the committed one."""
        result = []
        for dest, value in vars(parsed).items():
            if dest in self.neutral or _plain(value) == _plain(getattr(committed, dest, None)):
                continue
            name = dest.replace("_", "-")
            if isinstance(value, bool):
                result.append(name if value else f"no-{name}")
            else:
                values = value if isinstance(value, list | tuple) else [value]
                text = "-".join(str(v) for v in values)
                result.append(f"{name}-{re.sub(r'[^A-Za-z0-9.+-]+', '-', text).strip('-')}")
        return result


def _plain(value):
    """Values as compared: a list whatever the sequence, a path as its text."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
