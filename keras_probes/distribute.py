"""Work under whatever `tf.distribute` strategy is active: replicas, and workers.

`strategy_from_tf_config()` is how a script (the reproductions, the command
line) runs on several machines: every worker runs the same script with its own
`TF_CONFIG`, and `workers()` tells each which one it is.

Without a strategy scope, `tf.distribute.get_strategy()` is the default
strategy, one replica, and everything here reduces to a plain call. Two ways
to share work between the replicas of one process: `batchwise` gives each
replica whole batches (for results that must not depend on the replica count,
such as a feature cache's bytes); `summed` cuts a batch into contiguous
replica slices and sums what they return (for sums that are exact however
they are cut, such as the L-BFGS objective).

Under `tf.distribute.MultiWorkerMirroredStrategy` (every worker runs the
same script) the work is shared between workers instead, by the callers:
`workers()` says which share is this process's, `all_sum` adds up what the
workers computed (one collective all-reduce, which also waits for every
worker), and within a worker `batchwise` and `summed` run plainly on its own
device.
"""

import functools
import json
import os

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "agree",
    "all_sum",
    "batchwise",
    "split_batch",
    "strategy_from_tf_config",
    "summed",
    "together",
    "workers",
]


def strategy_from_tf_config() -> tf.distribute.Strategy:
    """`MultiWorkerMirroredStrategy` if `TF_CONFIG` names a cluster of several tasks; the
    default strategy otherwise.

    Call it first, before any other TensorFlow work (as TensorFlow requires of
    that strategy), on every worker; then run the cache writes and fits in its
    scope. Each worker extracts its share of the shards into the shared
    directory and L-BFGS all-reduces the workers' sums.

    Returns:
        The strategy whose `scope()` to run in.

    Raises:
        ValueError: `TF_CONFIG` is not such JSON.

    Example:

    ```python
    # on every worker i of two: TF_CONFIG='{"cluster": {"worker": ["host0:2222",
    #     "host1:2222"]}, "task": {"type": "worker", "index": i}}'
    strategy = kp.distribute.strategy_from_tf_config()
    with strategy.scope():
        cache = kp.FeatureCache.write(probed, data, "/shared/cache", split="train")
        report = kp.fit_probes(probed, cache, solver="lbfgs")
    if kp.distribute.workers(strategy)[0] == 0:
        report.to_json("report.json")   # one worker writes the outputs
    ```
    """
    text = os.environ.get("TF_CONFIG") or "{}"
    try:
        cluster = json.loads(text).get("cluster", {})
        tasks = sum(len(cluster.get(job, [])) for job in ("chief", "worker"))
    except (ValueError, AttributeError, TypeError):
        raise ValueError(
            'TF_CONFIG must be JSON such as {"cluster": {"worker": ["host0:2222", '
            '"host1:2222"]}, "task": {"type": "worker", "index": 0}}. '
            f"Received: TF_CONFIG={text!r}"
        ) from None
    if tasks > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def workers(strategy: tf.distribute.Strategy | None = None) -> tuple[int, int]:
    """`(rank, count)`: this process's place among the workers of a strategy.

    Args:
        strategy: the strategy. Defaults to `None`: the active one (that of
            the enclosing `scope()`).

    Returns:
        `(0, 1)` but under a `MultiWorkerMirroredStrategy` of several
        workers, where the chief (if any) is rank 0 and the workers follow
        in their TF_CONFIG order.
    """
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return 0, 1
    cluster = resolver.cluster_spec().as_dict()
    tasks = [(job, i) for job in ("chief", "worker") for i in range(len(cluster.get(job, [])))]
    if len(tasks) <= 1:
        return 0, 1
    return tasks.index((resolver.task_type, resolver.task_id)), len(tasks)


def all_sum(values: np.ndarray) -> np.ndarray:
    """`values` (float64) summed over the workers; `values` itself with one worker.

    Every worker must call it, the same number of times, with the same shape:
    it is a collective, and so also a barrier. All receive the same sum.
    """
    values = np.asarray(values, np.float64)
    if workers()[1] == 1:
        return values
    strategy = tf.distribute.get_strategy()
    given = []

    def local(context):
        # One replica of this worker contributes `values`, any other zeros.
        first = not given
        given.append(context)
        return tf.constant(values if first else np.zeros_like(values))

    per_replica = strategy.experimental_distribute_values_from_function(local)
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy()


def agree(failure: BaseException | None) -> None:
    """Raises on every worker if any worker failed (`failure` not `None`) before a collective.

    Without it, one worker's error would leave the others waiting forever in
    their next all-reduce.
    """
    failed = all_sum(np.array([failure is not None], np.float64))[0]
    if failure is not None:
        raise failure
    if failed:
        raise RuntimeError(
            f"{int(failed)} other worker(s) failed (their error is in their own output); "
            "this worker stops with them. Fix the cause and rerun the same command on every "
            "worker."
        )


def together(fn):
    """`fn()` on this worker, then waits for the others; raises on all if it failed on any.

    Returns:
        What `fn` returned.
    """
    failure, result = None, None
    try:
        result = fn()
    except Exception as error:  # every worker must learn of it
        failure = error
    agree(failure)
    return result


def _local_strategy():
    """The active strategy if its replicas are all in this process; `None` otherwise."""
    if not tf.distribute.has_strategy() or workers()[1] > 1:
        return None
    return tf.distribute.get_strategy()


def split_batch(strategy, batch):
    """`batch` (nested arrays, leading batch axis) as per-replica contiguous slices."""
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return batch
    size = len(keras.tree.flatten(batch)[0])
    bounds = np.linspace(0, size, replicas + 1).astype(int)

    def slice_for(context):
        i = context.replica_id_in_sync_group
        return keras.tree.map_structure(lambda t: t[bounds[i] : bounds[i + 1]], batch)

    return strategy.experimental_distribute_values_from_function(slice_for)


def batchwise(fn):
    """`fn` over a list of batches, each batch computed whole, in one call of its own.

    Returns a function `batches -> [fn(batch) for batch in batches]`. Under a
    strategy of N replicas, each replica takes one whole batch at a time (N
    at once; a short last group lets the idle replicas repeat a batch, whose
    results are dropped). No batch is ever cut into replica slices: a conv's
    or a matmul's float result depends on the size of the batch it is
    computed in, so this keeps every result the single-device one, whatever
    the number of replicas.
    """
    compiled = tf.function(fn, reduce_retracing=True)
    strategy = _local_strategy()
    if strategy is None:
        return lambda batches: [compiled(batch) for batch in batches]
    replicas = strategy.num_replicas_in_sync

    def run(batches):
        results = []
        for start in range(0, len(batches), replicas):
            group = list(batches[start : start + replicas])
            used = len(group)
            group += group[-1:] * (replicas - used)
            # Distributed values are made and combined eagerly: passed into a
            # tf.function they would lose every replica but the first.
            values = strategy.experimental_distribute_values_from_function(
                lambda context, group=group: group[context.replica_id_in_sync_group]
            )
            outputs = strategy.run(compiled, args=(values,))
            results += list(strategy.experimental_local_results(outputs))[:used]
        return results

    return run


@functools.cache
def _compiled(fn, jit_compile):
    # One tf.function per module-level function: a fit makes many objectives,
    # and retracing for each would cost more than a small fit itself.
    return tf.function(fn, reduce_retracing=True, jit_compile=jit_compile)


def summed(fn, jit_compile: bool = False):
    """`fn(batch, *args)` on every replica's slice of `batch`, summed over the replicas.

    `fn` must be a module-level function (it is compiled once and kept) that
    returns sums over the batch (not means), so that the total is exact
    however the batch is cut. `jit_compile` compiles it with XLA.
    """
    compiled = _compiled(fn, jit_compile)
    strategy = _local_strategy()
    if strategy is None:
        return compiled  # no replicas of this process to cut the batch for

    def run(batch, *args):
        per_replica = strategy.run(compiled, args=(split_batch(strategy, batch), *args))
        return tf.nest.map_structure(
            lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None), per_replica
        )

    return run
