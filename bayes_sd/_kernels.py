"""Fused prediction kernel (numba): one pass over (draw, row), dense and MoE targets.

``LatencyModel.predict`` evaluates, per posterior draw and row, the SD demand ``(C1, C2)``, the
baseline's, the open- or closed-loop latency of both, the speedup and the saturation rate. In
NumPy that is a dozen passes over (draws × rows) arrays; here it is one loop that keeps every
intermediate in registers — the same algebra as :func:`bayes_sd.latency.demand`,
:func:`~bayes_sd.latency.open_loop_latency`, :func:`~bayes_sd.latency.closed_loop_latency` and,
for MoE targets, :func:`~bayes_sd.latency.moe_open_loop_latency` /
:func:`~bayes_sd.latency.moe_closed_loop_latency` (tests compare the two paths).

Coefficients come per *configuration* (one series of one system: a prediction table of 10^5
rates of a few configurations has a few configurations), rows point at theirs. Rows are split
over the CPU's cores (``prange``), each row's draws written contiguously. Without numba the
NumPy path is used.

Compiled on first use and cached (``NUMBA_CACHE_DIR``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

try:  # numba comes with PyTensor's default backend; the NumPy path is the fallback
    import numba
except ImportError:  # pragma: no cover - exercised only without numba
    numba = None

AVAILABLE = numba is not None
prange = numba.prange if AVAILABLE else range

GROWTH = 1.5  # the largest step up (the NumPy path walks by 1.1 and bisects)
MAX_GROWTH_STEPS = 120
MAX_ROOT_STEPS = 200
REL_TOL = 1e-13
NEWTON_TOL = 1e-5  # a Newton step this small leaves a relative error of O(1e-10)


def _excess_slope(lat, rate, base1, base2, cycles, k, sd, log_q, s1v, s1s, s1d, s2v, s2s, s2d):
    """``g(L) = f(L) − L`` of the MoE open-loop fixed point ``L = C1(B) + λ L C2(B)``,
    ``B = max(λL, 1)``; its derivative in L (B grows with L above one request); the
    utilisation ``λ C2(B)`` (C2 grows with B: once it reaches 1 with g > 0, no root lies
    above L); and ``C1(B)``."""
    raw = rate * lat
    batch = max(raw, 1.0)
    miss_v = math.exp(batch * (k + 1.0) * log_q)  # 1 − φ
    miss_d = math.exp(batch * log_q) if k > 0 else 1.0  # no drafting at k = 0
    phi_v, phi_d = 1.0 - miss_v, 1.0 - miss_d
    inc1 = phi_v * (s1v + sd * s1s) + k * phi_d * s1d
    inc2 = phi_v * (s2v + sd * s2s) + k * phi_d * s2d
    c1 = base1 + cycles * inc1
    c2 = base2 + cycles * inc2
    g = c1 + raw * c2 - lat
    slope = rate * c2 - 1.0
    if raw > 1.0:  # dφ/dB = −(k + 1) log q (1 − φ_v), −log q (1 − φ_d)
        dv = -(k + 1.0) * log_q * miss_v
        dd = -log_q * miss_d
        dc1 = cycles * (dv * (s1v + sd * s1s) + k * dd * s1d)
        dc2 = cycles * (dv * (s2v + sd * s2s) + k * dd * s2d)
        slope += rate * (dc1 + raw * dc2)
    return g, slope, rate * c2, c1


def _moe_latency(u, s, f, k, e, dl, plen, log_q, rate, conc, is_open):
    """Mean latency of an MoE target: ``u``, ``s``: the 8 unsaturated coefficients and the
    coverage increments (``COEFS`` order; drafter increments 0), level 2 scaled by ``f``."""
    cycles = dl / e
    sd = 1.0 if k > 0 else 0.0
    phi_p = -math.expm1(plen * log_q)
    base1 = u[0] + phi_p * s[0] + cycles * (u[2] + sd * u[4] + k * u[6])
    base2 = f * (u[1] + phi_p * s[1] + cycles * (u[3] + sd * u[5] + k * u[7]))
    s2v, s2s, s2d = f * s[3], f * s[5], f * s[7]
    if not is_open:  # closed loop: B = N requests in flight
        batch = max(conc, 1.0)
        phi_v = -math.expm1(batch * (k + 1.0) * log_q)
        phi_d = -math.expm1(batch * log_q)
        c1 = base1 + cycles * (phi_v * (s[2] + sd * s[4]) + k * phi_d * s[6])
        c2 = base2 + cycles * (phi_v * (s2v + sd * s2s) + k * phi_d * s2d)
        return c1 + conc * c2
    slack = 1.0 - rate * base2
    if not slack > 0:  # saturated even without coverage
        return np.inf
    s1v, s1s, s1d = s[2], s[4], s[6]
    lo = base1 / slack  # coverage >= 0: the least root lies above; f is increasing
    g_lo, s_lo, u_lo, c1_lo = _excess_slope(
        lo, rate, base1, base2, cycles, k, sd, log_q, s1v, s1s, s1d, s2v, s2s, s2d
    )
    if g_lo <= 0.0:
        return lo
    # Walk up from below the least root: Newton steps, at most a factor GROWTH each (the
    # NumPy path's grid; two roots closer than that would be missed by both), until f(L) <= L
    # (a bracket) or the steps from below converge (g convex there: Newton never crosses).
    hi = lo
    g_hi = g_lo
    found = False
    for _ in range(MAX_GROWTH_STEPS):
        if u_lo >= 1.0:  # f(L) - L >= C1 > 0 from here on: saturated
            return np.inf
        # C1(B) / (1 - λ C2(B)) at the B of lo is a proven lower bound (C1, C2 grow with B)
        cand = max(lo * GROWTH, c1_lo / (1.0 - u_lo))
        if s_lo < 0.0:
            cand = min(lo - g_lo / s_lo, cand)
        if cand - lo <= NEWTON_TOL * cand:
            return cand
        g, slope, load, c1 = _excess_slope(
            cand, rate, base1, base2, cycles, k, sd, log_q, s1v, s1s, s1d, s2v, s2s, s2d
        )
        if g <= 0.0:
            hi, g_hi = cand, g
            found = True
            break
        lo, g_lo, s_lo, u_lo, c1_lo = cand, g, slope, load, c1
    if not found:
        return np.inf
    if slope < 0.0 and -g_hi <= -NEWTON_TOL * hi * slope:  # the step up hit the root
        # (e.g. below one request in flight, where C1, C2 are constant and g is linear: the
        # bound C1 / (1 − λ C2) is the root; bisecting to it took 44 evaluations)
        return max(hi - g_hi / slope, lo)
    # safeguarded Newton on the bracket (g_lo > 0 >= g_hi): quadratic near the root, a
    # regula falsi step whenever Newton would leave the bracket or the slope is not negative
    x = hi - g_hi / slope if slope < 0.0 else 0.5 * (lo + hi)
    if not (lo < x < hi):
        x = (lo * g_hi - hi * g_lo) / (g_hi - g_lo)
        if not (lo < x < hi):
            x = 0.5 * (lo + hi)
    for _ in range(MAX_ROOT_STEPS):
        g, slope, _, _ = _excess_slope(
            x, rate, base1, base2, cycles, k, sd, log_q, s1v, s1s, s1d, s2v, s2s, s2d
        )
        if g > 0.0:
            lo, g_lo = x, g
        else:
            hi, g_hi = x, g
        if g == 0.0 or hi - lo <= REL_TOL * hi:
            return x
        step = g / slope if slope < 0.0 else 0.0
        nxt = x - step
        if slope < 0.0 and abs(step) <= NEWTON_TOL * x:
            # the error after a Newton step of relative size δ is O(δ²); a step that lands
            # on (or rounds just past) the bracket's end lands on the root
            return min(max(nxt, lo), hi)
        if not (slope < 0.0 and lo < nxt < hi):
            nxt = (lo * g_hi - hi * g_lo) / (g_hi - g_lo)
            if not (lo < nxt < hi) or min(nxt - lo, hi - nxt) < 0.1 * (hi - lo):
                nxt = 0.5 * (lo + hi)  # regula falsi stalls on one side: halve
        x = nxt
    return x


def _baselines(coef, incr, f_base, cfg, log_q, dl, plen, rate, conc, is_open, base_rep):
    """Baseline (k = 0) latency draws (baselines, draws) of MoE rows, one per distinct
    baseline: ``base_rep`` is a representative row of each. A planning grid of draft lengths
    at each rate shares one baseline per rate; each baseline is one fixed-point solve per
    draw, solved once here instead of once per SD row (docs/model.md, Benchmark)."""
    draws = f_base.shape[0]
    nb = base_rep.shape[0]
    out = np.empty((nb, draws))
    for b in prange(nb):
        u = np.empty(8)
        s = np.empty(8)
        j = base_rep[b]
        q = cfg[j]
        for i in range(draws):
            for c in range(8):
                u[c] = coef[c, i, q]
                s[c] = incr[c, i, q]
            out[b, i] = _moe_latency(
                u, s, f_base[i, q], 0.0, 1.0, dl[j], plen[j], log_q[q], rate[j], conc[j], is_open[j]
            )
    return out


def _predict(
    coef, incr, f_sd, f_base, cfg, moe, log_q, k, e_known, acc, d_idx, dl, plen, rate, conc,
    is_open, base_lat, base_of, with_demand,
):  # fmt: skip
    """``coef``: (8, draws, configs) coefficients in ``COEFS`` order (c1p c2p c1v c2v c1s c2s
    c1d c2d) before the series shifts; ``incr``: (8, draws, configs) MoE coverage increments
    (0 for dense configurations and drafters); ``f_sd`` / ``f_base``: (draws, configs) factors
    on the level-2 coefficients of the configuration's series and of its baseline series;
    ``moe``, ``log_q``: per configuration, MoE flag and log(1 − m/M); per row: ``cfg``, ``k``,
    ``e_known`` (tokens per cycle, NaN when latent), ``d_idx`` (column of ``acc``, the latent
    acceptance rate per draw and draft system), decode and prefill length, ``rate`` /
    ``conc``, ``is_open``; ``base_lat``: the MoE rows' baseline latency draws
    (:func:`_baselines`), ``base_of``: each MoE row's baseline in it (−1: solved in the
    row's pass, for rows whose baseline no other row shares). Returns (4, rows, draws)
    for latency, speedup, C1 and C2 (MoE: with every expert read, as for the saturation rate)
    with ``with_demand``, else (3, rows, draws) for latency, speedup and the saturation rate
    1 / C2 (a quarter less memory). Rows go in parallel, each row's draws are contiguous:
    quantiles over draws then read contiguous memory.

    The output is allocated here, not by NumPy: NumPy asks the OS to back large arrays with
    huge pages (``madvise``), and where the OS then compacts memory on the first write
    (``transparent_hugepage/defrag = madvise``, as on the benchmark machine) touching 240 MB
    took 0.6 s, against 0.1 s for numba's allocation written by both threads."""
    draws = f_sd.shape[0]
    n = cfg.shape[0]
    out = np.empty((4 if with_demand else 3, n, draws))
    inf = np.inf
    for j in prange(n):
        u = np.empty(8)
        s = np.empty(8)
        q = cfg[j]
        kk = k[j]
        d = dl[j]
        premium = 1.0 if kk > 0 else 0.0
        for i in range(draws):
            e = e_known[j]
            if math.isnan(e):  # latent acceptance of the draft system
                e = 1.0 + kk * acc[i, d_idx[j]]
            cycles = d / e
            f = f_sd[i, q]
            g = f_base[i, q]
            if moe[q]:
                for c in range(8):
                    u[c] = coef[c, i, q]
                    s[c] = incr[c, i, q]
                own = kk == 0.0 and g == f and e == 1.0  # a baseline row: its own baseline
                if base_of[j] >= 0:  # a baseline shared with other rows, solved already
                    base = base_lat[base_of[j], i]
                    lat = base if own else _moe_latency(
                        u, s, f, kk, e, d, plen[j], log_q[q], rate[j], conc[j], is_open[j]
                    )  # fmt: skip
                else:
                    lat = _moe_latency(
                        u, s, f, kk, e, d, plen[j], log_q[q], rate[j], conc[j], is_open[j]
                    )
                    base = lat if own else _moe_latency(
                        u, s, g, 0.0, 1.0, d, plen[j], log_q[q], rate[j], conc[j], is_open[j]
                    )  # fmt: skip
                c1 = u[0] + s[0] + cycles * (u[2] + s[2] + premium * (u[4] + s[4]) + kk * u[6])
                c2 = f * (
                    u[1] + s[1] + cycles * (u[3] + s[3] + premium * (u[5] + s[5]) + kk * u[7])
                )
            else:
                c1 = coef[0, i, q] + cycles * (
                    coef[2, i, q] + premium * coef[4, i, q] + kk * coef[6, i, q]
                )
                c2 = f * (
                    coef[1, i, q]
                    + cycles * (coef[3, i, q] + premium * coef[5, i, q] + kk * coef[7, i, q])
                )
                b1 = coef[0, i, q] + d * coef[2, i, q]
                b2 = g * (coef[1, i, q] + d * coef[3, i, q])
                if is_open[j]:
                    slack = 1.0 - rate[j] * c2
                    lat = c1 / slack if slack > 0 else inf
                    slack_b = 1.0 - rate[j] * b2
                    base = b1 / slack_b if slack_b > 0 else inf
                else:
                    lat = c1 + conc[j] * c2
                    base = b1 + conc[j] * b2
            out[0, j, i] = lat
            out[1, j, i] = base / lat if lat < inf else (np.nan if base == inf else 0.0)
            if with_demand:
                out[2, j, i] = c1
                out[3, j, i] = c2
            else:
                out[2, j, i] = 1.0 / c2 if c2 > 0 else inf
    return out


if AVAILABLE:
    with warnings.catch_warnings():  # an unwritable cache folder is not an error
        warnings.simplefilter("ignore")
        _jit = dict(cache=True, nogil=True)
        _excess_slope = numba.njit(**_jit)(_excess_slope)
        _moe_latency = numba.njit(**_jit)(_moe_latency)
        _baselines_jit = numba.njit(parallel=True, **_jit)(_baselines)
        _predict_jit = numba.njit(parallel=True, **_jit)(_predict)
else:  # pragma: no cover
    _baselines_jit = _predict_jit = None


def _moe_shape(experts, experts_per_token):
    """Per configuration: MoE flag and log(1 − m/M) (−inf for dense targets, never used)."""
    experts = np.asarray(experts, dtype=float)
    experts_per_token = np.asarray(experts_per_token, dtype=float)
    with np.errstate(divide="ignore"):
        return experts > 1, np.log1p(-experts_per_token / experts)


def predict(coef, incr, f_sd, f_base, cfg, experts, experts_per_token, rows: dict, acc, base_of,
            with_demand=True, chunk_rows=None):  # fmt: skip
    """Latency, speedup, and C1 and C2 (``with_demand``) or the saturation rate: an array
    (4 or 3, rows, draws) (see :func:`_predict`); ``experts``, ``experts_per_token`` per
    configuration.

    ``rows``: ``k``, ``e_known``, ``d_idx``, ``decode_len``, ``prefill_len``, ``rate``,
    ``conc`` (NaN where not given), ``is_open``. ``base_of``: per row, an id of its baseline
    (MoE rows with the same id have the same baseline series, target sizes and load), −1 for
    dense rows. ``chunk_rows`` is the NumPy path's (:func:`predict_numpy`); the kernel does
    not need it."""
    moe, log_q = _moe_shape(experts, experts_per_token)
    f64 = lambda x: np.ascontiguousarray(x, dtype=np.float64)  # noqa: E731
    i64 = lambda x: np.ascontiguousarray(x, dtype=np.int64)  # noqa: E731
    ids, rep, inverse, count = np.unique(
        base_of, return_index=True, return_inverse=True, return_counts=True
    )
    # a baseline of one row is solved in that row's pass (as often as in a pass of its own,
    # without the array): only baselines of several rows are solved ahead and shared
    shared = (ids >= 0) & (count > 1)
    number = np.where(shared, np.cumsum(shared) - 1, -1)
    base_of = i64(number[inverse.ravel()])  # index into the shared baselines, or −1
    rep = i64(rep[shared])  # a representative row of each shared baseline
    common = (
        f64(coef),
        f64(incr),
        f64(f_sd),
        f64(f_base),
        i64(cfg),
        np.ascontiguousarray(moe, dtype=np.bool_),
        f64(log_q),
    )
    per_row = (
        f64(rows["k"]),
        f64(rows["e_known"]),
        f64(acc),
        i64(rows["d_idx"]),
        f64(rows["decode_len"]),
        f64(rows["prefill_len"]),
        f64(np.nan_to_num(rows["rate"])),
        f64(np.nan_to_num(rows["conc"])),
        np.ascontiguousarray(rows["is_open"], dtype=np.bool_),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's cache notices
        base_lat = _baselines_jit(
            common[0], common[1], common[3], common[4], common[6], *per_row[4:], rep
        )
        return _predict_jit(*common, *per_row, base_lat, base_of, bool(with_demand))


def predict_numpy(coef, incr, f_sd, f_base, cfg, experts, experts_per_token, rows: dict, acc,
                  base_of, with_demand=True, chunk_rows=None):  # fmt: skip
    """:func:`predict` by the NumPy algebra of :mod:`bayes_sd.latency` (the kernel's oracle,
    and its fallback without numba), in chunks of ``chunk_rows`` rows (~500,000 row-draws);
    every row solves its own baseline (``base_of`` is not needed)."""
    draws, n = f_sd.shape[0], len(cfg)
    out = np.empty((4, draws, n))
    chunk_rows = chunk_rows or max(1000, 500_000 // max(draws, 1))
    for start in range(0, n, chunk_rows):
        part = slice(start, start + chunk_rows)
        out[:, :, part] = _numpy_chunk(
            coef, incr, f_sd, f_base, cfg[part], np.asarray(experts, dtype=float),
            np.asarray(experts_per_token, dtype=float),
            {key: v[part] for key, v in rows.items()}, acc,
        )  # fmt: skip
    if not with_demand:
        with np.errstate(divide="ignore"):
            out[2] = 1.0 / out[3]
        out = out[:3]
    return out.transpose(0, 2, 1)  # (plane, row, draw), as the kernel


def _numpy_chunk(coef, incr, f_sd, f_base, cfg, experts, experts_per_token, rows, acc):
    from bayes_sd import latency
    from bayes_sd.coefs import LEVEL, Coefficients

    draws, n = f_sd.shape[0], len(cfg)
    k = rows["k"]
    e = np.broadcast_to(rows["e_known"], (draws, n)).copy()
    latent = np.isnan(rows["e_known"])
    if latent.any():
        e[:, latent] = 1.0 + k[latent] * acc[:, rows["d_idx"][latent]]
    moe = (experts > 1)[cfg]
    unsat = np.take(coef, cfg, axis=2)
    inc = np.take(incr, cfg, axis=2) if moe.any() else np.zeros_like(unsat)
    fsd, fbase = np.take(f_sd, cfg, axis=1), np.take(f_base, cfg, axis=1)
    rate = np.where(rows["is_open"], rows["rate"], np.nan)
    conc = np.where(rows["is_open"], np.nan, rows["conc"])
    shape = dict(
        decode_len=rows["decode_len"],
        experts=experts[cfg],
        experts_per_token=experts_per_token[cfg],
        prefill_len=rows["prefill_len"],
    )

    def scaled(values, factor):  # the series factor on level 2
        return Coefficients.from_values(c * factor if LEVEL[j] else c for j, c in enumerate(values))

    unsat_sd, incr_sd = scaled(unsat, fsd), scaled(inc, fsd)
    lat = _numpy_latency(unsat_sd, incr_sd, k, e, rate, conc, moe, **shape)
    base = _numpy_latency(scaled(unsat, fbase), scaled(inc, fbase), np.zeros(n),
                          np.ones((draws, n)), rate, conc, moe, **shape)  # fmt: skip
    with np.errstate(divide="ignore", invalid="ignore"):
        speedup = base / lat
    c1, c2 = latency.demand(unsat_sd.map(lambda u, s: u + s, incr_sd), k, e, rows["decode_len"])
    return np.stack([lat, speedup, np.broadcast_to(c1, lat.shape), np.broadcast_to(c2, lat.shape)])


def _numpy_latency(unsat, incr, k, e, rate, conc, moe, *, decode_len, experts, experts_per_token,
                   prefill_len) -> np.ndarray:  # fmt: skip
    from bayes_sd import latency
    from bayes_sd.coefs import Coefficients

    draws, n = e.shape
    dense = ~moe
    is_open = ~np.isnan(rate)
    out = np.empty((draws, n))
    if dense.any():
        pick = (lambda x: x) if dense.all() else (lambda x: np.asarray(x)[..., dense])
        c1, c2 = latency.demand(unsat.map(pick), pick(k), pick(e), pick(decode_len))
        lat = latency.open_loop_latency(c1, c2, np.nan_to_num(pick(rate)))
        if not pick(is_open).all():
            closed = latency.closed_loop_latency(c1, c2, np.nan_to_num(pick(conc)))
            lat = np.where(pick(is_open), lat, closed)
        out[:, dense] = lat
    if moe.any():
        sel = lambda c: Coefficients.from_values(np.asarray(x)[:, moe] for x in c)  # noqa: E731
        u, s = sel(unsat), sel(incr)
        shared = (k[moe], e[:, moe], decode_len[moe])
        tail = (experts[moe], experts_per_token[moe], prefill_len[moe])
        open_l = latency.moe_open_loop_latency(u, s, *shared, np.nan_to_num(rate[moe]), *tail)
        closed_l = latency.moe_closed_loop_latency(u, s, *shared, np.nan_to_num(conc[moe]), *tail)
        out[:, moe] = np.where(is_open[moe], open_l, closed_l)
    return out
