"""Many workers, one cache: MultiWorkerMirroredStrategy on 127.0.0.1, as a cluster runs it.

Every worker process runs the same script (`_WORKER`) with its own TF_CONFIG, as
the README tells users to launch them: each extracts its share of the shards into
the shared directory, and L-BFGS all-reduces the workers' loss and gradient sums.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
from conftest import small_convnet
from test_cache import POINTS, REDUCERS, files_of

import keras_probes as kp

_WORKER = """
import json, os, signal, sys
rank, ports, directory, root = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
kill = sys.argv[5] == "kill"
ports = [int(p) for p in ports.split(",") if p]
if len(ports) > 1:
    os.environ["TF_CONFIG"] = json.dumps({{
        "cluster": {{"worker": [f"127.0.0.1:{{p}}" for p in ports]}},
        "task": {{"type": "worker", "index": rank}},
    }})
import tensorflow as tf
strategy = (tf.distribute.MultiWorkerMirroredStrategy() if len(ports) > 1
            else tf.distribute.get_strategy())
import keras, numpy as np
import keras_probes as kp
from keras_probes import _cache_writer, solvers

# Chunks of 150 rows at the widest point (1,352 features): its 600 rows are summed
# in 4 chunks, shared between the workers; the narrow points' fit in one chunk, which
# one worker sums and the others add zeros to.
solvers.CHUNK_BYTES = 4 * 1352 * 150
if kill:  # worker 1 dies (SIGKILL) right after committing its first shard
    write_shard = _cache_writer._Writer._write_shard
    def write_then_die(self, *args):
        write_shard(self, *args)
        os.kill(os.getpid(), signal.SIGKILL)
    _cache_writer._Writer._write_shard = write_then_die if rank == 1 else write_shard
data = np.load(f"{{root}}/data.npz")
probed = kp.ProbedModel(keras.models.load_model(f"{{root}}/base.keras"), points={points!r},
                        num_classes=10, reducers={reducers!r})
with strategy.scope():
    cache = kp.FeatureCache.write(probed, (data["x"], data["y"]), directory, batch_size=50,
                                  shard_size=100, verbose=0)
    solver = kp.solvers.LBFGSProbe(l2=1e-3, tol=1e-6, dtype="float64")
    report = kp.fit_probes(probed, cache, solver=solver, verbose=0)
rows = report.results["train"]
np.save(f"{{directory}}.objectives.{{rank}}.npy", [rows[p]["objective"] for p in probed.points])
print("done", rank, flush=True)
"""


@pytest.fixture(scope="module")
def job(digits, tmp_path_factory):
    """The worker script, its model and its data (600 digits: 6 shards of 100)."""
    root = tmp_path_factory.mktemp("multiworker")
    keras.utils.set_random_seed(0)
    small_convnet().save(root / "base.keras")
    x, y, *_ = digits
    np.savez(root / "data.npz", x=x[:600], y=y[:600])
    (root / "worker.py").write_text(
        textwrap.dedent(_WORKER.format(points=POINTS, reducers=REDUCERS))
    )
    return root


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch(root, directory, workers, kill=False):
    """Starts `workers` processes of the worker script (one plain process for 1)."""
    ports = ",".join(map(str, free_ports(workers))) if workers > 1 else ""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    return [
        subprocess.Popen(
            [sys.executable, str(root / "worker.py"), str(rank), ports, str(directory), str(root)]
            + ["kill" if kill else "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(workers)
    ]


def run(root, directory, workers):
    processes = launch(root, directory, workers)
    for process in processes:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0 and "done" in out, err[-3000:]
    return [np.load(f"{directory}.objectives.{rank}.npy") for rank in range(workers)]


@pytest.fixture(scope="module")
def single(job):
    """The cache and the L-BFGS objectives of one plain process: the reference."""
    directory = job / "single"
    (objectives,) = run(job, directory, 1)
    return files_of(directory), objectives


@pytest.mark.slow
@pytest.mark.numerics
@pytest.mark.parametrize("workers", [2, 3])
def test_workers_write_the_bytes_of_one_process_and_fit_its_optimum(job, single, workers):
    files, objectives = single
    directory = job / f"workers{workers}"
    per_worker = run(job, directory, workers)
    assert files_of(directory) == files  # every shard file and the manifest, byte for byte
    for found in per_worker:
        # The same sums added in another order (float64), which may end L-BFGS an
        # iteration apart at tol=1e-6: the same objective to 1e-6 (2e-9 seen here).
        np.testing.assert_allclose(found, objectives, rtol=1e-6)
        # Every worker holds the all-reduced objective: the same bits on all.
        np.testing.assert_array_equal(found, per_worker[0])


@pytest.mark.slow
def test_a_killed_worker_then_a_rerun_gives_the_bytes_of_one_process(job, single):
    directory = job / "killed"
    processes = launch(job, directory, 2, kill=True)
    processes[1].wait(timeout=600)
    assert processes[1].returncode == -signal.SIGKILL
    time.sleep(1)  # worker 0 goes on with its own shards, then waits for its peer
    processes[0].kill()
    processes[0].communicate()
    record = json.loads((directory / "manifest.json").read_text())["splits"]["train"]
    assert not record["complete"]
    run(job, directory, 2)  # the same command, on every worker
    assert files_of(directory) == single[0]


@pytest.mark.slow
def test_the_cli_under_tf_config_writes_the_cache_of_one_process(mnist, tmp_path):
    """`keras-probes cache` then `fit`, run on two workers each with its own TF_CONFIG, as
    the README says to launch them: the cache of one process; one report, by worker 0."""
    (x, y), _ = mnist.train, mnist.val
    for digit in range(3):
        folder = tmp_path / "train" / f"digit_{digit}"
        folder.mkdir(parents=True)
        for i, image in enumerate(x[y == digit][:40]):
            keras.utils.save_img(folder / f"{i:03d}.png", image[..., None], scale=False)
    keras.utils.set_random_seed(0)
    small_convnet().save(tmp_path / "convnet.keras")

    def command(out, workers):
        ports = free_ports(workers)
        processes = []
        for rank in range(workers):
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
            env.pop("TF_CONFIG", None)
            if workers > 1:
                cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
                env["TF_CONFIG"] = json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": rank}}
                )
            script = (
                "import sys; from keras_probes.cli import main; "
                f"sys.exit(main(['cache', {str(tmp_path / 'convnet.keras')!r}, '--data', "
                f"{str(tmp_path / 'train')!r}, '--out', {str(out)!r}, '--points', 'relu1', "
                "'gap', '--batch-size', '16', '--shard-size', '16', '--quiet']) or "
                f"main(['fit', {str(tmp_path / 'convnet.keras')!r}, '--cache', {str(out)!r}, "
                f"'--report', {str(out) + f'.report{rank}.json'!r}, '--quiet']))"
            )
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", script],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )  # fmt: skip
            )
        for process in processes:
            _, err = process.communicate(timeout=600)
            assert process.returncode == 0, err[-3000:]

    command(tmp_path / "one", 1)
    command(tmp_path / "two", 2)
    assert files_of(tmp_path / "two") == files_of(tmp_path / "one")
    assert (tmp_path / "two.report0.json").exists()
    assert not (tmp_path / "two.report1.json").exists()  # worker 1 writes no output
    one, two = (kp.ProbeReport.from_json(tmp_path / f"{n}.report0.json") for n in ("one", "two"))
    assert one.points == two.points == ["relu1", "gap"]
    for point in one.points:
        # Float32 sums added in another order, stopped at L-BFGS's default tol=1e-4.
        objectives = [r.results["train"][point]["objective"] for r in (one, two)]
        np.testing.assert_allclose(*objectives, rtol=1e-4)
