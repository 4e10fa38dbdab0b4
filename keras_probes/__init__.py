"""keras-probes: linear classifier probes for any Keras model.

A probe is a softmax linear classifier fitted on one layer's features, with
no influence on the model (Alain & Bengio, arXiv 1610.01644).
"""

from keras_probes import (
    callbacks,
    concepts,
    controls,
    datasets,
    distribute,
    fitting,
    flawed,
    metrics,
    models,
    plots,
    points,
    reducers,
    regression,
    solvers,
    tasks,
)
from keras_probes.cache import CacheError, FeatureCache
from keras_probes.export import export_serving
from keras_probes.fitting import fit_probes
from keras_probes.heads import ProbeHead, RegressionHead
from keras_probes.model import ProbedModel
from keras_probes.reducers import GlobalAveragePooling, RandomSubset, TokenFeatures, TokenPooling
from keras_probes.regression import RegressionProbedModel, fit_regression_probes
from keras_probes.report import ProbeHistory, ProbeReport

__version__ = "0.1.0"

__all__ = [
    "CacheError",
    "FeatureCache",
    "GlobalAveragePooling",
    "ProbeHead",
    "ProbeHistory",
    "ProbeReport",
    "ProbedModel",
    "RandomSubset",
    "RegressionHead",
    "RegressionProbedModel",
    "TokenFeatures",
    "TokenPooling",
    "callbacks",
    "concepts",
    "controls",
    "datasets",
    "distribute",
    "export_serving",
    "fit_probes",
    "fit_regression_probes",
    "fitting",
    "flawed",
    "metrics",
    "models",
    "plots",
    "points",
    "reducers",
    "regression",
    "solvers",
    "tasks",
]
