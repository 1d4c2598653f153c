"""Every default prior and likelihood of the models, as configuration (``pymc_extras.prior.Prior``).

Change a default here, or override any prior by name without touching code:
``LatencyModel(model_config={"priors": {"sigma": Prior("HalfNormal", sigma=0.05,
dims="source")}})``, ``StepLevelModel(priors={...})``, or a YAML file (:func:`load_model_config`,
``bayes-sd fit --model-config FILE.yaml``). Unknown names are an error listing them all.

How the latency model's were chosen (docs/model.md): coefficients are on the log scale, at the
reference sizes of :mod:`bayes_sd.coefs` and a 1,024-token length.

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
* ``series_sd``: spread of the per-series shifts of ``C2`` (a series is one draft system at
  one draft length, or a system's baseline) — what the coefficient laws do not explain of one
  (k, acceptance) curve; HalfNormal(0.1): the closed form describes a series to a few percent.
* ``series_k_slope``: the series shifts' trend per draft token around k = 3
  (:func:`bayes_sd.laws.series_trend`; the demo's fitted shifts grew ~5% per token without it),
  only where a draft system runs two or more draft lengths. **Off by default** (fixed at 0): on,
  with ``Prior("Normal", mu=0, sigma=0.1)`` (±10% of ``C2`` per draft token at one sd), it
  took the simulated held-out draft lengths from 2.2–4.7% to 1.1–3.1% median error and the
  held-out series of the demo from 1.06× to 0.94× the curve fit's, but notebook 01's fit fell
  from bulk ESS 550–740 to 434 and a tail ESS of 393 (a convergence warning) — docs/validation.md,
  section 4.
* ``series_draft_sd``: spread of a draft system's mean series shift (the draft lengths of one
  draft system share what the laws miss of their ``C2``, :func:`bayes_sd.graph_side.
  series_draft_mean`), only for draft systems that run two or more draft lengths: an unseen k
  of such a draft system is then predicted around its measured siblings, not around the
  population's 0. **Off by default** (fixed at 0); on with ``Prior("HalfNormal", sigma=0.1)``
  (``validation/configs/series_draft.yaml``): simulated held-out draft lengths 0.8–4.5% →
  1.4–2.2% median error, the demo's held-out series 9.9% → 4.9%, but notebook 01's fit does
  not mix with it (docs/validation.md, sections 4 and 6).
* ``series_draft_slope_sd``: spread of a draft system's trend in k of its series shifts
  (:func:`bayes_sd.graph_side.series_draft_slope`), only for draft systems that run three or
  more draft lengths, summing to zero over them (what they share is η's, ``verify_share``): an
  unseen k of such a draft system is predicted on its siblings' line. **Off by default**
  (fixed at 0); on with ``Prior("HalfNormal", sigma=0.05)`` per draft token
  (``validation/configs/series_draft_slope.yaml``, docs/validation.md, section 6).
* ``moe_excess``: MoE coverage increment on the log scale around "reading every expert costs
  what a dense model of the total size would", Normal(0, 0.5). Hierarchically centred with the
  residuals when the prior is a location family (its ``mu`` shifted by the anchor).
* Acceptance (the positional law of :mod:`bayes_sd.acceptance`, ``logit a_i = θ − δ (i − 1)``,
  per acceptance group: dataset, target, drafter, engine): ``accept_logit`` θ, Normal(1, 1) —
  a first position accepted 73% of the time, 27–95% within one sd (EAGLE-type drafters
  0.7–0.9, small draft models on chat 0.5–0.7); ``accept_decay`` δ, HalfNormal(0.7) — from
  i.i.d. (0) to an MTP head whose E(k) is flat past k = 3 (≈ 1); a fixed 0 is the i.i.d. law.
  Groups scatter around them with ``accept_logit_sd`` HalfNormal(0.5) and ``accept_decay_sd``
  HalfNormal(0.5) (log scale); a run's measured log acceptance length scatters around the law
  with ``accept_sigma`` HalfNormal(0.05), a measured per-position rate (vLLM's, on its own
  scale) around its group's ``r_i`` with ``accept_pos_sigma`` HalfNormal(0.05). Where no run
  measured acceptance the law is latent, learnt from the latencies at several k.
* ``sigma``: measurement noise on log mean E2E latency per source, HalfNormal(0.1) (a few
  percent is typical of benchmark means; InferenceX repeats of one point on other dates differ
  by 7% median); ``ttft_sigma`` HalfNormal(0.2) and ``tpot_sigma`` HalfNormal(0.1) the same for
  mean TTFT (noisier: queueing) and TPOT; ``load_noise``: the growth of the E2E scale with its
  queueing share and of TTFT's with the log requests in flight, HalfNormal(1);
  ``tpot_load_noise``: the growth of TPOT's scale with an open-loop run's queueing share
  (measured in the fit, ``graph_side.open_queue_share``; predicted in ``predict``: a finite
  run near saturation; a closed loop's batch is held at its concurrency),
  off (fixed at 0) by default — on (e.g. ``Prior("HalfNormal", sigma=1.0)``) it widens TPOT's
  intervals near saturation (docs/validation.md §4 for what it measured); ``nu``:
  Student-t degrees of freedom, Gamma(2, 0.1), used when the ``likelihood`` family has one
  (Student-t, the default: robust to the odd point).
* ``engine_sd``, ``precision_sd``: spreads of the engine and weight-precision effects (as
  ``gpu_sd``), HalfNormal(0.3).
* ``kink_tokens`` (T*): tokens per step at which a dense model's step turns compute-bound
  (the roofline's kink: peak FLOPs over memory bandwidth times bytes per parameter over 2 —
  295 on an H100 in bf16, 206 on an H200, 250–300 on B200/MI300X; for MoE it scales by total
  over active parameters), LogNormal(log 250, 0.5).
* ``verify_share`` (η): what each draft token the target verifies costs a request, as a share
  of its one-token pass ``c2v`` (attention of one more query over its context, its logits and
  acceptance test), HalfNormal(0.3). PyTorch forward passes over a dense cache
  (``data/stepcost``, H100, 8B and 14B targets at 64–256 sequences) cost 0.3–0.5 per token
  beyond the step to two tokens; paged attention reads a sequence's cache once for all its
  query tokens, so real engines should sit lower. Only where a draft system runs two or more
  draft lengths (with one each, ``η k c2v`` trades off against ``c2s`` and ``k c2d``); 0
  elsewhere.
* ``capacity`` (log requests one engine runs at most at P + D = 2,048 tokens per request),
  Normal(log 512, 1.5): engines cap running requests (``max_num_seqs``, 256–1,024 by default)
  and KV-cache memory; ``capacity_length_slope`` Normal(−1, 0.5): the KV cache holds fewer
  longer requests; ``capacity_sd`` = 1 (fixed: a factor of 2.7 between systems): only the few
  systems measured past their capacity inform it, and a learnt spread made a funnel with the
  systems that never reach it (R-hat 1.46 on InferenceX). Closed-loop sweeps only.
* ``gpus_slope``: the elasticity of each coefficient in the number of GPUs serving the target
  (tensor parallelism splits the weights and the work), Normal(−0.7, 0.3): −1 is perfect
  scaling, communication costs keep it above. With it, the GPU effect is one per GPU type and a
  GPU count the sweep never saw is predicted, not drawn afresh.
* A number instead of a Prior fixes that parameter.
* ``ttft_share`` (θ): the share of another request's prefill stall that falls before one's
  first token (the rest stalls one's decode), Beta(2, 2).
* ``burst_share`` (κ): the share of a closed-loop benchmark's opening wave of prefills that a
  request of the wave waits for on average (:mod:`bayes_sd.phases`, **The opening wave**):
  ~1/2 when prompts are prefilled in chunks as they come, 1 in one pass. **Off by default**
  (fixed at 0): measured, the wave priced at ``A2`` took the held-out InferenceX mean TTFT
  from 40% to 37% but the simulated held-out draft lengths from 2.4–4.7% to 5.5–6.4% (priced
  at ``A1``: 67% on InferenceX) — its form is not settled (docs/validation.md). On, it also
  sets the top percentiles of TTFT and E2E (:mod:`bayes_sd.laws`, **The opening wave in the
  tails**), so a run's p99 sizes it: on the InferenceX higher-loads fold that took E2E from
  13.1% to 8.0–9.8% and TPOT from 8.6% to 6.7–7.2%, but mean TTFT from 42% to 71–84% and p99
  TTFT from 49% to 61–64% (low-load p99s that are not the wave, on both AMD GPUs, size it too
  large). Turn it on with a prior, e.g.
  ``{"burst_share": Prior("LogNormal", mu=log(0.7), sigma=0.5)}``; it enters fits with
  closed-loop runs whose request count is known.
* Tails (:mod:`bayes_sd.laws`, **Tails**): ``tail_level`` per percentile term (coordinate
  ``tail``: ``ttft_p50``, ``ttft_p90``, …, ``latency_p99``), an idle engine's (sampled at 16
  requests in flight per engine with this prior, ``tail_level_centre``) — the log p50/mean ratio
  Normal(−0.1 TTFT, 0 TPOT, −0.05 E2E; 0.3) (queueing skews TTFT right, so its median sits
  below its mean), and the log gaps log(log p90/p50) and log(log p99/p90) Normal(log 0.4, 1): a
  p90 about 1.5× the median, within a factor e of that gap either way; ``tail_slope``
  Normal(0, 0.5): how a tail's term grows with the load ``log(1 + B)``, B the requests in
  flight per engine;
  ``tail_sigma`` HalfNormal(0.2): the scatter of a measured log ratio (a p99 of a few hundred
  requests is noisy); ``tail_engine_sd`` HalfNormal(0.3) per term: the spread of per-engine
  tail terms (schedulers differ in how they order prefills), ``tail_gpu_sd`` the same per GPU
  type (platforms stall differently: on InferenceX SGLang's TTFT p50/mean is 0.25–0.4 on AMD
  GPUs, 0.8–1.0 on B200 at light load, while TPOT's p50 is its mean everywhere — one spread
  for all nine terms was held near 0 by the TPOT ones). Unmeasured tails keep these priors.
* Joint step likelihood (``fit(steps=...)``): ``step_overhead``, the log serving overhead per
  level that an isolated forward pass does not pay, Normal(0.1, 0.3); ``step_sigma``,
  HalfNormal(0.1); ``step_likelihood`` Student-t with ν = 4 (``step_nu``, Gamma(2, 0.1), when
  a family without a fixed ν is given).

:data:`STEP_PRIORS` are :class:`bayes_sd.stepfit.StepLevelModel`'s, in milliseconds at 1 B
active parameters on the reference GPU: ``mu`` (a ~ 2 ms for weights and launches, b ~ 5 µs per
token, c ~ 40 ns per cached token of 128 KiB, a multi-token premium s ~ 0.5 ms, e ~ 10 ns per
new × cached token at 8B's width), ``beta`` (size and width slopes), ``gpu_effect`` (against the
reference GPU), ``model_sd`` and ``pair_sd`` (model and model × GPU residual spreads),
``moe_excess``, ``sigma``, ``nu`` and the ``likelihood``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
from pymc_extras.prior import Prior, deserialize

from bayes_sd.coefs import COEFS, REF_DRAFTER_PARAMS, REF_TARGET_PARAMS
from bayes_sd.errors import DataError

__all__ = [
    "DEFAULT_PRIORS",
    "MODEL_CONFIG_KEYS",
    "STEP_PRIORS",
    "load_model_config",
    "make_likelihood",
    "resolve_priors",
    "shifted_variable",
]

MODEL_CONFIG_KEYS = ("priors", "coverage", "residuals", "centred")


def _tail_defaults() -> dict[str, Prior]:
    from bayes_sd.laws import TAIL_METRICS

    # per metric: log p50/mean, then the log gaps log(log p90/p50), log(log p99/p90)
    median = {"ttft": -0.1, "tpot": 0.0, "latency": -0.05}
    level = [v for m in TAIL_METRICS for v in (median[m], float(np.log(0.4)), float(np.log(0.4)))]
    spread = [v for _ in TAIL_METRICS for v in (0.3, 1.0, 1.0)]
    return {
        "tail_level": Prior("Normal", mu=np.array(level), sigma=np.array(spread), dims="tail"),
        "tail_slope": Prior("Normal", mu=0.0, sigma=0.5, dims="tail"),
        "tail_sigma": Prior("HalfNormal", sigma=0.2, dims="tail"),
        "tail_engine_sd": Prior("HalfNormal", sigma=0.3, dims="tail"),
        "tail_gpu_sd": Prior("HalfNormal", sigma=0.3, dims="tail"),
    }


def _latency_defaults() -> dict[str, Prior]:
    from bayes_sd.population import DEFAULT_POPULATION

    pop = DEFAULT_POPULATION
    ref = {c: REF_DRAFTER_PARAMS if c.endswith("d") else REF_TARGET_PARAMS for c in COEFS}
    centre = [
        round(float(pop.intercept[c] + pop.slope[c] * np.log(ref[c] / 1e9)), 3) for c in COEFS
    ]
    return {
        "intercept": Prior("Normal", mu=np.array(centre), sigma=1.5, dims="coef"),
        "size_slope": Prior("LogNormal", mu=float(np.log(0.8)), sigma=0.5, dims="slope_coef"),
        "gpus_slope": Prior("Normal", mu=-0.7, sigma=0.3, dims="slope_coef"),
        "length_slope": Prior("Normal", mu=0.8, sigma=0.5, dims="length_coef"),
        "gpu_sd": Prior("HalfNormal", sigma=0.3),
        "engine_sd": Prior("HalfNormal", sigma=0.3),
        "precision_sd": Prior("HalfNormal", sigma=0.3),
        "kink_tokens": Prior("LogNormal", mu=float(np.log(250.0)), sigma=0.5),
        "verify_share": Prior("HalfNormal", sigma=0.3),
        "capacity": Prior("Normal", mu=float(np.log(512.0)), sigma=1.5),
        "capacity_length_slope": Prior("Normal", mu=-1.0, sigma=0.5),
        "capacity_sd": 1.0,
        "ttft_share": Prior("Beta", alpha=2.0, beta=2.0),
        "burst_share": 0.0,  # the opening wave: off until its form is settled (see above)
        "system_sd": Prior("HalfNormal", sigma=0.3, dims="level"),
        "draft_sd": Prior("HalfNormal", sigma=0.3),
        "series_sd": Prior("HalfNormal", sigma=0.1),
        "series_k_slope": 0.0,  # the series shifts' trend in k: off (see above)
        "series_draft_sd": 0.0,  # a draft system's mean series shift: off (see above)
        "series_draft_slope_sd": 0.0,  # a draft system's series trend in k: off (see above)
        "moe_excess": Prior("Normal", mu=0.0, sigma=0.5, dims="coef_pv"),
        "accept_logit": Prior("Normal", mu=1.0, sigma=1.0),
        "accept_decay": Prior("HalfNormal", sigma=0.7),
        "accept_logit_sd": Prior("HalfNormal", sigma=0.5),
        "accept_decay_sd": Prior("HalfNormal", sigma=0.5),
        "accept_sigma": Prior("HalfNormal", sigma=0.05),
        "accept_pos_sigma": Prior("HalfNormal", sigma=0.05),
        "sigma": Prior("HalfNormal", sigma=0.1, dims="source"),
        "ttft_sigma": Prior("HalfNormal", sigma=0.2, dims="source"),
        "tpot_sigma": Prior("HalfNormal", sigma=0.1, dims="source"),
        "load_noise": Prior("HalfNormal", sigma=1.0),
        "tpot_load_noise": 0.0,  # TPOT's scale constant in the load: off (see above)
        "nu": Prior("Gamma", alpha=2.0, beta=0.1),
        "likelihood": Prior("StudentT"),
        **_tail_defaults(),
        "step_overhead": Prior("Normal", mu=0.1, sigma=0.3, dims="level"),
        "step_sigma": Prior("HalfNormal", sigma=0.1),
        "step_likelihood": Prior("StudentT", nu=4.0),
        "step_nu": Prior("Gamma", alpha=2.0, beta=0.1),
    }


def _step_defaults() -> dict[str, Prior]:
    return {
        "mu": Prior("Normal", mu=np.log([2.0, 5e-3, 4e-5, 0.5, 1e-5]), sigma=1.5, dims="term"),
        "beta": Prior("Normal", mu=np.array([0.7, 1.0, 1.0, 0.7, 1.0]), sigma=0.3, dims="term"),
        "gpu_effect": Prior("Normal", mu=0.0, sigma=0.5, dims=("other_gpu", "kind", "term")),
        "model_sd": Prior("HalfNormal", sigma=0.5, dims="term"),
        "pair_sd": Prior("HalfNormal", sigma=0.1),
        "moe_excess": Prior("Normal", mu=0.0, sigma=0.5, dims="moe_model"),
        "sigma": Prior("HalfNormal", sigma=0.1),
        "nu": Prior("Gamma", alpha=2.0, beta=0.1),
        "likelihood": Prior("StudentT"),
    }


DEFAULT_PRIORS: dict[str, Prior] = _latency_defaults()
STEP_PRIORS: dict[str, Prior] = _step_defaults()


def resolve_priors(
    overrides: dict[str, Any] | None, defaults: dict[str, Prior] | None = None
) -> dict[str, Prior | float]:
    """``defaults`` (the latency model's when not given) updated by ``overrides`` (Prior
    objects or their ``to_dict()`` form). Unknown names are a ``ValueError`` listing them."""
    priors = dict(_latency_defaults() if defaults is None else defaults)
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(priors))
    if unknown:
        raise ValueError(
            f"unknown prior name(s): {', '.join(unknown)}; known: {', '.join(sorted(priors))}"
        )
    bad = [
        k
        for k, v in overrides.items()
        if not isinstance(v, Prior | dict | int | float)
        or (isinstance(v, int | float) and (isinstance(v, bool) or not np.isfinite(v)))
    ]
    if bad:
        raise ValueError(
            f"prior(s) {', '.join(bad)} must be pymc_extras.prior.Prior objects (or a finite "
            "number, which fixes the value)"
        )
    for name, value in overrides.items():
        if isinstance(value, int | float):
            value = float(value)
        elif isinstance(value, dict):
            try:
                value = deserialize(value)
            except Exception as err:  # pymc_extras raises several kinds
                raise ValueError(f"prior {name}: cannot read {value!r} as a Prior ({err})") from err
        priors[name] = value
    return priors


def draw_priors(priors: dict, names, draws: int, rng, coords: dict) -> dict[str, np.ndarray]:
    """``draws`` forward draws of the priors ``names`` (a fixed number is repeated), shaped
    ``(draws, *dims)`` with the lengths of ``coords``: what a parameter the fit did not sample
    (no data touched it) stands for in a prediction. Flat priors are drawn in one call of a
    sized distribution (0.02 s for the tail law, on predict's path); a hierarchical one goes
    through a model, one draw at a time (0.1 s)."""
    import pymc as pm

    def shape(spec) -> list[int]:
        dims = getattr(spec, "dims", None) or ()
        return [len(coords[d]) for d in (dims if isinstance(dims, tuple) else (dims,))]

    out, flat, nested = {}, [], []
    for name in names:
        spec = priors[name]
        if isinstance(spec, float):  # fixed: shaped as the default prior's dims
            out[name] = np.full((draws, *shape(DEFAULT_PRIORS.get(name))), spec)
        elif any(isinstance(v, Prior) for v in spec.parameters.values()):
            nested.append(name)
        else:
            size = (draws, *shape(spec))
            flat.append((name, spec.pymc_distribution.dist(**spec.parameters, size=size)))
    if flat:
        values = pm.draw([v for _, v in flat], draws=1, random_seed=rng, mode="FAST_COMPILE")
        values = values if isinstance(values, list) else [values]
        out.update({name: np.asarray(v) for (name, _), v in zip(flat, values, strict=True)})
    if nested:
        with pm.Model(coords=coords):
            made = [priors[name].create_variable(name) for name in nested]
            values = pm.draw(made, draws=draws, random_seed=rng, mode="FAST_COMPILE")
        out.update({name: np.asarray(v) for name, v in zip(nested, values, strict=True)})
    return out


def shifted_variable(spec: Prior, name: str, sampled: str, shift, dims=None):
    """The variable ``name`` with the location prior ``spec`` (a fixed ``mu``), sampled as
    ``sampled`` = ``name + shift`` under ``spec`` with its ``mu`` moved by ``shift``: the same
    prior on ``name`` (a unit-Jacobian shift), for a ``name`` whose data pin ``name + shift``
    (the intercepts at the design's mean covariates, the MoE level at its anchor, the tail
    levels at a loaded engine) and which would otherwise trade off against ``shift``'s slopes."""
    import pymc as pm

    moved = spec.deepcopy()
    moved.parameters["mu"] = np.asarray(spec.parameters["mu"], dtype=float) + shift
    return pm.Deterministic(name, moved.create_variable(sampled) - shift, dims=dims or spec.dims)


def make_likelihood(spec: Prior, name: str, *, mu, sigma, observed, dims, nu=None):
    """The observed variable ``name`` of the family ``spec`` (a Prior without ``mu``): ``mu``,
    ``sigma`` and ``observed`` are filled in, and ``nu()`` (a callable creating the
    degrees-of-freedom variable) when the family takes a ``nu`` the spec does not fix."""
    dist = spec.deepcopy()
    params = inspect.signature(dist.pymc_distribution.dist).parameters
    for key in ("mu", "sigma"):
        if key not in params:
            raise ValueError(f"the likelihood {spec.distribution} has no {key!r} parameter")
    dist.parameters.update(mu=mu, sigma=sigma, observed=observed)
    if "nu" in params and "nu" not in dist.parameters and nu is not None:
        dist.parameters["nu"] = nu()
    dist.dims = dims
    return dist.create_variable(name)


def load_model_config(path: str | Path) -> dict[str, Any]:
    """A ``model_config`` dict from a YAML (or JSON) file, read with ``yaml.safe_load`` under a
    size limit: ``priors`` (name → ``{dist, kwargs, dims}``, the ``Prior.to_dict`` form),
    ``centred`` (true, false or auto), ``residuals`` (a list), ``coverage`` (true or false).
    Errors are :class:`~bayes_sd.DataError` naming the file and the key."""
    from bayes_sd.io._safe import MAX_SIDECAR_BYTES, load_yaml, read_text

    file = str(path)
    data = load_yaml(read_text(Path(path), max_bytes=MAX_SIDECAR_BYTES), file)
    if not isinstance(data, dict):
        raise DataError("a model configuration is a mapping of keys to values", file=file)
    unknown = sorted(str(k) for k in data if k not in MODEL_CONFIG_KEYS)
    if unknown:
        raise DataError(
            f"unknown key(s) {', '.join(unknown)}; known: {', '.join(MODEL_CONFIG_KEYS)}",
            file=file,
            field=unknown[0],
        )
    config = dict(data)
    priors = config.get("priors") or {}
    if not isinstance(priors, dict):
        raise DataError("priors must map names to priors", file=file, field="priors")
    known = _latency_defaults()
    out = {}
    for name, spec in priors.items():
        where = f"priors.{name}"
        if name not in known:
            raise DataError(
                f"unknown prior; known: {', '.join(sorted(known))}", file=file, field=where
            )
        if not isinstance(spec, dict | int | float) or (
            isinstance(spec, dict) and "dist" not in spec
        ):
            raise DataError(
                "give a prior as {dist: Normal, kwargs: {mu: 0, sigma: 1}, dims: coef}, or a "
                "number to fix the value",
                file=file,
                field=where,
            )
        try:
            out[name] = resolve_priors({name: spec})[name]
        except ValueError as err:
            raise DataError(str(err), file=file, field=where) from err
    config["priors"] = out
    if "centred" in config:
        centred = config["centred"]
        if centred not in (True, False, "auto"):
            raise DataError("centred must be true, false or auto", file=file, field="centred")
    if "residuals" in config and not isinstance(config["residuals"], list):
        raise DataError("residuals must be a list", file=file, field="residuals")
    if "coverage" in config and not isinstance(config["coverage"], bool):
        raise DataError("coverage must be true or false", file=file, field="coverage")
    return config
