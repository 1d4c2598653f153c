"""Speed of the foundation: readers, validation and the vectorised algebra.

Run: ``.venv/bin/python benchmarks/bench_foundation.py [--out benchmarks/results/foundation.json]``.
Prints a table and writes JSON. Ratios are against a baseline measured in the same run:
reading vLLM files against ``json.loads`` of the same files (the parsing floor), validation
against a deep copy of the same table (touching every cell once), and the MoE
fixed-point solver against the dense closed form on the same rows.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import bayes_sd
from bayes_sd import latency

FIXTURE = (
    Path(__file__).parents[1]
    / "tests/fixtures/vllm_eagle/eagle3-4.0qps-Llama-3.1-8B-Instruct-20261101-101500.json"
)


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_readers(n_files: int) -> list[dict]:
    obj = json.loads(FIXTURE.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(n_files):
            obj["request_rate"] = 0.5 + 0.01 * i
            (folder / f"run-{i:04d}.json").write_text(json.dumps(obj))
        (folder / "bayes_sd.yaml").write_text("num_gpus: 1\nmethod: eagle3\n")
        files = sorted(folder.glob("run-*.json"))
        floor = best_of(lambda: [json.loads(p.read_text()) for p in files])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read = best_of(lambda: bayes_sd.read_sweep(folder))
            table = bayes_sd.read_sweep(folder)
        out = Path(tmp) / "sweep.csv"
        bayes_sd.write_sweep(table, out)
        tidy = best_of(lambda: bayes_sd.read_sweep(out))
        shutil.rmtree(folder, ignore_errors=True)
    return [
        {"case": f"json.loads of {n_files} vLLM files (baseline)", "seconds": floor, "ratio": 1.0},
        {"case": f"read_sweep of {n_files} vLLM files", "seconds": read, "ratio": read / floor},
        {"case": f"read_sweep of the same {n_files} runs as tidy CSV", "seconds": tidy,
         "ratio": tidy / floor},
    ]  # fmt: skip


def bench_validate(n_rows: int) -> list[dict]:
    blog = bayes_sd.load_example("vllm-blog-2024")
    reps = -(-n_rows // len(blog))
    big = pd.concat(
        [blog.assign(run_id=blog["run_id"] + f"-{i}", latency_mean_s=blog["latency_mean_s"]
                     * (1 + 1e-6 * i)) for i in range(reps)],
        ignore_index=True,
    ).head(n_rows)  # fmt: skip
    floor = best_of(lambda: big.copy(deep=True))  # touching every cell once
    t = best_of(lambda: bayes_sd.validate_sweep(big))
    return [
        {"case": f"deep copy of the same {n_rows}-row table (baseline)", "seconds": floor,
         "ratio": 1.0},
        {"case": f"validate_sweep, {n_rows} rows", "seconds": t, "ratio": t / floor},
    ]  # fmt: skip


def bench_algebra(n_rows: int) -> list[dict]:
    rng = np.random.default_rng(0)
    unsat = latency.Coefficients(
        **{c: rng.uniform(1e-4, 1e-2, n_rows) for c in ("c1p", "c2p", "c1v", "c2v", "c1d", "c2d")}
    )
    incr = latency.Coefficients(
        c1p=0.0, c2p=0.0, c1v=rng.uniform(0, 1e-2, n_rows), c2v=1e-4, c1d=0.0, c2d=0.0
    )
    sat = latency.moe_saturation_rate(unsat, incr, 3, 2.5, 256)
    rate = rng.uniform(0, 1, n_rows) * sat
    c1, c2 = latency.demand(unsat, 3, 2.5, 256)
    dense = best_of(lambda: latency.open_loop_latency(c1, c2, rate))
    moe = best_of(
        lambda: latency.moe_open_loop_latency(unsat, incr, 3, 2.5, 256, rate, 64, 8, 512), 1
    )
    return [
        {"case": f"dense open-loop latency, {n_rows} rows (baseline)", "seconds": dense,
         "ratio": 1.0},
        {"case": f"MoE fixed-point latency, {n_rows} rows", "seconds": moe, "ratio": moe / dense},
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="benchmarks/results/foundation.json")
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    rows = bench_readers(args.files) + bench_validate(10_000) + bench_algebra(args.rows)
    width = max(len(r["case"]) for r in rows)
    print(f"{'case':<{width}}  {'seconds':>9}  {'ratio':>8}")
    for r in rows:
        print(f"{r['case']:<{width}}  {r['seconds']:9.4f}  {r['ratio']:8.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "machine": platform.machine(),
            "bayes_sd": bayes_sd.__version__}  # fmt: skip
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=1, allow_nan=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
