"""Capacity-planning decisions computed over posterior draws, never over point estimates.

Every function takes a fitted (or loaded) :class:`bayes_sd.LatencyModel` and one serving
*configuration* — a dict (or one-row DataFrame) with the prediction columns of
:meth:`LatencyModel.predict` except the load: ``gpu``, ``target``, ``prefill_len``,
``decode_len``, and for SD a ``drafter`` (or ``method``) with ``alpha`` or
``acceptance_length``, optionally ``num_gpus``, ``source``, ``dataset``. Loads are open-loop
request rates (req/s). Draft lengths are given as ``ks`` (``0`` = no SD); with ``alpha`` the
acceptance length follows each k (``1 + α + … + α^k``); with ``acceptance_length`` it is held
fixed.

* :func:`sustainable_rate` — highest rate with P(mean latency ≤ SLO) ≥ credibility, per k;
* :func:`break_even` — the break-even rate between SD and no SD as a distribution, and
  P(speedup > 1) along the load axis;
* :func:`best_k` — per rate, the probability that each k is best, each k's expected latency,
  and the choice under a risk-aware objective (mean, quantile or expected shortfall); with a
  vLLM-ready schedule of draft length by running batch size (the best k with B requests
  running per engine);
* :func:`next_measurement` — the (rate, k) run whose measurement would most reduce the
  posterior variance of the decision quantity at hand (a linear-Gaussian value-of-information
  score computed from the draws).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "BestK",
    "BreakEven",
    "UncertainScheduleWarning",
    "best_k",
    "break_even",
    "next_measurement",
    "rate_grid",
    "sustainable_rate",
]

OBJECTIVES = ("mean", "quantile", "shortfall")


def _config(config: dict | pd.DataFrame | pd.Series) -> dict[str, Any]:
    if isinstance(config, pd.DataFrame):
        if len(config) != 1:
            raise ValueError("give one configuration (a dict or a one-row DataFrame)")
        config = config.iloc[0]
    cfg = dict(config)
    for col in ("request_rate", "concurrency", "k"):
        cfg.pop(col, None)
    return cfg


def _rows(config: dict, ks, loads, load: str = "rate") -> pd.DataFrame:
    """Prediction rows of ``config`` at each draft length (k-major) and each load (a request
    rate, or with ``load="concurrency"`` a number of requests in flight); k = 0 rows drop SD."""
    cfg = _config(config)
    column = {"rate": "request_rate", "concurrency": "concurrency"}[load]
    rows = []
    for k in ks:
        for value in loads:
            row = {**cfg, "k": float(k), column: float(value)}
            if k == 0:
                row.update(drafter=None, method=None, alpha=np.nan, acceptance_length=np.nan)
            rows.append(row)
    return pd.DataFrame(rows)


def _draws(model, config, ks, rates, *, max_draws, random_seed, noise=False):
    """Latency and speedup draws shaped (draw, k, rate)."""
    rows = _rows(config, ks, rates)
    pred = model.predict(rows, max_draws=max_draws, random_seed=random_seed, noise=noise)
    shape = (-1, len(ks), len(rates))
    lat = pred.draws["latency"].values.reshape(shape)
    spd = pred.draws["speedup"].values.reshape(shape)
    sat = pred.draws["saturation_rate"].values.reshape(shape)[..., 0]
    return lat, spd, sat


def rate_grid(
    model, config, ks=(0,), *, points: int = 200, max_draws: int = 400, random_seed: int = 0
) -> np.ndarray:
    """Rates from near zero to 1.05× the largest median saturation rate over ``ks``."""
    _, _, sat = _draws(model, config, ks, [1e-3], max_draws=max_draws, random_seed=random_seed)
    top = float(np.nanmax(np.nanmedian(sat, axis=0)))
    if not np.isfinite(top) or top <= 0:
        raise ValueError("the model predicts no finite saturation rate for this configuration")
    return np.linspace(top / points, 1.05 * top, points)


def sustainable_rate(
    model,
    config,
    *,
    slo_s: float,
    credibility: float = 0.95,
    ks=(0,),
    rates=None,
    max_draws: int = 1000,
    random_seed: int = 0,
) -> pd.DataFrame:
    """Highest request rate at which P(mean latency ≤ ``slo_s``) ≥ ``credibility``, per k.

    Latency grows with load in every draw, so the answer is the (1 − credibility) quantile of
    each draw's own highest rate under the SLO, found on the rate grid (interpolated). Columns:
    ``k``, ``rate`` (the credible sustainable rate, 0 when even the lightest load misses the
    SLO), ``rate_median`` (what a point estimate would promise), ``p_at_rate`` (P(latency ≤
    SLO) at ``rate``), ``slo_s``, ``credibility``.
    """
    if not 0 < credibility < 1:
        raise ValueError("credibility must be in (0, 1)")
    if slo_s <= 0:
        raise ValueError("slo_s must be positive")
    ks = list(ks)
    rates = rate_grid(model, config, ks) if rates is None else np.asarray(rates, dtype=float)
    lat, _, _ = _draws(model, config, ks, rates, max_draws=max_draws, random_seed=random_seed)
    per_draw = _highest_rate_under(lat, rates, slo_s)  # (draw, k)
    out = []
    for j, k in enumerate(ks):
        r = float(np.quantile(per_draw[:, j], 1 - credibility))
        p_ok = np.mean(lat[:, j, :] <= slo_s, axis=0)
        p_at = float(np.interp(r, rates, p_ok)) if r > 0 else float(p_ok[0])
        out.append(
            {
                "k": k,
                "rate": r,
                "rate_median": float(np.median(per_draw[:, j])),
                "p_at_rate": p_at,
                "slo_s": slo_s,
                "credibility": credibility,
            }
        )
    return pd.DataFrame(out)


def _highest_rate_under(lat: np.ndarray, rates: np.ndarray, slo: float) -> np.ndarray:
    """Per draw and k: the highest rate with latency ≤ slo (linear interpolation on log
    latency between grid points; 0 when the first grid point already misses)."""
    ok = lat <= slo
    # index of the first grid point that misses (latency is increasing in rate)
    first_bad = np.where(ok.all(axis=-1), len(rates), np.argmin(ok, axis=-1))
    out = np.zeros(first_bad.shape)
    for idx in np.ndindex(first_bad.shape):
        i = first_bad[idx]
        if i == 0:
            continue
        if i == len(rates):
            out[idx] = rates[-1]
            continue
        lo, hi = lat[idx][i - 1], lat[idx][i]
        if not np.isfinite(hi):
            out[idx] = rates[i - 1]
            continue
        t = (np.log(slo) - np.log(lo)) / (np.log(hi) - np.log(lo))
        out[idx] = rates[i - 1] + t * (rates[i] - rates[i - 1])
    return out


@dataclass
class BreakEven:
    """Break-even rate draws and P(speedup > 1) along the rate grid."""

    k: int
    draws: np.ndarray  # break-even rate per draw (inf: SD never stops paying on the grid,
    # 0: SD never pays)
    along: pd.DataFrame  # rate, p_speedup_gt_1, speedup_median, speedup_lo, speedup_hi

    def summary(self, interval: float = 0.9) -> dict[str, float]:
        lo, hi = (1 - interval) / 2, 1 - (1 - interval) / 2
        with np.errstate(invalid="ignore"):  # inf draws: quantiles are inf, not warnings
            return self._summary(lo, hi)

    def _summary(self, lo: float, hi: float) -> dict[str, float]:
        return {
            "k": self.k,
            # quantiles without interpolation: draws may be inf (SD pays on the whole grid)
            "break_even_median": float(np.quantile(self.draws, 0.5, method="inverted_cdf")),
            "break_even_lo": float(np.quantile(self.draws, lo, method="inverted_cdf")),
            "break_even_hi": float(np.quantile(self.draws, hi, method="inverted_cdf")),
            "p_sd_never_pays": float(np.mean(self.draws == 0)),
            "p_sd_pays_on_whole_grid": float(np.mean(np.isinf(self.draws))),
        }


def break_even(
    model,
    config,
    *,
    k: int,
    rates=None,
    interval: float = 0.9,
    max_draws: int = 1000,
    random_seed: int = 0,
) -> BreakEven:
    """The rate where SD with draft length ``k`` stops paying, as a distribution.

    Per draw, the first grid rate where the speedup falls below 1 (interpolated); ``inf`` when
    SD pays on the whole grid, ``0`` when it never pays. Rates past a draw's saturation of the
    SD system count as "not paying" while the baseline still serves them, and as "paying" once
    the baseline has saturated first (SD served every rate either could); past both
    saturations, as at the last rate one of them served.
    """
    if k <= 0:
        raise ValueError("k must be a positive draft length")
    rates = rate_grid(model, config, (0, k)) if rates is None else np.asarray(rates, float)
    _, spd, _ = _draws(model, config, [k], rates, max_draws=max_draws, random_seed=random_seed)
    # both saturated (NaN): SD paid if it outlived the baseline (its last served rate had
    # speedup inf), not if the baseline outlived it (0) — the last state carried forward; a
    # lone 1/0 draw saturated at the first rate: nothing served, SD did not pay
    s = pd.DataFrame(spd[:, 0, :]).ffill(axis=1).fillna(0.0).to_numpy()  # (draw, rate)
    pays = s > 1
    first_bad = np.where(pays.all(axis=1), len(rates), np.argmin(pays, axis=1))
    be = np.empty(len(s))
    for d, i in enumerate(first_bad):
        if i == len(rates):
            be[d] = np.inf
        elif i == 0:
            be[d] = 0.0
        else:
            lo, hi = s[d, i - 1], s[d, i]
            if not np.isfinite(lo):  # only the baseline was saturated below: SD paid there
                t = 1.0
            else:
                t = (lo - 1) / (lo - hi) if np.isfinite(hi) and lo != hi else 0.0
            be[d] = rates[i - 1] + t * (rates[i] - rates[i - 1])
    lo_q, hi_q = (1 - interval) / 2, 1 - (1 - interval) / 2
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-saturated rates: NaN speedups
        along = pd.DataFrame(
            {
                "rate": rates,
                "p_speedup_gt_1": pays.mean(axis=0),
                "speedup_median": np.nanmedian(spd[:, 0, :], axis=0),
                "speedup_lo": np.nanquantile(spd[:, 0, :], lo_q, axis=0),
                "speedup_hi": np.nanquantile(spd[:, 0, :], hi_q, axis=0),
            }
        )
    return BreakEven(k, be, along)


# below this P(best) the data do not single out the draft length of a schedule's range
SCHEDULE_MIN_P_BEST = 0.5
# batch sizes (log-spaced whole numbers) at which best_k compares the draft lengths
SCHEDULE_BATCHES = 48
# a longer draft (or SD at all) is chosen only if its objective beats a shorter one's by more
# than this share: within it the draft lengths tie and the shortest is kept
CHOICE_TOLERANCE = 0.01


class UncertainScheduleWarning(UserWarning):
    """A range of a draft-length schedule whose k is best with probability below 0.5."""


@dataclass
class BestK:
    """Best draft length by load, with its credibility, and a schedule by batch size."""

    table: pd.DataFrame  # one row per (rate, k): p_best, expected_latency, objective, chosen
    choice: pd.DataFrame  # one row per rate: k chosen, its objective, p_best, batch size
    objective: str
    # one row per running batch size per engine: batch_size, k chosen, p_best (best_k's
    # closed-loop pass, :func:`_by_batch`); None: the schedule maps ``choice``'s rates instead
    by_batch: pd.DataFrame | None = None

    def schedule(self, *, warn: bool = True) -> pd.DataFrame:
        """Draft length by running batch size per engine: integer, contiguous,
        non-overlapping ranges ``batch_from``–``batch_to`` (both included) from 1 to the
        largest batch a chosen k sustains (loads where every k saturates are left out), with
        ``k`` (0: no SD) and ``p_best`` (the lowest P(k is best) over the range's batches).

        From :func:`best_k`, each batch size's k is the best at that many requests running
        per engine (``by_batch``: the step law at that batch, what vLLM's per-batch-size draft
        length acts on; open-loop saturation plays no part there); without ``by_batch``, the
        batch of a load in ``choice`` is λ·L / engines (Little's law, median latency of the
        chosen k). The boundary between two ranges lies half-way between the last batch of
        one and the first of the next. Warns where ``p_best`` < 0.5: there the posterior does
        not single out a draft length. :meth:`to_vllm` gives vLLM's
        ``num_speculative_tokens_per_batch_size``."""
        cols = ["batch_from", "batch_to", "k", "p_best"]
        c = self.choice if self.by_batch is None else self.by_batch
        c = c[np.isfinite(c["batch_size"]) & c["k"].notna()]
        c = c.sort_values("batch_size", kind="stable")
        if c.empty:
            return pd.DataFrame(columns=cols)
        batch, ks, p = (c[x].to_numpy(dtype=float) for x in ("batch_size", "k", "p_best"))
        runs = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])  # first point of each run
        ends = np.r_[runs[1:], len(ks)] - 1
        top = max(int(np.floor(batch[-1])), 1)
        out: list[dict] = []
        lo = 1
        for first, last, nxt in zip(runs, ends, np.r_[runs[1:], -1], strict=True):
            hi = top if nxt < 0 else int(np.floor((batch[last] + batch[nxt]) / 2))
            if hi < lo:  # a range narrower than one batch size: its neighbours take it
                continue
            part = {"batch_from": lo, "batch_to": min(hi, top), "k": int(ks[first]),
                    "p_best": float(p[first : last + 1].min())}  # fmt: skip
            if out and out[-1]["k"] == part["k"]:
                out[-1].update(batch_to=part["batch_to"],
                               p_best=min(out[-1]["p_best"], part["p_best"]))  # fmt: skip
            else:
                out.append(part)
            lo = part["batch_to"] + 1
            if lo > top:
                break
        sched = pd.DataFrame(out, columns=cols)
        weak = sched[sched["p_best"] < SCHEDULE_MIN_P_BEST]
        if warn and len(weak):
            shown = "; ".join(f"batch {r.batch_from}–{r.batch_to}: k = {r.k} with P(best) "
                              f"{r.p_best:.2f}" for r in weak.head(3).itertuples())  # fmt: skip
            warnings.warn(
                f"the schedule's draft length is uncertain ({shown}): the posterior does not "
                "single out a k there; measure those loads at the competing draft lengths",
                UncertainScheduleWarning,
                stacklevel=2,
            )
        return sched

    def to_vllm(self) -> dict:
        """The schedule as vLLM's speculative-config fields: ``num_speculative_tokens`` (the
        longest k) and ``num_speculative_tokens_per_batch_size`` (``[[from, to, k], ...]``)."""
        sched = self.schedule(warn=False)
        ranges = [[int(r.batch_from), int(r.batch_to), int(r.k)] for r in sched.itertuples()]
        return {"num_speculative_tokens": max((r[2] for r in ranges), default=0),
                "num_speculative_tokens_per_batch_size": ranges}  # fmt: skip


def best_k(
    model,
    config,
    *,
    ks=(0, 1, 2, 3, 4, 5),
    rates=None,
    objective: str = "mean",
    quantile: float = 0.9,
    max_draws: int = 1000,
    random_seed: int = 0,
) -> BestK:
    """For each rate: P(each k is best), each k's expected latency and P(it saturates), and
    the k minimising the ``objective`` of its latency distribution — ``"mean"`` (expected
    latency over the draws in which k sustains the rate), ``"quantile"`` (the ``quantile`` of
    latency: a tail guarantee) or ``"shortfall"`` (expected latency in the worst ``1 −
    quantile`` of draws). Saturated draws count as infinite latency: a k that saturates in more
    than ``1 − quantile`` of draws is never chosen by the mean and quantile objectives, one
    that saturates in any draw never by the shortfall. (Counting a saturated draw in the mean
    made the risk-neutral objective the strictest: one draw in 1,000 in which k = 3 could not
    sustain a rate at which it was faster in the other 999 chose k = 0, with P(best) 0.)
    Draft lengths whose objectives lie within :data:`CHOICE_TOLERANCE` (1%) of the best tie,
    and the shortest of them is chosen (:func:`_choose`), here and in the schedule. The
    schedule's batches stop at the configuration's ``max_num_seqs`` where it gives one (the
    engine runs no more requests at once).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}")
    ks = list(ks)
    rates = rate_grid(model, config, ks) if rates is None else np.asarray(rates, float)
    lat, _, _ = _draws(model, config, ks, rates, max_draws=max_draws, random_seed=random_seed)
    lat = np.where(np.isnan(lat), np.inf, lat)  # saturated: infinite (not the largest float)
    best = np.argmin(lat, axis=1)  # (draw, rate)
    rows = []
    obj = np.empty((len(ks), len(rates)))
    for j, k in enumerate(ks):
        mean, obj[j] = _objective(lat[:, j, :], objective, quantile)
        for r, rate in enumerate(rates):
            rows.append(
                {
                    "rate": rate,
                    "k": k,
                    "p_best": float(np.mean(best[:, r] == j)),
                    "expected_latency": float(mean[r]),
                    "p_saturated": float(np.isinf(lat[:, j, r]).mean()),
                    "objective": float(obj[j, r]),
                }
            )
    table = pd.DataFrame(rows)
    chosen = _choose(obj, ks)
    engines = float(_config(config).get("engines", 1.0) or 1.0)
    choice = []
    for r, rate in enumerate(rates):
        j = int(chosen[r])
        feasible = np.isfinite(obj[j, r])
        med = float(np.median(lat[:, j, r])) if feasible else np.nan
        choice.append(
            {
                "rate": rate,
                "k": ks[j] if feasible else np.nan,
                "objective": float(obj[j, r]),
                "p_best": float(np.mean(best[:, r] == j)),
                "median_latency": med,
                # requests running per engine, by Little's law
                "batch_size": rate * med / engines if feasible else np.nan,
            }
        )
    choice = pd.DataFrame(choice)
    top = choice["batch_size"].max()  # the largest batch a chosen k sustains
    cap = float(_config(config).get("max_num_seqs", np.nan) or np.nan)
    top = min(top, cap) if np.isfinite(cap) else top  # the engine never runs more
    by_batch = None
    if np.isfinite(top) and top >= 1:
        by_batch = _by_batch(model, config, ks, top, engines, objective, quantile,
                             max_draws=max_draws, random_seed=random_seed)  # fmt: skip
    return BestK(table, choice, objective, by_batch)


def _choose(obj: np.ndarray, ks) -> np.ndarray:
    """Per column of ``obj`` (k, load): the index of the shortest draft length whose objective
    is within :data:`CHOICE_TOLERANCE` of the best — SD, or a longer draft, must pay by more
    than that to be chosen. The plain argmin followed the posterior's noise where draft
    lengths tie: on 15 InferenceX runs (DeepSeek-R1, MTP at k = 2 only) its schedule read
    k = 2, 1, 2, 0, 3, 0 over six ranges, none with P(best) above 0.47."""
    order = np.argsort(np.asarray(ks, dtype=float), kind="stable")
    best = np.min(obj, axis=0)
    with np.errstate(invalid="ignore"):
        near = obj[order] <= best * (1 + CHOICE_TOLERANCE)  # (k by length, load)
    first = np.argmax(near, axis=0)  # the shortest within the tolerance
    return np.where(near.any(axis=0), order[first], np.argmin(obj, axis=0))


def _objective(x: np.ndarray, objective: str, quantile: float) -> tuple[np.ndarray, np.ndarray]:
    """(mean, objective) per column of the (draw, load) latency draws ``x`` (+inf where
    saturated): the mean (infinite if any draw saturates), and the objective (see
    :func:`best_k`): the mean over the sustaining draws where at most ``1 − quantile`` of them
    saturate, the ``quantile``, or the expected shortfall beyond it."""
    saturated = np.isinf(x)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a load every draw saturates
        mean = np.where(saturated.any(axis=0), np.inf, x.mean(axis=0))
        sustained = np.nanmean(np.where(saturated, np.nan, x), axis=0)
        risk_neutral = np.where(saturated.mean(axis=0) <= 1 - quantile, sustained, np.inf)
        q = np.quantile(x, quantile, axis=0)
        tail = np.sort(x, axis=0)[int(np.floor(quantile * len(x))) :]
        es = np.where(np.isinf(tail).any(axis=0), np.inf, tail.mean(axis=0))
    return mean, {"mean": risk_neutral, "quantile": q, "shortfall": es}[objective]


def _by_batch(model, config, ks, top: float, engines: float, objective: str, quantile: float,
              *, max_draws: int, random_seed: int) -> pd.DataFrame:  # fmt: skip
    """Per running batch size B per engine (:data:`SCHEDULE_BATCHES` whole numbers from 1 to
    ``top``): the k of best ``objective`` with B requests running on every engine (a closed
    loop at B × engines: the step law at that batch, as vLLM's per-batch-size draft length
    sees it) and P(it is the best k) over the draws."""
    batches = np.unique(np.floor(np.geomspace(1.0, max(float(top), 1.0), SCHEDULE_BATCHES)))
    rows = _rows(config, ks, batches * engines, load="concurrency")
    pred = model.predict(rows, max_draws=max_draws, random_seed=random_seed, tails=False)
    lat = pred.draws["latency"].values.reshape(-1, len(ks), len(batches))
    lat = np.where(np.isnan(lat), np.inf, lat)
    best = np.argmin(lat, axis=1)  # (draw, batch)
    obj = np.stack([_objective(lat[:, j, :], objective, quantile)[1] for j in range(len(ks))])
    chosen = _choose(obj, ks)
    feasible = np.isfinite(obj[chosen, np.arange(len(batches))])
    return pd.DataFrame({
        "batch_size": batches,
        "k": np.where(feasible, np.asarray(ks, dtype=float)[chosen], np.nan),
        "p_best": (best == chosen).mean(axis=0),
    })  # fmt: skip


def next_measurement(
    model,
    config,
    *,
    question: str = "break_even",
    k: int = 3,
    slo_s: float | None = None,
    ks=(0, 1, 2, 3, 4, 5),
    rates=None,
    max_draws: int = 1000,
    random_seed: int = 0,
) -> pd.DataFrame:
    """Rank candidate runs (rate, k) by how much measuring them would shrink the posterior
    variance of the decision quantity.

    ``question``: ``"break_even"`` (the break-even rate of draft length ``k``) or
    ``"sustainable_rate"`` (each draw's highest rate under ``slo_s`` with draft length ``k``).
    For a candidate with predicted log latency ``y`` (mean and measurement noise), the
    linear-Gaussian expected variance reduction of the quantity ``Q`` is
    ``Cov(Q, y)² / Var(y + noise)``, computed over posterior draws. Returned sorted, best
    first, with ``score`` (variance reduction) and ``share`` (as a fraction of Var(Q)).
    """
    ks = list(ks)
    rates = rate_grid(model, config, ks, points=20) if rates is None else np.asarray(rates)
    grid = rate_grid(model, config, (0, k))
    if question == "break_even":
        q = break_even(
            model, config, k=k, rates=grid, max_draws=max_draws, random_seed=random_seed
        ).draws
        q = np.where(np.isinf(q), grid[-1], q)
    elif question == "sustainable_rate":
        if slo_s is None:
            raise ValueError("question='sustainable_rate' needs slo_s")
        lat, _, _ = _draws(model, config, [k], grid, max_draws=max_draws, random_seed=random_seed)
        q = _highest_rate_under(lat, grid, slo_s)[:, 0]
    else:
        raise ValueError("question must be 'break_even' or 'sustainable_rate'")
    mean, _, _ = _draws(model, config, ks, rates, max_draws=max_draws, random_seed=random_seed)
    noisy, _, _ = _draws(
        model, config, ks, rates, max_draws=max_draws, random_seed=random_seed, noise=True
    )
    var_q = float(np.var(q))
    out = []
    for j, kk in enumerate(ks):
        for r, rate in enumerate(rates):
            with np.errstate(divide="ignore", invalid="ignore"):
                y, yn = np.log(mean[:, j, r]), np.log(noisy[:, j, r])
            ok = np.isfinite(y) & np.isfinite(yn)
            if ok.mean() < 0.9:  # a run that saturates in many draws teaches little
                score = 0.0
            else:
                cov = np.cov(q[ok], y[ok])[0, 1]
                score = float(cov**2 / max(np.var(yn[ok]), 1e-12))
            out.append(
                {
                    "rate": float(rate),
                    "k": kk,
                    "score": score,
                    "share": score / var_q if var_q > 0 else 0.0,
                    "p_saturated": float(1 - ok.mean()),
                }
            )
    return pd.DataFrame(out).sort_values("score", ascending=False).reset_index(drop=True)
