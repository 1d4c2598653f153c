"""The passes after the mean pass of :mod:`bayes_sd._kernels`, per (row, draw): the
percentiles of TTFT, TPOT and E2E, throughput and interactivity, and the summaries' quantiles.

``tails`` is the percentile pass: the tail law of :mod:`bayes_sd.laws` itself (no second copy)
at each draw's load, with a closed-loop benchmark's opening wave, in NumPy a block of rows at a
time on every core: 10^5 rows × 100 draws of nine percentiles in 0.28 s on 2 cores, where a
numba loop over (row, draw) took 0.47 s (its scalar ``exp``, 5 ns, against NumPy's SIMD one,
1 ns) and the whole-array NumPy algebra 720 MB for its (draw, tail, row) levels alone.
``derived`` is throughput per GPU and interactivity from the (noisy) E2E and TPOT in one numba
pass (``derived_numpy`` its twin: twelve whole-array NumPy operations took 0.25 s of a predict
of that size). ``nan_quantiles`` summarises the planes: column-wise quantiles, vectorised.
Compiled on first use and cached (``NUMBA_CACHE_DIR``)."""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bayes_sd._kernels import AVAILABLE, _output, numba, prange


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
        _derived_jit = numba.njit(**_jit)(_derived)
else:  # pragma: no cover
    _derived_jit = None


def tails(level, slope, lab, rows: dict, means, shares=None, block_rows: int = 1024) -> np.ndarray:
    """Percentile planes (9, rows, draws) in ``bayes_sd.laws.TAILS`` order: the tail law of
    :mod:`bayes_sd.laws` (``predicted_load``, ``tail_log_ratios``, ``wave_log_ratios``) in
    NumPy, a block of ``block_rows`` rows at a time, the blocks spread over the CPU's cores
    (NumPy's ufuncs release the GIL; its SIMD ``exp`` is ~5× the scalar one a numba loop
    calls). ``level`` (draws, 9, labels), ``slope`` (draws, 9), ``lab`` each row's engine
    label; ``rows``: ``is_open``, ``rate``, ``conc``, ``engines``, ``opening`` (the run's
    opening fraction f); ``means``: the (draw, row) planes of TTFT, TPOT and E2E;
    ``shares``: the opening wave's share of the mean TTFT and E2E, (2, row, draw), read
    where f > 0 (None: no wave). The load is the requests in flight per engine at the row's
    predicted E2E (open loop) or its concurrency (closed loop)."""
    from bayes_sd import laws

    n, draws = len(lab), np.shape(slope)[0]
    out = _output((9, n, draws))
    per_row = [np.asarray(m).T for m in means]  # (row, draw): the kernel's own layout
    level = np.ascontiguousarray(np.transpose(level, (1, 2, 0)))  # (tail, label, draw)
    slope = np.ascontiguousarray(np.transpose(slope))  # (tail, draw)
    lab = np.asarray(lab)
    col = lambda name: np.asarray(rows[name], dtype=float)[:, None]  # noqa: E731
    is_open, rate, conc, engines = (np.asarray(rows["is_open"])[:, None], col("rate"),
                                    col("conc"), col("engines"))  # fmt: skip
    frac = col("opening") if shares is not None else np.zeros((n, 1))

    def block(start: int) -> None:
        s = slice(start, min(start + block_rows, n))
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            load = laws.predicted_load(is_open[s], rate[s], per_row[2][s], conc[s], engines[s])
            wave = frac[s, 0] > 0
            for m, metric in enumerate(laws.TAIL_METRICS):
                terms = range(3 * m, 3 * m + 3)
                ratios = laws.tail_log_ratios([level[t][lab[s]] for t in terms],
                                              [slope[t] for t in terms], load)  # fmt: skip
                if wave.any() and metric in laws.WAVE_METRICS:
                    share = shares[laws.WAVE_METRICS.index(metric)][s][wave]
                    mixed = laws.wave_log_ratios([r[wave] for r in ratios], share, frac[s][wave])
                    for r, r_wave in zip(ratios, mixed, strict=True):
                        r[wave] = r_wave
                for t, r in zip(terms, ratios, strict=True):
                    np.multiply(per_row[m][s], np.exp(r, out=r), out=out[t, s])

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(block, range(0, n, block_rows)))
    return out


def derived(rows: dict, lat, tpot) -> tuple[np.ndarray, np.ndarray]:
    """(draw, row) throughput and interactivity (see :func:`_derived`) from the (draw, row)
    E2E and TPOT planes; ``rows``: ``is_open``, ``rate``, ``conc``, ``decode_len``,
    ``num_gpus``. :func:`derived_numpy` is its oracle and fallback."""
    f64 = lambda x: np.ascontiguousarray(x, dtype=np.float64)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's cache notices
        planes = np.ascontiguousarray  # the planes' own dtype (float32): no float64 copies
        out = _derived_jit(planes(lat.T), planes(tpot.T), np.ascontiguousarray(rows["is_open"]),
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
        interactivity = np.where(np.isfinite(tpot), 1.0 / tpot, 0.0)
    return throughput.astype(lat.dtype), interactivity.astype(lat.dtype)  # the planes' dtype


def nan_quantiles(x: np.ndarray, qs, chunk_bytes: int = 1 << 22) -> list[np.ndarray]:
    """Column-wise quantiles of ``x`` (draws, columns) ignoring NaN, as ``np.nanquantile``
    (linear interpolation) but vectorised: ``np.nanquantile`` loops over columns in Python
    (measured: 54 s of a 58 s predict of 20,000 rows). ``+inf`` draws are kept (saturated).

    Columns are sorted a block at a time in one reused buffer of ``chunk_bytes``: a sorted copy
    of all of ``x`` (10^5 rows × 100 draws: 80 MB per variable) cost more in first-touch page
    faults than in sorting."""
    draws, n_cols = x.shape
    width = max(1, chunk_bytes // (x.itemsize * max(draws, 1)))  # float32 planes: 4 bytes
    buf = np.empty((min(width, n_cols), draws), dtype=x.dtype)
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
