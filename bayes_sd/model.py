"""The hierarchical Bayesian latency model (docs/model.md): configure, build, fit, predict, save.

:class:`LatencyModel` holds a ``pm.Model`` and delegates each job to its module: the design of
a sweep to :mod:`bayes_sd.design`, the graph to :mod:`bayes_sd.graph`, sampling and diagnostics
to :mod:`bayes_sd.sampling`, predictions to :mod:`bayes_sd.predict`, files to
:mod:`bayes_sd.persist`. Priors are configuration (:mod:`bayes_sd.priors`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from bayes_sd import persist
from bayes_sd import predict as _predict
from bayes_sd._version import __version__
from bayes_sd.design import Design
from bayes_sd.errors import DataError
from bayes_sd.load_checks import warn_falling
from bayes_sd.priors import MODEL_CONFIG_KEYS, resolve_priors
from bayes_sd.sampling import (
    DEFAULT_SAMPLER,
    EXTRA_KEYS,
    ConvergenceWarning,
    check_sampler_config,
    convergence_summary,
    sample,
    target_accept,
    warn_if_unreliable,
)

__all__ = ["POPULATION_PARAMS", "ConvergenceWarning", "LatencyModel", "Prediction"]

Prediction = _predict.Prediction
# "auto" centring: hierarchically centred residuals for sweeps of many configurations each
# measured at several rates; non-centred otherwise. Measured: the demo (48 systems, 7.6 runs
# per series) mixes far better centred (min bulk ESS 124 vs 7 at 2 x 300 draws); centred, the
# CI recovery sweep (4 systems) gets 15 divergences (target_accept 0.95; non-centred 0), the
# demo's sparse split (48 systems, 2.7 runs per series) R-hat 1.54 at 4 x 500 draws, and
# SBC's sparse 12-system design mixed 10x better non-centred. Few systems with many
# well-measured series (notebook 01: 4 systems, 49 series, 7.8 runs per series): all
# non-centred, 363 s, R-hat 1.020, bulk ESS 182 (681 leapfrog steps per draw: the series shifts
# of one system moved together); all centred, 129 s, 1.019, 308; the series alone centred,
# 181 s / 172 s, 1.006 / 1.010, 678 / 549 (seeds 1, 2; 4 x 1,000 draws).
AUTO_CENTRED_SYSTEMS = 20
AUTO_CENTRED_RUNS_PER_SERIES = 5
AUTO_CENTRED_SERIES = 20
# Within one configuration the data pin C1 and C2 of each (k, acceptance) series, not the six to
# eight coefficients apart: residuals per coefficient left ridges (every draw at tree depth 10 on
# the demo). So residuals are one log-scale shift per level: on the target's coefficients per
# system, on the drafter's per draft system, on C2 per series (docs/model.md).
RESIDUALS = ("system", "draft", "series")
DEFAULT_RESIDUALS = RESIDUALS
# the population-level parameters: diagnosed after fitting, tabulated in reports
POPULATION_PARAMS = (
    "intercept", "size_slope", "gpus_slope", "length_slope", "gpu_sd", "engine_sd",
    "precision_sd", "system_sd", "draft_sd", "series_sd", "series_k_slope",
    "series_draft_sd", "series_draft_slope_sd",
    "moe_excess", "accept_logit", "accept_decay", "accept_logit_sd", "accept_decay_sd",
    "accept_sigma", "accept_pos_sigma", "kink_tokens", "verify_share", "capacity",
    "capacity_length_slope", "capacity_sd", "ttft_share", "burst_share", "sigma", "ttft_sigma",
    "tpot_sigma", "load_noise", "tpot_load_noise", "nu", "step_overhead", "step_sigma",
    "tail_level", "tail_slope", "tail_sigma", "tail_engine_sd", "tail_gpu_sd",
)  # fmt: skip


class LatencyModel:
    """Hierarchical Bayesian model of mean request latency under load, with and without SD.

    Parameters
    ----------
    model_config
        ``{"priors": {name: Prior}}`` overrides of any default of :mod:`bayes_sd.priors`
        (or :func:`bayes_sd.priors.load_model_config` of a YAML file), ``"coverage": False``
        to drop the MoE coverage term, ``"residuals"`` (a subset of
        ``("system", "draft", "series")``) and ``"centred"``: ``True`` (hierarchical
        centring), ``False`` (non-centred) or ``"auto"`` (the default: centred for sweeps of
        at least ``AUTO_CENTRED_SYSTEMS`` systems and ``AUTO_CENTRED_RUNS_PER_SERIES`` runs per
        series; with fewer systems but at least ``AUTO_CENTRED_SERIES`` series so measured, the
        series shifts alone; non-centred otherwise) residual shifts (for sparse or noisy
        sweeps; see the Validation page).
    sampler_config
        ``draws``, ``tune``, ``chains``, ``target_accept``, ``nuts_sampler`` (``"nutpie"``
        — the default, fastest by measurement —, ``"pymc"`` or ``"numpyro"``),
        ``adaptation`` (nutpie's mass matrix: ``"auto"``, the default — ``"draw_diag"`` for
        hierarchically centred residuals, ``"diag"`` for non-centred, as measured —,
        ``"draw_diag"``, ``"diag"`` or ``"low_rank"``), ``progressbar``, ``cores``.
        ``target_accept`` ``"auto"`` (the default) is 0.9 for centred residuals and 0.95 for
        non-centred ones (small or sparse sweeps, whose few-member spreads make funnels;
        measured, :data:`bayes_sd.sampling.AUTO_TARGET_ACCEPT`).

    Examples
    --------
    >>> import bayes_sd
    >>> model = bayes_sd.LatencyModel(sampler_config={"draws": 500})
    >>> idata = model.fit(bayes_sd.load_example("demo"), random_seed=1)  # doctest: +SKIP
    >>> model.predict(new_runs).summary                                 # doctest: +SKIP
    """

    def __init__(self, model_config: dict | None = None, sampler_config: dict | None = None):
        model_config = dict(model_config or {})
        unknown = sorted(set(model_config) - set(MODEL_CONFIG_KEYS))
        if unknown:
            raise ValueError(
                f"unknown model_config key(s): {', '.join(unknown)}; "
                f"known: {', '.join(MODEL_CONFIG_KEYS)}"
            )
        self.priors = resolve_priors(model_config.get("priors"))
        self.coverage = bool(model_config.get("coverage", True))
        centred = model_config.get("centred", "auto")
        if centred not in (True, False, "auto"):
            raise ValueError(f"model_config centred must be True, False or 'auto', not {centred!r}")
        self.centring = centred
        self.centred = centred is True  # "auto" decides when the model is built
        self.centred_series = False  # "auto" may centre the series shifts alone (build_model)
        self.residuals = tuple(model_config.get("residuals", DEFAULT_RESIDUALS))
        bad = sorted(set(self.residuals) - set(RESIDUALS))
        if bad:
            raise ValueError(
                f"unknown residual(s): {', '.join(bad)}; known: {', '.join(RESIDUALS)}"
            )
        self.sampler_config = check_sampler_config(sampler_config)
        self.model = None
        self.design: Design | None = None
        self.idata = None
        self.steps: pd.DataFrame | None = None
        self.diagnostics: dict[str, Any] | None = None

    @property
    def model_config(self) -> dict[str, Any]:
        config = {
            "priors": {k: persist.prior_spec(v) for k, v in sorted(self.priors.items())},
            "coverage": self.coverage,
            "residuals": list(self.residuals),
        }
        if self.centring != "auto":  # absent when default: a file's hash depends on it
            config["centred"] = self.centring
        return config

    @property
    def config_hash(self) -> str:
        return persist.config_hash(self.model_config)

    def build_model(self, sweep: pd.DataFrame, steps: pd.DataFrame | None = None):
        """Build (not sample) the PyMC model for ``sweep``; saturated runs are left out.

        ``steps``: an optional forward-pass timing table (:func:`bayes_sd.io.read_step_costs`)
        for a joint step-level likelihood (see :meth:`fit`)."""
        from bayes_sd.graph import GraphOptions, build_graph
        from bayes_sd.graph_side import step_design

        design = Design.from_sweep(sweep)
        warn_falling(design.rows, stacklevel=4)  # series the load law cannot fit
        self.design = design
        dense = design.runs_per_series >= AUTO_CENTRED_RUNS_PER_SERIES
        if self.centring == "auto":
            self.centred = len(design.systems) >= AUTO_CENTRED_SYSTEMS and dense
        # many well-measured series under few systems: their shifts centred on their own
        self.centred_series = (self.centring == "auto" and not self.centred and dense
                               and len(design.series) >= AUTO_CENTRED_SERIES)  # fmt: skip
        self.steps = steps
        step_rows = None if steps is None else step_design(steps, design)
        options = GraphOptions(self.centred, self.residuals, self.coverage,
                               centred_series=self.centred_series)  # fmt: skip
        self.model = build_graph(design, self.priors, options, step_rows)
        return self.model

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
        (``step_overhead``). ``sampler_kwargs`` override ``sampler_config`` for this fit
        (unknown keys are an error).

        Reports R-hat, bulk/tail ESS and divergences in ``.diagnostics`` and warns
        (:class:`ConvergenceWarning`) with advice when they are bad.
        """
        unknown = sorted(set(sampler_kwargs) - set(DEFAULT_SAMPLER) - set(EXTRA_KEYS))
        if unknown:
            raise TypeError(
                f"fit() got unknown sampler keyword(s) {', '.join(unknown)}; "
                f"known: {', '.join([*DEFAULT_SAMPLER, *EXTRA_KEYS])}"
            )
        cfg = check_sampler_config({**self.sampler_config, **sampler_kwargs})
        model = self.build_model(sweep, steps)
        adaptation = self._adaptation(cfg["adaptation"])
        cfg["target_accept"] = target_accept(cfg["target_accept"], self.centred)
        self.idata = sample(model, cfg, random_seed=random_seed, adaptation=adaptation)
        backend = cfg["nuts_sampler"]
        if backend == "nutpie":
            backend += ":" + adaptation
        self.diagnostics = self._diagnose(backend, cfg["target_accept"])
        return self.idata

    def add_log_likelihood(self):
        """Add the pointwise log-likelihood of every observed value to ``.idata`` (group
        ``log_likelihood``, one variable per measured metric), so that ``arviz.loo`` and
        ``arviz.compare`` work on the fit; :meth:`save` keeps it. Not computed by :meth:`fit`:
        it compiles the likelihood once more and holds observations × draws numbers."""
        import pymc as pm

        if self.idata is None or self.model is None:
            raise RuntimeError("fit (or load) the model before computing its log-likelihood")
        pm.compute_log_likelihood(self.idata, model=self.model, progressbar=False)
        return self.idata

    def add_posterior_predictive(self, random_seed: int | None = None):
        """Add posterior predictive draws of every observed value to ``.idata`` (group
        ``posterior_predictive``) for ArviZ's predictive checks (``arviz.plot_ppc_dist``);
        :meth:`save` keeps it. For new configurations use :meth:`predict`."""
        import pymc as pm

        if self.idata is None or self.model is None:
            raise RuntimeError("fit (or load) the model before sampling its predictive")
        pm.sample_posterior_predictive(self.idata, model=self.model, random_seed=random_seed,
                                       extend_inferencedata=True, progressbar=False)  # fmt: skip
        return self.idata

    def _adaptation(self, adaptation: str) -> str:
        """nutpie's mass-matrix adaptation; "auto" by the residuals' form (see ADAPTATIONS)."""
        if adaptation != "auto":
            return adaptation
        return "draw_diag" if self.centred else "diag"

    def _diagnose(self, backend: str = "nutpie:diag", accept: float = 0.9) -> dict[str, Any]:
        out = convergence_summary(self.idata, POPULATION_PARAMS)
        out["target_accept"] = accept
        out["runs_fitted"] = len(self.design.rows)
        out["runs_left_out_saturated"] = self.design.n_saturated
        other = "non-centred" if self.centred else "hierarchically centred"
        advice = (
            f"The residuals are {'centred' if self.centred else 'non-centred'}: the "
            f"{other} form (model_config={{'centred': {not self.centred}}}; bayes-sd fit "
            f"--model-config FILE.yaml with 'centred: {str(not self.centred).lower()}') may "
            "mix better for this design."
        )
        if backend.startswith("nutpie:"):  # measured, docs/model.md (Benchmark)
            other = "diag" if backend == "nutpie:draw_diag" else "draw_diag"
            advice += (
                f" nutpie's other mass-matrix adaptation (sampler_config adaptation={other!r}, "
                f"bayes-sd fit --adaptation {other}) may mix better: on the simulated demo "
                "sweep 'draw_diag' had 1.7x the ESS per second of 'diag' (centred), on its "
                "sparse split 'diag' mixed, 'draw_diag' not (non-centred)."
            )
        warn_if_unreliable(out, stacklevel=4, advice=advice)
        return out

    # predict(configs, *, max_draws=1000, interval=0.9, random_seed=None, chunk_rows=None,
    # noise=False): see bayes_sd.predict.predict
    predict = _predict.predict

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike) -> Path:
        """Write the posterior, configuration, its hash, version and training data (NetCDF);
        atomic. ``LatencyModel.load(path)`` gives identical predictions."""
        if self.idata is None or self.design is None:
            raise RuntimeError("fit the model before saving it")
        tables = {"training": self.design.sweep}
        if self.steps is not None:
            tables["steps"] = self.steps
        attrs = {
            "model_config": self.model_config,
            "config_hash": self.config_hash,
            "structure": persist.structure_hash(self.model, self.model_config),
            "sampler_config": self.sampler_config,
            "diagnostics": self.diagnostics or {},
        }
        return persist.save_tree(path, self.idata, kind="LatencyModel", tables=tables,
                                 attrs=attrs)  # fmt: skip

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyModel:
        """Load a model written by :meth:`save`; a file of another structure is a DataError."""
        file = str(path)
        tree, attrs, tables = persist.load_tree(
            path, kind="LatencyModel", tables={"training": str, "steps": None},
            json_keys=("model_config", "sampler_config", "diagnostics"),
        )  # fmt: skip
        persist.require(attrs, ("model_config", "config_hash", "structure", "sampler_config"),
                        file)  # fmt: skip
        if "training" not in tables:
            raise DataError("damaged model file: no training data", file=file,
                            field="bayes_sd_training")  # fmt: skip
        try:
            model = cls(model_config=attrs["model_config"],
                        sampler_config=attrs["sampler_config"])  # fmt: skip
        except (ValueError, TypeError) as err:
            raise DataError(f"damaged configuration: {err}", file=file,
                            field="bayes_sd_model_config") from err  # fmt: skip
        if model.config_hash != attrs["config_hash"]:
            raise DataError(
                "the model configuration does not match its hash (another bayes_sd version, "
                "or an edited file)",
                file=file,
                field="bayes_sd_config_hash",
            )
        model.build_model(tables["training"], tables.get("steps"))
        if persist.structure_hash(model.model, model.model_config) != attrs["structure"]:
            raise DataError(
                "the file was written by a model of a different structure (another "
                f"bayes_sd version or configuration; file: {attrs.get('version')}, "
                f"this: {__version__})",
                file=file,
                field="bayes_sd_structure",
            )
        model.idata = tree
        model.diagnostics = attrs.get("diagnostics") or {}
        return model
