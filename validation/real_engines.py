"""Held-out checks on real engine measurements: TTFT, TPOT and E2E where a user extrapolates.

Run: ``.venv/bin/python validation/real_engines.py [--folds upper,gpu,engine,mtp] [--draws 400]
[--previous PATH]`` (one fit per fold and held-out group; several minutes each on 2 cores), one
after another; ``--workers N`` fits every fold at once on a local Dask cluster,
``--scheduler tcp://host:8786`` on any Dask cluster (``bayes_sd.fit_many``; seed ``--seed + i``
for the i-th fold; one after another every fold is fitted with ``--seed``).

Data (real measurements): ``load_example("inferencex")`` — DeepSeek-R1 (MoE) served by SGLang,
TensorRT-LLM and Dynamo on seven GPU types, closed loop, with and without MTP (SemiAnalysis
InferenceX; data/inferencex/README.md) — and ``load_example("vllm-blog-2024")`` (Llama-3-70B on
4×H100, open loop, E2E only). Runs the model cannot fit (unknown k, excluded, no means) are left
out of both training and scoring.

Folds (each a fresh fit on the training part; predictions for the held-out part):

* ``upper``: in every series (one configuration at one draft length) measured at two or more
  loads, the upper half of its loads is held out (the rest of the sweep trains);
* ``gpu``: every run of one GPU type held out (``--gpus``, default MI325X, B300, H100);
* ``engine``: every run of one engine held out (``--engines``, default sglang, dynamo-sglang);
* ``mtp``: the MTP runs of one GPU type held out (``--mtp-gpus``, default H200, MI325X), predicted
  from the rest, their acceptance from the fitted acceptance law of the MTP group (dataset,
  target, drafter, engine; InferenceX records none).

Alternatives scored on the same runs: ``curve_fit`` — per series and metric, the paper's law
fitted to that series' own training runs (closed loop ``a + b N``, open loop ``C1 / (1 − λ C2)``
for E2E and ``a + b λ`` for TTFT and TPOT; no prediction below two training loads), and with
``--previous PATH`` the model of an earlier checkout (E2E only; e.g. ``git worktree add
/tmp/previous 81cc1f5``, the model before the per-phase law) run in a subprocess.

Runs of series whose latency falls with load (``bayes_sd.load_checks``; InferenceX: 8 Dynamo +
TensorRT-LLM series) are scored apart as well (a second row per held-out set: the runs outside
them); ``--exclude-falling`` leaves them out of training and scoring. The model is also scored
on the runs ``curve_fit`` predicts (series with two or more training loads), so that the two
compare on the same runs: the others' series have one training load, and their slope comes
from the hierarchy alone.

Scored quantities: the mean TTFT, TPOT and E2E, and their p50 and p99 where the runs measured
them (InferenceX: all; the blog sweep: E2E only). Scores per held-out set and quantity: median
and maximum relative error of the posterior median
(the mean), coverage of the 90% posterior predictive interval of a measured run, median interval
width (hi/lo). Writes ``validation/results/real_engines.json`` and
``docs/validation/real_engines.md`` (with ``--out X.json``: ``docs/validation/X.md``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import _common
import numpy as np
import pandas as pd
from scipy.optimize import curve_fit

import bayes_sd
from bayes_sd import load_checks
from bayes_sd.design import Design
from bayes_sd.model import ConvergenceWarning, LatencyModel

FOLDS = ("upper", "gpu", "engine", "mtp")
METRICS = ("latency", "ttft", "tpot")
MEASURED = [f"{m}_mean_s" for m in METRICS]
# scored: each metric's mean, then its per-run percentiles (the tail law of bayes_sd.laws)
SCORED = METRICS + tuple(f"{m}_{q}" for m in ("ttft", "tpot", "latency") for q in ("p50", "p99"))


def column(metric: str) -> str:
    """The measured column of a scored quantity: ``latency`` → ``latency_mean_s``."""
    return f"{metric}_mean_s" if metric in METRICS else f"{metric}_s"


def fittable(sweep: pd.DataFrame) -> pd.DataFrame:
    """The runs the model fits (see Design.from_sweep), labelled."""
    design = Design.from_sweep(sweep)
    rows = design.rows.copy()
    rows["load"] = np.where(rows["load_mode"] == "rate", rows["request_rate"],
                            rows["concurrency"]).astype(float)  # fmt: skip
    return rows


def splits(rows: pd.DataFrame, fold: str, args) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """{name: (train, held)}."""
    if fold == "upper":
        order = rows.groupby("series")["load"].rank(method="first")
        size = rows.groupby("series")["load"].transform("size")
        held = (size >= 2) & (order > size - size // 2)
        return {"higher loads": (rows[~held], rows[held])}
    column, values = {"gpu": ("gpu", args.gpus), "engine": ("engine", args.engines),
                      "mtp": ("gpu", args.mtp_gpus)}[fold]  # fmt: skip
    out = {}
    for value in values.split(","):
        held = rows[column] == value
        if fold == "mtp":
            held &= rows["method"] == "mtp"
        if held.any() and (~held).any():
            out[f"{column} {value}" + (" (MTP runs)" if fold == "mtp" else "")] = (
                rows[~held],
                rows[held],
            )
    return out


def features(rows: pd.DataFrame) -> pd.DataFrame:
    """Prediction rows: the configuration and load, no measurements."""
    drop = [c for c in rows.columns if c.endswith(("_mean_s", "_p50_s", "_p90_s", "_p99_s"))]
    return rows.drop(columns=drop)


def score(pred_mean, pred_noisy, held: pd.DataFrame, label: str) -> pd.DataFrame:
    """Per held-out run and metric: error of the median, inside the 90% interval, width."""
    out = []
    for metric in SCORED:
        if column(metric) not in held or f"{metric}_median" not in pred_mean:
            continue
        obs = held[column(metric)].astype(float).to_numpy()
        ok = np.isfinite(obs)
        if not ok.any():
            continue
        med = pred_mean[f"{metric}_median"].to_numpy()
        lo, hi = pred_noisy[f"{metric}_lo"].to_numpy(), pred_noisy[f"{metric}_hi"].to_numpy()
        out.append(pd.DataFrame({
            "method": label, "metric": metric, "run": held["run_id"].to_numpy()[ok],
            "error": np.abs(med[ok] / obs[ok] - 1), "inside": (obs >= lo)[ok] & (obs <= hi)[ok],
            "width": (hi / lo)[ok],
        }))  # fmt: skip
    return pd.concat(out, ignore_index=True)


def fit_serially(train, args, name):
    model = LatencyModel(model_config=_common.model_config(args),
                         sampler_config=_common.sampler_config(args))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        seconds = _common.fit_timed(model, train, args, name)
    return model, seconds


def fit_on_dask(folds: dict, args, target: dict) -> dict:
    """Every fold's fit at once on Dask (``--workers`` / ``--scheduler``): label -> (model,
    seconds). A fold whose fit failed stops the script with its name and error."""
    from bayes_sd.fleet import fit_many

    print(f"fitting {len(folds)} folds on {_common.dask_label(target)} ...", flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = fit_many({label: train for label, (train, _) in folds.items()},
                       model_config=_common.model_config(args),
                       sampler_config=_common.sampler_config(args), random_seed=args.seed,
                       **target)  # fmt: skip
    if res.failures:
        raise SystemExit(f"folds not fitted: {res.failures}")
    seconds = res.diagnostics.set_index("sweep")["seconds"]
    return {label: (res.models[label], float(seconds[label])) for label in folds}


def bayes(model, seconds, held, args):
    query = features(held)  # unseen MTP configurations: their group's acceptance law
    mean = model.predict(query, random_seed=args.seed).summary
    noisy = model.predict(query, random_seed=args.seed, noise=True).summary
    return score(mean, noisy, held, "bayes_sd"), {"seconds": round(seconds, 1),
                                                   **model.diagnostics}  # fmt: skip


def curve_fit_baseline(train: pd.DataFrame, held: pd.DataFrame) -> pd.DataFrame:
    """The paper's law per series and metric, fitted to the series' own training runs."""
    out = []
    for metric in SCORED:
        col = column(metric)
        if col not in held:
            continue
        for series, h in held.groupby("series"):
            obs = h[col].astype(float).to_numpy()
            t = train[(train["series"] == series) & train[col].notna()]
            if t["load"].nunique() < 2 or not np.isfinite(obs).any():
                continue
            x, y = t["load"].to_numpy(float), t[col].to_numpy(float)
            closed = (t["load_mode"] == "concurrency").all()
            if closed or metric not in ("latency", "latency_p50", "latency_p99"):
                b, a = np.polyfit(x, y, 1)
                pred = a + b * h["load"].to_numpy(float)
            else:
                try:
                    (c1, c2), _ = curve_fit(
                        lambda lam, c1, c2: c1 / np.maximum(1 - lam * c2, 1e-6),
                        x,
                        y,
                        p0=(y.min(), 0.5 / x.max()),
                        maxfev=20_000,
                    )
                except RuntimeError:
                    continue
                lam = h["load"].to_numpy(float)
                pred = np.where(lam * c2 < 1, c1 / (1 - lam * c2), np.inf)
            ok = np.isfinite(obs)
            out.append(pd.DataFrame({
                "method": "curve_fit", "metric": metric, "run": h["run_id"].to_numpy()[ok],
                "error": np.abs(pred[ok] / obs[ok] - 1), "inside": np.nan, "width": np.nan,
            }))  # fmt: skip
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def previous_model(train, held, args) -> pd.DataFrame:
    """E2E predictions of an earlier checkout's model (--previous), in a subprocess."""
    legacy = ["source", "run_id", "dataset", "gpu", "num_gpus", "target", "target_params",
              "target_active_params", "target_experts", "target_experts_per_token", "drafter",
              "drafter_params", "method", "k", "alpha", "acceptance_length", "prefill_len",
              "decode_len", "load_mode", "request_rate", "concurrency", "latency_mean_s",
              "saturated"]  # fmt: skip

    def legacy_rows(rows):
        rows = rows[rows["latency_mean_s"].notna()].copy()
        # engine, precision and layout separate systems in the new table: in the old one the
        # dataset field carries them
        rows["dataset"] = rows[["dataset", "engine", "precision", "layout"]].astype(str).agg(
            "|".join, axis=1)  # fmt: skip
        return rows[legacy]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        legacy_rows(train).to_csv(tmp / "train.csv", index=False)
        legacy_rows(held).to_csv(tmp / "held.csv", index=False)
        code = (
            "import sys, warnings, pandas as pd, bayes_sd\n"
            "warnings.simplefilter('ignore')\n"
            "draws, chains, seed = map(int, sys.argv[4:7])\n"
            "m = bayes_sd.LatencyModel(sampler_config={'draws': draws, 'tune': draws, "
            "'chains': chains, 'progressbar': False})\n"
            "m.fit(bayes_sd.read_sweep(sys.argv[1]), random_seed=seed)\n"
            "h = pd.read_csv(sys.argv[2])\n"
            "q = h.drop(columns=['latency_mean_s'])\n"
            "a = m.predict(q, random_seed=0).summary\n"
            "b = m.predict(q, random_seed=0, noise=True).summary\n"
            "pd.DataFrame({'run_id': h['run_id'], 'median': a['latency_median'], "
            "'lo': b['latency_lo'], 'hi': b['latency_hi']}).to_csv(sys.argv[3], index=False)\n"
        )
        env = {**os.environ, "PYTHONPATH": str(args.previous)}
        result = subprocess.run([sys.executable, "-c", code, str(tmp / "train.csv"),
                                 str(tmp / "held.csv"), str(tmp / "pred.csv"),
                                 str(args.draws), str(args.chains), str(args.seed)],
                                env=env, capture_output=True, text=True)  # fmt: skip
        if result.returncode:
            print("  previous model failed:", result.stderr.strip().splitlines()[-1:])
            return pd.DataFrame()
        pred = pd.read_csv(tmp / "pred.csv")
    obs = legacy_rows(held)["latency_mean_s"].to_numpy(float)
    return pd.DataFrame({
        "method": "previous model", "metric": "latency", "run": pred["run_id"],
        "error": np.abs(pred["median"] / obs - 1),
        "inside": (obs >= pred["lo"]) & (obs <= pred["hi"]), "width": pred["hi"] / pred["lo"],
    })  # fmt: skip


def summarise(scores: pd.DataFrame) -> pd.DataFrame:
    g = scores.groupby(["held_out", "method", "metric"], sort=False)
    return g.agg(runs=("error", "size"), median_error=("error", "median"),
                 max_error=("error", "max"),
                 coverage_90=("inside", lambda x: float(np.mean(x)) if x.notna().any() else np.nan),
                 median_width=("width", "median")).reset_index()  # fmt: skip


def main(argv=None) -> None:
    p = _common.parser(__doc__, draws=400, chains=2, model_config=True)
    p.add_argument("--folds", default=",".join(FOLDS))
    p.add_argument("--gpus", default="MI325X,B300,H100-SXM-80GB")
    p.add_argument("--engines", default="sglang,dynamo-sglang")
    p.add_argument("--mtp-gpus", default="H200-SXM-141GB,MI325X")
    p.add_argument("--previous", default=None, help="a checkout of an earlier bayes_sd")
    p.add_argument(
        "--exclude-falling",
        action="store_true",
        help="leave out (train and score) the series whose latency falls with "
        "load (bayes_sd.load_checks; as bayes-sd ingest --exclude-falling)",
    )
    _common.dask_options(p)
    args = _common.parse(p, argv, "real_engines")
    target = _common.dask_target(args)
    data = {name: bayes_sd.load_example(name) for name in ("inferencex", "vllm-blog-2024")}
    # the runs of series whose latency falls with load: scored apart as well (or left out)
    falling = {run for sweep in data.values()
               for ids in load_checks.falling_series(Design.from_sweep(sweep).rows)["run_ids"]
               for run in ids}  # fmt: skip
    if args.exclude_falling:
        data = {name: load_checks.exclude_falling(sweep) for name, sweep in data.items()}
    data = {name: fittable(sweep) for name, sweep in data.items()}
    folds = {}  # label -> (train, held), in the order they are reported
    for fold in args.folds.split(","):
        for source, rows in data.items():
            if source != "inferencex" and fold != "upper":
                continue
            for name, (train, held) in splits(rows, fold, args).items():
                folds[f"{source}: {name}"] = (train, held, fold)
    fitted = fit_on_dask({k: v[:2] for k, v in folds.items()}, args, target) if target else {}
    scores, fits = [], []
    for label, (train, held, fold) in folds.items():
        print(f"== {label}: train {len(train)} runs, held out {len(held)}", flush=True)
        start = time.perf_counter()
        model, seconds = fitted.get(label) or fit_serially(train, args, label)
        parts, info = bayes(model, seconds, held, args)
        parts = [parts, curve_fit_baseline(train, held)]
        if args.previous:
            parts.append(previous_model(train, held, args))
        for part in parts:
            if not part.empty:
                scores.append(part.assign(held_out=label, fold=fold))
        baseline = parts[1]
        if not baseline.empty:  # the model on the runs the per-series baseline predicts
            scored = baseline[["metric", "run"]].drop_duplicates()
            same = parts[0].merge(scored, on=["metric", "run"])
            name = f"{label}, runs the per-series curve_fit predicts"
            scores.append(same.assign(held_out=name, fold=fold))
        if held["run_id"].isin(falling).any():  # the runs the load law can describe
            keep = ~parts[0]["run"].isin(falling)
            scores.append(parts[0][keep].assign(
                held_out=f"{label}, outside the series whose latency falls with load",
                fold=fold))  # fmt: skip
        fits.append({"held_out": label, "train_runs": len(train), "held_runs": len(held),
                     **info, "wall_s": round(time.perf_counter() - start, 1)})  # fmt: skip
        table = summarise(pd.concat(scores, ignore_index=True))
        print(table[table["held_out"] == label].to_string(index=False), flush=True)
    table = summarise(pd.concat(scores, ignore_index=True))
    payload = {
        "summary": table.to_dict("records"),
        "fits": fits,
        "settings": {
            "draws": args.draws,
            "chains": args.chains,
            "seed": args.seed,
            "ran_on": _common.dask_label(target),
        },
    }
    _common.write_json(args.out, json.loads(json.dumps(payload, default=float)))
    show = table.assign(
        median_error=(100 * table["median_error"]).round(1).astype(str) + "%",
        max_error=(100 * table["max_error"]).round(1).astype(str) + "%",
        coverage_90=(100 * table["coverage_90"]).round(0),
        median_width=table["median_width"].round(2),
    )
    from bayes_sd.report import markdown_table

    page = args.docs / f"{Path(args.out).stem}.md"  # the table beside its JSON's name
    _common.write_text(page, markdown_table(show))
    print(f"wrote {args.out} and {page}")


if __name__ == "__main__":
    main(sys.argv[1:])
