"""Running a function over batches under whatever `tf.distribute` strategy is active.

Without a strategy scope, `tf.distribute.get_strategy()` is the default
strategy, one replica, and everything here reduces to a plain call. Batches
are cut into contiguous slices in replica order, so gathering the replicas'
results restores the batch's own order: a cache written under
`MirroredStrategy` holds the rows the single-device run would write.
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


def gathered(fn):
    """`fn` run on every replica's slice, the results concatenated in batch order."""
    compiled = tf.function(fn, reduce_retracing=True)
    if not tf.distribute.has_strategy():
        return compiled  # no replicas to cut the batch for
    strategy = tf.distribute.get_strategy()

    def run(batch):
        # Distributed values are made and combined eagerly: passed into a
        # tf.function they would lose every replica but the first.
        per_replica = strategy.run(compiled, args=(split_batch(strategy, batch),))
        # Leaf by leaf: `gather` of a nested structure keeps the first replica only.
        return tf.nest.map_structure(lambda v: strategy.gather(v, axis=0), per_replica)

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
