"""The hierarchical population of demand coefficients (docs/science.md, "The hierarchy"),
and sweeps drawn from it with the truth returned beside them.

For phase ``p`` (prefill), ``v`` (verification), ``d`` (drafting) and level ``1``
(load-independent) / ``2`` (per request in flight), a configuration's coefficient is

    log c = intercept + slope · log(params / 1e9) + gpu effect + length effect + residual

* ``params`` is that of the model doing the work: the target for ``p`` and ``v`` (active
  parameters for an MoE target), the drafter for ``d``;
* length effects: ``log(P / 1024)`` for prefill, ``log((P + D/2) / 1024)`` for ``c2v``;
* GPU effects per phase and level, partially pooled (``gpu_sd``); configuration residuals per
  phase and level (``config_sd``);
* MoE targets add a coverage-weighted increment to ``p`` and ``v``: reading every expert costs
  what a dense model of the total size would (``c_s = c(total) − c(active)``);
* observed log mean latency = log closed-form latency + Student-t noise (``noise_sd``, ``nu``).

:data:`DEFAULT_POPULATION` was set from the embedded step costs (e.g. ``c1v`` ≈ the weight read
of one decode pass: 6.3 ms for an 8 B model on H100) and serves as the truth of simulated sweeps.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from bayes_sd import acceptance, latency, laws
from bayes_sd.coefs import COEFS, LENGTH_COEFS
from bayes_sd.registry import lookup_model
from bayes_sd.schema import validate_sweep

__all__ = ["COEFS", "DEFAULT_POPULATION", "Population", "simulate_from_model"]

# the order random effects are drawn in: seeded sweeps stay those of earlier versions
DRAW_ORDER = ("c1p", "c2p", "c1v", "c2v", "c1d", "c2d", "c1s", "c2s")


@dataclass(frozen=True)
class Population:
    """Population-level truth. Intercepts are log seconds at 1 B parameters, P + D/2 = 1024."""

    intercept: dict[str, float] = field(
        default_factory=lambda: {
            "c1p": np.log(3.5e-3),
            "c2p": np.log(1.8e-3),
            "c1v": np.log(1.0e-3),
            "c2v": np.log(1.4e-5),
            "c1d": np.log(2.0e-3),
            "c2d": np.log(5.0e-6),
            "c1s": np.log(1.6e-4),
            "c2s": np.log(1.2e-5),
        }
    )
    slope: dict[str, float] = field(
        default_factory=lambda: {
            "c1p": 0.95,
            "c2p": 0.95,
            "c1v": 0.85,
            "c2v": 0.9,
            "c1d": 0.45,
            "c2d": 0.5,
            "c1s": 0.85,
            "c2s": 0.9,
        }
    )
    length_slope: dict[str, float] = field(
        default_factory=lambda: {"c1p": 1.0, "c2p": 1.0, "c2v": 0.6}
    )
    gpu_effect: dict[str, dict[str, float]] = field(
        default_factory=lambda: {
            "H100-SXM-80GB": dict.fromkeys(DRAW_ORDER, 0.0),
            "H200-SXM-141GB": {
                "c1p": -0.05,
                "c2p": -0.05,
                "c1v": -0.22,
                "c2v": -0.1,
                "c1d": -0.2,
                "c2d": -0.05,
                "c1s": -0.1,
                "c2s": -0.05,
            },
        }
    )
    gpu_sd: float = 0.15
    config_sd: float = 0.1
    # each verified draft token costs a request this share of its one-token pass (c2v): the
    # embedded PyTorch step costs give 0.3–0.5 (bayes_sd.priors, verify_share)
    verify_share: float = 0.3
    noise_sd: float = 0.03
    nu: float = 5.0


DEFAULT_POPULATION = Population()


def _draw_gpu_effects(pop: Population, gpus: list[str], rng) -> dict[str, dict[str, float]]:
    out = {}
    for gpu in gpus:
        if gpu in pop.gpu_effect:
            out[gpu] = dict(pop.gpu_effect[gpu])
        else:  # an unseen GPU: drawn from the partially pooled law
            out[gpu] = {c: float(rng.normal(0.0, pop.gpu_sd)) for c in DRAW_ORDER}
    return out


def coefficients(
    pop: Population,
    gpu_effects: dict[str, dict[str, float]],
    *,
    gpu: str,
    target_params: float,
    drafter_params: float | None,
    prefill_len: float,
    decode_len: float,
    residual: dict[str, float] | None = None,
) -> latency.Coefficients:
    """The coefficients (seconds) of one configuration from the population law
    (:func:`bayes_sd.laws.log_coefficients`, intercepts at 1 B parameters)."""
    residual = residual or dict.fromkeys(COEFS, 0.0)
    vector = lambda d: np.array([d[c] for c in COEFS])  # noqa: E731
    # no drafter: drafting costs nothing (k = 0 anyway)
    worker = np.array([drafter_params or 1e9 if c.endswith("d") else target_params for c in COEFS])
    log_c = laws.log_coefficients(
        vector(pop.intercept),
        vector(pop.slope),
        np.log(worker / 1e9),
        vector(gpu_effects[gpu]),
        np.array([pop.length_slope.get(c, 0.0) for c in LENGTH_COEFS]),
        laws.length_covariates(prefill_len, decode_len),
    ) + vector(residual)
    values = np.exp(log_c)
    if drafter_params is None:
        values[[COEFS.index(c) for c in ("c1d", "c2d")]] = 0.0
    return latency.Coefficients.from_values(float(v) for v in values)


def simulate_from_model(
    configs: pd.DataFrame | list[dict[str, Any]],
    *,
    population: Population = DEFAULT_POPULATION,
    fractions=(0.05, 0.2, 0.4, 0.6, 0.75, 0.9),
    seed: int = 0,
    source: str = "simulated-closed-form",
    replicates: int = 1,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Draw configurations' coefficients from the population and sweep them in closed form.

    ``configs``: rows with ``gpu, target, drafter (or None), prefill_len, decode_len`` and a list
    of ``(k, alpha)`` pairs in ``sd`` (k = 0 is always added); an optional ``dataset`` labels
    the configuration's workload (configurations of one GPU and target whose lengths lie within
    10% are otherwise one workload to the model: :func:`bayes_sd.design.workload_lengths`).
    Each system gets open-loop runs at ``fractions`` of its saturation rate (MoE targets
    through the coverage fixed point).
    ``replicates``: runs per load point, each with its own noise (a fleet re-running its
    benchmarks; run ids end in ``-r<j>`` when above 1).
    Returns the validated canonical sweep (labelled simulated) and the truth: the population,
    GPU effects, and each configuration's residuals and coefficients.
    """
    if int(replicates) != replicates or replicates < 1:
        raise ValueError(f"replicates must be a whole number ≥ 1, got {replicates!r}")
    rng = np.random.default_rng(seed)
    configs = pd.DataFrame(configs)
    gpus = sorted(configs["gpu"].unique())
    gpu_effects = _draw_gpu_effects(population, gpus, rng)
    rows, truth_configs = [], []
    for ci, cfg in enumerate(configs.to_dict("records")):
        t_info = lookup_model(cfg["target"])
        if t_info is None:
            raise ValueError(f"unknown target {cfg['target']!r}: register_model it first")
        d_info = lookup_model(cfg["drafter"]) if cfg.get("drafter") else None
        resid = {c: float(rng.normal(0.0, population.config_sd)) for c in DRAW_ORDER}
        kw = dict(
            gpu=cfg["gpu"],
            drafter_params=d_info.params if d_info else None,
            prefill_len=cfg["prefill_len"],
            decode_len=cfg["decode_len"],
            residual=resid,
        )
        unsat = coefficients(population, gpu_effects, target_params=t_info.active_params, **kw)
        if t_info.moe:
            full = coefficients(population, gpu_effects, target_params=t_info.params, **kw)
            incr = latency.Coefficients.from_values(
                max(f - u, 0.0) if c[-1] in "pvs" else 0.0
                for c, f, u in zip(COEFS, full, unsat, strict=True)
            )
        else:
            incr = latency.Coefficients.from_values([0.0] * len(COEFS))
        truth_configs.append(
            {
                "config": ci,
                **cfg,
                "residual": resid,
                "unsaturated": unsat._asdict(),
                "increment": incr._asdict(),
            }
        )
        for k, alpha in [(0, None), *cfg.get("sd", [])]:
            if k and not cfg.get("drafter"):
                raise ValueError(f"config {ci}: SD (k={k}) needs a drafter")
            tokens = float(acceptance.tokens_per_cycle(alpha, k)) if k else 1.0
            args = (unsat, incr, k, tokens, cfg["decode_len"])
            sat = float(latency.moe_saturation_rate(*args, population.verify_share))
            for f, rep in itertools.product(fractions, range(int(replicates))):
                rate = f * sat
                lat = float(
                    latency.moe_open_loop_latency(
                        *args,
                        rate,
                        t_info.experts,
                        t_info.experts_per_token,
                        cfg["prefill_len"],
                        population.verify_share,
                    )
                )
                noise = population.noise_sd * rng.standard_t(population.nu)
                rows.append(
                    {
                        "source": source,
                        "run_id": f"cf-{ci}-k{k}-a{alpha}-{f:.2f}"
                        + (f"-r{rep}" if replicates > 1 else ""),
                        "file": "simulate_from_model",
                        "record": f"config {ci}",
                        **({"dataset": cfg["dataset"]} if cfg.get("dataset") else {}),
                        "gpu": cfg["gpu"],
                        "num_gpus": 1,
                        "target": cfg["target"],
                        "target_params": t_info.params,
                        "target_active_params": t_info.active_params,
                        "target_experts": t_info.experts,
                        "target_experts_per_token": t_info.experts_per_token,
                        "drafter": cfg.get("drafter") if k else None,
                        "drafter_params": d_info.params if (k and d_info) else None,
                        "method": "draft_model" if k else "none",
                        "k": k,
                        "alpha": alpha,
                        "acceptance_length": tokens,
                        "acceptance_source": "alpha" if k else "k=0",
                        "prefill_len": cfg["prefill_len"],
                        "decode_len": cfg["decode_len"],
                        "load_mode": "rate",
                        "arrivals": "poisson",
                        "request_rate": rate,
                        "latency_mean_s": lat * float(np.exp(noise)),
                        "latency_source": "closed form",
                        "saturated": False,
                        "true_latency_s": lat,
                        "utilisation": f,
                    }
                )
    sweep = validate_sweep(pd.DataFrame(rows))
    truth = {"population": population, "gpu_effects": gpu_effects, "configs": truth_configs}
    return sweep, truth


def with_overrides(pop: Population, **changes: Any) -> Population:
    """A copy of ``pop`` with some fields changed (e.g. a larger ``noise_sd``)."""
    return replace(pop, **changes)
