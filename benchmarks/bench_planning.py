"""Planning on SLOs from a fitted model: how long a user waits for an answer.

Run (about 3 minutes on 2 cores, most of it the fit)::

    .venv/bin/python benchmarks/bench_planning.py [--repeats 5]
        [--out benchmarks/results/planning.json]

A real nutpie fit (2 × 300 draws) of a closed-form simulated sweep (SIMULATED: 4 dense targets
with drafters on H100, 6 rates per series, from the package's default population), then, each
timed ``--repeats`` times after one warm-up call (numba compiles once per process):

* ``slo_capacity`` — 3 SLO terms (p99 TTFT, p90 TPOT, mean E2E) over 6 configurations (one
  target, SD off and k = 1 … 5), rate grid of 120 loads, 1,000 posterior draws, with the fresh
  check at each answer: target ≤ 1 s;
* ``frontier`` — the same 6 configurations, 25 interactivity levels;
* baseline, same run: one ``predict`` of the same 6 × 120 rows (what any answer must cost at
  least), and ``planning.sustainable_rate`` (mean-latency SLO, the previous planner).

Prints a table (median seconds, ratio to the predict baseline) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up: numba's first call compiles
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/planning.json"))
    args = p.parse_args(argv)

    from conftest import RECOVERY_CONFIGS

    from bayes_sd import planning
    from bayes_sd.capacity import UnmeasuredTailWarning, load_grid, slo_capacity
    from bayes_sd.frontier import frontier
    from bayes_sd.model import ConvergenceWarning, LatencyModel
    from bayes_sd.population import DEFAULT_POPULATION, simulate_from_model, with_overrides
    from bayes_sd.schema import atomic_write

    truth = with_overrides(DEFAULT_POPULATION, noise_sd=0.02)
    sweep, _ = simulate_from_model(RECOVERY_CONFIGS, population=truth,
                                   fractions=(0.05, 0.2, 0.35, 0.5, 0.65, 0.8), seed=4)  # fmt: skip
    model = LatencyModel(sampler_config={"draws": 300, "tune": 300, "chains": 2,
                                         "progressbar": False})  # fmt: skip
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(sweep, random_seed=7)
    fit_s = time.perf_counter() - start
    cfg = {"gpu": "H100-SXM-80GB", "target": "llama-3.1-8b", "drafter": "eagle3-head-8b",
           "alpha": 0.7, "prefill_len": 1024, "decode_len": 1024}  # fmt: skip
    ks = (0, 1, 2, 3, 4, 5)
    slo = "p99_ttft_ms<=2000,p90_tpot_ms<=40,mean_e2el_s<=30"
    grid = load_grid(model, cfg, ks, load="rate", points=120)
    rows = pd.DataFrame([{**cfg, "k": float(k), "request_rate": r} for k in ks for r in grid])
    cases = {
        "predict (baseline): 6 configurations x 120 rates": lambda: model.predict(
            rows, max_draws=1000, random_seed=0
        ),
        "slo_capacity: 3 terms, 6 configurations": lambda: slo_capacity(
            model, cfg, slo, ks=ks, credibility=0.95, grid=grid
        ),
        "sustainable_rate (mean E2E SLO), 6 configurations": lambda: planning.sustainable_rate(
            model, cfg, slo_s=30.0, credibility=0.95, ks=ks, rates=grid
        ),
        "frontier: 6 configurations, 25 levels": lambda: frontier(
            model, {"8B": cfg}, ks=ks, load="rate", levels=25
        ),
    }
    with warnings.catch_warnings():  # the simulated sweep has no percentiles: warned, known
        warnings.simplefilter("ignore", UnmeasuredTailWarning)
        results = {name: _timed(fn, args.repeats) for name, fn in cases.items()}
    base = next(iter(results.values()))
    table = pd.DataFrame(
        {"case": list(results), "median_s": [round(s, 4) for s in results.values()],
         "ratio_to_predict": [round(s / base, 2) for s in results.values()]}
    )  # fmt: skip
    print(f"fit {fit_s:.0f} s (2 x 300 draws); timings over {args.repeats} repeats")
    print(table.to_string(index=False))
    target = results["slo_capacity: 3 terms, 6 configurations"]
    print(f"target: slo_capacity <= 1 s: {'met' if target <= 1.0 else 'missed'} ({target:.2f} s)")
    payload = {
        "cases": table.to_dict("records"),
        "fit_s": round(fit_s, 1),
        "target_1s_met": bool(target <= 1.0),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    out = Path(args.out)
    atomic_write(out, lambda p: p.write_text(json.dumps(payload, indent=1), encoding="utf-8"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
