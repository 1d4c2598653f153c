"""NumPy / PyTensor dispatch of the algebra (:mod:`bayes_sd.latency`, :mod:`bayes_sd.laws`).

A function is in PyTensor mode when any argument is a PyTensor variable: it builds a graph and
does no input checks (the model's priors keep values in range). In NumPy mode inputs are
checked and bad values raise ``ValueError``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("pytensor")


class NumpyOps:
    tensor = False
    where = staticmethod(np.where)
    abs = staticmethod(np.abs)
    exp = staticmethod(np.exp)
    expm1 = staticmethod(np.expm1)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)
    log1p = staticmethod(np.log1p)
    log = staticmethod(np.log)

    @staticmethod
    def asarray(x):
        return np.asarray(x, dtype=float)

    @staticmethod
    def cumprod(x, axis):
        return np.cumprod(x, axis=axis)

    @staticmethod
    def sum(x, axis):
        return np.sum(x, axis=axis)

    @staticmethod
    def stack(xs, axis):
        return np.stack(np.broadcast_arrays(*xs), axis=axis)

    @staticmethod
    def zeros_like(x):
        return np.zeros_like(np.asarray(x, dtype=float))


class TensorOps:
    tensor = True

    def __init__(self) -> None:
        import pytensor.tensor as pt

        self.pt = pt
        self.abs = pt.abs
        self.exp = pt.exp
        self.expm1 = pt.expm1
        self.minimum = pt.minimum
        self.maximum = pt.maximum
        self.log1p = pt.log1p
        self.log = pt.log

    def where(self, cond, a, b):
        return self.pt.switch(
            self.pt.as_tensor_variable(np.asarray(cond) if not is_tensor(cond) else cond), a, b
        )

    def convert(self, *xs):
        return [self.pt.as_tensor_variable(x) for x in xs]

    def asarray(self, x):
        return self.pt.as_tensor_variable(x)

    def cumprod(self, x, axis):
        return self.pt.cumprod(x, axis=axis)

    def sum(self, x, axis):
        return self.pt.sum(x, axis=axis)

    def stack(self, xs, axis):
        return self.pt.stack(xs, axis=axis)

    def zeros_like(self, x):
        return self.pt.zeros_like(x)


def ops(*xs: Any) -> NumpyOps | TensorOps:
    """The backend of the arguments: PyTensor if any of them is a tensor."""
    return TensorOps() if any(is_tensor(x) for x in xs) else NumpyOps()


def check(ok: Any, message: str) -> None:
    if not bool(np.all(ok)):
        raise ValueError(message)


def numeric(name: str, x: Any, *, low: float | None = None, high: float | None = None):
    """Float array with a range check (NumPy mode only); NaN passes through unchecked."""
    arr = np.asarray(x, dtype=float)
    # NaN compares False: no masked copy of large posterior-draw arrays is needed
    if low is not None and np.any(arr < low):
        raise ValueError(f"{name} must be >= {low}; got {np.nanmin(arr)}")
    if high is not None and np.any(arr > high):
        raise ValueError(f"{name} must be <= {high}; got {np.nanmax(arr)}")
    return arr
