"""Real vLLM data: fit the hierarchical model to the vLLM blog sweep and check it.

Run: ``.venv/bin/python validation/real_vllm.py [--draws 1000] [--chains 4]`` (~5 min on 2 cores).

Data: ``load_example("vllm-blog-2024")`` — Llama-3-70B-Instruct on 4×H100, vLLM (Oct 2024),
open-loop Poisson rates, SD off and on (k = 4; a 0.5 B draft model on ShareGPT, n-gram lookup
on CNN/DailyMail), mean latency read off the blog's figures (data/vllm-blog-2024/README.md).

Reports
* the posterior of the break-even rate (where SD stops paying) per dataset, next to the measured
  crossing (linear interpolation of the measured speedup between the two rates around 1);
* predicted against measured speedup at every rate: the model's mean speedup and the posterior
  predictive interval of a *measured* speedup (ratio of two noisy runs);
* a posterior predictive check: each measured mean latency against its 90% predictive interval
  (``predict(noise=True)``), the PIT value and the coverage.

Writes ``validation/results/real_vllm.json``, ``docs/validation/real_vllm.md`` and
``docs/validation/real_*.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import _common
import numpy as np
import pandas as pd

import bayes_sd
from bayes_sd import planning
from bayes_sd.demo import BLOG_CONFIGS, blog_config
from bayes_sd.model import LatencyModel

K = 4


def measured_crossing(rates: np.ndarray, speedup: np.ndarray) -> float:
    """Rate where the measured speedup first falls below 1, by linear interpolation between the
    rates around it; NaN when it never does."""
    below = np.flatnonzero(speedup < 1)
    if below.size == 0:
        return float("nan")
    i = below[0]
    if i == 0:
        return float(rates[0])
    r0, r1, s0, s1 = rates[i - 1], rates[i], speedup[i - 1], speedup[i]
    return float(r0 + (s0 - 1) / (s0 - s1) * (r1 - r0))


def speedup_table(model, sweep) -> tuple[pd.DataFrame, dict]:
    rows, draws_by_dataset = [], {}
    for dataset in BLOG_CONFIGS:
        part = sweep[sweep["dataset"] == dataset]
        cfg = blog_config(sweep, dataset)
        rates = np.array(sorted(part["request_rate"].unique()), dtype=float)
        pairs = pd.DataFrame([{**cfg, "k": k, "request_rate": r} for r in rates for k in (0, K)])
        mean = model.predict(pairs, random_seed=0)
        noisy = model.predict(pairs, random_seed=1, noise=True)
        lat_mean = mean.draws["latency"].stack(s=["chain", "draw"]).transpose("s", "row").values
        lat_noisy = noisy.draws["latency"].stack(s=["chain", "draw"]).transpose("s", "row").values
        for j, r in enumerate(rates):
            i0, ik = 2 * j, 2 * j + 1
            spd = lat_mean[:, i0] / lat_mean[:, ik]
            spd_run = lat_noisy[:, i0] / lat_noisy[:, ik]
            m_sd = part[(part["k"] == K) & (part["request_rate"] == r)]["latency_mean_s"]
            m_0 = part[(part["k"] == 0) & (part["request_rate"] == r)]["latency_mean_s"]
            measured = float(m_0.iloc[0] / m_sd.iloc[0]) if len(m_sd) and len(m_0) else np.nan
            lo, med, hi = np.nanquantile(spd, [0.05, 0.5, 0.95])
            rlo, rhi = np.nanquantile(spd_run, [0.05, 0.95])
            rows.append(
                {
                    "dataset": dataset,
                    "rate": r,
                    "measured": measured,
                    "median": med,
                    "lo": lo,
                    "hi": hi,
                    "run_lo": rlo,
                    "run_hi": rhi,
                    "inside_run_interval": bool(rlo <= measured <= rhi),
                    "p_speedup_gt_1": float(np.mean(spd > 1)),
                }
            )
        be = planning.break_even(model, cfg, k=K)
        draws_by_dataset[dataset] = be.draws
    return pd.DataFrame(rows), draws_by_dataset


def ppc_table(model, sweep) -> pd.DataFrame:
    runs = sweep.drop(columns=["latency_mean_s"])
    pred = model.predict(runs, random_seed=2, noise=True)
    lat = pred.draws["latency"].stack(s=["chain", "draw"]).transpose("s", "row").values
    y = sweep["latency_mean_s"].to_numpy(dtype=float)
    lo, med, hi = np.nanquantile(lat, [0.05, 0.5, 0.95], axis=0)
    out = sweep[["dataset", "k", "request_rate"]].copy()
    out["measured_s"] = y
    out["pred_median_s"] = med
    out["pred_lo_s"] = lo
    out["pred_hi_s"] = hi
    out["pit"] = np.mean(lat < y[None, :], axis=0)
    out["inside_90"] = (lo <= y) & (y <= hi)
    return out.reset_index(drop=True)


def figures(spd: pd.DataFrame, be_draws: dict, ppc: pd.DataFrame, crossings: dict, docs: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, (dataset, g) in zip(axes, spd.groupby("dataset", sort=False), strict=True):
        ax.fill_between(g["rate"], g["run_lo"], g["run_hi"], color="C0", alpha=0.15,
                        label="90% interval of a measured speedup")  # fmt: skip
        ax.fill_between(g["rate"], g["lo"], g["hi"], color="C0", alpha=0.35,
                        label="90% interval of the mean speedup")  # fmt: skip
        ax.plot(g["rate"], g["median"], color="C0", label="posterior median")
        ax.plot(g["rate"], g["measured"], "ko", label="measured (vLLM blog)")
        ax.axhline(1, color="0.4", lw=0.8, ls="--")
        ax.set_title(f"{dataset}, k = {K}")
        ax.set_xlabel("request rate (req/s)")
        ax.set_ylabel("speedup (latency without SD / with SD)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(docs / "real_speedup.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, (dataset, d) in zip(axes, be_draws.items(), strict=True):
        finite = d[np.isfinite(d) & (d > 0)]
        ax.hist(finite, bins=40, color="C0", alpha=0.7, density=True)
        if np.isfinite(crossings[dataset]):
            ax.axvline(crossings[dataset], color="k", lw=2, label="measured crossing")
        q = np.quantile(d, [0.05, 0.95], method="inverted_cdf")
        ax.axvspan(*q, color="C0", alpha=0.15, label="90% interval")
        ax.set_title(f"{dataset}: break-even rate posterior")
        ax.set_xlabel("request rate (req/s)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(docs / "real_break_even.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4.4))
    for (dataset, k), g in ppc.groupby(["dataset", "k"], sort=False):
        ax.errorbar(
            g["measured_s"], g["pred_median_s"],
            yerr=[g["pred_median_s"] - g["pred_lo_s"], g["pred_hi_s"] - g["pred_median_s"]],
            fmt="o", ms=4, capsize=2, label=f"{dataset}, k = {k}",
        )  # fmt: skip
    top = float(max(ppc["measured_s"].max(), ppc["pred_hi_s"].max())) * 1.1
    ax.plot([0, top], [0, top], color="0.5", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured mean latency (s)")
    ax.set_ylabel("posterior predictive of a run (median, 90%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(docs / "real_ppc.png", dpi=110)
    plt.close(fig)


def markdown(meta, spd, breaks, ppc) -> str:
    d = meta["diagnostics"]
    lines = [
        f"Fit: {meta['chains']} chains × {meta['draws']} draws (tune {meta['draws']}, "
        f"target_accept {meta['target_accept']}), {meta['seconds']:.0f} s; max R-hat "
        f"{d['max_rhat']:.3f}, min bulk ESS {d['min_ess_bulk']:.0f}, min tail ESS "
        f"{d['min_ess_tail']:.0f}, {d['divergences']} divergences; {d['runs_fitted']} runs.",
        "",
        "**Break-even rate** (SD with k = 4 stops paying), posterior against the measured "
        "crossing:",
        "",
        "| dataset | median (req/s) | 90% interval | measured crossing | inside |",
        "| --- | --- | --- | --- | --- |",
    ]
    for b in breaks:
        lines.append(
            f"| {b['dataset']} | {b['break_even_median']:.2f} | {b['break_even_lo']:.2f}–"
            f"{b['break_even_hi']:.2f} | {b['measured_crossing']:.2f} | "
            f"{'yes' if b['inside'] else 'no'} |"
        )
    lines += [
        "",
        "**Speedup at every measured rate** (k = 4): posterior median and 90% interval of the "
        "mean speedup; 90% interval of a measured speedup (ratio of two noisy runs):",
        "",
        "| dataset | rate | measured | median | 90% (mean) | 90% (a measured run) | "
        "P(speedup > 1) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for _, r in spd.iterrows():
        lines.append(
            f"| {r['dataset']} | {r['rate']:g} | {r['measured']:.2f} | {r['median']:.2f} | "
            f"{r['lo']:.2f}–{r['hi']:.2f} | {r['run_lo']:.2f}–{r['run_hi']:.2f} | "
            f"{r['p_speedup_gt_1']:.2f} |"
        )
    inside = spd["inside_run_interval"]
    lines += [
        "",
        f"Measured speedups inside the 90% interval of a measured speedup: {int(inside.sum())} "
        f"of {len(inside)}.",
        "",
        f"**Posterior predictive check** of the {len(ppc)} measured mean latencies: "
        f"{ppc['inside_90'].mean():.0%} inside their 90% predictive interval; PIT values "
        f"(share of predictive draws below the measurement; uniform if calibrated): mean "
        f"{ppc['pit'].mean():.2f}, {np.mean((ppc['pit'] < 0.05) | (ppc['pit'] > 0.95)):.0%} in "
        "the outer 10%; median |predicted/measured − 1| "
        f"{np.median(np.abs(ppc['pred_median_s'] / ppc['measured_s'] - 1)):.1%}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = _common.parser(__doc__, draws=1000, chains=4, model_config=True)
    p.add_argument("--target-accept", type=float, default=0.95)
    args = _common.parse(p, argv, "real_vllm")
    sweep = bayes_sd.load_example("vllm-blog-2024")
    model = LatencyModel(
        model_config=_common.model_config(args),
        sampler_config=_common.sampler_config(args, target_accept=args.target_accept),
    )
    seconds = _common.fit_timed(model, sweep, args, f"{len(sweep)} runs")
    spd, be_draws = speedup_table(model, sweep)
    breaks = []
    crossings = {}
    for dataset, draws in be_draws.items():
        g = spd[spd["dataset"] == dataset]
        cross = measured_crossing(g["rate"].to_numpy(), g["measured"].to_numpy())
        crossings[dataset] = cross
        lo, med, hi = np.quantile(draws, [0.05, 0.5, 0.95], method="inverted_cdf")
        breaks.append(
            {
                "dataset": dataset,
                "break_even_median": float(med),
                "break_even_lo": float(lo),
                "break_even_hi": float(hi),
                "measured_crossing": cross,
                "inside": bool(lo <= cross <= hi),
            }
        )
    ppc = ppc_table(model, sweep)
    meta = {
        "chains": args.chains,
        "draws": args.draws,
        "target_accept": args.target_accept,
        "seed": args.seed,
        "seconds": seconds,
        "diagnostics": model.diagnostics,
        "bayes_sd": bayes_sd.__version__,
    }
    pd.set_option("display.width", 200)
    print(pd.DataFrame(breaks).to_string(index=False))
    print(spd.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"PPC: {ppc['inside_90'].mean():.1%} of runs inside their 90% interval")
    figures(spd, be_draws, ppc, crossings, args.docs)
    _common.write_text(args.docs / "real_vllm.md", markdown(meta, spd, breaks, ppc))
    payload = {
        "meta": meta,
        "break_even": breaks,
        "speedup": spd.to_dict("records"),
        "ppc": ppc.to_dict("records"),
    }
    _common.write_json(args.out, payload)
    print(f"wrote {args.out} and {args.docs}/real_*")
    return 0


if __name__ == "__main__":
    sys.exit(main())
