"""The ImageNet reproductions (ResNet-50, Sec. 4.1; Inception v3, Sec. 4.2) run end to end at
`--quick` scale, re-use their feature cache, and stop with one clear line when the weights
can be neither found nor downloaded."""

import importlib.util
import sys

import keras
import pytest
from conftest import ROOT, run_reproduction

import keras_probes as kp

pytestmark = pytest.mark.slow

RESULT_KEYS = {
    "model",
    "weights",
    "data_source",
    "num_train",
    "num_val",
    "num_classes",
    "points",
    "val_error",
    "train_error",
    "pretrained_val_error",
    "monotonicity",
    "l2",
    "feature_sizes",
    "grad_norm",
    "level",
    "val_error_interval",
    "val_top5_error_interval",
    "val_loss_interval",
    "monotonicity_interval",
    "adjacent",
    "adjacent_significant",
    "pretrained_val_error_interval",
    "last_probe_vs_pretrained",
}
COMPARISON_KEYS = {"a", "b", "difference", "low", "high", "pvalue", "test", "significant"}


def check_common(results, num_points):
    assert set(results) >= RESULT_KEYS, RESULT_KEYS - set(results)
    assert len(results["points"]) == num_points
    for key in ("val_error", "train_error", "grad_norm", "feature_sizes"):
        assert list(results[key]) == results["points"], key
    for key in ("val_error", "train_error"):
        assert all(0.0 <= e <= 1.0 for e in results[key].values()), results[key]
    assert -1.0 <= results["monotonicity"] <= 1.0
    # Every held-out figure with its 95% interval, from the val images' outcomes.
    assert results["level"] == 0.95
    for key in ("val_error", "val_top5_error", "val_loss"):
        assert list(results[f"{key}_interval"]) == results["points"], key
        for point, (low, high) in results[f"{key}_interval"].items():
            assert low <= results[key][point] <= high, (key, point, low, high)
    low, high = results["monotonicity_interval"]
    assert -1.0 <= low <= high <= 1.0
    # Each point against the next deeper one, McNemar with Holm's adjustment.
    adjacent = results["adjacent"]
    assert [(c["a"], c["b"]) for c in adjacent] == list(
        zip(results["points"], results["points"][1:], strict=False)
    )
    for comparison in adjacent:
        assert set(comparison) >= COMPARISON_KEYS | {"holm_pvalue"}
        assert comparison["pvalue"] <= comparison["holm_pvalue"] <= 1.0
        assert comparison["significant"] == (comparison["holm_pvalue"] < 0.05)
    assert results["adjacent_significant"] == sum(c["significant"] for c in adjacent)
    # 4 train and 2 val images of each of the 10 Imagenette classes.
    assert (results["num_train"], results["num_val"], results["num_classes"]) == (40, 20, 10)
    # The penalty chosen per point on folds of train (val is what the errors are reported on).
    assert results["l2"] == "auto"
    assert list(results["l2_chosen"]) == results["points"]
    grid = {float(l2) for l2 in kp.solvers.L2S}
    assert all(l2 in grid for l2 in results["l2_chosen"].values()), results["l2_chosen"]
    # The L-BFGS certificate: every probe ended near its optimum.
    assert all(g < 1e-2 for g in results["grad_norm"].values()), results["grad_norm"]


def test_resnet50_random_weights_end_to_end(tmp_path):
    payload, stdout = run_reproduction(
        "resnet50", tmp_path / "out", "--weights", "none", "--cache", tmp_path / "cache"
    )
    results = payload["results"]
    check_common(results, 17)
    assert results["model"] == "ResNet-50" and results["weights"] == "none"
    assert results["model_call"] == "keras.applications.ResNet50(weights=None)"
    assert not results["stands_in_for_paper_model"]
    assert results["points"][0] == "conv1_relu" and results["points"][-1] == "conv5_block3_out"
    # Average pooling: one feature per channel.
    widths = {"conv1": 64, "conv2": 256, "conv3": 512, "conv4": 1024, "conv5": 2048}
    assert results["feature_sizes"] == {p: widths[p[:5]] for p in results["points"]}
    assert results["pretrained_val_error"] is None  # no weights, no reference
    assert results["pretrained_val_error_interval"] is None
    assert results["last_probe_vs_pretrained"] is None
    assert "Imagenette" in results["data_source"]
    assert [row["paper"] for row in payload["paper_vs_ours"]][:2] == ["almost 1", "0.41, 0.39"]
    rows = {row["quantity"]: row["ours"] for row in payload["paper_vs_ours"]}
    # Our figures with their 95% intervals, and whether the last two probes differ (the
    # difference with its interval too).
    assert rows["monotonicity of val error with depth (-Kendall tau)"].count("[") == 1, rows
    assert rows["val error of the last two probes"].count("[") == 3, rows
    assert "McNemar" in rows["val error of the last two probes"], rows
    assert "conv5_block3_out" in stdout and "ResNet-50, random weights" in stdout
    # The report beside it keeps each val image's outcome: the same intervals from it alone.
    report = kp.ProbeReport.from_json(tmp_path / "out" / "resnet50_report.json")
    for point, bounds in results["val_error_interval"].items():
        assert report.interval("val", point) == pytest.approx(bounds, abs=2e-6)
    cache = kp.FeatureCache.open(tmp_path / "cache")
    assert cache.complete_splits == ["train", "val"] and cache.points == results["points"]


def test_inception_v3_random_weights_end_to_end(tmp_path):
    payload, _ = run_reproduction(
        "inception_v3", tmp_path / "out", "--weights", "none", "--cache", tmp_path / "cache"
    )
    results = payload["results"]
    check_common(results, 11)
    assert results["model"] == "Inception v3" and results["image_size"] == [299, 299]
    assert results["points"] == [f"mixed{i}" for i in range(11)]
    assert set(results["feature_sizes"].values()) == {1000}  # RandomSubset(1000)
    assert results["pretrained_val_error"] is None


def test_inception_v3_on_pretrained_mobilenet_and_cache_reuse(tmp_path):
    args = ("--model", "mobilenet", "--cache", tmp_path / "cache")
    payload, stdout = run_reproduction("inception_v3", tmp_path / "out", *args)
    results = payload["results"]
    check_common(results, 14)
    assert results["model"] == "MobileNet (alpha 0.75)" and results["weights"] == "imagenet"
    assert results["stands_in_for_paper_model"] and results["paper_model"] == "Inception v3"
    assert "standing in for Inception v3" in stdout
    # RandomSubset(1000): 1000 of each point's (far more) features.
    assert set(results["feature_sizes"].values()) == {1000}
    for shape in results["point_shapes"].values():
        assert shape[0] * shape[1] * shape[2] > 1000
    # Real pretrained ImageNet weights: the network's own classifier is nearly
    # always right among the 10 classes, and the deepest probe beats the stem's.
    assert 0.0 <= results["pretrained_val_error"] <= 0.2
    low, high = results["pretrained_val_error_interval"]
    assert low <= results["pretrained_val_error"] <= high
    # The last probe against the pretrained head, paired on the same val images.
    paired = results["last_probe_vs_pretrained"]
    assert set(paired) >= COMPARISON_KEYS and paired["test"] == "McNemar exact"
    assert paired["a"] == results["points"][-1] and paired["b"] == "pretrained classifier"
    difference = results["val_error"][results["points"][-1]] - results["pretrained_val_error"]
    assert paired["difference"] == pytest.approx(difference, abs=1e-6)
    assert paired["low"] <= paired["difference"] <= paired["high"]
    # The paper-vs-ours rows carry their intervals.
    rows = {row["quantity"]: row["ours"] for row in payload["paper_vs_ours"]}
    assert "[" in rows["val error of the last probe"], rows
    assert "McNemar" in rows["last probe minus main head's error"], rows
    errors = list(results["val_error"].values())
    assert errors[-1] < errors[0]
    assert any("MobileNet" in note and "Inception v3" in note for note in payload["notes"])

    # A second run re-uses the cache: same shards (not rewritten), same results.
    shards = sorted((tmp_path / "cache").rglob("shard-*.npy"))
    stamps = [p.stat().st_mtime_ns for p in shards]
    again, _ = run_reproduction("inception_v3", tmp_path / "again", *args)
    assert [p.stat().st_mtime_ns for p in shards] == stamps
    assert again["results"]["val_error"] == results["val_error"]


def load_script(name):
    """The reproduction script as a module, in this process (its main is not run)."""
    sys.path.insert(0, str(ROOT / "reproductions"))
    spec = importlib.util.spec_from_file_location(
        f"reproduction_{name}", ROOT / "reproductions" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name, weight_file",
    [
        ("resnet50", "resnet50_weights_tf_dim_ordering_tf_kernels.h5"),
        ("inception_v3", "inception_v3_weights_tf_dim_ordering_tf_kernels.h5"),
    ],
)
def test_missing_weights_offline_give_one_line_and_exit_2(
    name, weight_file, tmp_path, monkeypatch, capsys
):
    script = load_script(name)
    requested = []

    def offline_get_file(fname=None, origin=None, **kwargs):
        # What keras.utils.get_file raises when it cannot download.
        requested.append(fname)
        raise Exception(
            f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known"
        )

    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", offline_get_file)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))  # a cache without the file
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        script.main(["--out", str(out), "--cache", str(tmp_path / "cache")])
    assert stop.value.code == 2
    assert requested == [weight_file]  # the real keras.applications call asked for it
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert weight_file in lines[0]
    assert str((tmp_path / "keras_home" / "models").resolve()) in lines[0]
    assert f"python reproductions/{name}.py --model mobilenet" in lines[0]
    assert not out.exists() and not (tmp_path / "cache").exists()  # nothing else ran
