"""Posterior predictive latency, speedup and saturation rate of a fitted latency model.

:func:`predict` turns the posterior draws of :class:`~bayes_sd.LatencyModel` into draws for
new rows: coefficients per configuration from the laws of :mod:`bayes_sd.laws` (fitted
residuals for seen configurations, fresh draws from the population for unseen ones), then one
pass over draws × rows — the numba kernel of :mod:`bayes_sd._kernels`, or its NumPy twin with
the same signature when numba is missing — and, on request, the fitted measurement noise.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd
import xarray as xr

from bayes_sd import _kernels, _percentiles, config_draws, laws
from bayes_sd._percentiles import nan_quantiles
from bayes_sd.design import (
    CONFIG_SIZE_COLUMNS,
    SYSTEM_KEYS,
    Design,
    _label,
    fill_labels,
    label_systems,
    opening_of,
    system_covariates,
)
from bayes_sd.errors import DataError, advice
from bayes_sd.priors import draw_priors
from bayes_sd.registry import fill_sizes
from bayes_sd.schema import acceptance_of

__all__ = ["Prediction", "nan_quantiles", "predict", "prediction_rows", "unfitted_note"]

# posterior variables the predictions read
POSTERIOR_VARS = (
    "intercept", "size_slope", "gpus_slope", "length_slope", "gpu_effect", "engine_effect",
    "precision_effect", "gpu_sd", "engine_sd", "precision_sd", "system_sd", "draft_sd",
    "series_sd", "shift_system", "shift_draft", "shift_series", "series_k_slope",
    "series_draft_sd", "series_draft_shift", "series_draft_slope_sd", "series_draft_slope",
    "moe_excess",
    "kink_tokens", "verify_share", "ttft_share", "burst_share", "accept_logit", "accept_decay",
    "accept_logit_sd", "accept_decay_sd", "accept_group_logit", "accept_group_decay",
    "capacity", "capacity_length_slope", "capacity_sd", "capacity_system", "sigma",
    "ttft_sigma", "tpot_sigma", "load_noise", "tpot_load_noise", "nu", "tail_level", "tail_slope",
    "tail_sigma", "tail_engine_sd", "tail_engine_z", "tail_gpu_sd", "tail_gpu_z",
)  # fmt: skip
# per-row outputs: the kernel's planes and what follows from them
OUTPUTS = ("latency", "ttft", "tpot", "throughput", "interactivity", "speedup", "saturation_rate",
           "acceptance_length")  # fmt: skip
# per-row percentiles of TTFT, TPOT and E2E (the tail law of bayes_sd.laws), with ``tails=True``
TAIL_OUTPUTS = laws.TAILS
# the tail law's parameters: a fit without measured percentiles has none, and its predictions
# draw them from their priors (wide, honest intervals)
_TAIL_PRIORS = ("tail_level", "tail_slope", "tail_sigma", "tail_engine_sd", "tail_gpu_sd")


@dataclass
class Prediction:
    """Posterior predictive draws ``(chain, draw, row)`` of :data:`OUTPUTS` and a per-row
    summary table (median and interval of each, P(speedup > 1))."""

    draws: xr.Dataset
    summary: pd.DataFrame


def predict(
    model,
    configs: pd.DataFrame,
    *,
    max_draws: int = 1000,
    interval: float = 0.9,
    random_seed: int | None = None,
    chunk_rows: int | None = None,
    noise: bool = False,
    tails: bool = True,
) -> Prediction:
    """Posterior predictive TTFT, TPOT and E2E latency, throughput, interactivity, speedup
    against k = 0 at the same load, and saturation rate (docs/model.md).

    ``configs`` has one row per prediction: ``gpu``, ``target``, ``k``, ``prefill_len``,
    ``decode_len``, ``request_rate`` (open loop) or ``concurrency`` (closed loop), and for
    SD rows ``drafter`` (or ``method`` ``ngram``) with ``acceptance_length`` or ``alpha``
    (latent acceptance of a fitted draft system otherwise). Optional: ``num_gpus`` (1),
    ``engine``, ``precision``, ``layout``, ``engines`` (1), ``source``, ``dataset`` (the training
    data's where it has one value), ``n_requests`` (a closed-loop benchmark run's request
    count: its opening wave enters TTFT and E2E when ``burst_share`` is on; absent, the steady
    state).
    Sizes come from the registry when absent. Seen systems use
    their fitted residuals; unseen systems, drafters, GPUs, engines and precisions draw new ones
    from the population, so their intervals are honestly wider; all rows of one configuration
    share its new draws.

    Outputs per row and draw: ``latency`` (mean E2E, s), ``ttft``, ``tpot`` (s),
    ``throughput`` (output tokens/s per GPU), ``interactivity`` (tokens/s per user,
    1 / TPOT), ``speedup`` (E2E without SD over with, same load), ``saturation_rate`` (the
    open-loop rate the system sustains at large batch, req/s). Computed on ``max_draws``
    posterior draws (thinned evenly) by one fused numba pass over draws × rows
    (``bayes_sd._kernels``; the NumPy algebra without numba, in chunks of ``chunk_rows`` rows).
    With ``tails`` (the default) also the per-request percentiles ``ttft_p50``, ``ttft_p90``,
    ``ttft_p99``, ``tpot_p50`` … ``latency_p99`` (s): each metric's mean times its fitted
    percentile ratio at the row's load (``bayes_sd.laws``, **Tails**; percentiles no training
    run measured keep their prior, so their intervals are wide).
    Draws are kept in float32 (computed in float64): eight arrays of draws × rows (10^5 rows ×
    100 draws: 320 MB), seventeen with ``tails`` (680 MB).

    With ``noise=True`` the draws also carry the fitted measurement noise of each metric
    (Student-t on the log, growing with load for E2E and TTFT): the posterior predictive of
    what one *measured run* would report — use it to check intervals against held-out runs.
    The default is the model's mean, the quantity to plan with.
    """
    if model.idata is None or model.design is None:
        raise RuntimeError("fit (or load) the model before predicting")
    if not 0 < interval < 1:
        raise ValueError(f"interval must be a probability in (0, 1), e.g. 0.9, not {interval!r}")
    design: Design = model.design
    rng = np.random.default_rng(random_seed)
    rows = prediction_rows(design, configs)
    post = model.idata["posterior"].dataset
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    stride = max(1, int(np.ceil(n_chain * n_draw / max_draws)))
    post = post.isel(draw=slice(None, None, stride))
    draws = post.sizes["chain"] * post.sizes["draw"]
    flat = {
        v: post[v].values.reshape(draws, *post[v].shape[2:])
        for v in post.data_vars
        if v in POSTERIOR_VARS
    }
    for name, value in model.priors.items():  # fixed values (a number in the priors)
        if isinstance(value, float) and name in POSTERIOR_VARS:
            flat[name] = np.full(draws, value)
    # coefficients per configuration (a series with its sizes): a table of 10^5 loads of a
    # few configurations needs a few coefficient draws, and every row of one (unseen)
    # configuration shares its new residual draws
    keys = ["series", *CONFIG_SIZE_COLUMNS, *(["prefill_gpus"] if "prefill_gpus" in rows else [])]
    group = rows[keys].groupby(keys, dropna=False, sort=False).ngroup().to_numpy()
    _, first = np.unique(group, return_index=True)
    configs_u = rows.iloc[first].reset_index(drop=True)
    cov = system_covariates(configs_u)
    coef, incr, f_sd, f_base = config_draws.configuration_draws(model, configs_u, cov, flat,
                                                                draws, rng)  # fmt: skip
    params = {
        "coef": coef, "incr": incr, "f_sd": f_sd, "f_base": f_base,
        "capacity": config_draws.capacity_draws(design, configs_u, flat, draws, rng),
        "experts": cov["experts"], "experts_per_token": cov["experts_per_token"],
        "active_share": np.exp(-cov["log_total_over_active"]),
        "kink_tokens": flat.get("kink_tokens", np.full(draws, np.inf)),
        "verify_share": flat.get("verify_share", np.zeros(draws)),
        "ttft_share": flat.get("ttft_share", np.full(draws, 0.5)),
    }  # fmt: skip
    per_row = {"cfg": group, **_row_arrays(design, rows, flat)}
    if "burst_share" not in flat:  # no fitted run had an opening wave: κ's prior, if needed
        wanted = ["burst_share"] if (per_row["opening"] > 0).any() else []
        flat.update(draw_priors(model.priors, wanted, draws, rng, {}))
    params["burst_share"] = flat.get("burst_share", np.zeros(draws))
    params["acceptance"] = config_draws.acceptance_draws(model, design, rows, flat, per_row,
                                                         draws, rng)  # fmt: skip
    per_row["base_of"] = _moe_baselines(rows, np.ones(len(rows), dtype=bool))
    # one pass over (row, draw): the fused kernel, or the NumPy algebra (same signature)
    kernel = _kernels.predict if _kernels.AVAILABLE else _kernels.predict_numpy
    out = kernel(params, per_row, with_noise=noise, chunk_rows=chunk_rows)
    planes = dict(zip(_kernels.PLANES, (plane.T for plane in out), strict=False))  # (draw, row)
    shares = _wave_shares(planes)  # of the noiseless means: the noise scales the whole
    if noise:
        _with_noise(design, rows, flat, planes, per_row, rng)
    # tokens per step: as given, or the acceptance law's draws
    # (draw, row) view of a (row, draw) array, like the kernel's planes: the summary's sort
    # then reads each row's draws contiguously
    accepted = planes["acceptance_length"] = _kernels._output((len(rows), draws)).T
    accepted[:] = per_row["e_known"]
    latent = np.isnan(per_row["e_known"])
    if latent.any():
        accepted[:, latent] = params["acceptance"][:, per_row["d_idx"][latent]]
    names = OUTPUTS
    if tails:
        missing = [v for v in _TAIL_PRIORS if v not in post]  # no training run measured a tail
        flat.update(draw_priors(model.priors, missing, draws, rng, {"tail": list(laws.TAILS)}))
        planes.update(_tail_draws(design, rows, flat, planes, per_row, rng, noise, shares))
        names = OUTPUTS + TAIL_OUTPUTS
    # throughput per GPU (Little's law in a closed loop) and interactivity, in one pass
    derive = _percentiles.derived if _kernels.AVAILABLE else _percentiles.derived_numpy
    per_row["num_gpus"] = rows["num_gpus"].to_numpy(dtype=float)
    planes["throughput"], planes["interactivity"] = derive(per_row, planes["latency"],
                                                           planes["tpot"])  # fmt: skip
    arrays = {name: planes[name] for name in names}
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


def prediction_rows(design: Design, configs: pd.DataFrame) -> pd.DataFrame:
    """The rows to predict with defaults, registry sizes and labels; bad rows a DataError."""
    rows = pd.DataFrame(configs).reset_index(drop=True).copy()
    need = ["gpu", "target", "k", "prefill_len", "decode_len"]
    missing = [c for c in need if c not in rows.columns]
    if missing:
        raise DataError(f"prediction rows need column(s) {', '.join(missing)}", field=missing[0])
    defaults = {"num_gpus": 1, "engines": 1.0, "layout": "", "drafter": None, "method": None,
                "acceptance_length": np.nan, "alpha": np.nan, "request_rate": np.nan,
                "concurrency": np.nan, "drafter_params": np.nan}  # fmt: skip
    if len(design.sources) == 1:
        defaults["source"] = design.sources[0]
    datasets = design.rows["dataset"].fillna("").unique()
    defaults["dataset"] = datasets[0] if len(datasets) == 1 else ""  # as the docstring says
    for col, value in defaults.items():
        if col not in rows.columns:
            rows[col] = value
    for col in ("source", "engine", "precision"):
        if col not in rows.columns:
            fitted = sorted(design.rows[col].unique())
            if len(fitted) > 1:
                raise DataError(
                    f"the model was fitted on several {col}s ({', '.join(map(str, fitted))}): "
                    f"give '{col}' per row",
                    field=col,
                )
            rows[col] = fitted[0]
    fill_labels(rows)
    fill_sizes(rows)
    unknown = rows["target_params"].isna().to_numpy()
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise DataError(
            f"unknown target {rows.at[i, 'target']!r}: "
            + advice(
                cli="give --config target_params=N (and the MoE fields)",
                python="give target_params (and the MoE fields) or register_model it",
            ),
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
    _check_values(rows)
    # a benchmark run's opening wave, where a closed-loop row gives its request count
    rows["_opening"] = opening_of(rows, open_rows.to_numpy(), rows["concurrency"].astype(float))
    label_systems(rows, reference=design.rows)  # the fitted workloads of its configurations
    design.match_acceptance(rows)  # measured acceptance of seen draft systems
    return rows


# what a prediction row's numbers may be: (column, test on the values given, what is expected)
_ROW_RULES = (
    ("prefill_len", lambda v, r: v > 0, "a positive number of tokens"),
    ("decode_len", lambda v, r: v >= 1, "at least 1 token"),
    ("num_gpus", lambda v, r: (v >= 1) & (v == np.round(v)), "a whole number ≥ 1"),
    ("engines", lambda v, r: (v >= 1) & (v == np.round(v)), "a whole number ≥ 1"),
    ("k", lambda v, r: (v >= 0) & (v <= 64) & (v == np.round(v)), "a whole number 0–64"),
    ("request_rate", lambda v, r: v > 0, "a positive rate (req/s)"),
    ("concurrency", lambda v, r: v >= 1, "at least 1 request in flight"),
    ("alpha", lambda v, r: (v >= 0) & (v < 1), "an acceptance rate in [0, 1)"),
    # (not bounded by k + 1 here: planning holds a given acceptance length fixed across k)
    ("acceptance_length", lambda v, r: (v >= 1) & (v <= 65), "between 1 and 65 tokens per step"),
    ("n_requests", lambda v, r: (v >= 1) & (v == np.round(v)), "a whole number ≥ 1 of requests"),
    ("max_num_seqs", lambda v, r: (v >= 1) & (v == np.round(v)), "a whole number ≥ 1 of requests"),
)  # fmt: skip


def unfitted_note(design: Design, config: dict) -> str | None:
    """Why ``config`` (one configuration, without its load) is not a system (or, with a drafter
    and ``k`` > 0, a draft system) the model was fitted on — the fields it differs in from the
    closest fitted one — or None when it is. An unfitted configuration is predicted as a new
    one, with fresh draws of its residuals: honest, wider intervals, but a user who left out a
    field (a layout, a dataset) meant the fitted system, and should know."""
    rows = prediction_rows(design, pd.DataFrame([{"k": 0.0, **config, "request_rate": 1.0}]))
    row = rows.iloc[0]
    if row["system"] in design.systems:
        if row["k"] == 0 or row["draft_system"] in design.draft_systems:
            return None
        cut = len(row["system"]) + 1  # a draft system's label: its system's, "|", the drafter
        on = design.draft_table.index[design.draft_table["system"] == row["system"]]
        return (f"the model has not seen drafter {row['draft_system'][cut:]!r} on this system "
                f"(fitted with it: {', '.join(d[cut:] for d in on) or 'none'}): its draft "
                "costs are drawn afresh from the population's spread")  # fmt: skip
    keys = [key for key in SYSTEM_KEYS if key in design.sys_table]

    def value(table, key):  # the lengths as the labels take them (fitted workloads)
        return table[f"_{key}"] if f"_{key}" in table else table[key]

    text = lambda v: _label((v,))  # noqa: E731  (as the labels write it: 8 and 8.0 alike)
    table = design.sys_table
    same = sum(value(table, key).map(text).to_numpy() == text(value(row, key)) for key in keys)
    near = table.iloc[int(np.argmax(same))]
    differ = [key for key in keys if text(value(near, key)) != text(value(row, key))]
    show = lambda v: repr(text(v)) if isinstance(v, str) or pd.isna(v) else text(v)  # noqa: E731
    return ("no fitted system matches this configuration, so it is predicted as a new one "
            "(fresh draws from the population's spread: wider intervals); the closest fitted "
            "one differs in " + ", ".join(f"{key} ({show(value(row, key))} here, "
                                          f"{show(value(near, key))} fitted)" for key in differ)
            + advice(cli=" — for that one, give "
                     + " ".join(f"--config {key}={show(value(near, key))}" for key in differ),
                     python=" — for that one, give "
                     + ", ".join(f"{key}={show(value(near, key))}" for key in differ)))  # fmt: skip


def _check_values(rows: pd.DataFrame) -> None:
    """Impossible numbers in prediction rows are a DataError naming the row and the field
    (a GPU count of 0 or a negative prompt would otherwise give numbers)."""
    for column, ok, expected in _ROW_RULES:
        if column not in rows:  # an optional column (n_requests)
            continue
        values = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float)
        given = rows[column].notna().to_numpy()
        with np.errstate(invalid="ignore"):
            bad = given & ~(np.isfinite(values) & ok(values, rows))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            shown = str(rows[column].iloc[i])[:40]
            raise DataError(f"{column} must be {expected}, got {shown}", record=f"row {i}",
                            field=column)  # fmt: skip


def _row_arrays(design: Design, rows, flat) -> dict[str, np.ndarray]:
    """Per-row inputs of the prediction kernel (``d_idx``: set by
    :func:`bayes_sd.config_draws.acceptance_draws`)."""
    k = rows["k"].to_numpy(dtype=float)
    rate = rows["request_rate"].astype(float).to_numpy()
    return {
        "engines": rows["engines"].to_numpy(dtype=float),
        "k": k,
        "e_known": acceptance_of(rows),
        "d_idx": np.zeros(len(rows), dtype=int),
        "decode_len": rows["decode_len"].to_numpy(dtype=float),
        "prefill_len": rows["prefill_len"].to_numpy(dtype=float),
        "rate": rate,
        "conc": rows["concurrency"].astype(float).to_numpy(),
        "is_open": ~np.isnan(rate),
        "opening": rows["_opening"].to_numpy(dtype=float),
    }


def _with_noise(design: Design, rows, flat, planes: dict, per_row: dict, rng) -> None:
    """Multiply the latency, TTFT and TPOT draws (in place) by draws of each metric's fitted
    noise, as in the likelihood (:func:`bayes_sd.laws.noise_scale`: E2E's and, opt-in, open-loop
    TPOT's grow with E2E's queueing share, TTFT's with the load); saturated draws stay +inf."""
    src = pd.Index(design.sources).get_indexer(rows["source"])
    nu = flat["nu"][:, None]

    def ttft_load():  # the requests in flight at the predicted latency
        return laws.predicted_load(per_row["is_open"], per_row["rate"], planes["latency"],
                                   per_row["conc"], per_row["engines"])  # fmt: skip

    @cache
    def queue():  # E2E's queueing share of the noiseless means: once, where asked
        with np.errstate(divide="ignore", invalid="ignore"):
            return laws.queue_share_open(planes["latency"], planes["light"])

    tpot_on = np.any(flat.get("tpot_load_noise", 0.0) > 0)  # opt-in (bayes_sd.priors)
    shares = {"latency": queue, "ttft": ttft_load,
              "tpot": (lambda: queue() * per_row["is_open"]) if tpot_on else None}  # fmt: skip
    if composed := "sigma" not in flat:  # E2E not fitted itself: TTFT + (D − 1) TPOT, noisy
        del shares["latency"]
    for metric, share in shares.items():
        name = "sigma" if metric == "latency" else f"{metric}_sigma"
        if name not in flat:  # not measured in training: the E2E noise
            name = "sigma"
        sigma = flat[name][:, np.where(src < 0, 0, src)]
        if (src < 0).any():  # an unseen source: the largest fitted noise scale
            sigma[:, src < 0] = flat[name].max(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            g = "tpot_load_noise" if metric == "tpot" else "load_noise"  # the scale's growth
            scale = sigma if share is None else laws.noise_scale(sigma, flat[g][:, None], share())
        noise = rng.standard_t(nu, size=scale.shape) * scale
        lat = planes[metric]
        with np.errstate(invalid="ignore", over="ignore"):
            noisy = lat * np.exp(noise)
        planes[metric] = np.where(np.isfinite(lat), noisy, lat).astype(lat.dtype)
    if composed:  # TTFT + (D − 1) TPOT of the noisy phases
        noisy = planes["ttft"] + (rows["decode_len"].to_numpy(dtype=float) - 1.0) * planes["tpot"]
        lat = planes["latency"]
        planes["latency"] = np.where(np.isfinite(lat), noisy, lat).astype(lat.dtype)


def _wave_shares(planes: dict) -> np.ndarray | None:
    """The opening wave's share of the mean TTFT and of the mean E2E, (2, row, draw), from the
    (draw, row) planes of one pass (None where the pass has no wave plane)."""
    if "wave" not in planes:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = [np.nan_to_num(np.clip(planes["wave"] / planes[m], 0.0, 1.0)).T
                  for m in laws.WAVE_METRICS]  # fmt: skip
    return np.ascontiguousarray(np.stack(shares))


def _tail_draws(design: Design, rows, flat, planes: dict, per_row: dict, rng,
                noise: bool, shares=None) -> dict:  # fmt: skip
    """(draw, row) percentiles of TTFT, TPOT and E2E: each metric's (noisy) mean times the tail
    law's ratio at the row's load (requests in flight per engine; with the opening wave's
    ``shares`` of the means where a closed-loop row has one), with the fitted terms of the
    row's engine and GPU type (fresh draws from their spread for a level the model has not
    seen) and, with ``noise``, the fitted scatter of a measured ratio. One blockwise pass on
    every core (``_percentiles.tails``)."""
    # one label per distinct (engine, GPU type) of the rows, the tail law's levels per label
    cols = [design.effect_column(effect) for effect in laws.TAIL_EFFECTS]
    keys = rows[cols].astype(str)
    lab = keys.groupby(cols, sort=False).ngroup().to_numpy()
    labels = keys.iloc[np.unique(lab, return_index=True)[1]]  # one row per label, in order
    level = np.repeat(flat["tail_level"][:, :, None], len(labels), axis=2)  # (draw, tail, label)
    for effect, col in zip(laws.TAIL_EFFECTS, cols, strict=True):
        sd, z = flat[f"tail_{effect}_sd"], flat.get(f"tail_{effect}_z")  # sd: (draw, tail)
        # fitted on one level (or without percentiles): no terms, its level is the population's
        fitted = None if z is None else np.swapaxes(sd[:, :, None] * z, 1, 2)
        terms = config_draws.level_draws(design, effect, labels[col].to_numpy(), fitted,
                                         sd[:, None, :], len(laws.TAILS), rng)  # fmt: skip
        level += np.swapaxes(terms, 1, 2)
    means = [planes[metric] for metric in laws.TAIL_METRICS]
    out = _percentiles.tails(level, flat["tail_slope"], lab, per_row, means, shares)
    tails = {name: out[t].T for t, name in enumerate(laws.TAILS)}
    if noise:  # the scatter of a measured ratio around the law
        for t, name in enumerate(laws.TAILS):
            scale = flat["tail_sigma"][:, t, None]
            ratio = rng.standard_t(flat["nu"][:, None], size=tails[name].shape) * scale
            with np.errstate(invalid="ignore", over="ignore"):
                tails[name] *= np.exp(ratio)  # in place: the plane keeps its dtype
    return tails


def _moe_baselines(rows: pd.DataFrame, moe_row: np.ndarray) -> np.ndarray:
    """Per row, its baseline among the distinct baselines of the rows ``moe_row`` selects (0,
    1, ...; −1 for the others): rows of one baseline series (system and k = 0), target sizes
    and load have the same baseline draws, solved once (``_kernels._baselines``). (Named for
    the MoE rows it once served; with the roofline every open-loop row solves a fixed point.)"""
    base_of = np.full(len(rows), -1, dtype=np.int64)
    if moe_row.any():
        sizes = ["target_params", "target_active_params", "target_experts"]
        keys = ["base_series", *sizes, "target_experts_per_token", "request_rate",
                "concurrency", "engines", "_opening"]  # fmt: skip
        sub = rows.loc[moe_row, keys]
        base_of[moe_row] = sub.groupby(keys, dropna=False, sort=False).ngroup().to_numpy()
    return base_of


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
    cols = ["gpu", "num_gpus", "engine", "precision", "target", "drafter", "k", "prefill_len",
            "decode_len", "request_rate", "concurrency"]  # fmt: skip
    out = rows[cols].copy()
    names = list(arrays)
    # one variable per thread: NumPy's sort releases the GIL (2 cores: 0.29 s → 0.17 s on
    # 10^5 rows × 100 draws)
    columns = {}
    with ThreadPoolExecutor(max_workers=min(len(names), os.cpu_count() or 1)) as pool:
        found = pool.map(lambda v: nan_quantiles(arrays[v], (0.5, lo, hi)), names)
        for var, (med, low, high) in zip(names, found, strict=True):
            columns |= {f"{var}_median": med, f"{var}_lo": low, f"{var}_hi": high}
    columns["p_speedup_gt_1"] = np.mean(arrays["speedup"] > 1, axis=0)
    # one concatenation, not 58 column insertions
    return pd.concat([out, pd.DataFrame(columns, index=out.index, copy=False)], axis=1)
