"""The main job on the embedded data (``bayes-sd demo``, ``make demo``), as tables.

:func:`first_look` summarises the real vLLM sweep and the measured step costs with
least-squares point estimates; :func:`bayesian_fit` fits the hierarchical model to the real
sweep and answers with intervals: predicted against measured speedup at every rate, the
break-even rate, the highest rate meeting a latency SLO; :func:`real_engine_fit` fits TTFT,
TPOT and E2E of a real engine's closed-loop sweep (InferenceX) and sets each run's measured
means beside their intervals. All return data; the CLI renders it (:mod:`bayes_sd.cli_demo`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = [
    "BLOG_CONFIGS",
    "REAL_ENGINE",
    "BayesianDemo",
    "FirstLook",
    "PhasesDemo",
    "bayesian_fit",
    "blog_config",
    "first_look",
    "real_engine_fit",
]

# the SD configuration of each dataset of the vLLM blog sweep (data/vllm-blog-2024/README.md)
BLOG_CONFIGS = {
    "ShareGPT": {"drafter": "turboderp/Qwama-0.5B-Instruct", "method": "draft_model"},
    "CNN/DailyMail": {"method": "ngram"},
}
BLOG_K = 4
# the real engine of the per-phase section: InferenceX's DeepSeek-R1 on 8×H200 with SGLang, MTP
# off and on (k = 2), three workloads, 4 to 64 requests in flight (data/inferencex/README.md)
REAL_ENGINE = {"gpu": "H200-SXM-141GB", "engine": "sglang"}


def blog_config(sweep: pd.DataFrame, dataset: str) -> dict:
    """The SD configuration of one dataset of the vLLM blog sweep (for predict and planning)."""
    first = sweep[sweep["dataset"] == dataset].iloc[0]
    keys = ("gpu", "num_gpus", "target", "prefill_len", "decode_len")
    return {**{k: first[k] for k in keys}, "dataset": dataset, **BLOG_CONFIGS[dataset]}


@dataclass
class FirstLook:
    """Least-squares summaries of the embedded real data (no intervals)."""

    overview: pd.DataFrame  # the vLLM sweep, per series
    series: pd.DataFrame  # C1, C2 per series of the open-loop sweep
    pairs: pd.DataFrame  # SD against no SD: speedup at zero load, break-even
    step_fit: pd.DataFrame  # a + b·B·q + c·B·ctx per model and GPU
    counts: dict = field(default_factory=dict)


def first_look() -> FirstLook:
    from bayes_sd import datasets, summaries

    sweep = datasets.load_example("vllm-blog-2024")
    steps = datasets.load_example("stepcost")
    series = summaries.fit_open_loop_series(sweep)
    return FirstLook(
        overview=summaries.sweep_overview(sweep),
        series=series,
        pairs=summaries.break_even_table(series),
        step_fit=summaries.fit_step_costs(steps),
        counts={"runs": len(sweep), "steps": len(steps)},
    )


@dataclass
class BayesianDemo:
    """The hierarchical model of the real sweep and its answers (90% intervals)."""

    model: object
    fit_seconds: float
    diagnostics: pd.DataFrame
    speedup: pd.DataFrame  # predicted against measured speedup per dataset and rate
    break_even: pd.DataFrame
    sustainable: pd.DataFrame  # highest rate with P(mean latency <= SLO) >= 0.9, per k


def bayesian_fit(*, draws: int, chains: int, slo_s: float, seed: int = 1) -> BayesianDemo:
    """Fit :class:`~bayes_sd.LatencyModel` to the real vLLM sweep (``draws`` per chain after
    as many tuning steps) and tabulate its answers."""
    from bayes_sd import datasets, planning

    sweep = datasets.load_example("vllm-blog-2024")
    model, fit_s, diagnostics = _fit(sweep, draws, chains, seed)
    rows, breaks, slo_rows = [], [], []
    for dataset in BLOG_CONFIGS:
        part = sweep[sweep["dataset"] == dataset]
        cfg = blog_config(sweep, dataset)
        rates = sorted(part["request_rate"].unique())
        sd_rows = pd.DataFrame([{**cfg, "k": BLOG_K, "request_rate": r} for r in rates])
        summ = model.predict(sd_rows, random_seed=0).summary
        for r, (_, p) in zip(rates, summ.iterrows(), strict=True):
            m_sd = part[(part["k"] == BLOG_K) & (part["request_rate"] == r)]["latency_mean_s"]
            m_0 = part[(part["k"] == 0) & (part["request_rate"] == r)]["latency_mean_s"]
            measured = float(m_0.iloc[0] / m_sd.iloc[0]) if len(m_sd) and len(m_0) else np.nan
            rows.append({"dataset": dataset, "rate": r, "measured_speedup": measured,
                         "speedup_median": p["speedup_median"], "speedup_lo": p["speedup_lo"],
                         "speedup_hi": p["speedup_hi"],
                         "p_speedup_gt_1": p["p_speedup_gt_1"]})  # fmt: skip
        breaks.append({"dataset": dataset, **planning.break_even(model, cfg, k=BLOG_K).summary()})
        sus = planning.sustainable_rate(model, cfg, slo_s=slo_s, credibility=0.9, ks=(0, BLOG_K))
        slo_rows += [{"dataset": dataset, **r} for r in sus.to_dict("records")]
    return BayesianDemo(
        model=model,
        fit_seconds=fit_s,
        diagnostics=diagnostics,
        speedup=pd.DataFrame(rows),
        break_even=pd.DataFrame(breaks),
        sustainable=pd.DataFrame(slo_rows),
    )


@dataclass
class PhasesDemo:
    """The per-phase model of a real engine's closed-loop sweep: TTFT, TPOT and E2E."""

    model: object
    fit_seconds: float
    diagnostics: pd.DataFrame
    runs: pd.DataFrame  # per run and metric: measured mean, posterior median, interval


def real_engine_fit(*, draws: int, chains: int, seed: int = 1,
                    interval: float = 0.9) -> PhasesDemo:  # fmt: skip
    """Fit :class:`~bayes_sd.LatencyModel` to the InferenceX runs of :data:`REAL_ENGINE`
    (TTFT, TPOT and E2E in the likelihood) and set each run's measured means beside the
    interval of a measured run (``predict(noise=True)``)."""
    from bayes_sd import datasets

    sweep = datasets.load_example("inferencex")
    part = sweep[(sweep["gpu"] == REAL_ENGINE["gpu"]) & (sweep["engine"] == REAL_ENGINE["engine"])]
    part = part[~part["excluded"].astype(bool)].reset_index(drop=True)
    model, fit_s, diagnostics = _fit(part, draws, chains, seed)
    query = part.drop(columns=[c for c in part.columns if c.endswith("_mean_s")])
    mean = model.predict(query, interval=interval, random_seed=0).summary
    run = model.predict(query, interval=interval, random_seed=0, noise=True).summary
    rows = []
    for i, r in part.iterrows():
        for metric, name in (("ttft", "TTFT"), ("tpot", "TPOT"), ("latency", "E2E")):
            obs = float(r[f"{metric}_mean_s"])
            lo, hi = run.at[i, f"{metric}_lo"], run.at[i, f"{metric}_hi"]
            rows.append({"k": int(r["k"]), "prompt": round(r["prefill_len"]),
                         "output": round(r["decode_len"]), "in_flight": int(r["concurrency"]),
                         "metric": name, "measured_s": obs,
                         "median_s": mean.at[i, f"{metric}_median"], "lo_s": lo, "hi_s": hi,
                         "inside": bool(lo <= obs <= hi)})  # fmt: skip
    return PhasesDemo(model=model, fit_seconds=fit_s, diagnostics=diagnostics,
                      runs=pd.DataFrame(rows))  # fmt: skip


def _fit(sweep: pd.DataFrame, draws: int, chains: int, seed: int):
    """``(model, seconds, diagnostics table)`` of :class:`~bayes_sd.LatencyModel` fitted to
    ``sweep`` with ``draws`` per chain after as many tuning steps (compile included)."""
    from bayes_sd.model import LatencyModel

    config = {"draws": draws, "tune": draws, "chains": chains, "progressbar": False}
    model = LatencyModel(sampler_config=config)
    t0 = time.perf_counter()
    model.fit(sweep, random_seed=seed)
    seconds = time.perf_counter() - t0
    keys = ("max_rhat", "min_ess_bulk", "min_ess_tail", "divergences", "draws", "runs_fitted")
    return model, seconds, pd.DataFrame([{k: model.diagnostics[k] for k in keys}])
