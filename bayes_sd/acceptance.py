"""Acceptance: how many tokens one draft–verify cycle commits (docs/serving.md §4).

One home for every acceptance formula — the model, predictions, planning, the simulator and the
simulated demo sweep read it from here.

**Measured forms.** vLLM reports the acceptance length ``E`` (tokens per cycle, the bonus token
included), the acceptance rate ``(E − 1) / k`` and unconditional per-position rates ``r_i``
(accepted at position ``i`` / drafts): ``E = 1 + Σ_i r_i``.

**The positional law.** Acceptance is not i.i.d.: a draft position is reached only when every
earlier one was accepted, and later positions are accepted less often given that. With
conditional rates

    logit a_i = θ − δ (i − 1),   δ ≥ 0,   i = 1 … k

``r_i = Π_{j ≤ i} a_j`` and ``E(k) = 1 + Σ_{i ≤ k} r_i``. ``θ`` is the first position's log
odds, ``δ`` how fast the odds fall per position: ``δ = 0`` is the i.i.d. law
``E = (1 − α^(k+1)) / (1 − α)`` with ``α = σ(θ)`` (E keeps rising with k), a large ``δ`` a
drafter whose ``E(k)`` saturates after a few positions (an MTP head reused for later
positions). A run at ``k`` informs ``a_1 … a_k`` and so every shorter draft length; longer ones
are an extrapolation of the law, as uncertain as ``δ`` is.

NumPy (posterior draws, checked inputs) and PyTensor (inside the model), as in
:mod:`bayes_sd.latency`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bayes_sd._backend import check as _check
from bayes_sd._backend import numeric as _numeric
from bayes_sd._backend import ops as _ops

__all__ = [
    "acceptance_rate",
    "alpha_from_tokens_per_cycle",
    "conditional_rates",
    "positional_tokens",
    "tokens_per_cycle",
    "tokens_per_cycle_from_rate",
    "tokens_per_cycle_positional",
    "unconditional_rates",
]


def tokens_per_cycle(alpha: Any, k: Any) -> Any:
    """Expected tokens committed per cycle with i.i.d. per-token acceptance ``alpha``.

    ``E = (1 − α^(k+1)) / (1 − α)``, with ``E = k + 1`` at ``α = 1`` and ``E = 1`` at ``k = 0``.
    """
    ops = _ops(alpha, k)
    if ops.tensor:
        alpha, k = ops.convert(alpha, k)
    else:
        alpha = _numeric("alpha", alpha, low=0.0, high=1.0)
        k = _numeric("k", k, low=0.0)
    gap = 1.0 - alpha
    near_one = ops.abs(gap) < 1e-6
    safe_gap = ops.where(near_one, 1.0, gap)
    # Near α = 1 the closed form cancels; its first-order expansion is exact to O(gap²).
    series = (k + 1.0) - 0.5 * k * (k + 1.0) * gap
    return ops.where(near_one, series, (1.0 - alpha ** (k + 1.0)) / safe_gap)


def tokens_per_cycle_positional(rates: Any, *, conditional: bool = True) -> Any:
    """Expected tokens per cycle from per-position acceptance probabilities (last axis = k).

    With ``conditional=True`` (model.md §2) ``rates[i]`` is the probability that position
    ``i+1`` is accepted given all earlier ones were: ``E = 1 + Σ_i Π_{j≤i} a_j``.
    With ``conditional=False`` they are vLLM's unconditional per-position rates
    (accepted at position i / drafts): ``E = 1 + Σ_i r_i``.
    """
    ops = _ops(rates)
    if ops.tensor:
        (rates,) = ops.convert(rates)
    else:
        rates = _numeric("per-position acceptance", rates, low=0.0, high=1.0)
        if rates.ndim == 0:
            raise ValueError("per-position acceptance needs a last axis of length k")
    terms = ops.cumprod(rates, axis=-1) if conditional else rates
    return 1.0 + ops.sum(terms, axis=-1)


def tokens_per_cycle_from_rate(rate: Any, k: Any) -> Any:
    """Expected tokens per cycle from vLLM's acceptance rate (accepted / drafted, a fraction)."""
    ops = _ops(rate, k)
    if ops.tensor:
        rate, k = ops.convert(rate, k)
    else:
        rate = _numeric("acceptance rate", rate, low=0.0, high=1.0)
        k = _numeric("k", k, low=0.0)
    return 1.0 + rate * k


def acceptance_rate(tokens: Any, k: Any) -> Any:
    """vLLM's acceptance rate ``(E − 1) / k`` (a fraction; NaN at k = 0)."""
    ops = _ops(tokens, k)
    if ops.tensor:
        tokens, k = ops.convert(tokens, k)
    else:
        tokens = _numeric("tokens per cycle", tokens, low=1.0)
        k = _numeric("k", k, low=0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(k > 0, (tokens - 1.0) / np.where(k > 0, k, 1.0), np.nan)
    return (tokens - 1.0) / k


def alpha_from_tokens_per_cycle(tokens: Any, k: Any) -> np.ndarray:
    """The i.i.d. acceptance ``α`` with ``tokens_per_cycle(α, k) == tokens`` (NumPy only).

    ``tokens`` must lie in ``[1, k + 1]``; ``k = 0`` gives NaN (α is not identified).
    """
    tokens = _numeric("tokens per cycle", tokens, low=1.0)
    k = _numeric("k", k, low=0.0)
    tokens, k = np.broadcast_arrays(tokens, k)
    _check(
        np.isnan(tokens) | (tokens <= k + 1.0 + 1e-9),
        "tokens per cycle must be <= k + 1",
    )
    lo = np.zeros(tokens.shape)
    hi = np.ones(tokens.shape)
    for _ in range(60):  # E(α, k) is increasing in α: bisection to machine precision
        mid = 0.5 * (lo + hi)
        below = tokens_per_cycle(mid, k) < tokens
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    out = 0.5 * (lo + hi)
    return np.where((k > 0) & ~np.isnan(tokens), out, np.nan)


# --------------------------------------------------------------------------------------------
# The positional law


def conditional_rates(logit: Any, decay: Any, positions: int) -> Any:
    """``(..., positions)`` conditional acceptance ``a_i = σ(θ − δ (i − 1))``, ``i = 1 …
    positions``, for ``logit`` ``θ`` and ``decay`` ``δ`` of any (broadcast) shape."""
    ops = _ops(logit, decay)
    steps = np.arange(int(positions), dtype=float)
    if ops.tensor:
        pt = ops.pt
        logit, decay = ops.convert(logit, decay)
        return pt.sigmoid(logit[..., None] - decay[..., None] * steps)
    logit = _numeric("acceptance logit", logit)
    decay = _numeric("acceptance decay", decay, low=0.0)
    z = logit[..., None] - decay[..., None] * steps
    return 1.0 / (1.0 + np.exp(-z))


def unconditional_rates(logit: Any, decay: Any, positions: int) -> Any:
    """``(..., positions)`` unconditional rates ``r_i = Π_{j ≤ i} a_j`` (vLLM's
    ``spec_decode_per_position_acceptance_rates``) of the positional law."""
    ops = _ops(logit, decay)
    return ops.cumprod(conditional_rates(logit, decay, positions), axis=-1)


def positional_tokens(logit: Any, decay: Any, k: Any, k_max: int | None = None) -> Any:
    """Expected tokens per cycle ``E(k) = 1 + Σ_{i ≤ k} r_i`` of the positional law.

    ``logit``, ``decay`` and ``k`` broadcast; ``k`` a whole number ≥ 0 (1 at k = 0).
    ``k_max`` bounds the positions summed (required in PyTensor mode, where ``k`` may be
    data; in NumPy mode the largest ``k``).
    """
    ops = _ops(logit, decay, k)
    if ops.tensor:
        if k_max is None:
            raise ValueError("positional_tokens needs k_max for tensors")
        (k,) = ops.convert(k)
    else:
        k = _numeric("k", k, low=0.0)
        _check(np.isnan(k) | (k == np.round(k)), "k must be a whole number of draft tokens")
        k_max = int(np.nanmax(k, initial=0.0)) if k_max is None else int(k_max)
        _check(np.isnan(k) | (k <= k_max), "k exceeds k_max")
    if k_max == 0:
        return 1.0 + 0.0 * (logit + decay + k)
    rates = unconditional_rates(logit, decay, k_max)
    positions = np.arange(1, k_max + 1, dtype=float)
    reached = ops.where(k[..., None] >= positions, 1.0, 0.0)
    return 1.0 + ops.sum(rates * reached, axis=-1)
