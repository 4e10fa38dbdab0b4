"""Running a function over batches under whatever `tf.distribute` strategy is active.

Without a strategy scope, `tf.distribute.get_strategy()` is the default
strategy, one replica, and everything here reduces to a plain call. Two ways
to share work: `batchwise` gives each replica whole batches (for results that
must not depend on the replica count, such as a feature cache's bytes);
`summed` cuts a batch into contiguous replica slices and sums what they
return (for sums that are exact however they are cut, such as the L-BFGS
objective).
"""

import functools

import keras
import numpy as np
import tensorflow as tf


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
    if not tf.distribute.has_strategy():
        return lambda batches: [compiled(batch) for batch in batches]
    strategy = tf.distribute.get_strategy()
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
    if not tf.distribute.has_strategy():
        return compiled  # no replicas to cut the batch for
    strategy = tf.distribute.get_strategy()

    def run(batch, *args):
        per_replica = strategy.run(compiled, args=(split_batch(strategy, batch), *args))
        return tf.nest.map_structure(
            lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None), per_replica
        )

    return run
