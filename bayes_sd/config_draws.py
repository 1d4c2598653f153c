"""Posterior draws per prediction configuration (for :func:`bayes_sd.predict.predict`): the
coefficients from the laws of :mod:`bayes_sd.laws` with the effects and residual shifts of seen
GPUs, engines, precisions, systems, draft systems and series (fresh draws from the population
for unseen ones), the capacity per engine and the acceptance law's tokens per cycle.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayes_sd import acceptance, laws
from bayes_sd.coefs import COEF_SLOPE, COEFS, LEVEL, TARGET_COEFS
from bayes_sd.design import EFFECTS, Design, acceptance_groups, drafter_log_size
from bayes_sd.errors import DataError
from bayes_sd.priors import draw_priors

__all__ = ["acceptance_draws", "capacity_draws", "configuration_draws", "draw_shifts",
           "level_draws"]  # fmt: skip

NPV = len(TARGET_COEFS)


def configuration_draws(model, configs, cov, flat, draws, rng):
    """Coefficient draws of each configuration: ``coef`` and the MoE coverage increments
    ``incr`` (8, draws, configs) in ``COEFS`` order, before the series shifts, and the series
    factors on level 2 of the configuration's series and of its baseline series (draws,
    configs). Coefficient-major: one contiguous (draws, configs) plane each."""
    design: Design = model.design
    n = len(configs)
    nc = len(COEFS)
    slope = flat["size_slope"][:, COEF_SLOPE]
    priors = model.priors
    effects = sum(effect_draws(design, priors, e, configs, flat, draws, rng) for e in EFFECTS)
    effects = effects + flat["gpus_slope"][:, None, COEF_SLOPE] * cov["log_gpus"][None]
    shift = draw_shifts(model, "system", configs["system"], flat, draws, rng)
    dshift = draw_shifts(model, "draft", configs["draft_system"], flat, draws, rng)
    # (draw, cfg, coef): the target's size for its coefficients, the drafter's for drafting
    size = np.where(np.arange(nc) < NPV, cov["log_size"][:, None],
                    drafter_log_size(configs)[:, None])  # fmt: skip
    log_c = laws.log_coefficients(
        flat["intercept"][:, None, :],
        slope[:, None, :],
        size[None],
        effects,
        flat["length_slope"][:, None, :],
        cov["lengths"][None],
    )
    log_c[..., :NPV] += np.moveaxis(shift[LEVEL[:NPV]], 0, -1)
    log_c[..., NPV:] += np.moveaxis(dshift[LEVEL[NPV:]], 0, -1)
    coef = np.exp(np.ascontiguousarray(np.moveaxis(log_c, -1, 0)))  # (coef, draw, cfg)
    incr = np.zeros((nc, draws, n))  # the MoE coverage increments (none for drafters)
    if model.coverage and (cov["experts"] > 1).any() and "moe_excess" in flat:
        ratio = laws.moe_ratio(
            flat["moe_excess"][:, :, None],
            slope[:, :NPV, None],
            cov["log_total_over_active"][None, None, :],
        )
        incr[:NPV] = coef[:NPV] * np.moveaxis(ratio, 1, 0)
    # series shifts act on the level-2 ("per request in flight") coefficients only; one call
    # for both: an unseen series that is one row's own and another's (or its own) baseline
    # gets one draw (two calls drew it twice: a baseline row's speedup against itself was not 1)
    labels = np.concatenate([configs["series"].to_numpy(), configs["base_series"].to_numpy()])
    ks = np.concatenate([configs["k"].to_numpy(dtype=float), np.zeros(n)])
    drafts = np.tile(configs["draft_system"].to_numpy(dtype=object), 2)
    factor = np.exp(draw_shifts(model, "series", labels, flat, draws, rng, ks, drafts)[1])
    return coef, incr, factor[:, :n], factor[:, n:]


def effect_draws(design: Design, priors, effect: str, configs, flat, draws, rng) -> np.ndarray:
    """(draw, config, coef) effects of a GPU, engine or precision: fitted for the levels the
    model has seen, one new draw per unseen level from the pooled law (its spread)."""
    labels = configs[design.effect_column(effect)].astype(str).to_numpy()
    if f"{effect}_sd" not in flat and (design.effect_index(effect, configs) < 0).any():
        flat.update(draw_priors(priors, [f"{effect}_sd"], draws, rng, {}))  # fitted on one level
    sd = flat.get(f"{effect}_sd", np.zeros(draws)).reshape(draws, 1, -1)  # one, or per coef
    return level_draws(design, effect, labels, flat[f"{effect}_effect"], sd, len(COEFS), rng)


def level_draws(design: Design, effect: str, labels, fitted, sd, terms: int, rng) -> np.ndarray:
    """(draw, label, term) terms of a categorical effect at each of ``labels`` (its levels):
    ``fitted`` (draw, level, term) for the levels the model has seen (None: no fitted terms,
    zero), one new draw per unseen level from N(0, ``sd``), shared by its labels."""
    idx = pd.Index(design.levels(effect)).get_indexer(labels)
    unseen = idx < 0
    out = (np.zeros((len(sd), len(labels), terms)) if fitted is None
           else np.take(fitted, np.where(unseen, 0, idx), axis=1))  # fmt: skip
    if unseen.any():
        names, inverse = np.unique(labels[unseen], return_inverse=True)
        out[:, unseen] = (rng.normal(size=(len(sd), len(names), terms)) * sd)[:, inverse]
    return out


def capacity_draws(design: Design, configs, flat, draws, rng) -> np.ndarray:
    """(draw, config) requests one engine runs at most: fitted per seen system, drawn from the
    population law for unseen ones; infinite when the model has no capacity (open loop)."""
    if "capacity_system" not in flat:
        return np.full((draws, len(configs)), np.inf)
    idx = pd.Index(design.systems).get_indexer(configs["system"])
    out = np.take(flat["capacity_system"], np.where(idx < 0, 0, idx), axis=1)
    unseen = idx < 0
    if unseen.any():
        names, inverse = np.unique(configs["system"].to_numpy()[unseen], return_inverse=True)
        held = np.log((configs["prefill_len"] + configs["decode_len"]).to_numpy(float) / 2048)
        z = rng.normal(size=(draws, len(names)))[:, inverse]
        log_k = (flat["capacity"][:, None] + flat["capacity_length_slope"][:, None]
                 * held[None, unseen] + flat["capacity_sd"][:, None] * z)  # fmt: skip
        out[:, unseen] = np.exp(log_k)
    return out


def draw_shifts(model, group, labels, flat, draws, rng, ks=None, drafts=None) -> np.ndarray:
    """Shifts (level, draws, row) of a residual group: the fitted ones for configurations the
    model has seen, new draws from the population law for the others (series: around their
    trend in k, ``ks`` per label, and their draft system's mean, ``drafts`` per label, where
    the model has them)."""
    shift = np.zeros((2, draws, len(labels)))
    if group not in model.residuals:
        return shift
    design = model.design
    known = {"system": design.systems, "draft": design.draft_systems}
    labels = np.asarray(labels, dtype=str)
    idx = pd.Index(known.get(group, design.sd_series)).get_indexer(labels)
    seen = idx >= 0
    # baseline series have no shift of their own (their system's level-2 shift is theirs)
    none = np.char.endswith(labels, "|k0") if group == "series" else np.zeros(len(labels), bool)
    new_rows = ~seen & ~none
    levels = {"system": [0, 1], "draft": [0], "series": [1]}[group]
    sd = flat[f"{group}_sd"].reshape(draws, 1, -1)
    # one new draw per unseen label: the rows of one configuration share it
    names, first, inverse = np.unique(labels[new_rows], return_index=True, return_inverse=True)
    new = rng.normal(size=(draws, len(names), sd.shape[2])) * sd
    if group == "series" and len(names):  # each new series' k and draft system, once
        k_new = None if ks is None else np.asarray(ks, dtype=float)[new_rows][first]
        d_new = None if drafts is None else np.asarray(drafts, dtype=object)[new_rows][first]
    if group == "series" and "series_k_slope" in flat and len(names):
        new = new + laws.series_trend(flat["series_k_slope"][:, None, None], k_new[None, :, None])
    if group == "series" and "series_draft_sd" in flat and len(names):
        new = new + series_draft_means(design, d_new, flat, draws, rng)[:, :, None]
    if group == "series" and np.any(flat.get("series_draft_slope_sd", 0.0)) and len(names):
        new = new + series_draft_slopes(design, d_new, k_new, flat, draws, rng)[:, :, None]
    fitted = flat.get(f"shift_{group}", np.zeros((draws, 1)))
    fitted = fitted if fitted.ndim == 3 else fitted[..., None]  # (draws, label, level)
    take = np.where(seen, idx, 0)
    for i, level in enumerate(levels):
        plane = np.take(np.ascontiguousarray(fitted[..., i]), take, axis=1)
        plane[:, none] = 0.0
        if len(names):
            plane[:, new_rows] = new[:, inverse, i]
        shift[level] = plane
    return shift


def series_draft_means(design: Design, drafts, flat, draws, rng) -> np.ndarray:
    """(draws, series) the mean shift of each new series' draft system (``drafts``;
    :func:`bayes_sd.graph_side.series_draft_mean`): the fitted one where the draft system ran
    two or more series, else one new draw per draft system from its spread."""
    from bayes_sd.graph_side import series_draft_systems

    _, multi = series_draft_systems(design)
    uniq, inverse = np.unique(np.asarray(drafts, dtype=object), return_inverse=True)
    means = rng.normal(size=(draws, len(uniq))) * np.asarray(flat["series_draft_sd"])[:, None]
    at = pd.Index(multi).get_indexer(uniq)
    if "series_draft_shift" in flat and (at >= 0).any():
        means[:, at >= 0] = flat["series_draft_shift"][:, at[at >= 0]]
    return means[:, inverse.ravel()]


def series_draft_slopes(design: Design, drafts, ks, flat, draws, rng) -> np.ndarray:
    """(draws, series) each new series' trend term (:func:`bayes_sd.graph_side.
    series_draft_slope`): its draft system's slope times its k (``ks``) less the draft system's
    mean fitted k — the fitted slope where the draft system ran three or more k, else one new
    draw per draft system from the spread (around ``laws.SERIES_K_REF`` for a draft system
    never fitted: an honest extra width, no line to follow)."""
    from bayes_sd.graph_side import series_draft_centres

    _, _, mean_k, sloped = series_draft_centres(design)
    uniq, inverse = np.unique(np.asarray(drafts, dtype=object), return_inverse=True)
    spread = np.asarray(flat["series_draft_slope_sd"])[:, None]
    slopes = rng.normal(size=(draws, len(uniq))) * spread
    at = sloped.get_indexer(uniq)
    if "series_draft_slope" in flat and (at >= 0).any():
        slopes[:, at >= 0] = flat["series_draft_slope"][:, at[at >= 0]]
    centre = mean_k.reindex(uniq).fillna(laws.SERIES_K_REF).to_numpy(dtype=float)
    dk = np.asarray(ks, dtype=float) - centre[inverse.ravel()]
    return slopes[:, inverse.ravel()] * dk[None, :]


def acceptance_draws(model, design: Design, rows, flat, per_row, draws, rng) -> np.ndarray:
    """(draws, combinations) tokens per cycle of the rows without a given acceptance: the
    positional law (:func:`bayes_sd.acceptance.positional_tokens`) at each (acceptance group,
    k) the rows need, with the fitted (θ, δ) of a seen group and fresh draws from the
    population for an unseen one (another dataset, drafter, engine); ``per_row["d_idx"]``
    is set to each row's combination."""
    latent = np.isnan(per_row["e_known"])
    if not latent.any():
        return np.ones((draws, 1))
    groups = acceptance_groups(rows)
    if "accept_group_logit" not in flat:  # the fit learnt no acceptance law
        i = int(np.flatnonzero(latent)[0])
        raise DataError("give acceptance_length or alpha for SD rows: the model learnt no "
                        "acceptance (its runs imposed α, or had no SD)", record=f"row {i}",
                        field="acceptance_length")  # fmt: skip
    combo = pd.DataFrame({"g": groups, "k": per_row["k"]})[latent]
    uniq = combo.drop_duplicates().reset_index(drop=True)
    per_row["d_idx"][latent] = pd.MultiIndex.from_frame(uniq).get_indexer(
        pd.MultiIndex.from_frame(combo)
    )
    fitted = pd.Index(design.acceptance_law.groups).get_indexer(uniq["g"])
    logit = np.take(flat["accept_group_logit"], np.maximum(fitted, 0), axis=1)
    decay = np.take(flat["accept_group_decay"], np.maximum(fitted, 0), axis=1)
    new = fitted < 0
    if new.any():
        spreads = [v for v in ("accept_logit_sd", "accept_decay_sd") if v not in flat]
        flat.update(draw_priors(model.priors, spreads, draws, rng, {}))
        names = pd.unique(uniq["g"][new])
        z = rng.standard_normal((2, draws, len(names)))
        at = pd.Index(names).get_indexer(uniq["g"][new])
        logit[:, new] = (flat["accept_logit"][:, None]
                         + flat["accept_logit_sd"][:, None] * z[0])[:, at]  # fmt: skip
        decay[:, new] = (flat["accept_decay"][:, None]
                         * np.exp(flat["accept_decay_sd"][:, None] * z[1]))[:, at]  # fmt: skip
    return acceptance.positional_tokens(logit, decay, uniq["k"].to_numpy(dtype=float)[None, :])
