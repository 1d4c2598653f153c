"""The model's laws, written once for PyTensor (inside the model) and NumPy (posterior draws,
simulated truth): the population law of the coefficients, the MoE coverage increment and the
noise scale of a measured mean latency.

**Coefficient law** (docs/model.md): for each coefficient ``c`` of :data:`~bayes_sd.coefs.COEFS`

    log c = intercept + slope · log size + gpu effect + length slope · length + shift

with ``size`` the parameters of the model doing the work over its reference (the target for
``p v s``, the drafter for ``d``), ``length`` ``log(P/1024)`` for prefill and
``log((P + D/2)/1024)`` for ``c2v`` and ``shift`` the configuration's residual.

**MoE increment**: a coefficient of an MoE target is ``c_u + φ(T) c_u ρ`` with
``ρ = e^excess ((N/N_active)^slope − 1)``: reading every expert costs what a dense model of the
total size would, times ``e^excess``.

**Tails** (per-run percentiles): for each metric (TTFT, TPOT, E2E) the log ratio of its p50,
p90 and p99 to its mean is a law of the run's load ``x = log(1 + B)``, ``B`` the requests in
flight per engine (queued ones included: ``N / n`` closed loop, ``λ L / n`` open loop):
``log p50/mean = a50 + b50 x``, ``log p90/p50 = exp(a90 + b90 x)``,
``log p99/p90 = exp(a99 + b99 x)`` — positive gaps, so p50 ≤ p90 ≤ p99 in every draw, and a
positive ``b`` stretches a tail as the queue grows (TTFT's first). The levels ``a`` are those of
an idle engine (``x = 0``, where their prior is); the model samples them at ``x0 = log 17``
(:data:`TAIL_LOAD_REF`: 16 requests in flight per engine, the median InferenceX load), where
the runs are (``bayes_sd.graph_side``). In the likelihood ``B`` is the
measured one, so the tails are a regression of their own and do not pull on the coefficients
(a load covariate computed from the model's queueing share did, and the InferenceX fit stopped
mixing: R-hat 1.89).

**The opening wave in the tails**: a closed-loop benchmark starts its ``N`` requests at once
(:mod:`bayes_sd.phases`, **The opening wave**); their prompts queue, and a request of the wave
waits a uniform share of the wave's span ``W = 2 κ B A2``. The wave holds a share ``f`` of the
run's requests, so it sits in the top ``f`` of the run's TTFT and E2E: the percentile ``q`` is
the steady state's (the tail law on the mean without the wave) plus ``u_q W``,
``u_q = max(0, 1 − (1 − q) / f)`` (:func:`wave_log_ratios`) — with ``f = 1/10`` (InferenceX, a
``vllm bench serve --num-prompts 10N``) the wave sets p99 (0.9 W) and leaves p50; at
``q = 1 − f`` (p90 there) the law gives the steady state's percentile where the mixture's is
higher (the wave's shortest waits overlap it) — the fitted steady tail absorbs that. Measured
on the InferenceX runs with a known request count, ``(p99 − p50) / (mean − p50)`` is 13–18 at 16
to 256 requests in flight (medians by load band), where the wave alone gives 18; where the
p99 grows with the load, ``(p99 − p50) / N`` stays within ±10% across a configuration's loads
(H200 with MTP, 8k/1k: 0.29, 0.30, 0.30 s at 16, 32, 64) — not on MI300X at 1k/1k, where a
~2 s stall sets the p99 at every load.

**Noise**: the measured log mean latency scatters with scale ``σ (1 + load_noise · share)``,
``share`` the queueing share of latency (``L/C1 − 1``, or ``N C2 / C1`` closed loop), capped at
:data:`QUEUE_SHARE_CAP` (utilisation 0.99): a finite run near saturation is much noisier.
TTFT's scale grows with the tails' load ``x = log(1 + B)`` instead (measured ``B`` in the
likelihood): its predicted share hinges on the loosely pinned split of prefill between the
run's own and the others' prompts, and a noise growing with it made a second posterior mode
(``bayes_sd.graph``, likelihoods).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bayes_sd._backend import ops as _ops
from bayes_sd.coefs import COEFS, LENGTH_COEFS

__all__ = [
    "QUEUE_SHARE_CAP",
    "TAILS",
    "TAIL_EFFECTS",
    "TAIL_LOAD_REF",
    "TAIL_METRICS",
    "TAIL_STATS",
    "length_covariates",
    "log_coefficients",
    "moe_ratio",
    "noise_scale",
    "opening_fraction",
    "predicted_load",
    "queue_share_closed",
    "queue_share_open",
    "requests_in_flight",
    "series_trend",
    "tail_load",
    "tail_log_ratios",
    "wave_log_ratios",
    "wave_position",
]

# The noise scale grows with the queueing share of latency, capped at utilisation 0.99 so
# far-off starting points of the sampler stay finite (likelihood and predict(noise=True)).
QUEUE_SHARE_CAP = 100.0
# the percentiles the tail law describes, per metric (coordinate ``tail`` of the model)
TAIL_METRICS = ("ttft", "tpot", "latency")
TAIL_STATS = ("p50", "p90", "p99")
TAILS = tuple(f"{m}_{q}" for m in TAIL_METRICS for q in TAIL_STATS)
TAIL_LEVELS = (0.5, 0.9, 0.99)  # the quantile of each of TAIL_STATS
# the load at which the model samples the tail law's levels (module docstring, **Tails**)
TAIL_LOAD_REF = float(np.log1p(16.0))
SERIES_K_REF = 3.0  # the draft length at which the series shifts' trend in k is 0
# the metrics whose percentiles hold the opening wave (it delays the first token, not the rest)
WAVE_METRICS = ("ttft", "latency")
# the categorical effects of the tail law's levels (hierarchical, each summing to zero, one
# spread per percentile term): the engine (schedulers order prefills differently) and the GPU
# type (InferenceX, SGLang: TTFT p50/mean 0.25-0.4 on MI300X and MI325X at every load, 0.8-1.0
# on B200 and B300 at light load)
TAIL_EFFECTS = ("engine", "gpu")


def length_covariates(prefill_len: Any, decode_len: Any) -> np.ndarray:
    """``(..., 3)`` length covariates in :data:`~bayes_sd.coefs.LENGTH_COEFS` order:
    ``log(P/1024)`` for ``c1p`` and ``c2p``, ``log((P + D/2)/1024)`` for ``c2v``."""
    p = np.asarray(prefill_len, dtype=float)
    d = np.asarray(decode_len, dtype=float)
    return np.stack(np.broadcast_arrays(np.log(p / 1024), np.log(p / 1024),
                                        np.log((p + d / 2) / 1024)), axis=-1)  # fmt: skip


def log_coefficients(
    intercept: Any,
    slope: Any,
    log_size: Any,
    gpu: Any,
    length_slope: Any = None,
    lengths: Any = None,
    names: tuple[str, ...] = COEFS,
) -> Any:
    """The population law (before residual shifts) of the coefficients ``names`` on the last
    axis: ``intercept + slope · log_size + gpu + length_slope · lengths``.

    ``intercept``, ``slope``, ``log_size`` and ``gpu`` broadcast against ``(..., len(names))``;
    ``length_slope`` and ``lengths`` against ``(..., 3)``, in ``LENGTH_COEFS`` order (only the
    coefficients in ``LENGTH_COEFS`` take a length term; not needed when ``names`` has none).
    NumPy or PyTensor alike."""
    ops = _ops(intercept, slope, log_size, gpu, length_slope, lengths)
    base = intercept + slope * log_size + gpu
    terms = {
        c: length_slope[..., i] * lengths[..., i] for i, c in enumerate(LENGTH_COEFS) if c in names
    }
    if not terms:  # no coefficient of ``names`` has a length covariate
        return base
    zero = ops.zeros_like(next(iter(terms.values())))
    return base + ops.stack([terms.get(c, zero) for c in names], axis=-1)


def moe_ratio(excess: Any, slope: Any, log_total_over_active: Any) -> Any:
    """``ρ = e^excess ((N/N_active)^slope − 1)``: the MoE coverage increment per unit of the
    unsaturated coefficient (0 for a dense target, N = N_active)."""
    ops = _ops(excess, slope, log_total_over_active)
    return ops.exp(excess) * (ops.exp(slope * log_total_over_active) - 1.0)


def queue_share_open(latency: Any, c1: Any) -> Any:
    """Queueing share of open-loop latency: ``L / C1 − 1`` (``λ C2 / (1 − λ C2)``)."""
    return latency / c1 - 1.0


def queue_share_closed(concurrency: Any, c1: Any, c2: Any) -> Any:
    """Queueing share of closed-loop latency: ``N C2 / C1``."""
    return concurrency * c2 / c1


def noise_scale(sigma: Any, load_noise: Any, share: Any) -> Any:
    """Scale of the noise on log mean latency: ``σ (1 + load_noise · min(share, cap))``."""
    ops = _ops(sigma, load_noise, share)
    return sigma * (1.0 + load_noise * ops.minimum(share, QUEUE_SHARE_CAP))


def opening_fraction(is_open: Any, concurrency: Any, n_requests: Any) -> np.ndarray:
    """The share of a closed-loop run's requests sent in its *opening wave*: a benchmark client
    keeping ``N`` requests in flight (``vllm bench serve --max-concurrency N``, InferenceX after
    its warm-up, the package's simulator) starts ``N`` at once, and their prompts queue for
    prefill together (:func:`bayes_sd.phases.closed_loop_phases`). ``min(N / requests, 1)``;
    0 in an open loop (arrivals spread out) and where the run's request count is unknown —
    the steady state a long-running service sees."""
    n = np.asarray(n_requests, dtype=float)
    conc = np.asarray(concurrency, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.minimum(conc / n, 1.0)
    known = ~np.asarray(is_open, dtype=bool) & (n > 0) & (conc > 0)
    return np.where(known, share, 0.0)


def requests_in_flight(is_open: Any, rate: Any, latency: Any, concurrency: Any,
                       engines: Any) -> Any:  # fmt: skip
    """Requests in flight per engine (queued ones included): ``λ L / n`` open loop (Little's
    law), ``N / n`` closed loop — measured in the design, predicted in ``predict``."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(is_open, rate * latency, concurrency) / engines


def predicted_load(is_open: Any, rate: Any, latency: Any, concurrency: Any,
                   engines: Any) -> np.ndarray:  # fmt: skip
    """:func:`tail_load` of the requests in flight at predicted latencies (NumPy, any shape
    that broadcasts): the load covariate of the percentiles and of TTFT's noise in
    ``predict`` (a saturated draw's infinite queue stays infinite, then clipped)."""
    in_flight = requests_in_flight(is_open, rate, latency, concurrency, engines)
    return tail_load(np.nan_to_num(in_flight, nan=0.0, posinf=np.inf))


def series_trend(slope: Any, k: Any) -> Any:
    """The mean of a series' level-2 shift at draft length ``k``: ``slope · (k − 3)``
    (:data:`SERIES_K_REF`). What the step law leaves out of a draft position's per-request
    cost — the verification of one more token per request is the target's cost, while
    ``k c2d`` follows the drafter's size — shows as series shifts that grow with k (the demo's
    held-out-series fold: −0.10, 0.00, +0.03, +0.11, +0.19 at k = 1, 2, 3, 5, 7, alike for
    three drafters, dense and MoE targets); with the trend an unseen k is predicted on it
    instead of at the law (docs/model.md, Residuals)."""
    return slope * (k - SERIES_K_REF)


def tail_load(in_flight: Any) -> Any:
    """The load covariate of the tail law: ``log(1 + B)``, ``B`` the requests in flight per
    engine, clipped to [0, 10^4] (a saturated draw's infinite queue stays finite here)."""
    ops = _ops(in_flight)
    return ops.log1p(ops.minimum(ops.maximum(in_flight, 0.0), 1e4))


def tail_log_ratios(level: Any, slope: Any, load: Any) -> list[Any]:
    """``[log p50/mean, log p90/mean, log p99/mean]`` of one metric from the tail law's
    ``level`` and ``slope`` (sequences of three terms, for p50 and the two gaps, each
    broadcasting against ``load``): the p50 term is a log ratio, the p90 and p99 terms log gaps
    (see the module's **Tails**). NumPy or PyTensor alike."""
    ops = _ops(load)
    r50 = level[0] + slope[0] * load
    r90 = r50 + ops.exp(level[1] + slope[1] * load)
    r99 = r90 + ops.exp(level[2] + slope[2] * load)
    return [r50, r90, r99]


def wave_position(level: float, fraction: Any) -> np.ndarray:
    """``u_q / f · 2``: where the percentile ``level`` of a run falls in its opening wave's
    span, over the wave's mean share ``f / 2`` — ``2 max(0, 1 − (1 − q) / f) / f``, 0 where the
    run has no wave (``f = 0``)."""
    f = np.asarray(fraction, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.maximum(0.0, 1.0 - (1.0 - level) / f)
        return np.where(f > 0, 2.0 * u / f, 0.0)


def wave_log_ratios(log_ratios: list[Any], wave_share: Any, fraction: Any) -> list[Any]:
    """The log ratios of :func:`tail_log_ratios` (percentile over mean) with the opening wave:
    ``log((1 − s) e^r + s · 2 u_q / f)``, ``s`` the wave's share of the mean (``f κ B A2`` over
    the mean; 0: unchanged), ``f`` the run's opening fraction (module docstring). NumPy or
    PyTensor alike."""
    ops = _ops(wave_share, *log_ratios)
    out = []
    for level, r in zip(TAIL_LEVELS, log_ratios, strict=True):
        position = wave_position(level, fraction)
        with np.errstate(divide="ignore"):
            out.append(ops.log((1.0 - wave_share) * ops.exp(r) + wave_share * position))
    return out
