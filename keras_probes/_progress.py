"""Keras' progress bar, with integer counters shown as the integers they are."""

import keras

__all__ = ["Progbar"]


class Progbar(keras.utils.Progbar):
    """`keras.utils.Progbar` that shows `counters` as integers, as they were last given.

    Keras averages every value over the updates unless it is one of the
    `stateful_metrics`, and prints every value with four decimals: an
    iteration count would read as a running mean, `iterations: 10.5000`. A
    counter is shown as given in the last update: `iterations: 15`.

    Args:
        target: the total number of steps, as in `keras.utils.Progbar`.
        counters: names of the integer values to show as they are.
        **kwargs: the other arguments of `keras.utils.Progbar`.
    """

    def __init__(self, target: int | None, counters=(), **kwargs):
        stateful = [*(kwargs.pop("stateful_metrics", None) or ()), *counters]
        super().__init__(target, stateful_metrics=stateful, **kwargs)
        self.counters = frozenset(counters)

    def update(self, current, values=None, finalize=None):
        values = [(k, _Count(v) if k in self.counters else v) for k, v in values or ()]
        super().update(current, values, finalize)


class _Count(float):
    """A whole number as Keras' bar handles a value: divided by its count of 1 it
    stays itself, and under the bar's format (`.4f`) it prints without decimals."""

    def __format__(self, spec):
        return str(int(self))

    def __truediv__(self, other):
        return self if other == 1 else float(self) / other
