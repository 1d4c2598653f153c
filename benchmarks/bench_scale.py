"""Fleet scale: how the cost of one fit grows with the runs, and whether it still recovers truth.

Run (on 2 cores 10^3 runs take 1.5–2 minutes; 10^4 did not finish in 21 minutes)::

    .venv/bin/python benchmarks/bench_scale.py [--sizes 1000,10000,100000]
        [--backends nutpie,numpyro] [--draws 300 --tune 300 --chains 2] [--reps 1]
        [--timeout SECONDS] [--gradient-only] [--out benchmarks/results/scale.json]

Data (simulated, truth known): ``simulate_from_model`` sweeps drawn from the default population
(noise 2%): dense targets (Llama-3.2-1B/3B, Llama-3.1-8B, Qwen2.5-14B) with their drafters on H100
and H200, prompt and output lengths drawn per configuration from 128–4096 and 64–2048 tokens,
k = 0 and two SD settings per configuration, six open-loop rates per series (5–80% of the
configuration's capacity): 18 runs per configuration, as many configurations as the size needs.
Every configuration is its own system, so the random effects grow with the runs as in a fleet.
``--replicates R`` measures each load point R times (a fleet re-running its benchmarks): then
runs / (18 R) configurations, and the model computes each point's phases once.

Per size, backend and replication (each in its own process, so peak memory is its own):
wall time of the fit (model build, compile, sampling), sampling time, gradient time (the
model's log density and gradient compiled with numba and timed on one core), leapfrog steps per
draw, min bulk ESS per second of wall time, max R-hat,
divergences, peak resident memory, and the recovery of the truth: the share of the population
parameters (8 intercepts at the reference sizes, the size slopes, the noise scale) inside their
90% posterior intervals. Then the growth of cost with runs as a measured exponent (least squares
of log time on log runs). ``numpyro`` (JAX) runs where JAX is installed
(``pip install 'bayes_sd[numpyro]'``; ``jax[cuda12]`` on a GPU machine) and records the JAX
device; without it the row says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

PAIRS = [("llama-3.2-1b", "llama-68m"), ("llama-3.2-3b", "llama-68m"),
         ("llama-3.1-8b", "eagle3-head-8b"), ("qwen2.5-14b", "llama-3.2-1b")]  # fmt: skip
GPUS = ["H100-SXM-80GB", "H200-SXM-141GB"]
FRACTIONS = (0.05, 0.2, 0.35, 0.5, 0.65, 0.8)
RUNS_PER_CONFIG = 3 * len(FRACTIONS)  # k = 0 and two SD settings


def configs(n_runs: int, seed: int) -> list[dict]:
    """Configurations enough for ``n_runs`` runs, drawn reproducibly; each serves its own
    dataset (a fleet of deployments; without it, configurations of one GPU and target whose
    random lengths fell within 10% were one workload to the model — 6 series of 10^4 runs, 289
    of 10^5, found by ``bayes_sd.load_checks`` on 2026-12-05)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(int(np.ceil(n_runs / RUNS_PER_CONFIG))):
        target, drafter = PAIRS[i % len(PAIRS)]
        k1, k2 = sorted(rng.choice([1, 2, 3, 4, 5, 6], size=2, replace=False).tolist())
        out.append({"gpu": GPUS[(i // len(PAIRS)) % len(GPUS)], "target": target,
                    "drafter": drafter, "dataset": f"fleet-{i}",
                    "prefill_len": int(rng.integers(128, 4097)),
                    "decode_len": int(rng.integers(64, 2049)),
                    "sd": [(k1, round(float(rng.uniform(0.55, 0.9)), 2)),
                           (k2, round(float(rng.uniform(0.55, 0.9)), 2))]})  # fmt: skip
    return out


def truth_elements(population) -> dict[str, float]:
    """The population parameters as the model names them (intercepts at the reference sizes)."""
    from bayes_sd.coefs import COEFS, REF_DRAFTER_PARAMS, REF_TARGET_PARAMS, SLOPE_COEFS

    out = {}
    for c in COEFS:
        ref = REF_DRAFTER_PARAMS if c.endswith("d") else REF_TARGET_PARAMS
        out[f"intercept[{c}]"] = population.intercept[c] + population.slope[c] * np.log(ref / 1e9)
    for c in SLOPE_COEFS:
        out[f"size_slope[{c}]"] = population.slope[c]
    out["sigma"] = population.noise_sd
    return out


def coverage(post, truth: dict[str, float], level: float = 0.9) -> tuple[float, list[str]]:
    """Share of the truth's elements inside their central ``level`` posterior intervals, and
    the ones outside."""
    q = [(1 - level) / 2, (1 + level) / 2]
    missed = []
    for name, value in truth.items():
        var, _, label = name.partition("[")
        da = post[var]
        if label:
            dim = next(d for d in da.dims if d not in ("chain", "draw"))
            da = da.sel({dim: label.rstrip("]")})
        lo, hi = np.quantile(da.values.ravel(), q)
        if not lo <= value <= hi:
            missed.append(name)
    return 1 - len(missed) / len(truth), missed


def one(size: int, backend: str, rep: int, args) -> dict:
    """One fit in this process (the parent runs each in a fresh process)."""
    import bayes_sd
    from bayes_sd.model import ConvergenceWarning, LatencyModel
    from bayes_sd.population import DEFAULT_POPULATION, simulate_from_model, with_overrides

    truth = with_overrides(DEFAULT_POPULATION, noise_sd=0.02)
    t0 = time.perf_counter()
    r = args.replicates
    sweep, _ = simulate_from_model(configs(-(-size // r), seed=rep), population=truth,
                                   fractions=FRACTIONS, seed=rep, replicates=r)  # fmt: skip
    sweep = sweep.head(size)
    simulate_s = time.perf_counter() - t0
    row = {"runs": len(sweep), "configurations": int(np.ceil(size / r / RUNS_PER_CONFIG)),
           "replicates": r, "backend": backend, "rep": rep,
           "simulate_s": round(simulate_s, 1)}  # fmt: skip
    if backend == "numpyro":
        try:
            import jax

            row["device"] = f"{jax.devices()[0].platform} ({len(jax.devices())})"
        except ImportError as err:
            return {**row, "error": f"not installed ({err}): pip install 'bayes_sd[numpyro]'"}
    else:
        row["device"] = f"cpu ({os.cpu_count()} cores)"
    model = LatencyModel(sampler_config={"draws": args.draws, "tune": args.tune,
                                         "chains": args.chains, "nuts_sampler": backend,
                                         "adaptation": args.adaptation,
                                         "progressbar": False})  # fmt: skip
    if args.gradient_only:
        return {**row, **gradient_cost(model, sweep)}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(sweep, random_seed=rep + 1)
    wall = time.perf_counter() - t0
    post = model.idata["posterior"].dataset
    stats = model.idata["sample_stats"].dataset
    steps = stats["n_steps"] if "n_steps" in stats else 2 ** stats["tree_depth"]
    sampling = post.attrs.get("sampling_time")
    from bench_points import gradient, time_pair

    (gradient_ms,) = time_pair([gradient(model.model)], repeats=3, calls=50)
    cov, missed = coverage(post, truth_elements(truth))
    d = model.diagnostics
    return {
        **row,
        "points": len(model.design.points.first),
        "parameters": int(
            sum(np.prod(post[rv.name].shape[2:]) for rv in model.model.free_RVs if rv.name in post)
        ),
        "wall_s": round(wall, 1),
        "sampling_s": None if sampling is None else round(float(sampling), 1),
        # timed directly (one core): the sampling time includes the warm-up, whose
        # trajectories the posterior's step counts do not
        "gradient_ms": round(gradient_ms, 4),
        "steps_per_draw": round(float(steps.mean()), 1),
        "min_ess_bulk": round(d["min_ess_bulk"], 1),
        "ess_per_s": round(d["min_ess_bulk"] / wall, 3),
        "max_rhat": round(d["max_rhat"], 4),
        "divergences": d["divergences"],
        "coverage_90": round(cov, 3),
        "missed": missed,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "bayes_sd": bayes_sd.__version__,
    }


def gradient_cost(model, sweep) -> dict:
    """Without sampling: the model's build and numba compile time, its size and the time of
    one log density and gradient (what every leapfrog step costs; the fit's wall time is this
    times the steps, which the posterior's geometry sets)."""
    from bench_points import gradient, time_pair

    import bayes_sd

    t0 = time.perf_counter()
    model.build_model(sweep)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pair = gradient(model.model)
    compile_s = time.perf_counter() - t0
    (gradient_ms,) = time_pair([pair], repeats=3, calls=20)
    return {
        "points": len(model.design.points.first),
        "parameters": int(sum(np.size(v) for v in pair[1])),
        "build_s": round(build_s, 1),
        "compile_s": round(compile_s, 1),
        "gradient_ms": round(gradient_ms, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "bayes_sd": bayes_sd.__version__,
    }


def growth(rows: list[dict], key: str) -> float | None:
    """The exponent b of ``key ∝ runs^b`` (least squares on logs), over sizes with a value."""
    ok = [(r["runs"], r[key]) for r in rows if r.get(key)]
    if len({n for n, _ in ok}) < 2:
        return None
    x, y = np.log([n for n, _ in ok]), np.log([v for _, v in ok])
    return round(float(np.polyfit(x, y, 1)[0]), 2)


COLUMNS = ["runs", "points", "backend", "rep", "device", "parameters", "build_s", "compile_s",
           "wall_s", "sampling_s", "gradient_ms", "steps_per_draw", "ess_per_s", "max_rhat",
           "divergences", "coverage_90", "peak_rss_mb", "error"]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--backends", default="nutpie,numpyro")
    p.add_argument("--draws", type=int, default=300)
    p.add_argument("--tune", type=int, default=300)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--reps", type=int, default=1, help="replications per size (seeds 0..)")
    p.add_argument("--adaptation", default="auto", help="nutpie's mass matrix (sampler_config)")
    p.add_argument("--replicates", type=int, default=1,
                   help="runs per load point (a fleet re-running its benchmarks): the "
                        "configurations are runs / (18 x replicates)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per fit (one still running is recorded unfinished)")  # fmt: skip
    p.add_argument(
        "--gradient-only",
        action="store_true",
        help="no fits: build, compile and time the log density's numba gradient (nutpie's) "
        "per size",
    )
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "scale.json"))
    p.add_argument("--one", nargs=3, metavar=("SIZE", "BACKEND", "REP"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:  # a child process: one fit, its row as JSON on the last line of stdout
        size, backend, rep = args.one
        print(json.dumps(one(int(size), backend, int(rep), args), default=float))
        return
    rows = []
    backends = args.backends.split(",")
    if args.gradient_only:  # the numba-compiled gradient (nutpie's); JAX's is not timed here
        backends = ["nutpie"]
    for size in (int(s) for s in args.sizes.split(",")):
        for backend in backends:
            for rep in range(args.reps):
                cmd = [sys.executable, __file__, "--one", str(size), backend, str(rep),
                       "--draws", str(args.draws), "--tune", str(args.tune),
                       "--chains", str(args.chains),
                       "--replicates", str(args.replicates),
                       "--adaptation", args.adaptation,
                       *(["--gradient-only"] if args.gradient_only else [])]  # fmt: skip
                try:
                    done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                          timeout=args.timeout)  # fmt: skip
                except subprocess.TimeoutExpired:
                    rows.append({"runs": size, "backend": backend, "rep": rep,
                                 "error": f"not finished in {args.timeout:.0f} s"})  # fmt: skip
                    save(args, rows)
                    continue
                try:
                    row = json.loads(done.stdout.strip().splitlines()[-1])
                except (IndexError, json.JSONDecodeError):
                    last = done.stderr.strip().splitlines()[-1:] or ["no output"]
                    row = {"runs": size, "backend": backend, "rep": rep, "error": last[0]}
                rows.append(row)
                print(pd.DataFrame([row]).reindex(columns=COLUMNS).to_string(index=False),
                      flush=True)  # fmt: skip
                save(args, rows)
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    print(table.to_string(index=False))
    for backend in args.backends.split(","):
        mine = [r for r in rows if r.get("backend") == backend and "error" not in r]
        print(f"{backend}: cost ∝ runs^b with b = {growth(mine, 'gradient_ms')} (gradient), "
              f"{growth(mine, 'wall_s')} (fit wall time)")  # fmt: skip
    save(args, rows)


def save(args, rows: list[dict]) -> None:
    growths = {b: {"gradient": growth([r for r in rows if r.get("backend") == b], "gradient_ms"),
                   "wall": growth([r for r in rows if r.get("backend") == b], "wall_s")}
               for b in args.backends.split(",")}  # fmt: skip
    write_results(args.out, {"rows": rows, "growth_exponent": growths,
                             "settings": {"draws": args.draws, "tune": args.tune,
                                          "chains": args.chains,
                                          "replicates": args.replicates,
                                          "adaptation": args.adaptation,
                                          "gradient_only": args.gradient_only}})  # fmt: skip


def write_results(out: str, payload: dict) -> None:
    """``payload`` and the machine, as JSON at ``out`` (atomically)."""
    from bayes_sd.schema import atomic_write

    machine = {"cpus": os.cpu_count(), "platform": platform.platform(),
               "python": platform.python_version()}  # fmt: skip
    text = json.dumps({**payload, "machine": machine}, indent=1, default=float)
    atomic_write(Path(out), lambda path: path.write_text(text, encoding="utf-8"))


if __name__ == "__main__":
    main()
