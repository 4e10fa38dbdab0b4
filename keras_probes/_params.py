"""Declared parameter checks, with one message shape (after scikit-learn's `_param_validation`).

A function or estimator declares what each argument may be; `check` then
refuses anything else with the same sentence everywhere:

    `max_iter` must be an integer >= 1. Received: max_iter=0

Example:

```python
check({"l2": Real(0), "max_iter": Integer(1), "dtype": Options("float32", "float64")},
      l2=l2, max_iter=max_iter, dtype=dtype)
```
"""

import math
import numbers

__all__ = ["Boolean", "Instance", "Integer", "Options", "Real", "check", "refuse"]


class Integer:
    """An integer (not a bool) in `[low, high]`; either bound may be `None`."""

    def __init__(self, low: int | None = None, high: int | None = None, description=None):
        self.low, self.high, self.description = low, high, description

    def accepts(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            return False
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def describe(self) -> str:
        return self.description or "an integer" + _bounds(self.low, self.high, False)


class Real:
    """A finite number (not a bool) `>= low` (`> low` if `open_low`) and `<= high`
    (`< high` if `open_high`)."""

    def __init__(
        self,
        low=None,
        high=None,
        *,
        open_low: bool = False,
        open_high: bool = False,
        description=None,
    ):
        self.low, self.high, self.description = low, high, description
        self.open_low, self.open_high = open_low, open_high

    def accepts(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def describe(self) -> str:
        bounds = _bounds(self.low, self.high, self.open_low, self.open_high)
        return self.description or "a finite number" + bounds


class Options:
    """One of the given values: a string equal to a string option (`np.str_`
    included), anything else of the same type and equal (so `True` is not `1`)."""

    def __init__(self, *values):
        self.values = values

    def accepts(self, value) -> bool:
        return any(_same_kind(value, v) and value == v for v in self.values)

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


class Instance:
    """An instance of one of `types` (a list of callbacks, a model, ...)."""

    def __init__(self, *types: type, description: str):
        self.types, self.description = types, description

    def accepts(self, value) -> bool:
        return isinstance(value, self.types)

    def describe(self) -> str:
        return self.description


class Boolean:
    """`True` or `False`."""

    def accepts(self, value) -> bool:
        return isinstance(value, bool)

    def describe(self) -> str:
        return "True or False"


def _same_kind(value, option) -> bool:
    return isinstance(value, str) and isinstance(option, str) or type(value) is type(option)


def _bounds(low, high, open_low, open_high=False) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if open_low else '>='} {low}")
    if high is not None:
        parts.append(f"{'<' if open_high else '<='} {high}")
    return (" " + " and ".join(parts)) if parts else ""


def refuse(name: str, value, description: str, hint: str = "") -> None:
    """Raises the one `ValueError` shape for a refused argument."""
    hint = f" {hint}" if hint else ""
    raise ValueError(f"`{name}` must be {description}.{hint} Received: {name}={value!r}")


def check(constraints: dict, **values) -> None:
    """Checks every keyword value against its declared constraint(s).

    Args:
        constraints: `{name: constraint or list of constraints}`; a list
            accepts a value that any of its members accepts, and `None` in a
            list accepts `None`.
        **values: the arguments to check, by name.

    Raises:
        ValueError: for the first value no constraint accepts, in the shape
            "`name` must be <description>. Received: name=<value>".
    """
    for name, value in values.items():
        allowed = constraints[name]
        allowed = allowed if isinstance(allowed, list | tuple) else [allowed]
        if value is None and None in allowed:
            continue
        kinds = [c for c in allowed if c is not None]
        if not any(c.accepts(value) for c in kinds):
            description = " or ".join(c.describe() for c in kinds)
            refuse(name, value, description + (" or None" if None in allowed else ""))
