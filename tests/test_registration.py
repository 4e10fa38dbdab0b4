"""A saved probed model loads in a process that imports any part of keras_probes.

Keras finds custom classes only in its registry, which a package fills when it is imported:
`keras.models.load_model` of a probed model needs `import keras_probes` (or any of its
submodules, which imports the package) first, as the README says.
"""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import small_convnet

import keras_probes as kp


@pytest.mark.slow  # a subprocess of its own: several seconds
def test_a_probed_model_loads_after_importing_any_submodule(tmp_path):
    keras.utils.set_random_seed(0)
    probed = kp.ProbedModel(small_convnet(), points=["relu1", "gap"], num_classes=10)
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", probed.predict(x, verbose=0)["gap"])
    probed.save(tmp_path / "probed.keras")
    script = textwrap.dedent(
        f"""
        import sys
        import keras
        import numpy as np

        path = {str(tmp_path / "probed.keras")!r}
        try:
            keras.models.load_model(path)
        except Exception as error:  # Keras' own message: the classes are not registered
            print("before:", type(error).__name__, str(error).splitlines()[0][:200])
        else:
            sys.exit("loaded without keras_probes imported")
        assert "keras_probes" not in sys.modules
        import keras_probes.heads  # any submodule registers every class

        loaded = keras.models.load_model(path)
        x = np.load({str(tmp_path / "x.npy")!r})
        got = loaded.predict(x, verbose=0)["gap"]
        np.testing.assert_array_equal(got, np.load({str(tmp_path / "expected.npy")!r}))
        print("after: loaded", type(loaded).__name__)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "before: TypeError" in result.stdout and "ProbedModel" in result.stdout
    assert "after: loaded ProbedModel" in result.stdout
