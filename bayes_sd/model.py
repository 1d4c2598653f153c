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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from bayes_sd import latency
from bayes_sd._version import __version__
from bayes_sd.errors import DataError
from bayes_sd.priors import COEFS, LENGTH_COEFS, resolve_priors
from bayes_sd.registry import fill_sizes
from bayes_sd.schema import acceptance_of, validate_sweep

__all__ = ["ConvergenceWarning", "LatencyModel"]

NPV = 6  # c1p c2p c1v c2v c1s c2s: the target's; then c1d c2d: the drafter's
PV, DC = COEFS[:NPV], COEFS[NPV:]
SYSTEM_KEYS = ("source", "dataset", "gpu", "num_gpus", "target", "prefill_len", "decode_len")
NGRAM_PARAMS = 1e6  # drafting by lookup: a "model" of negligible size
DEFAULT_SAMPLER = {
    "draws": 1000,
    "tune": 1000,
    "chains": 4,
    "target_accept": 0.9,
    "nuts_sampler": "nutpie",
    "progressbar": True,
}
SAMPLERS = ("nutpie", "pymc", "numpyro")
# Within one system the data pin C1 and C2 per series, not prefill apart from verification:
# residuals on c1p/c2p only add ridges (measured: R-hat 1.12 → 1.03, ESS 17 → 59 on the demo).
DEFAULT_RESIDUALS = ("c1v", "c2v", "c1s", "c2s", "c1d", "c2d")


class ConvergenceWarning(UserWarning):
    """R-hat, ESS or divergences say the posterior may not be trustworthy."""


def _gpu_key(gpu: str, num_gpus: float) -> str:
    n = int(num_gpus)
    return gpu if n == 1 else f"{n}x{gpu}"


def _label(values: tuple) -> str:
    return "|".join(
        "" if pd.isna(v) else (f"{v:g}" if isinstance(v, float) else str(v)) for v in values
    )


def _label_systems(rows: pd.DataFrame) -> None:
    """Add ``gpu_key``, ``system`` and ``draft_system`` (drafter, or method for n-gram) labels."""
    rows["gpu_key"] = [_gpu_key(g, n) for g, n in zip(rows["gpu"], rows["num_gpus"], strict=True)]
    rows["system"] = [_label(t) for t in rows[list(SYSTEM_KEYS)].itertuples(index=False)]
    rows["draft_system"] = [
        s + "|" + (str(d) if isinstance(d, str) else str(m)) if k > 0 else ""
        for s, d, m, k in zip(
            rows["system"], rows["drafter"], rows["method"], rows["k"], strict=True
        )
    ]


@dataclass
class Design:
    """Numeric arrays for the model, derived from a sweep (rows = unsaturated runs)."""

    sweep: pd.DataFrame  # the validated input, saturated runs included
    rows: pd.DataFrame
    systems: list[str]
    draft_systems: list[str]
    gpus: list[str]
    sources: list[str]
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
        "log_size": np.log(active / 1e9),
        "log_total_over_active": np.log(total / active),
        "lengths": lengths,
        "experts": table["target_experts"].to_numpy(dtype=float),
        "experts_per_token": table["target_experts_per_token"].to_numpy(dtype=float),
    }


def _drafter_log_size(table: pd.DataFrame) -> np.ndarray:
    params = table["drafter_params"].astype(float).to_numpy()
    return np.log(np.where(np.isnan(params), NGRAM_PARAMS, params) / 1e9)


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
        ``{"priors": {name: Prior}}`` overrides (see :mod:`bayes_sd.priors`), and
        ``"coverage": False`` to drop the MoE coverage term.
    sampler_config
        ``draws``, ``tune``, ``chains``, ``target_accept``, ``nuts_sampler`` (``"nutpie"``
        — the default, fastest by measurement —, ``"pymc"`` or ``"numpyro"``), ``progressbar``.

    Examples
    --------
    >>> import bayes_sd
    >>> model = bayes_sd.LatencyModel(sampler_config={"draws": 500})
    >>> idata = model.fit(bayes_sd.load_example("demo"), random_seed=1)  # doctest: +SKIP
    >>> model.predict(new_runs).summary                                 # doctest: +SKIP
    """

    def __init__(self, model_config: dict | None = None, sampler_config: dict | None = None):
        model_config = dict(model_config or {})
        unknown = set(model_config) - {"priors", "coverage", "residuals"}
        if unknown:
            raise ValueError(
                f"unknown model_config key(s): {', '.join(sorted(unknown))}; "
                "known: priors, coverage, residuals"
            )
        self.priors = resolve_priors(model_config.get("priors"))
        self.coverage = bool(model_config.get("coverage", True))
        # coefficients that get per-configuration residuals (the others follow the population)
        self.residuals = tuple(model_config.get("residuals", DEFAULT_RESIDUALS))
        bad = sorted(set(self.residuals) - set(COEFS))
        if bad:
            raise ValueError(f"unknown coefficient(s) in residuals: {', '.join(bad)}")
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
        self.model: pm.Model | None = None
        self.design: Design | None = None
        self.idata = None
        self.diagnostics: dict[str, Any] | None = None

    # ------------------------------------------------------------------ configuration

    @property
    def model_config(self) -> dict[str, Any]:
        return {
            "priors": {k: v.to_dict() for k, v in sorted(self.priors.items())},
            "coverage": self.coverage,
            "residuals": list(self.residuals),
        }

    @property
    def config_hash(self) -> str:
        return _config_hash(self.model_config)

    def _mask(self, names: tuple[str, ...]) -> np.ndarray:
        return np.array([1.0 if c in self.residuals else 0.0 for c in names])

    # ------------------------------------------------------------------ model

    def build_model(self, sweep: pd.DataFrame) -> pm.Model:
        """Build (not sample) the PyMC model for ``sweep``; saturated runs are left out."""
        design = Design.from_sweep(sweep)
        self.design = design
        rows, st, dt = design.rows, design.sys_table, design.draft_table
        coords = {
            "coef": list(COEFS),
            "coef_pv": list(PV),
            "coef_d": list(DC),
            "length_coef": list(LENGTH_COEFS),
            "gpu": design.gpus,
            "system": design.systems,
            "draft_system": design.draft_systems or ["none"],
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
            p_len = pm.Data("prefill_len", rows["prefill_len"].to_numpy(dtype=float), dims="run")
            rate_d = pm.Data("rate", rate, dims="run")
            conc_d = pm.Data("concurrency", conc, dims="run")
            batch_d = pm.Data("batch", batch, dims="run")
            open_d = pm.Data("open_loop", is_open.astype(float), dims="run")
            # population
            intercept = self.priors["intercept"].create_variable("intercept")
            size_slope = self.priors["size_slope"].create_variable("size_slope")
            length_slope = self.priors["length_slope"].create_variable("length_slope")
            # GPU effects sum to zero over the fitted GPUs (no ridge against the intercept)
            gpu_sd = self.priors["gpu_sd"].create_variable("gpu_sd")
            if len(design.gpus) > 1:
                gpu_z = pm.ZeroSumNormal("gpu_z", sigma=1.0, dims=("coef", "gpu"))
                gpu_effect = pm.Deterministic(
                    "gpu_effect", (gpu_sd[:, None] * gpu_z).T, dims=("gpu", "coef")
                )
            else:
                gpu_effect = pm.Deterministic(
                    "gpu_effect", pt.zeros((1, len(COEFS))), dims=("gpu", "coef")
                )
            config_sd = self.priors["config_sd"].create_variable("config_sd")
            z_sys = pm.Normal("z_system", 0.0, 1.0, dims=("system", "coef_pv"))
            z_draft = pm.Normal("z_draft", 0.0, 1.0, dims=("draft_system", "coef_d"))
            # system coefficients (p, v)
            length_term = pt.concatenate(
                [
                    length_slope[None, :2] * cov["lengths"][:, :2],
                    pt.zeros((len(st), 1)),
                    length_slope[None, 2:] * cov["lengths"][:, 2:],
                    pt.zeros((len(st), 2)),
                ],
                axis=1,
            )
            log_pv = (
                intercept[None, :NPV]
                + size_slope[None, :NPV] * cov["log_size"][:, None]
                + gpu_effect[sys_gpu, :NPV]
                + length_term
                + config_sd[None, :NPV] * z_sys * self._mask(PV)
            )
            c_pv = pm.Deterministic("c_system", pt.exp(log_pv), dims=("system", "coef_pv"))
            # draft-system coefficients (d)
            if design.draft_systems:
                d_gpu = pd.Index(design.gpus).get_indexer(dt["gpu_key"])
                d_size = _drafter_log_size(dt)
            else:
                d_gpu, d_size = np.zeros(1, dtype=int), np.zeros(1)
            log_d = (
                intercept[None, NPV:]
                + size_slope[None, NPV:] * d_size[:, None]
                + gpu_effect[d_gpu, NPV:]
                + config_sd[None, NPV:] * z_draft * self._mask(DC)
            )
            c_d = pm.Deterministic("c_draft", pt.exp(log_d), dims=("draft_system", "coef_d"))
            # per-run coefficients, with MoE coverage
            c_run = c_pv[sys_idx]
            if self.coverage and np.any(cov["experts"] > 1):
                moe_excess = self.priors["moe_excess"].create_variable("moe_excess")
                ratio = pt.exp(moe_excess[None, :]) * (
                    pt.exp(size_slope[None, :NPV] * cov["log_total_over_active"][:, None]) - 1.0
                )
                inc = c_pv * ratio  # (system, coef_pv); zero for dense systems
                m_over = (cov["experts_per_token"] / cov["experts"])[sys_idx]
                in_batch = pt.maximum(batch_d, 1.0)
                phi_v = latency.expert_coverage(in_batch * (k_d + 1.0), 1.0, m_over)
                phi_p = latency.expert_coverage(p_len, 1.0, m_over)
                phi = pt.stack([phi_p, phi_p, phi_v, phi_v, phi_v, phi_v], axis=1)
                c_run = c_run + phi * inc[sys_idx]
            cd_run = c_d[dsys]
            # acceptance: measured, from alpha, or latent per draft system
            if latent_e.any():
                accept = self.priors["acceptance"].create_variable("acceptance")
                e_run = pt.switch(latent_e, 1.0 + k_d * accept[dsys], e_known)
            else:
                e_run = e_known
            coefs = latency.Coefficients(
                c1p=c_run[:, 0],
                c2p=c_run[:, 1],
                c1v=c_run[:, 2],
                c2v=c_run[:, 3],
                c1s=c_run[:, 4],
                c2s=c_run[:, 5],
                c1d=cd_run[:, 0],
                c2d=cd_run[:, 1],
            )
            c1, c2 = latency.demand(coefs, k_d, e_run, d_len)
            open_lat = latency.open_loop_latency_smooth(c1, c2, rate_d)
            closed_lat = latency.closed_loop_latency(c1, c2, conc_d)
            mu = pt.log(pt.switch(open_d > 0.5, open_lat, closed_lat))
            pm.Deterministic("latency", pt.exp(mu), dims="run")
            sigma = self.priors["sigma"].create_variable("sigma")
            nu = self.priors["nu"].create_variable("nu")
            pm.StudentT("log_latency", nu=nu, mu=mu, sigma=sigma[src], observed=log_lat, dims="run")
        self.model = model
        return model

    # ------------------------------------------------------------------ fitting

    def fit(
        self,
        sweep: pd.DataFrame,
        steps: pd.DataFrame | None = None,
        random_seed: int | None = None,
        **sampler_kwargs: Any,
    ):
        """Sample the posterior; returns an ``xarray.DataTree`` (also kept as ``.idata``).

        Reports R-hat, bulk/tail ESS and divergences in ``.diagnostics`` and warns
        (:class:`ConvergenceWarning`) with advice when they are bad.
        """
        if steps is not None:
            raise NotImplementedError(
                "the joint step-level likelihood (fit(..., steps=...)) is not available yet; "
                "fit on the sweep alone"
            )
        model = self.build_model(sweep)
        cfg = {**self.sampler_config, **sampler_kwargs}
        cores = cfg.pop("cores", None) or os.cpu_count() or 1
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
            )
        self.idata = idata
        self.diagnostics = self._diagnose(idata)
        return idata

    def _diagnose(self, idata) -> dict[str, Any]:
        import arviz as az

        names = ["intercept", "size_slope", "length_slope", "config_sd", "sigma", "nu"]
        post = idata["posterior"].dataset
        names = [n for n in names if n in post]
        rhat = az.rhat(post[names])
        ess_bulk = az.ess(post[names], method="bulk")
        ess_tail = az.ess(post[names], method="tail")
        divergences = int(idata["sample_stats"].dataset["diverging"].sum())
        out = {
            "max_rhat": float(rhat.to_array().max()),
            "min_ess_bulk": float(ess_bulk.to_array().min()),
            "min_ess_tail": float(ess_tail.to_array().min()),
            "divergences": divergences,
            "draws": int(post.sizes["chain"] * post.sizes["draw"]),
            "runs_fitted": len(self.design.rows),
            "runs_left_out_saturated": self.design.n_saturated,
        }
        problems = []
        if out["max_rhat"] > 1.01:
            problems.append(f"max R-hat {out['max_rhat']:.3f} > 1.01 (chains disagree)")
        if out["min_ess_bulk"] < 400:
            problems.append(f"min bulk ESS {out['min_ess_bulk']:.0f} < 400")
        if divergences:
            problems.append(f"{divergences} divergent transitions")
        if problems:
            warnings.warn(
                "posterior may not be reliable: " + "; ".join(problems) + ". Try more tuning "
                "and draws (sampler_config draws/tune), target_accept=0.95, or check that "
                "saturated runs are flagged.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return out

    # ------------------------------------------------------------------ prediction

    def predict(
        self,
        configs: pd.DataFrame,
        *,
        max_draws: int = 1000,
        interval: float = 0.9,
        random_seed: int | None = None,
        chunk_rows: int = 20_000,
    ) -> Prediction:
        """Posterior predictive mean latency, speedup against k = 0, and saturation rate.

        ``configs`` has one row per prediction: ``gpu``, ``target``, ``k``, ``prefill_len``,
        ``decode_len``, ``request_rate`` (open loop) or ``concurrency`` (closed loop), and for
        SD rows ``drafter`` (or ``method`` ``ngram``) with ``acceptance_length`` or ``alpha``.
        Sizes come from the registry when absent; ``num_gpus`` defaults to 1 and ``source`` /
        ``dataset`` to the training data's when there is one. Seen systems use their fitted
        residuals; unseen systems, drafters and GPUs draw new ones from the population, so their
        intervals are honestly wider. Computed with the NumPy algebra on ``max_draws``
        posterior draws (thinned evenly).
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
                "config_sd",
                "z_system",
                "z_draft",
                "moe_excess",
                "acceptance",
            )
        }
        outs = {"latency": [], "speedup": [], "saturation_rate": []}
        for start in range(0, len(rows), chunk_rows):
            part = rows.iloc[start : start + chunk_rows]
            lat, spd, sat = self._predict_chunk(part, flat, draws, rng)
            outs["latency"].append(lat)
            outs["speedup"].append(spd)
            outs["saturation_rate"].append(sat)
        shape = (post.sizes["chain"], post.sizes["draw"], len(rows))
        data = {
            k: (("chain", "draw", "row"), np.concatenate(v, axis=1).reshape(shape))
            for k, v in outs.items()
        }
        ds = xr.Dataset(
            data,
            coords={
                "chain": post["chain"].values,
                "draw": post["draw"].values,
                "row": np.arange(len(rows)),
            },
        )
        return Prediction(ds, _summarise(ds, rows, interval))

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

    def _predict_chunk(self, rows, flat, draws, rng):
        n = len(rows)
        cov = _system_covariates(rows)
        gpus = pd.Index(self.design.gpus).get_indexer(rows["gpu_key"])
        gpu_eff = np.empty((draws, n, len(COEFS)))
        seen_gpu = gpus >= 0
        gpu_eff[:, seen_gpu] = flat["gpu_effect"][:, gpus[seen_gpu]]
        if (~seen_gpu).any():  # unseen GPU: a new draw from the pooled GPU law
            sd = flat["gpu_sd"][:, None, :]
            gpu_eff[:, ~seen_gpu] = (
                rng.normal(size=(draws, int((~seen_gpu).sum()), len(COEFS))) * sd
            )
        sys_idx = pd.Index(self.design.systems).get_indexer(rows["system"])
        z = rng.normal(size=(draws, n, NPV))
        seen = sys_idx >= 0
        z[:, seen] = flat["z_system"][:, sys_idx[seen]]
        length = np.column_stack(
            [cov["lengths"][:, 0], cov["lengths"][:, 1], np.zeros(n), cov["lengths"][:, 2]]
        )
        ls = flat["length_slope"]
        length_term = np.stack(
            [
                ls[:, 0:1] * length[None, :, 0],
                ls[:, 1:2] * length[None, :, 1],
                np.zeros((draws, n)),
                ls[:, 2:3] * length[None, :, 3],
                np.zeros((draws, n)),
                np.zeros((draws, n)),
            ],
            axis=2,
        )
        log_pv = (
            flat["intercept"][:, None, :NPV]
            + flat["size_slope"][:, None, :NPV] * cov["log_size"][None, :, None]
            + gpu_eff[:, :, :NPV]
            + length_term
            + flat["config_sd"][:, None, :NPV] * z * self._mask(PV)
        )
        c_pv = np.exp(log_pv)
        d_idx = pd.Index(self.design.draft_systems).get_indexer(rows["draft_system"])
        zd = rng.normal(size=(draws, n, 2))
        dseen = d_idx >= 0
        if dseen.any():
            zd[:, dseen] = flat["z_draft"][:, d_idx[dseen]]
        d_size = _drafter_log_size(rows)
        c_d = np.exp(
            flat["intercept"][:, None, NPV:]
            + flat["size_slope"][:, None, NPV:] * d_size[None, :, None]
            + gpu_eff[:, :, NPV:]
            + flat["config_sd"][:, None, NPV:] * zd * self._mask(DC)
        )
        k = rows["k"].to_numpy(dtype=float)
        e = np.broadcast_to(acceptance_of(rows), (draws, n)).copy()
        latent = np.isnan(e[0])
        if latent.any():
            ok = latent & dseen
            if "acceptance" not in flat or not np.array_equal(ok, latent):
                bad = int(np.flatnonzero(latent & ~dseen)[0]) if (latent & ~dseen).any() else 0
                raise DataError(
                    "give acceptance_length or alpha for SD rows of drafter "
                    "configurations the model has not seen",
                    record=f"row {bad}",
                    field="acceptance_length",
                )
            e[:, ok] = 1.0 + k[ok] * flat["acceptance"][:, d_idx[ok]]
        moe = cov["experts"] > 1
        zero = np.zeros((draws, n))
        if self.coverage and moe.any() and "moe_excess" in flat:
            ratio = np.exp(flat["moe_excess"][:, None, :]) * (
                np.exp(
                    flat["size_slope"][:, None, :NPV] * cov["log_total_over_active"][None, :, None]
                )
                - 1.0
            )
            inc = c_pv * ratio
        else:
            inc = np.zeros_like(c_pv)
        unsat = latency.Coefficients(
            c1p=c_pv[..., 0],
            c2p=c_pv[..., 1],
            c1v=c_pv[..., 2],
            c2v=c_pv[..., 3],
            c1s=c_pv[..., 4],
            c2s=c_pv[..., 5],
            c1d=c_d[..., 0],
            c2d=c_d[..., 1],
        )
        incr = latency.Coefficients(
            c1p=inc[..., 0],
            c2p=inc[..., 1],
            c1v=inc[..., 2],
            c2v=inc[..., 3],
            c1s=inc[..., 4],
            c2s=inc[..., 5],
            c1d=zero,
            c2d=zero,
        )
        rate = rows["request_rate"].astype(float).to_numpy()
        conc = rows["concurrency"].astype(float).to_numpy()
        args = dict(
            decode_len=rows["decode_len"].to_numpy(dtype=float),
            experts=cov["experts"],
            experts_per_token=cov["experts_per_token"],
            prefill_len=rows["prefill_len"].to_numpy(dtype=float),
        )
        lat = _latency(unsat, incr, k, e, rate, conc, moe, **args)
        base = _latency(unsat, incr, np.zeros(n), np.ones((draws, n)), rate, conc, moe, **args)
        with np.errstate(divide="ignore", invalid="ignore"):
            speedup = base / lat
        full = latency.Coefficients(*(u + s for u, s in zip(unsat, incr, strict=True)))
        _, c2 = latency.demand(full, k, e, args["decode_len"])
        with np.errstate(divide="ignore"):
            sat = 1.0 / c2
        return lat, speedup, sat

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
        model.build_model(training)
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


def _latency(
    unsat, incr, k, e, rate, conc, moe, *, decode_len, experts, experts_per_token, prefill_len
) -> np.ndarray:
    draws, n = e.shape
    out = np.empty((draws, n))
    dense = ~moe
    is_open = ~np.isnan(rate)
    c1, c2 = latency.demand(
        latency.Coefficients(*(np.asarray(u)[:, dense] for u in unsat)),
        k[dense],
        e[:, dense],
        decode_len[dense],
    )
    out[:, dense] = np.where(
        is_open[dense],
        latency.open_loop_latency(c1, c2, np.nan_to_num(rate[dense])),
        latency.closed_loop_latency(c1, c2, np.nan_to_num(conc[dense])),
    )
    if moe.any():
        sel = lambda c: latency.Coefficients(*(np.asarray(x)[:, moe] for x in c))  # noqa: E731
        u, s = sel(unsat), sel(incr)
        shared = (k[moe], e[:, moe], decode_len[moe])
        tail = (experts[moe], experts_per_token[moe], prefill_len[moe])
        open_l = latency.moe_open_loop_latency(u, s, *shared, np.nan_to_num(rate[moe]), *tail)
        closed_l = latency.moe_closed_loop_latency(u, s, *shared, np.nan_to_num(conc[moe]), *tail)
        out[:, moe] = np.where(is_open[moe], open_l, closed_l)
    return out


def _summarise(ds: xr.Dataset, rows: pd.DataFrame, interval: float) -> pd.DataFrame:
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
    for var in ("latency", "speedup", "saturation_rate"):
        x = ds[var].values.reshape(-1, ds.sizes["row"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out[f"{var}_median"] = np.nanquantile(x, 0.5, axis=0)
            out[f"{var}_lo"] = np.nanquantile(x, lo, axis=0)
            out[f"{var}_hi"] = np.nanquantile(x, hi, axis=0)
    x = ds["speedup"].values.reshape(-1, ds.sizes["row"])
    out["p_speedup_gt_1"] = np.mean(x > 1, axis=0)
    return out
