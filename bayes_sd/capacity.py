"""Capacity under service-level objectives written as users write them (:mod:`bayes_sd.slo`):
the highest load — open-loop request rate or closed-loop concurrency — at which *every* term
(``p99 TTFT ≤ 2 s``, ``p90 TPOT ≤ 50 ms``, ``mean E2E ≤ 20 s`` …) holds with a given
credibility, which term binds, per draft length.

The answer is computed on one load grid from joint posterior draws of all terms (the
percentiles of :func:`bayes_sd.LatencyModel.predict`), so dependence between terms is kept:
P(all terms hold) is not the product of each term's. It is the top of the contiguous range of
loads, from the lightest, where P(all terms hold) ≥ credibility; then checked again on fresh
predictions at that load (another random seed for the draws of unseen configurations), stepping
down the grid until the fresh check holds by two Monte Carlo standard errors
(:func:`mc_margin`), so the credibility reported is one achieved, not one hoped for.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from bayes_sd.slo import Term, parse_slo, statistic_draws

__all__ = ["LOADS", "UnmeasuredTailWarning", "goodput", "load_grid", "mc_margin", "slo_capacity"]

LOADS = ("rate", "concurrency")


class UnmeasuredTailWarning(UserWarning):
    """A percentile term of the SLO rests on the tail law's prior: no training run measured a
    percentile of its metric."""


def load_grid(model, config, ks=(0,), *, load: str = "rate", points: int = 120,
              max_concurrency: float = 1024.0) -> np.ndarray:  # fmt: skip
    """The loads searched: rates from near zero to 1.05× the largest median saturation rate
    (:func:`bayes_sd.planning.rate_grid`), or concurrencies 1 … ``max_concurrency`` spaced
    geometrically (whole requests)."""
    if load == "rate":
        from bayes_sd.planning import rate_grid

        return rate_grid(model, config, ks, points=points)
    if load == "concurrency":
        return np.unique(np.round(np.geomspace(1.0, max_concurrency, points)))
    raise ValueError(f"load must be one of {LOADS}, not {load!r}")


def slo_capacity(
    model,
    config,
    slo,
    *,
    ks=(0,),
    credibility: float = 0.95,
    load: str = "rate",
    grid=None,
    max_draws: int = 1000,
    random_seed: int = 0,
    attainment: float = 0.9,
) -> pd.DataFrame:
    """Per draft length k, the highest load meeting every term of ``slo`` with ``credibility``.

    ``config`` is a configuration as in :mod:`bayes_sd.planning` (without the load); ``slo``
    any form :func:`bayes_sd.slo.parse_slo` reads (``"p99_ttft_ms<=2000,p99_tpot_ms<=50"``).
    Columns: ``k``; ``load`` (``rate`` or ``concurrency``); ``capacity`` (the credible highest
    load, NaN when even the lightest load of the grid misses the SLO — ``meets`` is then
    False); ``capacity_median`` (each draw's own highest load, its median: what a point
    estimate would promise); ``binding`` (the term least likely to hold just above the
    answer); ``credibility`` (asked) and ``credibility_achieved`` (P(all terms hold) at the
    answer on fresh predictions); then P(term holds) at the answer for each term, by label.
    """
    if not 0 < credibility < 1:
        raise ValueError("credibility must be in (0, 1)")
    terms = parse_slo(slo, attainment=attainment)
    _warn_unmeasured(model, terms)
    ks = [int(k) for k in ks]
    if any(k < 0 for k in ks):
        raise ValueError("draft lengths are whole numbers ≥ 0")
    if load not in LOADS:
        raise ValueError(f"load must be one of {LOADS}, not {load!r}")
    grid = (load_grid(model, config, ks, load=load) if grid is None
            else np.sort(np.asarray(grid, dtype=float)))  # fmt: skip
    if grid.size == 0 or not np.all(np.isfinite(grid)) or grid[0] <= 0:
        raise ValueError("the load grid must be positive and finite")
    # (term, draw, k, load): does each term hold in each draw
    held = _holds(model, config, terms, ks, grid, load, max_draws, random_seed)
    every = held.all(axis=0)
    p_all = every.mean(axis=0)  # (k, load)
    rows = []
    for j, k in enumerate(ks):
        ok = np.cumprod(p_all[j] >= credibility).astype(bool)
        top = int(ok.sum()) - 1  # the last load of the feasible prefix (−1: none)
        fresh = None
        while top >= 0:  # the fresh check: another seed's draws at the answer
            fresh = _holds(model, config, terms, [k], grid[[top]], load, max_draws,
                           random_seed + 1)[:, :, 0, 0]  # fmt: skip
            if fresh.all(axis=0).mean() >= credibility + mc_margin(credibility, fresh.shape[1]):
                break
            top -= 1
        per_draw = np.argmin(np.concatenate([every[:, j], np.zeros((every.shape[0], 1), bool)],
                                            axis=1), axis=1) - 1  # fmt: skip
        median_idx = int(np.median(per_draw))
        nxt = min(top + 1, grid.size - 1)
        p_terms_next = held[:, :, j, nxt].mean(axis=1)
        binding = (terms[int(np.argmin(p_terms_next))].label if top < grid.size - 1
                   else "none up to the largest load searched")  # fmt: skip
        row = {
            "k": k,
            "load": load,
            "capacity": float(grid[top]) if top >= 0 else np.nan,
            "meets": top >= 0,
            "capacity_median": float(grid[median_idx]) if median_idx >= 0 else np.nan,
            "binding": binding,
            "credibility": credibility,
            "credibility_achieved": float(fresh.all(axis=0).mean()) if top >= 0 else np.nan,
        }
        at = held[:, :, j, max(top, 0)].mean(axis=1)
        row.update({f"P({t.label})": float(p) for t, p in zip(terms, at, strict=True)})
        rows.append(row)
    return pd.DataFrame(rows)


def mc_margin(credibility: float, draws: int) -> float:
    """Two Monte Carlo standard errors of a probability ``credibility`` estimated from
    ``draws`` draws: the fresh check asks this much above the credibility, so that yet other
    draws (another seed: unseen configurations and unmeasured tails are drawn anew) hold it
    too — without it one in a few answers fell just under (0.898 for 0.9 at 1,000 draws)."""
    return 2.0 * float(np.sqrt(credibility * (1.0 - credibility) / max(draws, 1)))


def _warn_unmeasured(model, terms: list[Term]) -> None:
    """A percentile term whose metric no training run measured a percentile of rests on the
    tail law's prior: say so, with what to measure."""
    design = getattr(model, "design", None)
    if design is None:
        return
    for metric in sorted({t.metric for t in terms if t.percentile is not None}):
        if all(design.tail_ratio(f"{metric}_{q}") is None for q in ("p50", "p90", "p99")):
            name = {"ttft": "TTFT", "tpot": "TPOT", "latency": "E2E"}[metric]
            warnings.warn(
                f"no training run measured a percentile of {name}: its percentile terms rest on "
                "the tail law's prior and are answered conservatively; fit runs that record "
                "them (vllm bench serve: median_/p99_*_ms, GuideLLM, InferenceX) to narrow them",
                UnmeasuredTailWarning,
                stacklevel=3,
            )


def _predict_grid(model, config, ks, loads, load, max_draws, seed) -> dict[str, np.ndarray]:
    """Prediction draws (draw, k, load) of every output, for ``config`` at each k and load."""
    from bayes_sd.planning import _rows

    rows = _rows(config, ks, loads, load)
    pred = model.predict(rows, max_draws=max_draws, random_seed=seed)
    shape = (-1, len(ks), len(loads))
    return {name: pred.draws[name].values.reshape(shape) for name in pred.draws.data_vars}


def _holds(model, config, terms: list[Term], ks, loads, load, max_draws, seed) -> np.ndarray:
    """Boolean draws (term, draw, k, load): does each term hold in each posterior draw."""
    draws = _predict_grid(model, config, ks, loads, load, max_draws, seed)
    out = []
    for t in terms:
        stat = statistic_draws(draws, t)
        with np.errstate(invalid="ignore"):
            out.append(np.isfinite(stat) & (stat <= t.threshold_s))
    return np.stack(out)


def goodput(
    model,
    config,
    slo,
    loads,
    *,
    ks=(0,),
    load: str = "rate",
    interval: float = 0.9,
    max_draws: int = 1000,
    random_seed: int = 0,
) -> pd.DataFrame:
    """Goodput at given loads, as ``vllm bench serve --goodput`` counts it: requests per second
    that meet *every* term's threshold (the terms' statistics do not matter here: each
    threshold applies to each request).

    Per draw, the share of requests within a metric's threshold comes from its predicted p50,
    p90 and p99 (:func:`bayes_sd.slo.fraction_within`); how TTFT and TPOT of one request go
    together is not modelled, so the share meeting every term is given as bounds: at least
    ``max(0, Σ share − (n − 1))``, at most ``min share`` (equal for one term). Goodput is that
    share times the request rate (closed loop: ``N / E2E``). Columns: ``k``, ``load``,
    ``value``, ``request_rate`` (median), and the median and ``interval`` bounds of
    ``goodput_low`` and ``goodput_high`` (req/s).
    """
    from bayes_sd.slo import fraction_within

    terms = parse_slo(slo)
    loads = np.asarray(loads, dtype=float).ravel()
    if load not in LOADS:
        raise ValueError(f"load must be one of {LOADS}, not {load!r}")
    if loads.size == 0 or not np.all(np.isfinite(loads) & (loads > 0)):
        raise ValueError("loads must be positive and finite")
    ks = [int(k) for k in ks]
    _warn_unmeasured(model, [Term(t.metric, "p50", t.threshold_s) for t in terms])
    draws = _predict_grid(model, config, ks, loads, load, max_draws, random_seed)
    share = np.stack([fraction_within(draws, t.metric, t.threshold_s) for t in terms])
    low = np.clip(share.sum(axis=0) - (len(terms) - 1), 0.0, 1.0)
    high = share.min(axis=0)
    lat = draws["latency"]
    with np.errstate(divide="ignore", invalid="ignore"):  # closed loop: N / E2E (Little's law)
        closed = np.where(np.isfinite(lat), loads / lat, 0.0)
    rate = np.broadcast_to(loads, low.shape) if load == "rate" else closed
    q = (0.5, (1 - interval) / 2, 1 - (1 - interval) / 2)
    rows = []
    for j, k in enumerate(ks):
        for i, value in enumerate(loads):
            lo_q = np.quantile(rate[:, j, i] * low[:, j, i], q)
            hi_q = np.quantile(rate[:, j, i] * high[:, j, i], q)
            rows.append({
                "k": k, "load": load, "value": float(value),
                "request_rate": float(np.median(rate[:, j, i])),
                "goodput_low": lo_q[0], "goodput_low_lo": lo_q[1], "goodput_low_hi": lo_q[2],
                "goodput_high": hi_q[0], "goodput_high_lo": hi_q[1], "goodput_high_hi": hi_q[2],
            })  # fmt: skip
    return pd.DataFrame(rows)
