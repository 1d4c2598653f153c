"""Series whose measured latency falls as the load rises: what the load law cannot fit.

Every phase of :mod:`bayes_sd.phases` — TTFT, TPOT and E2E — is non-decreasing in the load
(requests in flight or request rate): more requests mean more prefill to wait for, longer
steps, longer queues. A series (one configuration at one draft length) whose measured mean
falls well below what it was at a lower load therefore holds an effect the law does not have —
a prefill stage that waits to fill a batch, a warm-up inside the lower-load runs, an autoscaler,
or runs of two setups the table does not tell apart (say, two campaigns of one system whose
mean lengths differ by under 10%: one workload) — and the fit will spread it over the shared
coefficients and the noise. :func:`falling_series` finds them, :func:`warn_falling` says so
when a sweep is fitted or ingested (:func:`at_ingest`) and reports list them; the runs are
kept, and :func:`exclude_falling` (``bayes-sd ingest --exclude-falling``) sets ``excluded``,
with the reason, on every run of those series.

The threshold: a mean below :data:`FALL` (two thirds) of the highest mean at a lower load of
its series. Measured on the embedded sweeps (multi-load series; lowest such ratio): InferenceX
SGLang and TensorRT-LLM 0.76 and above for TTFT, 1.06 and above for TPOT and E2E (a finite
run's mean TTFT scatters); the vLLM blog sweep 0.98; the simulated demo 0.97. InferenceX's
Dynamo with TensorRT-LLM: mean TTFT falls in 8 of its 10 multi-load series, to 0.15× (2.15 s
at 4 requests in flight, 0.31 s at 32) — docs/validation.md, section 5.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from bayes_sd.figures import config_name

__all__ = [
    "FALL",
    "METRICS",
    "WHY",
    "LoadLawWarning",
    "at_ingest",
    "exclude_falling",
    "falling_series",
    "warn_falling",
]

FALL = 2.0 / 3.0
# what the warning and the reports say about them
WHY = ("every phase of the load law grows with the load, so these runs hold an effect it does "
       "not have (a prefill stage waiting to fill a batch, a warm-up, an autoscaler, or two "
       "setups under one label) and are fitted with large residuals; to fit without them: "
       "bayes-sd ingest --exclude-falling")  # fmt: skip
METRICS = {"ttft_mean_s": "mean TTFT", "tpot_mean_s": "mean TPOT", "latency_mean_s": "mean E2E"}


class LoadLawWarning(UserWarning):
    """Measured means that fall with the load: an effect the load law does not have."""


def _load(rows: pd.DataFrame) -> np.ndarray:
    rate = rows["load_mode"].eq("rate").to_numpy()
    return np.where(rate, rows["request_rate"], rows["concurrency"]).astype(float)


def falling_series(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (series, metric) whose mean at some load is below :data:`FALL` of the
    highest mean of the series at a lower load: ``series``, ``name`` (in words), ``engine``,
    ``metric``, ``peak_load``, ``peak``, ``load``, ``value``, ``ratio`` (the lowest such ratio),
    ``multi_load`` (the series of that engine measured at two or more loads, per metric).
    ``rows``: labelled runs (``Design.rows``: ``series``, ``load_mode``, ``request_rate``,
    ``concurrency``, the metric columns, ``run_id``); runs at one load are averaged first;
    ``run_ids`` lists every run of the series."""
    cols = ["series", "name", "engine", "metric", "peak_load", "peak", "load", "value", "ratio",
            "multi_load", "run_ids"]  # fmt: skip
    t = rows.assign(_load=_load(rows), _mode=rows["load_mode"].astype(str))
    engine = t["engine"] if "engine" in t else pd.Series("", index=t.index)
    t = t.assign(engine=engine.fillna("").astype(str))
    out = []
    members = t.groupby(["series", "_mode"], sort=False).indices  # row positions per series
    for metric in METRICS:
        if metric not in t or t[metric].isna().all():
            continue
        at = (t.dropna(subset=[metric, "_load"])
              .groupby(["series", "_mode", "engine", "_load"], sort=True)[metric].mean()
              .reset_index())  # fmt: skip
        keys = ["series", "_mode"]
        size = at.groupby(keys)["_load"].transform("size")
        at = at[size >= 2]
        if at.empty:
            continue
        multi = at.drop_duplicates(keys).groupby("engine").size()
        before = at.groupby(keys)[metric].cummax().groupby([at["series"], at["_mode"]]).shift()
        at = at.assign(ratio=at[metric] / before)
        worst = at.loc[at["ratio"] < FALL]
        loads = at.groupby(keys, sort=False).indices
        for key, g in worst.groupby(keys, sort=False):
            row = g.loc[g["ratio"].idxmin()]
            series = at.iloc[loads[key]]
            lower = series[series["_load"] < row["_load"]]
            peak = lower.loc[lower[metric].idxmax()]
            runs = rows.iloc[members[key]]
            name = f"{config_name(runs.iloc[0])}, k = {runs['k'].iloc[0]:g}"
            out.append([row["series"], name, row["engine"], metric, peak["_load"],
                        peak[metric], row["_load"], row[metric], row["ratio"],
                        int(multi[row["engine"]]), list(runs.get("run_id", []))])  # fmt: skip
    return pd.DataFrame(out, columns=cols)


def describe(found: pd.DataFrame) -> list[str]:
    """One sentence per (engine, metric) of :func:`falling_series`' table."""
    lines = []
    for (engine, metric), g in found.groupby(["engine", "metric"], sort=True):
        w = g.loc[g["ratio"].idxmin()]
        who = f"engine {engine}" if engine not in ("", "unknown") else "the sweep"
        lines.append(
            f"{METRICS[metric]} falls with load in {len(g)} of {w['multi_load']} multi-load "
            f"series of {who} (down to {w['ratio']:.2f}x: {w['peak']:.3g} s at load "
            f"{w['peak_load']:g}, {w['value']:.3g} s at {w['load']:g}: {w['name']})"
        )
    return lines


def warn_falling(rows: pd.DataFrame, stacklevel: int = 3) -> pd.DataFrame:
    """Warn (:class:`LoadLawWarning`) about the series of :func:`falling_series`; returns
    its table."""
    found = falling_series(rows)
    if len(found):
        warnings.warn(
            "; ".join(describe(found)) + f". {WHY[0].upper()}{WHY[1:]}, or "
            "bayes_sd.load_checks.exclude_falling(sweep)",
            LoadLawWarning,
            stacklevel=stacklevel,
        )
    return found


def exclude_falling(sweep: pd.DataFrame) -> pd.DataFrame:
    """A copy of the canonical ``sweep`` with ``excluded`` set (and the reason added to
    ``excluded_reason``) on every run of the series of :func:`falling_series`; the runs stay
    in the table, unfitted."""
    from bayes_sd.design import Design

    found = falling_series(Design.from_sweep(sweep).rows)
    out = sweep.copy()
    for _, f in found.iterrows():
        at = out["run_id"].isin(f["run_ids"])
        why = (f"{METRICS[f['metric']]} falls with load in its series ({f['ratio']:.2f}x "
               f"from load {f['peak_load']:g} to {f['load']:g}; bayes_sd.load_checks)")  # fmt: skip
        old = out.loc[at, "excluded_reason"].astype(object)
        out.loc[at, "excluded_reason"] = [why if pd.isna(o) or not o else f"{o}; {why}"
                                          for o in old]  # fmt: skip
        out.loc[at, "excluded"] = True
    return out


def at_ingest(sweep: pd.DataFrame, exclude: bool = False) -> tuple[pd.DataFrame, int]:
    """``bayes-sd ingest``: warn about the falling series (said when the data come in, not
    first at the fit), or with ``exclude`` mark their runs (:func:`exclude_falling`); returns
    the table and the number of runs newly excluded. A sweep with nothing the model could fit
    passes unchecked (the fit says why)."""
    from bayes_sd.design import Design
    from bayes_sd.errors import DataError

    try:
        if not exclude:
            warn_falling(Design.from_sweep(sweep).rows, stacklevel=4)
            return sweep, 0
        out = exclude_falling(sweep)
    except DataError:
        return sweep, 0
    before = sweep["excluded"].fillna(False).astype(bool).to_numpy()
    after = out["excluded"].fillna(False).astype(bool).to_numpy()
    return out, int((after & ~before).sum())
