"""The PyMC graph of :class:`~bayes_sd.LatencyModel`, built from short term builders.

:func:`build_graph` reads as the model does (docs/model.md): data → population laws →
categorical effects (GPU, engine, precision) → configuration residuals → MoE coverage →
acceptance → the terms of each series → TTFT, TPOT and E2E of each run (the load law of
:mod:`bayes_sd.phases`) → one likelihood per measured metric (→ joint step likelihood). Each
builder owns its priors (from :mod:`bayes_sd.priors`) and dims; the algebra comes from
:mod:`bayes_sd.latency`, :mod:`bayes_sd.laws` and :mod:`bayes_sd.phases`, so no formula is
written here twice.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt

from bayes_sd import acceptance, latency, laws, phases
from bayes_sd import graph_side as side
from bayes_sd.coefs import (
    COEF_SLOPE,
    COEFS,
    DRAFT_COEFS,
    LENGTH_COEFS,
    LEVEL,
    SLOPE_COEFS,
    TARGET_COEFS,
)
from bayes_sd.design import EFFECTS, Design, Points, log_gpus
from bayes_sd.priors import make_likelihood, shifted_variable

__all__ = ["GraphOptions", "build_graph"]

NPV = len(TARGET_COEFS)
PV_LEVEL = LEVEL[:NPV]
OPEN_FLOOR = 0.02  # the smooth floor on 1 − λ C2 of the open-loop likelihood
# which metric's mean enters the likelihood: TTFT and TPOT where both are measured (E2E is
# then their sum, TTFT + (D − 1) TPOT, to a few percent: counting it too would count the TPOT
# twice and narrow every interval); E2E where one of them is missing
METRICS = ("latency", "ttft", "tpot")


@dataclass(frozen=True)
class GraphOptions:
    """How the graph is built: residual groups, their form, the MoE coverage term."""

    centred: bool
    residuals: tuple[str, ...]
    coverage: bool
    # the phases once per load point (design.Points); False: once per run (the same model
    # where replicates share their batch; kept to measure the saving, benchmarks/bench_points.py)
    by_point: bool = True
    # the series shifts centred even when the rest is not (many series, each measured at
    # several loads, under few systems: model.AUTO_CENTRED_SERIES)
    centred_series: bool = False


def build_graph(design: Design, priors: dict, options: GraphOptions, step_rows=None) -> pm.Model:
    """The ``pm.Model`` of ``design`` (saturated and excluded runs already left out)."""
    points = design.points if options.by_point else Points.each(design.batch)
    with pm.Model(coords=_coords(design, points)) as model:
        b = _Builder(design, priors, options, points)
        data = b.data()
        pop = b.population()  # intercepts, slopes, GPU / engine / precision effects
        c_pv, c_d = b.configuration_coefficients(pop)  # laws + residual shifts
        inc = b.moe_increments(pop, c_pv)  # cost of the experts a step touches (MoE targets)
        tokens = b.acceptance(data)  # E per run
        terms = b.series_terms(c_pv, c_d, inc, data, tokens)  # per series, then per run
        predicted = b.phases(data, terms, tokens)  # TTFT, TPOT, E2E per run
        b.likelihoods(data, predicted)
        side.tails(b, data, predicted)  # the percentiles' ratios to their means
        if step_rows is not None:
            side.step_likelihood(b, step_rows, pop)
    return model


def _coords(design: Design, points: Points) -> dict:
    coords = {
        "coef": list(COEFS),
        "coef_pv": list(TARGET_COEFS),
        "coef_d": list(DRAFT_COEFS),
        "length_coef": list(LENGTH_COEFS),
        "slope_coef": list(SLOPE_COEFS),
        "level": ["1", "2"],
        "system": design.systems,
        "draft_system": design.draft_systems or ["none"],
        "series": design.series,
        "sd_series": design.sd_series or ["none"],
        "source": design.sources,
        "run": design.rows["run_id"].astype(str).tolist(),
        # a load point is labelled by its first run
        "point": design.rows["run_id"].astype(str).to_numpy()[points.first].tolist(),
        "tail": list(laws.TAILS),
        "accept_group": design.acceptance_law.groups or ["none"],
        "accept_combo": design.acceptance_law.combos or ["none"],
    }
    for effect in EFFECTS:
        coords[effect] = design.levels(effect)
    return coords


class _Builder:
    def __init__(self, design: Design, priors: dict, options: GraphOptions, points: Points):
        self.d = design
        self.priors = priors
        self.opt = options
        self.moe = options.coverage and design.has_moe
        # the phases are computed per load point (design.Points), the likelihoods per run
        self.points = points
        self.at = self.points.first
        self.open = design.is_open[self.at]
        self.measured = {m: ~np.isnan(design.log_mean(m)) for m in METRICS}
        both = self.measured["ttft"] & self.measured["tpot"]
        self.fit = {"ttft": both, "tpot": both, "latency": self.measured["latency"] & ~both}

    def prior(self, name: str):
        """The variable of the prior ``name`` (created on first use, then reused); a number in
        the priors is a fixed value."""
        model = pm.modelcontext(None)
        if name in model.named_vars:
            return model[name]
        spec = self.priors[name]
        if isinstance(spec, float):
            return pt.constant(spec)
        return spec.create_variable(name)

    @property
    def wave_on(self) -> bool:
        """Whether runs' opening waves enter the model: some closed-loop run gives its request
        count and ``burst_share`` is on."""
        return bool((self.d.opening > 0).any()) and not side.off(self.priors, "burst_share")

    def by_mode(self, open_value, closed_value):
        """Only the load modes the sweep has enter the graph (an unused expression is not
        compiled: on the open-loop demo, 0.199 → 0.174 ms per gradient)."""
        if self.open.all():
            return open_value
        if not self.open.any():
            return closed_value
        return pt.switch(self.open, open_value, closed_value)

    # ------------------------------------------------------------------ data

    def data(self) -> dict:
        """The inputs of the phases per load point; the measurements per run."""
        d, at = self.d, self.at
        known = d.acceptance[at]
        out = {
            "k": pm.Data("k", d.k[at], dims="point"),
            "e_known": pm.Data("acceptance_known", np.nan_to_num(known, nan=1.0), dims="point"),
            "decode_len": pm.Data("decode_len", d.decode_len[at], dims="point"),
            "rate": pm.Data("rate", d.rate[at], dims="point"),
            "conc": pm.Data("concurrency", d.concurrency[at], dims="point"),
            "engines": pm.Data("engines", d.engines[at], dims="point"),
            # the measured batch per engine, where the open-loop likelihood takes the
            # load-dependent terms (the coverage and the roofline)
            "batch": pm.Data("batch", np.maximum(self.points.batch, 1e-3), dims="point"),
            # the share of each closed-loop run's requests in its opening wave
            "opening": pm.Data("opening", d.opening[at], dims="point"),
        }
        # observed as data, so a compiled model can be refitted to new measurements of the same
        # design (nutpie's with_data; used by simulation-based calibration)
        for metric in METRICS:
            name = "log_latency_obs" if metric == "latency" else f"log_{metric}_obs"
            out[metric] = pm.Data(name, np.nan_to_num(d.log_mean(metric)), dims="run")
        for tail in laws.TAILS:  # a percentile's log ratio to its metric's mean, where both are
            ratio = d.tail_ratio(tail)
            if ratio is not None:
                out[tail] = pm.Data(f"log_{tail}_obs", np.nan_to_num(ratio), dims="run")
        return out

    # ------------------------------------------------------------------ population

    def population(self) -> dict:
        size_slope = self.prior("size_slope")[COEF_SLOPE]
        gpus_slope = self.prior("gpus_slope")[COEF_SLOPE]
        length_slope = self.prior("length_slope")
        intercept = self.intercept(size_slope, gpus_slope, length_slope)
        effects = {e: self.effects(e) for e in EFFECTS}
        return {"intercept": intercept, "size_slope": size_slope, "gpus_slope": gpus_slope,
                "length_slope": length_slope, "effects": effects}  # fmt: skip

    def intercept(self, size_slope, gpus_slope, length_slope):
        """The intercepts (log coefficients at the reference sizes, one GPU and 1,024-token
        lengths), sampled where the data are: ``intercept_centre`` is the log coefficient at the
        design's mean covariates (log sizes, log GPUs, lengths), ``intercept`` =
        ``intercept_centre`` − slopes · means. The same prior (a unit-Jacobian shift of its
        location given the slopes), without the ridge that sizes or lengths far from the
        references make: with one target (InferenceX: 37 B active against the 4 B reference)
        the data pin only intercept + slope · 2.2, and the two moved
        along a line (bulk ESS 111 of 600)."""
        d = self.d
        centre = d.covariate_centre
        where = {c: i for i, c in enumerate(LENGTH_COEFS)}
        lengths = [length_slope[where[c]] * centre["lengths"][where[c]] if c in where
                   else pt.constant(0.0) for c in COEFS]  # fmt: skip
        shift = (size_slope * centre["log_size"] + gpus_slope * centre["log_gpus"]
                 + pt.stack(lengths))  # fmt: skip
        return shifted_variable(self.priors["intercept"], "intercept", "intercept_centre", shift,
                                dims="coef")  # fmt: skip

    def effects(self, effect: str):
        """(level, coef) effects of a GPU (type and count), engine or weight precision: they
        sum to zero over the fitted levels (no ridge against the intercept). One spread for all
        coefficients by default (a prior with dims "coef" gives one per coefficient): with few
        levels, one contrast per coefficient cannot inform a spread of its own, and
        per-coefficient spreads left a banana (small sd, large z) that made the demo's
        divergences and doubled its trajectories (docs/model.md). Centred with the residuals
        (the data pin the effects), non-centred otherwise; none with one level."""
        levels = self.d.levels(effect)
        name = f"{effect}_effect"
        if len(levels) < 2:
            return pm.Deterministic(name, pt.zeros((1, len(COEFS))), dims=(effect, "coef"))
        sd = self.prior(f"{effect}_sd")
        sd_col = sd[:, None] if sd.ndim else sd
        if self.opt.centred:
            level = pm.ZeroSumNormal(f"level_{effect}", sigma=sd_col, dims=("coef", effect))
            return pm.Deterministic(name, level.T, dims=(effect, "coef"))
        z = pm.ZeroSumNormal(f"{effect}_z", sigma=1.0, dims=("coef", effect))
        return pm.Deterministic(name, (sd_col * z).T, dims=(effect, "coef"))

    def effect_sum(self, pop, table: pd.DataFrame, cols: slice):
        """Sum of the categorical effects (GPU type, engine, precision) and of the GPU count's
        (``gpus_slope · log GPUs``) for the rows of ``table`` (systems, draft systems)."""
        total = pop["gpus_slope"][None, cols] * log_gpus(table)[:, cols]
        for effect in EFFECTS:
            idx = self.d.effect_index(effect, table)
            total = total + pop["effects"][effect][idx, cols]
        return total

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
            self.effect_sum(pop, d.sys_table, slice(0, NPV)),
            pop["length_slope"][None, :],
            cov["lengths"],
            TARGET_COEFS,
        )
        _, d_size = d.draft_gpu_and_size
        d_table = d.draft_table if d.draft_systems else d.sys_table.iloc[:1]
        law_d = laws.log_coefficients(
            pop["intercept"][None, NPV:],
            pop["size_slope"][None, NPV:],
            d_size[:, None],
            self.effect_sum(pop, d_table, slice(NPV, None)),
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

    def shifts(self, group: str, size: int, anchor, mean=0.0, within=None):
        """Log-scale shifts (size, level) of a residual group around ``mean`` (series: their
        trend in k, :func:`bayes_sd.laws.series_trend`), zeros when the group is off.

        Systems shift both levels of the target's coefficients, draft systems level 1 of the
        drafter's (``c1d``), series level 2. Drafting's level 2 (``c2d``) has no shift of its
        own: the series shifts of a draft system's draft lengths carry it, and a second,
        overlapping spread left the split of level-2 variation between drafter and series
        unidentified (``draft_sd[2]`` at bulk ESS 7 of 600 draws on the demo). Likewise a
        level-1 series shift fitted to 0.00 on the demo and made a funnel.

        Centred is *hierarchical centring* (Gelfand, Sahu & Carlin 1995): the free variable is
        the configuration's own log level, ``level_<group> ~ Normal(anchor, sd)``, and the shift
        is ``level − anchor`` — the same model as ``shift ~ Normal(0, sd)`` (a translation, unit
        Jacobian), but the likelihood sees the level directly. A configuration measured at
        several loads to a few percent pins its level, and the population intercepts no longer
        trade off against every shift at once (with free shifts, "intercept of c1v up, all 48
        system shifts down" was the demo posterior's largest eigen-direction). ``anchor`` is
        what the data pin: the log demand of a system's target at a representative run
        (:meth:`system_anchor`), the drafting law (draft systems), the log C2 of a series' most
        loaded run (series). Non-centred: ``shift = sd · z``, ``z ~ Normal(0, 1)``, for sparse
        or noisy sweeps (calibration); ``within`` (series around their draft system's mean,
        :func:`bayes_sd.graph_side.series_draft_mean`) centres ``z`` within each draft system."""
        if group not in self.opt.residuals:
            return pt.zeros((size, 2))
        sd = self.prior(f"{group}_sd")
        dims = {"system": ("system", "level"), "draft": ("draft_system",)}.get(
            group, ("sd_series",)
        )
        if self.opt.centred or (group == "series" and self.opt.centred_series):
            level = pm.Normal(f"level_{group}", anchor + mean, sd, dims=dims)
            shift = pm.Deterministic(f"shift_{group}", level - anchor, dims=dims)
        else:
            z = pm.Normal(f"shift_{group}_z", 0.0, 1.0, dims=dims)
            z = z if within is None else pt.dot(within, z)  # centred within draft systems
            shift = pm.Deterministic(f"shift_{group}", mean + z * sd, dims=dims)
        if group == "system":
            return shift
        zeros = pt.zeros(size)
        return pt.stack([shift, zeros] if group == "draft" else [zeros, shift], axis=1)

    # ------------------------------------------------------------------ MoE coverage

    def moe_increments(self, pop, c_pv):
        """``c_u ρ`` per system and target coefficient (zero for dense systems), weighted by
        the coverage φ in the step law; None without MoE targets (or coverage off)."""
        if not self.moe:
            return None
        cov = self.d.system_covariates
        slope = pop["size_slope"][:NPV]
        excess = self.moe_excess(slope)
        return c_pv * laws.moe_ratio(
            excess[None, :], slope[None, :], cov["log_total_over_active"][:, None]
        )

    def moe_excess(self, slope):
        """``moe_excess``: hierarchically centred on the log increment ``ρ`` of the MoE
        targets' mean log(N / N_active) when its prior is a location family (``mu`` shifted by
        the anchor), whatever the residuals' form: the data pin ρ, and with ``moe_excess`` free,
        it traded off against the size slopes along a ridge (``size_slope[c1v]`` at bulk ESS
        10 of 1,200 draws on the demo; correlation −0.98 on the non-centred InferenceX fit,
        whose max R-hat fell from 1.12 to 1.05 at 4 × 300 draws with this form). A prior
        without a fixed ``mu`` is used as it is, non-centred."""
        prior = self.priors["moe_excess"]
        mu = prior.parameters.get("mu")
        mu = np.asarray(mu, dtype=float) if isinstance(mu, int | float | list) else mu
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
        return shifted_variable(prior, "moe_excess", "moe_level", anchor)

    def coverage(self, tokens, idx):
        """Coverage φ(T) of the experts by T routed tokens, for the systems ``idx``."""
        cov = self.d.system_covariates
        return latency.expert_coverage(tokens, cov["experts"][idx], cov["experts_per_token"][idx])

    # ------------------------------------------------------------------ acceptance, terms

    def acceptance(self, data):
        """Tokens per cycle per run: measured, from an imposed α, or the positional law's
        ``E(k)`` of the run's acceptance group (:mod:`bayes_sd.acceptance`). Measured
        acceptance lengths of the law's runs are observed around it (``acceptance_obs``), so
        a run at k = 7 informs every k ≤ 7 and the runs that measured nothing."""
        law = self.d.acceptance_law
        if not law.groups:
            return data["e_known"]
        logit, decay = self.acceptance_groups(len(law.groups))
        e = acceptance.positional_tokens(logit[law.combo_group], decay[law.combo_group],
                                         law.combo_k, k_max=law.k_max)  # fmt: skip
        e = pm.Deterministic("acceptance_length", e, dims="accept_combo")
        if law.measured.any():
            observed = np.log(self.d.acceptance[law.measured])
            pm.Normal("acceptance_obs", mu=pt.log(e[law.run_combo[law.measured]]),
                      sigma=self.prior("accept_sigma"), observed=observed)  # fmt: skip
        pos = law.positions
        if len(pos):  # vLLM's per-position rates: r_i of the run's group
            width = int(pos["position"].max()) + 1
            rates = acceptance.unconditional_rates(logit, decay, width)  # (group, position)
            at = rates[pos["group"].to_numpy(), pos["position"].to_numpy()]
            # on the rate's own scale: a late position's rate of 0.003 is as sure as the first's
            # 0.9 to the third decimal (thousands of drafts); on a log scale its relative noise
            # outweighed every other position (θ 1.28 for a true 2.0 on a saturating drafter)
            pm.Normal("acceptance_pos_obs", mu=at, sigma=self.prior("accept_pos_sigma"),
                      observed=pos["rate"].to_numpy())  # fmt: skip
        latent = np.isnan(self.d.acceptance[self.at])
        if not latent.any():
            return data["e_known"]
        return pt.switch(latent, e[np.maximum(law.run_combo[self.at], 0)], data["e_known"])

    def acceptance_groups(self, n: int):
        """(θ, δ) per acceptance group (:func:`bayes_sd.graph_side.acceptance_groups`)."""
        return side.acceptance_groups(self, n)

    def series_terms(self, c_pv, c_d, inc, data, tokens) -> phases.StepTerms:
        """The step terms (:func:`bayes_sd.phases.step_terms`) per series, with the series
        shift on level 2, gathered per run. Everything but the cycles and the coverage at the
        run's batch is shared by a series' runs, so the runs gather one (series, terms) table:
        per-run gathers of the coefficients (and their gradients, scatter-adds) were half of
        the gradient's time."""
        d = self.d
        first = d.series_first
        ser_sys, ser_dsys = d.system_idx[first], d.draft_idx[first]
        c_s, cd_s = c_pv[ser_sys], c_d[ser_dsys]

        def coefs(target, drafter):
            return latency.Coefficients(
                **{n: target[:, i] for i, n in enumerate(TARGET_COEFS)},
                **{n: drafter[:, i] for i, n in enumerate(DRAFT_COEFS)},
            )

        increment = coefs(inc[ser_sys], pt.zeros_like(cd_s)) if self.moe else None
        terms = phases.step_terms(
            coefs(c_s, cd_s), increment, d.k[first], active_share=d.active_share[ser_sys],
            kink_tokens=self.prior("kink_tokens"), verify_share=side.verify_share(self),
        )  # fmt: skip
        # series residuals: a log-scale shift of the per-request-in-flight level per series,
        # centred on the log C2 of the series' most loaded run (the run that pins it).
        # Centred on the system's log c2v instead, the population's split of C2 into c2p,
        # c2v, c2d moved every series level at once: 654 leapfrog steps per draw on the
        # demo, 40 with this anchor
        rep = d.series_most_loaded
        at_rep = self.points.idx[rep]
        phi_p, phi_v, _ = self.run_coverage(data, None)
        a2 = terms.a2 if increment is None else terms.a2 + phi_p[at_rep] * terms.h2
        t2 = terms.t2 if increment is None else terms.t2 + phi_v[at_rep] * terms.gv2
        cycles = (d.decode_len[rep] - 1.0) / tokens[at_rep]
        anchor = pt.log(latency.per_request(a2, t2, cycles))
        # a shift per series with drafts (a baseline series is its system's: the system's
        # level-2 shift is its own, and a second one was a ridge for single-series systems)
        sd = pd.Index(d.series).get_indexer(d.sd_series)
        if len(sd) and "series" in self.opt.residuals:
            centred = self.opt.centred or self.opt.centred_series
            draft_mean, within = side.series_draft_mean(self, centred)
            mean = side.series_trend(self, sd) + draft_mean + side.series_draft_slope(self, centred)
            shift = self.shifts("series", len(sd), anchor[sd], mean, within)[:, 1]
            scale2 = pt.set_subtensor(pt.ones(len(d.series))[sd], pt.exp(shift))
        else:
            scale2 = pt.ones(len(d.series))
        level2 = ("a2", "t2", "h2", "gv2", "gd2")
        terms = terms._replace(**{f: scale2 * getattr(terms, f) for f in level2
                                  if getattr(terms, f) is not None})  # fmt: skip
        kept = [f for f in terms._fields if getattr(terms, f) is not None]
        table = pt.stack([getattr(terms, f) for f in kept], axis=1)[d.series_idx[self.at]]
        return terms._replace(**{f: table[:, i] for i, f in enumerate(kept)})

    def run_coverage(self, data, batch):
        """``(φ_p, φ_v, φ_d)`` per load point: the prompt's, and a step's at ``batch`` requests
        per engine (None: the measured batch — data, computed once, not per gradient)."""
        if not self.moe:
            return 0.0, 0.0, 0.0
        d, at = self.d, self.at
        sys_idx, k = d.system_idx[at], d.k[at]
        if not hasattr(self, "_coverage_data"):
            prefill = d.rows["prefill_len"].to_numpy(dtype=float)[at]
            in_batch = np.maximum(self.points.batch, 1.0)
            self._coverage_data = (
                pm.Data("coverage_p", self.coverage(prefill, sys_idx), dims="point"),
                pm.Data("coverage_v", self.coverage(in_batch * (k + 1.0), sys_idx), dims="point"),
                pm.Data("coverage_d", self.coverage(in_batch, sys_idx), dims="point"),
            )
        if batch is None:
            return self._coverage_data
        in_batch = pt.maximum(batch, 1.0)
        return (
            self._coverage_data[0],
            self.coverage(in_batch * (k + 1.0), sys_idx),
            self.coverage(in_batch, sys_idx),
        )

    # ------------------------------------------------------------------ phases

    def capacity(self):
        """Requests one engine runs at most (closed loop: beyond, requests wait). Per system:
        ``log K = capacity + capacity_length_slope · log((P + D)/2048) + capacity_sd · z``
        (KV-cache capacity falls with the tokens a request holds)."""
        if not self.d.closed_loop:
            return np.inf
        t = self.d.sys_table
        held = np.log((t["prefill_len"] + t["decode_len"]).to_numpy(dtype=float) / 2048)
        z = pm.Normal("capacity_z", 0.0, 1.0, dims="system")
        log_k = (self.prior("capacity") + self.prior("capacity_length_slope") * held
                 + self.prior("capacity_sd") * z)  # fmt: skip
        capacity = pm.Deterministic("capacity_system", pt.exp(log_k), dims="system")
        return capacity[self.d.system_idx[self.at]]

    def phases(self, data, terms, tokens) -> dict:
        """TTFT, TPOT and E2E per load point (:mod:`bayes_sd.phases`)."""
        share = self.prior("ttft_share") if self.fit["ttft"].any() else 0.5
        common = dict(k=data["k"], tokens=tokens, decode_len=data["decode_len"],
                      engines=data["engines"], ttft_share=share)  # fmt: skip
        open_p = closed_p = None
        if self.open.any():
            open_p = phases.open_loop_phases(
                terms, rate=data["rate"], batch=data["batch"], smooth_width=OPEN_FLOOR,
                coverage=self.run_coverage(data, None), **common,
            )  # fmt: skip
        if not self.open.all():
            capacity = self.capacity()
            batch = phases.smooth_min(data["conc"] / data["engines"], capacity)
            # the opening wave's prefill queue, where a run's request count says how large it is
            # (κ = burst_share is fixed at 0 by default: priors.py)
            opening = data["opening"] * self.prior("burst_share") if self.wave_on else 0.0
            closed_p = phases.closed_loop_phases(
                terms, concurrency=data["conc"], capacity=capacity,
                coverage=self.run_coverage(data, batch), opening=opening, **common,
            )  # fmt: skip
        out = {}
        for key in ("latency", "ttft", "tpot", "wave"):
            out[key] = self.by_mode(
                None if open_p is None else open_p[key], None if closed_p is None else closed_p[key]
            )
        # per load point: kept with every draw, per run it would be 1 GB at 10^5 runs
        pm.Deterministic("latency", out["latency"], dims="point")
        # the load-independent latency C1 (for the noise's queueing share)
        a1, _ = phases.prefill(terms, self.run_coverage(data, None)[0])
        light = a1 + (data["decode_len"] - 1.0) / tokens * terms.t1
        out["share"] = out["latency"] / light - 1.0
        return out

    # ------------------------------------------------------------------ likelihoods

    def per_run(self, values):
        """Per-point values gathered per run (as they are where every run is its own point)."""
        return values if self.points.distinct else values[self.points.idx]

    def likelihoods(self, data, predicted) -> None:
        """One robust likelihood per measured mean (see :data:`METRICS`), each with its own
        noise per source; the scale of E2E and TTFT grows with the load
        (:func:`bayes_sd.laws.noise_scale`): a finite run near saturation is much noisier.
        E2E's with its predicted queueing share; TTFT's with the measured requests in flight
        (:func:`bayes_sd.laws.tail_load`, the tails' covariate): TTFT's predicted share
        depends on how its prefill splits into ``a1`` and ``θ a2 B``, which the data pin
        loosely, and a noise that grew with it gave InferenceX a second mode (θ 0.65 instead
        of 0.19, the noise's load growth 10x, log density 60-100 lower) that held one chain
        in four for whole fits (max R-hat 1.55 at 4 x 300 draws)."""
        src = self.d.source_idx
        load_noise = None
        for metric in METRICS:
            fit = self.fit[metric]
            if not fit.any():
                continue
            sigma = self.prior("sigma" if metric == "latency" else f"{metric}_sigma")[src]
            if metric == "tpot":  # constant; opt-in: growing with an open loop's queue share
                scale, is_open = sigma, self.d.is_open
                if not side.off(self.priors, "tpot_load_noise") and (fit & is_open).any():
                    share = side.open_queue_share(self.d)
                    scale = laws.noise_scale(sigma, self.prior("tpot_load_noise"), share)
            else:
                if load_noise is None:
                    load_noise = self.prior("load_noise")
                if metric == "latency":
                    share = self.per_run(predicted["share"])
                else:
                    share = laws.tail_load(self.d.batch)
                scale = laws.noise_scale(sigma, load_noise, share)
            name = "log_latency" if metric == "latency" else f"log_{metric}"
            if fit.all():
                idx, dims = slice(None), "run"
            else:  # a subset of the runs: its own coordinate
                idx, dims = np.flatnonzero(fit), f"run_{metric}"
                pm.modelcontext(None).add_coord(dims, self.d.rows["run_id"].to_numpy()[idx])
            make_likelihood(
                self.priors["likelihood"],
                name,
                mu=self.per_run(pt.log(predicted[metric]))[idx],
                sigma=scale[idx],
                observed=data[metric][idx],
                dims=dims,
                nu=lambda: self.prior("nu"),
            )
