"""Control baselines for probes (Hewitt & Liang, 2019; Graziani et al., 2019).

A probe's accuracy says how linearly separable a layer makes a task, but also
how much a linear classifier on that many features can fit by itself. Controls
measure the second part: the same probe trained on *shuffled labels* (a task
with the same label distribution and no relation to the input), and the same
probe on a *re-initialised network* of the same architecture
(`kp.flawed.reinitialize`). `ProbeReport.with_selectivity(control, split)`
then gives each probe's accuracy minus its control's.

Example:

```python
report = kp.fit_probes(probed, cache)                  # the real task
control = kp.fit_probes(probed_shuffled, shuffled_cache)
report.with_selectivity(control, "val").table(metrics=["error", "selectivity"])
```
"""

import numpy as np

__all__ = ["shuffled_labels"]


def shuffled_labels(y, seed: int = 0) -> np.ndarray:
    """The labels in a random order: the control task of the same class balance.

    Each example keeps a label drawn (without replacement) from the others',
    so every class keeps its count and no label depends on the input. Fit the
    control probes on the shuffled training labels, and measure them on
    shuffled held-out labels (their accuracy is then about chance for a
    probe that fits nothing beyond the task).

    Args:
        y: integer labels `(n,)`.
        seed: seed of the permutation. Defaults to `0`.

    Returns:
        A permuted copy of `y`.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"`y` must be labels of shape (n,). Received: {y.shape}")
    return y[np.random.default_rng(seed).permutation(len(y))]
