"""Fused prediction kernel (numba): one pass over (draw, row) for dense systems.

``LatencyModel.predict`` evaluates, per posterior draw and row, the SD demand ``(C1, C2)``, the
baseline's, the open- or closed-loop latency of both, the speedup and the saturation rate. In
NumPy that is a dozen passes over (draws × rows) arrays; here it is one loop that keeps every
intermediate in registers — the same algebra as :func:`bayes_sd.latency.demand`,
:func:`~bayes_sd.latency.open_loop_latency` and :func:`~bayes_sd.latency.closed_loop_latency`
(tests compare the two paths). Without numba the NumPy path is used.

Compiled on first use and cached (``NUMBA_CACHE_DIR``).
"""

from __future__ import annotations

import warnings

import numpy as np

try:  # numba comes with PyTensor's default backend; the NumPy path is the fallback
    import numba
except ImportError:  # pragma: no cover - exercised only without numba
    numba = None

AVAILABLE = numba is not None


def _dense(c, series_sd, series_base, k, e, decode_len, rate, conc, is_open, out):
    """``c``: (8, draws, rows) coefficients in ``COEFS`` order (c1p c2p c1v c2v c1s c2s c1d c2d),
    before the series shifts; ``series_sd`` / ``series_base``: (draws, rows) factors on the
    level-2 coefficients of the row's series and of its baseline series; ``e``: (draws, rows)
    tokens per cycle; ``out``: (4, draws, rows) for latency, speedup, C1 and C2."""
    draws, n = e.shape
    inf = np.inf
    for i in range(draws):
        for j in range(n):
            kk = k[j]
            dl = decode_len[j]
            premium = 1.0 if kk > 0 else 0.0
            cycles = dl / e[i, j]
            f = series_sd[i, j]
            c1 = c[0, i, j] + cycles * (c[2, i, j] + premium * c[4, i, j] + kk * c[6, i, j])
            c2 = f * c[1, i, j] + cycles * f * (c[3, i, j] + premium * c[5, i, j] + kk * c[7, i, j])
            g = series_base[i, j]
            b1 = c[0, i, j] + dl * c[2, i, j]
            b2 = g * c[1, i, j] + dl * g * c[3, i, j]
            if is_open[j]:
                slack = 1.0 - rate[j] * c2
                lat = c1 / slack if slack > 0 else inf
                slack_b = 1.0 - rate[j] * b2
                base = b1 / slack_b if slack_b > 0 else inf
            else:
                lat = c1 + conc[j] * c2
                base = b1 + conc[j] * b2
            out[0, i, j] = lat
            out[1, i, j] = base / lat if lat < inf else (np.nan if base == inf else 0.0)
            out[2, i, j] = c1
            out[3, i, j] = c2


if AVAILABLE:
    with warnings.catch_warnings():  # an unwritable cache folder is not an error
        warnings.simplefilter("ignore")
        _dense_jit = numba.njit(cache=True, nogil=True)(_dense)
else:  # pragma: no cover
    _dense_jit = None


def dense(c, series_sd, series_base, k, e, decode_len, rate, conc, is_open):
    """Latency, speedup, C1 and C2 draws (draws, rows) of dense rows (see :func:`_dense`)."""
    draws, n = e.shape
    out = np.empty((4, draws, n))
    args = (
        np.ascontiguousarray(c, dtype=np.float64),
        np.ascontiguousarray(series_sd, dtype=np.float64),
        np.ascontiguousarray(series_base, dtype=np.float64),
        np.ascontiguousarray(k, dtype=np.float64),
        np.ascontiguousarray(e, dtype=np.float64),
        np.ascontiguousarray(decode_len, dtype=np.float64),
        np.ascontiguousarray(np.nan_to_num(rate), dtype=np.float64),
        np.ascontiguousarray(np.nan_to_num(conc), dtype=np.float64),
        np.ascontiguousarray(is_open, dtype=np.bool_),
        out,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's cache notices
        (_dense_jit or _dense)(*args)
    return out[0], out[1], out[2], out[3]
