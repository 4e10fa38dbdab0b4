"""Out of core: L-BFGS streams a cache's memory-mapped shards, with memory bounded by a chunk."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import objective, small_convnet

import keras_probes as kp
from keras_probes import solvers
from keras_probes.cache import ShardedRows

L2 = 1e-3


def test_sharded_rows_slice_as_their_concatenation():
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(n, 3)).astype("float32") for n in (5, 1, 7, 4)]
    rows, whole = ShardedRows(parts), np.concatenate(parts)
    assert rows.shape == (17, 3) and rows.dtype == np.float32 and len(rows) == 17
    for start in range(18):
        for stop in range(start, 19):
            np.testing.assert_array_equal(rows[start:stop], whole[start:stop])
    np.testing.assert_array_equal(rows[-3:], whole[-3:])
    np.testing.assert_array_equal(np.asarray(rows), whole)
    np.testing.assert_array_equal(rows[[0, 16]], whole[[0, 16]])  # anything else: via a copy
    with pytest.raises(ValueError, match="at least one array"):
        ShardedRows([])


@pytest.fixture(scope="module")
def cached(digits, tmp_path_factory):
    """Real features of 1200 MNIST digits in 12 shards of 100."""
    keras.utils.set_random_seed(0)
    probed = kp.ProbedModel(
        small_convnet(), points=["pool1", "gap"], num_classes=10, reducers={"pool1": "flatten"}
    )
    x, y, xt, yt = digits
    directory = tmp_path_factory.mktemp("cache")
    settings = {"batch_size": 50, "shard_size": 100, "verbose": 0}
    kp.FeatureCache.write(probed, (x[:1200], y[:1200]), directory, "train", **settings)
    kp.FeatureCache.write(probed, (xt[:300], yt[:300]), directory, "val", **settings)
    return probed, kp.FeatureCache.open(directory, model=probed)


@pytest.mark.slow  # two L-BFGS fits to tol 1e-10 per case
@pytest.mark.numerics
@pytest.mark.parametrize("standardize", [False, True])
def test_streamed_lbfgs_equals_in_memory(cached, monkeypatch, standardize):
    """The same optimum whether the features are held in memory or read a chunk at a time
    from the shards (chunks of 250 rows, which straddle the 100-row shards)."""
    probed, cache = cached
    for point in probed.points:
        rows = cache.features("train", point)
        assert isinstance(rows, ShardedRows) and len(rows.parts) == 12
        labels = cache.arrays("train", points=[])[1]
        probe = solvers.LBFGSProbe(l2=L2, tol=1e-6, dtype="float64", standardize=standardize)
        held = probe.clone().fit(np.asarray(rows), labels, 10)
        with monkeypatch.context() as patch:
            patch.setattr(solvers, "HELD_BYTES", 0)
            patch.setattr(solvers, "CHUNK_BYTES", 250 * 4 * rows.shape[1])
            streamed = probe.clone().fit(rows, labels, 10)
        # Another summation order only: the same objective to 1e-6 relative (float64 sums).
        np.testing.assert_allclose(streamed.loss_, held.loss_, rtol=1e-6)
        reference = objective(np.asarray(rows), labels, held.coef_, held.intercept_, L2)
        if not standardize:  # standardised, the objective is that of the rescaled features
            np.testing.assert_allclose(held.loss_, reference, rtol=1e-9)
        np.testing.assert_allclose(
            streamed.predict_proba(rows), held.predict_proba(rows), atol=1e-4
        )
        assert streamed.converged_ and held.converged_


@pytest.mark.slow  # fits every probe of a cache twice
def test_fit_probes_reads_the_cache_through_sharded_rows(cached, monkeypatch):
    """`kp.fit_probes` hands L-BFGS the memory-mapped shards, never a loaded copy."""
    probed, cache = cached
    given = []
    fit = solvers.LBFGSProbe.fit
    monkeypatch.setattr(
        solvers.LBFGSProbe, "fit", lambda self, X, *a, **k: given.append(X) or fit(self, X, *a, **k)
    )
    report = kp.fit_probes(probed, cache, solver="lbfgs", l2=L2, verbose=0)
    assert [type(x) for x in given] == [ShardedRows] * len(probed.points)
    assert all(isinstance(part, np.memmap) for x in given for part in x.parts)
    assert set(report.splits) == {"train", "val"}


_MEMORY = """
import sys, threading, time
import numpy as np
from keras_probes import solvers
from keras_probes.cache import ShardedRows

def anon_mib():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024

directory, n, d, shards = sys.argv[1], *map(int, sys.argv[2:5])
rows = n // shards
parts = [np.load(f"{{directory}}/shard-{{i}}.npy", mmap_mode="r") for i in range(shards)]
features = ShardedRows(parts)
labels = np.load(f"{{directory}}/labels.npy")
# A small fit first: TensorFlow's own one-time allocations are not the fit's.
solvers.LBFGSProbe(max_iter=2).fit(np.asarray(parts[0][:1000]), labels[:1000], 10)
before, peak, running = anon_mib(), [0.0], True

def sample():
    while running:
        peak[0] = max(peak[0], anon_mib())
        time.sleep(0.005)

sampler = threading.Thread(target=sample)
sampler.start()
probe = solvers.LBFGSProbe(max_iter={max_iter}).fit(features, labels, 10)
running = False
sampler.join()
print("GROWTH", peak[0] - before, probe.n_iter_)
"""


@pytest.mark.slow
def test_memory_of_a_streamed_fit_is_bounded_by_a_chunk(tmp_path):
    """160,000 x 1,024 float32 features (625 MiB; at half that size, 312 MiB, a fit grew
    by 1,959 MiB before streaming) in 16 memory-mapped shards: the fit's anonymous memory
    grows by a few 32 MiB chunks (the rows read, their tensor, a transposed copy in the
    matmul) and the weights, not by the cache. (185 MiB seen here.)"""
    n, d, shards = 160_000, 1024, 16
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n).astype("int32")
    np.save(tmp_path / "labels.npy", labels)
    means = rng.normal(size=(10, d)).astype("float32")
    for i in range(shards):
        block = np.lib.format.open_memmap(
            tmp_path / f"shard-{i}.npy", mode="w+", dtype="float32", shape=(n // shards, d)
        )
        rows = slice(i * (n // shards), (i + 1) * (n // shards))
        block[:] = means[labels[rows]] + rng.normal(size=block.shape).astype("float32")
        block.flush()
        del block
    script = tmp_path / "fit.py"
    script.write_text(textwrap.dedent(_MEMORY.format(max_iter=3)))
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(n), str(d), str(shards)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    growth = float(result.stdout.split("GROWTH")[1].split()[0])
    cache_mib = n * d * 4 / 2**20
    assert growth < 0.4 * cache_mib, (growth, cache_mib)


@pytest.mark.numerics
def test_streamed_ridge_equals_in_memory(cached, monkeypatch):
    """Ridge with leave-one-out penalties, streamed in chunks of 250 rows across the shards,
    against the same fit held in memory; the caller's features are left as they were."""
    probed, cache = cached
    rows = cache.features("train", "gap")  # 16 features: the primal form, which streams
    targets = np.random.default_rng(0).normal(size=(len(rows), 2)) + np.asarray(rows)[:, :2]
    whole = np.asarray(rows, np.float64)
    kept = whole.copy()
    probe = kp.regression.RidgeProbe(alpha=[0.01, 1.0, 100.0])
    held = probe.clone().fit(whole, targets)
    np.testing.assert_array_equal(whole, kept)
    with monkeypatch.context() as patch:
        patch.setattr(solvers, "CHUNK_BYTES", 250 * 8 * rows.shape[1])
        streamed = probe.clone().fit(rows, targets)
    np.testing.assert_array_equal(streamed.alpha_, held.alpha_)
    np.testing.assert_allclose(streamed.coef_, held.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(streamed.intercept_, held.intercept_, rtol=1e-9, atol=1e-12)
