"""The passes after the mean pass of :mod:`bayes_sd._kernels`, per (row, draw): the
percentiles of TTFT, TPOT and E2E, throughput and interactivity, and the summaries' quantiles.

``tails`` is the percentile pass (the tail law of :mod:`bayes_sd.laws` at each draw's load,
with a closed-loop benchmark's opening wave), held equal to ``tails_numpy`` by
``tests/test_model.py::test_fused_kernel_matches_the_numpy_algebra``: 10^5 rows × 100 draws of
nine percentiles in 0.6 s on 2 cores (the (draw, tail, row) level array of the NumPy path alone
takes 720 MB). ``derived`` is throughput per GPU and interactivity from the (noisy) E2E and TPOT
in one pass (``derived_numpy`` its twin: twelve whole-array NumPy operations took 0.25 s of a
predict of that size). ``nan_quantiles`` summarises the planes: column-wise quantiles,
vectorised. Compiled on first use and cached (``NUMBA_CACHE_DIR``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from bayes_sd._kernels import AVAILABLE, _output, numba, prange

WAVE_LEVELS = (0.5, 0.9, 0.99)  # bayes_sd.laws.TAIL_LEVELS


def _tails(level, slope, lab, is_open, rate, conc, n, frac, share, ttft, tpot, lat, out):
    """Percentile planes (9, rows, draws) — ``TAILS`` order, metric-major — from the tail
    law of :mod:`bayes_sd.laws` (``tail_load``, ``tail_log_ratios``, ``wave_log_ratios``):
    ``level`` (draws, 9, labels), ``slope`` (draws, 9), ``lab`` each row's engine label,
    ``frac`` its opening fraction f and ``share`` (2, rows, draws; read only where f > 0) the
    opening wave's share of the mean TTFT and E2E, ``ttft``, ``tpot``, ``lat`` (rows, draws)
    the means;
    the load is the requests in flight per engine at the row's predicted E2E (open loop) or
    its concurrency (closed loop)."""
    rows = lab.shape[0]
    draws = slope.shape[0]
    for j in prange(rows):
        g = lab[j]
        f = frac[j]
        at = np.zeros(3)  # where the wave puts each percentile, as a multiple of its share
        if f > 0.0:
            for u in range(3):
                at[u] = 2.0 * max(0.0, 1.0 - (1.0 - WAVE_LEVELS[u]) / f) / f
        for i in range(draws):
            b = rate[j] * lat[j, i] / n[j] if is_open[j] else conc[j] / n[j]
            if math.isnan(b) or b < 0.0:
                b = 0.0
            load = math.log1p(min(b, 1e4))
            for m in range(3):
                t = 3 * m
                e50 = math.exp(level[i, t, g] + slope[i, t] * load)
                e90 = e50 * math.exp(math.exp(level[i, t + 1, g] + slope[i, t + 1] * load))
                e99 = e90 * math.exp(math.exp(level[i, t + 2, g] + slope[i, t + 2] * load))
                mean = ttft[j, i] if m == 0 else (tpot[j, i] if m == 1 else lat[j, i])
                s = share[m // 2, j, i] if m != 1 and f > 0.0 else 0.0  # the wave's share
                if s > 0.0:
                    out[t, j, i] = mean * ((1.0 - s) * e50 + s * at[0])
                    out[t + 1, j, i] = mean * ((1.0 - s) * e90 + s * at[1])
                    out[t + 2, j, i] = mean * ((1.0 - s) * e99 + s * at[2])
                else:
                    out[t, j, i] = mean * e50
                    out[t + 1, j, i] = mean * e90
                    out[t + 2, j, i] = mean * e99
    return out


def _derived(lat, tpot, is_open, rate, conc, decode, gpus, out):
    """Throughput (output tokens/s per GPU: the open-loop rate, or Little's law's N / E2E in a
    closed loop) and interactivity (1 / TPOT), 0 where E2E or TPOT is not finite (saturated);
    (2, rows, draws) from (rows, draws) planes."""
    rows, draws = lat.shape
    for j in prange(rows):
        per = decode[j] / gpus[j]
        for i in range(draws):
            x = lat[j, i]
            if math.isfinite(x):
                out[0, j, i] = (rate[j] if is_open[j] else conc[j] / x) * per
            else:
                out[0, j, i] = 0.0
            x = tpot[j, i]
            out[1, j, i] = 1.0 / x if math.isfinite(x) else 0.0
    return out


if AVAILABLE:
    with warnings.catch_warnings():  # an unwritable cache folder is not an error
        warnings.simplefilter("ignore")
        _jit = dict(cache=True, nogil=True, parallel=True, error_model="numpy")
        _tails_jit = numba.njit(**_jit)(_tails)
        _derived_jit = numba.njit(**_jit)(_derived)
else:  # pragma: no cover
    _tails_jit = _derived_jit = None


def tails(level, slope, lab, rows: dict, means, shares=None) -> np.ndarray:
    """Percentile planes (9, rows, draws) in ``bayes_sd.laws.TAILS`` order (see
    :func:`_tails`); ``rows``: ``is_open``, ``rate``, ``conc``, ``engines``, ``opening``;
    ``means``: the (draw, row) planes of TTFT, TPOT and E2E (the kernel's transposed planes:
    no copy); ``shares``: the wave's share of TTFT and E2E, (2, row, draw) (None: no wave).
    :func:`tails_numpy` is its oracle and fallback."""
    f64 = lambda x: np.ascontiguousarray(x, dtype=np.float64)  # noqa: E731
    frac = np.asarray(rows["opening"], dtype=float) if shares is not None else np.zeros(len(lab))
    shares = np.zeros((2, 1, 1)) if shares is None else shares
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's cache notices
        return _tails_jit(f64(level), f64(slope), np.ascontiguousarray(lab, dtype=np.int64),
                          np.ascontiguousarray(rows["is_open"]), f64(np.nan_to_num(rows["rate"])),
                          f64(np.nan_to_num(rows["conc"])), f64(rows["engines"]), f64(frac),
                          f64(shares), *(f64(np.asarray(m).T) for m in means),
                          _output((9, len(lab), len(slope))))  # fmt: skip


def tails_numpy(level, slope, lab, rows: dict, means, shares=None) -> np.ndarray:
    """:func:`tails` by :mod:`bayes_sd.laws` in NumPy (the kernel's oracle; the fallback)."""
    from bayes_sd import laws

    load = laws.predicted_load(rows["is_open"], rows["rate"], means[2], rows["conc"],
                               rows["engines"])  # fmt: skip
    out = []
    for m, mean in enumerate(means):
        terms = range(3 * m, 3 * m + 3)
        ratios = laws.tail_log_ratios([level[:, t, lab] for t in terms],
                                      [slope[:, t, None] for t in terms], load)  # fmt: skip
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            if shares is not None and laws.TAIL_METRICS[m] in laws.WAVE_METRICS:
                frac = np.asarray(rows["opening"], dtype=float)
                share = shares[laws.WAVE_METRICS.index(laws.TAIL_METRICS[m])].T
                ratios = laws.wave_log_ratios(ratios, np.where(frac > 0, share, 0.0), frac)
            out += [(mean * np.exp(r)).T for r in ratios]
    return np.stack(out)


def derived(rows: dict, lat, tpot) -> tuple[np.ndarray, np.ndarray]:
    """(draw, row) throughput and interactivity (see :func:`_derived`) from the (draw, row)
    E2E and TPOT planes; ``rows``: ``is_open``, ``rate``, ``conc``, ``decode_len``,
    ``num_gpus``. :func:`derived_numpy` is its oracle and fallback."""
    f64 = lambda x: np.ascontiguousarray(x, dtype=np.float64)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's cache notices
        out = _derived_jit(f64(lat.T), f64(tpot.T), np.ascontiguousarray(rows["is_open"]),
                           f64(np.nan_to_num(rows["rate"])), f64(np.nan_to_num(rows["conc"])),
                           f64(rows["decode_len"]), f64(rows["num_gpus"]),
                           _output((2, *lat.T.shape)))  # fmt: skip
    return out[0].T, out[1].T


def derived_numpy(rows: dict, lat, tpot) -> tuple[np.ndarray, np.ndarray]:
    """:func:`derived` in NumPy (its oracle; the fallback without numba)."""
    load = np.where(rows["is_open"], rows["rate"], rows["conc"])
    with np.errstate(divide="ignore", invalid="ignore"):
        requests = np.where(rows["is_open"], load, load / lat)  # Little's law
        throughput = np.where(np.isfinite(lat), requests * rows["decode_len"] / rows["num_gpus"],
                              0.0)  # fmt: skip
        return throughput, np.where(np.isfinite(tpot), 1.0 / tpot, 0.0)


def nan_quantiles(x: np.ndarray, qs, chunk_bytes: int = 1 << 22) -> list[np.ndarray]:
    """Column-wise quantiles of ``x`` (draws, columns) ignoring NaN, as ``np.nanquantile``
    (linear interpolation) but vectorised: ``np.nanquantile`` loops over columns in Python
    (measured: 54 s of a 58 s predict of 20,000 rows). ``+inf`` draws are kept (saturated).

    Columns are sorted a block at a time in one reused buffer of ``chunk_bytes``: a sorted copy
    of all of ``x`` (10^5 rows × 100 draws: 80 MB per variable) cost more in first-touch page
    faults than in sorting."""
    draws, n_cols = x.shape
    width = max(1, chunk_bytes // (8 * max(draws, 1)))
    buf = np.empty((min(width, n_cols), draws))
    out = [np.empty(n_cols) for _ in qs]
    for c0 in range(0, n_cols, width):
        c1 = min(c0 + width, n_cols)
        b = buf[: c1 - c0]
        b[...] = x[:, c0:c1].T  # (columns, draws): the sort runs over contiguous memory
        b.sort(axis=1)  # NaN sort last
        if np.isnan(b[:, -1]).any():  # draws per column, and where each quantile falls
            n = (~np.isnan(b)).sum(axis=1)
            cols = np.arange(c1 - c0)
        else:  # no NaN in the block (the common case): one position per quantile
            n, cols = draws, slice(None)
        for o, q in zip(out, qs, strict=True):
            pos = q * np.maximum(n - 1, 0)
            i = np.floor(pos).astype(int)
            j = np.minimum(i + 1, np.maximum(n - 1, 0))
            frac = pos - i
            a, bb = b[cols, i], b[cols, j]
            with np.errstate(invalid="ignore"):  # +inf draws: a + (inf - a) · 0 would be NaN
                v = np.where((a == bb) | (frac == 0), a, a + (bb - a) * frac)
            o[c0:c1] = np.where(n > 0, v, np.nan)
    return out
