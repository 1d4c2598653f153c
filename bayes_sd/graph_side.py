"""The side terms of :mod:`bayes_sd.graph`'s model: the series shifts' trend in k, the
acceptance groups' (θ, δ), per-run percentiles (the tail law of :mod:`bayes_sd.laws`) and
forward-pass step timings (a joint fit with step costs). Each function takes the graph's term
builder (its design, priors and ``prior``) and adds its terms or likelihood to the model in
context.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt

from bayes_sd import laws
from bayes_sd.coefs import COEFS, LEVEL, REF_TARGET_PARAMS
from bayes_sd.errors import DataError
from bayes_sd.priors import make_likelihood, shifted_variable

__all__ = [
    "acceptance_groups",
    "draft_lengths",
    "off",
    "open_queue_share",
    "pinned_groups",
    "series_draft_centres",
    "series_draft_mean",
    "series_draft_slope",
    "series_draft_systems",
    "series_trend",
    "step_design",
    "step_likelihood",
    "tails",
    "verify_share",
    "within_centring",
]


def off(priors: dict, name: str) -> bool:
    """Whether the term of prior ``name`` is off: fixed at 0 (``burst_share``,
    ``series_k_slope``: their defaults, :mod:`bayes_sd.priors`)."""
    spec = priors.get(name, 0.0)
    return isinstance(spec, int | float) and spec == 0


def open_queue_share(d) -> np.ndarray:
    """Per run, how deep an open-loop run sits in its queue, from measurements alone: its mean
    E2E (or TTFT + (D − 1) TPOT) over the lightest-loaded one of its series, minus 1; 0 for
    closed-loop runs (their batch is held at the concurrency) and where unmeasured. The
    covariate of TPOT's opt-in noise growth (``tpot_load_noise``): measured, so the noise
    does not pull on the coefficients (with the predicted share notebook 01's fit mixed
    worse: R-hat 1.014 against 1.004 at seed 2)."""
    lat = np.exp(d.log_mean("latency"))
    composed = np.exp(d.log_mean("ttft")) + (d.decode_len - 1.0) * np.exp(d.log_mean("tpot"))
    lat = np.where(np.isfinite(lat), lat, composed)
    lat = np.where(d.is_open, lat, np.nan)
    lightest = pd.Series(lat).groupby(d.series_idx).transform("min").to_numpy()
    with np.errstate(invalid="ignore"):
        share = laws.queue_share_open(lat, lightest)
    return np.where(np.isfinite(share), np.maximum(share, 0.0), 0.0)


def series_trend(b, sd: np.ndarray):
    """The mean of each SD series' level-2 shift (``sd``: their indices among the design's
    series): :func:`bayes_sd.laws.series_trend` of its k with ``series_k_slope``; 0 where no
    draft system runs two or more draft lengths (the slope would trade off against the
    intercepts of ``c2s`` and ``c2d``; :func:`draft_lengths`)."""
    if off(b.priors, "series_k_slope") or draft_lengths(b) < 2:  # off: the default
        return 0.0
    ks = b.d.rows.groupby("series")["k"].first().reindex(np.asarray(b.d.series)[sd])
    trend = laws.series_trend(b.prior("series_k_slope"), ks.to_numpy(dtype=float))
    return pm.Deterministic("series_trend", trend, dims="sd_series")


def series_draft_systems(design) -> tuple[np.ndarray, np.ndarray]:
    """The draft system of each of the design's SD series (``sd_series`` order), and those
    that run two or more of them (sorted: the ``series_draft`` coordinate), whose series share
    a mean shift (:func:`series_draft_mean`)."""
    ds = design.rows.groupby("series")["draft_system"].first().reindex(design.sd_series)
    names, counts = np.unique(ds.to_numpy(dtype=object), return_counts=True)
    return ds.to_numpy(dtype=object), names[counts >= 2]


def series_draft_mean(b, centred: bool):
    """Per SD series (the design's ``sd_series``), the mean shift of its draft
    system's series (``series_draft_shift``, spread ``series_draft_sd``): the draft lengths
    of one draft system share what the laws miss of their level 2, so an unseen k of a seen
    draft system is predicted around its siblings, not around the population's 0. Only for
    draft systems with two or more series (with one, the mean and the series' own shift are
    one quantity), and summing to zero over them (a ZeroSumNormal): what all draft systems
    share stays with the laws' SD coefficients (``c2s``, ``c2d``, η). Free means (Normal) took
    it over on notebook 01's data — every draft system's mean at +0.85 to +1.17, the laws' SD
    level 2 shrunk by e, ``series_draft_sd`` 0.49 against its HalfNormal(0.1) prior — and an
    unseen draft system, drawn around 0, would have been priced at a third of its cost.
    **Off by default** (``series_draft_sd`` fixed at 0): notebook 01's fit does not mix with
    it (docs/validation.md, section 4).

    Parametrised as the series shifts are (``centred``): with centred series levels, each
    pinned by its runs, the means are sampled themselves (non-centred means over centred
    levels: 2 and 5 divergences in notebook 01's fit at seeds 1 and 2; centred: 0–5 over three
    fits); with non-centred offsets, the means are non-centred and the offsets centred within
    each draft system. Returns the mean per series (0.0 when off) and that centring's projection
    (None otherwise; :func:`within_centring`)."""
    if off(b.priors, "series_draft_sd"):
        return 0.0, None
    ds, multi = series_draft_systems(b.d)
    if len(multi) < 2:  # the means sum to zero over the draft systems: one has none
        return 0.0, None
    pm.modelcontext(None).add_coord("series_draft", multi.tolist())
    spread = b.prior("series_draft_sd")
    at = pd.Index(multi).get_indexer(ds)
    if centred:  # the series' levels are pinned by their runs, and so is their mean
        mean = pm.ZeroSumNormal("series_draft_shift", sigma=spread, dims="series_draft")
        return pt.switch(at >= 0, mean[np.maximum(at, 0)], 0.0), None
    z = pm.ZeroSumNormal("series_draft_z", sigma=1.0, dims="series_draft")
    mean = pm.Deterministic("series_draft_shift", spread * z, dims="series_draft")
    return pt.switch(at >= 0, mean[np.maximum(at, 0)], 0.0), within_centring(at)


def series_draft_centres(design) -> tuple[np.ndarray, np.ndarray, pd.Series, pd.Index]:
    """The draft system and k of each of the design's SD series (``sd_series`` order), each
    draft system's mean k over its series, and the draft systems that run three or more draft
    lengths (sorted: the ``series_slope_draft`` coordinate) — the lines of
    :func:`series_draft_slope`, in the graph and in predictions alike."""
    ds, _ = series_draft_systems(design)
    ks = design.rows.groupby("series")["k"].first().reindex(design.sd_series)
    ks = ks.to_numpy(dtype=float)
    by = pd.Series(ks).groupby(ds)
    lengths = by.nunique()
    return ds, ks, by.mean(), lengths.index[lengths >= 3].sort_values()


def series_draft_slope(b, centred: bool):
    """Per SD series, its draft system's trend in k (``series_draft_slope`` per draft token,
    spread ``series_draft_slope_sd``) times the series' k less the draft system's mean k:
    fitted on every k of the simulated held-out-k sweeps, each draft system's series shifts lie
    on a line in k (residual sd 0.002–0.004 against 0.011–0.019 about the draft system's mean,
    slopes of opposite sign on the dense and the MoE sweep; docs/validation.md, section 6), so
    an unseen k of a draft system measured at three or more k is predicted on its siblings'
    line. Only for those draft systems, and summing to zero over them (a ZeroSumNormal; needs
    two): a trend all draft systems share is η's (``verify_share``, the level-2 cost per draft
    token). Centred around the draft system's mean k, the slope leaves its mean shift
    (:func:`series_draft_mean`) alone. **Off by default** (fixed at 0). Parametrised as the
    series shifts are (``centred``)."""
    if off(b.priors, "series_draft_slope_sd"):
        return 0.0
    ds, ks, mean_k, sloped = series_draft_centres(b.d)
    if len(sloped) < 2:
        return 0.0
    pm.modelcontext(None).add_coord("series_slope_draft", sloped.tolist())
    spread = b.prior("series_draft_slope_sd")
    at = sloped.get_indexer(ds)
    dk = ks - mean_k.reindex(ds).to_numpy(dtype=float)
    if centred:
        slope = pm.ZeroSumNormal("series_draft_slope", sigma=spread, dims="series_slope_draft")
    else:
        z = pm.ZeroSumNormal("series_draft_slope_z", sigma=1.0, dims="series_slope_draft")
        slope = pm.Deterministic("series_draft_slope", spread * z, dims="series_slope_draft")
    return pt.switch(at >= 0, slope[np.maximum(at, 0)] * dk, 0.0)


def within_centring(group: np.ndarray) -> np.ndarray:
    """(n, n) projection taking standard-normal offsets of ``n`` series to offsets that sum to
    zero within each group (``group`` ≥ 0; −1: left alone), each still of unit variance (scaled
    by √(m/(m − 1)), m the group's size). Non-centred, a draft system's mean shift and the
    average of its series' offsets would be one direction the data do not split, as narrow as
    ``series_sd`` is small; centred within the draft system, the mean is the series'
    average."""
    n = len(group)
    out = np.eye(n)
    for g in np.unique(group[group >= 0]):
        members = np.flatnonzero(group == g)
        m = len(members)
        block = (np.eye(m) - np.full((m, m), 1.0 / m)) * np.sqrt(m / (m - 1.0))
        out[np.ix_(members, members)] = block
    return out


def draft_lengths(b) -> int:
    """The most draft lengths (k > 0) one draft system of the sweep runs: what separates a
    cost per draft token from one per cycle (``c2s``) within a configuration. InferenceX runs
    one k per configuration (k = 1, 2, 3 across them): there ``η`` and the trend in k only
    traded off against ``c2s`` and ``c2d`` (the full fit fell from R-hat 1.04 / bulk ESS 102
    to 1.13 / 21 with η free, the worst parameters those intercepts)."""
    sd = b.d.rows[b.d.rows["k"] > 0]
    return int(sd.groupby("draft_system")["k"].nunique().max()) if len(sd) else 0


def verify_share(b):
    """``η``, the share of a one-token verification pass each verified draft token costs a
    request (:func:`bayes_sd.latency.cycle_terms`): its prior where a draft system runs two or
    more draft lengths, else 0 (with one k each, ``η k c2v`` is ``c2s`` and ``k c2d`` by
    other names: a ridge; :func:`draft_lengths`)."""
    if off(b.priors, "verify_share") or draft_lengths(b) < 2:
        return 0.0
    return b.prior("verify_share")


def pinned_groups(law) -> np.ndarray:
    """Per acceptance group of ``law`` (``design.AcceptanceLaw``): whether its runs pin both θ
    and δ — per-position rates over two or more positions, or acceptance lengths measured at
    two or more draft lengths (thousands of counted drafts each). One acceptance length alone
    is one equation in θ and δ: such a group, like one measured through latencies only, is
    not pinned."""
    pinned = np.zeros(len(law.groups), dtype=bool)
    pos = law.positions
    if len(pos):
        widths = pos.groupby("group")["position"].nunique()
        pinned[widths.index[widths >= 2].to_numpy(dtype=int)] = True
    runs = law.run_combo[law.measured & (law.run_combo >= 0)]
    ks = pd.DataFrame({"group": law.combo_group[runs], "k": law.combo_k[runs]})
    lengths = ks.groupby("group")["k"].nunique()
    pinned[lengths.index[lengths >= 2].to_numpy(dtype=int)] = True
    return pinned


def acceptance_groups(b, n: int):
    """(θ, δ) per acceptance group (``accept_group_logit``, ``accept_group_decay``): the
    population's ``accept_logit`` and ``accept_decay``, each group scattered around them with
    ``accept_logit_sd`` (δ log-normally, ``accept_decay_sd``); one group is the population's
    own; δ = 0 for every group under the i.i.d. law (``accept_decay`` fixed at 0).

    Parametrised by what pins each group (:func:`pinned_groups`). A group with its acceptance
    counted is pinned by its data: its θ and log δ are sampled themselves (centred,
    ``accept_logit_group``, ``accept_decay_group_log``). A group known through its latencies
    alone keeps non-centred offsets (``accept_logit_z``, ``accept_decay_z``). Non-centred
    offsets of pinned groups tie the population's θ, δ and scales to each offset along a narrow
    ridge: on a simulated sweep of two drafters with vLLM's counters (48 runs, 2 × 600 draws)
    the population's parameters mixed at R-hat 1.09–1.26, bulk ESS 6–42."""
    logit, decay = b.prior("accept_logit"), b.prior("accept_decay")
    iid = off(b.priors, "accept_decay")
    if n == 1:
        theta, delta = pt.stack([logit]), pt.stack([decay])
    else:
        model = pm.modelcontext(None)
        groups = np.asarray(b.d.acceptance_law.groups)
        pinned = pinned_groups(b.d.acceptance_law)
        theta, delta = pt.zeros(n), pt.zeros(n)
        logit_sd = b.prior("accept_logit_sd")
        decay_sd = None if iid else b.prior("accept_decay_sd")
        for centred, dim in ((False, "accept_group_latent"), (True, "accept_group_pinned")):
            idx = np.flatnonzero(pinned == centred)
            if not idx.size:
                continue
            model.add_coord(dim, groups[idx].tolist())
            if centred:
                th = pm.Normal("accept_logit_group", logit, logit_sd, dims=dim)
            else:
                th = logit + logit_sd * pm.Normal("accept_logit_z", 0.0, 1.0, dims=dim)
            theta = pt.set_subtensor(theta[idx], th)
            if iid:
                continue
            if centred:
                de = pt.exp(pm.Normal("accept_decay_group_log", pt.log(decay), decay_sd, dims=dim))
            else:
                de = decay * pt.exp(decay_sd * pm.Normal("accept_decay_z", 0.0, 1.0, dims=dim))
            delta = pt.set_subtensor(delta[idx], de)
    theta = pm.Deterministic("accept_group_logit", theta, dims="accept_group")
    delta = pm.Deterministic("accept_group_decay", delta, dims="accept_group")
    return theta, delta


def tails(b, data, predicted) -> None:
    """Each measured percentile (p50, p90, p99 of TTFT, TPOT, E2E) enters as its log ratio
    to the same run's measured mean (:func:`bayes_sd.laws.tail_log_ratios`: the ratio grows
    with the measured load), so a run's mean is not counted twice; one scale per percentile.
    Where a closed-loop run's request count sizes its opening wave (``burst_share`` on), TTFT's
    and E2E's ratios hold the wave (:func:`bayes_sd.laws.wave_log_ratios`, its share of the
    predicted mean): the p99 of such a run pins the wave's size ``κ``. Otherwise the tails do
    not pull on the coefficients;
    per-engine and per-GPU-type terms around the population's where the sweep has several
    (:data:`bayes_sd.laws.TAIL_EFFECTS`). A sweep
    without percentiles leaves the tail law out of the graph (27 parameters only their
    priors would inform cost the sampler time and mixing): ``predict`` then draws them from
    their priors, so its percentiles say so with wide intervals."""
    if not any(t in data for t in laws.TAILS):
        return
    slope = b.prior("tail_slope")
    level = _tail_level(b, slope)[:, None]
    sigma = b.prior("tail_sigma")
    for effect in laws.TAIL_EFFECTS:
        if len(b.d.levels(effect)) > 1:
            # zero-sum over the levels: with free terms their mean traded off against
            # tail_level (InferenceX: tail_level[latency_p50] and its four engine terms at
            # bulk ESS 8-9 of 900 draws, moving together); one spread per percentile term
            # (one shared spread was held at 0.004 by TPOT's p50, which no GPU type moves)
            z = pm.ZeroSumNormal(f"tail_{effect}_z", sigma=1.0, dims=("tail", effect))
            idx = b.d.effect_index(effect, b.d.rows)
            level = level + (b.prior(f"tail_{effect}_sd")[:, None] * z)[:, idx]  # (tail, run)
    load = laws.tail_load(b.d.batch)  # the measured requests in flight per engine
    for metric in laws.TAIL_METRICS:
        terms = [laws.TAILS.index(f"{metric}_{q}") for q in laws.TAIL_STATS]
        if not any(laws.TAILS[t] in data for t in terms):
            continue
        ratios = laws.tail_log_ratios([level[t] for t in terms], [slope[t] for t in terms],
                                      load)  # fmt: skip
        if metric in laws.WAVE_METRICS and b.wave_on:
            mean = b.per_run(predicted[metric])
            share = pt.clip(b.per_run(predicted["wave"]) / mean, 0.0, 1.0 - 1e-9)
            ratios = laws.wave_log_ratios(ratios, share, b.d.opening)
        for t, ratio in zip(terms, ratios, strict=True):
            tail = laws.TAILS[t]
            if tail not in data:
                continue
            idx = np.flatnonzero(~np.isnan(b.d.tail_ratio(tail)))
            dims = f"run_{tail}"
            pm.modelcontext(None).add_coord(dims, b.d.rows["run_id"].to_numpy()[idx])
            make_likelihood(
                b.priors["likelihood"],
                f"log_{tail}",
                mu=ratio[idx],
                sigma=sigma[t],
                observed=data[tail][idx],
                dims=dims,
                nu=lambda: b.prior("nu"),
            )


def _tail_level(b, slope):
    """The tail law's levels (at an idle engine, ``x = 0``, where their prior is), sampled at
    the reference load ``x0`` (:data:`bayes_sd.laws.TAIL_LOAD_REF`) as ``tail_level_centre``
    with the same prior (a unit-Jacobian shift of its location by ``slope · x0``), as the
    coefficients' intercepts are (``intercept_centre``): the runs lie at ``x`` 0.7–6.2
    (InferenceX, median 2.8), and a level at ``x = 0`` traded off against its slope along a
    narrow ridge (the full InferenceX fit: E2E's p90 and p99 levels at bulk ESS 35)."""
    spec = b.priors["tail_level"]
    if isinstance(spec, float):  # fixed
        return pt.constant(np.full(len(laws.TAILS), spec))
    if "mu" not in spec.parameters:  # a prior without a location: sampled where it is
        return b.prior("tail_level")
    return shifted_variable(spec, "tail_level", "tail_level_centre",
                            slope * laws.TAIL_LOAD_REF, dims="tail")  # fmt: skip


def step_likelihood(b, sr: pd.DataFrame, pop) -> None:
    """Forward-pass timings of the sweep's dense targets on its GPUs (docs/model.md, "Step
    level"): a decode pass over B sequences at context ctx costs ``c1v + B · c2v(ctx)`` and
    a one-sequence prefill of P tokens ``c1p(P)``, with the coefficients of the population
    laws (no configuration shifts) less a serving overhead per level (scheduling, sampling
    and the like are in the served latency, not in an isolated forward pass)."""
    model = pm.modelcontext(None)
    model.add_coord("step", np.arange(len(sr)))
    g = pd.Index(b.d.gpus).get_indexer(sr["gpu"])
    size = np.log(sr["params_active"].to_numpy(dtype=float) / REF_TARGET_PARAMS)
    ctx_len = np.log(np.maximum(sr["ctx"].to_numpy(dtype=float), 1.0) / 1024)
    p_len = np.log(sr["tokens"].to_numpy(dtype=float) / 1024)
    names = ("c1v", "c2v", "c1p")
    idx = [COEFS.index(n) for n in names]
    law = laws.log_coefficients(
        pop["intercept"][idx],
        pop["size_slope"][idx],
        size[:, None],
        pop["effects"]["gpu"][g][:, idx],
        pop["length_slope"],
        np.stack([p_len, p_len, ctx_len], axis=1),
        names,
    )
    overhead = b.prior("step_overhead")  # log serving overhead per level
    c1v, c2v, c1p = (pt.exp(law[:, i] - overhead[LEVEL[j]]) for i, j in enumerate(idx))
    is_decode = (sr["phase"] == "decode").to_numpy()
    batch = sr["batch"].to_numpy(dtype=float)
    make_likelihood(
        b.priors["step_likelihood"],
        "log_step_time",
        mu=pt.log(pt.switch(is_decode, c1v + batch * c2v, c1p)),
        sigma=b.prior("step_sigma"),
        observed=np.log(sr["time_s"].to_numpy(dtype=float)),
        dims="step",
        nu=lambda: b.prior("step_nu"),
    )


def step_design(steps: pd.DataFrame, design) -> pd.DataFrame:
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
