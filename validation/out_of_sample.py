"""Out-of-sample checks of the hierarchical model on the (simulated) demo sweep.

Run: ``.venv/bin/python validation/out_of_sample.py [--folds series,gpu,size] [--draws 300]``
(one fit per fold, ~4–8 min each on 2 cores).

Data: ``load_example("demo")`` — SIMULATED (the package's discrete-event simulator driven by the
measured H100/H200 step costs; docs/simulator.md). To keep each fit to minutes, training uses
every other unsaturated rate of each series.

Folds (each a fresh fit on the training part; predictions for the held-out part):
* ``series``: every 10th (k, acceptance) series held out — configurations of seen systems; the
  curve-fit baseline (``bayes_sd.baseline``) can predict those whose system it has seen; the
  rates dropped from the training series are scored too (``series/held-out rates``);
* ``gpu``: every H200 run held out, trained on H100 only (an unseen GPU: its effect is drawn
  from the population; the baseline cannot predict at all);
* ``size``: every Llama-3.2-3B run held out (an unseen model size between 1B and 8B, with its
  draft systems; the baseline cannot predict).

Scores per held-out set: median and 90th-percentile relative error of the posterior median
mean latency, the coverage of the 90% posterior predictive interval of a measured run, and the
median width of that interval (hi/lo).

Writes ``validation/results/out_of_sample.json`` and ``docs/validation/out_of_sample.md``.
"""

from __future__ import annotations

import json
import sys
import warnings

import _common
import numpy as np
import pandas as pd

import bayes_sd
from bayes_sd.baseline import fit_baseline
from bayes_sd.design import label_systems
from bayes_sd.model import ConvergenceWarning, LatencyModel

FOLDS = ("series", "gpu", "size")
LABELS = ["gpu_key", "system", "draft_system", "series", "base_series"]


def prepare(sweep: pd.DataFrame) -> pd.DataFrame:
    rows = sweep[~sweep["saturated"].astype(bool)].copy()
    rows["dataset"] = rows["dataset"].fillna("")
    label_systems(rows)
    rank = rows.groupby("series")["request_rate"].rank(method="first")
    rows["train_rate"] = (rank % 2) == 1
    return rows


def split(rows: pd.DataFrame, fold: str) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    if fold == "series":
        series = sorted(rows["series"].unique())
        whole = rows["series"].isin(set(series[::10]))
        train = rows[~whole & rows["train_rate"]]
        return train, {
            "held-out series": rows[whole],
            "held-out rates": rows[~whole & ~rows["train_rate"]],
        }
    if fold == "gpu":
        held = rows["gpu"] == "H200-SXM-141GB"
        return rows[~held & rows["train_rate"]], {"unseen GPU (H200)": rows[held]}
    if fold == "size":
        held = rows["target"] == "llama-3.2-3b"
        return rows[~held & rows["train_rate"]], {"unseen size (Llama-3.2-3B)": rows[held]}
    raise ValueError(f"unknown fold {fold!r}; known: {', '.join(FOLDS)}")


def score(model, base, held: pd.DataFrame) -> dict:
    inputs = held.drop(columns=["latency_mean_s", *LABELS, "train_rate"])
    obs = held["latency_mean_s"].to_numpy(dtype=float)
    mean = model.predict(inputs, random_seed=2).summary
    noisy = model.predict(inputs, random_seed=3, noise=True).summary
    err = np.abs(mean["latency_median"].to_numpy() / obs - 1)
    lo, hi = noisy["latency_lo"].to_numpy(), noisy["latency_hi"].to_numpy()
    with np.errstate(invalid="ignore"):  # saturated draws: inf / inf
        width = float(np.nanmedian(hi / lo))
    out = {
        "runs": len(held),
        "model_median_rel_error": float(np.nanmedian(err)),
        "model_p90_rel_error": float(np.nanquantile(err, 0.9)),
        "model_90pct_coverage": float(np.mean((obs >= lo) & (obs <= hi))),
        "interval_width_hi_over_lo": width,
        "baseline_runs_predicted": 0,
        "baseline_median_rel_error": None,
        "baseline_p90_rel_error": None,
        "model_median_rel_error_same_runs": None,
        "model_p90_rel_error_same_runs": None,
    }
    b = base.predict(held.drop(columns=[*LABELS, "train_rate"]))
    ok = np.isfinite(b)
    if ok.any():
        out["baseline_runs_predicted"] = int(ok.sum())
        out["baseline_median_rel_error"] = float(np.median(np.abs(b[ok] / obs[ok] - 1)))
        out["model_median_rel_error_same_runs"] = float(np.median(err[ok]))
        # the runs nearest saturation carry the 90th percentile (a small error in C2 is a large
        # one in latency): the sparse-sweep target of issue 17 is on this ratio
        out["baseline_p90_rel_error"] = float(np.quantile(np.abs(b[ok] / obs[ok] - 1), 0.9))
        out["model_p90_rel_error_same_runs"] = float(np.quantile(err[ok], 0.9))
    return out


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        f"Simulated demo sweep; every other unsaturated rate of each series in training; "
        f"{meta['chains']} chains × {meta['draws']} draws per fold; "
        f"{'the default' if meta['centred'] else 'non-centred'} residual shifts"
        f"{' (centred="auto")' if meta['centred'] else ''}.",
        "",
        "| fold | held-out set | train runs | held-out runs | model median error | model p90 "
        "error | 90% coverage | interval hi/lo | baseline median / p90 error (runs) | model on "
        "the same runs | fit: R-hat / ESS / divergences |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        base = (
            f"{r['baseline_median_rel_error']:.1%} / {r['baseline_p90_rel_error']:.1%} "
            f"({r['baseline_runs_predicted']})"
            if r["baseline_median_rel_error"] is not None
            else "cannot predict"
        )
        same = (
            f"{r['model_median_rel_error_same_runs']:.1%} / "
            f"{r['model_p90_rel_error_same_runs']:.1%}"
            if r["model_median_rel_error_same_runs"] is not None
            else "–"
        )
        lines.append(
            f"| {r['fold']} | {r['set']} | {r['train_runs']} | {r['runs']} | "
            f"{r['model_median_rel_error']:.1%} | {r['model_p90_rel_error']:.1%} | "
            f"{r['model_90pct_coverage']:.1%} | {r['interval_width_hi_over_lo']:.2f} | {base} | "
            f"{same} | {r['max_rhat']:.3f} / {r['min_ess_bulk']:.0f} / {r['divergences']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = _common.parser(__doc__, draws=300, chains=2, noncentred=True, model_config=True)
    p.add_argument("--folds", default=",".join(FOLDS))
    args = _common.parse(p, argv, "out_of_sample")
    rows = prepare(bayes_sd.load_example("demo"))
    results = []
    suffix, out = args.suffix, args.out
    meta = {"draws": args.draws, "chains": args.chains, "seed": args.seed,
            "centred": not args.noncentred, "model_config": args.model_config,
            "bayes_sd": bayes_sd.__version__}  # fmt: skip
    for fold in args.folds.split(","):
        train, held_sets = split(rows, fold)
        centred = {"centred": False} if args.noncentred else {}
        model = LatencyModel(
            model_config=_common.model_config(args, **centred),
            sampler_config=_common.sampler_config(args),
        )
        with warnings.catch_warnings():  # short fits: the diagnostics go into the table
            warnings.simplefilter("ignore", ConvergenceWarning)
            seconds = _common.fit_timed(
                model,
                train.drop(columns=[*LABELS, "train_rate"]),
                args,
                f"[{fold}] {len(train)} runs",
            )
        base = fit_baseline(train.drop(columns=[*LABELS, "train_rate"]))
        d = model.diagnostics
        for name, held in held_sets.items():
            r = {
                "fold": fold,
                "set": name,
                "train_runs": len(train),
                "fit_seconds": seconds,
                "max_rhat": d["max_rhat"],
                "min_ess_bulk": d["min_ess_bulk"],
                "divergences": d["divergences"],
                **score(model, base, held),
            }
            results.append(r)
            print(json.dumps(r, default=float), flush=True)
        _common.write_json(out, {"meta": meta, "results": results})  # after every fold
    _common.write_text(args.docs / f"out_of_sample{suffix}.md", markdown(results, meta))
    print(f"wrote {out} and {args.docs}/out_of_sample{suffix}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
