"""Centred against non-centred residual shifts on the full simulated demo sweep, in one run.

Run: ``.venv/bin/python benchmarks/bench_parametrisation.py [--draws 250] [--chains 4]``.
Prints a table and writes ``benchmarks/results/parametrisation.json``: wall time (compile
included), max R-hat, min bulk/tail ESS and divergences of the population parameters, ESS per
second, and the ratio of each against the centred fit (the default) of the same run.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import bayes_sd
from bayes_sd.model import ConvergenceWarning, LatencyModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=250)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/parametrisation.json")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)
    sweep = bayes_sd.load_example("demo")
    rows = []
    for centred in (True, False):
        model = LatencyModel(
            model_config={} if centred else {"centred": False},
            sampler_config={
                "draws": args.draws,
                "tune": args.draws,
                "chains": args.chains,
                "progressbar": False,
            },
        )
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(sweep, random_seed=args.seed)
        wall = time.perf_counter() - start
        d = model.diagnostics
        rows.append(
            {
                "shifts": "centred" if centred else "non-centred",
                "wall_s": round(wall, 1),
                "max_rhat": round(d["max_rhat"], 3),
                "min_ess_bulk": round(d["min_ess_bulk"], 1),
                "min_ess_tail": round(d["min_ess_tail"], 1),
                "divergences": d["divergences"],
                "ess_per_s": round(d["min_ess_bulk"] / wall, 3),
            }
        )
        print("  ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    base = rows[0]
    for r in rows:
        r["wall_ratio"] = round(r["wall_s"] / base["wall_s"], 2)
        r["ess_per_s_ratio"] = round(r["ess_per_s"] / base["ess_per_s"], 2)
    print(f"{'shifts':<12} {'wall s':>7} {'R-hat':>6} {'ESS':>6} {'div':>5} {'ESS/s':>6} "
          f"{'wall x':>6} {'ESS/s x':>7}")  # fmt: skip
    for r in rows:
        print(f"{r['shifts']:<12} {r['wall_s']:>7} {r['max_rhat']:>6} {r['min_ess_bulk']:>6} "
              f"{r['divergences']:>5} {r['ess_per_s']:>6} {r['wall_ratio']:>6} "
              f"{r['ess_per_s_ratio']:>7}")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"runs": len(sweep), "draws": args.draws, "chains": args.chains, "seed": args.seed}
    out.write_text(json.dumps({"meta": meta, "fits": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
