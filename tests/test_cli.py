"""The `keras-probes` command line, end to end on a model file and real-digit image folders."""

import argparse
import re
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import make_report, small_convnet

import keras_probes as kp
from keras_probes import cli
from keras_probes.cli import main


@pytest.fixture(scope="module")
def files(mnist, tmp_path_factory):
    """A saved convnet and train/val folders of real MNIST digits 0, 1, 2 as PNG files."""
    root = tmp_path_factory.mktemp("cli")
    (x, y), (xv, yv) = mnist.train, mnist.val
    for split, images, labels, per_class in (("train", x, y, 40), ("val", xv, yv, 20)):
        for digit in range(3):
            folder = root / split / f"digit_{digit}"
            folder.mkdir(parents=True)
            for i, image in enumerate(images[labels == digit][:per_class]):
                png = tf.io.encode_png(image[..., None])
                tf.io.write_file(str(folder / f"{i:03d}.png"), png)
    keras.utils.set_random_seed(0)
    small_convnet().save(root / "convnet.keras")
    return root


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
def test_cache_then_fit(files, capsys):
    model, cache = str(files / "convnet.keras"), str(files / "cache")
    for split in ("train", "val"):
        status = main(
            ["cache", model, "--data", str(files / split), "--out", cache, "--split", split,
             "--points", "image", "relu1", "gap", "--batch-size", "16", "--quiet"]
        )  # fmt: skip
        assert status == 0
    assert "split 'val', 60 examples, 3 points (image, relu1, gap)" in capsys.readouterr().out
    report_file, saved = files / "report.json", files / "probed.keras"
    status = main(
        ["fit", model, "--cache", cache, "--report", str(report_file), "--save", str(saved),
         "--quiet"]
    )  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    # One table per split (report.table): train's with the gradient norm, then val's.
    assert "grad_norm" in printed.split("split val")[0] and "error" in printed.split("split val")[1]
    report = kp.ProbeReport.from_json(report_file)
    assert report.splits == ["train", "val"] and report.num_classes == 3
    probed = keras.models.load_model(saved)
    assert probed.points == ["image", "relu1", "gap"]
    # The saved probes are the fitted ones: their predictions give the report's errors.
    images, _ = kp.datasets.image_folder(files / "val", (28, 28), color_mode="grayscale")
    x = np.concatenate([batch for batch, _ in images])
    labels = np.repeat(np.arange(3), 20)
    predictions = probed.predict(x, verbose=0)
    for point in probed.points:
        error = np.mean(predictions[point].argmax(1) != labels)
        np.testing.assert_allclose(report.errors("val")[point], error, atol=1e-6)
    assert report.errors("val")["relu1"] < 0.5


def test_tfds_dataset_by_name(files, tmp_path):
    # TFDS' own mock of MNIST: the real loading path, without a download.
    with tfds.testing.mock_data(num_examples=24):
        status = main(
            ["cache", str(files / "convnet.keras"), "--data", "mnist", "--tfds-split",
             "test", "--out", str(tmp_path), "--points", "gap", "--batch-size", "8", "--quiet"]
        )  # fmt: skip
    assert status == 0
    cache = kp.FeatureCache.open(tmp_path)
    assert cache.num_examples("train") == 24 and cache.num_classes == 10


@pytest.mark.parametrize(
    "argv, message",
    [
        (["cache", "{root}/missing.keras", "--data", "{root}/train", "--out", "{root}/c1"],
         "No model file at"),
        (["cache", "{root}/convnet.keras", "--data", "{root}/train", "--out", "{root}/c2",
          "--points", "conv9"], "Unknown probe point 'conv9'"),
        (["cache", "{root}/convnet.keras", "--data", "{root}/train", "--out", "{root}/c3",
          "--preprocess", "tf", "--num-classes", "2"], r"Labels must lie in \[0, num_classes\)"),
        (["fit", "{root}/convnet.keras", "--cache", "{root}/nowhere"], "No feature cache at"),
    ],
)  # fmt: skip
def test_errors_are_one_line(files, capsys, argv, message):
    argv = [a.format(root=files) for a in argv] + ["--quiet"]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"keras-probes {argv[0]}: error: ")
    assert re.search(message, error), error


def test_fit_refuses_a_cache_of_another_model(files, tmp_path, capsys):
    cache = tmp_path / "cache"
    main(["cache", str(files / "convnet.keras"), "--data", str(files / "train"), "--out",
          str(cache), "--points", "gap", "--quiet"])  # fmt: skip
    keras.utils.set_random_seed(1)
    small_convnet().save(tmp_path / "other.keras")
    assert main(["fit", str(tmp_path / "other.keras"), "--cache", str(cache), "--quiet"]) == 2
    assert "written from another model" in capsys.readouterr().err


def test_help_of_the_console_script():
    result = subprocess.run(
        [sys.executable, "-m", "keras_probes.cli", "fit", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    for option in ("--solver", "--l2", "--report", "--save", "--validation"):
        assert option in result.stdout


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
def test_probe_report_plot_export_end_to_end(files, tmp_path, capsys):
    """The whole path of a user: probe a model file on image folders, read the report,
    plot it, export the fitted probes for TF Serving and check what the server would load."""
    out = tmp_path / "run"
    status = main(
        ["probe", str(files / "convnet.keras"), "--data", str(files / "train"), "--val-data",
         str(files / "val"), "--out", str(out), "--points", "relu1", "gap", "--batch-size", "16",
         "--l2", "1e-3", "--quiet"]
    )  # fmt: skip
    assert status == 0, capsys.readouterr().err
    assert "val error" in capsys.readouterr().out
    for name in ("report.json", "report.csv", "errors.png", "probed.keras"):
        assert (out / name).is_file(), name
    report = kp.ProbeReport.from_json(out / "report.json")
    assert report.splits == ["train", "val"] and report.points == ["relu1", "gap"]
    assert kp.ProbeReport.from_csv(out / "report.csv").errors("val") == pytest.approx(
        report.errors("val")
    )

    assert main(["report", str(out / "report.json"), "--splits", "val", "--metrics", "error"]) == 0
    table = capsys.readouterr().out
    assert "val error" in table and "train" not in table.split("\n")[0]
    figure = tmp_path / "plot.png"
    assert main(["plot", str(out / "report.csv"), "--out", str(figure), "--splits", "val"]) == 0
    assert figure.read_bytes()[:4] == b"\x89PNG"

    serving = tmp_path / "serving" / "digits"
    argv = ["export", str(out / "probed.keras"), "--out", str(serving), "--warmup-data",
            str(files / "val"), "--quiet"]  # fmt: skip
    assert main(argv) == 0 and main(argv) == 0  # versions 1 and 2
    assert sorted(p.name for p in serving.iterdir()) == ["1", "2"]
    assert main([*argv, "--version", "1"]) == 2
    assert "next free version is 3" in capsys.readouterr().err
    # Another signature (the heads over features) would break version 2's clients.
    assert main([*argv, "--heads-only"]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "--allow-new-signatures" in error
    assert main([*argv, "--heads-only", "--allow-new-signatures"]) == 0
    assert sorted(p.name for p in serving.iterdir()) == ["1", "2", "3"]
    # Probes never fitted answer class 0 for every input: refused unless asked for.
    fresh = kp.ProbedModel(small_convnet(), points=["gap"], num_classes=3)
    fresh.save(tmp_path / "fresh.keras")
    argv = ["export", str(tmp_path / "fresh.keras"), "--out", str(tmp_path / "fresh"), "--quiet"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "--allow-unfitted" in error
    assert main([*argv, "--allow-unfitted"]) == 0
    served = tf.saved_model.load(str(serving / "2"))
    probed = keras.models.load_model(out / "probed.keras")
    images, _ = kp.datasets.image_folder(files / "val", (28, 28), color_mode="grayscale")
    x = np.concatenate([batch for batch, _ in images])
    outputs = served.signatures["serving_default"](inputs=tf.constant(x))
    expected = probed.predict(x, verbose=0)
    np.testing.assert_allclose(outputs["gap_probabilities"], expected["gap"], atol=1e-6)
    error = np.mean(outputs["relu1_class"].numpy() != np.repeat(np.arange(3), 20))
    assert error == pytest.approx(report.errors("val")["relu1"], abs=1e-6)


def test_probe_a_savedmodel_directory_at_its_outputs(files, tmp_path, capsys):
    keras.utils.set_random_seed(0)
    small_convnet().export(str(tmp_path / "savedmodel"), verbose=False)
    out = tmp_path / "run"
    status = main(
        ["probe", str(tmp_path / "savedmodel"), "--data", str(files / "train"), "--out", str(out),
         "--quiet"]
    )  # fmt: skip
    assert status == 0, capsys.readouterr().err
    report = kp.ProbeReport.from_json(out / "report.json")
    assert report.points == ["image", "output_0"]  # opaque: only its input and outputs
    assert 0 <= report.errors("train")["output_0"] < 2 / 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["report", "{root}/nothing.json"], "No report at"),
        (["export", "{root}/convnet.keras", "--out", "{root}/serving"], "not a ProbedModel"),
        (["probe", "{root}/convnet.keras", "--data", "{root}/nowhere", "--out", "{root}/p"],
         ""),
    ],
)  # fmt: skip
def test_new_commands_fail_in_one_line(files, capsys, argv, message):
    argv = [a.format(root=files) for a in argv]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"keras-probes {argv[0]}: error: ")
    assert message in error[0]


@pytest.mark.parametrize(
    "command, options",
    [
        ("probe", ["--data", "--val-data", "--out", "--points", "--solver", "--l2"]),
        ("report", ["--splits", "--metrics"]),
        ("plot", ["--out", "--metric", "--log"]),
        ("export", ["--out", "--version", "--heads-only", "--warmup-data", "--server-root"]),
    ],
)
def test_help_of_every_new_command(command, options, capsys):
    with pytest.raises(SystemExit) as exit_status:
        main([command, "--help"])
    assert exit_status.value.code == 0
    printed = capsys.readouterr().out
    for option in options:
        assert option in printed


def _one_error_line(capsys, command):
    """The one line a failing command printed on stderr, checked for its shape."""
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"keras-probes {command}: error: "), error
    return error[0]


def test_probe_refuses_val_data_of_other_class_names(files, tmp_path, capsys):
    # Same number of classes, one renamed: its labels would mean another class.
    shutil.copytree(files / "val", tmp_path / "val")
    (tmp_path / "val" / "digit_2").rename(tmp_path / "val" / "digit_two")
    argv = ["probe", str(files / "convnet.keras"), "--data", str(files / "train"), "--val-data",
            str(tmp_path / "val"), "--out", str(tmp_path / "out"), "--points", "gap",
            "--quiet"]  # fmt: skip
    assert main(argv) == 2
    error = _one_error_line(capsys, "probe")
    assert "--data only: ['digit_2']" in error and "--val-data only: ['digit_two']" in error
    assert not (tmp_path / "out" / "cache").exists()  # refused before any extraction


def test_probe_compares_digit_named_folders_by_name(files, tmp_path, capsys):
    # Folders named 0, 1, 2 against 0, 1, 3: the same count, and names that look like
    # indices, but an image folder's classes are its folder names.
    for split, names in (("train", ["0", "1", "2"]), ("val", ["0", "1", "3"])):
        shutil.copytree(files / split, tmp_path / split)
        for folder, name in zip(sorted((tmp_path / split).iterdir()), names, strict=True):
            folder.rename(tmp_path / split / name)
    argv = ["probe", str(files / "convnet.keras"), "--data", str(tmp_path / "train"),
            "--val-data", str(tmp_path / "val"), "--out", str(tmp_path / "out"), "--points",
            "gap", "--quiet"]  # fmt: skip
    assert main(argv) == 2
    error = _one_error_line(capsys, "probe")
    assert "--data only: ['2']" in error and "--val-data only: ['3']" in error


def test_probe_compares_class_counts_with_a_tfds_dataset_without_label_names(
    files, tmp_path, capsys
):
    # TFDS' MNIST labels have no names ("0".."9"): only the counts can be compared.
    argv = ["probe", str(files / "convnet.keras"), "--data", str(files / "train"), "--val-data",
            "mnist", "--out", str(tmp_path / "out"), "--points", "gap", "--quiet"]  # fmt: skip
    with tfds.testing.mock_data(num_examples=4):
        assert main(argv) == 2
    assert "--data has 3 classes and --val-data 10" in _one_error_line(capsys, "probe")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["probe", "m.keras", "--data", "d", "--out", "o", "--l2", "-1"],
         "argument --l2: must be a finite number >= 0. Received: -1"),
        (["probe", "m.keras", "--data", "d", "--out", "o", "--l2", "nan"],
         "argument --l2: must be a finite number >= 0. Received: nan"),
        (["fit", "m.keras", "--cache", "c", "--learning-rate", "-1"],
         "argument --learning-rate: must be a finite number > 0. Received: -1"),
        (["fit", "m.keras", "--cache", "c", "--learning-rate", "0"],
         "argument --learning-rate: must be a finite number > 0. Received: 0"),
        (["fit", "m.keras", "--cache", "c", "--epochs", "0"],
         "argument --epochs: must be an integer >= 1. Received: 0"),
        (["fit", "m.keras", "--cache", "c", "--max-iter", "2.5"],
         "argument --max-iter: must be an integer >= 1. Received: 2.5"),
        (["fit", "m.keras", "--cache", "c", "--patience", "-1"],
         "argument --patience: must be an integer >= 0. Received: -1"),
        (["cache", "m.keras", "--data", "d", "--out", "o", "--batch-size", "0"],
         "argument --batch-size: must be an integer >= 1. Received: 0"),
        (["cache", "m.keras", "--data", "d", "--out", "o", "--shard-size", "-4"],
         "argument --shard-size: must be an integer >= 1. Received: -4"),
        (["cache", "m.keras", "--data", "d", "--out", "o", "--batch-size", "16",
          "--shard-size", "40"], "--shard-size 40 must be a multiple of --batch-size 16"),
        (["cache", "m.keras", "--data", "d", "--out", "o", "--num-classes", "1"],
         "argument --num-classes: must be an integer >= 2. Received: 1"),
        (["export", "m.keras", "--out", "o", "--version", "0"],
         "argument --version: must be an integer >= 1. Received: 0"),
    ],
)  # fmt: skip
def test_numeric_options_are_checked_when_parsed(capsys, argv, message):
    # The model and data do not exist: the option is refused before anything is read.
    assert main(argv) == 2
    assert message in _one_error_line(capsys, argv[0])


def test_fit_probes_refuses_a_non_positive_learning_rate_and_other_settings():
    for setting, message in (
        ({"learning_rate": -1}, "`learning_rate` must be a finite number > 0"),
        ({"epochs": 0}, "`epochs` must be a finite number > 0"),
        ({"batch_size": -8}, "`batch_size` must be a finite number > 0"),
        ({"patience": -1}, "`patience` must be a finite number >= 0"),
        ({"seed": -1}, "`seed` must be a finite number >= 0"),
    ):
        # Refused before the model or the cache is looked at.
        with pytest.raises(ValueError, match=message):
            kp.fit_probes(None, None, solver="rmsprop", **setting)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "{root}/m.keras", "--cache", "{root}/c", "--report", "{root}/nodir/r.json"],
         "argument --report: its directory {root}/nodir does not exist"),
        (["fit", "{root}/m.keras", "--cache", "{root}/c", "--report", "{root}/r.txt"],
         "argument --report: must end in .json or .csv. Received: {root}/r.txt"),
        (["fit", "{root}/m.keras", "--cache", "{root}/c", "--save", "{root}/p.h5"],
         "argument --save: must end in .keras"),
        (["fit", "{root}/m.keras", "--cache", "{root}/c", "--save", "{root}/nodir/p.keras"],
         "argument --save: its directory {root}/nodir does not exist"),
        (["probe", "{root}/m.keras", "--data", "{root}/d", "--out", "{root}/file.txt"],
         "argument --out: {root}/file.txt is a file, not a directory"),
        (["plot", "{root}/r.json", "--out", "{root}/nodir/f.png"],
         "argument --out: its directory {root}/nodir does not exist"),
    ],
)  # fmt: skip
def test_output_paths_are_checked_before_anything_is_read(tmp_path, capsys, argv, message):
    (tmp_path / "file.txt").write_text("x")
    argv = [a.format(root=tmp_path) for a in argv]
    assert main(argv) == 2
    assert message.format(root=tmp_path) in _one_error_line(capsys, argv[0])


def test_a_corrupt_keras_file_is_not_reported_as_missing(files, tmp_path, capsys):
    (tmp_path / "garbage.keras").write_bytes(b"not a zip archive")
    with zipfile.ZipFile(tmp_path / "noconfig.keras", "w") as archive:
        archive.writestr("metadata.json", "{}")
    for name, reason in (("garbage", "not a zip file"), ("noconfig", "no config.json")):
        path = tmp_path / f"{name}.keras"
        assert main(["export", str(path), "--out", str(tmp_path / "serving")]) == 2
        error = _one_error_line(capsys, "export")
        assert f"{path} exists but is not a readable .keras archive" in error, error
        assert reason in error and "not found" not in error.lower(), error


@pytest.mark.parametrize("data", ["nowhere", "./nowhere", "mnistt"])
def test_a_missing_data_folder_is_not_answered_with_the_tfds_catalogue(
    files, tmp_path, capsys, data
):
    argv = ["cache", str(files / "convnet.keras"), "--data", data, "--out", str(tmp_path)]
    assert main(argv) == 2
    error = _one_error_line(capsys, "cache")
    assert f"No image folder at {data}" in error and len(error) < 400, error
    assert ("Close TFDS names: mnist" in error) == (data == "mnistt"), error


@pytest.mark.parametrize(
    "error",
    [
        tf.errors.PermissionDeniedError(None, None, "out/x.npy; Permission denied\n(read-only)"),
        tf.errors.NotFoundError(None, None, "shard gone"),
    ],
)
def test_tensorflow_op_errors_are_one_line(monkeypatch, capsys, error):
    def fail(args):
        raise error

    monkeypatch.setattr(cli, "_report", fail)
    assert main(["report", "r.json"]) == 2
    assert _one_error_line(capsys, "report").endswith(" ".join(error.message.split()))


@pytest.mark.parametrize(
    "options, message",
    [
        (["--epochs", "5"], "--epochs is only used by --solver rmsprop/adam"),
        (["--solver", "lbfgs", "--learning-rate", "0.1"],
         "--learning-rate is only used by --solver rmsprop/adam; it has no effect with "
         "--solver lbfgs"),
        (["--patience", "2"], "--patience is only used by --solver rmsprop/adam"),
        (["--solver", "rmsprop", "--max-iter", "10"],
         "--max-iter is only used by --solver lbfgs; it has no effect with --solver rmsprop"),
        (["--solver", "adam", "--max-iter", "10"], "--max-iter is only used by --solver lbfgs"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["fit", "probe"])
def test_options_of_another_solver_are_refused_when_parsed(capsys, command, options, message):
    # The model and the data do not exist: refused before anything is read.
    inputs = ["--cache", "c"] if command == "fit" else ["--data", "d", "--out", "o"]
    assert main([command, "m.keras", *inputs, *options]) == 2
    assert message in _one_error_line(capsys, command)


def test_fit_passes_only_the_settings_given(files, tmp_path, monkeypatch, capsys):
    cache = str(tmp_path / "cache")
    for split in ("train", "val"):
        main(["cache", str(files / "convnet.keras"), "--data", str(files / split), "--out",
              cache, "--split", split, "--points", "gap", "--quiet"])  # fmt: skip
    calls, fit_probes = [], kp.fit_probes

    def recorded(*args, **kwargs):
        calls.append(kwargs)
        return fit_probes(*args, **kwargs)

    monkeypatch.setattr(kp, "fit_probes", recorded)
    model = str(files / "convnet.keras")
    assert main(["fit", model, "--cache", cache, "--quiet"]) == 0
    assert main(["fit", model, "--cache", cache, "--max-iter", "5", "--quiet"]) == 0
    argv = ["fit", model, "--cache", cache, "--solver", "adam", "--epochs", "2",
            "--learning-rate", "0.01", "--quiet"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    solver_settings = {"max_iter", "tol", "epochs", "patience", "learning_rate", "batch_size"}
    given = [{k: v for k, v in call.items() if k in solver_settings} for call in calls]
    assert given == [{}, {"max_iter": 5}, {"epochs": 2, "learning_rate": 0.01}]
    assert [call["solver"] for call in calls] == ["lbfgs", "lbfgs", "adam"]
    assert all(call["l2"] == 1e-4 for call in calls)


@pytest.fixture(scope="module")
def open_size_mobilenet(tmp_path_factory):
    """A small MobileNet (random weights) whose input leaves its size open, saved."""
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNet(
        alpha=0.25, weights=None, include_top=False, input_shape=(None, None, 3)
    )
    path = tmp_path_factory.mktemp("mobilenet") / "mobilenet.keras"
    base.save(path)
    return path, base


@pytest.mark.slow  # 6 s: four extractions
def test_preprocessing_and_image_size_default_to_the_points_preset(
    files, open_size_mobilenet, tmp_path, capsys
):
    path, base = open_size_mobilenet
    caches = {}
    for name, options in (
        ("preset", []),  # MobileNet's: 224x224, 'tf'
        ("explicit", ["--preprocess", "none", "--image-size", "32", "40"]),
    ):
        caches[name] = tmp_path / name
        argv = ["cache", str(path), "--data", str(files / "val"), "--out", str(caches[name]),
                "--points", "mobilenet", "--num-classes", "3", "--batch-size", "20",
                "--quiet", *options]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
    probed = kp.ProbedModel(base, points="mobilenet", num_classes=3)
    for name, size, preprocess in (("preset", (224, 224), "tf"), ("explicit", (32, 40), "none")):
        images, _ = kp.datasets.images(files / "val", size, 20, preprocess)
        expected = {p: [] for p in probed.points}
        for x, _ in images:
            for point, features in probed.extract_features(x).items():
                expected[point].append(np.asarray(features))
        cached, labels = kp.FeatureCache.open(caches[name]).arrays("train")
        np.testing.assert_array_equal(labels, np.repeat(np.arange(3), 20))
        for point in ("conv1_relu", "conv_pw_13_relu"):
            np.testing.assert_allclose(
                cached[point], np.concatenate(expected[point]), rtol=1e-5, atol=1e-6
            )
    # Without a size and without a family, the open input size cannot be guessed.
    inputs = keras.Input((None, None, 3), name="image")
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="gap")(inputs)).save(
        tmp_path / "open.keras"
    )
    argv = ["cache", str(tmp_path / "open.keras"), "--data", str(files / "val"), "--out",
            str(tmp_path / "none"), "--preprocess", "none", "--num-classes", "3",
            "--quiet"]  # fmt: skip
    assert main(argv) == 2
    error = _one_error_line(capsys, "cache")
    assert "pass --image-size HEIGHT WIDTH to resize the images to" in error, error


def test_an_image_size_that_does_not_fit_the_model_is_one_line(files, tmp_path, capsys):
    argv = ["cache", str(files / "convnet.keras"), "--data", str(files / "val"), "--out",
            str(tmp_path), "--image-size", "32", "32", "--quiet"]  # fmt: skip
    assert main(argv) == 2
    error = _one_error_line(capsys, "cache")
    assert (
        "--image-size must be the model's input size (28, 28). Received: --image-size 32 32"
        in error
    ), error


# -- issue 26: what a careless user found -------------------------------------------


@pytest.fixture(scope="module")
def few_images(files, tmp_path_factory):
    """Two images of each of the three digit classes: the smallest folder to probe."""
    return kp.datasets.balanced_subset(files / "val", 2, tmp_path_factory.mktemp("few") / "d")


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
def test_the_family_found_in_the_model_preprocesses_whatever_the_points(
    few_images, open_size_mobilenet, tmp_path, capsys
):
    # A MobileNet probed at one of its layers, not at a preset: it is still a MobileNet,
    # fed 224x224 images mapped to [-1, 1] ('tf'), never raw pixels 0..255.
    path, base = open_size_mobilenet
    argv = ["cache", str(path), "--data", str(few_images), "--out", str(tmp_path),
            "--points", "conv_pw_13_relu", "--num-classes", "3", "--quiet"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    probed = kp.ProbedModel(base, points=["conv_pw_13_relu"], num_classes=3)
    images, _ = kp.datasets.images(few_images, (224, 224), 6, "tf")
    x, _ = next(iter(images))
    expected = np.asarray(probed.extract_features(x)["conv_pw_13_relu"])
    cached, _ = kp.FeatureCache.open(tmp_path).arrays("train")
    np.testing.assert_allclose(cached["conv_pw_13_relu"], expected, rtol=1e-5, atol=1e-6)


def test_an_rgb_model_of_unknown_family_needs_preprocess(few_images, tmp_path, capsys):
    inputs = keras.Input((28, 28, 3), name="image")
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="gap")(x)).save(
        tmp_path / "rgb.keras"
    )
    argv = ["cache", str(tmp_path / "rgb.keras"), "--data", str(few_images), "--points", "gap",
            "--quiet"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "c1")]) == 2
    error = _one_error_line(capsys, "cache")
    assert "The model's family is unknown" in error and "Pass --preprocess one of 'tf'" in error
    assert "Received: no --preprocess" in error and "preprocess=" not in error, error
    assert not (tmp_path / "c1").exists()  # refused before any extraction
    assert main([*argv, "--out", str(tmp_path / "c2"), "--preprocess", "none"]) == 0


def test_a_corrupt_image_is_named_in_one_line(few_images, files, tmp_path, capsys):
    shutil.copytree(few_images, tmp_path / "data", symlinks=False)
    bad = sorted((tmp_path / "data" / "digit_1").iterdir())[1]
    bad.write_bytes(b"<html>not an image</html>")
    argv = ["cache", str(files / "convnet.keras"), "--data", str(tmp_path / "data"),
            "--out", str(tmp_path / "cache"), "--points", "gap", "--quiet"]  # fmt: skip
    assert main(argv) == 2
    error = _one_error_line(capsys, "cache")
    assert f"error: The image {bad} cannot be read" in error, error


def test_python_code_in_a_model_file_is_loaded_only_with_the_option(few_images, tmp_path, capsys):
    inputs = keras.Input((28, 28, 1), name="image")
    scaled = keras.layers.Lambda(lambda x: x / 255.0, name="scaled")(inputs)
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="gap")(scaled)).save(
        tmp_path / "lambda.keras"
    )
    argv = ["cache", str(tmp_path / "lambda.keras"), "--data", str(few_images), "--points",
            "gap", "--num-classes", "3", "--quiet"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "c1")]) == 2
    error = _one_error_line(capsys, "cache")
    assert "holds Python code" in error and "pass --unsafe-deserialization" in error, error
    assert "safe_mode" not in error, error
    assert main([*argv, "--out", str(tmp_path / "c2"), "--unsafe-deserialization"]) == 0
    features, _ = kp.FeatureCache.open(tmp_path / "c2").arrays("train")
    assert 0 < features["gap"].max() <= 1  # the file's own code ran: pixels scaled


@pytest.mark.parametrize(
    "options, given",
    [(["--points", "relu1"], "--points"), (["--num-classes", "5"], "--num-classes"),
     (["--reducers", "flatten"], "--reducers")],
)  # fmt: skip
def test_options_for_a_plain_model_are_refused_with_a_probed_model(
    files, few_images, tmp_path, capsys, options, given
):
    probed = kp.ProbedModel(keras.models.load_model(files / "convnet.keras"), ["gap"], 3)
    probed.save(tmp_path / "probed.keras")
    for command in ("probe", "cache"):
        argv = [command, str(tmp_path / "probed.keras"), "--data", str(few_images), "--out",
                str(tmp_path / command), *options, "--quiet"]  # fmt: skip
        assert main(argv) == 2
        error = _one_error_line(capsys, command)
        assert "is a saved ProbedModel, with its own points (gap)" in error, error
        assert f"{given} only applies to a plain model" in error, error
        assert not (tmp_path / command / "cache").exists()


def test_plot_needs_a_figure_suffix_and_says_what_it_wrote(tmp_path, capsys):
    make_report().to_json(tmp_path / "r.json")
    assert main(["plot", str(tmp_path / "r.json"), "--out", str(tmp_path / "fig")]) == 2
    error = _one_error_line(capsys, "plot")
    assert "argument --out: must end in .png, .pdf, .svg or another suffix" in error, error
    assert not list(tmp_path.glob("fig*"))
    assert main(["plot", str(tmp_path / "r.json"), "--out", str(tmp_path / "fig.svg")]) == 0
    assert capsys.readouterr().out.strip() == f"figure: {tmp_path / 'fig.svg'}"
    assert (tmp_path / "fig.svg").read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize(
    "command, message, expected",
    [
        ("export", "`version` must be an integer >= 1. Received: version=0",
         "--version must be an integer >= 1. Received: --version 0"),
        ("export", "The next free version is 3: pass version=3, or version=None.",
         "The next free version is 3: pass --version 3, or no --version."),
        ("export", "Received: base_dir='serving/x'", "Received: --out serving/x"),
        ("cache", "Received: image_size=[32, 32]", "Received: --image-size 32 32"),
        ("cache", "pass image_size=(height, width) to resize",
         "pass --image-size HEIGHT WIDTH to resize"),
        ("cache", "Unknown probe point 'conv9'. Received: points=['conv9', 'gap']",
         "Unknown probe point 'conv9'. Received: --points conv9 gap"),
        ("fit", "if you trust the file, pass safe_mode=False.",
         "if you trust the file, pass --unsafe-deserialization."),
        ("fit", "`l2` must be a finite number >= 0. Received: l2=-1.0",
         "--l2 must be a finite number >= 0. Received: --l2 -1.0"),
        ("cache", "Pass the same data, or overwrite=True to rewrite it.",
         "Pass the same data, or --overwrite to rewrite it."),
        ("export", "or pass heads_only=True (--heads-only) to serve the heads",
         "or pass --heads-only to serve the heads"),
        # Words that are no keyword, and the names of other commands' options, stay.
        ("export", "version 2 of 'digits' was exported already",
         "version 2 of 'digits' was exported already"),
        ("export", "Received: l2=-1", "Received: l2=-1"),
    ],
)  # fmt: skip
def test_python_keyword_names_are_spelled_as_options(command, message, expected):
    assert cli._as_options(message, cli._command_parser(command)) == expected


def test_probe_says_which_step_it_is_in(files, few_images, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["probe", str(files / "convnet.keras"), "--data", str(few_images), "--val-data",
            str(few_images), "--out", str(out), "--points", "gap", "--quiet"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr()
    steps = [line for line in printed.out.splitlines() if line.startswith("[")]
    assert steps == [
        f"[1/5] loading the model {files / 'convnet.keras'}",
        f"[2/5] reading the images of --data {few_images} and --val-data {few_images}",
        f"[3/5] extracting the features of 1 point into {out / 'cache'}",
        "[4/5] fitting 1 probe (lbfgs) and evaluating it on train, val",
        f"[5/5] writing report.json, report.csv, errors.png and probed.keras to {out}",
    ], printed.out
    assert printed.err == ""


# -- intervals and paired comparisons (issue 27) --------------------------------------


def _outcomes_of(right, n=200):
    """Outcomes of `n` examples, right where `right(i)` holds."""
    correct = np.array([right(i) for i in range(n)])
    loss = np.where(correct, 0.2, 2.0).astype(np.float32)
    return kp.outcomes.Outcomes(correct, correct, loss)


def _measured_report(path, rights, fingerprint="f" * 16, splits=("test",)):
    """A report file whose held-out splits keep each example's outcome; train has figures
    only. `rights` is `{point: right(i)}`."""
    outcomes = {p: _outcomes_of(right) for p, right in rights.items()}
    rows = {
        p: {"loss": float(o.loss.mean()), "error": float(1 - o.correct.mean()),
            "top5_error": float(1 - o.top5.mean())}
        for p, o in outcomes.items()
    }  # fmt: skip
    results = {"train": {p: {"loss": 0.1, "error": 0.0, "top5_error": 0.0} for p in rights}}
    results.update({split: rows for split in splits})
    report = kp.ProbeReport(
        list(rights), results, num_classes=3, model="convnet",
        outcomes={split: outcomes for split in splits},
        examples={split: kp.outcomes.Examples(fingerprint) for split in splits},
    )  # fmt: skip
    report.to_json(path)
    return report


# conv1 errs on half; block/relu on 60 of them (40 discordant pairs, all one way: a
# difference); dense on 60 others (20 discordant pairs each way: none).
_RIGHTS = {
    "conv1": lambda i: i < 100,
    "block/relu": lambda i: i < 140,
    "dense": lambda i: i < 120 or 140 <= i < 160,
}


def test_report_intervals_prints_each_figure_with_its_interval(tmp_path, capsys):
    report = _measured_report(tmp_path / "r.json", _RIGHTS)
    assert main(["report", str(tmp_path / "r.json"), "--intervals"]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == report.table(intervals=True)
    low, high = report.interval("test", "conv1")
    assert f"0.5000 [{low:.4f}, {high:.4f}]" in printed
    argv = ["report", str(tmp_path / "r.json"), "--intervals", "--level", "0.9", "--splits",
            "test", "--metrics", "error"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == report.table("test", "error", intervals=True, level=0.9)
    assert "(90%, bootstrap)" in printed  # the monotonicity's interval too
    # Without --intervals, the bare table, as before.
    assert main(["report", str(tmp_path / "r.json")]) == 0
    assert "[" not in capsys.readouterr().out


def test_report_intervals_of_combined_runs_print_the_spread(tmp_path, capsys):
    runs = [_measured_report(tmp_path / f"r{i}.json", _RIGHTS) for i in range(2)]
    runs[1].results["test"]["conv1"]["error"] = 0.4
    combined = kp.ProbeReport.combine(runs)
    combined.to_json(tmp_path / "combined.json")
    assert main(["report", str(tmp_path / "combined.json"), "--intervals"]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == combined.table(intervals=True)
    assert f"0.4500 ± {combined.spread('test')['conv1']:.4f}" in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--intervals"], r"r\.json keeps no examples' outcomes on splits \['val', 'test'\], so "
         r"its figures have no intervals: .*Fit the probes again"),
        (["--level", "0.9"], r"--level is the confidence level of the intervals: pass "
         r"--intervals too"),
        (["--intervals", "--level", "95"], r"argument --level: must be a confidence level in "
         r"\(0, 1\)\. Received: 95"),
    ],
)  # fmt: skip
def test_report_intervals_refusals_are_one_line(tmp_path, capsys, argv, message):
    make_report().to_json(tmp_path / "r.json")  # figures only: no outcomes
    assert main(["report", str(tmp_path / "r.json"), *argv]) == 2
    error = _one_error_line(capsys, "report")
    assert re.search(message, error), error


def test_compare_two_points_prints_the_paired_test(tmp_path, capsys):
    report = _measured_report(tmp_path / "r.json", _RIGHTS)
    assert main(["compare", str(tmp_path / "r.json"), "conv1", "block/relu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    comparison = report.compare("test", "conv1", "block/relu")
    assert comparison.significant() and comparison.test == "McNemar exact"
    assert lines == [
        str(comparison),
        "test error: conv1 0.5000, block/relu 0.3000; the difference is significant at the "
        "5% level",
    ]
    # A CSV report keeps the outcomes too: the same test.
    report.to_csv(tmp_path / "r.csv")
    assert main(["compare", str(tmp_path / "r.csv"), "conv1", "block/relu"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == lines
    argv = ["compare", str(tmp_path / "r.json"), "block/relu", "dense", "--metric", "loss",
            "--level", "0.9", "--split", "test"]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    comparison = report.compare("test", "block/relu", "dense", metric="loss", level=0.9)
    assert comparison.test == "paired bootstrap" and not comparison.significant()
    assert lines == [
        str(comparison),
        "test loss: block/relu 0.7400, dense 0.7400; no significant difference at the 10% level",
    ]


def test_compare_regression_probes_on_a_target(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = rng.normal(size=(60, 1))
    outcomes = {
        p: kp.outcomes.RegressionOutcomes(("area",), y, y + noise * rng.normal(size=(60, 1)))
        for p, noise in (("hidden1", 0.2), ("hidden2", 1.0))
    }
    rows = {p: {"loss": 0.0, "area_r2": 0.0, "area_mspe": 0.0} for p in outcomes}
    report = kp.ProbeReport(
        list(outcomes), {"val": rows}, outcomes={"val": outcomes},
        examples={"val": kp.outcomes.Examples("r" * 16)},
    )  # fmt: skip
    report.to_json(tmp_path / "r.json")
    argv = ["compare", str(tmp_path / "r.json"), "hidden1", "hidden2", "--metric", "area_r2"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    comparison = report.compare("val", "hidden1", "hidden2", metric="area_r2")
    assert comparison.significant() and lines[0] == str(comparison)
    assert lines[1].endswith("the difference is significant at the 5% level")


def test_compare_with_a_control_report_of_the_same_examples(tmp_path, capsys):
    report = _measured_report(tmp_path / "r.json", _RIGHTS)
    control = _measured_report(tmp_path / "control.json", {p: lambda i: i < 20 for p in _RIGHTS})
    argv = ["compare", str(tmp_path / "r.json"), "dense", "--other", str(tmp_path / "control.json")]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    comparison = report.compare("test", "dense", other=control)
    assert lines == [
        str(comparison),
        f"test error: dense 0.3000 in {tmp_path / 'r.json'}, 0.9000 in "
        f"{tmp_path / 'control.json'}; the difference is significant at the 5% level",
    ]


def test_compare_adjacent_points_with_holm_adjusted_pvalues(tmp_path, capsys):
    report = _measured_report(tmp_path / "r.json", _RIGHTS)
    assert main(["compare", str(tmp_path / "r.json"), "--adjacent"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    first, second = report.compare_adjacent("test")
    assert first.adjusted_pvalue is not None and "(Holm)" in str(first)
    assert lines == [
        "test error, each point against the next deeper one (Holm's adjustment over 2 pairs):",
        f"{first}: significant",
        f"{second}: not significant",
        "differ at the 5% level: conv1 and block/relu",
    ]
    # Nothing differs: said so.
    _measured_report(tmp_path / "same.json", {p: _RIGHTS["conv1"] for p in _RIGHTS})
    assert main(["compare", str(tmp_path / "same.json"), "--adjacent", "--level", "0.99"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        "no adjacent points differ at the 1% level"
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{r}", "conv1"], r"Name two points \(A B\), one point and --other CONTROL, or "
         r"--adjacent\. Received: conv1"),
        (["{r}"], r"Name two points \(A B\).*Received: nothing"),
        (["{r}", "conv1", "dense", "--other", "{control}"], r"Received: conv1 dense --other"),
        (["{r}", "conv1", "--adjacent"], r"Received: conv1 --adjacent"),
        (["{r}", "conv9", "dense"], r"No point 'conv9' in .*r\.json; it has \['conv1', "
         r"'block/relu', 'dense'\]"),
        (["{r}", "conv1", "dense", "--split", "train"], r"keeps no outcomes for split 'train' "
         r"\(it keeps them for \['test'\]\)"),
        (["{r}", "conv1", "--other", "{elsewhere}"], r"--other was measured on other examples "
         r"of split 'test'.*Measure both on the same data"),
        (["{plain}", "conv1", "dense"], r"plain\.json keeps no examples' outcomes, so .*Fit the "
         r"probes again"),
        (["{two}", "conv1", "dense"], r"two\.json keeps outcomes for splits \['val', 'test'\]: "
         r"pass --split, one of them"),
        (["{r}", "conv1", "dense", "--metric", "accuracy"], r"The outcomes of split 'test' give "
         r"\['loss', 'error', 'top5_error'\], not 'accuracy'\. Received: --metric accuracy"),
        (["{r}", "conv1", "--other", "{tmp}/missing.json"], r"No report at .*missing\.json"),
    ],
)  # fmt: skip
def test_compare_refusals_are_one_line(tmp_path, capsys, argv, message):
    files = {name: tmp_path / f"{name}.json" for name in ("r", "control", "elsewhere", "two")}
    _measured_report(files["r"], _RIGHTS)
    _measured_report(files["control"], _RIGHTS)
    _measured_report(files["elsewhere"], _RIGHTS, fingerprint="e" * 16)
    _measured_report(files["two"], _RIGHTS, splits=("val", "test"))
    make_report().to_json(tmp_path / "plain.json")
    names = {**files, "plain": tmp_path / "plain.json", "tmp": tmp_path}
    assert main(["compare", *[a.format(**names) for a in argv]]) == 2
    error = _one_error_line(capsys, "compare")
    assert re.search(message, error), error


def test_compare_runs_outside_any_distribution_strategy(tmp_path, monkeypatch, capsys):
    # A text command, as `report` and `plot`: it never reaches kp.distribute (which imports
    # TensorFlow), here made unimportable.
    _measured_report(tmp_path / "r.json", _RIGHTS)
    monkeypatch.setitem(sys.modules, "keras_probes.distribute", None)
    monkeypatch.delattr(kp, "distribute")
    assert main(["compare", str(tmp_path / "r.json"), "conv1", "dense"]) == 0
    assert capsys.readouterr().out.startswith("error conv1 - dense: ")


@pytest.mark.slow  # 3 s: a fresh process importing SciPy
def test_compare_imports_no_tensorflow(tmp_path):
    # A text command: it starts at once, as `report` and `plot` do.
    _measured_report(tmp_path / "r.json", _RIGHTS)
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "keras_probes.cli", "compare", "r.json",
         "conv1", "dense"], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("error conv1 - dense: ")
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "keras_probes.report" in imported
    assert not imported & {"tensorflow", "keras", "tensorflow_datasets", "matplotlib"}


def test_fit_chooses_the_penalty_on_the_validation_split_with_l2_auto(files, tmp_path, capsys):
    model, cache = str(files / "convnet.keras"), str(tmp_path / "cache")
    main(["cache", model, "--data", str(files / "train"), "--out", cache, "--points", "gap",
          "--quiet"])  # fmt: skip
    # With no validation split yet, one line naming the fix.
    assert main(["fit", model, "--cache", cache, "--l2", "auto", "--quiet"]) == 2
    error = _one_error_line(capsys, "fit")
    assert "chooses the penalty on a validation split" in error, error
    assert "Write one (FeatureCache.write(..., split='val'))" in error, error
    main(["cache", model, "--data", str(files / "val"), "--out", cache, "--split", "val",
          "--points", "gap", "--quiet"])  # fmt: skip
    report_file = tmp_path / "report.json"
    argv = ["fit", model, "--cache", cache, "--l2", "auto", "--report", str(report_file), "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    chosen = kp.ProbeReport.from_json(report_file).values("train", "l2")
    assert set(chosen) == {"gap"} and chosen["gap"] in kp.solvers.L2S
    # What LBFGSProbeCV chooses on the same cache.
    opened = kp.FeatureCache.open(cache)
    (_, y), (_, y_val) = (opened.arrays(split, points=[]) for split in ("train", "val"))
    alone = kp.solvers.LBFGSProbeCV().fit(
        opened.features("train", "gap"), y, 3, X_val=opened.features("val", "gap"), y_val=y_val
    )
    assert chosen["gap"] == alone.l2_
    # Minibatch solvers take a number.
    assert main(["fit", model, "--cache", cache, "--solver", "adam", "--l2", "auto"]) == 2
    assert "--l2 auto chooses the penalty of --solver lbfgs only" in _one_error_line(capsys, "fit")


# -- tcav -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def concepts(tmp_path_factory):
    """Two concept folders of 28x28 grayscale PNGs: stripes and dots, random phases."""
    root = tmp_path_factory.mktemp("concepts")
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:28, :28]
    for name in ("striped", "dotted"):
        (root / name).mkdir()
        for i in range(8):
            period, phase = rng.integers(3, 6), rng.integers(0, 6)
            if name == "striped":
                image = (rows + phase) % period < period // 2
            else:
                image = ((rows + phase) % period == 0) & ((cols + phase) % period == 0)
            noise = rng.integers(0, 30, (28, 28))
            pixels = np.clip(image * 220 + noise, 0, 255).astype(np.uint8)[..., None]
            tf.io.write_file(str(root / name / f"{i}.png"), tf.io.encode_png(pixels))
    return root


def _tcav_argv(files, concepts, out, *more, concept=("striped", "dotted"), point=("relu1", "gap")):
    """`tcav` on the convnet: concepts of `concepts`, the train digits (in their class
    sub-folders) as the random images, the val digits 1 as class 1."""
    return ["tcav", str(files / "convnet.keras"), "--point", *point,
            *(f for name in concept for f in ("--concept", str(concepts / name))),
            "--random", str(files / "train"), "--class", str(files / "val" / "digit_1"),
            "--target", "1", "--runs", "2", "--l2", "1e-2", "--out", str(out), "--quiet",
            *more]  # fmt: skip


@pytest.mark.slow  # several seconds: the slow tier (CI runs it)
def test_tcav_writes_its_report_table_and_figure(files, concepts, tmp_path, capsys):
    out = tmp_path / "tcav"
    argv = _tcav_argv(files, concepts, out, concept=["striped"], point=["gap"])
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "[1/4] loading the model" in printed and "[4/4] writing" in printed
    assert "images: concept 'striped' 8, random 120, class 1 20" in printed
    report = kp.attribution.TCAVReport.from_json(out / "tcav.json")
    assert [(r.concept, r.point, r.target) for r in report.results] == [("striped", "gap", 1)]
    assert len(report.results[0].scores) == 2 and len(report.results[0].random_scores) == 2
    table = (out / "tcav.txt").read_text()
    assert table == report.table() + "\n" and table in printed
    assert (out / "tcav.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # 8 s: two tcav_report runs of 12 CAVs each
def test_tcav_gives_the_library_numbers_on_the_same_images(files, concepts, tmp_path, capsys):
    out = tmp_path / "tcav"
    assert main(_tcav_argv(files, concepts, out)) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "images: concept 'striped' 8, concept 'dotted' 8, random 120, class 1 20" in printed
    report = kp.attribution.TCAVReport.from_json(out / "tcav.json")
    assert report.concepts == ["striped", "dotted"] and report.points == ["relu1", "gap"]
    assert report.targets == [1] and len(report.results) == 4
    assert all(r.adjusted_pvalue is not None for r in report.results)  # Holm, over all four

    # The same numbers as the library on the same images, read as the model takes them
    # (grayscale, pixels 0..255, in Keras' sorted order; the random folder's sub-folders
    # included).
    def read(folder):
        images = kp.datasets.image_folder(folder, (28, 28), color_mode="grayscale")[0]
        return np.concatenate([x for x, _ in images])

    both = read(concepts)  # dotted, then striped (sorted)
    expected = kp.attribution.tcav_report(
        keras.models.load_model(files / "convnet.keras"),
        ["relu1", "gap"],
        {"striped": both[8:], "dotted": both[:8]},
        read(files / "train"),
        {1: read(files / "val")[20:40]},
        runs=2,
        solver=kp.solvers.LBFGSProbe(l2=1e-2, dtype="float64"),
        verbose=0,
    )
    for found, wanted in zip(report.results, expected.results, strict=True):
        np.testing.assert_array_equal(found.scores, wanted.scores)
        np.testing.assert_array_equal(found.random_scores, wanted.random_scores)
        assert found.pvalue == pytest.approx(wanted.pvalue, nan_ok=True)


@pytest.mark.parametrize(
    "change, message",
    [
        (["--concept", "{tmp}/nowhere"],
         r"argument --concept: no image folder at \S+/nowhere \(it is missing\); pass a folder"),
        (["--concept", "{tmp}/empty"], r"argument --concept: \S+/empty holds no images"),
        (["--random", "{root}/convnet.keras"], "argument --random: no image folder at .* a file"),
        (["--class", "{root}/val/digit_2"], "2 --class folders and 1 --target: give one --target"),
        (["--concept", "{tmp}/other/striped"],
         r"two --concept folders are named 'striped' \(\S+/striped, \S+/other/striped\)"),
        (["--runs", "9"], r"--concept \S+/striped has 8 images; tcav splits it into 9 disjoint "
         r"shares of at least 1 \(9 images\)\. Give more images, or fewer --runs\.$"),
    ],
)  # fmt: skip
def test_tcav_refusals_are_one_line(files, concepts, tmp_path, capsys, change, message):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no image here")
    shutil.copytree(concepts / "striped", tmp_path / "other" / "striped")
    argv = _tcav_argv(files, concepts, tmp_path / "out", concept=["striped"], point=["gap"])
    argv += [a.format(root=files, tmp=tmp_path) for a in change]
    assert main(argv) == 2
    error = _one_error_line(capsys, "tcav")
    assert re.search(message, error), error
    assert not (tmp_path / "out").exists()


def test_tcav_says_which_folder_has_too_few_images_and_reads_class_indices_from_names(
    files, concepts, tmp_path, capsys
):
    # The library's own count, in the options' words: 3 folds choose each vector's penalty
    # (--l2 auto), so 20 random images cannot make 3 x 7 shares of 3.
    for digit in (0, 1):
        shutil.copytree(files / "val" / f"digit_{digit}", tmp_path / f"{digit}_digit")
    argv = ["tcav", str(files / "convnet.keras"), "--point", "gap", "--concept",
            str(concepts / "striped"), "--random", str(tmp_path / "0_digit"), "--class",
            str(tmp_path / "1_digit"), "--runs", "7", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 2
    printed, error = capsys.readouterr()
    assert "class 1 20" in printed  # the index from the folder's name, "1_digit"
    assert error.strip() == (
        f"keras-probes tcav: error: --random {tmp_path / '0_digit'} has 20 images; tcav splits "
        "it into 21 disjoint shares of at least 3 (63 images). Give more images, or fewer --runs."
    )
    # A name that gives no index needs --target.
    argv[argv.index(str(tmp_path / "1_digit"))] = str(files / "val" / "digit_1")
    assert main(argv) == 2
    error = _one_error_line(capsys, "tcav")
    assert "--class " in error and "its name 'digit_1' gives no class index" in error
    assert "pass --target K after each --class DIR" in error


def test_tcav_is_listed_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "tcav" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["tcav", "--help"])
    printed = capsys.readouterr().out
    for option in ("--point", "--concept", "--random", "--class", "--target", "--runs", "--seed",
                   "--reducer", "--l2", "--out", "--preprocess"):  # fmt: skip
        assert option in printed


def test_tcav_class_indices_from_folder_names():
    # A leading number (as ImageNet samples' "340_zebra"), or an Imagenette WordNet id;
    # two folders of one class are refused.
    folders = ["data/340_zebra", "data/n01440764/", "7"]
    args = argparse.Namespace(target=None, classes=folders)
    assert cli._class_indices(args) == {340: folders[0], 0: folders[1], 7: folders[2]}
    with pytest.raises(ValueError, match="are both class 7"):
        cli._class_indices(argparse.Namespace(target=None, classes=["7", "x/7_again"]))
    with pytest.raises(ValueError, match="its name 'zebra340' gives no class index"):
        cli._class_indices(argparse.Namespace(target=None, classes=["zebra340"]))
