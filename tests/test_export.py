"""TensorFlow Serving export: invariant 4 for every signature, warm-up requests,
models.config, versions never overwritten, no half-written version, racing exports,
unwritable directories, inputs of the wrong shape."""

import os
import re
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import small_convnet
from google.protobuf import text_format
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

import keras_probes as kp
from keras_probes import export

POINTS = ["pool1", "bn2", "gap", "predictions"]


@pytest.fixture(scope="module")
def probed(digits, digit_convnet):
    """Probes fitted for real on a convnet trained for an epoch on real digits."""
    x, y, _, _ = digits
    probed = kp.ProbedModel(digit_convnet, points=POINTS, num_classes=10)
    probed.compile(keras.optimizers.Adam(1e-2))
    probed.fit(x[:512], y[:512], epochs=2, batch_size=64, verbose=0)
    return probed


def outputs_of(signature, **inputs):
    return {
        k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in inputs.items()}).items()
    }


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
def test_every_signature_gives_the_probed_models_outputs(probed, digits, tmp_path):
    """Invariant 4: the version loaded with tf.saved_model.load gives the same outputs."""
    x = digits[2][:37]
    path = kp.export_serving(probed, tmp_path / "probes", version=None, warmup=x[:3])
    assert path == tmp_path / "probes" / "1"
    served = tf.saved_model.load(str(path))
    names = {p: export.serving_name(p) for p in POINTS}
    assert set(served.signatures) == {"serving_default", *(f"probe_{n}" for n in names.values())}
    expected = probed.predict(x, verbose=0)
    everything = outputs_of(served.signatures["serving_default"], inputs=x)
    for point, name in names.items():
        np.testing.assert_allclose(everything[f"{name}_probabilities"], expected[point], atol=1e-6)
        np.testing.assert_array_equal(everything[f"{name}_class"], expected[point].argmax(1))
        assert everything[f"{name}_class"].dtype == np.int64
        one = outputs_of(served.signatures[f"probe_{name}"], inputs=x)
        assert set(one) == {"probabilities", "class"}
        np.testing.assert_allclose(one["probabilities"], expected[point], atol=1e-6)


def test_heads_only_signatures_take_the_reduced_features(probed, digits, tmp_path):
    x = digits[2][:20]
    path = kp.export_serving(probed, tmp_path / "heads", heads_only=True)
    served = tf.saved_model.load(str(path))
    features = {p: keras.ops.convert_to_numpy(v) for p, v in probed.extract_features(x).items()}
    names = {p: export.serving_name(p) for p in POINTS}
    expected = probed.predict(x, verbose=0)
    everything = outputs_of(
        served.signatures["serving_default"], **{names[p]: features[p] for p in POINTS}
    )
    for point, name in names.items():
        np.testing.assert_allclose(everything[f"{name}_probabilities"], expected[point], atol=1e-6)
        one = outputs_of(served.signatures[f"probe_{name}"], features=features[point])
        np.testing.assert_allclose(one["probabilities"], expected[point], atol=1e-6)


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
def test_warmup_requests_parse_and_run(probed, digits, tmp_path):
    x = digits[2][:3]
    path = kp.export_serving(probed, tmp_path / "probes", warmup=x)
    served = tf.saved_model.load(str(path))
    records = list(
        tf.data.TFRecordDataset(str(path / "assets.extra" / "tf_serving_warmup_requests"))
    )
    assert len(records) == 1 + len(POINTS)  # one request per signature
    expected = probed.predict(x, verbose=0)
    signatures = []
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.name == "probes"
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        np.testing.assert_array_equal(inputs["inputs"], x)
        result = outputs_of(served.signatures[request.model_spec.signature_name], **inputs)
        signatures.append(request.model_spec.signature_name)
        if request.model_spec.signature_name == "probe_gap":
            np.testing.assert_allclose(result["probabilities"], expected["gap"], atol=1e-6)
    assert signatures[0] == "serving_default"


@pytest.mark.slow  # 5 s: three exports
def test_models_config_parses_and_lists_each_model_once(probed, tmp_path):
    kp.export_serving(probed, tmp_path / "probes")
    kp.export_serving(probed, tmp_path / "probes")  # version 2: the entry is updated, not repeated
    kp.export_serving(probed, tmp_path / "heads", heads_only=True, server_root="/models")
    config = text_format.Parse(
        (tmp_path / "models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    entries = {e.name: e for e in config.model_config_list.config}
    assert sorted(entries) == ["heads", "probes"]
    assert entries["probes"].base_path == (tmp_path / "probes").resolve().as_posix()
    assert entries["heads"].base_path == "/models/heads"
    assert all(e.model_platform == "tensorflow" for e in entries.values())
    assert sorted(p.name for p in (tmp_path / "probes").iterdir()) == ["1", "2"]


def test_an_existing_version_is_refused_and_names_the_next_free_one(probed, tmp_path):
    kp.export_serving(probed, tmp_path / "probes", version=3)
    before = (tmp_path / "probes" / "3" / "saved_model.pb").read_bytes()
    with pytest.raises(FileExistsError, match="version 3 .* next free version is 4"):
        kp.export_serving(probed, tmp_path / "probes", version=3)
    assert (tmp_path / "probes" / "3" / "saved_model.pb").read_bytes() == before
    assert export.next_version(tmp_path / "probes") == 4
    with pytest.raises(ValueError, match="`version` must be an integer >= 1"):
        kp.export_serving(probed, tmp_path / "probes", version=0)
    with pytest.raises(ValueError, match="<= 9223372036854775807 .TF Serving's versions are int64"):
        kp.export_serving(probed, tmp_path / "probes", version=2**63)


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
def test_a_failure_mid_export_leaves_no_version_behind(probed, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "_write_warmup", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        kp.export_serving(probed, tmp_path / "probes")
    assert list((tmp_path / "probes").iterdir()) == []  # neither "1" nor a partial directory
    assert not (tmp_path / "models.config").exists()


def names_in(directory):
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.slow  # 8 s in all: exports that fail at publication
@pytest.mark.parametrize(
    "make_bad, error",
    [
        (lambda path: path.mkdir(), IsADirectoryError),
        (lambda path: path.write_text("}{"), ValueError),
    ],
    ids=["directory", "garbage"],
)
def test_a_models_config_that_cannot_be_updated_publishes_no_version(
    probed, tmp_path, make_bad, error
):
    config = tmp_path / "models.config"
    make_bad(config)
    with pytest.raises(error, match=re.escape(str(config))):
        kp.export_serving(probed, tmp_path / "probes")
    assert names_in(tmp_path / "probes") == []  # neither "1" nor a partial directory
    assert export.next_version(tmp_path / "probes") == 1
    (config.rmdir if config.is_dir() else config.unlink)()
    assert kp.export_serving(probed, tmp_path / "probes") == tmp_path / "probes" / "1"
    assert names_in(tmp_path / "probes") == ["1"]


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
@pytest.mark.parametrize("leftover", ["empty", "full"])
def test_a_version_taken_meanwhile_is_refused_and_left_alone(
    probed, tmp_path, monkeypatch, leftover
):
    """Another writer creates version 1 while this export writes it (an empty directory,
    which a plain rename would silently replace, or a full one)."""
    base = tmp_path / "probes"
    write_warmup = export._write_warmup

    def meanwhile(*args, **kwargs):
        write_warmup(*args, **kwargs)
        (base / "1").mkdir()
        if leftover == "full":
            (base / "1" / "saved_model.pb").write_bytes(b"theirs")

    monkeypatch.setattr(export, "_write_warmup", meanwhile)
    with pytest.raises(
        FileExistsError,
        match="version 1 .* taken by another export meanwhile.* next free version is 2",
    ):
        kp.export_serving(probed, base, version=1)
    assert names_in(base) == ["1"]
    assert names_in(base / "1") == ([] if leftover == "empty" else ["saved_model.pb"])
    assert not (tmp_path / "models.config").exists()


@pytest.mark.slow  # 7 s: racing processes
def test_racing_exports_each_publish_their_own_version_or_are_refused(
    probed, tmp_path, monkeypatch
):
    """Two threads write their exports (one after the other: Keras tracing is not meant to be
    concurrent), wait until both are written, then publish at the same time."""
    base = tmp_path / "probes"
    serial, both_written = threading.RLock(), threading.Barrier(2, timeout=300)

    def one_at_a_time(function):
        def wrapped(*args, **kwargs):
            with serial:
                return function(*args, **kwargs)

        return wrapped

    write_warmup = one_at_a_time(export._write_warmup)

    def then_wait(*args, **kwargs):
        write_warmup(*args, **kwargs)
        both_written.wait()

    monkeypatch.setattr(export._Signatures, "archive", one_at_a_time(export._Signatures.archive))
    archive = type(keras.export.ExportArchive())  # the backend's class
    monkeypatch.setattr(archive, "write_out", one_at_a_time(archive.write_out))
    monkeypatch.setattr(export, "_write_warmup", then_wait)

    def race(version):
        results = [None, None]

        def run(i):
            try:
                results[i] = kp.export_serving(probed, base, version=version)
            except Exception as e:  # the test inspects it
                results[i] = e

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    # The same explicit version: one wins, the other is told which version is free.
    results = race(version=1)
    assert sorted(type(r).__name__ for r in results) == ["FileExistsError", "PosixPath"]
    error = next(r for r in results if isinstance(r, Exception))
    assert re.search(
        "version 1 .* taken by another export meanwhile.* next free version is 2", str(error)
    )
    # The next free version: each gets its own.
    assert sorted(p.name for p in race(version=None)) == ["2", "3"]
    assert names_in(base) == ["1", "2", "3"]
    for version in ["1", "2", "3"]:
        assert (base / version / "saved_model.pb").is_file()
    entries = text_format.Parse(
        (tmp_path / "models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    ).model_config_list.config
    assert [e.name for e in entries] == ["probes"]


def test_an_unwritable_directory_is_refused_before_any_work(probed, tmp_path, monkeypatch):
    # Root may write anywhere, so the check is seen through os.access.
    access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda path, mode, **kw: str(path) != str(tmp_path) and access(path, mode, **kw),
    )
    with pytest.raises(PermissionError, match=f"{re.escape(str(tmp_path))} is not writable"):
        kp.export_serving(probed, tmp_path / "serving" / "probes")
    assert names_in(tmp_path) == []
    monkeypatch.undo()
    # A file where a directory should be.
    (tmp_path / "serving").write_text("not a directory")
    with pytest.raises(
        NotADirectoryError, match=f"{re.escape(str(tmp_path / 'serving'))} is a file"
    ):
        kp.export_serving(probed, tmp_path / "serving" / "probes")


def test_a_tensorflow_write_error_becomes_a_one_line_os_error(probed, tmp_path, monkeypatch):
    def denied(self, filepath, **kwargs):
        raise tf.errors.PermissionDeniedError(
            None, None, f"{filepath}/variables; Permission denied\n\tsome TensorFlow frames"
        )

    monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", denied)
    with pytest.raises(PermissionError, match="Permission denied") as caught:
        kp.export_serving(probed, tmp_path / "probes")
    assert "\n" not in str(caught.value)
    assert str(tmp_path / "probes") in str(caught.value)
    assert names_in(tmp_path / "probes") == []


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
def test_signatures_refuse_inputs_of_another_shape(probed, digits, tmp_path):
    """A 29x29 image into a 28x28 model is an error naming both shapes, never wrong rows."""
    served = tf.saved_model.load(str(kp.export_serving(probed, tmp_path / "probes")))
    image = tf.zeros((1, 29, 29, 1))
    expected = r"inputs \[1,29,29,1\] is not compatible with expected shape \[\?,28,28,1\]"
    for name in ["serving_default", "probe_pool1", "probe_gap"]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
            served.signatures[name](inputs=image)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[1,28,28\] is not compatible"):
        served.signatures["probe_gap"](inputs=tf.zeros((1, 28, 28)))  # no channel axis
    heads = tf.saved_model.load(str(kp.export_serving(probed, tmp_path / "heads", heads_only=True)))
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"features \[2,17\] .* expected shape \[\?,16\]"
    ):
        heads.signatures["probe_gap"](features=tf.zeros((2, 17)))
    # The right shape still serves.
    x = digits[2][:2]
    np.testing.assert_allclose(
        served.signatures["probe_gap"](inputs=tf.constant(x))["probabilities"].numpy(),
        probed.predict(x, verbose=0)["gap"],
        atol=1e-6,
    )


def test_regression_probes_export_their_predictions(digits, tmp_path):
    x = digits[2][:16]
    keras.utils.set_random_seed(0)
    probed = kp.RegressionProbedModel(small_convnet(), points=["gap"], targets=["a", "b"])
    probed.get_probe("gap").set_weights([np.ones((16, 2), "float32"), np.array([0.5, -1.0])])
    served = tf.saved_model.load(str(kp.export_serving(probed, tmp_path / "concepts")))
    result = outputs_of(served.signatures["serving_default"], inputs=x)
    np.testing.assert_allclose(
        result["gap_predictions"], probed.predict(x, verbose=0)["gap"], atol=1e-5
    )


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
def test_probes_never_fitted_are_refused_unless_allowed(probed, digits, tmp_path):
    """Heads still at their initial zeros serve uniform probabilities and class 0 for every
    input: refused before any work, naming the points and the fix."""
    fresh = kp.ProbedModel(small_convnet(), points=["pool1", "gap"], num_classes=10)
    base = tmp_path / "probes"
    with pytest.raises(
        kp.solvers.NotFittedError,
        match=r"\['pool1', 'gap'\] are not fitted.*fit_probes.*allow_unfitted=True",
    ) as caught:
        kp.export_serving(fresh, base)
    assert "\n" not in str(caught.value)
    assert not base.exists() and not (tmp_path / "models.config").exists()
    # One head fitted (here set by hand): the other is still named.
    fresh.get_probe("gap").set_weights([np.ones((16, 10), "float32"), np.zeros(10, "float32")])
    with pytest.raises(kp.solvers.NotFittedError, match=r"\['pool1'\] is not fitted"):
        kp.export_serving(fresh, base)
    # Asked for explicitly, it is exported as it is.
    served = tf.saved_model.load(str(kp.export_serving(fresh, base, allow_unfitted=True)))
    result = outputs_of(served.signatures["probe_pool1"], inputs=digits[2][:2])
    np.testing.assert_array_equal(result["probabilities"], np.full((2, 10), 0.1, "float32"))
    # Probes fitted, saved and loaded back from .keras are fitted.
    probed.save(tmp_path / "probed.keras")
    loaded = keras.models.load_model(tmp_path / "probed.keras")
    assert kp.export_serving(loaded, tmp_path / "loaded") == tmp_path / "loaded" / "1"


@pytest.mark.slow  # three exports: several seconds
def test_a_version_with_other_signatures_is_refused_unless_allowed(probed, tmp_path):
    """`export --heads-only` after a full export would move clients to other inputs."""
    base = tmp_path / "probes"
    kp.export_serving(probed, base)
    config = (tmp_path / "models.config").read_text()
    with pytest.raises(
        ValueError,
        match=r"signatures differ from version 1's.*serving_default takes.*"
        r"inputs float32 \[\?,28,28,1\].*allow_new_signatures=True",
    ) as caught:
        kp.export_serving(probed, base, heads_only=True)
    assert "\n" not in str(caught.value)
    assert names_in(base) == ["1"]  # neither "2" nor a partial directory
    assert (tmp_path / "models.config").read_text() == config
    # Asked for explicitly, the new signatures are published.
    assert kp.export_serving(probed, base, heads_only=True, allow_new_signatures=True) == base / "2"
    heads = tf.saved_model.load(str(base / "2")).signatures["serving_default"]
    assert set(heads.structured_input_signature[1]) == {"pool1", "bn2", "gap", "predictions"}
    # The same signatures as the latest version publish as they are.
    assert kp.export_serving(probed, base, heads_only=True) == base / "3"
    with pytest.raises(ValueError, match="differ from version 3's"):
        kp.export_serving(probed, base, version=7)
    assert names_in(base) == ["1", "2", "3"]
