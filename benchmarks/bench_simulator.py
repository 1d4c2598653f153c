"""Speed of the simulator: engine steps (decode cycles and prefill passes) per second.

Run: ``.venv/bin/python benchmarks/bench_simulator.py [--out benchmarks/results/simulator.json]``.
The baseline, measured in the same run, is the same simulator stepping one cycle at a time
(``max_cycles_per_event=1``), which gives identical results; the ratio is the speed-up of
advancing many cycles per event in closed form.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

import bayes_sd
from bayes_sd.simulate import SimConfig, measured_capacity, simulate
from bayes_sd.stepmodel import StepCostModel

CASES = [
    (
        "llama-3.1-8b + EAGLE-3, k=3",
        SimConfig(
            "llama-3.1-8b",
            "H100-SXM-80GB",
            k=3,
            drafter="eagle3-head-8b",
            alpha=0.8,
            prompt_len=1024,
            output_len=256,
        ),
    ),
    (
        "llama-3.1-8b, no SD",
        SimConfig("llama-3.1-8b", "H100-SXM-80GB", prompt_len=1024, output_len=256),
    ),
    (
        "qwen3-30b-a3b (MoE) + llama-68m, k=2",
        SimConfig(
            "qwen3-30b-a3b",
            "H200-SXM-141GB",
            k=2,
            drafter="llama-68m",
            alpha=0.7,
            prompt_len=256,
            output_len=1024,
        ),
    ),
]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="benchmarks/results/simulator.json")
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    steps = StepCostModel.from_table(bayes_sd.load_example("stepcost"))
    rows = []
    for label, cfg in CASES:
        cap = measured_capacity(cfg, steps)
        for frac in (0.2, 0.7):
            kw = dict(rate=frac * cap, n_requests=args.requests, seed=1)
            fast, t_fast = timed(lambda kw=kw, cfg=cfg: simulate(cfg, steps, **kw))
            slow, t_slow = timed(
                lambda kw=kw, cfg=cfg: simulate(cfg, steps, max_cycles_per_event=1, **kw)
            )
            same = np.allclose(fast.requests["latency_s"], slow.requests["latency_s"], rtol=1e-9)
            rows.append(
                {
                    "case": f"{label}, {frac:.0%} load",
                    "engine_steps": fast.engine_steps,
                    "seconds": t_fast,
                    "steps_per_s": fast.engine_steps / t_fast,
                    "baseline_seconds": t_slow,
                    "baseline_steps_per_s": slow.engine_steps / t_slow,
                    "speedup": t_slow / t_fast,
                    "identical_latencies": bool(same),
                }
            )
    print(f"{'case':<52} {'steps':>7} {'s':>7} {'steps/s':>10} {'1-cycle s':>9} {'speedup':>8}")
    for r in rows:
        print(
            f"{r['case']:<52} {r['engine_steps']:>7} {r['seconds']:>7.3f} "
            f"{r['steps_per_s']:>10.0f} {r['baseline_seconds']:>9.3f} {r['speedup']:>7.1f}x"
            + ("" if r["identical_latencies"] else "  (results differ!)")
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "requests_per_run": args.requests}
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
