"""Check the closed form L = C1 / (1 − λ C2) against the simulator, on the demo sweep.

Run: ``.venv/bin/python validation/closed_form_check.py [--out FILE.json]``.
Prints a table and writes JSON; docs/simulator.md quotes its numbers.

1. Per series (system, workload, k, α), fit C1 and C2 by least squares on log latency to the
   unsaturated runs (the demo's rates run to 80% of the measured capacity); R² of latency.
2. Where it breaks: (a) near saturation — the same fits evaluated on the runs the reader flagged
   saturated; (b) MoE at low load — R² on the lower-load half of each series when the fit uses
   all of it (the literature reports 0.83–0.91 for MoE there without a coverage term).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

import bayes_sd
from bayes_sd import latency, summaries
from bayes_sd.schema import CONFIG_KEYS


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="validation/results/closed_form.json")
    args = parser.parse_args()
    sweep = bayes_sd.load_example("demo")
    sweep["moe"] = sweep["target_experts"] > 1
    sweep["fraction"] = sweep["file"].str.extract(r"/([0-9.]+)sat\.json$")[0].astype(float)
    fits = summaries.fit_open_loop_series(sweep)
    keys = [k for k in CONFIG_KEYS if k in fits.columns]
    merged = sweep.merge(fits[[*keys, "C1_s", "C2_s"]], on=keys, how="left")
    merged["pred"] = latency.open_loop_latency(
        merged["C1_s"].to_numpy(), merged["C2_s"].to_numpy(), merged["request_rate"].to_numpy()
    )
    rows = []
    for key, g in merged.groupby(keys, dropna=False, sort=False):
        ok = g[~g["saturated"].astype(bool)].sort_values("request_rate")
        if len(ok) < 4 or ok["C1_s"].isna().any():
            continue
        y, p = ok["latency_mean_s"].to_numpy(), ok["pred"].to_numpy()
        low = ok.head(len(ok) // 2)
        upto = ok[ok["fraction"] <= 0.6]
        sat = g[g["saturated"].astype(bool)]
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "moe": bool(g["moe"].iloc[0]),
                "runs": len(ok),
                "r2": r2(y, p),
                "r2_upto_60pct": r2(upto["latency_mean_s"].to_numpy(), upto["pred"].to_numpy()),
                "r2_low_half": r2(low["latency_mean_s"].to_numpy(), low["pred"].to_numpy()),
                "max_rel_error": float(np.max(np.abs(p / y - 1))),
                "saturated_runs": len(sat),
                "saturated_median_rel_error": float(
                    np.median(np.abs(sat["pred"] / sat["latency_mean_s"] - 1))
                )
                if len(sat)
                else np.nan,
            }
        )
    table = pd.DataFrame(rows)
    summary = []
    for moe, g in table.groupby("moe"):
        summary.append(
            {
                "targets": "MoE" if moe else "dense",
                "series": len(g),
                "r2_median": float(g["r2"].median()),
                "r2_p10": float(g["r2"].quantile(0.1)),
                "r2_min": float(g["r2"].min()),
                "share_r2_ge_0.98": float((g["r2"] >= 0.98).mean()),
                "r2_upto_60pct_median": float(g["r2_upto_60pct"].median()),
                "share_upto_60pct_ge_0.98": float((g["r2_upto_60pct"] >= 0.98).mean()),
                "r2_low_half_median": float(g["r2_low_half"].median()),
                "r2_low_half_p10": float(g["r2_low_half"].quantile(0.1)),
                "max_rel_error_median": float(g["max_rel_error"].median()),
            }
        )
    sat = table[table["saturated_runs"] > 0]
    near = {
        "series_with_flagged_runs": len(sat),
        "flagged_runs": int(sat["saturated_runs"].sum()),
        "median_rel_error_on_flagged": float(sat["saturated_median_rel_error"].median()),
    }
    ok_runs = merged[~merged["saturated"].astype(bool)].assign(
        rel=lambda d: d["pred"] / d["latency_mean_s"] - 1
    )
    by_fraction = (
        ok_runs.groupby(["moe", "fraction"])["rel"]
        .agg(mean_rel_residual="mean", mean_abs_rel_residual=lambda r: r.abs().mean())
        .reset_index()
    )
    pd.set_option("display.width", 200)
    print(pd.DataFrame(summary).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("near saturation:", json.dumps(near))
    print("residual (fit − simulated)/simulated by load:")
    print(by_fraction.to_string(index=False, float_format=lambda v: f"{v:+.3f}"))
    worst = table.sort_values("r2").head(8)[
        ["gpu", "target", "drafter", "k", "alpha", "prefill_len", "decode_len", "r2", "r2_low_half"]
    ]
    print("worst series:\n" + worst.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"summary": summary, "near_saturation": near, "worst": worst.to_dict("records")},
            indent=1,
            default=str,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
