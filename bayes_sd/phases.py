"""TTFT, TPOT and end-to-end latency from one set of coefficients, with the load law of real
engines (docs/serving.md §2–3). NumPy (posterior draws) and PyTensor (inside the model).

With ``B`` requests running on one engine, one engine step (a decode or a draft–verify cycle)
costs

    t(B) = smoothmax( mem(B), comp(B) )
    mem(B)  = T1(B) + B T2(B)                       memory-bound: weights once, KV per request
    comp(B) = c1v_full (N_active / N_total) B (k + 1) / T*     compute-bound (roofline)

with ``T1 = c1v + [k>0] c1s + k c1d``, ``T2 = c2v (1 + η k) + [k>0] c2s + k c2d``
(:func:`bayes_sd.latency.cycle_terms`; ``η``, ``verify_share``: each verified draft token
costs a request a share of its one-token pass), their MoE coverage increments at ``φ(B (k+1))``
(concave: coverage saturates), ``c1v_full`` the weight read with every expert touched and
``T*`` the tokens per step at which a dense model's step turns compute-bound (FLOPs over
bandwidth, ~250 on current GPUs). The smooth maximum is
``(mem^p + comp^p)^(1/p)`` (``p`` = :data:`ROOF_P`). Prefill: ``A1 = c1p``, ``A2 = c2p`` (with
prefill coverage for MoE): another request's prefill stalls everyone in flight, a share ``θ``
of it before one's first token and ``1 − θ`` during one's decode. Then, with ``E`` tokens per
cycle and ``D`` output tokens (the first comes with the prefill, ``(D − 1) / E`` cycles
follow):

    TTFT = W + A1 + θ A2 B
    TPOT = t(B) / E + (1 − θ) A2 B / (D − 1)
    E2E  = TTFT + (D − 1) TPOT = W + A1 + A2 B + (D − 1)/E · t(B)

**Closed loop** (``N`` requests kept in flight over ``n`` engines): beyond the engine's capacity
``K`` requests wait; the running batch is ``B = smoothmin(N/n, K)`` and, by Little's law on the
queue, the wait is ``W = (N/n − B) · L_svc(B) / B``: TTFT grows, TPOT levels off.
**The opening wave** of a closed-loop benchmark: the client starts its ``N`` requests at once,
and their prompts queue for prefill together — the last waits for all of them, one of them
on average for a share ``κ`` (``burst_share``: ~1/2 with chunked prefill, 1 when they are
prefilled in one pass). The wave's ``B`` prompts cost ``B A2``: ``A2``, the prefill one more
request in flight adds, is a prefill's marginal cost in a busy engine (``A1`` carries the fixed
costs of a pass of its own, which a batch of prompts shares: with ``A1`` the held-out
InferenceX TTFT erred by 67% at the median, 40% without a wave). A share ``f`` of the run's
requests (``f = N / requests``, :func:`bayes_sd.laws.opening_fraction`; 0 in the steady
state) therefore adds
``f κ B A2`` to the run's mean TTFT and E2E (not to TPOT): measured on the simulator, the
opening wave was 1/6 of a run's requests and 95% of its mean TTFT at 256 in flight. The wave
sits in the run's top percentiles (``wave``, its part of the mean; :func:`bayes_sd.laws.
wave_log_ratios`). Off by default (``burst_share`` fixed at 0, :mod:`bayes_sd.priors`): its
form is not settled.
**Open loop** (rate ``λ`` over ``n`` engines): ``B = λ E2E / n`` (a fixed point, solved in
prediction; in the likelihood the load-dependent terms are taken at the measured batch, as for
the MoE coverage), ``W = 0``; saturation is where no fixed point exists.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from bayes_sd import latency
from bayes_sd._backend import ops as _ops
from bayes_sd.coefs import Coefficients

__all__ = [
    "ROOF_P",
    "SOFTMIN_P",
    "Phases",
    "StepTerms",
    "closed_loop_phases",
    "open_loop_phases",
    "prefill",
    "smooth_max",
    "smooth_min",
    "step_terms",
    "step_time",
]

ROOF_P = 4.0  # sharpness of the roofline's kink: 1.19x the larger term where both are equal
# (the prediction kernel computes (a^4 + b^4)^(1/4) by powers: change it with ROOF_P)
SOFTMIN_P = 8.0  # sharpness of the capacity: at half the capacity, B is 0.1% below N


def smooth_max(a: Any, b: Any, p: float = ROOF_P) -> Any:
    """``(a^p + b^p)^(1/p)`` for positive ``a, b``, computed on the log scale (no overflow)."""
    ops = _ops(a, b)
    if ops.tensor:
        pt = ops.pt
        return pt.exp(pt.logaddexp(p * pt.log(a), p * pt.log(b)) / p)
    with np.errstate(divide="ignore"):
        return np.exp(np.logaddexp(p * np.log(a), p * np.log(b)) / p)


def smooth_min(a: Any, b: Any, p: float = SOFTMIN_P) -> Any:
    """``(a^-p + b^-p)^(-1/p)`` for positive ``a, b``: below both, equal to the smaller far
    from the other (an infinite ``b`` gives ``a``)."""
    ops = _ops(a, b)
    if ops.tensor:
        pt = ops.pt
        return pt.exp(-pt.logaddexp(-p * pt.log(a), -p * pt.log(b)) / p)
    with np.errstate(divide="ignore"):
        return np.exp(-np.logaddexp(-p * np.log(a), -p * np.log(b)) / p)


class StepTerms(NamedTuple):
    """The per-request (``a``, prefill) and per-cycle (``t``) terms of one series at each level
    (``1`` load-independent, ``2`` per request in flight), their MoE coverage increments (``h``
    prefill, ``gv`` verification, ``gd`` drafting; None for dense targets), and ``roof``, the
    compute time per verified token once the step is compute-bound."""

    a1: Any
    a2: Any
    t1: Any
    t2: Any
    roof: Any
    h1: Any = None
    h2: Any = None
    gv1: Any = None
    gv2: Any = None
    gd1: Any = None
    gd2: Any = None


def step_terms(
    coefs: Coefficients,
    increment: Coefficients | None,
    k: Any,
    *,
    active_share: Any = 1.0,
    kink_tokens: Any = np.inf,
    verify_share: Any = 0.0,
) -> StepTerms:
    """The :class:`StepTerms` of coefficients (and MoE increments) at draft length ``k``: the
    memory terms by :func:`bayes_sd.latency.cycle_terms` (``verify_share``: its ``η``), the
    roofline's compute time per token ``c1v_full · N_active / N_total / T*``."""
    a1, t1, a2, t2 = latency.cycle_terms(coefs, k, verify_share)
    if increment is None:
        return StepTerms(a1, a2, t1, t2, coefs.c1v * active_share / kink_tokens)
    zero = 0.0 * increment.c1v
    verify = increment._replace(c1d=zero, c2d=zero)
    draft = increment._replace(c1v=zero, c2v=zero, c1s=zero, c2s=zero)
    _, gv1, _, gv2 = latency.cycle_terms(verify, k, verify_share)
    _, gd1, _, gd2 = latency.cycle_terms(draft, k)
    roof = (coefs.c1v + increment.c1v) * active_share / kink_tokens
    return StepTerms(a1, a2, t1, t2, roof, increment.c1p, increment.c2p, gv1, gv2, gd1, gd2)


def step_time(terms: StepTerms, k: Any, batch: Any, phi_v: Any = 0.0, phi_d: Any = 0.0):
    """``(t(B), T1(B), C2(B))``: the time of one engine step with ``batch`` requests running
    (memory- or compute-bound, smoothly), its load-independent part, and the per-request slope
    ``(t − T1) / B`` (``T2`` plus the roofline's excess over the memory time, per request), at
    coverages ``φ_v``, ``φ_d``."""
    ops = _ops(*terms[:5], batch)
    t1, t2 = terms.t1, terms.t2
    if terms.gv1 is not None:
        t1 = t1 + phi_v * terms.gv1 + phi_d * terms.gd1
        t2 = t2 + phi_v * terms.gv2 + phi_d * terms.gd2
    mem = t1 + batch * t2
    t = smooth_max(mem, terms.roof * batch * (k + 1.0))
    excess = t - mem
    excess = ops.where(excess > 0, excess, 0.0)  # the smooth maximum is never below mem
    return t, t1, t2 + excess / batch


def prefill(terms: StepTerms, phi_p: Any = 0.0) -> tuple[Any, Any]:
    """``(A1, A2)``: prefill per request and per request in flight, MoE coverage included."""
    if terms.h1 is None:
        return terms.a1, terms.a2
    return terms.a1 + phi_p * terms.h1, terms.a2 + phi_p * terms.h2


class Phases(dict):
    """``ttft``, ``tpot``, ``latency`` (E2E), ``batch`` (running per engine), ``wait``,
    ``wave`` (the opening wave's part of the mean TTFT and E2E), ``throughput`` (requests/s,
    all engines) — arrays of one shape."""


def closed_loop_phases(
    terms: StepTerms,
    *,
    k: Any,
    tokens: Any,
    decode_len: Any,
    concurrency: Any,
    engines: Any = 1.0,
    capacity: Any = np.inf,
    ttft_share: Any = 0.5,
    coverage: tuple[Any, Any, Any] = (0.0, 0.0, 0.0),
    opening: Any = 0.0,
) -> Phases:
    """The phases at fixed concurrency (see the module docstring). ``coverage`` is
    ``(φ_p, φ_v, φ_d)`` at the running batch (unused for dense targets); ``opening`` is
    ``f κ``, the opening wave's share of the run times the share of its prefill a request of
    it waits for (0: the steady state)."""
    per_engine = concurrency / engines
    batch = smooth_min(per_engine, capacity)
    phi_p, phi_v, phi_d = coverage
    a1, a2 = prefill(terms, phi_p)
    t, _, _ = step_time(terms, k, batch, phi_v, phi_d)
    decode = decode_len - 1.0
    service = a1 + a2 * batch + decode / tokens * t
    wait = (per_engine - batch) * service / batch
    wave = opening * batch * a2  # the opening wave's prefill queue, averaged over the run
    ttft = wait + wave + a1 + ttft_share * a2 * batch
    tpot = t / tokens + (1.0 - ttft_share) * a2 * batch / decode
    return Phases(ttft=ttft, tpot=tpot, latency=wait + wave + service, batch=batch, wait=wait,
                  wave=wave, throughput=engines * batch / service)  # fmt: skip


def open_loop_phases(
    terms: StepTerms,
    *,
    k: Any,
    tokens: Any,
    decode_len: Any,
    rate: Any,
    batch: Any,
    engines: Any = 1.0,
    ttft_share: Any = 0.5,
    coverage: tuple[Any, Any, Any] = (0.0, 0.0, 0.0),
    smooth_width: float | None = None,
) -> Phases:
    """The phases at request rate ``rate`` with the load-dependent terms (coverage, roofline)
    taken at ``batch`` requests per engine — the measured one in a likelihood, the fixed point
    in prediction. E2E is ``C1 / (1 − λ C2)`` with ``C1 = A1 + cycles T1`` and the per-request
    slope ``C2 = A2 + cycles (t(B) − T1) / B`` at that batch; ``smooth_width`` gives the
    smooth floor of :func:`bayes_sd.latency.open_loop_latency_smooth` (for likelihoods)."""
    ops = _ops(*terms[:5], rate, batch)
    phi_p, phi_v, phi_d = coverage
    a1, a2 = prefill(terms, phi_p)
    _, t1, slope = step_time(terms, k, batch, phi_v, phi_d)
    decode = decode_len - 1.0
    cycles = decode / tokens
    c1 = a1 + cycles * t1
    c2 = a2 + cycles * slope
    lam = rate / engines
    if smooth_width is not None:
        e2e = latency.open_loop_latency_smooth(c1, c2, lam, smooth_width)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            e2e = latency.open_loop_latency(c1, c2, lam)
    in_flight = lam * e2e
    ttft = a1 + ttft_share * a2 * in_flight
    tpot = (e2e - ttft) / decode
    zero = 0.0 * e2e if ops.tensor else np.zeros_like(np.asarray(e2e, dtype=float))
    return Phases(ttft=ttft, tpot=tpot, latency=e2e, batch=in_flight, wait=zero, wave=zero,
                  throughput=rate + zero)  # fmt: skip
