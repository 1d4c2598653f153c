"""Typed access to one record of a result file; every failure names file, record and field."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from bayes_sd.errors import DataError

_MISSING = object()


class Record:
    def __init__(self, obj: Any, file: str, record: str) -> None:
        if not isinstance(obj, dict):
            raise DataError(
                f"expected a JSON object, got {type(obj).__name__}", file=file, record=record
            )
        self.obj, self.file, self.record = obj, file, record

    def error(self, field: str, message: str) -> DataError:
        return DataError(message, file=self.file, record=self.record, field=field)

    def has(self, key: str) -> bool:
        return self.obj.get(key) is not None

    def get(self, path: str, default: Any = _MISSING) -> Any:
        """Value at a dotted path; ``default`` (or an error) when absent."""
        node: Any = self.obj
        for part in path.split("."):
            if not isinstance(node, dict) or node.get(part) is None:
                if default is _MISSING:
                    raise self.error(path, "required field is missing")
                return default
            node = node[part]
        return node

    def num(
        self,
        path: str,
        *,
        required: bool = False,
        low: float | None = None,
        allow_inf: bool = False,
    ) -> float | None:
        value = self.get(path, _MISSING if required else None)
        if value is None:
            return None
        if isinstance(value, str) and allow_inf and value.strip().lower() in ("inf", "infinity"):
            return math.inf
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(path, f"expected a number, got {value!r}")
        x = float(value)
        if math.isnan(x) or (math.isinf(x) and not allow_inf):
            raise self.error(path, f"expected a finite number, got {value!r}")
        if low is not None and x < low:
            raise self.error(path, f"must be >= {low:g}, got {x:g}")
        return x

    def array(self, path: str, *, nested: bool = False) -> np.ndarray | list | None:
        """A list of numbers (or, ``nested``, a list of lists of numbers)."""
        value = self.get(path, None)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.error(path, f"expected a list, got {type(value).__name__}")
        if nested:
            return [self._numbers(path, v) for v in value]
        return self._numbers(path, value)

    def _numbers(self, path: str, values: Any) -> np.ndarray:
        if not isinstance(values, list) or any(
            isinstance(v, bool) or not isinstance(v, int | float) for v in values
        ):
            raise self.error(path, "expected a list of numbers")
        arr = np.asarray(values, dtype=float)
        if not np.all(np.isfinite(arr)):
            raise self.error(path, "the list holds NaN or infinite values")
        return arr


def run_id(file: str, record: str, *values: Any) -> str:
    """A stable id: hash of the file's name, the record and the run's measured numbers."""
    from pathlib import Path

    text = "|".join([Path(file).name, str(record), *(repr(v) for v in values)])
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:12]


def growth(latencies: np.ndarray, order: np.ndarray | None = None, min_n: int = 40) -> float:
    """Mean latency of the last quarter of requests over the first (NaN below ``min_n``)."""
    lat = np.asarray(latencies, dtype=float)
    if order is not None:
        lat = lat[np.argsort(order, kind="stable")]
    if lat.size < min_n:
        return math.nan
    q = lat.size // 4
    first = lat[:q].mean()
    return float(lat[-q:].mean() / first) if first > 0 else math.nan


def backlog_growth(starts: np.ndarray, latencies: np.ndarray, min_n: int = 40) -> float:
    """Share of arrivals that piled up: growth of the requests in system from the middle third
    to the last third of the arrival window, over the requests that arrived in between.

    About 0 for a stable run (the backlog is stationary after warm-up) and ``1 − X/λ`` when the
    server completes ``X`` requests per second against ``λ`` arriving. NaN below ``min_n``.
    """
    starts = np.asarray(starts, dtype=float)
    ends = np.sort(starts + np.asarray(latencies, dtype=float))
    starts = np.sort(starts)
    if starts.size < min_n or starts[-1] <= starts[0]:
        return math.nan
    span = starts[-1] - starts[0]

    def mean_in_system(a: float, b: float) -> float:
        grid = starts[0] + span * np.linspace(a, b, 64)
        n = np.searchsorted(starts, grid, side="right") - np.searchsorted(ends, grid, "right")
        return float(n.mean())

    arrived = starts.size / 3  # arrivals between the centres of the two windows
    return (mean_in_system(2 / 3, 1.0) - mean_in_system(1 / 3, 2 / 3)) / arrived
