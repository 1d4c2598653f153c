"""The demand coefficients: names in one order, their levels, phases and covariates.

Every module that loops over, indexes or stores coefficients takes the order from here:

    COEFS = c1p c2p c1v c2v c1s c2s c1d c2d

``1`` = load-independent (s), ``2`` = per request in flight (s); ``p`` prefill, ``v`` one
verification pass (a plain decode step when k = 0), ``s`` the premium of verifying several
tokens over one (paid per cycle only when k > 0), ``d`` one drafting step. The first six are the
target's (a *system* carries them), the last two the drafter's (a *draft system*).

:class:`Coefficients` holds one value (float, array of posterior draws or PyTensor tensor) per
name. It is built by keyword only: the published six-coefficient order (``c1d c2d`` before the
premium) and this one differ, and a positional call would silently swap them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "COEFS",
    "COEF_SLOPE",
    "DRAFT_COEFS",
    "LENGTH_COEFS",
    "LEVEL",
    "NGRAM_PARAMS",
    "REF_DRAFTER_PARAMS",
    "REF_TARGET_PARAMS",
    "SLOPE_COEFS",
    "TARGET_COEFS",
    "Coefficients",
]

COEFS = ("c1p", "c2p", "c1v", "c2v", "c1s", "c2s", "c1d", "c2d")
TARGET_COEFS = COEFS[:6]  # a system's: prefill, verification and its multi-token premium
DRAFT_COEFS = COEFS[6:]  # a draft system's
# level of each coefficient: 0 = load-independent ("1"), 1 = per request in flight ("2")
LEVEL = np.array([0 if c[1] == "1" else 1 for c in COEFS])
# coefficients with a length covariate: log(P/1024) for prefill, log((P + D/2)/1024) for c2v
LENGTH_COEFS = ("c1p", "c2p", "c2v")
# size slopes: the premium (c1s, c2s) is a pass of the target and scales as verification does
SLOPE_COEFS = ("c1p", "c2p", "c1v", "c2v", "c1d", "c2d")
COEF_SLOPE = np.array([SLOPE_COEFS.index(c.replace("s", "v")) for c in COEFS])
# intercepts are at these sizes, near the middle of typical targets and drafters, so that
# intercepts and size slopes are nearly uncorrelated in the posterior (docs/model.md)
REF_TARGET_PARAMS = 4e9
REF_DRAFTER_PARAMS = 0.25e9
NGRAM_PARAMS = 1e6  # drafting by lookup: a "model" of negligible size
REQUIRED = ("c1p", "c2p", "c1v", "c2v", "c1d", "c2d")  # the published six; c1s, c2s default 0


class _Fields(NamedTuple):
    c1p: Any = None
    c2p: Any = None
    c1v: Any = None
    c2v: Any = None
    c1s: Any = 0.0
    c2s: Any = 0.0
    c1d: Any = None
    c2d: Any = None


class Coefficients(_Fields):
    """The demand coefficients of one system or of many (seconds), in :data:`COEFS` order.

    Keyword arguments only; ``c1s`` and ``c2s`` (the multi-token verification premium, bayes_sd's
    extension of the published six) default to 0. Fields may be floats, arrays (e.g. posterior
    draws) or PyTensor tensors. ``Coefficients.from_values(values)`` builds one from values in
    :data:`COEFS` order (e.g. the rows of a (coef, ...) array).
    """

    __slots__ = ()

    def __new__(cls, *args: Any, **values: Any) -> Coefficients:
        if args:
            raise TypeError(
                "Coefficients takes keyword arguments (c1p=..., c2p=..., ...); "
                f"use Coefficients.from_values for values in the order {', '.join(COEFS)}"
            )
        missing = [c for c in REQUIRED if values.get(c) is None]
        if missing:
            raise TypeError(f"Coefficients needs {', '.join(missing)}")
        return super().__new__(cls, **values)

    def __reduce__(self):  # copy and pickle through the keyword constructor
        return (Coefficients.from_values, (tuple(self),))

    @classmethod
    def from_values(cls, values) -> Coefficients:
        """From an iterable of values in :data:`COEFS` order."""
        return cls(**dict(zip(COEFS, values, strict=True)))

    def map(self, fn, *others: Coefficients) -> Coefficients:
        """``fn`` applied coefficient by coefficient (with the same coefficient of ``others``)."""
        return Coefficients.from_values(fn(*vs) for vs in zip(self, *others, strict=True))
