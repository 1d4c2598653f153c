"""The baseline users would otherwise use: six coefficients per system by non-linear least squares.

This is the published interpretable model's procedure (docs/science.md): for each system (GPU,
target, workload) and drafter, fit ``c1p c2p c1v c2v c1d c2d`` with ``scipy.optimize.curve_fit``
to its baseline (k = 0) and SD runs together, on log latency, with the closed forms
``C1 / (1 − λ C2)`` (open loop) and ``C1 + N C2`` (closed loop). No pooling: a system needs at
least six runs with at least two load levels, and unseen systems cannot be predicted (NaN).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeWarning, curve_fit

from bayes_sd import latency
from bayes_sd.coefs import REQUIRED
from bayes_sd.schema import acceptance_of, validate_sweep

__all__ = ["BaselineFit", "fit_baseline"]

KEYS = ("source", "dataset", "gpu", "num_gpus", "target", "prefill_len", "decode_len")
SIX = REQUIRED  # the published model's coefficients: c1p c2p c1v c2v c1d c2d (no premium)


def _key(row) -> tuple:
    return tuple("" if pd.isna(row[k]) else row[k] for k in KEYS)


def _predict(theta: np.ndarray, rows: pd.DataFrame) -> np.ndarray:
    coefs = latency.Coefficients(**dict(zip(SIX, np.exp(theta), strict=True)))
    k = rows["k"].to_numpy(dtype=float)
    c1, c2 = latency.demand(coefs, k, acceptance_of(rows), rows["decode_len"].to_numpy(dtype=float))
    rate = rows["request_rate"].astype(float).to_numpy()
    conc = rows["concurrency"].astype(float).to_numpy()
    is_open = (rows["load_mode"] == "rate").to_numpy()
    return np.where(
        is_open,
        latency.open_loop_latency(c1, c2, np.nan_to_num(rate)),
        latency.closed_loop_latency(c1, c2, np.nan_to_num(conc)),
    )


@dataclass
class BaselineFit:
    """Fitted coefficients per (system, drafter); ``predict`` gives NaN for unseen systems."""

    coefficients: pd.DataFrame  # one row per fitted group: KEYS, drafter, c1p..c2d, rms

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        rows = rows.reset_index(drop=True).copy()
        out = np.full(len(rows), np.nan)
        if "load_mode" not in rows:
            rows["load_mode"] = np.where(rows["request_rate"].notna(), "rate", "concurrency")
        for col in (
            "acceptance_length",
            "alpha",
            "request_rate",
            "concurrency",
            "method",
            "drafter",
            "dataset",
            "source",
        ):
            if col not in rows:
                rows[col] = np.nan
        rows["dataset"] = rows["dataset"].fillna("")
        keys = [_key(r) for _, r in rows[list(KEYS)].iterrows()]
        groups = [
            "" if k == 0 else (d if isinstance(d, str) else str(m))
            for k, d, m in zip(rows["k"], rows["drafter"], rows["method"], strict=True)
        ]
        fitted = self.coefficients
        lookup: dict[tuple, np.ndarray] = {}
        for _, r in fitted.iterrows():
            theta = np.log(r[list(SIX)].to_numpy(float))
            lookup[(*_key(r), r["drafter_group"])] = theta
            lookup.setdefault((*_key(r), ""), theta)  # baseline runs: any group of the system
        target = pd.Series([(*k, g) for k, g in zip(keys, groups, strict=True)])
        for label, idx in target.groupby(target).groups.items():
            if label in lookup:
                out[idx] = _predict(lookup[label], rows.loc[idx])
        return out


def fit_baseline(sweep: pd.DataFrame, *, min_runs: int = 6) -> BaselineFit:
    """Fit every (system, drafter) group of ``sweep``'s unsaturated runs by ``curve_fit``."""
    sweep = validate_sweep(sweep)
    runs = sweep[~sweep["saturated"].astype(bool) & (sweep["load_mode"] != "burst")].copy()
    runs["dataset"] = runs["dataset"].fillna("")
    runs["key"] = [_key(r) for _, r in runs.iterrows()]
    out = []
    for key, system in runs.groupby("key", sort=True):
        sd = system[system["k"] > 0]
        base = system[system["k"] == 0]
        groups = sorted(
            {
                (d if isinstance(d, str) else str(m))
                for d, m in zip(sd["drafter"], sd["method"], strict=True)
            }
        ) or [""]
        for group in groups:
            mask = (sd["drafter"] == group) | (sd["method"].astype(str) == group)
            rows = pd.concat([base, sd[mask.fillna(False).to_numpy()]]).reset_index(drop=True)
            loads = rows["request_rate"].fillna(rows["concurrency"]).nunique()
            if len(rows) < min_runs or loads < 2:
                continue
            y = np.log(rows["latency_mean_s"].to_numpy(dtype=float))

            def f(_x, *theta, rows=rows):
                pred = _predict(np.asarray(theta), rows)
                return np.where(np.isfinite(pred), np.log(np.maximum(pred, 1e-12)), 50.0)

            start = np.log([0.02, 0.005, 0.01, 1e-4, 1e-3, 1e-5])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                try:
                    theta, _ = curve_fit(
                        f,
                        np.arange(len(rows)),
                        y,
                        p0=start,
                        maxfev=20_000,
                        bounds=(np.full(6, -25.0), np.full(6, 5.0)),
                    )
                except RuntimeError:
                    continue
            rms = float(np.sqrt(np.mean((f(None, *theta) - y) ** 2)))
            out.append(
                {
                    **dict(zip(KEYS, key, strict=True)),
                    "drafter_group": group,
                    **dict(zip(SIX, np.exp(theta), strict=True)),
                    "rms_log_error": rms,
                    "n_runs": len(rows),
                }
            )
    return BaselineFit(pd.DataFrame(out))
