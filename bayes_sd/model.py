"""The hierarchical Bayesian latency model (docs/model.md): fit, diagnose, predict, save.

A *system* is one target served on one GPU type and count with one workload (source, dataset,
prompt and output lengths); its prefill and verification coefficients (``c1p c2p c1v c2v``) are
shared by its baseline (k = 0) and SD runs. A *draft system* is a system with one drafter; it
adds the drafting coefficients (``c1d c2d``). Both are drawn from population laws:

    log c = intercept + size_slope · log(params/1e9) + gpu_effect + length_slope · length
            + config_sd · z

with ``params`` of the model doing the work (active parameters for MoE targets), ``length``
``log(P/1024)`` for prefill and ``log((P + D/2)/1024)`` for ``c2v``. MoE targets add
``φ(T) · c_u · ρ`` to their ``p`` and ``v`` coefficients, with
``ρ = e^moe_excess ((N/N_active)^size_slope − 1)`` and the coverage ``φ`` at the measured batch
(``B = λ L`` open loop, ``N`` closed loop).
The likelihood is Student-t on log mean latency with a noise scale per source; saturated runs
are left out and counted.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from bayes_sd import _kernels, latency
from bayes_sd._version import __version__
from bayes_sd.errors import DataError
from bayes_sd.priors import (
    COEFS,
    LENGTH_COEFS,
    REF_DRAFTER_PARAMS,
    REF_TARGET_PARAMS,
    SLOPE_COEFS,
    resolve_priors,
)
from bayes_sd.registry import fill_sizes
from bayes_sd.schema import acceptance_of, validate_sweep

__all__ = ["ConvergenceWarning", "LatencyModel"]

NPV = 6  # c1p c2p c1v c2v c1s c2s: the target's; then c1d c2d: the drafter's
PV, DC = COEFS[:NPV], COEFS[NPV:]
# columns besides the series label that fix a prediction row's coefficients
CONFIG_SIZE_COLUMNS = (
    "target_params",
    "target_active_params",
    "target_experts",
    "target_experts_per_token",
    "drafter_params",
)
SYSTEM_KEYS = ("source", "dataset", "gpu", "num_gpus", "target", "prefill_len", "decode_len")
NGRAM_PARAMS = 1e6  # drafting by lookup: a "model" of negligible size
# Sizes are measured from references near the middle of typical targets and drafters, so that
# intercepts and size slopes are nearly uncorrelated in the posterior.
# The multi-token verification premium (c1s, c2s) is a pass of the target: it scales with the
# target's size as verification does (own slopes left the premium and drafting trading modes).
COEF_SLOPE = np.array([0, 1, 2, 3, 2, 3, 4, 5])  # size slope of each of COEFS
DEFAULT_SAMPLER = {
    "draws": 1000,
    "tune": 1000,
    "chains": 4,
    "target_accept": 0.9,
    "nuts_sampler": "nutpie",
    "adaptation": "auto",
    "progressbar": True,
}
SAMPLERS = ("nutpie", "pymc", "numpyro")
# nutpie's mass-matrix adaptation; the key applies to nutpie only (PyMC's and numpyro's NUTS
# always adapt from draw variances). "auto" (the default) follows the residuals' form, by
# measurement (docs/model.md, Benchmark): hierarchically centred (large, dense sweeps) get
# "draw_diag" (draw variances, as Stan and PyMC): on the demo, 4 x 1,000 draws, R-hat 1.0085 and
# min bulk ESS 700 in 58 s of sampling against 1.0145 and 223 in 27 s for nutpie's own "diag"
# (draw and gradient variances), 1.7x the ESS per second. Non-centred (sparse or small sweeps)
# get "diag": on the demo's sparse split, 4 x 500 draws, "draw_diag" left R-hat 2.11 and ESS 5
# where "diag" reached 1.017 and 167 (1.54 / 7 against 1.027 / 166 before the shared GPU
# spread); SBC and the recovery tests were measured with "diag".
ADAPTATIONS = ("auto", "draw_diag", "diag", "low_rank")
# "auto" centring: hierarchically centred residuals for sweeps of many configurations each
# measured at several rates; non-centred otherwise. Measured: the demo (48 systems, 7.6 runs
# per series) mixes far better centred (min bulk ESS 124 vs 7 at 2 x 300 draws); centred, the
# CI recovery sweep (4 systems) gets 15 divergences (target_accept 0.95; non-centred 0), the
# demo's sparse split (48 systems, 2.7 runs per series) R-hat 1.54 at 4 x 500 draws, and
# SBC's sparse 12-system design mixed 10x better non-centred.
AUTO_CENTRED_SYSTEMS = 20
AUTO_CENTRED_RUNS_PER_SERIES = 5
# Within one configuration the data pin C1 and C2 of each (k, acceptance) series, not the six to
# eight coefficients apart: residuals per coefficient left ridges (every draw at tree depth 10 on
# the demo). So residuals are one log-scale shift per level: on the target's coefficients per
# system, on the drafter's per draft system (docs/model.md).
RESIDUALS = ("system", "draft", "series")
DEFAULT_RESIDUALS = ("system", "draft", "series")
PV_LEVEL = np.array([0, 1, 0, 1, 0, 1])  # level of c1p c2p c1v c2v c1s c2s (0 = "1", 1 = "2")


def _step_design(steps: pd.DataFrame, design: Design) -> pd.DataFrame:
    """Median step time per (model, GPU, phase, batch, ctx, tokens) of the sweep's dense
    targets on its (single-GPU) GPU types: decode passes of one token per sequence and
    one-sequence prefills."""
    from bayes_sd.registry import normalize_model_name

    need = {"gpu", "model", "phase", "batch", "q", "ctx", "time_ms", "params_active", "experts"}
    missing = sorted(need - set(steps.columns))
    if missing:
        raise DataError(
            f"the step table lacks column(s) {', '.join(missing)} (read it with "
            "bayes_sd.io.read_step_costs)",
            field=missing[0],
        )
    st = steps.copy()
    if "tokens" not in st:
        st["tokens"] = st["batch"] * st["q"]
    targets = {normalize_model_name(t) for t in design.rows["target"]}
    st["norm"] = [normalize_model_name(str(m)) for m in st["model"]]
    keep = (
        st["norm"].isin(targets)
        & st["gpu"].isin(design.gpus)
        & (st["experts"].astype(float) <= 1)
        & (
            ((st["phase"] == "decode") & (st["q"] == 1))
            | ((st["phase"] == "prefill") & (st["batch"] == 1))
        )
    )
    st = st[keep]
    if st.empty:
        raise DataError(
            "the step table has no timings of the sweep's dense targets on its GPUs "
            f"(targets: {', '.join(sorted(targets))}; GPUs: {', '.join(design.gpus)})",
            field="model",
        )
    keys = ["model", "gpu", "phase", "batch", "ctx", "tokens", "params_active"]
    out = st.groupby(keys, as_index=False)["time_ms"].median()
    out["time_s"] = out["time_ms"].astype(float) / 1e3
    return out


# The noise scale grows with the queueing share of latency, capped at utilisation 0.99 so
# far-off starting points of the sampler stay finite (likelihood and predict(noise=True)).
QUEUE_SHARE_CAP = 100.0


# the population-level parameters: diagnosed after fitting, tabulated in reports
POPULATION_PARAMS = (
    "intercept",
    "size_slope",
    "length_slope",
    "gpu_sd",
    "system_sd",
    "draft_sd",
    "series_sd",
    "moe_excess",
    "acceptance",
    "sigma",
    "load_noise",
    "nu",
    "step_overhead",
    "step_sigma",
)


class ConvergenceWarning(UserWarning):
    """R-hat, ESS or divergences say the posterior may not be trustworthy."""


def convergence_summary(idata, names) -> dict[str, Any]:
    """Max R-hat, min bulk/tail ESS over the named parameters (every element), divergences."""
    import arviz as az

    post = idata["posterior"].dataset
    names = [n for n in names if n in post]
    return {
        "max_rhat": float(az.rhat(post[names]).to_array().max()),
        "min_ess_bulk": float(az.ess(post[names], method="bulk").to_array().min()),
        "min_ess_tail": float(az.ess(post[names], method="tail").to_array().min()),
        "divergences": int(idata["sample_stats"].dataset["diverging"].sum()),
        "draws": int(post.sizes["chain"] * post.sizes["draw"]),
    }


def warn_if_unreliable(diag: dict[str, Any], stacklevel: int = 3, advice: str = "") -> list[str]:
    """Warn (:class:`ConvergenceWarning`) with advice when R-hat > 1.01, bulk ESS < 400 or any
    divergence; returns the problems found. ``advice`` is appended to the message."""
    problems = []
    if diag["max_rhat"] > 1.01:
        problems.append(f"max R-hat {diag['max_rhat']:.3f} > 1.01 (chains disagree)")
    if diag["min_ess_bulk"] < 400:
        problems.append(f"min bulk ESS {diag['min_ess_bulk']:.0f} < 400")
    if diag["divergences"]:
        problems.append(f"{diag['divergences']} divergent transitions")
    if problems:
        warnings.warn(
            "posterior may not be reliable: " + "; ".join(problems) + ". Try more tuning "
            "and draws (sampler_config draws/tune), target_accept=0.95, or check that "
            "saturated runs are flagged." + (f" {advice}" if advice else ""),
            ConvergenceWarning,
            stacklevel=stacklevel,
        )
    return problems


def _gpu_key(gpu: str, num_gpus: float) -> str:
    n = int(num_gpus)
    return gpu if n == 1 else f"{n}x{gpu}"


def _label(values: tuple) -> str:
    return "|".join(
        "" if pd.isna(v) else (f"{v:g}" if isinstance(v, float) else str(v)) for v in values
    )


def _label_systems(rows: pd.DataFrame) -> None:
    """Add ``gpu_key``, ``system`` and ``draft_system`` (drafter, or method for n-gram) labels,
    ``series`` and ``base_series``. Labels are built once per distinct configuration (a
    prediction table of 10^5 rates of a few configurations costs a few label builds)."""
    cols = [*SYSTEM_KEYS, "drafter", "method", "k", "alpha"]
    group = rows.groupby(cols, dropna=False, sort=False).ngroup().to_numpy()
    _, first = np.unique(group, return_index=True)
    uniq = rows.iloc[first][cols].copy()
    uniq["gpu_key"] = [_gpu_key(g, n) for g, n in zip(uniq["gpu"], uniq["num_gpus"], strict=True)]
    uniq["system"] = [_label(t) for t in uniq[list(SYSTEM_KEYS)].itertuples(index=False)]
    uniq["draft_system"] = [
        s + "|" + (str(d) if isinstance(d, str) else str(m)) if k > 0 else ""
        for s, d, m, k in zip(
            uniq["system"], uniq["drafter"], uniq["method"], uniq["k"], strict=True
        )
    ]
    # a series: one draft system at one draft length (and α when the sweep gives it)
    uniq["base_series"] = uniq["system"] + "|k0"
    uniq["series"] = [
        f"{d}|k{k:g}" + ("" if pd.isna(a) else f"|a{a:g}") if k > 0 else b
        for d, k, a, b in zip(
            uniq["draft_system"], uniq["k"], uniq["alpha"], uniq["base_series"], strict=True
        )
    ]
    for col in ("gpu_key", "system", "draft_system", "base_series", "series"):
        # object dtype: converting 10^5 labels to Arrow strings took 0.13 s of a predict
        labels = uniq[col].to_numpy(dtype=object)[group]
        rows[col] = pd.Series(labels, index=rows.index, dtype=object)


@dataclass
class Design:
    """Numeric arrays for the model, derived from a sweep (rows = unsaturated runs)."""

    sweep: pd.DataFrame  # the validated input, saturated runs included
    rows: pd.DataFrame
    systems: list[str]
    draft_systems: list[str]
    gpus: list[str]
    sources: list[str]
    series: list[str]
    sys_table: pd.DataFrame
    draft_table: pd.DataFrame
    n_saturated: int

    @classmethod
    def from_sweep(cls, sweep: pd.DataFrame) -> Design:
        sweep = validate_sweep(sweep)
        sat = sweep["saturated"].astype(bool).to_numpy()
        rows = sweep[~sat & (sweep["load_mode"] != "burst")].reset_index(drop=True).copy()
        if rows.empty:
            raise DataError("no unsaturated open- or closed-loop runs to fit")
        rows["dataset"] = rows["dataset"].fillna("")
        _label_systems(rows)
        systems = sorted(rows["system"].unique())
        draft_systems = sorted(d for d in rows["draft_system"].unique() if d)
        sys_table = rows.groupby("system").first().loc[systems]
        draft_table = (
            rows[rows["draft_system"] != ""].groupby("draft_system").first().reindex(draft_systems)
        )
        return cls(
            sweep,
            rows,
            systems,
            draft_systems,
            sorted(rows["gpu_key"].unique()),
            sorted(rows["source"].unique()),
            sorted(rows["series"].unique()),
            sys_table,
            draft_table,
            int(sat.sum()),
        )


def _system_covariates(table: pd.DataFrame) -> dict[str, np.ndarray]:
    active = table["target_active_params"].to_numpy(dtype=float)
    total = table["target_params"].to_numpy(dtype=float)
    p = table["prefill_len"].to_numpy(dtype=float)
    d = table["decode_len"].to_numpy(dtype=float)
    lengths = np.column_stack([np.log(p / 1024), np.log(p / 1024), np.log((p + d / 2) / 1024)])
    return {
        "log_size": np.log(active / REF_TARGET_PARAMS),
        "log_total_over_active": np.log(total / active),
        "lengths": lengths,
        "experts": table["target_experts"].to_numpy(dtype=float),
        "experts_per_token": table["target_experts_per_token"].to_numpy(dtype=float),
    }


def _drafter_log_size(table: pd.DataFrame) -> np.ndarray:
    params = table["drafter_params"].astype(float).to_numpy()
    return np.log(np.where(np.isnan(params), NGRAM_PARAMS, params) / REF_DRAFTER_PARAMS)


def _system_anchor(law_pv, rows: pd.DataFrame, sys_idx: np.ndarray):
    """(system, level) log demand of each system's target at a representative run (its first
    baseline run, else its first run, tokens per cycle 1 + 0.7 k where not measured):
    ``log(c1p + cycles (c1v + c1s))`` and the same for level 2, from the population laws. What
    the system's runs pin is this sum, not its parts; centred on it, a system's levels no
    longer move with the split the laws give it."""
    order = np.lexsort((np.arange(len(rows)), rows["k"].to_numpy() > 0, sys_idx))
    _, first = np.unique(sys_idx[order], return_index=True)
    rep = order[first]  # per system, in system order
    k = rows["k"].to_numpy(dtype=float)[rep]
    e = acceptance_of(rows)[rep]
    e = np.where(np.isnan(e), 1.0 + 0.7 * k, e)
    c = pt.exp(law_pv)
    target = latency.Coefficients(**{n: c[:, PV.index(n)] for n in PV}, c1d=0.0, c2d=0.0)
    level1, level2 = latency.demand(target, k, e, rows["decode_len"].to_numpy(dtype=float)[rep])
    return pt.log(pt.stack([level1, level2], axis=1))


def _config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(config, sort_keys=True, default=_json_default).encode()
    ).hexdigest()[:16]


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class LatencyModel:
    """Hierarchical Bayesian model of mean request latency under load, with and without SD.

    Parameters
    ----------
    model_config
        ``{"priors": {name: Prior}}`` overrides (see :mod:`bayes_sd.priors`),
        ``"coverage": False`` to drop the MoE coverage term, ``"residuals"`` (a subset of
        ``("system", "draft", "series")``) and ``"centred"``: ``True`` (hierarchical centring),
        ``False`` (non-centred) or ``"auto"`` (the default: centred for sweeps of at least
        ``AUTO_CENTRED_SYSTEMS`` systems and ``AUTO_CENTRED_RUNS_PER_SERIES`` runs per series)
        residual shifts (for sparse or noisy sweeps; see the Validation page).
    sampler_config
        ``draws``, ``tune``, ``chains``, ``target_accept``, ``nuts_sampler`` (``"nutpie"``
        — the default, fastest by measurement —, ``"pymc"`` or ``"numpyro"``),
        ``adaptation`` (nutpie's mass matrix: ``"auto"``, the default — ``"draw_diag"`` for
        hierarchically centred residuals, ``"diag"`` for non-centred, as measured —,
        ``"draw_diag"``, ``"diag"`` or ``"low_rank"``; PyMC's and numpyro's NUTS always adapt
        from draw variances), ``progressbar``.

    Examples
    --------
    >>> import bayes_sd
    >>> model = bayes_sd.LatencyModel(sampler_config={"draws": 500})
    >>> idata = model.fit(bayes_sd.load_example("demo"), random_seed=1)  # doctest: +SKIP
    >>> model.predict(new_runs).summary                                 # doctest: +SKIP
    """

    def __init__(self, model_config: dict | None = None, sampler_config: dict | None = None):
        model_config = dict(model_config or {})
        unknown = set(model_config) - {"priors", "coverage", "residuals", "centred"}
        if unknown:
            raise ValueError(
                f"unknown model_config key(s): {', '.join(sorted(unknown))}; "
                "known: priors, coverage, residuals, centred"
            )
        self.priors = resolve_priors(model_config.get("priors"))
        self.coverage = bool(model_config.get("coverage", True))
        # hierarchically centred residuals suit sweeps of many configurations, each pinned by
        # its runs; non-centred ones few configurations or sparse, noisy data. "auto" (the
        # default) chooses by systems and runs per series when the model is built (docs/model.md)
        centred = model_config.get("centred", "auto")
        if centred not in (True, False, "auto"):
            raise ValueError(f"model_config centred must be True, False or 'auto', not {centred!r}")
        self.centring = centred
        self.centred = centred is True
        # coefficients that get per-configuration residuals (the others follow the population)
        self.residuals = tuple(model_config.get("residuals", DEFAULT_RESIDUALS))
        bad = sorted(set(self.residuals) - set(RESIDUALS))
        if bad:
            raise ValueError(
                f"unknown residual(s): {', '.join(bad)}; known: {', '.join(RESIDUALS)}"
            )
        sampler_config = dict(sampler_config or {})
        unknown = set(sampler_config) - set(DEFAULT_SAMPLER) - {"cores"}
        if unknown:
            raise ValueError(
                f"unknown sampler_config key(s): {', '.join(sorted(unknown))}; "
                f"known: {', '.join(DEFAULT_SAMPLER)}, cores"
            )
        self.sampler_config = {**DEFAULT_SAMPLER, **sampler_config}
        if self.sampler_config["nuts_sampler"] not in SAMPLERS:
            raise ValueError(f"nuts_sampler must be one of {', '.join(SAMPLERS)}")
        if self.sampler_config["adaptation"] not in ADAPTATIONS:
            raise ValueError(
                f"sampler_config adaptation must be one of {', '.join(ADAPTATIONS)} "
                f"(nutpie's mass-matrix adaptation), not {self.sampler_config['adaptation']!r}"
            )
        self.model: pm.Model | None = None
        self.design: Design | None = None
        self.idata = None
        self.steps: pd.DataFrame | None = None
        self.diagnostics: dict[str, Any] | None = None

    # ------------------------------------------------------------------ configuration

    @property
    def model_config(self) -> dict[str, Any]:
        config = {
            "priors": {k: v.to_dict() for k, v in sorted(self.priors.items())},
            "coverage": self.coverage,
            "residuals": list(self.residuals),
        }
        if self.centring != "auto":  # absent when default: older files' hashes are kept
            config["centred"] = self.centring
        return config

    @property
    def config_hash(self) -> str:
        return _config_hash(self.model_config)

    def _shifts(self, group: str, size: int, anchor):
        """Log-scale shifts (size, level) of a residual group, zeros when the group is off.

        Systems shift both levels of the target's coefficients, draft systems level 1 of the
        drafter's (``c1d``), series level 2 (``C2``). Drafting's level 2 (``c2d``, per request
        in flight) has no shift of its own: the series shifts of a draft system's draft lengths
        carry it, and a second, overlapping spread left the split of level-2 variation between
        drafter and series unidentified (``draft_sd[2]`` at bulk ESS 7 of 600 draws on the
        demo; without it the worst population parameter reached 57). Likewise a level-1
        series shift fitted to 0.00 on the demo and made a funnel.

        Centred (chosen by ``"auto"`` for large, densely measured sweeps) is *hierarchical
        centring* (Gelfand, Sahu & Carlin 1995): the free variable is the configuration's own
        log level, ``level_<group> ~ Normal(anchor, sd)``, and the shift is ``level −
        anchor`` — the same model as ``shift ~ Normal(0, sd)`` (a translation, unit
        Jacobian), but the likelihood sees the level directly. A
        configuration measured at several rates to a few percent pins its level, and the
        population intercepts no longer trade off against every shift at once: with free
        shifts, "intercept of c1v up, all 48 system shifts down" was the posterior's largest
        eigen-direction on the demo (correlations -0.8). ``anchor`` is what the data pin,
        computed from the laws: the log demand of a system's target at a representative run
        (:func:`_system_anchor`), the drafting law (draft systems), the log C2 of a series'
        most loaded run (series). ``moe_excess`` is centred likewise (:meth:`_moe_excess`).
        Non-centred: ``shift = sd · z``, ``z ~ Normal(0, 1)``, for sparse or noisy sweeps
        (calibration)."""
        if group not in self.residuals:
            return pt.zeros((size, 2))
        sd = self.priors[f"{group}_sd"].create_variable(f"{group}_sd")
        dims = {"system": ("system", "level"), "draft": ("draft_system",)}.get(group, ("series",))
        if self.centred:
            level = pm.Normal(f"level_{group}", anchor, sd, dims=dims)
            shift = pm.Deterministic(f"shift_{group}", level - anchor, dims=dims)
        else:
            z = pm.Normal(f"shift_{group}_z", 0.0, 1.0, dims=dims)
            shift = pm.Deterministic(f"shift_{group}", z * sd, dims=dims)
        if group == "system":
            return shift
        zeros = pt.zeros(size)
        return pt.stack([shift, zeros] if group == "draft" else [zeros, shift], axis=1)

    # ------------------------------------------------------------------ model

    def build_model(self, sweep: pd.DataFrame, steps: pd.DataFrame | None = None) -> pm.Model:
        """Build (not sample) the PyMC model for ``sweep``; saturated runs are left out.

        ``steps``: an optional forward-pass timing table (:func:`bayes_sd.io.read_step_costs`)
        for a joint step-level likelihood (see :meth:`fit`)."""
        design = Design.from_sweep(sweep)
        self.design = design
        if self.centring == "auto":
            runs_per_series = len(design.rows) / max(len(design.series), 1)
            self.centred = (
                len(design.systems) >= AUTO_CENTRED_SYSTEMS
                and runs_per_series >= AUTO_CENTRED_RUNS_PER_SERIES
            )
        step_rows = None if steps is None else _step_design(steps, design)
        self.steps = steps
        rows, st, dt = design.rows, design.sys_table, design.draft_table
        coords = {
            "coef": list(COEFS),
            "coef_pv": list(PV),
            "coef_d": list(DC),
            "length_coef": list(LENGTH_COEFS),
            "slope_coef": list(SLOPE_COEFS),
            "level": ["1", "2"],
            "gpu": design.gpus,
            "system": design.systems,
            "draft_system": design.draft_systems or ["none"],
            "series": design.series,
            "source": design.sources,
            "run": rows["run_id"].astype(str).tolist(),
        }
        sys_idx = pd.Index(design.systems).get_indexer(rows["system"])
        dsys = pd.Index(coords["draft_system"]).get_indexer(rows["draft_system"])
        dsys = np.where(dsys < 0, 0, dsys)
        cov = _system_covariates(st)
        sys_gpu = pd.Index(design.gpus).get_indexer(st["gpu_key"])
        k = rows["k"].to_numpy(dtype=float)
        known_e = acceptance_of(rows)
        latent_e = np.isnan(known_e)
        is_open = (rows["load_mode"] == "rate").to_numpy()
        rate = np.where(is_open, rows["request_rate"].astype(float).fillna(0.0), 0.0)
        conc = np.where(is_open, 0.0, rows["concurrency"].astype(float).fillna(1.0))
        log_lat = np.log(rows["latency_mean_s"].to_numpy(dtype=float))
        batch = np.where(is_open, rate * np.exp(log_lat), conc)  # measured B for coverage
        src = pd.Index(design.sources).get_indexer(rows["source"])

        with pm.Model(coords=coords) as model:
            # data
            k_d = pm.Data("k", k, dims="run")
            e_known = pm.Data("acceptance_known", np.nan_to_num(known_e, nan=1.0), dims="run")
            d_len = pm.Data("decode_len", rows["decode_len"].to_numpy(dtype=float), dims="run")
            rate_d = pm.Data("rate", rate, dims="run")
            conc_d = pm.Data("concurrency", conc, dims="run")
            open_d = pm.Data("open_loop", is_open.astype(float), dims="run")
            # observed as data, so a compiled model can be refitted to new measurements of the
            # same design (nutpie's with_data; used by simulation-based calibration)
            log_lat_d = pm.Data("log_latency_obs", log_lat, dims="run")
            # population
            intercept = self.priors["intercept"].create_variable("intercept")
            size_slope = self.priors["size_slope"].create_variable("size_slope")[COEF_SLOPE]
            length_slope = self.priors["length_slope"].create_variable("length_slope")
            # GPU effects sum to zero over the fitted GPUs (no ridge against the intercept).
            # One spread for all coefficients by default (a prior with dims "coef" gives one
            # per coefficient): with few GPUs, one contrast per coefficient cannot inform a
            # spread of its own, and per-coefficient spreads left a banana (small gpu_sd, large
            # z) that made the demo's divergences and doubled its trajectories (docs/model.md)
            gpu_sd = self.priors["gpu_sd"].create_variable("gpu_sd")
            sd_col = gpu_sd[:, None] if gpu_sd.ndim else gpu_sd
            if len(design.gpus) > 1 and self.centred:  # the data pin the effects: centred
                level_gpu = pm.ZeroSumNormal("level_gpu", sigma=sd_col, dims=("coef", "gpu"))
                gpu_effect = pm.Deterministic("gpu_effect", level_gpu.T, dims=("gpu", "coef"))
            elif len(design.gpus) > 1:  # non-centred, with the residuals (sparse, small sweeps)
                gpu_z = pm.ZeroSumNormal("gpu_z", sigma=1.0, dims=("coef", "gpu"))
                gpu_effect = pm.Deterministic(
                    "gpu_effect", (sd_col * gpu_z).T, dims=("gpu", "coef")
                )
            else:
                gpu_effect = pm.Deterministic(
                    "gpu_effect", pt.zeros((1, len(COEFS))), dims=("gpu", "coef")
                )
            # system coefficients (p, v): the population laws ...
            length_term = pt.concatenate(
                [
                    length_slope[None, :2] * cov["lengths"][:, :2],
                    pt.zeros((len(st), 1)),
                    length_slope[None, 2:] * cov["lengths"][:, 2:],
                    pt.zeros((len(st), 2)),
                ],
                axis=1,
            )
            law_pv = (
                intercept[None, :NPV]
                + size_slope[None, :NPV] * cov["log_size"][:, None]
                + gpu_effect[sys_gpu, :NPV]
                + length_term
            )
            # ... and the draft-system coefficients' (d)
            if design.draft_systems:
                d_gpu = pd.Index(design.gpus).get_indexer(dt["gpu_key"])
                d_size = _drafter_log_size(dt)
            else:
                d_gpu, d_size = np.zeros(1, dtype=int), np.zeros(1)
            law_d = (
                intercept[None, NPV:]
                + size_slope[None, NPV:] * d_size[:, None]
                + gpu_effect[d_gpu, NPV:]
            )
            # configuration residuals: one log-scale shift per level (load-independent "1",
            # per request in flight "2") on the target's coefficients of each system and on the
            # drafter's of each draft system — what the data of one configuration identify.
            # Centred on the system's target demand and on the drafting law (hierarchical
            # centring, see _shifts and _system_anchor)
            sys_shift = self._shifts("system", len(st), _system_anchor(law_pv, rows, sys_idx))
            draft_shift = self._shifts("draft", max(len(dt), 1), law_d[:, 0])
            log_pv = law_pv + sys_shift[:, PV_LEVEL]
            c_pv = pm.Deterministic("c_system", pt.exp(log_pv), dims=("system", "coef_pv"))
            log_d = law_d + draft_shift
            c_d = pm.Deterministic("c_draft", pt.exp(log_d), dims=("draft_system", "coef_d"))
            # MoE coverage increments (φ · c_u · ρ on the p and v coefficients of MoE targets)
            moe_rows = self.coverage and np.any(cov["experts"] > 1)
            if moe_rows:
                moe_excess = self._moe_excess(size_slope[:NPV], cov)
                ratio = pt.exp(moe_excess[None, :]) * (
                    pt.exp(size_slope[None, :NPV] * cov["log_total_over_active"][:, None]) - 1.0
                )
                inc = c_pv * ratio  # (system, coef_pv); zero for dense systems

                # coverage φ(T) of the runs' measured loads: data (the prompt and the batch are
                # measured, B = λ L open loop, N closed), computed once, not per gradient
                def coverage(tokens, idx):
                    return latency.expert_coverage(
                        tokens, cov["experts"][idx], cov["experts_per_token"][idx]
                    )

            # acceptance: measured, from alpha, or latent per draft system
            if latent_e.any():
                accept = self.priors["acceptance"].create_variable("acceptance")
                e_run = pt.switch(latent_e, 1.0 + k_d * accept[dsys], e_known)
            else:
                e_run = e_known
            cycles = d_len / e_run
            if moe_rows:  # coverage of verification at the run's measured batch
                tokens = np.maximum(batch, 1.0) * (k + 1.0)
                phi_v = pm.Data("coverage_v", coverage(tokens, sys_idx), dims="run")

            # demand (docs/model.md §2) per series, then per run: C1 = A1 + cycles (B1 + φ_v G1),
            # C2 = A2 + cycles (B2 + φ_v G2), cycles = D / e. Everything but cycles and the
            # coverage φ_v at the run's measured batch is shared by a series' runs, so the
            # runs gather one (series, 4–6) table: per-run gathers of the coefficients (and
            # their gradients, scatter-adds) were half of the gradient's time
            def level(a, b, g, cyc, phi):  # A + cycles (B + φ G); no G without MoE targets
                return a + cyc * (b if g is None else b + phi * g)

            ser = pd.Index(design.series).get_indexer(rows["series"])
            _, ser_first = np.unique(ser, return_index=True)  # a run of each series
            ser_sys, ser_dsys = sys_idx[ser_first], dsys[ser_first]
            c_s = c_pv[ser_sys]  # (series, coef_pv)
            cd_s = c_d[ser_dsys]
            k_s = k_d[ser_first]
            sd_s = pt.switch(k_s > 0, 1.0, 0.0)  # the verification premium needs drafts
            col = {c: c_s[:, PV.index(c)] for c in PV} | {c: cd_s[:, DC.index(c)] for c in DC}
            terms = [  # A1, B1, A2, B2 before the series shift
                col["c1p"],
                col["c1v"] + sd_s * col["c1s"] + k_s * col["c1d"],
                col["c2p"],
                col["c2v"] + sd_s * col["c2s"] + k_s * col["c2d"],
            ]
            if moe_rows:  # MoE coverage: φ · c_u · ρ on p and v coefficients; G1, G2
                inc = inc[ser_sys]  # (series, coef_pv)
                prefill = rows["prefill_len"].to_numpy(dtype=float)[ser_first]
                phi_p = pm.Data("coverage_p", coverage(prefill, ser_sys), dims="series")
                terms[0] = terms[0] + phi_p * inc[:, PV.index("c1p")]
                terms[2] = terms[2] + phi_p * inc[:, PV.index("c2p")]
                terms += [
                    inc[:, PV.index("c1v")] + sd_s * inc[:, PV.index("c1s")],
                    inc[:, PV.index("c2v")] + sd_s * inc[:, PV.index("c2s")],
                ]
            # series residuals: a log-scale shift of C2 per series, centred on the log C2 of
            # the series' most loaded run (the run that pins it). Centred on the system's log
            # c2v instead, the population's split of C2 into c2p, c2v, c2d moved every series
            # level at once: 654 leapfrog steps per draw on the demo, 40 now
            order = np.lexsort((batch, ser))
            rep = order[np.r_[np.flatnonzero(np.diff(ser[order])), len(ser) - 1]]
            g2, phi_rep = (terms[5], phi_v[rep]) if moe_rows else (None, None)
            anchor = pt.log(level(terms[2], terms[3], g2, cycles[rep], phi_rep))
            ser_shift = self._shifts("series", len(design.series), anchor)
            scale2 = pt.exp(ser_shift[:, 1])  # level 2 (level-1 series shifts are 0)
            for i in (2, 3, 5)[: 3 if moe_rows else 2]:
                terms[i] = scale2 * terms[i]
            run_terms = pt.stack(terms, axis=1)[ser]  # (run, 4 or 6)
            t = [run_terms[:, i] for i in range(len(terms))]
            g1, g2, phi_run = (t[4], t[5], phi_v) if moe_rows else (None, None, None)
            c1 = level(t[0], t[1], g1, cycles, phi_run)
            c2 = level(t[2], t[3], g2, cycles, phi_run)

            # noise: the mean latency of a finite run near saturation is much noisier than at
            # light load (queueing waits are long and correlated), so the scale grows with the
            # queueing share of latency, (λ C2)/(1 − λ C2) open loop and N C2 / C1 closed loop
            # (capped at QUEUE_SHARE_CAP). Only the load modes the sweep has enter the graph
            # (an expression nothing uses is not compiled; on the demo, open loop only, with
            # the coverage as data: 0.199 → 0.174 ms per gradient)
            def by_mode(open_value, closed_value):
                if is_open.all():
                    return open_value
                if not is_open.any():
                    return closed_value
                return pt.switch(open_d > 0.5, open_value, closed_value)

            open_lat = latency.open_loop_latency_smooth(c1, c2, rate_d)
            lat = by_mode(open_lat, latency.closed_loop_latency(c1, c2, conc_d))
            mu = pt.log(lat)
            pm.Deterministic("latency", lat, dims="run")
            queue_share = pt.minimum(
                by_mode(open_lat / c1 - 1.0, conc_d * c2 / c1), QUEUE_SHARE_CAP
            )
            sigma = self.priors["sigma"].create_variable("sigma")
            load_noise = self.priors["load_noise"].create_variable("load_noise")
            nu = self.priors["nu"].create_variable("nu")
            pm.StudentT(
                "log_latency",
                nu=nu,
                mu=mu,
                sigma=sigma[src] * (1.0 + load_noise * queue_share),
                observed=log_lat_d,
                dims="run",
            )
            if step_rows is not None:
                self._step_likelihood(step_rows, intercept, size_slope, length_slope, gpu_effect)
        self.model = model
        return model

    def _moe_excess(self, slope, cov):
        """``moe_excess``: hierarchically centred with the residuals (a Normal prior) on
        the log increment ``ρ`` of the MoE targets' mean log(N / N_active): the data pin ρ,
        and with ``moe_excess`` free, it traded off against the size slopes along a ridge
        (``size_slope[c1v]`` at bulk ESS 10 of 1,200 draws on the demo)."""
        prior = self.priors["moe_excess"]
        if not self.centred or prior.distribution != "Normal":
            return prior.create_variable("moe_excess")
        moe = cov["experts"] > 1
        grow = pt.expm1(slope * np.mean(cov["log_total_over_active"][moe]))
        anchor = 0.5 * pt.log(grow**2 + 1e-4)  # log |e^(s log r) − 1|, finite at s = 0
        level = pm.Normal(
            "moe_level",
            mu=prior.parameters["mu"] + anchor,
            sigma=prior.parameters["sigma"],
            dims=prior.dims,
        )
        return pm.Deterministic("moe_excess", level - anchor, dims=prior.dims)

    def _step_likelihood(self, sr, intercept, size_slope, length_slope, gpu_effect) -> None:
        """Forward-pass timings of the sweep's dense targets on its GPUs (docs/model.md, "Step
        level"): a decode pass over B sequences at context ctx costs ``c1v + B · c2v(ctx)`` and
        a one-sequence prefill of P tokens ``c1p(P)``, with the coefficients of the population
        laws (no configuration shifts) less a serving overhead per level (scheduling, sampling
        and the like are in the served latency, not in an isolated forward pass)."""
        model = pm.modelcontext(None)
        model.add_coord("step", np.arange(len(sr)))
        g = pd.Index(self.design.gpus).get_indexer(sr["gpu"])
        size = np.log(sr["params_active"].to_numpy(dtype=float) / REF_TARGET_PARAMS)
        ctx_len = np.log(np.maximum(sr["ctx"].to_numpy(dtype=float), 1.0) / 1024)
        p_len = np.log(sr["tokens"].to_numpy(dtype=float) / 1024)
        i1v, i2v, i1p = COEFS.index("c1v"), COEFS.index("c2v"), COEFS.index("c1p")
        law = lambda i: intercept[i] + size_slope[i] * size + gpu_effect[g, i]  # noqa: E731
        overhead = pm.Normal("step_overhead", 0.1, 0.3, dims="level")  # log serving / step
        c1v = pt.exp(law(i1v) - overhead[0])
        c2v = pt.exp(law(i2v) + length_slope[LENGTH_COEFS.index("c2v")] * ctx_len - overhead[1])
        c1p = pt.exp(law(i1p) + length_slope[LENGTH_COEFS.index("c1p")] * p_len - overhead[0])
        is_decode = (sr["phase"] == "decode").to_numpy()
        batch = sr["batch"].to_numpy(dtype=float)
        mu = pt.log(pt.switch(is_decode, c1v + batch * c2v, c1p))
        step_sigma = pm.HalfNormal("step_sigma", 0.1)
        pm.StudentT(
            "log_step_time",
            nu=4.0,
            mu=mu,
            sigma=step_sigma,
            observed=np.log(sr["time_s"].to_numpy(dtype=float)),
            dims="step",
        )

    # ------------------------------------------------------------------ fitting

    def fit(
        self,
        sweep: pd.DataFrame,
        steps: pd.DataFrame | None = None,
        random_seed: int | None = None,
        **sampler_kwargs: Any,
    ):
        """Sample the posterior; returns an ``xarray.DataTree`` (also kept as ``.idata``).

        ``steps``, a forward-pass timing table (``bayes_sd.io.read_step_costs``, or
        ``load_example("stepcost")``), adds a joint step-level likelihood: the decode and
        prefill timings of the sweep's dense targets on its GPUs inform the verification and
        prefill coefficients' population laws, less a fitted serving overhead
        (``step_overhead``).

        Reports R-hat, bulk/tail ESS and divergences in ``.diagnostics`` and warns
        (:class:`ConvergenceWarning`) with advice when they are bad.
        """
        model = self.build_model(sweep, steps)
        cfg = {**self.sampler_config, **sampler_kwargs}
        cores = cfg.pop("cores", None) or os.cpu_count() or 1
        # PyMC's and numpyro's NUTS start from the initial point without jitter: measured on
        # the demo (2026-11-23), jittered starts left every PyMC chain divergent at tree depth
        # 1 (step size collapsed) and 3 of 4 numpyro chains stuck; unjittered, PyMC's chains
        # sampled without divergences. nutpie keeps its own (jittered) initialisation and
        # adapts its mass matrix as configured (ADAPTATIONS).
        start = {
            "pymc": {"init": "adapt_diag"},
            "numpyro": {"nuts": {"jitter": False}},
            "nutpie": {"nuts": {"adaptation": self._adaptation(cfg["adaptation"])}},
        }.get(cfg["nuts_sampler"], {})
        with model:
            idata = pm.sample(
                draws=cfg["draws"],
                tune=cfg["tune"],
                chains=cfg["chains"],
                cores=min(cores, cfg["chains"]),
                target_accept=cfg["target_accept"],
                nuts_sampler=cfg["nuts_sampler"],
                random_seed=random_seed,
                progressbar=cfg["progressbar"],
                compute_convergence_checks=False,
                **start,
            )
        self.idata = idata
        backend = cfg["nuts_sampler"]
        if backend == "nutpie":
            backend += ":" + self._adaptation(cfg["adaptation"])
        self.diagnostics = self._diagnose(idata, backend)
        return idata

    def _adaptation(self, adaptation: str) -> str:
        """nutpie's mass-matrix adaptation; "auto" by the residuals' form (see ADAPTATIONS)."""
        if adaptation != "auto":
            return adaptation
        return "draw_diag" if self.centred else "diag"

    def _diagnose(self, idata, backend: str = "nutpie:diag") -> dict[str, Any]:
        out = convergence_summary(idata, POPULATION_PARAMS)
        out["runs_fitted"] = len(self.design.rows)
        out["runs_left_out_saturated"] = self.design.n_saturated
        other = "non-centred" if self.centred else "hierarchically centred"
        advice = (
            f"The residuals are {'centred' if self.centred else 'non-centred'}: the "
            f"{other} form (model_config={{'centred': {not self.centred}}}) may mix better "
            "for this design."
        )
        if backend.startswith("nutpie:"):  # measured, docs/model.md (Benchmark)
            other = "diag" if backend == "nutpie:draw_diag" else "draw_diag"
            advice += (
                f" nutpie's other mass-matrix adaptation (sampler_config adaptation={other!r}) "
                "may mix better: on the simulated demo sweep 'draw_diag' had 1.7x the ESS per "
                "second of 'diag' (centred), on its sparse split 'diag' mixed, 'draw_diag' not "
                "(non-centred)."
            )
        warn_if_unreliable(out, stacklevel=4, advice=advice)
        return out

    # ------------------------------------------------------------------ prediction

    def predict(
        self,
        configs: pd.DataFrame,
        *,
        max_draws: int = 1000,
        interval: float = 0.9,
        random_seed: int | None = None,
        chunk_rows: int | None = None,
        noise: bool = False,
    ) -> Prediction:
        """Posterior predictive mean latency, speedup against k = 0, and saturation rate.

        ``configs`` has one row per prediction: ``gpu``, ``target``, ``k``, ``prefill_len``,
        ``decode_len``, ``request_rate`` (open loop) or ``concurrency`` (closed loop), and for
        SD rows ``drafter`` (or ``method`` ``ngram``) with ``acceptance_length`` or ``alpha``.
        Sizes come from the registry when absent; ``num_gpus`` defaults to 1 and ``source`` /
        ``dataset`` to the training data's when there is one. Seen systems use their fitted
        residuals; unseen systems, drafters and GPUs draw new ones from the population, so their
        intervals are honestly wider; all rows of one configuration share its new draws.
        Computed on ``max_draws`` posterior draws (thinned evenly) by one fused numba pass over
        draws × rows (``bayes_sd._kernels``; the NumPy algebra without numba, in chunks of
        ``chunk_rows`` rows). Memory: three float64 arrays of draws × rows, four with ``noise``
        (10^5 rows × 1,000 draws: 2.4 GB — thin with ``max_draws`` for large tables).

        With ``noise=True`` the latency draws also carry the fitted measurement noise (Student-t
        on log latency, growing with load): the posterior predictive of what one *measured run*
        would report — use it to check intervals against held-out runs. The default is the
        model's mean latency, the quantity to plan with.
        """
        if self.idata is None or self.design is None:
            raise RuntimeError("fit (or load) the model before predicting")
        rng = np.random.default_rng(random_seed)
        rows = self._prediction_rows(configs)
        post = self.idata["posterior"].dataset
        n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
        stride = max(1, int(np.ceil(n_chain * n_draw / max_draws)))
        post = post.isel(draw=slice(None, None, stride))
        draws = post.sizes["chain"] * post.sizes["draw"]
        flat = {
            v: post[v].values.reshape(draws, *post[v].shape[2:])
            for v in post.data_vars
            if v
            in (
                "intercept",
                "size_slope",
                "length_slope",
                "gpu_effect",
                "gpu_sd",
                "system_sd",
                "draft_sd",
                "series_sd",
                "shift_system",
                "shift_draft",
                "shift_series",
                "moe_excess",
                "acceptance",
                "sigma",
                "load_noise",
                "nu",
            )
        }
        # coefficients per configuration (a series with its sizes): a table of 10^5 rates of a
        # few configurations needs a few coefficient draws, and every row of one (unseen)
        # configuration shares its new residual draws
        keys = ["series", *CONFIG_SIZE_COLUMNS]
        group = rows.groupby(keys, dropna=False, sort=False).ngroup().to_numpy()
        _, first = np.unique(group, return_index=True)
        configs_u = rows.iloc[first].reset_index(drop=True)
        cov = _system_covariates(configs_u)
        coef, incr, f_sd, f_base = self._configuration_draws(configs_u, cov, flat, draws, rng)
        moe = cov["experts"] > 1
        with np.errstate(divide="ignore"):  # dense (m = M): log q = −inf, never used
            log_q = np.log1p(-cov["experts_per_token"] / cov["experts"])
        per_row = self._row_arrays(rows, flat)
        acc = flat.get("acceptance", np.zeros((draws, 1)))
        if _kernels.AVAILABLE:  # one fused pass (bayes_sd._kernels), (plane, row, draw)
            out = _kernels.predict(
                coef, incr, f_sd, f_base, group, moe, log_q, per_row, acc,
                _moe_baselines(rows, moe[group]), with_demand=noise,
            )  # fmt: skip
            planes = [plane.T for plane in out]  # (draw, row) views
        else:  # the NumPy algebra, in chunks of ~500,000 row-draws
            out = np.empty((4, draws, len(rows)))
            chunk_rows = chunk_rows or max(1000, 500_000 // draws)
            for start in range(0, len(rows), chunk_rows):
                part = slice(start, start + chunk_rows)
                out[:, :, part] = _numpy_predict(
                    coef, incr, f_sd, f_base, group[part], moe, cov,
                    {key: v[part] for key, v in per_row.items()}, acc,
                )  # fmt: skip
            planes = list(out)
        lat, speedup = planes[0], planes[1]
        if len(planes) == 4:  # C1 and C2: the noise's queueing share, and 1 / C2
            lat = self._with_noise(rows, flat, lat, planes[2], planes[3], rng, noise)
            with np.errstate(divide="ignore"):  # in place: C2 is not needed any more
                sat = np.divide(1.0, planes[3], out=planes[3])
        else:
            sat = planes[2]
        arrays = {"latency": lat, "speedup": speedup, "saturation_rate": sat}
        chains, per_chain = post.sizes["chain"], post.sizes["draw"]
        dims = ("chain", "draw", "row")
        ds = xr.Dataset(
            {k: (dims, _chain_draw_row(v, chains, per_chain)) for k, v in arrays.items()},
            coords={
                "chain": post["chain"].values,
                "draw": post["draw"].values,
                "row": np.arange(len(rows)),
            },
        )
        return Prediction(ds, _summarise(arrays, rows, interval))

    def _prediction_rows(self, configs: pd.DataFrame) -> pd.DataFrame:
        rows = pd.DataFrame(configs).reset_index(drop=True).copy()
        need = ["gpu", "target", "k", "prefill_len", "decode_len"]
        missing = [c for c in need if c not in rows.columns]
        if missing:
            raise DataError(
                f"prediction rows need column(s) {', '.join(missing)}", field=missing[0]
            )
        defaults = {
            "num_gpus": 1,
            "drafter": None,
            "method": None,
            "acceptance_length": np.nan,
            "alpha": np.nan,
            "request_rate": np.nan,
            "concurrency": np.nan,
            "drafter_params": np.nan,
        }
        if len(self.design.sources) == 1:
            defaults["source"] = self.design.sources[0]
        defaults["dataset"] = ""
        for col, value in defaults.items():
            if col not in rows.columns:
                rows[col] = value
        if "source" not in rows.columns:
            raise DataError(
                "the model was fitted on several sources: give 'source' per row", field="source"
            )
        fill_sizes(rows)
        unknown = rows["target_params"].isna().to_numpy()
        if unknown.any():
            i = int(np.flatnonzero(unknown)[0])
            raise DataError(
                f"unknown target {rows.at[i, 'target']!r}: give target_params (and the MoE "
                "fields) or register_model it",
                record=f"row {i}",
                field="target_params",
            )
        rows["target_active_params"] = rows["target_active_params"].fillna(rows["target_params"])
        rows["target_experts"] = rows["target_experts"].fillna(1)
        rows["target_experts_per_token"] = rows["target_experts_per_token"].fillna(1)
        rows["drafter_params"] = rows["drafter_params"].astype(float)
        rows["dataset"] = rows["dataset"].fillna("")
        rows["k"] = rows["k"].astype(float)
        if ((rows["k"] > 0) & rows["drafter"].isna() & rows["method"].isna()).any():
            raise DataError("SD rows (k > 0) need a drafter or a method", field="drafter")
        open_rows = rows["request_rate"].notna()
        if (open_rows == rows["concurrency"].notna()).any():
            raise DataError(
                "each row needs exactly one of request_rate or concurrency", field="request_rate"
            )
        _label_systems(rows)
        return rows

    def _configuration_draws(self, configs, cov, flat, draws, rng):
        """Coefficient draws of each configuration: ``coef`` and the MoE coverage increments
        ``incr`` (8, draws, configs) in ``COEFS`` order, before the series shifts, and the
        series factors on level 2 of the configuration's series and of its baseline series
        (draws, configs). Coefficient-major: one contiguous (draws, configs) plane each."""
        n = len(configs)
        nc = len(COEFS)
        slope = flat["size_slope"][:, COEF_SLOPE]
        icpt = flat["intercept"]
        gpus = pd.Index(self.design.gpus).get_indexer(configs["gpu_key"])
        unseen_gpu = gpus < 0
        gpu_fit = np.ascontiguousarray(np.moveaxis(flat["gpu_effect"], 2, 0))  # (coef, draw, gpu)
        gpu_idx = np.where(unseen_gpu, 0, gpus)
        if unseen_gpu.any():  # an unseen GPU: one new draw per GPU from the pooled GPU law
            names, inverse = np.unique(
                configs["gpu_key"].to_numpy()[unseen_gpu], return_inverse=True
            )
            sd = flat["gpu_sd"].reshape(draws, 1, -1)  # one spread, or one per coefficient
            new = rng.normal(size=(draws, len(names), nc)) * sd
            gpu_new = np.moveaxis(new[:, inverse], 2, 0)  # (coef, draw, unseen config)
        shift = self._draw_shifts("system", configs["system"], flat, draws, rng)
        dshift = self._draw_shifts("draft", configs["draft_system"], flat, draws, rng)
        d_size = _drafter_log_size(configs)
        coef = np.empty((nc, draws, n))
        for j, name in enumerate(COEFS):
            target = j < NPV
            x = icpt[:, j, None] + slope[:, j, None] * (cov["log_size"] if target else d_size)
            gpu_j = np.take(gpu_fit[j], gpu_idx, axis=1)
            if unseen_gpu.any():
                gpu_j[:, unseen_gpu] = gpu_new[j]
            x += gpu_j
            x += shift[PV_LEVEL[j]] if target else dshift[j - NPV]
            if name in LENGTH_COEFS:
                i = LENGTH_COEFS.index(name)
                x += flat["length_slope"][:, i, None] * cov["lengths"][None, :, i]
            np.exp(x, out=coef[j])
        incr = np.zeros((nc, draws, n))  # the MoE coverage increments (none for drafters)
        moe = cov["experts"] > 1
        if self.coverage and moe.any() and "moe_excess" in flat:
            lta = cov["log_total_over_active"]
            for j in range(NPV):
                ratio = np.exp(flat["moe_excess"][:, j, None]) * (
                    np.exp(slope[:, j, None] * lta) - 1
                )
                incr[j] = coef[j] * ratio
        # series shifts act on the level-2 ("per request in flight") coefficients only
        # one call for both: an unseen series that is one row's own and another's (or its
        # own) baseline gets one draw (two calls drew it twice: a baseline row's speedup
        # against itself was not 1)
        labels = np.concatenate([configs["series"].to_numpy(), configs["base_series"].to_numpy()])
        factor = np.exp(self._draw_shifts("series", labels, flat, draws, rng)[1])
        return coef, incr, factor[:, :n], factor[:, n:]

    def _row_arrays(self, rows, flat) -> dict[str, np.ndarray]:
        """Per-row inputs of the prediction kernel; checks latent acceptance is available."""
        k = rows["k"].to_numpy(dtype=float)
        e_known = acceptance_of(rows)
        d_idx = pd.Index(self.design.draft_systems).get_indexer(rows["draft_system"])
        latent = np.isnan(e_known)
        if latent.any():
            bad = latent & (d_idx < 0)
            if "acceptance" not in flat or bad.any():
                i = int(np.flatnonzero(bad)[0]) if bad.any() else int(np.flatnonzero(latent)[0])
                raise DataError(
                    "give acceptance_length or alpha for SD rows of drafter "
                    "configurations the model has not seen",
                    record=f"row {i}",
                    field="acceptance_length",
                )
        rate = rows["request_rate"].astype(float).to_numpy()
        return {
            "k": k,
            "e_known": e_known,
            "d_idx": np.where(latent, d_idx, 0),
            "decode_len": rows["decode_len"].to_numpy(dtype=float),
            "prefill_len": rows["prefill_len"].to_numpy(dtype=float),
            "rate": rate,
            "conc": rows["concurrency"].astype(float).to_numpy(),
            "is_open": ~np.isnan(rate),
        }

    def _with_noise(self, rows, flat, lat, c1, c2, rng, noise: bool) -> np.ndarray:
        if not noise:
            return lat
        with np.errstate(invalid="ignore", over="ignore"):  # saturated draws stay +inf
            noisy = lat * np.exp(self._noise(rows, flat, lat, c1, c2, rng))
        return np.where(np.isfinite(lat), noisy, lat)

    def _noise(self, rows, flat, lat, c1, c2, rng) -> np.ndarray:
        """Draws of the measurement noise on log latency, as in the likelihood."""
        src = pd.Index(self.design.sources).get_indexer(rows["source"])
        sigma = flat["sigma"][:, np.where(src < 0, 0, src)]
        if (src < 0).any():  # an unseen source: the largest fitted noise scale
            sigma[:, src < 0] = flat["sigma"].max(axis=1, keepdims=True)
        conc = rows["concurrency"].astype(float).to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(np.isnan(conc), lat / c1 - 1.0, np.nan_to_num(conc) * c2 / c1)
        share = np.minimum(share, QUEUE_SHARE_CAP)  # as in the likelihood
        scale = sigma * (1.0 + flat["load_noise"][:, None] * share)
        return rng.standard_t(flat["nu"][:, None], size=lat.shape) * scale

    def _draw_shifts(self, group, labels, flat, draws, rng) -> np.ndarray:
        """Shifts (level, draws, row) of a residual group: the fitted ones for configurations
        the model has seen, new draws from the population law for the others."""
        shift = np.zeros((2, draws, len(labels)))
        if group not in self.residuals:
            return shift
        known = {"system": self.design.systems, "draft": self.design.draft_systems}
        idx = pd.Index(known.get(group, self.design.series)).get_indexer(labels)
        seen = idx >= 0
        levels = {"system": [0, 1], "draft": [0], "series": [1]}[group]
        sd = flat[f"{group}_sd"].reshape(draws, 1, -1)
        # one new draw per unseen label: the rows of one configuration share it
        names, inverse = np.unique(np.asarray(labels, dtype=str)[~seen], return_inverse=True)
        new = rng.normal(size=(draws, len(names), sd.shape[2])) * sd
        fitted = flat[f"shift_{group}"]
        fitted = fitted if fitted.ndim == 3 else fitted[..., None]  # (draws, label, level)
        take = np.where(seen, idx, 0)
        for i, level in enumerate(levels):
            plane = np.take(np.ascontiguousarray(fitted[..., i]), take, axis=1)
            if len(names):
                plane[:, ~seen] = new[:, inverse, i]
            shift[level] = plane
        return shift

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike) -> Path:
        """Write the posterior, configuration, its hash, version and training data (NetCDF);
        atomic. ``LatencyModel.load(path)`` gives identical predictions."""
        from bayes_sd.schema import atomic_write

        if self.idata is None or self.design is None:
            raise RuntimeError("fit the model before saving it")
        tree = self.idata.copy()
        csv = self.design.sweep.to_csv(index=False).encode("utf-8")
        tree["bayes_sd_training"] = xr.DataTree(
            xr.Dataset({"training_csv": ("byte", np.frombuffer(csv, dtype=np.uint8))})
        )
        if self.steps is not None:
            steps_csv = self.steps.to_csv(index=False).encode("utf-8")
            tree["bayes_sd_steps"] = xr.DataTree(
                xr.Dataset({"steps_csv": ("byte", np.frombuffer(steps_csv, dtype=np.uint8))})
            )
        tree.attrs.update(
            bayes_sd_version=__version__,
            bayes_sd_model_config=json.dumps(self.model_config, default=_json_default),
            bayes_sd_config_hash=self.config_hash,
            bayes_sd_structure=self._structure_hash(),
            bayes_sd_sampler_config=json.dumps(self.sampler_config),
            bayes_sd_diagnostics=json.dumps(self.diagnostics or {}),
        )
        return atomic_write(path, lambda p: tree.to_netcdf(p, engine="h5netcdf"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyModel:
        """Load a model written by :meth:`save`; a file of another structure is a DataError."""
        import io

        file = str(path)
        try:
            tree = xr.load_datatree(file, engine="h5netcdf")
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read as a bayes_sd model file: {err}", file=file) from err
        attrs = tree.attrs
        if "bayes_sd_model_config" not in attrs or "bayes_sd_training" not in tree.children:
            raise DataError("not a bayes_sd model file (no bayes_sd attributes)", file=file)
        config = json.loads(attrs["bayes_sd_model_config"])
        model = cls(
            model_config=config, sampler_config=json.loads(attrs["bayes_sd_sampler_config"])
        )
        if model.config_hash != attrs["bayes_sd_config_hash"]:
            raise DataError(
                "the model configuration does not match its hash (edited file?)",
                file=file,
                field="bayes_sd_config_hash",
            )
        raw = tree["bayes_sd_training"].dataset["training_csv"].values.tobytes()
        training = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False, na_values=[""])
        steps = None
        if "bayes_sd_steps" in tree.children:
            raw = tree["bayes_sd_steps"].dataset["steps_csv"].values.tobytes()
            steps = pd.read_csv(io.BytesIO(raw))
            del tree["bayes_sd_steps"]
        model.build_model(training, steps)
        if model._structure_hash() != attrs["bayes_sd_structure"]:
            raise DataError(
                "the file was written by a model of a different structure (another "
                f"bayes_sd version or configuration; file: {attrs['bayes_sd_version']}, "
                f"this: {__version__})",
                file=file,
                field="bayes_sd_structure",
            )
        del tree["bayes_sd_training"]
        model.idata = tree
        model.diagnostics = json.loads(attrs.get("bayes_sd_diagnostics", "{}"))
        return model

    def _structure_hash(self) -> str:
        model = self.model
        desc = {
            "free": sorted(v.name for v in model.free_RVs),
            "coords": {k: list(map(str, v)) for k, v in sorted(model.coords.items())},
            "config": self.config_hash,
            "version": __version__.split(".")[0],
        }
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Prediction:
    """Posterior predictive draws ``(chain, draw, row)`` and a per-row summary table."""

    draws: xr.Dataset
    summary: pd.DataFrame


def _moe_baselines(rows: pd.DataFrame, moe_row: np.ndarray) -> np.ndarray:
    """Per row, its baseline among the distinct baselines of MoE rows (0, 1, ...; −1 for dense
    rows): rows of one baseline series (system and k = 0), target sizes and load have the
    same baseline draws, solved once (``_kernels._baselines``)."""
    base_of = np.full(len(rows), -1, dtype=np.int64)
    if moe_row.any():
        sizes = ["target_params", "target_active_params", "target_experts"]
        keys = ["base_series", *sizes, "target_experts_per_token", "request_rate", "concurrency"]
        sub = rows.loc[moe_row, keys]
        base_of[moe_row] = sub.groupby(keys, dropna=False, sort=False).ngroup().to_numpy()
    return base_of


def _numpy_predict(coef, incr, f_sd, f_base, cfg, moe_cfg, cov, rows, acc):
    """The NumPy path of the prediction kernel (``bayes_sd._kernels._predict``) for a chunk of
    rows: same inputs, same (4, draws, rows) output."""
    draws, n = f_sd.shape[0], len(cfg)
    k = rows["k"]
    e = np.broadcast_to(rows["e_known"], (draws, n)).copy()
    latent = np.isnan(rows["e_known"])
    if latent.any():
        e[:, latent] = 1.0 + k[latent] * acc[:, rows["d_idx"][latent]]
    moe = moe_cfg[cfg]
    unsat = np.take(coef, cfg, axis=2)
    inc = np.take(incr, cfg, axis=2) if moe.any() else None
    fsd, fbase = np.take(f_sd, cfg, axis=1), np.take(f_base, cfg, axis=1)
    rate = np.where(rows["is_open"], rows["rate"], np.nan)
    conc = np.where(rows["is_open"], np.nan, rows["conc"])
    args = dict(
        decode_len=rows["decode_len"],
        experts=cov["experts"][cfg],
        experts_per_token=cov["experts_per_token"][cfg],
        prefill_len=rows["prefill_len"],
    )

    def scaled(values, factor):
        if values is None:
            return None
        # by name (COEFS is not the field order); level 2 sits at odd positions of COEFS
        named = zip(COEFS, values, strict=True)
        return latency.Coefficients(
            **{name: c * factor if j % 2 else c for j, (name, c) in enumerate(named)}
        )

    unsat_sd, incr_sd = scaled(unsat, fsd), scaled(inc, fsd)
    lat = _latency(unsat_sd, incr_sd, k, e, rate, conc, moe, **args)
    base = _latency(
        scaled(unsat, fbase),
        scaled(inc, fbase),
        np.zeros(n),
        np.ones((draws, n)),
        rate,
        conc,
        moe,
        **args,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        speedup = base / lat
    full = unsat_sd
    if incr_sd is not None:
        full = latency.Coefficients(*(u + s for u, s in zip(unsat_sd, incr_sd, strict=True)))
    c1, c2 = latency.demand(full, k, e, rows["decode_len"])
    return np.stack([lat, speedup, np.broadcast_to(c1, lat.shape), np.broadcast_to(c2, lat.shape)])


def _latency(
    unsat, incr, k, e, rate, conc, moe, *, decode_len, experts, experts_per_token, prefill_len
) -> np.ndarray:
    draws, n = e.shape
    dense = ~moe
    is_open = ~np.isnan(rate)
    # all-dense chunks (the common case) skip the column selection and its copies
    pick = (lambda x: x) if dense.all() else (lambda x: np.asarray(x)[..., dense])
    c1, c2 = latency.demand(
        latency.Coefficients(*(pick(u) for u in unsat)), pick(k), pick(e), pick(decode_len)
    )
    lat = latency.open_loop_latency(c1, c2, np.nan_to_num(pick(rate)))
    if not pick(is_open).all():
        closed = latency.closed_loop_latency(c1, c2, np.nan_to_num(pick(conc)))
        lat = np.where(pick(is_open), lat, closed)
    if dense.all():
        return lat
    out = np.empty((draws, n))
    out[:, dense] = lat
    if moe.any():
        sel = lambda c: latency.Coefficients(*(np.asarray(x)[:, moe] for x in c))  # noqa: E731
        u = sel(unsat)
        s = sel(incr) if incr is not None else latency.Coefficients(*(np.zeros_like(x) for x in u))
        shared = (k[moe], e[:, moe], decode_len[moe])
        tail = (experts[moe], experts_per_token[moe], prefill_len[moe])
        open_l = latency.moe_open_loop_latency(u, s, *shared, np.nan_to_num(rate[moe]), *tail)
        closed_l = latency.moe_closed_loop_latency(u, s, *shared, np.nan_to_num(conc[moe]), *tail)
        out[:, moe] = np.where(is_open[moe], open_l, closed_l)
    return out


def nan_quantiles(x: np.ndarray, qs, chunk_bytes: int = 1 << 22) -> list[np.ndarray]:
    """Column-wise quantiles of ``x`` (draws, columns) ignoring NaN, as ``np.nanquantile``
    (linear interpolation) but vectorised: ``np.nanquantile`` loops over columns in Python
    (measured: 54 s of a 58 s predict of 20,000 rows). ``+inf`` draws are kept (saturated).

    Columns are sorted a block at a time in one reused buffer of ``chunk_bytes``: a sorted copy
    of all of ``x`` (10^5 rows × 100 draws: 80 MB per variable) cost more in first-touch page
    faults than in sorting."""
    draws, n_cols = x.shape
    width = max(1, chunk_bytes // (8 * max(draws, 1)))
    buf = np.empty((min(width, n_cols), draws))
    out = [np.empty(n_cols) for _ in qs]
    for c0 in range(0, n_cols, width):
        c1 = min(c0 + width, n_cols)
        b = buf[: c1 - c0]
        b[...] = x[:, c0:c1].T  # (columns, draws): the sort runs over contiguous memory
        b.sort(axis=1)  # NaN sort last
        n = (~np.isnan(b)).sum(axis=1)
        cols = np.arange(c1 - c0)
        for o, q in zip(out, qs, strict=True):
            pos = q * np.maximum(n - 1, 0)
            i = np.floor(pos).astype(int)
            j = np.minimum(i + 1, np.maximum(n - 1, 0))
            frac = pos - i
            a, bb = b[cols, i], b[cols, j]
            with np.errstate(invalid="ignore"):  # +inf draws: a + (inf - a) · 0 would be NaN
                v = np.where((a == bb) | (frac == 0), a, a + (bb - a) * frac)
            o[c0:c1] = np.where(n > 0, v, np.nan)
    return out


def _chain_draw_row(x: np.ndarray, chains: int, per_chain: int) -> np.ndarray:
    """(draw, row) → (chain, draw, row) without a copy, for C-ordered arrays and for views of
    the kernel's (row, draw) planes alike."""
    if x.flags.c_contiguous:
        return x.reshape(chains, per_chain, x.shape[1])
    return x.T.reshape(x.shape[1], chains, per_chain).transpose(1, 2, 0)


def _summarise(arrays: dict, rows: pd.DataFrame, interval: float) -> pd.DataFrame:
    """Median, interval and P(speedup > 1) per row from (draw, row) arrays (sorting over
    draws is fastest on the kernel's draw-contiguous planes)."""
    lo, hi = (1 - interval) / 2, 1 - (1 - interval) / 2
    out = rows[
        [
            "gpu",
            "target",
            "drafter",
            "k",
            "prefill_len",
            "decode_len",
            "request_rate",
            "concurrency",
        ]
    ].copy()
    names = ("latency", "speedup", "saturation_rate")
    # one variable per thread: NumPy's sort releases the GIL (2 cores: 0.29 s → 0.17 s on
    # 10^5 rows × 100 draws)
    with ThreadPoolExecutor(max_workers=min(len(names), os.cpu_count() or 1)) as pool:
        found = pool.map(lambda v: nan_quantiles(arrays[v], (0.5, lo, hi)), names)
        for var, (med, low, high) in zip(names, found, strict=True):
            out[f"{var}_median"], out[f"{var}_lo"], out[f"{var}_hi"] = med, low, high
    out["p_speedup_gt_1"] = np.mean(arrays["speedup"] > 1, axis=0)
    return out
