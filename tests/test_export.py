"""TensorFlow Serving export: invariant 4 for every signature, warm-up requests,
models.config, versions never overwritten, no half-written version."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import small_convnet, trained_convnet
from google.protobuf import text_format
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

import keras_probes as kp
from keras_probes import export

POINTS = ["pool1", "bn2", "gap", "predictions"]


@pytest.fixture(scope="module")
def probed(digits):
    """Probes fitted for real on a convnet trained for an epoch on real digits."""
    x, y, _, _ = digits
    probed = kp.ProbedModel(trained_convnet(x, y), points=POINTS, num_classes=10)
    probed.compile(keras.optimizers.Adam(1e-2))
    probed.fit(x[:512], y[:512], epochs=2, batch_size=64, verbose=0)
    return probed


def outputs_of(signature, **inputs):
    return {
        k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in inputs.items()}).items()
    }


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


def test_a_failure_mid_export_leaves_no_version_behind(probed, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "_write_warmup", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        kp.export_serving(probed, tmp_path / "probes")
    assert list((tmp_path / "probes").iterdir()) == []  # neither "1" nor a partial directory
    assert not (tmp_path / "models.config").exists()


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
