"""The latency algebra of speculative decoding under load (docs/science.md).

Plain functions on NumPy arrays, which broadcast over posterior draws, and on PyTensor tensors,
so one formula serves the PyMC model and the posterior-draw predictions alike. A function is in
PyTensor mode when any argument is a PyTensor variable; it then builds a graph and does no input
checks (the model's priors keep values in range). In NumPy mode inputs are checked and bad
values raise ``ValueError`` (:mod:`bayes_sd._backend`).

The demand coefficients (:class:`~bayes_sd.coefs.Coefficients`) are named in
:data:`bayes_sd.coefs.COEFS`.

Notation (per request): ``k`` draft length, ``E`` expected tokens committed per draft–verify
cycle (vLLM's acceptance length, bonus token included), ``D`` output tokens (decode length),
``P`` prompt tokens, ``λ`` request rate (req/s), ``N`` concurrency, ``B`` requests in flight.

    C1 = c1p + (D / E) (c1v + [k>0] c1s + k c1d)     load-independent latency (s)
    C2 = c2p + (D / E) (c2v (1 + η k) + [k>0] c2s + k c2d)     per request in flight (s)
    open loop:   L(λ) = C1 / (1 − λ C2)     for λ < 1 / C2, +inf beyond (saturated)
    closed loop: L(N) = C1 + N C2,  throughput N / L(N)

``η`` (``verify_share``) prices each verified draft token per request as a share of the
one-token pass (:func:`cycle_terms`); 0 gives the paper's law.

Saturated inputs give ``+inf`` latency (never a negative one); speedups that involve a saturated
system follow IEEE division (finite/inf = 0, inf/finite = inf, inf/inf = nan).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bayes_sd._backend import check as _check
from bayes_sd._backend import numeric as _numeric
from bayes_sd._backend import ops as _ops

# acceptance has its own module; its functions stay importable from here
from bayes_sd.acceptance import (
    acceptance_rate,
    alpha_from_tokens_per_cycle,
    tokens_per_cycle,
    tokens_per_cycle_from_rate,
    tokens_per_cycle_positional,
)
from bayes_sd.coefs import COEFS, Coefficients

__all__ = [
    "Coefficients",
    "acceptance_rate",
    "alpha_from_tokens_per_cycle",
    "break_even_rate",
    "closed_loop_latency",
    "closed_loop_speedup",
    "closed_loop_throughput",
    "coverage_weighted",
    "cycle_terms",
    "demand",
    "expert_coverage",
    "max_rate_under_slo",
    "moe_closed_loop_latency",
    "moe_demand",
    "moe_open_loop_latency",
    "moe_saturation_rate",
    "open_loop_latency",
    "open_loop_latency_smooth",
    "per_request",
    "saturation_rate",
    "speedup",
    "speedup_from_ratios",
    "sustainable_rate_ratio",
    "tokens_per_cycle",
    "tokens_per_cycle_from_rate",
    "tokens_per_cycle_positional",
]


# --------------------------------------------------------------------------------------------
# Demand and latency


def cycle_terms(coefs: Coefficients, k: Any, verify_share: Any = 0.0) -> tuple[Any, ...]:
    """``(A1, B1, A2, B2)``: per request ``A`` (prefill) and per cycle ``B`` (one draft–verify
    cycle) at each level, so that ``C = A + cycles · B``:
    ``A = c_p``, ``B1 = c1v + [k>0] c1s + k c1d``,
    ``B2 = c2v (1 + η k) + [k>0] c2s + k c2d`` with ``η`` = ``verify_share``: each draft token
    the target verifies costs a request a share ``η`` of its one-token pass (attention of one
    more query over its context, its logits and acceptance test); 0 in the published law (no
    input checks: see :func:`demand`)."""
    ops = _ops(*coefs, k)
    sd = ops.where(k > 0, 1.0, 0.0)  # the verification premium is paid only with drafts
    b1 = coefs.c1v + sd * coefs.c1s + k * coefs.c1d
    b2 = coefs.c2v * (1.0 + verify_share * k) + sd * coefs.c2s + k * coefs.c2d
    return coefs.c1p, b1, coefs.c2p, b2


def per_request(a: Any, b: Any, cycles: Any) -> Any:
    """``A + cycles · B``: a level of demand from its per-request and per-cycle terms."""
    return a + cycles * b


def _demand(coefs: Coefficients, k: Any, tokens: Any, decode_len: Any,
            verify_share: Any = 0.0) -> tuple[Any, Any]:  # fmt: skip
    a1, b1, a2, b2 = cycle_terms(coefs, k, verify_share)
    cycles = decode_len / tokens
    return per_request(a1, b1, cycles), per_request(a2, b2, cycles)


def demand(coefs: Coefficients, k: Any, tokens: Any, decode_len: Any,
           verify_share: Any = 0.0) -> tuple[Any, Any]:  # fmt: skip
    """Combine the coefficients into ``(C1, C2)`` for draft length ``k``.

    ``tokens`` is the expected tokens per cycle (1 for k = 0), ``decode_len`` the output tokens:
    ``C = A + (D / E) B`` with the terms of :func:`cycle_terms` (``verify_share``: its ``η``).
    The one implementation of the demand formula (the prediction kernel,
    :mod:`bayes_sd._kernels`, is its compiled copy).
    """
    ops = _ops(*coefs, k, tokens, decode_len)
    if not ops.tensor:
        for name, value in zip(COEFS, coefs, strict=True):
            _numeric(name, value, low=0.0)
        k = _numeric("k", k, low=0.0)
        tokens = _numeric("tokens per cycle", tokens, low=1.0)
        decode_len = _numeric("decode_len", decode_len, low=0.0)
        verify_share = _numeric("verify_share", verify_share, low=0.0)
    return _demand(coefs, k, tokens, decode_len, verify_share)


def open_loop_latency(c1: Any, c2: Any, rate: Any) -> Any:
    """Mean latency under Poisson arrivals: ``C1 / (1 − λ C2)``; ``+inf`` for ``λ ≥ 1 / C2``."""
    ops = _ops(c1, c2, rate)
    if ops.tensor:
        c1, c2, rate = ops.convert(c1, c2, rate)
    else:
        c1 = _numeric("C1", c1, low=0.0)
        c2 = _numeric("C2", c2, low=0.0)
        rate = _numeric("rate", rate, low=0.0)
    slack = 1.0 - rate * c2
    stable = slack > 0
    return ops.where(stable, c1 / ops.where(stable, slack, 1.0), np.inf)


def open_loop_latency_smooth(c1: Any, c2: Any, rate: Any, width: float = 0.02) -> Any:
    """``C1 / softplus_w(1 − λ C2)``: the open-loop latency with a smooth floor on the slack.

    Equal to :func:`open_loop_latency` (to within ``e^{-slack/width}``) where the system is
    stable, finite and differentiable beyond — for likelihoods, where a sampler may wander past
    ``1/C2`` and must be pushed back by a gradient rather than meet ``+inf``.
    """
    ops = _ops(c1, c2, rate)
    slack = 1.0 - rate * c2
    if ops.tensor:
        soft = width * ops.pt.softplus(slack / width)
    else:
        soft = width * np.logaddexp(0.0, np.asarray(slack, dtype=float) / width)
    return c1 / soft


def closed_loop_latency(c1: Any, c2: Any, concurrency: Any) -> Any:
    """Mean latency at fixed concurrency ``N``: ``C1 + N C2``."""
    ops = _ops(c1, c2, concurrency)
    if ops.tensor:
        c1, c2, concurrency = ops.convert(c1, c2, concurrency)
    else:
        c1 = _numeric("C1", c1, low=0.0)
        c2 = _numeric("C2", c2, low=0.0)
        concurrency = _numeric("concurrency", concurrency, low=0.0)
    return c1 + concurrency * c2


def closed_loop_throughput(c1: Any, c2: Any, concurrency: Any) -> Any:
    """Request throughput at fixed concurrency: ``N / (C1 + N C2)`` (req/s)."""
    return concurrency / closed_loop_latency(c1, c2, concurrency)


def saturation_rate(c2: Any) -> Any:
    """The highest sustainable open-loop rate ``1 / C2`` (req/s)."""
    ops = _ops(c2)
    if ops.tensor:
        (c2,) = ops.convert(c2)
    else:
        c2 = _numeric("C2", c2, low=0.0)
        with np.errstate(divide="ignore"):
            return 1.0 / c2
    return 1.0 / c2


def sustainable_rate_ratio(c2_base: Any, c2_sd: Any) -> Any:
    """Ratio of sustainable rates, SD over baseline: ``1 / C2R = C2_base / C2_SD``."""
    return saturation_rate(c2_sd) / saturation_rate(c2_base)


def max_rate_under_slo(c1: Any, c2: Any, slo: Any) -> Any:
    """Highest open-loop rate whose mean latency is at most ``slo`` seconds.

    The inverse of :func:`open_loop_latency`: ``(1 − C1 / slo) / C2``, and 0 when even a lone
    request takes longer than ``slo``.
    """
    ops = _ops(c1, c2, slo)
    if ops.tensor:
        c1, c2, slo = ops.convert(c1, c2, slo)
    else:
        c1 = _numeric("C1", c1, low=0.0)
        c2 = _numeric("C2", c2, low=0.0)
        slo = _numeric("slo", slo, low=0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = (1.0 - c1 / slo) / c2
        return np.where(slo > c1, rate, 0.0)
    return ops.where(slo > c1, (1.0 - c1 / slo) / c2, 0.0)


# --------------------------------------------------------------------------------------------
# Speedup and break-even


def speedup(c1_base: Any, c2_base: Any, c1_sd: Any, c2_sd: Any, rate: Any) -> Any:
    """Open-loop speedup ``L_base(λ) / L_SD(λ)`` at the same request rate."""
    ops = _ops(c1_base, c2_base, c1_sd, c2_sd, rate)
    base = open_loop_latency(c1_base, c2_base, rate)
    sd = open_loop_latency(c1_sd, c2_sd, rate)
    if not ops.tensor:
        with np.errstate(divide="ignore", invalid="ignore"):
            return base / sd
    return base / sd


def speedup_from_ratios(c1_ratio: Any, c2_ratio: Any, utilisation: Any) -> Any:
    """Speedup from ``C1R = C1_SD/C1_base``, ``C2R = C2_SD/C2_base`` and ``r = λ C2_base``.

    ``(1 / C1R) · [1 + (1 − C2R) r / (1 − r)]`` (model.md §3) while both systems are stable;
    ``+inf`` when only the baseline is saturated, 0 when only SD is, NaN when both are.
    """
    ops = _ops(c1_ratio, c2_ratio, utilisation)
    if ops.tensor:
        c1_ratio, c2_ratio, utilisation = ops.convert(c1_ratio, c2_ratio, utilisation)
    else:
        c1_ratio = _numeric("C1R", c1_ratio, low=0.0)
        c2_ratio = _numeric("C2R", c2_ratio, low=0.0)
        utilisation = _numeric("utilisation", utilisation, low=0.0)
    base_ok = utilisation < 1.0
    sd_ok = utilisation * c2_ratio < 1.0
    safe_r = ops.where(base_ok, utilisation, 0.0)
    stable = (1.0 / c1_ratio) * (1.0 + (1.0 - c2_ratio) * safe_r / (1.0 - safe_r))
    only_base_saturated = ops.where(sd_ok, np.inf, np.nan)
    return ops.where(base_ok, ops.where(sd_ok, stable, 0.0), only_base_saturated)


def break_even_rate(c1_base: Any, c2_base: Any, c1_sd: Any, c2_sd: Any) -> Any:
    """The request rate at which SD and the baseline have equal mean latency.

    ``λ* = r* / C2_base`` with ``r* = (1 − C1R) / (C2R − C1R)`` (model.md §3). Where the two
    latency curves do not cross below saturation the answer is ``+inf`` when SD wins at every
    sustainable load (``C1R < 1`` and ``C2R ≤ 1``) and ``0`` when it never wins
    (``C1R ≥ 1`` and ``C2R ≥ 1``). When ``C1R > 1 > C2R``, λ* is where SD *starts* winning.
    """
    ops = _ops(c1_base, c2_base, c1_sd, c2_sd)
    if ops.tensor:
        c1_base, c2_base, c1_sd, c2_sd = ops.convert(c1_base, c2_base, c1_sd, c2_sd)
    else:
        c1_base = _numeric("C1_base", c1_base, low=0.0)
        c2_base = _numeric("C2_base", c2_base, low=0.0)
        c1_sd = _numeric("C1_SD", c1_sd, low=0.0)
        c2_sd = _numeric("C2_SD", c2_sd, low=0.0)
    c1r = c1_sd / c1_base
    c2r = c2_sd / c2_base
    wins_low = c1r < 1.0
    always = wins_low & (c2r <= 1.0)
    never = ~wins_low & (c2r >= 1.0)
    crosses = ~always & ~never
    denom = ops.where(crosses, c2r - c1r, 1.0)
    r_star = (1.0 - c1r) / denom
    crossing = r_star / c2_base
    return ops.where(always, np.inf, ops.where(never, 0.0, crossing))


def closed_loop_speedup(
    c1_base: Any, c2_base: Any, c1_sd: Any, c2_sd: Any, concurrency: Any
) -> Any:
    """Closed-loop speedup ``(C1_base + N C2_base) / (C1_SD + N C2_SD)``; tends to ``1/C2R``."""
    return closed_loop_latency(c1_base, c2_base, concurrency) / closed_loop_latency(
        c1_sd, c2_sd, concurrency
    )


# --------------------------------------------------------------------------------------------
# Mixture of experts


def expert_coverage(tokens: Any, experts: Any, experts_per_token: Any) -> Any:
    """Expected fraction of experts touched by ``tokens`` routed tokens: ``1 − (1 − m/M)^T``.

    Independent routing of each token to ``m`` of ``M`` experts (model.md §4). 0 at T = 0,
    increasing and concave in T, tending to 1.
    """
    ops = _ops(tokens, experts, experts_per_token)
    if ops.tensor:
        tokens, experts, experts_per_token = ops.convert(tokens, experts, experts_per_token)
    else:
        tokens = _numeric("routed tokens", tokens, low=0.0)
        experts = _numeric("experts", experts, low=1.0)
        experts_per_token = _numeric("experts_per_token", experts_per_token, low=1.0)
        _check(experts_per_token <= experts, "experts_per_token must be <= experts")
    return 1.0 - (1.0 - experts_per_token / experts) ** tokens


def coverage_weighted(increment: Coefficients, phi_p: Any, phi_v: Any, phi_d: Any):
    """The MoE coverage part ``φ · c_s`` of each coefficient (model.md §4): the prefill's at
    ``φ_p``, verification's and its premium's at ``φ_v``, drafting's at ``φ_d``."""
    phi = {"p": phi_p, "v": phi_v, "s": phi_v, "d": phi_d}
    return Coefficients(**{c: phi[c[-1]] * getattr(increment, c) for c in COEFS})


def moe_demand(
    unsaturated: Coefficients,
    increment: Coefficients,
    k: Any,
    tokens: Any,
    decode_len: Any,
    batch: Any,
    experts: Any,
    experts_per_token: Any,
    prefill_len: Any,
    verify_share: Any = 0.0,
) -> tuple[Any, Any]:
    """``(C1, C2)`` of an MoE target with ``batch`` requests in flight.

    Each coefficient is ``c_u + φ(T) c_s`` (model.md §4) with the routed tokens per forward pass
    ``T = max(B, 1)(k + 1)`` for verification and its premium (a request in flight is always in
    its own batch),
    ``T = P`` for the prefill of one prompt and ``T = max(B, 1)`` for a drafting step (if the
    drafter is dense, give it a zero increment).
    """
    ops = _ops(*unsaturated, *increment, k, tokens, decode_len, batch, prefill_len)
    if not ops.tensor:
        batch = _numeric("batch", batch, low=0.0)
    in_batch = ops.where(batch > 1.0, batch, 1.0)
    phi_v = expert_coverage(in_batch * (k + 1.0), experts, experts_per_token)
    phi_p = expert_coverage(prefill_len, experts, experts_per_token)
    phi_d = expert_coverage(in_batch, experts, experts_per_token)
    coefs = unsaturated.map(lambda u, s: u + s, coverage_weighted(increment, phi_p, phi_v, phi_d))
    return demand(coefs, k, tokens, decode_len, verify_share)


def moe_closed_loop_latency(
    unsaturated: Coefficients,
    increment: Coefficients,
    k: Any,
    tokens: Any,
    decode_len: Any,
    concurrency: Any,
    experts: Any,
    experts_per_token: Any,
    prefill_len: Any,
    verify_share: Any = 0.0,
) -> Any:
    """MoE mean latency at fixed concurrency ``N``: ``C1(N) + N C2(N)``."""
    c1, c2 = moe_demand(unsaturated, increment, k, tokens, decode_len, concurrency, experts,
                        experts_per_token, prefill_len, verify_share)  # fmt: skip
    return c1 + concurrency * c2


def moe_saturation_rate(
    unsaturated: Coefficients, increment: Coefficients, k: Any, tokens: Any, decode_len: Any,
    verify_share: Any = 0.0,
) -> Any:  # fmt: skip
    """Sustainable open-loop rate of an MoE target: ``1 / C2`` with every expert read (φ = 1)."""
    _, c2 = demand(unsaturated.map(lambda u, s: u + s, increment), k, tokens, decode_len,
                   verify_share)  # fmt: skip
    return saturation_rate(c2)


def moe_open_loop_latency(
    unsaturated: Coefficients,
    increment: Coefficients,
    k: Any,
    tokens: Any,
    decode_len: Any,
    rate: Any,
    experts: Any,
    experts_per_token: Any,
    prefill_len: Any,
    verify_share: Any = 0.0,
    *,
    growth: float = 1.1,
    max_growth_steps: int = 500,
    bisection_steps: int = 64,
) -> np.ndarray:
    """MoE mean latency under Poisson arrivals at ``rate`` (NumPy only; vectorised).

    Solves ``L = C1(B) + B C2(B)`` with ``B = λ L`` (model.md §4) and returns its least root —
    the operating point reached as load rises from zero — or ``+inf`` where there is none
    (saturated). The least root lies above ``L_lo = C1_u / (1 − λ C2_u)`` (coverage ≥ 0), so the
    solver walks up from ``L_lo`` by factors of ``growth`` until ``f(L) < L``, then bisects
    (two roots within one factor of ``growth`` would be missed: with 1.5 a posterior draw of an
    unseen GPU had its least root in a dip of g narrower than that, which predict's Newton
    kernel found), and stops where the utilisation ``λ C2(B)`` reaches 1 above ``f(L) > L``:
    no root lies beyond (saturated).
    """
    arrays = np.broadcast_arrays(
        *(np.asarray(c, dtype=float) for c in (*unsaturated, *increment)),
        *(
            np.asarray(v, dtype=float)
            for v in (k, tokens, decode_len, rate, experts, experts_per_token, prefill_len)
        ),
    )
    nc = len(COEFS)
    unsat = Coefficients.from_values(arrays[:nc])
    incr = Coefficients.from_values(arrays[nc : 2 * nc])
    k, tokens, decode_len, rate, experts, experts_per_token, prefill_len = arrays[2 * nc :]
    _numeric("rate", rate, low=0.0)
    for name, value in zip(COEFS * 2, (*unsat, *incr), strict=True):
        _numeric(name, value, low=0.0)
    expert_coverage(prefill_len, experts, experts_per_token)  # checks the MoE shape

    # Everything but the coverage of verification and drafting is constant in B: precompute it.
    with np.errstate(divide="ignore"):  # dense (m = M): log q = −inf, φ = 1 for T > 0
        log_q = np.log1p(-experts_per_token / experts)  # φ(T) = 1 − exp(T log q)
    phi_p = 1.0 - np.exp(prefill_len * log_q)
    zero = np.zeros_like(phi_p)
    fixed = unsat.map(lambda u, s: u + s, coverage_weighted(incr, phi_p, zero, zero))
    base1, base2 = _demand(fixed, k, tokens, decode_len, verify_share)

    def excess(lat: np.ndarray, util: bool = False):  # f(L) − L with B = λL (and λ C2(B))
        batch = np.maximum(rate * lat, 1.0)
        phi_v = 1.0 - np.exp(batch * (k + 1.0) * log_q)
        phi_d = 1.0 - np.exp(batch * log_q)
        extra1, extra2 = _demand(coverage_weighted(incr, zero, phi_v, phi_d), k, tokens, decode_len,
                                 verify_share)  # fmt: skip
        c1, c2 = base1 + extra1, base2 + extra2
        g = c1 + rate * lat * c2 - lat
        return (g, rate * c2) if util else g

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lower = open_loop_latency(base1, base2, rate)  # no coverage in v and d: a lower bound
        # f is increasing, so the least root L* >= L_lo also satisfies L* = f(L*) >= f(L_lo).
        finite = np.isfinite(lower)
        lower = np.where(finite, excess(np.where(finite, lower, 0.0)) + lower, np.inf)
        hi = np.where(finite, lower, np.nan)
        lo = hi.copy()
        found = ~finite  # saturated even without coverage: nothing to search
        saturated = ~finite
        for _ in range(max_growth_steps):
            todo = ~found
            if not todo.any():
                break
            cand = np.where(todo, hi * growth, hi)
            g, util = excess(cand, util=True)
            below = todo & (g <= 0.0)
            # λ C2(B) >= 1 with f(L) > L: f(L') − L' >= C1 > 0 for all L' >= L (C1, C2 grow
            # with B), so no root lies above: saturated, nothing more to walk
            over = todo & ~below & (util >= 1.0)
            lo = np.where(todo & ~below, cand, lo)
            hi = np.where(todo, cand, hi)
            found |= below | over
            saturated |= over
        for _ in range(bisection_steps):
            mid = 0.5 * (lo + hi)
            above = excess(mid) > 0.0
            lo = np.where(above, mid, lo)
            hi = np.where(above, hi, mid)
            # per element: a tolerance relative to the largest latency stopped short rows early
            if not np.any(hi - lo > 1e-13 * hi):  # NaN (nothing to search) compares False
                break
    return np.where(found & ~saturated, hi, np.inf)
