"""The PyMC graph of :class:`~bayes_sd.LatencyModel`, built from short term builders.

:func:`build_graph` reads as the model does (docs/model.md): data → population laws → GPU
effects → configuration residuals → MoE coverage → acceptance → demand per series and run →
latency → likelihood (→ joint step likelihood). Each builder owns its priors (from
:mod:`bayes_sd.priors`) and dims; the algebra comes from :mod:`bayes_sd.latency` and
:mod:`bayes_sd.laws`, so no formula is written here twice.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt

from bayes_sd import latency, laws
from bayes_sd.coefs import (
    COEF_SLOPE,
    COEFS,
    DRAFT_COEFS,
    LENGTH_COEFS,
    LEVEL,
    REF_TARGET_PARAMS,
    SLOPE_COEFS,
    TARGET_COEFS,
)
from bayes_sd.design import Design
from bayes_sd.priors import make_likelihood

__all__ = ["GraphOptions", "build_graph"]

NPV = len(TARGET_COEFS)
PV_LEVEL = LEVEL[:NPV]


@dataclass(frozen=True)
class GraphOptions:
    """How the graph is built: residual groups, their form, the MoE coverage term."""

    centred: bool
    residuals: tuple[str, ...]
    coverage: bool


def build_graph(design: Design, priors: dict, options: GraphOptions, step_rows=None) -> pm.Model:
    """The ``pm.Model`` of ``design`` (saturated runs already left out)."""
    with pm.Model(coords=_coords(design)) as model:
        b = _Builder(design, priors, options)
        data = b.data()
        pop = b.population()  # intercepts, slopes, GPU effects
        c_pv, c_d = b.configuration_coefficients(pop)  # laws + residual shifts
        inc = b.moe_increments(pop, c_pv)  # φ-weighted cost of the experts (MoE targets)
        cycles = data["decode_len"] / b.acceptance(data)  # D / E per run
        c1, c2 = b.demand(c_pv, c_d, inc, cycles)  # per series, then per run
        b.likelihood(data, c1, c2)
        if step_rows is not None:
            b.step_likelihood(step_rows, pop)
    return model


def _coords(design: Design) -> dict:
    return {
        "coef": list(COEFS),
        "coef_pv": list(TARGET_COEFS),
        "coef_d": list(DRAFT_COEFS),
        "length_coef": list(LENGTH_COEFS),
        "slope_coef": list(SLOPE_COEFS),
        "level": ["1", "2"],
        "gpu": design.gpus,
        "system": design.systems,
        "draft_system": design.draft_systems or ["none"],
        "series": design.series,
        "source": design.sources,
        "run": design.rows["run_id"].astype(str).tolist(),
    }


class _Builder:
    def __init__(self, design: Design, priors: dict, options: GraphOptions):
        self.d = design
        self.priors = priors
        self.opt = options
        self.moe = options.coverage and design.has_moe

    def prior(self, name: str):
        return self.priors[name].create_variable(name)

    # ------------------------------------------------------------------ data

    def data(self) -> dict:
        d = self.d
        known = d.acceptance
        return {
            "k": pm.Data("k", d.k, dims="run"),
            "e_known": pm.Data("acceptance_known", np.nan_to_num(known, nan=1.0), dims="run"),
            "decode_len": pm.Data("decode_len", d.decode_len, dims="run"),
            "rate": pm.Data("rate", d.rate, dims="run"),
            "conc": pm.Data("concurrency", d.concurrency, dims="run"),
            "open": pm.Data("open_loop", d.is_open.astype(float), dims="run"),
            # observed as data, so a compiled model can be refitted to new measurements of the
            # same design (nutpie's with_data; used by simulation-based calibration)
            "log_lat": pm.Data("log_latency_obs", d.log_latency, dims="run"),
        }

    # ------------------------------------------------------------------ population

    def population(self) -> dict:
        intercept = self.prior("intercept")
        size_slope = self.prior("size_slope")[COEF_SLOPE]
        length_slope = self.prior("length_slope")
        return {
            "intercept": intercept,
            "size_slope": size_slope,
            "length_slope": length_slope,
            "gpu_effect": self.gpu_effects(),
        }

    def gpu_effects(self):
        """GPU effects sum to zero over the fitted GPUs (no ridge against the intercept). One
        spread for all coefficients by default (a prior with dims "coef" gives one per
        coefficient): with few GPUs, one contrast per coefficient cannot inform a spread of its
        own, and per-coefficient spreads left a banana (small gpu_sd, large z) that made the
        demo's divergences and doubled its trajectories (docs/model.md). Centred with the
        residuals (the data pin the effects), non-centred otherwise."""
        gpu_sd = self.prior("gpu_sd")
        sd_col = gpu_sd[:, None] if gpu_sd.ndim else gpu_sd
        if len(self.d.gpus) > 1 and self.opt.centred:
            level_gpu = pm.ZeroSumNormal("level_gpu", sigma=sd_col, dims=("coef", "gpu"))
            return pm.Deterministic("gpu_effect", level_gpu.T, dims=("gpu", "coef"))
        if len(self.d.gpus) > 1:
            gpu_z = pm.ZeroSumNormal("gpu_z", sigma=1.0, dims=("coef", "gpu"))
            return pm.Deterministic("gpu_effect", (sd_col * gpu_z).T, dims=("gpu", "coef"))
        return pm.Deterministic("gpu_effect", pt.zeros((1, len(COEFS))), dims=("gpu", "coef"))

    # ------------------------------------------------------------------ configurations

    def configuration_coefficients(self, pop):
        """Per system (target) and draft system (drafter): the population law plus one
        log-scale shift per level — what the data of one configuration identify."""
        d = self.d
        cov = d.system_covariates
        law_pv = laws.log_coefficients(
            pop["intercept"][None, :NPV],
            pop["size_slope"][None, :NPV],
            cov["log_size"][:, None],
            pop["gpu_effect"][d.system_gpu, :NPV],
            pop["length_slope"][None, :],
            cov["lengths"],
            TARGET_COEFS,
        )
        d_gpu, d_size = d.draft_gpu_and_size
        law_d = laws.log_coefficients(
            pop["intercept"][None, NPV:],
            pop["size_slope"][None, NPV:],
            d_size[:, None],
            pop["gpu_effect"][d_gpu, NPV:],
            names=DRAFT_COEFS,
        )
        # centred on the system's target demand and on the drafting law (hierarchical
        # centring, see shifts and system_anchor)
        sys_shift = self.shifts("system", len(d.systems), self.system_anchor(law_pv))
        draft_shift = self.shifts("draft", len(d_size), law_d[:, 0])
        log_pv = law_pv + sys_shift[:, PV_LEVEL]
        c_pv = pm.Deterministic("c_system", pt.exp(log_pv), dims=("system", "coef_pv"))
        c_d = pm.Deterministic(
            "c_draft", pt.exp(law_d + draft_shift), dims=("draft_system", "coef_d")
        )
        return c_pv, c_d

    def system_anchor(self, law_pv):
        """(system, level) log demand of each system's target at a representative run (its
        first baseline run, else its first run, tokens per cycle 1 + 0.7 k where not measured):
        ``log(c1p + cycles (c1v + c1s))`` and the same for level 2, from the population laws.
        What the system's runs pin is this sum, not its parts; centred on it, a system's levels
        no longer move with the split the laws give it."""
        rep = self.d.system_representative
        k = self.d.k[rep]
        e = self.d.acceptance[rep]
        e = np.where(np.isnan(e), 1.0 + 0.7 * k, e)
        c = pt.exp(law_pv)
        target = latency.Coefficients(
            **{n: c[:, TARGET_COEFS.index(n)] for n in TARGET_COEFS}, c1d=0.0, c2d=0.0
        )
        level1, level2 = latency.demand(target, k, e, self.d.decode_len[rep])
        return pt.log(pt.stack([level1, level2], axis=1))

    def shifts(self, group: str, size: int, anchor):
        """Log-scale shifts (size, level) of a residual group, zeros when the group is off.

        Systems shift both levels of the target's coefficients, draft systems level 1 of the
        drafter's (``c1d``), series level 2 (``C2``). Drafting's level 2 (``c2d``, per request
        in flight) has no shift of its own: the series shifts of a draft system's draft lengths
        carry it, and a second, overlapping spread left the split of level-2 variation between
        drafter and series unidentified (``draft_sd[2]`` at bulk ESS 7 of 600 draws on the
        demo). Likewise a level-1 series shift fitted to 0.00 on the demo and made a funnel.

        Centred is *hierarchical centring* (Gelfand, Sahu & Carlin 1995): the free variable is
        the configuration's own log level, ``level_<group> ~ Normal(anchor, sd)``, and the shift
        is ``level − anchor`` — the same model as ``shift ~ Normal(0, sd)`` (a translation, unit
        Jacobian), but the likelihood sees the level directly. A configuration measured at
        several rates to a few percent pins its level, and the population intercepts no longer
        trade off against every shift at once (with free shifts, "intercept of c1v up, all 48
        system shifts down" was the demo posterior's largest eigen-direction). ``anchor`` is
        what the data pin: the log demand of a system's target at a representative run
        (:meth:`system_anchor`), the drafting law (draft systems), the log C2 of a series' most
        loaded run (series). Non-centred: ``shift = sd · z``, ``z ~ Normal(0, 1)``, for sparse
        or noisy sweeps (calibration)."""
        if group not in self.opt.residuals:
            return pt.zeros((size, 2))
        sd = self.prior(f"{group}_sd")
        dims = {"system": ("system", "level"), "draft": ("draft_system",)}.get(group, ("series",))
        if self.opt.centred:
            level = pm.Normal(f"level_{group}", anchor, sd, dims=dims)
            shift = pm.Deterministic(f"shift_{group}", level - anchor, dims=dims)
        else:
            z = pm.Normal(f"shift_{group}_z", 0.0, 1.0, dims=dims)
            shift = pm.Deterministic(f"shift_{group}", z * sd, dims=dims)
        if group == "system":
            return shift
        zeros = pt.zeros(size)
        return pt.stack([shift, zeros] if group == "draft" else [zeros, shift], axis=1)

    # ------------------------------------------------------------------ MoE coverage

    def moe_increments(self, pop, c_pv):
        """``c_u ρ`` per system and target coefficient (zero for dense systems), weighted by
        the coverage φ in :meth:`demand`; None without MoE targets (or coverage off)."""
        if not self.moe:
            return None
        cov = self.d.system_covariates
        slope = pop["size_slope"][:NPV]
        excess = self.moe_excess(slope)
        return c_pv * laws.moe_ratio(
            excess[None, :], slope[None, :], cov["log_total_over_active"][:, None]
        )

    def moe_excess(self, slope):
        """``moe_excess``: hierarchically centred with the residuals on the log increment ``ρ``
        of the MoE targets' mean log(N / N_active) when its prior is a location family (``mu``
        shifted by the anchor): the data pin ρ, and with ``moe_excess`` free, it traded off
        against the size slopes along a ridge (``size_slope[c1v]`` at bulk ESS 10 of 1,200
        draws on the demo). A prior without a fixed ``mu`` is used as it is, non-centred."""
        prior = self.priors["moe_excess"]
        mu = prior.parameters.get("mu")
        mu = np.asarray(mu, dtype=float) if isinstance(mu, int | float | list) else mu
        if not self.opt.centred:
            return prior.create_variable("moe_excess")
        if not isinstance(mu, np.ndarray):
            warnings.warn(
                f"the moe_excess prior ({prior.distribution}) has no fixed location 'mu' to "
                "centre: it is sampled as given (non-centred) with centred residuals",
                UserWarning,
                stacklevel=4,
            )
            return prior.create_variable("moe_excess")
        cov = self.d.system_covariates
        moe = cov["experts"] > 1
        grow = pt.expm1(slope * np.mean(cov["log_total_over_active"][moe]))
        anchor = 0.5 * pt.log(grow**2 + 1e-4)  # log |e^(s log r) − 1|, finite at s = 0
        level = prior.deepcopy()
        level.parameters["mu"] = mu + anchor
        level = level.create_variable("moe_level")
        return pm.Deterministic("moe_excess", level - anchor, dims=prior.dims)

    def coverage(self, tokens, idx):
        """Coverage φ(T) at the runs' measured loads: data (the prompt and the batch are
        measured, B = λ L open loop, N closed), computed once, not per gradient."""
        cov = self.d.system_covariates
        return latency.expert_coverage(tokens, cov["experts"][idx], cov["experts_per_token"][idx])

    # ------------------------------------------------------------------ acceptance, demand

    def acceptance(self, data):
        """Tokens per cycle per run: measured, from alpha, or latent per draft system."""
        latent = np.isnan(self.d.acceptance)
        if not latent.any():
            return data["e_known"]
        accept = self.prior("acceptance")
        return pt.switch(latent, 1.0 + data["k"] * accept[self.d.draft_idx], data["e_known"])

    def demand(self, c_pv, c_d, inc, cycles):
        """``C1, C2`` per run (docs/model.md §2): ``C = A + cycles (B + φ_v G)``, the terms of
        :func:`bayes_sd.latency.cycle_terms` per series (``G``: the MoE increments of
        verification at its coverage φ_v) with the series shift on level 2. Everything but
        cycles and φ_v at the run's measured batch is shared by a series' runs, so the runs
        gather one (series, 4–6) table: per-run gathers of the coefficients (and their
        gradients, scatter-adds) were half of the gradient's time."""
        d = self.d
        first = d.series_first
        ser_sys, ser_dsys = d.system_idx[first], d.draft_idx[first]
        k_s = d.k[first]
        c_s, cd_s = c_pv[ser_sys], c_d[ser_dsys]

        def series_coefs(target, drafter):
            return latency.Coefficients(
                **{n: target[:, i] for i, n in enumerate(TARGET_COEFS)},
                **{n: drafter[:, i] for i, n in enumerate(DRAFT_COEFS)},
            )

        terms = list(latency.cycle_terms(series_coefs(c_s, cd_s), k_s))  # A1 B1 A2 B2
        if self.moe:  # φ_p · c_u ρ on the prefill; G1, G2 from verification's increments
            inc = inc[ser_sys]
            prefill = d.rows["prefill_len"].to_numpy(dtype=float)[first]
            phi_p = pm.Data("coverage_p", self.coverage(prefill, ser_sys), dims="series")
            terms[0] = terms[0] + phi_p * inc[:, TARGET_COEFS.index("c1p")]
            terms[2] = terms[2] + phi_p * inc[:, TARGET_COEFS.index("c2p")]
            tokens = np.maximum(d.batch, 1.0) * (d.k + 1.0)
            phi_v = pm.Data("coverage_v", self.coverage(tokens, d.system_idx), dims="run")
            g = latency.cycle_terms(series_coefs(inc, pt.zeros_like(cd_s)), k_s)
            terms += [g[1], g[3]]  # G1, G2
        # series residuals: a log-scale shift of C2 per series, centred on the log C2 of the
        # series' most loaded run (the run that pins it). Centred on the system's log c2v
        # instead, the population's split of C2 into c2p, c2v, c2d moved every series level at
        # once: 654 leapfrog steps per draw on the demo, 40 now
        rep = d.series_most_loaded
        b2 = terms[3] + phi_v[rep] * terms[5] if self.moe else terms[3]
        anchor = pt.log(latency.per_request(terms[2], b2, cycles[rep]))
        scale2 = pt.exp(self.shifts("series", len(d.series), anchor)[:, 1])
        for i in (2, 3, 5)[: 3 if self.moe else 2]:
            terms[i] = scale2 * terms[i]
        run = pt.stack(terms, axis=1)[d.series_idx]  # (run, 4 or 6)
        t = [run[:, i] for i in range(len(terms))]
        b1 = t[1] + phi_v * t[4] if self.moe else t[1]
        b2 = t[3] + phi_v * t[5] if self.moe else t[3]
        return latency.per_request(t[0], b1, cycles), latency.per_request(t[2], b2, cycles)

    # ------------------------------------------------------------------ likelihoods

    def likelihood(self, data, c1, c2):
        """Robust likelihood of the log mean latency, its scale growing with the queueing share
        of latency (:func:`bayes_sd.laws.noise_scale`): a finite run near saturation is much
        noisier than at light load. Only the load modes the sweep has enter the graph (an
        expression nothing uses is not compiled; on the demo, open loop only: 0.199 → 0.174 ms
        per gradient)."""
        is_open = self.d.is_open

        def by_mode(open_value, closed_value):
            if is_open.all():
                return open_value
            if not is_open.any():
                return closed_value
            return pt.switch(data["open"] > 0.5, open_value, closed_value)

        open_lat = latency.open_loop_latency_smooth(c1, c2, data["rate"])
        lat = by_mode(open_lat, latency.closed_loop_latency(c1, c2, data["conc"]))
        pm.Deterministic("latency", lat, dims="run")
        share = by_mode(
            laws.queue_share_open(open_lat, c1), laws.queue_share_closed(data["conc"], c1, c2)
        )
        sigma = self.prior("sigma")
        load_noise = self.prior("load_noise")
        make_likelihood(
            self.priors["likelihood"],
            "log_latency",
            mu=pt.log(lat),
            sigma=laws.noise_scale(sigma[self.d.source_idx], load_noise, share),
            observed=data["log_lat"],
            dims="run",
            nu=lambda: self.prior("nu"),
        )

    def step_likelihood(self, sr: pd.DataFrame, pop) -> None:
        """Forward-pass timings of the sweep's dense targets on its GPUs (docs/model.md, "Step
        level"): a decode pass over B sequences at context ctx costs ``c1v + B · c2v(ctx)`` and
        a one-sequence prefill of P tokens ``c1p(P)``, with the coefficients of the population
        laws (no configuration shifts) less a serving overhead per level (scheduling, sampling
        and the like are in the served latency, not in an isolated forward pass)."""
        model = pm.modelcontext(None)
        model.add_coord("step", np.arange(len(sr)))
        g = pd.Index(self.d.gpus).get_indexer(sr["gpu"])
        size = np.log(sr["params_active"].to_numpy(dtype=float) / REF_TARGET_PARAMS)
        ctx_len = np.log(np.maximum(sr["ctx"].to_numpy(dtype=float), 1.0) / 1024)
        p_len = np.log(sr["tokens"].to_numpy(dtype=float) / 1024)
        names = ("c1v", "c2v", "c1p")
        idx = [COEFS.index(n) for n in names]
        law = laws.log_coefficients(
            pop["intercept"][idx],
            pop["size_slope"][idx],
            size[:, None],
            pop["gpu_effect"][g][:, idx],
            pop["length_slope"],
            np.stack([p_len, p_len, ctx_len], axis=1),
            names,
        )
        overhead = self.prior("step_overhead")  # log serving overhead per level
        c1v, c2v, c1p = (pt.exp(law[:, i] - overhead[LEVEL[j]]) for i, j in enumerate(idx))
        is_decode = (sr["phase"] == "decode").to_numpy()
        batch = sr["batch"].to_numpy(dtype=float)
        make_likelihood(
            self.priors["step_likelihood"],
            "log_step_time",
            mu=pt.log(pt.switch(is_decode, c1v + batch * c2v, c1p)),
            sigma=self.prior("step_sigma"),
            observed=np.log(sr["time_s"].to_numpy(dtype=float)),
            dims="step",
            nu=lambda: self.prior("step_nu"),
        )
