"""The hierarchical latency model: sampler backends, sparse-data accuracy, prediction speed.

Run (on 2 cores the defaults take about 15–25 minutes)::

    .venv/bin/python benchmarks/bench_model.py [--data demo] [--draws 1000 --tune 1000 --chains 4]
        [--backends nutpie,nutpie:diag,pymc,numpyro] [--target-accept 0.9] [--seed 1]
        [--skip-backends] [--skip-accuracy] [--accuracy-backend nutpie]
        [--out benchmarks/results/model.json]

Three parts, each printed as a table and written to the JSON file:

1. **Backends** — the full sweep fitted with each NUTS backend in the same run: wall time
   (compile and sampling together, as a user waits for them), sampling time, min bulk ESS per
   second of wall time, max R-hat, divergences, tree depth. A backend that is not installed is
   reported as such (numpyro: ``pip install -e .[numpyro]``; its chains run on as many JAX
   host devices as chains). ``--steps`` adds nutpie with the joint step-level likelihood.
2. **Sparse data** — each (k, acceptance) series keeps 3 of its rates for training (lowest,
   middle, highest); the other rates are held out. Model (default backend) against the
   curve-fit baseline (``bayes_sd.baseline``, the published procedure) on the same training
   runs: median and 90th-percentile relative error on held-out runs, and the share of held-out
   runs inside the model's 90% posterior predictive interval (``predict(noise=True)``). Whole
   held-out series (every 10th) test prediction of unseen configurations; the baseline cannot
   predict those when their system and drafter were never fitted.
3. **Prediction** — ``predict`` on 10^5 rows × 100 draws and 10^4 rows × 1,000 draws, dense and
   MoE rows, the fused kernel against the NumPy path (baseline, same run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import bayes_sd
from bayes_sd.baseline import fit_baseline
from bayes_sd.design import label_systems
from bayes_sd.model import ConvergenceWarning, LatencyModel


def _inputs(rows: pd.DataFrame) -> pd.DataFrame:
    """What a user would give predict: the runs without their measured latency."""
    return rows.drop(columns=["latency_mean_s"])


def fit(sweep, backend, args, seed=1, steps=None):
    """``backend`` is a sampler name, for nutpie optionally with its mass-matrix adaptation
    (``nutpie:diag``; plain ``nutpie`` is the package default)."""
    sampler, _, adaptation = backend.partition(":")
    config = {
        "draws": args.draws,
        "tune": args.tune,
        "chains": args.chains,
        "nuts_sampler": sampler,
        "progressbar": False,
    }
    if args.target_accept is not None:
        config["target_accept"] = args.target_accept
    if adaptation:
        config["adaptation"] = adaptation
    model = LatencyModel(sampler_config=config)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(sweep, steps=steps, random_seed=seed)
    return model, time.perf_counter() - t0


def backends(sweep, args) -> list[dict]:
    out = []
    runs = [(b, None) for b in args.backends.split(",")]
    if args.steps:
        runs.append(("nutpie", bayes_sd.load_example("stepcost")))
    for backend, steps in runs:
        try:
            model, wall = fit(sweep, backend, args, seed=args.seed, steps=steps)
        except (ImportError, ModuleNotFoundError) as err:
            out.append({"backend": backend, "error": f"not installed: {err}"})
            print_rows(out[-1:])
            continue
        except Exception as err:  # a backend failing is a result to report, not a crash
            out.append({"backend": backend, "error": f"{type(err).__name__}: {err}"[:300]})
            print_rows(out[-1:])
            continue
        d = model.diagnostics
        ss = model.idata["sample_stats"].dataset
        depth = ss["depth"] if "depth" in ss else ss.get("tree_depth")
        out.append(
            {
                "backend": backend + (" + step costs" if steps is not None else ""),
                "wall_s": round(wall, 1),
                "sampling_s": _sampling_time(model),
                "min_ess_bulk": round(d["min_ess_bulk"], 1),
                "ess_bulk_per_s": round(d["min_ess_bulk"] / wall, 2),
                "min_ess_tail": round(d["min_ess_tail"], 1),
                "max_rhat": round(d["max_rhat"], 4),
                "divergences": d["divergences"],
                "mean_tree_depth": None if depth is None else round(float(depth.mean()), 2),
            }
        )
        print_rows(out[-1:])
    return out


def _sampling_time(model) -> float | None:
    t = model.idata["posterior"].attrs.get("sampling_time")
    return None if t is None else round(float(t), 1)


def split_sparse(sweep: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, held-out rates of training series, held-out whole series)."""
    rows = sweep[~sweep["saturated"].astype(bool)].copy()
    rows["dataset"] = rows["dataset"].fillna("")
    label_systems(rows)
    series = sorted(rows["series"].unique())
    whole = set(series[::10])
    held_series = rows[rows["series"].isin(whole)]
    rest = rows[~rows["series"].isin(whole)]
    keep = []
    for _, g in rest.groupby("series"):
        g = g.sort_values("request_rate")
        idx = sorted({0, len(g) // 2, len(g) - 1})
        keep.extend(g.index[idx])
    train = rest.loc[keep]
    held_rates = rest.drop(index=keep)
    drop = ["gpu_key", "system", "draft_system", "series", "base_series"]
    return (train.drop(columns=drop), held_rates.drop(columns=drop), held_series.drop(columns=drop))


def accuracy(sweep, args) -> dict:
    train, held_rates, held_series = split_sparse(sweep)
    model, wall = fit(train, args.accuracy_backend, args, seed=args.seed)
    base = fit_baseline(train)
    out = {
        "train_runs": len(train),
        "fit_wall_s": round(wall, 1),
        "max_rhat": round(model.diagnostics["max_rhat"], 4),
        "min_ess_bulk": round(model.diagnostics["min_ess_bulk"], 1),
    }
    for name, held in (("held_out_rates", held_rates), ("held_out_series", held_series)):
        obs = held["latency_mean_s"].to_numpy(dtype=float)
        pred = model.predict(_inputs(held), random_seed=2, noise=True).summary
        mean = model.predict(_inputs(held), random_seed=2).summary
        err = np.abs(mean["latency_median"].to_numpy() / obs - 1)
        inside = (obs >= pred["latency_lo"].to_numpy()) & (obs <= pred["latency_hi"].to_numpy())
        b = base.predict(held)
        b_ok = np.isfinite(b)
        b_err = np.abs(b[b_ok] / obs[b_ok] - 1)
        out[name] = {
            "runs": len(held),
            "model_median_rel_error": round(float(np.median(err)), 4),
            "model_p90_rel_error": round(float(np.quantile(err, 0.9)), 4),
            "model_90pct_coverage": round(float(inside.mean()), 3),
            "baseline_runs_predicted": int(b_ok.sum()),
            "baseline_median_rel_error": (
                round(float(np.median(b_err)), 4) if b_ok.any() else None
            ),
            "baseline_p90_rel_error": (
                round(float(np.quantile(b_err, 0.9)), 4) if b_ok.any() else None
            ),
            "model_median_rel_error_same_runs": (
                round(float(np.median(err[b_ok])), 4) if b_ok.any() else None
            ),
        }
    return out, model


def prediction_speed(model, kinds=("dense", "moe")) -> list[dict]:
    """predict() wall time for dense and MoE rows (rows × posterior draws): the fused numba
    kernel, and as the baseline of the same run the NumPy path (``_kernels.AVAILABLE`` off)
    at 10^4 rows × 100 draws; at 10^5 rows × 100 draws also the means alone (``tails=False``:
    no percentiles of TTFT, TPOT and E2E), and the draws kept in float32 (the default) against
    float64, each in fresh processes (:func:`_fresh_dtypes`)."""
    from bayes_sd import _kernels

    out = []
    rows = model.design.rows
    sizes = ((100_000, 100, "numba"), (10_000, 1000, "numba"), (10_000, 100, "numba"),
             (10_000, 100, "numpy"))  # fmt: skip
    for kind, part in (("dense", rows[rows["target_experts"] == 1]),
                       ("moe", rows[rows["target_experts"] > 1])):  # fmt: skip
        if part.empty or kind not in kinds:
            continue
        for n, draws, path in sizes:
            sample = _sample(rows, kind, n)
            _kernels.AVAILABLE = path == "numba" and _kernels.numba is not None
            try:
                model.predict(sample.head(100), random_seed=0, max_draws=draws)  # warm
                out.append(_timed(model, sample, kind, path, draws))
            finally:
                _kernels.AVAILABLE = _kernels.numba is not None
        sample = _sample(rows, kind, 100_000)
        out.append(_timed(model, sample, kind + ", means only (tails=False)", tails=False))
        out += _fresh_dtypes(model, kind)
        if kind == "moe":
            # the worst case for the shared baseline solves: every row at its own rate
            sample["request_rate"] *= 1.0 + 1e-6 * np.arange(len(sample))
            out.append(_timed(model, sample, kind + ", every row its own rate"))
        same = [r for r in out if r["rows"] == kind and r["n_rows"] == 10_000
                and r["max_draws"] == 100]  # fmt: skip
        fused, numpy = (next(r for r in same if r["path"] == p) for p in ("numba", "numpy"))
        print(f"  {kind}: numpy / numba wall at 10^4 rows x 100 draws = "
              f"{numpy['wall_s'] / fused['wall_s']:.1f}x")  # fmt: skip
    return out


def _timed(model, sample, label: str, path: str = "numba", draws: int = 100, repeats: int = 3,
           **kwargs) -> dict:  # fmt: skip
    """``predict`` of ``sample`` timed ``repeats`` times (printed and returned as a result row):
    the median wall time, and the first's (a process's first large predict also pays the
    operating system's first faults on fresh memory)."""
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pred = model.predict(sample, random_seed=0, max_draws=draws, **kwargs)
        walls.append(time.perf_counter() - t0)
        used = pred.draws.sizes["chain"] * pred.draws.sizes["draw"]  # <= max_draws
        del pred  # not kept across repeats: each allocates afresh
    wall = float(np.median(walls))
    row = {"rows": label, "path": path, "n_rows": len(sample), "max_draws": draws,
           "draws_used": used, "wall_s": round(wall, 2), "first_wall_s": round(walls[0], 2),
           "row_draws_per_s": round(len(sample) * used / wall),
           "distinct_baselines": _distinct_baselines(model, sample)}  # fmt: skip
    print_rows([row])
    return row


def _fresh_dtypes(model, kind: str, processes: int = 3, calls: int = 5) -> list[dict]:
    """The draws kept in float32 (the default) against float64 (before 2026-12-06), each in
    ``processes`` fresh processes (alternating), ``calls`` predicts of the 10^5 ``kind`` rows
    per process: the first call of a process pays for its fresh memory, and later calls reuse
    what the call before freed — alternating the two in one process would hand float32 the
    larger arrays float64 freed. Per dtype: the median first call and the median later call."""
    import subprocess
    import sys
    import tempfile

    walls = {"float32": [], "float64": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.nc"
        model.save(path)
        for _ in range(processes):
            for dtype in walls:
                cmd = [sys.executable, __file__, "--probe", str(path), "--probe-kind", kind,
                       "--probe-dtype", dtype, "--probe-calls", str(calls)]  # fmt: skip
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                walls[dtype].append(json.loads(done.stdout.strip().splitlines()[-1]))
    rows = [{"rows": f"{kind}, {dtype} draws, {processes} fresh processes x {calls} calls",
             "path": "numba", "n_rows": 100_000, "max_draws": 100,
             "wall_s": round(float(np.median([w[1:] for w in runs])), 2),
             "first_wall_s": round(float(np.median([w[0] for w in runs])), 2),
             "walls_s": runs}
            for dtype, runs in walls.items()]  # fmt: skip
    print_rows(rows)
    return rows


def _probe(args) -> None:
    """One fresh process of :func:`_fresh_dtypes`: prints its calls' wall times (JSON)."""
    from bayes_sd import _kernels

    _kernels.DRAW_DTYPE = np.dtype(args.probe_dtype).type
    model = LatencyModel.load(args.probe)
    sample = _sample(model.design.rows, args.probe_kind, 100_000)
    model.predict(sample.head(100), random_seed=0, max_draws=100)  # compile, as the others
    walls = []
    for _ in range(args.probe_calls):
        t0 = time.perf_counter()
        pred = model.predict(sample, random_seed=0, max_draws=100)
        walls.append(round(time.perf_counter() - t0, 3))
        del pred
    print(json.dumps(walls))


def _sample(rows: pd.DataFrame, kind: str, n: int) -> pd.DataFrame:
    """``n`` of the fitted ``kind`` (dense or MoE) runs drawn with replacement, as inputs."""
    part = rows[rows["target_experts"] > 1] if kind == "moe" else rows[rows["target_experts"] == 1]
    return _inputs(part.sample(n, replace=True, random_state=0)).reset_index(drop=True)


def _distinct_baselines(model, sample) -> int:
    """How many distinct baseline (k = 0) solves the MoE rows of ``sample`` need per draw."""
    from bayes_sd.predict import _moe_baselines, prediction_rows

    rows = prediction_rows(model.design, sample)
    return int(_moe_baselines(rows, (rows["target_experts"] > 1).to_numpy()).max() + 1)


def fit_for_prediction(sweep, args):
    """A short fit, only to have posterior draws for timing predict (quality irrelevant)."""
    small = argparse.Namespace(**{**vars(args), "draws": 100, "tune": 100, "chains": 2})
    model, _ = fit(sweep, "nutpie", small)
    return model


def _finite(x):
    """JSON has no Infinity or NaN: non-finite numbers (R-hat of stuck chains) become null."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        print("  " + "  ".join(f"{k}={v}" for k, v in r.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="demo")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument(
        "--backends",
        default="nutpie,pymc,numpyro",
        help="samplers to compare; nutpie:diag etc. sets nutpie's mass-matrix adaptation",
    )
    parser.add_argument(
        "--target-accept", type=float, default=None, help="default: the package's (0.9)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of every fit")
    parser.add_argument(
        "--accuracy-backend",
        default="nutpie",
        help="backend of the sparse-data fit (default: the package's; e.g. nutpie:draw_diag)",
    )
    parser.add_argument("--skip-backends", action="store_true")
    parser.add_argument(
        "--steps", action="store_true", help="also fit nutpie with the joint step-level likelihood"
    )
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-predict", action="store_true")
    parser.add_argument(
        "--predict-kinds", default="dense,moe", help="rows to time predict on: dense, moe"
    )
    parser.add_argument("--out", default="benchmarks/results/model.json")
    parser.add_argument("--probe", metavar="MODEL", help=argparse.SUPPRESS)  # _fresh_dtypes
    parser.add_argument("--probe-kind", help=argparse.SUPPRESS)
    parser.add_argument("--probe-dtype", help=argparse.SUPPRESS)
    parser.add_argument("--probe-calls", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        _probe(args)
        return
    # numpyro runs chains in parallel only on as many JAX devices as chains (otherwise one
    # after another); on a CPU that means host devices, set before JAX starts
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.chains}")
    sweep = bayes_sd.load_example(args.data)
    result = {
        "data": args.data,
        "runs": len(sweep),
        "draws": args.draws,
        "tune": args.tune,
        "chains": args.chains,
        "target_accept": args.target_accept or LatencyModel().sampler_config["target_accept"],
        "seed": args.seed,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "bayes_sd": bayes_sd.__version__,
    }
    if not args.skip_backends:
        print(f"backends ({args.chains} chains x {args.draws} draws + {args.tune} tune):")
        result["backends"] = backends(sweep, args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every part: a long run keeps what it measured
        out.write_text(json.dumps(_finite(result), indent=2, allow_nan=False) + "\n")

    if not args.skip_backends:
        save()
    model = None
    if not args.skip_accuracy:
        print("sparse data (3 training rates per series):")
        result["accuracy"], model = accuracy(sweep, args)
        print(json.dumps(result["accuracy"], indent=2))
        save()
    if args.skip_predict:
        print(f"wrote {out}")
        return
    print("predict:")
    kinds = tuple(args.predict_kinds.split(","))
    result["predict"] = prediction_speed(model or fit_for_prediction(sweep, args), kinds)
    save()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
