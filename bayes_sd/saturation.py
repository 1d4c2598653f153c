"""Which runs are past saturation (not a stationary operating point), and which lost requests.

Runs past saturation are kept in the table but not fitted: an open-loop run whose queue grows
through the run measures its duration, not the system. Runs with failed requests are failures,
not overload: they are kept when few requests failed (the latencies are the completed
requests') and excluded, with the reason, when many did.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayes_sd.schema import CONFIG_KEYS

__all__ = [
    "MAX_FAILED_SHARE",
    "expected_achieved_rate",
    "failed_share",
    "flag_failures",
    "flag_saturation",
]


def expected_achieved_rate(rate, n_requests, latency_mean_s):
    """Completion rate of a *stable* open-loop run of ``n`` requests: ``n / (n/λ + L)``.

    A finite run ends when its last request completes, one mean latency after the last arrival,
    so even a stable run completes below the offered rate.
    """
    rate = np.asarray(rate, dtype=float)
    n = np.asarray(n_requests, dtype=float)
    lat = np.asarray(latency_mean_s, dtype=float)
    return n / (n / rate + lat)


def flag_saturation(
    table: pd.DataFrame,
    *,
    growth_limit: float = 1.5,
    backlog_limit: float = 0.1,
    ttft_limit: float = 10.0,
    shortfall_limit: float = 0.1,
) -> pd.DataFrame:
    """Set ``saturated`` (and ``saturation_reason``) on runs past saturation.

    A run is flagged when an open-loop run completed clearly fewer
    requests per second than a stable run would (``achieved < expected·(1 − max(0.05, 3/√n))``,
    see :func:`expected_achieved_rate`), when latency grew over the run (last quarter over first
    quarter above ``growth_limit``), when the backlog of requests in system grew through the
    arrival window (``backlog_growth`` above ``backlog_limit``), when an open-loop run's mean
    TTFT is over ``ttft_limit`` times that of the lowest rate of its series while it achieved
    less than ``1 − shortfall_limit`` of the offered rate (requests wait for the engine's
    capacity; a stable run near capacity queues too, but keeps up with the arrivals), or when
    it is a burst run. Failed requests are not overload (:func:`flag_failures`). Flags already set
    are kept.
    """
    t = table.copy()
    reasons: list[list[str]] = [[] for _ in range(len(t))]
    given = t["saturated"].fillna(False).astype(bool).to_numpy()
    prior = (
        t["saturation_reason"].fillna("").astype(str).to_numpy()
        if "saturation_reason" in t
        else np.full(len(t), "")
    )
    for i in range(len(t)):
        if given[i]:
            reasons[i].extend(prior[i].split("; ") if prior[i] else ["flagged in input"])
    n = pd.to_numeric(t["n_requests"], errors="coerce").to_numpy(dtype=float)
    rate = pd.to_numeric(t["request_rate"], errors="coerce").to_numpy(dtype=float)
    achieved = pd.to_numeric(t["achieved_rate"], errors="coerce").to_numpy(dtype=float)
    lat = pd.to_numeric(t["latency_mean_s"], errors="coerce").to_numpy(dtype=float)
    growth = pd.to_numeric(t.get("latency_growth"), errors="coerce")
    backlog = pd.to_numeric(t.get("backlog_growth"), errors="coerce")
    with np.errstate(invalid="ignore", divide="ignore"):
        expect = expected_achieved_rate(rate, n, lat)
        tol = np.maximum(0.05, 3.0 / np.sqrt(n))
    ttft_ratio = _ttft_over_lowest_rate(t)
    for i in range(len(t)):
        mode = t["load_mode"].iloc[i]
        if mode == "burst":
            reasons[i].append("burst run (all requests at once)")
        if (
            mode == "rate"
            and np.isfinite(expect[i])
            and np.isfinite(achieved[i])
            and achieved[i] < expect[i] * (1 - tol[i])
        ):
            reasons[i].append(
                f"achieved {achieved[i]:.3g} req/s, a stable run would complete {expect[i]:.3g}"
            )
        if growth is not None and not pd.isna(growth.iloc[i]) and growth.iloc[i] > growth_limit:
            reasons[i].append(f"latency grew {growth.iloc[i]:.2f}x over the run")
        if backlog is not None and not pd.isna(backlog.iloc[i]) and backlog.iloc[i] > backlog_limit:
            reasons[i].append(f"{backlog.iloc[i]:.0%} of arrivals piled up in the system")
        if ttft_ratio[i] > ttft_limit and achieved[i] < rate[i] * (1 - shortfall_limit):
            reasons[i].append(
                f"mean TTFT {ttft_ratio[i]:.0f}x that of the lowest rate of its series and "
                f"{achieved[i]:.3g} of {rate[i]:.3g} req/s achieved: requests queue past the "
                "engine's capacity"
            )
    t["saturated"] = [bool(r) for r in reasons]
    t["saturation_reason"] = ["; ".join(dict.fromkeys(r)) or None for r in reasons]
    return t


def _ttft_over_lowest_rate(t: pd.DataFrame) -> np.ndarray:
    """Per open-loop run, its mean TTFT over that of the lowest rate of its series (the same
    system and workload, lengths within a factor of two); NaN where not measured."""
    out = np.full(len(t), np.nan)
    if "ttft_mean_s" not in t:
        return out
    ttft = pd.to_numeric(t["ttft_mean_s"], errors="coerce").to_numpy(dtype=float)
    rate = pd.to_numeric(t["request_rate"], errors="coerce").to_numpy(dtype=float)
    usable = (t["load_mode"] == "rate").to_numpy() & (ttft > 0) & np.isfinite(rate)
    if usable.sum() < 2:
        return out
    keys = [c for c in CONFIG_KEYS if c in t and c not in ("prefill_len", "decode_len", "alpha")]
    frame = t.loc[usable, keys].astype(str)
    for col in ("prefill_len", "decode_len"):  # measured means: binned, not matched exactly
        length = pd.to_numeric(t.loc[usable, col], errors="coerce").to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            frame[col] = np.round(np.log2(length))
    group = frame.groupby(list(frame.columns), dropna=False, sort=False).ngroup().to_numpy()
    idx = np.flatnonzero(usable)
    for g in np.unique(group):
        members = idx[group == g]
        lowest = members[np.argmin(rate[members])]
        out[members] = ttft[members] / ttft[lowest]
    return out


MAX_FAILED_SHARE = 0.05  # above it a run measured its survivors: excluded from fits


def failed_share(table: pd.DataFrame) -> np.ndarray:
    """Per run, the share of its requests that failed (NaN where not recorded)."""
    failed = pd.to_numeric(table.get("n_failed"), errors="coerce")
    if failed is None:
        return np.full(len(table), np.nan)
    done = pd.to_numeric(table["n_requests"], errors="coerce")
    return (failed / (failed + done)).to_numpy(dtype=float)


def flag_failures(table: pd.DataFrame, *, max_share: float = MAX_FAILED_SHARE) -> pd.DataFrame:
    """Exclude (``excluded``, with ``excluded_reason``) runs where more than ``max_share`` of
    the requests failed: what they measured is the surviving requests'. Runs with fewer
    failures are kept (their ``n_failed`` stays in the table; :func:`bayes_sd.read_sweep`
    reports them)."""
    t = table.copy()
    many = failed_share(t) > max_share
    if not many.any():
        return t
    failed = pd.to_numeric(t["n_failed"], errors="coerce")
    done = pd.to_numeric(t["n_requests"], errors="coerce")
    excluded = t["excluded"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    reason = t["excluded_reason"].astype("object").to_numpy(copy=True)
    for i in np.flatnonzero(many & ~excluded):
        reason[i] = f"{int(failed.iloc[i])} of {int(failed.iloc[i] + done.iloc[i])} requests failed"
    t["excluded"] = excluded | many
    t["excluded_reason"] = reason
    return t
