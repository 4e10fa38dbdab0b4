"""Installs keras-probes: linear classifier probes for any Keras model."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="keras-probes",
    version="0.1.0",
    description=(
        "Linear classifier probes for Keras 3 models "
        "(Alain & Bengio, arXiv 1610.01644; Graziani et al., 2019)."
    ),
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["keras_probes", "keras_probes.*"]),
    package_data={"keras_probes": ["presets.json"]},
    python_requires=">=3.11",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.3",
        "tensorflow-datasets>=4.9",
        # TFDS imports it to download a dataset but does not declare it (4.9.10).
        "importlib_resources",
        "numpy>=1.26",
        "scipy>=1.11",
        # The solvers are scikit-learn estimators (estimator tags, check_estimator's
        # expected_failed_checks: 1.6).
        "scikit-learn>=1.6",
        "matplotlib>=3.8",
        "scikit-image>=0.22",
        "tensorflow-serving-api>=2.16",
        # The platform's file lock (flock, LockFileEx) for the cache and the export.
        "filelock>=3.12",
    ],
    entry_points={"console_scripts": ["keras-probes=keras_probes.cli:main"]},
    extras_require={
        "tensorboard": ["tensorboard"],
        # keras-hub backbones (BERT, Gemma, ViT, DINOv2) as bases.
        "hub": ["keras-hub>=0.21"],
        "dev": [
            "pytest>=8",
            "ruff>=0.5",
            "tensorboard",
            "pandas",
            "keras-hub>=0.21",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Framework :: Keras",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
