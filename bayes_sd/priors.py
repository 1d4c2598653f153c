"""Default priors of the latency model, as configuration (``pymc_extras.prior.Prior``).

How they were chosen (docs/model.md): coefficients are on the log scale, at 1 B parameters of
the model doing the work and a 1,024-token length.

* ``intercept``: centred on what the embedded H100 step costs imply — e.g. the load-independent
  verification cost ``c1v`` is one decode pass that reads the weights, 6.3 ms for an 8 B model,
  so about 1 ms per B parameters; the multi-token verification premium ``c1s`` is the jump from
  a one-token to a two-token pass, 1.3 ms for that model — with a standard deviation of 1.5 (a
  factor of 4.5 either way): weakly informative, physically anchored.
* ``size_slope``: weight reads and compute grow about linearly with parameters, and never
  shrink with them: LogNormal(log 0.8, 0.5), median 0.8, 95% within 0.3–2.1, which allows the
  sub-linear scaling of small, launch-bound models. (Until 2026-11-23 a Normal(0.8, 0.3): its
  negative tail held a non-physical local mode of the demo posterior — ``size_slope[c2v]``
  ≈ −0.1, a negative MoE increment, log density ~100 below the main mode — that caught 4
  of 14 nutpie chains in short runs; 0 of 16 with the positive prior.)
* ``length_slope``: prefill grows with the prompt, per-token verification with the context;
  Normal(0.8, 0.5).
* ``gpu_sd``: spread of the per-GPU effects, one for all coefficients, HalfNormal(0.3) — GPUs
  of one generation differ by tens of percent, not by factors; an unseen GPU gets this spread on
  each coefficient. One spread because a sweep on few GPUs has one contrast per coefficient
  (two GPUs) — too little for a spread of its own (give the prior ``dims="coef"`` for one per
  coefficient). The effects themselves sum to zero over the fitted GPUs (a ZeroSumNormal,
  centred or not with the residuals), so they do not trade off against the intercept.
* ``system_sd`` (per level) and ``draft_sd``: spreads of the configuration residuals — one
  log-scale shift per level on the target's coefficients of a system, and one on the drafter's
  load-independent cost ``c1d`` of a draft system (its per-request cost is carried by the series
  shifts) — HalfNormal(0.3).
* ``series_sd``: spread of the per-series shifts of ``C1`` and ``C2`` (a series is one draft
  system at one draft length, or a system's baseline) — what the coefficient laws do not
  explain of one (k, acceptance) curve; HalfNormal(0.1): the closed form describes a series to
  a few percent.
* ``moe_excess``: MoE coverage increment on the log scale around "reading every expert costs
  what a dense model of the total size would", Normal(0, 0.5).
* ``acceptance``: per drafter configuration where the data carry no acceptance, Beta(2, 2) on
  the acceptance rate (E − 1)/k.
* ``sigma``: measurement noise on log mean latency per source, HalfNormal(0.1) (a few percent is
  typical of benchmark means); ``nu``: Student-t degrees of freedom, Gamma(2, 0.1).

Override any of them by name: ``LatencyModel(model_config={"priors": {"sigma":
Prior("HalfNormal", sigma=0.05, dims="source")}})``. Unknown names are an error listing them all.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pymc_extras.prior import Prior, deserialize

from bayes_sd.population import DEFAULT_POPULATION

__all__ = ["COEFS", "DEFAULT_PRIORS", "LENGTH_COEFS", "SLOPE_COEFS", "resolve_priors"]

COEFS = ("c1p", "c2p", "c1v", "c2v", "c1s", "c2s", "c1d", "c2d")
LENGTH_COEFS = ("c1p", "c2p", "c2v")
SLOPE_COEFS = ("c1p", "c2p", "c1v", "c2v", "c1d", "c2d")  # c1s, c2s take c1v's and c2v's
REF_TARGET_PARAMS = 4e9  # intercepts are at these sizes (docs/model.md)
REF_DRAFTER_PARAMS = 0.25e9


def _defaults() -> dict[str, Prior]:
    pop = DEFAULT_POPULATION
    ref = {c: REF_DRAFTER_PARAMS if c.endswith("d") else REF_TARGET_PARAMS for c in COEFS}
    centre = [
        round(float(pop.intercept[c] + pop.slope[c] * np.log(ref[c] / 1e9)), 3) for c in COEFS
    ]
    return {
        "intercept": Prior("Normal", mu=np.array(centre), sigma=1.5, dims="coef"),
        "size_slope": Prior("LogNormal", mu=float(np.log(0.8)), sigma=0.5, dims="slope_coef"),
        "length_slope": Prior("Normal", mu=0.8, sigma=0.5, dims="length_coef"),
        "gpu_sd": Prior("HalfNormal", sigma=0.3),
        "system_sd": Prior("HalfNormal", sigma=0.3, dims="level"),
        "draft_sd": Prior("HalfNormal", sigma=0.3),
        "series_sd": Prior("HalfNormal", sigma=0.1),
        "moe_excess": Prior("Normal", mu=0.0, sigma=0.5, dims="coef_pv"),
        "acceptance": Prior("Beta", alpha=2.0, beta=2.0, dims="draft_system"),
        "sigma": Prior("HalfNormal", sigma=0.1, dims="source"),
        "load_noise": Prior("HalfNormal", sigma=1.0),
        "nu": Prior("Gamma", alpha=2.0, beta=0.1),
    }


DEFAULT_PRIORS: dict[str, Prior] = _defaults()


def resolve_priors(overrides: dict[str, Any] | None) -> dict[str, Prior]:
    """Defaults updated by ``overrides`` (Prior objects or their ``to_dict()`` form)."""
    priors = dict(_defaults())
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(priors))
    if unknown:
        raise ValueError(
            f"unknown prior name(s): {', '.join(unknown)}; known: {', '.join(sorted(priors))}"
        )
    bad = [k for k, v in overrides.items() if not isinstance(v, Prior | dict)]
    if bad:
        raise ValueError(f"prior(s) {', '.join(bad)} must be pymc_extras.prior.Prior objects")
    for name, value in overrides.items():
        priors[name] = deserialize(value) if isinstance(value, dict) else value
    return priors
