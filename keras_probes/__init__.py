"""keras-probes: linear classifier probes for any Keras model.

A probe is a softmax linear classifier fitted on one layer's features, with
no influence on the model (Alain & Bengio, arXiv 1610.01644).

`import keras_probes` imports every submodule, so that `keras.models.load_model`
finds the Keras classes of a saved probed model. The `keras-probes` command line
is the one exception: there each submodule is imported when first used, so that
`--help`, `report` and `plot` never import TensorFlow and start at once.
"""

import importlib
import os
import sys

__version__ = "0.1.0"

_SUBMODULES = (
    "attribution",
    "callbacks",
    "concepts",
    "controls",
    "datasets",
    "distribute",
    "fitting",
    "flawed",
    "metrics",
    "models",
    "outcomes",
    "plots",
    "points",
    "reducers",
    "regression",
    "solvers",
    "tasks",
    "uncertainty",
)

#: The names of the package itself, by the submodule that defines them.
_NAMES = {
    "CacheError": "cache",
    "FeatureCache": "cache",
    "export_serving": "export",
    "fit_probes": "fitting",
    "ProbeHead": "heads",
    "RegressionHead": "heads",
    "ProbedModel": "model",
    "GlobalAveragePooling": "reducers",
    "RandomSubset": "reducers",
    "TokenFeatures": "reducers",
    "TokenPooling": "reducers",
    "RegressionProbedModel": "regression",
    "fit_regression_probes": "regression",
    "ProbeHistory": "report",
    "ProbeReport": "report",
}

__all__ = sorted([*_SUBMODULES, *_NAMES])


def __getattr__(name):
    # PEP 562: reached only for a name not imported yet (in the command line).
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})


def _in_the_command_line() -> bool:
    """Whether this process is the command line: the `keras-probes` console script, or
    `python -m keras_probes.cli` (exactly: not a module that imports keras_probes)."""
    program = os.path.basename((getattr(sys, "argv", None) or [""])[0])
    if program.split(".")[0] in ("keras-probes", "keras-probes-script"):
        return True
    arguments = list(getattr(sys, "orig_argv", ()))
    return any(
        flag == "-m" and module == "keras_probes.cli"
        for flag, module in zip(arguments, arguments[1:], strict=False)
    )


if not _in_the_command_line():
    for _name in __all__:
        __getattr__(_name)
    del _name
