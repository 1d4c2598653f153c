"""The likelihood per load point: what a gradient costs when runs repeat their load points.

Run (about 5 minutes on 2 cores)::

    .venv/bin/python benchmarks/bench_points.py [--configs 56] [--replicates 1,3,10,30]
        [--repeats 7] [--out benchmarks/results/points.json]

A fleet re-runs its benchmarks (the same configuration at the same load on other dates, other
machines of one type): those runs share one predicted TTFT, TPOT and E2E. The model computes the
phases once per *load point* (``bayes_sd.design.Points``) and gathers them per run for the
likelihood; the baseline, measured in the same run, is the same model computed per run
(``GraphOptions(by_point=False)``, the graph before this change). Both are compiled as nutpie
compiles them (numba) and timed interleaved, best of ``--repeats`` loops of 100 gradients.

Data (simulated, labelled so): ``simulate_from_model`` sweeps of ``--configs`` configurations (the
scaling benchmark's, 18 load points each: k = 0 and two SD settings at six open-loop rates), each
point measured ``R`` times with its own noise; plus the embedded demo sweep (every run its own
point) to show that sweeps without replicates pay nothing. Reported: runs, points, gradient time
of both graphs, their ratio, and how each grows with the runs at a fixed number of
configurations (least-squares exponent).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

from bench_scale import FRACTIONS, RUNS_PER_CONFIG, configs, write_results


def gradient(model):
    """The joint log density and its gradient, compiled with numba (as nutpie does)."""
    import pytensor
    import pytensor.tensor as pt

    values = model.value_vars
    logp = model.logp(jacobian=True)
    fn = pytensor.function(values, [logp, *pt.grad(logp, values)], mode="NUMBA")
    start = model.initial_point()
    args = [start[v.name] for v in values]
    fn(*args)
    return fn, args


def time_pair(fns, repeats: int, calls: int = 100) -> list[float]:
    """Best time per call (ms) of each function, timed interleaved (the machine's load drifts
    alike for both)."""
    best = [np.inf] * len(fns)
    for _ in range(repeats):
        for i, (fn, args) in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn(*args)
            best[i] = min(best[i], (time.perf_counter() - t0) / calls)
    return [1e3 * b for b in best]


def measure(sweep: pd.DataFrame, label: str, replicates: int, repeats: int) -> dict:
    from bayes_sd.graph import GraphOptions, build_graph
    from bayes_sd.model import LatencyModel

    lm = LatencyModel()
    per_point = lm.build_model(sweep)
    options = GraphOptions(lm.centred, lm.residuals, lm.coverage, by_point=False)
    per_run = build_graph(lm.design, lm.priors, options)
    a, b = gradient(per_run), gradient(per_point)
    logp_run, logp_point = float(a[0](*a[1])[0]), float(b[0](*b[1])[0])
    ms_run, ms_point = time_pair([a, b], repeats)
    return {
        "sweep": label,
        "replicates": replicates,
        "runs": len(lm.design.rows),
        "points": len(lm.design.points.first),
        "systems": len(lm.design.systems),
        "per_run_ms": round(ms_run, 4),
        "per_point_ms": round(ms_point, 4),
        "speedup": round(ms_run / ms_point, 2),
        # equal where replicates share their measured batch (closed loop); open loop, the
        # point's batch is its runs' mean, so the two differ a little
        "logp_per_run": round(logp_run, 4),
        "logp_per_point": round(logp_point, 4),
    }


def growth(rows: list[dict], key: str) -> float | None:
    """Exponent b of ``key ∝ runs^b`` over the simulated rows (fixed configurations)."""
    ok = [(r["runs"], r[key]) for r in rows if r["sweep"] == "simulated"]
    if len(ok) < 2:
        return None
    x, y = np.log([n for n, _ in ok]), np.log([v for _, v in ok])
    return round(float(np.polyfit(x, y, 1)[0]), 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", type=int, default=56)
    p.add_argument("--replicates", default="1,3,10,30")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "points.json"))
    args = p.parse_args()
    from bayes_sd.datasets import load_example
    from bayes_sd.population import DEFAULT_POPULATION, simulate_from_model, with_overrides

    truth = with_overrides(DEFAULT_POPULATION, noise_sd=0.02)
    rows = []
    jobs = [("demo (real layout, simulated)", 1, lambda: load_example("demo"))]
    for r in (int(v) for v in args.replicates.split(",")):
        jobs.append(("simulated", r, lambda r=r: simulate_from_model(
            configs(args.configs * RUNS_PER_CONFIG, seed=0), population=truth,
            fractions=FRACTIONS, seed=0, replicates=r)[0]))  # fmt: skip
    for label, r, make in jobs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row = measure(make(), label, r, args.repeats)
        rows.append(row)
        print(pd.DataFrame([row]).drop(columns=["logp_per_run", "logp_per_point"])
              .to_string(index=False), flush=True)  # fmt: skip
    table = pd.DataFrame(rows)
    print()
    print(table.to_string(index=False))
    exps = {"per_run": growth(rows, "per_run_ms"), "per_point": growth(rows, "per_point_ms")}
    print(f"gradient ∝ runs^b at {args.configs} configurations: b = {exps['per_run']} per run, "
          f"{exps['per_point']} per point")  # fmt: skip
    write_results(
        args.out,
        {
            "rows": rows,
            "growth_exponent": exps,
            "settings": {"configs": args.configs, "repeats": args.repeats},
        },
    )


if __name__ == "__main__":
    main()
