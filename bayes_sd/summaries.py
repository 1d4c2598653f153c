"""Least-squares summaries of sweeps and step costs (point estimates, no uncertainty).

These are quick, transparent descriptions of the data — what a person would compute by hand
before a Bayesian fit: a per-series fit of ``L = C1 / (1 − λ C2)`` and a per-model fit of the
step-level cost ``t = a + b·B·q + c·B·ctx`` (model.md §5). They carry no intervals; the
hierarchical model gives those.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from bayes_sd import latency
from bayes_sd.schema import CONFIG_KEYS

__all__ = ["fit_open_loop_series", "fit_step_costs", "sweep_overview"]

SERIES_KEYS = list(CONFIG_KEYS)


def _series_keys(sweep: pd.DataFrame) -> list[str]:
    return [c for c in SERIES_KEYS if c in sweep.columns]


def _log_residuals(theta: np.ndarray, rate: np.ndarray, lat: np.ndarray) -> np.ndarray:
    c1, c2 = np.exp(theta)
    pred = latency.open_loop_latency(c1, c2, rate)
    # Past saturation the prediction is infinite: a large finite residual keeps LM moving.
    return np.where(np.isfinite(pred), np.log(pred) - np.log(lat), 10.0)


def fit_open_loop_series(sweep: pd.DataFrame) -> pd.DataFrame:
    """Fit ``C1, C2`` per series (same system, workload and k) of unsaturated open-loop runs.

    Least squares on log latency (relative errors), with ``C1, C2 > 0``; series with fewer than
    three rates are skipped. Returns one row per series with C1, C2, the saturation rate
    ``1/C2``, the RMS relative error and the number of runs.
    """
    runs = sweep[(sweep["load_mode"] == "rate") & ~sweep["saturated"].astype(bool)]
    keys = _series_keys(runs)
    rows = []
    for key, g in runs.groupby(keys, dropna=False, sort=True):
        rate = g["request_rate"].to_numpy(dtype=float)
        lat = g["latency_mean_s"].to_numpy(dtype=float)
        if np.unique(rate).size < 3:
            continue
        # Start from the linearisation 1/L = 1/C1 − λ C2/C1.
        slope, icpt = np.polyfit(rate, 1.0 / lat, 1)
        c1_0 = 1.0 / icpt if icpt > 0 else lat.min()
        c2_0 = max(-slope * c1_0, 1e-6)
        c2_0 = min(c2_0, 0.99 / rate.max())

        fit = least_squares(_log_residuals, np.log([c1_0, c2_0]), method="lm", args=(rate, lat))
        c1, c2 = np.exp(fit.x)
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "C1_s": c1,
                "C2_s": c2,
                "saturation_rate": 1.0 / c2,
                "rms_rel_error": float(np.sqrt(np.mean(fit.fun**2))),
                "n_runs": len(g),
            }
        )
    return pd.DataFrame(rows)


def break_even_table(series_fits: pd.DataFrame) -> pd.DataFrame:
    """Pair each SD series with its k = 0 series and compute speedup at zero load and λ*."""
    if series_fits.empty:
        return pd.DataFrame()
    system = [
        c
        for c in ("source", "dataset", "gpu", "num_gpus", "target", "prefill_len", "decode_len")
        if c in series_fits.columns
    ]
    base = series_fits[series_fits["k"] == 0].set_index(system)
    rows = []
    for _, sd in series_fits[series_fits["k"] > 0].iterrows():
        key = tuple(sd[c] for c in system)
        if key not in base.index:
            continue
        b = base.loc[key]
        rows.append(
            {
                **{c: sd[c] for c in system},
                "method": sd["method"],
                "k": sd["k"],
                "speedup_at_zero_load": b["C1_s"] / sd["C1_s"],
                "C1R": sd["C1_s"] / b["C1_s"],
                "C2R": sd["C2_s"] / b["C2_s"],
                "break_even_rate": float(
                    latency.break_even_rate(b["C1_s"], b["C2_s"], sd["C1_s"], sd["C2_s"])
                ),
                "sustainable_rate_ratio": b["C2_s"] / sd["C2_s"],
            }
        )
    return pd.DataFrame(rows)


def fit_step_costs(steps: pd.DataFrame, phase: str = "decode") -> pd.DataFrame:
    """Least-squares ``t = a + b·B·q + c·B·ctx`` (ms) per GPU and model, on median replays.

    ``b`` is ms per new token, ``c`` ms per cached context token. R² is on the medians; MoE
    models fit worse because their weight reads grow with the experts touched (model.md §4).
    """
    sub = steps[steps["phase"] == phase]
    shapes = sub.groupby(["gpu", "model", "moe", "batch", "q", "ctx"], as_index=False)[
        "time_ms"
    ].median()
    rows = []
    for (gpu, model, moe), g in shapes.groupby(["gpu", "model", "moe"], sort=True):
        tokens = (g["batch"] * g["q"]).to_numpy(dtype=float)
        ctx = (g["batch"] * g["ctx"]).to_numpy(dtype=float)
        y = g["time_ms"].to_numpy(dtype=float)
        x = np.column_stack([np.ones_like(y), tokens, ctx])
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        pred = x @ coef
        r2 = 1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
        rows.append(
            {
                "gpu": gpu,
                "model": model,
                "moe": bool(moe),
                "a_ms": coef[0],
                "b_ms_per_token": coef[1],
                "c_ms_per_ctx_token": coef[2],
                "r2": r2,
                "n_shapes": len(g),
            }
        )
    return pd.DataFrame(rows)


def sweep_overview(sweep: pd.DataFrame) -> pd.DataFrame:
    """Runs per series: counts, load range, latency range and how many are saturated."""
    keys = [
        c
        for c in ("source", "dataset", "gpu", "target", "method", "k", "load_mode")
        if c in sweep.columns
    ]
    return (
        sweep.assign(load=sweep["request_rate"].fillna(sweep["concurrency"]))
        .groupby(keys, dropna=False, sort=True)
        .agg(
            runs=("run_id", "size"),
            saturated=("saturated", "sum"),
            load_min=("load", "min"),
            load_max=("load", "max"),
            latency_min_s=("latency_mean_s", "min"),
            latency_max_s=("latency_mean_s", "max"),
        )
        .reset_index()
    )
