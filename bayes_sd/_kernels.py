"""The prediction pass over (row, draw): TTFT, TPOT, E2E, speedup and saturation rate.

``predict`` is a fused numba kernel — the one deliberate second copy of the algebra of
:mod:`bayes_sd.latency` and :mod:`bayes_sd.phases` (step terms, roofline, MoE coverage,
capacity, the open-loop fixed point), held equal to ``predict_numpy`` (the same signature,
written with those modules) by ``tests/test_model.py::test_fused_kernel_matches_the_numpy_algebra``.
``predict_numpy`` is also the fallback without numba. The passes after it (percentiles,
throughput, the summaries' quantiles) are in :mod:`bayes_sd._percentiles`.

Coefficients come per *configuration* (one series of one system: a prediction table of 10^5
loads of a few configurations has a few configurations), rows point at theirs. Rows are split
over the CPU's cores (``prange``), each row's draws written contiguously (quantiles then sort
contiguous memory). The open-loop fixed point ``L = A1 + A2 B + (D − 1)/E · t(B)``,
``B = λ L / n``, is solved per draw by safeguarded Newton from a proven lower bound that
takes in the MoE coverage at its own batch (:func:`_solve_open`); baseline (k = 0) latencies
of rows that share a baseline configuration and load are solved once (:func:`_baselines`).

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

ROOF_P = 4.0  # bayes_sd.phases.ROOF_P
SOFTMIN_P = 8.0  # bayes_sd.phases.SOFTMIN_P
GROWTH = 1.5  # the largest step up of the open-loop solver
MAX_STEPS = 200
REL_TOL = 1e-12
# a Newton step this small ends the solve at its landing point: quadratic convergence puts that
# within ~1e-8 of the root (largest seen on 10^5 demo rows x 100 draws: 9e-9), under float32's
# rounding of the stored draws (6e-8); 1e-6 (an error of ~1e-12) cost 8% of the MoE kernel
STEP_TOL = 1e-4
# output planes
PLANES = ("latency", "ttft", "tpot", "speedup", "saturation_rate", "light", "wave")
# the stored draws: computed in float64, kept in float32 (7 significant digits, far finer than
# any posterior interval): half the memory, and half the first touches of fresh pages, which
# cost a process's first predict of 10^5 rows x 100 draws more than its arithmetic
DRAW_DTYPE = np.float32


def _terms(coef, incr, f, i, q, k, act, kink, eta, out):
    """Step terms (bayes_sd.phases.step_terms; ``eta``: its ``verify_share``) of configuration
    ``q``, draw ``i``, into ``out``: a1 a2 t1 t2 roof h1 h2 gv1 gv2 gd1 gd2 (level 2 scaled by
    the series factor)."""
    sd = 1.0 if k > 0 else 0.0
    out[0] = coef[q, i, 0]
    out[1] = f * coef[q, i, 1]
    out[2] = coef[q, i, 2] + sd * coef[q, i, 4] + k * coef[q, i, 6]
    out[3] = f * (coef[q, i, 3] * (1.0 + eta * k) + sd * coef[q, i, 5] + k * coef[q, i, 7])
    out[4] = (coef[q, i, 2] + incr[q, i, 2]) * act / kink
    out[5] = incr[q, i, 0]
    out[6] = f * incr[q, i, 1]
    out[7] = incr[q, i, 2] + sd * incr[q, i, 4]
    out[8] = f * (incr[q, i, 3] * (1.0 + eta * k) + sd * incr[q, i, 5])
    out[9] = k * incr[q, i, 6]
    out[10] = f * k * incr[q, i, 7]


def _step(tm, k, batch, log_q, moe):
    """(t(B), T1(B), dt/dB, bound) of one engine step at ``batch``: ``bound`` =
    max(T2(B), roof (k + 1)), a per-request slope the step keeps at every larger batch (T1, T2
    grow with B, and t ≥ mem, t ≥ comp): λ (A2 + cycles · bound) ≥ 1 above a point where
    f(L) > L proves no fixed point lies above."""
    t1, t2 = tm[2], tm[3]
    dt1 = 0.0
    dt2 = 0.0
    if moe:
        b = max(batch, 1.0)
        miss_d = math.exp(b * log_q)
        miss_v = miss_d ** (int(k) + 1)  # exp(B (k + 1) log q), k whole: multiplications
        t1 += (1.0 - miss_v) * tm[7] + (1.0 - miss_d) * tm[9]
        t2 += (1.0 - miss_v) * tm[8] + (1.0 - miss_d) * tm[10]
        if batch > 1.0:  # dφ/dB = −(k + 1) log q (1 − φ_v), −log q (1 − φ_d)
            dv = -(k + 1.0) * log_q * miss_v
            dd = -log_q * miss_d
            dt1 = dv * tm[7] + dd * tm[9]
            dt2 = dv * tm[8] + dd * tm[10]
    mem = t1 + batch * t2
    comp = tm[4] * batch * (k + 1.0)
    dmem = t2 + dt1 + batch * dt2
    if comp > 1e-3 * mem:  # (mem^4 + comp^4)^(1/4): p = ROOF_P = 4 by powers, no logs
        m2 = mem * mem
        c2 = comp * comp
        t = math.sqrt(math.sqrt(m2 * m2 + c2 * c2))
        t3 = t * t * t
        dt = (m2 * mem * dmem + c2 * comp * tm[4] * (k + 1.0)) / t3
    else:  # the compute term is under 1e-12 of the step
        t = mem
        dt = dmem
    return t, t1, dt, max(t2, tm[4] * (k + 1.0))


def _solve_open(tm, k, e, dl, lam, log_q, moe, a1, a2):
    """Least root L of L = A1 + A2 B + (D − 1)/E t(B), B = λ L (λ per engine): safeguarded
    Newton from a proven lower bound; +inf where no root exists (the slope bound of
    :func:`_step` reaches 1 / λ above a point with f(L) > L, or a bound's slack vanishes).

    The bound: t ≥ T1(B) + B T2(B) (the roofline only adds), and the MoE coverage grows with B,
    so with the coverage frozen at the batch of a lower bound ``lo`` the root satisfies
    L ≥ (A1 + cyc T1(λ lo)) / (1 − λ (A2 + cyc T2(λ lo))) — a higher lower bound, iterated
    while it climbs by more than 1%. From zero coverage (the bound alone for dense targets)
    Newton started at 1–10% of an MoE root under load and climbed by its 1.5× cap: 6.2 steps
    per solve on the demo's MoE rows, 2.6 from the coverage bound. A Newton step shorter than
    ``STEP_TOL`` x ends the solve at its landing point, within ~1e-8 of the root by quadratic
    convergence (:data:`STEP_TOL`): the next evaluations would refine it below the float32
    rounding of the stored draws."""
    cyc = (dl - 1.0) / e
    c1 = a1 + cyc * tm[2]
    slack = 1.0 - lam * (a2 + cyc * tm[3])
    if not slack > 0.0:
        return math.inf
    lo = c1 / slack
    if moe:  # coverage grows with B: frozen at the bound's batch, the bound solves higher
        for _ in range(MAX_STEPS):
            b = max(lam * lo, 1.0)  # as in _step: below one request, the coverage at one
            miss_d = math.exp(b * log_q)
            miss_v = miss_d ** (int(k) + 1)
            slack = 1.0 - lam * (a2 + cyc * (tm[3] + (1.0 - miss_v) * tm[8]
                                             + (1.0 - miss_d) * tm[10]))  # fmt: skip
            if not slack > 0.0:
                return math.inf
            nxt = (a1 + cyc * (tm[2] + (1.0 - miss_v) * tm[7] + (1.0 - miss_d) * tm[9])) / slack
            if nxt <= lo * 1.01:
                break
            lo = nxt
    hi = math.inf
    x = lo
    for _ in range(MAX_STEPS):
        b = lam * x
        t, _, dt, bound = _step(tm, k, b, log_q, moe)
        g = a1 + a2 * b + cyc * t - x
        if g > 0.0:
            lo = x
            if lam * (a2 + cyc * bound) >= 1.0:
                return math.inf
        else:
            hi = x
        if abs(g) <= REL_TOL * x:
            return x
        d = lam * (a2 + cyc * dt) - 1.0
        nxt = x - g / d if d < 0.0 else math.inf
        if abs(nxt - x) <= STEP_TOL * x and lo <= nxt <= hi:
            return nxt  # the next evaluation would return it (|g| ≤ REL_TOL x): spared
        if hi == math.inf:
            nxt = min(nxt, lo * GROWTH) if nxt > lo else lo * GROWTH
        elif not (lo < nxt < hi):
            nxt = 0.5 * (lo + hi)
        if hi < math.inf and hi - lo <= REL_TOL * hi:
            return 0.5 * (lo + hi)
        x = nxt
    return x if hi < math.inf else math.inf


def _phases(tm, k, e, dl, phi_p, rate, conc, is_open, n, cap, share, log_q, moe, opening, out):
    """E2E, TTFT, TPOT, the light-load latency C1 and the opening wave's part of the mean TTFT
    at one load into ``out`` (``phi_p``: the row's prefill coverage, :func:`prefill_coverage`;
    ``opening``: f κ; bayes_sd.phases.closed_loop_phases)."""
    a1 = tm[0] + phi_p * tm[5]
    a2 = tm[1] + phi_p * tm[6]
    decode = dl - 1.0
    cyc = decode / e
    if is_open:
        lam = rate / n
        lat = _solve_open(tm, k, e, dl, lam, log_q, moe, a1, a2)
        if lat < math.inf:
            b = lam * lat
            ttft = a1 + share * a2 * b
            tpot = (lat - ttft) / decode
        else:  # saturated: no stationary operating point
            ttft = tpot = math.inf
        wave = 0.0
    else:
        per = conc / n
        b = per
        if cap < math.inf:
            lb = -SOFTMIN_P * math.log(per)
            lk = -SOFTMIN_P * math.log(cap)
            top = max(lb, lk)
            b = math.exp(-(top + math.log(math.exp(lb - top) + math.exp(lk - top))) / SOFTMIN_P)
        t, _, _, _ = _step(tm, k, b, log_q, moe)
        service = a1 + a2 * b + cyc * t
        wait = (per - b) * service / b
        wave = opening * b * a2
        lat = wait + wave + service
        ttft = wait + wave + a1 + share * a2 * b
        tpot = t / e + (1.0 - share) * a2 * b / decode
    out[0] = lat
    out[1] = ttft
    out[2] = tpot
    out[3] = a1 + cyc * tm[2]
    out[4] = wave


def _saturation(tm, k, e, dl, phi_p, n, moe):
    """Sustainable open-loop rate: n / (A2 + (D − 1)/E · asymptotic per-request step cost)."""
    a2 = tm[1] + phi_p * tm[6]
    t2 = tm[3] + (tm[8] + tm[10] if moe else 0.0)
    per_request = max(t2, tm[4] * (k + 1.0))
    c2 = a2 + (dl - 1.0) / e * per_request
    return n / c2 if c2 > 0 else math.inf


def _baselines(coef, incr, f_base, cfg, moe, log_q, act, kink, cap, share, burst, dl, phi_p, rate,
               conc, is_open, n, opening, base_rep):  # fmt: skip
    """Baseline (k = 0) latency draws (baselines, draws), one per distinct baseline shared by
    several rows (``base_rep``: a representative row of each): a planning grid of draft
    lengths at each load solves each baseline once per draw, not once per SD row."""
    draws = f_base.shape[0]
    nb = base_rep.shape[0]
    out = np.empty((nb, draws))
    for b in prange(nb):
        tb = np.empty(11)
        res = np.empty(5)
        j = base_rep[b]
        q = cfg[j]
        for i in range(draws):
            _terms(coef, incr, f_base[i, q], i, q, 0.0, act[q], kink[i], 0.0, tb)
            _phases(tb, 0.0, 1.0, dl[j], phi_p[j], rate[j], conc[j], is_open[j], n[j], cap[i, q],
                    share[i], log_q[q], moe[q], opening[j] * burst[i], res)  # fmt: skip
            out[b, i] = res[0]
    return out


def _predict(coef, incr, f_sd, f_base, cfg, moe, log_q, act, kink, cap, share, burst, eta, k,
             e_known, acc, d_idx, dl, phi_p, rate, conc, is_open, n, opening, base_lat, base_of,
             out):  # fmt: skip
    """Planes (PLANES, rows, draws): latency, TTFT, TPOT, speedup against k = 0 at the same
    load, saturation rate, and (``out`` of 6 or 7 planes) the light-load latency C1 and the opening
    wave's part of the mean TTFT.

    ``coef`` / ``incr``: (configs, draws, 8) coefficients in ``COEFS`` order before the series
    shifts and MoE coverage increments; ``f_sd`` / ``f_base``: (draws, configs) level-2 series
    factors; per configuration ``moe``, ``log_q`` = log(1 − m/M), ``act`` = N_active/N_total;
    per draw ``kink`` (T*), ``share`` (θ), ``eta`` (η); ``cap``: (draws, configs) capacity per
    engine; per row ``cfg``, ``k``, ``e_known`` (NaN: latent, from ``acc[draw, d_idx]``), decode and
    prefill length, ``rate`` / ``conc`` / ``is_open``, ``n`` engines."""
    draws = f_sd.shape[0]
    rows = cfg.shape[0]
    planes = out.shape[0]
    for j in prange(rows):
        tm = np.empty(11)
        tb = np.empty(11)
        res = np.empty(5)
        base = np.empty(5)
        q = cfg[j]
        kk = k[j]
        for i in range(draws):
            e = e_known[j]
            if math.isnan(e):  # the acceptance law's draw for the row's (group, k)
                e = acc[i, d_idx[j]]
            _terms(coef, incr, f_sd[i, q], i, q, kk, act[q], kink[i], eta[i], tm)
            wave = opening[j] * burst[i]
            _phases(tm, kk, e, dl[j], phi_p[j], rate[j], conc[j], is_open[j], n[j], cap[i, q],
                    share[i], log_q[q], moe[q], wave, res)  # fmt: skip
            if kk == 0.0 and f_base[i, q] == f_sd[i, q] and e == 1.0:
                lat_b = res[0]  # a baseline row is its own baseline
            elif base_of[j] >= 0:  # a baseline shared with other rows, solved already
                lat_b = base_lat[base_of[j], i]
            else:
                _terms(coef, incr, f_base[i, q], i, q, 0.0, act[q], kink[i], 0.0, tb)
                _phases(tb, 0.0, 1.0, dl[j], phi_p[j], rate[j], conc[j], is_open[j], n[j],
                        cap[i, q], share[i], log_q[q], moe[q], wave, base)  # fmt: skip
                lat_b = base[0]
            lat = res[0]
            out[0, j, i] = lat
            out[1, j, i] = res[1]
            out[2, j, i] = res[2]
            out[3, j, i] = lat_b / lat if lat < math.inf else (math.nan if lat_b == math.inf
                                                              else 0.0)  # fmt: skip
            out[4, j, i] = _saturation(tm, kk, e, dl[j], phi_p[j], n[j], moe[q])
            if planes > 5:
                out[5, j, i] = res[3]
            if planes > 6:
                out[6, j, i] = res[4]
    return out


if AVAILABLE:
    with warnings.catch_warnings():  # an unwritable cache folder is not an error
        warnings.simplefilter("ignore")
        _jit = dict(cache=True, nogil=True)
        _terms = numba.njit(**_jit)(_terms)
        _step = numba.njit(**_jit)(_step)
        _solve_open = numba.njit(**_jit)(_solve_open)
        _phases = numba.njit(**_jit)(_phases)
        _saturation = numba.njit(**_jit)(_saturation)
        _baselines_jit = numba.njit(parallel=True, **_jit)(_baselines)
        _predict_jit = numba.njit(parallel=True, **_jit)(_predict)
else:  # pragma: no cover
    _baselines_jit = _predict_jit = None


def _output(shape) -> np.ndarray:
    """A kernel's output array of :data:`DRAW_DTYPE`, allocated by NumPy: NumPy asks Linux for
    huge pages for large arrays (``madvise``), numba's allocator does not — first-touching
    720 MB of planes took 0.19 s in numba's memory, 0.07 s in NumPy's."""
    return np.empty(shape, dtype=DRAW_DTYPE)


def _arrays(experts, experts_per_token):
    experts = np.asarray(experts, dtype=float)
    experts_per_token = np.asarray(experts_per_token, dtype=float)
    with np.errstate(divide="ignore"):  # dense (m = M): log q = −inf, never used
        return experts > 1, np.log1p(-experts_per_token / experts)


def prefill_coverage(moe, log_q, prefill_len):
    """The prefill's expert coverage ``φ_p = 1 − (1 − m/M)^P`` of each row (0 for dense
    targets): per row, not per draw, so computed once before the kernel's draw loop (an
    ``exp`` per row-draw, twice: 3–7% of the kernel's time on 10^5 MoE rows × 100 draws,
    alternating A/B in one process)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(moe, -np.expm1(np.asarray(prefill_len, dtype=float) * log_q), 0.0)


def plane_count(params: dict, rows: dict, with_noise: bool) -> int:
    """How many of :data:`PLANES` a pass writes: 5; 6 with the light-load latency
    (``with_noise``); 7 with the opening wave's part of the mean, where a row has one."""
    if (np.asarray(rows["opening"]) > 0).any() and (np.asarray(params["burst_share"]) > 0).any():
        return 7
    return 6 if with_noise else 5


def predict(params: dict, rows: dict, *, with_noise: bool = False, chunk_rows=None):
    """The planes (see :data:`PLANES`, :func:`plane_count`) as an array (plane, row, draw).

    ``params``: ``coef``, ``incr`` (8, draws, configs), ``f_sd``, ``f_base``, ``capacity``
    (draws, configs), per configuration ``experts``, ``experts_per_token``, ``active_share``,
    per draw ``kink_tokens``, ``verify_share``, ``ttft_share``, ``burst_share`` (κ), and
    ``acceptance`` (draws, combinations): the acceptance law's tokens per cycle per (group, k)
    of the rows without a given one. ``rows``: ``cfg``, ``k``, ``e_known``, ``d_idx``,
    ``decode_len``, ``prefill_len``, ``rate``, ``conc`` (NaN where not given), ``is_open``,
    ``engines``, ``opening`` (the opening wave's share of a closed-loop run), ``base_of`` (an id
    of each row's baseline: rows with one id have the same baseline configuration and load).
    ``chunk_rows`` is the NumPy path's; the kernel does not need it."""
    f64 = lambda x: np.ascontiguousarray(x, dtype=np.float64)  # noqa: E731
    i64 = lambda x: np.ascontiguousarray(x, dtype=np.int64)  # noqa: E731
    moe, log_q = _arrays(params["experts"], params["experts_per_token"])
    ids, rep, inverse, count = np.unique(
        rows["base_of"], return_index=True, return_inverse=True, return_counts=True
    )
    # a baseline of one row is solved in that row's pass (as often as in a pass of its own,
    # without the array): only baselines of several rows are solved ahead and shared
    shared = (ids >= 0) & (count > 1)
    number = np.where(shared, np.cumsum(shared) - 1, -1)
    base_of = i64(number[inverse.ravel()])
    # (configs, draws, coefficient): a row-draw's coefficients in one cache line, not eight
    # strided ones (248 dense configurations: 1.6 MB per array, more than the L2 cache)
    common = tuple(f64(np.transpose(params[key], (2, 1, 0))) for key in ("coef", "incr"))
    per_config = (i64(rows["cfg"]), np.ascontiguousarray(moe), f64(log_q),
                  f64(params["active_share"]), f64(params["kink_tokens"]),
                  f64(params["capacity"]), f64(params["ttft_share"]),
                  f64(params["burst_share"]))  # fmt: skip
    phi_p = prefill_coverage(moe[rows["cfg"]], log_q[rows["cfg"]], rows["prefill_len"])
    load = (f64(rows["decode_len"]), f64(phi_p), f64(np.nan_to_num(rows["rate"])),
            f64(np.nan_to_num(rows["conc"])), np.ascontiguousarray(rows["is_open"]),
            f64(rows["engines"]), f64(rows["opening"]))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's cache notices
        base_lat = _baselines_jit(*common, f64(params["f_base"]), *per_config, *load,
                                  i64(rep[shared]))  # fmt: skip
        return _predict_jit(
            *common, f64(params["f_sd"]), f64(params["f_base"]), *per_config,
            f64(params["verify_share"]), f64(rows["k"]),
            f64(rows["e_known"]), f64(params["acceptance"]), i64(rows["d_idx"]), *load, base_lat,
            base_of, _output((plane_count(params, rows, with_noise), len(base_of),
                              params["f_sd"].shape[0])),
        )  # fmt: skip


def predict_numpy(params: dict, rows: dict, *, with_noise: bool = False, chunk_rows=None):
    """:func:`predict` by the NumPy algebra of :mod:`bayes_sd.phases` (the kernel's oracle, and
    its fallback without numba), in chunks of ``chunk_rows`` rows (~200,000 row-draws)."""
    draws = params["f_sd"].shape[0]
    n = len(rows["cfg"])
    planes = plane_count(params, rows, with_noise)
    out = _output((planes, n, draws))
    chunk_rows = chunk_rows or max(100, 200_000 // max(draws, 1))
    for start in range(0, n, chunk_rows):
        part = slice(start, start + chunk_rows)
        block = _numpy_chunk(params, {key: v[part] for key, v in rows.items()})
        out[:, part] = np.stack([block[p] for p in PLANES[:planes]]).transpose(0, 2, 1)
    return out


def _numpy_chunk(params: dict, rows: dict) -> dict:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _numpy_block(params, rows)


def _numpy_block(params: dict, rows: dict) -> dict:
    from bayes_sd import phases
    from bayes_sd.coefs import LEVEL, Coefficients

    cfg = rows["cfg"]
    draws = params["f_sd"].shape[0]
    moe_c, log_q_c = _arrays(params["experts"], params["experts_per_token"])
    moe, log_q = moe_c[cfg], log_q_c[cfg]
    k = rows["k"]
    e = np.broadcast_to(rows["e_known"], (draws, len(cfg))).copy()
    latent = np.isnan(rows["e_known"])
    if latent.any():
        e[:, latent] = params["acceptance"][:, rows["d_idx"][latent]]
    coef = np.take(params["coef"], cfg, axis=2)
    incr = np.take(params["incr"], cfg, axis=2)
    act = params["active_share"][cfg]
    kink = params["kink_tokens"][:, None]
    eta = params["verify_share"][:, None]
    share = params["ttft_share"][:, None]
    opening = rows["opening"] * params["burst_share"][:, None]
    cap = np.take(params["capacity"], cfg, axis=1)
    shape = dict(decode_len=rows["decode_len"], engines=rows["engines"], ttft_share=share)

    def terms(factor, kk):
        scaled = [c * factor if LEVEL[j] else c for j, c in enumerate(coef)]
        scaled_inc = [c * factor if LEVEL[j] else c for j, c in enumerate(incr)]
        inc = Coefficients.from_values(scaled_inc) if moe.any() else None
        return phases.step_terms(Coefficients.from_values(scaled), inc, kk, active_share=act,
                                 kink_tokens=kink, verify_share=eta)  # fmt: skip

    def at_load(tm, kk, ee):
        phi_p = prefill_coverage(moe, log_q, rows["prefill_len"])
        per = rows["conc"] / rows["engines"]
        with np.errstate(divide="ignore", invalid="ignore"):
            batch = phases.smooth_min(np.nan_to_num(per, nan=1.0), cap)
        cov = _coverage(moe, log_q, kk, batch)
        closed = phases.closed_loop_phases(tm, k=kk, tokens=ee, concurrency=np.nan_to_num(
            rows["conc"], nan=1.0), capacity=cap, coverage=(phi_p, *cov), opening=opening,
            **shape)  # fmt: skip
        lam = np.nan_to_num(rows["rate"]) / rows["engines"]
        lat = _open_fixed_point(tm, kk, ee, rows["decode_len"], lam, phi_p, moe, log_q)
        b = np.where(np.isfinite(lat), lam * lat, 1.0)
        opened = phases.open_loop_phases(tm, k=kk, tokens=ee, rate=np.nan_to_num(rows["rate"]),
                                         batch=np.maximum(b, 1e-12),
                                         coverage=(phi_p, *_coverage(moe, log_q, kk, b)),
                                         **shape)  # fmt: skip
        out = {}
        out["wave"] = np.where(rows["is_open"], 0.0, closed["wave"])
        for key in ("latency", "ttft", "tpot"):
            value = np.where(rows["is_open"], opened[key], closed[key])
            out[key] = np.where(rows["is_open"] & ~np.isfinite(lat), np.inf, value)
        a1, a2 = phases.prefill(tm, phi_p)
        cyc = (rows["decode_len"] - 1.0) / ee
        out["light"] = a1 + cyc * tm.t1
        t2 = tm.t2 + (tm.gv2 + tm.gd2 if tm.gv2 is not None else 0.0)
        with np.errstate(divide="ignore"):
            out["saturation_rate"] = rows["engines"] / (
                a2 + cyc * np.maximum(t2, tm.roof * (kk + 1.0))
            )
        return out

    sd = at_load(terms(np.take(params["f_sd"], cfg, axis=1), k), k, e)
    base = at_load(terms(np.take(params["f_base"], cfg, axis=1), 0.0), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        speedup = base["latency"] / sd["latency"]
    sd["speedup"] = np.where(np.isinf(sd["latency"]), np.where(np.isinf(base["latency"]),
                                                                np.nan, 0.0), speedup)  # fmt: skip
    return {key: np.broadcast_to(value, e.shape) for key, value in sd.items()}


def _coverage(moe, log_q, k, batch):
    """(φ_v, φ_d) of a step at ``batch`` requests (a request is always in its own batch)."""
    b = np.maximum(batch, 1.0)
    with np.errstate(invalid="ignore"):
        phi_v = np.where(moe, -np.expm1(b * (k + 1.0) * log_q), 0.0)
        phi_d = np.where(moe, -np.expm1(b * log_q), 0.0)
    return phi_v, phi_d


def _open_fixed_point(tm, k, e, dl, lam, phi_p, moe, log_q, growth=1.1, steps=500):
    """Least root of L = A1 + A2 B + (D − 1)/E t(B), B = λ L (vectorised walk up by
    ``growth`` from the zero-coverage, no-roofline lower bound, then bisection); +inf where
    λ C2(B) reaches 1 above f(L) > L (no root)."""
    from bayes_sd import phases

    a1, a2 = phases.prefill(tm, phi_p)
    cyc = (dl - 1.0) / e
    shape = np.broadcast(a1, a2, tm.t1, lam).shape

    def g(x):  # f(L) − L, and λ (A2 + cycles · slope bound) (see _step)
        b = lam * x
        phi_v, phi_d = _coverage(moe, log_q, k, b)
        t, _, _ = phases.step_time(tm, k, b, phi_v, phi_d)
        t2 = tm.t2 if tm.gv2 is None else tm.t2 + phi_v * tm.gv2 + phi_d * tm.gd2
        bound = np.maximum(t2, tm.roof * (k + 1.0))
        return a1 + a2 * b + cyc * t - x, lam * (a2 + cyc * bound)

    with np.errstate(divide="ignore", invalid="ignore"):
        slack = 1.0 - lam * (a2 + cyc * tm.t2)
        lo = np.broadcast_to(np.where(slack > 0, (a1 + cyc * tm.t1) / slack, np.inf), shape)
    hi = lo.copy()
    found = ~np.isfinite(lo)
    saturated = found.copy()
    value, util = g(np.where(found, 1.0, lo))
    done = found | (value <= 0)
    prev_x, prev_g = np.zeros(shape), np.full(shape, np.inf)
    for _ in range(steps):
        todo = ~done
        if not todo.any():
            break
        # a step of at most `growth`, and no further than where the secant through the last two
        # points meets zero while g falls (for a locally convex g that point is not past the
        # root: a narrow dip below zero, where a near-tangent root sits, is not stepped over)
        cand = hi * growth
        falling = todo & (value < prev_g) & np.isfinite(prev_g)
        with np.errstate(divide="ignore", invalid="ignore"):
            secant = hi - value * (hi - prev_x) / (value - prev_g)
        cand = np.where(falling & (secant > hi), np.minimum(cand, secant), cand)
        cand = np.where(todo, cand, hi)
        prev_x, prev_g = np.where(todo, hi, prev_x), np.where(todo, value, prev_g)
        value, util = g(cand)
        below = todo & (value <= 0)
        over = todo & ~below & (util >= 1.0)
        lo = np.where(todo & ~below, cand, lo)
        hi = np.where(todo, cand, hi)
        done |= below | over
        saturated |= over
    saturated |= ~done
    lo = np.where(lo > hi, hi, lo)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        above = g(mid)[0] > 0
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
        if not np.any(hi - lo > 1e-13 * hi):
            break
    return np.where(saturated, np.inf, hi)
