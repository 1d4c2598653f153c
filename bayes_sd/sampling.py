"""Sampling for every model of the package: backends, the compiled nutpie path, diagnostics.

``sample`` runs NUTS on a built ``pm.Model`` with one of three backends (nutpie — the default,
fastest by measurement —, PyMC's own NUTS, numpyro) and the starts and adaptations measured for
them (docs/model.md, Benchmark). ``compile_nutpie`` / ``sample_compiled`` compile a model once
and refit it to new data (simulation-based calibration, tests). ``convergence_summary`` and
``warn_if_unreliable`` report R-hat, ESS and divergences the same way for
:class:`~bayes_sd.LatencyModel`, :class:`~bayes_sd.stepfit.StepLevelModel` and calibration.
"""

from __future__ import annotations

import numbers
import os
import warnings
from typing import Any

import numpy as np

__all__ = [
    "ADAPTATIONS",
    "DEFAULT_SAMPLER",
    "SAMPLERS",
    "ConvergenceWarning",
    "check_sampler_config",
    "compile_nutpie",
    "convergence_summary",
    "sample",
    "sample_compiled",
    "target_accept",
    "warn_if_unreliable",
]

DEFAULT_SAMPLER = {
    "draws": 1000,
    "tune": 1000,
    "chains": 4,
    "target_accept": "auto",
    "nuts_sampler": "nutpie",
    "adaptation": "auto",
    "progressbar": True,
}
EXTRA_KEYS = ("cores",)
SAMPLERS = ("nutpie", "pymc", "numpyro")
# the package that provides each backend, and the extra that installs it
BACKEND_PACKAGES = {"nutpie": ("nutpie", None), "pymc": ("pymc", None),
                    "numpyro": ("numpyro", "numpyro")}  # fmt: skip
# nutpie's mass-matrix adaptation; the key applies to nutpie only (PyMC's and numpyro's NUTS
# always adapt from draw variances). "auto" (the LatencyModel default) follows the residuals'
# form, by measurement (docs/model.md, Benchmark): hierarchically centred (large, dense sweeps)
# get "draw_diag" (draw variances, as Stan and PyMC): on the demo, 4 x 1,000 draws, R-hat
# 1.0085 and min bulk ESS 700 in 58 s of sampling against 1.0145 and 223 in 27 s for nutpie's
# own "diag" (draw and gradient variances), 1.7x the ESS per second. Non-centred (sparse or
# small sweeps) get "diag": on the demo's sparse split, 4 x 500 draws, "draw_diag" left R-hat
# 2.11 and ESS 5 where "diag" reached 1.017 and 167; SBC and the recovery tests were measured
# with "diag".
ADAPTATIONS = ("auto", "draw_diag", "diag", "low_rank")
# NUTS's target acceptance for target_accept="auto", by the residuals' form (measured
# 2026-12-04, the embedded real vLLM sweep, 18 runs, non-centred, 4 x 1,000 draws, nutpie
# "diag"): at 0.9, 5 of 6 seeds warned (max R-hat 1.011-1.012 at 3, 1-3 divergences at 2;
# bulk ESS 429-566, 32-36 s); at 0.95, 1 of 12 (R-hat 1.016 once, no divergence in 12; bulk
# ESS 546-808, 33-46 s). Its two systems make funnels (a spread of two shifts) that the
# smaller steps follow. Centred fits (large, dense sweeps: the simulated demo, 58 s at 0.9,
# R-hat 1.0085, ESS 700) keep 0.9.
AUTO_TARGET_ACCEPT = {True: 0.9, False: 0.95}
# The minimum bulk and tail ESS per chain: "at least 100 (approximately) per Markov chain"
# (Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021; rstan's Rhat documentation), 400 for
# the default four chains.
MIN_ESS_PER_CHAIN = 100


class ConvergenceWarning(UserWarning):
    """R-hat, ESS or divergences say the posterior may not be trustworthy."""


def check_sampler_config(config: dict | None, defaults: dict = DEFAULT_SAMPLER) -> dict:
    """``defaults`` updated by ``config``; unknown keys, backends or adaptations are a
    ``ValueError`` that lists what is known."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(defaults) - set(EXTRA_KEYS))
    if unknown:
        raise ValueError(
            f"unknown sampler_config key(s): {', '.join(unknown)}; "
            f"known: {', '.join([*defaults, *EXTRA_KEYS])}"
        )
    out = {**defaults, **config}
    if out.get("nuts_sampler", "nutpie") not in SAMPLERS:
        raise ValueError(f"nuts_sampler must be one of {', '.join(SAMPLERS)}")
    if out.get("adaptation", "auto") not in ADAPTATIONS:
        raise ValueError(
            f"sampler_config adaptation must be one of {', '.join(ADAPTATIONS)} "
            f"(nutpie's mass-matrix adaptation), not {out['adaptation']!r}"
        )
    for key in ("draws", "tune", "chains"):
        value = out.get(key, 1)
        if (
            not isinstance(value, numbers.Integral)
            or isinstance(value, bool)
            or value < (key != "tune")
        ):
            raise ValueError(f"sampler_config {key} must be a positive whole number")
    accept = out.get("target_accept", 0.9)
    if accept != "auto" and (
        isinstance(accept, bool) or not isinstance(accept, numbers.Real) or not 0 < accept < 1
    ):
        raise ValueError(
            f"sampler_config target_accept must lie in (0, 1) or be 'auto', not {accept!r}"
        )
    return out


def target_accept(value, centred: bool) -> float:
    """NUTS's target acceptance: ``value``, or for ``"auto"`` the one measured for the
    residuals' form (:data:`AUTO_TARGET_ACCEPT`)."""
    return AUTO_TARGET_ACCEPT[bool(centred)] if value == "auto" else float(value)


def _missing_backend(backend: str, err: ImportError) -> ImportError:
    package, extra = BACKEND_PACKAGES[backend]
    hint = f"pip install 'bayes_sd[{extra}]'" if extra else f"pip install {package}"
    return ImportError(f"the {backend} sampler needs the {package} package ({err}): {hint}")


def sample(model, config: dict, *, random_seed=None, adaptation: str | None = None):
    """NUTS on ``model`` with ``config`` (see :data:`DEFAULT_SAMPLER`); ``adaptation`` is
    nutpie's mass matrix (``None``: nutpie's own default). Returns the ``DataTree``.

    PyMC's and numpyro's NUTS start from the initial point without jitter: measured on the demo
    (2026-11-23), jittered starts left every PyMC chain divergent at tree depth 1 (step size
    collapsed) and 3 of 4 numpyro chains stuck; unjittered, PyMC's chains sampled without
    divergences. nutpie keeps its own (jittered) initialisation."""
    import pymc as pm

    backend = config.get("nuts_sampler", "nutpie")
    cores = config.get("cores") or os.cpu_count() or 1
    start = {
        "pymc": {"init": "adapt_diag"},
        "numpyro": {"nuts": {"jitter": False}},
        "nutpie": {"nuts": {"adaptation": adaptation}} if adaptation else {},
    }[backend]
    # nutpie compiles the deterministics into a second C callback evaluated at every draw
    # (5-6 s of numba compilation on the 18-run example, each new process); sampling the free
    # variables and computing the deterministics afterwards, vectorised over the draws with
    # PyTensor's cached kernels, takes 0.5 s (measured 2026-12-04).
    free = {"var_names": [v.name for v in model.free_RVs]} if backend == "nutpie" else {}
    with model:
        try:
            idata = pm.sample(
                draws=config["draws"],
                tune=config["tune"],
                chains=config["chains"],
                cores=min(cores, config["chains"]),
                # LatencyModel resolves "auto" by its residuals' form; other models: 0.9
                target_accept=target_accept(config["target_accept"], centred=True),
                nuts_sampler=backend,
                random_seed=random_seed,
                progressbar=config.get("progressbar", True),
                compute_convergence_checks=False,
                **free,
                **start,
            )
        except ImportError as err:  # an optional backend that is not installed
            raise _missing_backend(backend, err) from err
        if free and model.deterministics:
            pm.compute_deterministics(idata, model=model, extend_dataset=True, progressbar=False)
    return idata


def compile_nutpie(model):
    """The model compiled once for nutpie; refit it to new data with :func:`sample_compiled`."""
    import nutpie

    return nutpie.compile_pymc_model(model)


def sample_compiled(compiled, data: dict, *, draws: int, tune: int, chains: int, seed: int,
                    cores: int | None = None):  # fmt: skip
    """nutpie on a compiled model with its ``pm.Data`` replaced by ``data`` (no recompile)."""
    import nutpie

    cores = cores or os.cpu_count() or 1
    return nutpie.sample(
        compiled.with_data(**data),
        draws=draws,
        tune=tune,
        chains=chains,
        cores=min(cores, chains),
        seed=seed,
        progress_bar=False,
    )


def convergence_summary(idata, names) -> dict[str, Any]:
    """Max R-hat, min bulk/tail ESS over the named parameters (every element), divergences,
    and ``slowest``: the :data:`SLOWEST` elements of least bulk ESS with their R-hat and ESS
    (which part of the model to look at when a fit warns)."""
    import arviz as az

    post = idata["posterior"].dataset
    stats = idata["sample_stats"].dataset
    names = [n for n in names if n in post]
    rhat = az.rhat(post[names])
    bulk = az.ess(post[names], method="bulk")
    out = {
        "max_rhat": float(rhat.to_array().max()),
        "min_ess_bulk": float(bulk.to_array().min()),
        "min_ess_tail": float(az.ess(post[names], method="tail").to_array().min()),
        "divergences": int(stats["diverging"].sum()),
        "draws": int(post.sizes["chain"] * post.sizes["draw"]),
        "chains": int(post.sizes["chain"]),
        "slowest": _slowest(rhat, bulk),
    }
    if "n_steps" in stats:  # nutpie and PyMC: leapfrog steps of each draw's trajectory
        out["steps_per_draw"] = float(stats["n_steps"].mean())
    return out


# how many parameters (elements) the diagnostics name as the slowest to mix
SLOWEST = 3


def _slowest(rhat, bulk) -> str:
    """``name[label, ...] (R-hat r, bulk ESS e)`` of the :data:`SLOWEST` elements of least bulk
    ESS — the last place going to the element of highest R-hat where it is not among them —
    joined by ``; `` (labels are the elements' coordinate values)."""
    found = []
    for name, ess in bulk.data_vars.items():
        values = ess.values.ravel()
        r = rhat[name].values.ravel()
        if ess.ndim:
            coords = [ess[d].values for d in ess.dims]
            labels = [", ".join(str(c[i]) for c, i in zip(coords, at, strict=True))
                      for at in np.ndindex(ess.shape)]  # fmt: skip
        else:
            labels = [""]
        for label, e, rh in zip(labels, values, r, strict=True):
            if np.isfinite(e):
                found.append((float(e), float(rh), f"{name}[{label}]" if label else name))
    found.sort()
    worst = max(found, key=lambda f: f[1], default=None)
    shown = found[:SLOWEST]
    if worst is not None and worst not in shown:
        shown[-1] = worst
    return "; ".join(f"{n} (R-hat {rh:.3f}, bulk ESS {e:.0f})" for e, rh, n in shown)


# mean leapfrog steps per draw from which a warning advises the low-rank mass matrix (tree
# depth 9 and more; the default's 10^4-run fleet fit: 1,018, the low-rank one's: 63)
LONG_TRAJECTORY = 512


def warn_if_unreliable(diag: dict[str, Any], stacklevel: int = 3, advice: str = "") -> list[str]:
    """Warn (:class:`ConvergenceWarning`) with advice when R-hat > 1.01, bulk or tail ESS
    below :data:`MIN_ESS_PER_CHAIN` per chain (400 for four chains) or any divergence;
    returns the problems found. ``advice`` is appended to the message, after the low-rank
    mass matrix's where trajectories ran near the tree-depth limit (:data:`LONG_TRAJECTORY`)."""
    problems = []
    least = MIN_ESS_PER_CHAIN * diag.get("chains", 4)
    if diag["max_rhat"] > 1.01:
        problems.append(f"max R-hat {diag['max_rhat']:.3f} > 1.01 (chains disagree)")
    for kind in ("bulk", "tail"):
        ess = diag.get(f"min_ess_{kind}")
        if ess is not None and ess < least:
            problems.append(f"min {kind} ESS {ess:.0f} < {least} ({MIN_ESS_PER_CHAIN} per chain)")
    if diag["divergences"]:
        problems.append(f"{diag['divergences']} divergent transitions")
    higher = 0.98 if diag.get("target_accept", 0.9) >= 0.95 else 0.95
    if diag.get("steps_per_draw", 0) >= LONG_TRAJECTORY:  # near the tree-depth limit (1,023)
        advice = (
            f"Trajectories of {diag['steps_per_draw']:.0f} leapfrog steps per draw (the limit is "
            "1,023): with many configurations pinned by their data, nutpie's low-rank mass "
            "matrix (sampler_config adaptation='low_rank', bayes-sd fit --adaptation low_rank) "
            "took a simulated 10^4-run fleet sweep from the limit to 63 steps (docs/fleet.md)."
            + (f" {advice}" if advice else "")
        )
    if problems:
        slowest = f" Slowest to mix: {diag['slowest']}." if diag.get("slowest") else ""
        warnings.warn(
            "posterior may not be reliable: "
            + "; ".join(problems)
            + "."
            + slowest
            + " Try more tuning "
            "and draws (sampler_config draws/tune; bayes-sd fit --draws/--tune), "
            f"target_accept={higher} (--target-accept {higher}), or check that saturated runs are "
            "flagged." + (f" {advice}" if advice else ""),
            ConvergenceWarning,
            stacklevel=stacklevel,
        )
    return problems
