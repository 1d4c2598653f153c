"""Simulated sweeps: grids of configurations × rates, run in parallel, deterministic by seed.

``demo_grid()`` is the grid behind the embedded ``demo`` example (data/demo/README.md says how
it was trimmed); :func:`run_grid` simulates any list of :class:`~bayes_sd.simulate.SimConfig`
at rates from light load to about 90% of each configuration's estimated saturation, plus a few
deliberately saturated runs, and returns vLLM result objects ready for
:func:`bayes_sd.io.sweep_from_results`.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np

from bayes_sd.simulate import SimConfig, measured_capacity, simulate
from bayes_sd.stepmodel import StepCostModel

__all__ = ["DEMO_FRACTIONS", "RunSpec", "demo_grid", "plan_runs", "progress_bar", "run_grid"]

GPUS = ("H100-SXM-80GB", "H200-SXM-141GB")
TARGETS = ("llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "qwen2.5-14b", "olmoe-1b-7b",
           "qwen3-30b-a3b")  # fmt: skip
# (target, drafter, vLLM method)
PAIRS = (
    *((t, "llama-68m", "draft_model") for t in TARGETS),
    ("llama-3.1-8b", "eagle3-head-8b", "eagle3"),
    ("llama-3.1-8b", "llama-3.2-1b", "draft_model"),
    ("qwen2.5-14b", "llama-3.2-1b", "draft_model"),
)
LENGTHS = ((256, 256), (256, 1024), (1024, 256), (1024, 1024))
DEMO_FRACTIONS = (0.05, 0.15, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
SATURATED_FRACTIONS = (1.3, 2.0)


@dataclass(frozen=True)
class RunSpec:
    config: SimConfig
    rate: float
    fraction: float  # of the estimated saturation rate
    seed: int
    name: str


def demo_grid() -> list[SimConfig]:
    """The demo sweep's configurations (324): every target without SD on both GPUs at all four
    length pairs; every (target, drafter) pair at all four length pairs with
    (k, α) ∈ {(1, 0.6), (3, 0.8), (5, 0.9)}; at prompt 1024 / output 256 also (2, 0.8) and
    (7, 0.8); and the full k × α grid for Llama-3.1-8B with its EAGLE-3 head there."""
    configs: list[SimConfig] = []
    seen: set[SimConfig] = set()

    def add(cfg: SimConfig) -> None:
        if cfg not in seen:
            seen.add(cfg)
            configs.append(cfg)

    for gpu in GPUS:
        for target in TARGETS:
            for p, d in LENGTHS:
                add(SimConfig(target, gpu, prompt_len=p, output_len=d))
        for target, drafter, method in PAIRS:
            for p, d in LENGTHS:
                combos = [(1, 0.6), (3, 0.8), (5, 0.9)]
                if (p, d) == (1024, 256):
                    combos += [(2, 0.8), (7, 0.8)]
                    if drafter == "eagle3-head-8b":
                        combos += [(k, a) for k in (1, 2, 3, 5, 7) for a in (0.6, 0.8, 0.9)]
                for k, alpha in combos:
                    add(SimConfig(target, gpu, k=k, drafter=drafter, alpha=alpha, prompt_len=p,
                                  output_len=d, method=method))  # fmt: skip
    return configs


def plan_runs(
    configs: Iterable[SimConfig],
    steps: StepCostModel,
    *,
    fractions: Iterable[float] = DEMO_FRACTIONS,
    saturated_every: int = 25,
    seed: int = 0,
    indices: Iterable[int] | None = None,
) -> list[RunSpec]:
    """Rates per configuration as fractions of its measured capacity
    (:func:`~bayes_sd.simulate.measured_capacity`); every
    ``saturated_every``-th configuration also gets runs past saturation (flagged on reading).
    Each run's seed derives from ``seed`` and its position, so results do not depend on the
    order or process they run in; ``indices`` plans only those configurations (same seeds)."""
    runs = []
    keep = None if indices is None else set(indices)
    for ci, cfg in enumerate(configs):
        if keep is not None and ci not in keep:
            continue
        sat = measured_capacity(cfg, steps, seed=seed)
        extra = SATURATED_FRACTIONS if saturated_every and ci % saturated_every == 0 else ()
        for ri, f in enumerate((*fractions, *extra)):
            run_seed = int(np.random.SeedSequence([seed, ci, ri]).generate_state(1)[0])
            name = (f"{cfg.gpu}/{cfg.target}/{cfg.drafter or 'none'}/k{cfg.k}-a{cfg.alpha}-"
                    f"p{cfg.prompt_len}-d{cfg.output_len}/{f:.2f}sat.json")  # fmt: skip
            runs.append(RunSpec(cfg, round(f * sat, 6), f, run_seed, name))
    return runs


@contextlib.contextmanager
def progress_bar(total: int, label: str, stream=None):
    """A progress bar on stderr (``rich``'s, which PyMC uses; a static final line when stderr
    is not a terminal) for the duration of the block; yields ``update(n=1)``."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(file=stream or sys.stderr)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n=1: bar.advance(task, n)


_STEPS: StepCostModel | None = None


def _init_worker(steps: StepCostModel) -> None:
    global _STEPS
    _STEPS = steps


def _run_one(spec: RunSpec, min_requests: int, max_requests: int) -> tuple[str, dict, dict]:
    """Simulate one run; rerun with more requests when the batch was large, so that the warm-up
    is a small part of the run and the backlog signal is not noise (twenty requests per request
    in flight)."""
    assert _STEPS is not None
    n = min_requests
    result = simulate(spec.config, _STEPS, rate=spec.rate, n_requests=n, seed=spec.seed)
    wanted = min(max_requests, math.ceil(20 * result.mean_in_system))
    if wanted > n:
        result = simulate(spec.config, _STEPS, rate=spec.rate, n_requests=wanted, seed=spec.seed)
    info = {"engine_steps": result.engine_steps, "extrapolated": result.extrapolated,
            "fraction": spec.fraction}  # fmt: skip
    return spec.name, result.to_vllm_json(), info


def run_grid(
    runs: list[RunSpec],
    steps: StepCostModel,
    *,
    jobs: int | None = None,
    min_requests: int = 1000,
    max_requests: int = 3000,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[str, dict, dict]]:
    """Simulate every run, in ``jobs`` processes (default: all CPUs); results in run order."""
    jobs = jobs or os.cpu_count() or 1
    out: list[Any] = [None] * len(runs)
    if jobs == 1:
        _init_worker(steps)
        for i, spec in enumerate(runs):
            out[i] = _run_one(spec, min_requests, max_requests)
            if progress:
                progress(1)
        return out
    # forkserver: forking a process that already runs threads (numba, BLAS) can deadlock.
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(jobs, context, _init_worker, (steps,)) as pool:
        futures = {
            pool.submit(_run_one, spec, min_requests, max_requests): i
            for i, spec in enumerate(runs)
        }
        for fut in as_completed(futures):
            out[futures[fut]] = fut.result()
            if progress:
                progress(1)
    return out
