"""LatencyModel structure, prediction and persistence (mocked sampling), and the curve-fit baseline.

Mocked sampling (prior draws in place of MCMC) tests the plumbing only: it proves nothing about
whether the model recovers anything. Parameter recovery needs the real sampler.
"""

import warnings
from dataclasses import replace
from functools import partial

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import pytest
from conftest import logp
from pymc.testing import mock_sample
from pymc_extras.prior import Prior

from bayes_sd import DataError, acceptance, graph_side
from bayes_sd.baseline import fit_baseline
from bayes_sd.model import ConvergenceWarning, LatencyModel
from bayes_sd.population import DEFAULT_POPULATION, simulate_from_model, with_overrides

CONFIGS = [
    {
        "gpu": "H100-SXM-80GB",
        "target": "llama-3.1-8b",
        "drafter": "eagle3-head-8b",
        "prefill_len": 1024,
        "decode_len": 256,
        "sd": [(1, 0.6), (3, 0.8), (5, 0.9)],
    },
    {
        "gpu": "H200-SXM-141GB",
        "target": "llama-3.2-1b",
        "drafter": "llama-68m",
        "prefill_len": 256,
        "decode_len": 1024,
        "sd": [(2, 0.7), (4, 0.8)],
    },
    {
        "gpu": "H100-SXM-80GB",
        "target": "olmoe-1b-7b",
        "drafter": "llama-68m",
        "prefill_len": 256,
        "decode_len": 256,
        "sd": [(3, 0.8)],
    },
]


@pytest.fixture(scope="module")
def sweep():
    data, _ = simulate_from_model(CONFIGS, seed=11)
    return data


@pytest.fixture
def mocked(monkeypatch):
    stats = {"diverging": lambda size: np.zeros(size, dtype=bool)}
    monkeypatch.setattr(pm, "sample", partial(mock_sample, sample_stats=stats))


@pytest.fixture
def fitted(sweep, mocked):
    model = LatencyModel(sampler_config={"draws": 20, "chains": 2})
    with pytest.warns(ConvergenceWarning):  # prior draws are not a converged posterior
        model.fit(sweep, random_seed=3)
    return model


def test_structure_names_dims_and_finite_gradient(sweep):
    model = LatencyModel(model_config={"centred": True}).build_model(sweep)
    free = {v.name for v in model.free_RVs}
    # the intercepts are sampled at the design's mean covariates; "intercept" (at the
    # reference sizes) is their deterministic shift
    assert model.named_vars_to_dims["intercept"] == ("coef",)
    assert {
        "intercept_centre",
        "size_slope",
        "length_slope",
        "gpu_sd",
        "level_gpu",  # centred: the GPU effects themselves
        "system_sd",
        "draft_sd",
        "series_sd",
        "level_system",
        "level_draft",
        "level_series",
        "load_noise",
        "moe_level",  # centred: moe_excess is its deterministic offset
        "sigma",
        "nu",
    } <= free
    assert model.named_vars_to_dims["moe_excess"] == ("coef_pv",)
    assert model["gpu_sd"].ndim == 0  # one GPU spread for all coefficients
    assert model.named_vars_to_dims["gpu_effect"] == ("gpu", "coef")
    assert list(model.coords["coef"]) == ["c1p", "c2p", "c1v", "c2v", "c1s", "c2s", "c1d", "c2d"]
    assert len(model.coords["system"]) == 3 and len(model.coords["draft_system"]) == 3
    assert set(model.coords["gpu"]) == {"H100-SXM-80GB", "H200-SXM-141GB"}
    assert model.named_vars_to_dims["shift_system"] == ("system", "level")
    # one series per (draft system, k, α) and one baseline series per system; only the SD
    # series get a shift of their own (a baseline series is its system's)
    assert model.named_vars_to_dims["shift_series"] == ("sd_series",)
    assert len(model.coords["series"]) == 3 + 6 and len(model.coords["sd_series"]) == 6
    assert "gpus_slope" in free
    assert model.named_vars_to_dims["log_latency"] == ("run",)
    point = model.initial_point()
    assert np.isfinite(logp(model, point))
    assert np.all(np.isfinite(model.compile_dlogp()(point)))


def test_load_modes_mixed_or_alone_give_the_same_latency(sweep):
    """The graph computes only the load modes a sweep has: at the same parameters, a run's
    modelled latency is the same whether the sweep mixes open- and closed-loop runs or has
    one mode only (non-centred: the initial point is the population laws in every build)."""
    closed = sweep.assign(
        load_mode="concurrency", concurrency=np.round(sweep["request_rate"] * 0.05) + 1
    )
    mixed = sweep.copy()
    pick = np.arange(len(sweep)) % 2 == 1
    mixed.loc[pick] = closed.loc[pick]

    def latency_at_start(data):
        lm = LatencyModel(model_config={"centred": False})
        m = lm.build_model(data)
        point = m.initial_point()
        assert np.isfinite(logp(m, point))
        return _evaluate(m, ["latency"], point)["latency"][lm.design.points.idx]  # per run

    lat_open, lat_closed, lat_mixed = map(latency_at_start, (sweep, closed, mixed))
    np.testing.assert_allclose(lat_mixed[~pick], lat_open[~pick], rtol=1e-12)
    np.testing.assert_allclose(lat_mixed[pick], lat_closed[pick], rtol=1e-12)
    assert not np.allclose(lat_open, lat_closed)


def test_replicate_runs_share_one_load_point_and_the_same_likelihood(sweep):
    """Runs that repeat a load point (a fleet re-running its benchmarks) share the phases'
    computation: the graph evaluates TTFT, TPOT and E2E per point and gathers them per run.
    Closed loop (the measured batch N / n is the same for replicates), with an MoE target:
    the log density and its gradient equal those of the per-run graph at a random point."""
    from bayes_sd.design import Design
    from bayes_sd.graph import GraphOptions, build_graph

    closed = sweep.assign(
        load_mode="concurrency", concurrency=np.round(sweep["request_rate"] * 0.05) + 1
    )
    again = closed.assign(run_id=closed["run_id"] + "-again",
                          latency_mean_s=closed["latency_mean_s"] * 1.03)  # fmt: skip
    twice = pd.concat([closed, again], ignore_index=True)
    lm = LatencyModel(model_config={"centred": False})
    by_point = lm.build_model(twice)
    points, n = lm.design.points, len(closed)
    # (closed itself repeats some points: several rates round to one concurrency)
    assert len(points.first) == len(Design.from_sweep(closed).points.first) < n
    np.testing.assert_array_equal(points.idx[:n], points.idx[n:])
    options = GraphOptions(lm.centred, lm.residuals, lm.coverage, by_point=False)
    by_run = build_graph(lm.design, lm.priors, options)
    assert len(by_point.coords["point"]) == len(points.first)
    assert len(by_run.coords["point"]) == 2 * n
    rng = np.random.default_rng(1)
    point = {k: v + rng.normal(0, 0.1, np.shape(v)) for k, v in by_point.initial_point().items()}
    np.testing.assert_allclose(logp(by_point, point), logp(by_run, point),
                               rtol=1e-12)  # fmt: skip
    np.testing.assert_allclose(by_point.compile_dlogp()(point), by_run.compile_dlogp()(point),
                               rtol=1e-10, atol=1e-10)  # fmt: skip
    lat = _evaluate(by_point, ["latency"], point)["latency"][points.idx]
    np.testing.assert_array_equal(lat[:n], lat[n:])
    # open loop: replicates' measured batches (λ L / n) differ with their latency; the point
    # takes their mean
    open_twice = pd.concat([sweep, again.assign(load_mode="rate", concurrency=np.nan)],
                           ignore_index=True)  # fmt: skip
    lm.build_model(open_twice)
    d = lm.design
    np.testing.assert_allclose(d.points.batch[d.points.idx[: len(sweep)]],
                               (d.batch[: len(sweep)] + d.batch[len(sweep) :]) / 2)  # fmt: skip


def test_saturated_runs_are_left_out_and_counted(sweep):
    flagged = sweep.copy()
    flagged.loc[:4, "saturated"] = True
    model = LatencyModel()
    model.build_model(flagged)
    assert model.design.n_saturated == 5 and len(model.design.rows) == len(sweep) - 5


def test_latent_acceptance_when_data_carry_none(sweep):
    blind = sweep.copy()
    blind.loc[blind["k"] > 0, "acceptance_length"] = np.nan
    blind["alpha"] = np.nan
    model = LatencyModel().build_model(blind)
    free = {v.name for v in model.free_RVs}
    assert {"accept_logit", "accept_decay"} <= free
    assert "acceptance_obs" not in model.named_vars  # nothing measured: latent
    # the latent runs take the positional law's E(k) of their group
    point = {"accept_logit": 1.2, "accept_decay_log__": np.log(0.4)}
    (law,) = model.replace_rvs_by_values([model["acceptance_length"]])
    law = model.compile_fn(law, inputs=model.value_vars, on_unused_input="ignore")
    ip = model.initial_point()
    ip.update(point)
    if "accept_logit_z" in ip:
        ip["accept_logit_z"] = np.zeros_like(ip["accept_logit_z"])
        ip["accept_decay_z"] = np.zeros_like(ip["accept_decay_z"])
    combos = model.coords["accept_combo"]
    ks = np.array([float(c.rsplit("|k", 1)[1]) for c in combos])
    np.testing.assert_allclose(law(ip), acceptance.positional_tokens(1.2, 0.4, ks), rtol=1e-9)


def test_measured_acceptance_informs_the_law(sweep):
    """Measured acceptance lengths of runs without an imposed α are observed around the law;
    runs with α keep it (a simulated setting, nothing to learn)."""
    real = sweep.copy()
    real["alpha"] = np.nan
    model = LatencyModel().build_model(real)
    assert "acceptance_obs" in model.named_vars
    observed = model.rvs_to_values[model["acceptance_obs"]].eval()
    assert observed.size == int((real["k"] > 0).sum())
    imposed = LatencyModel().build_model(sweep)
    assert "accept_logit" not in imposed.named_vars


def test_acceptance_groups_parametrised_by_what_pins_them(sweep):
    """A group whose runs counted acceptance at two or more draft lengths (or positions) is
    sampled itself (centred); one measured at a single k, or through latencies alone, keeps a
    non-centred offset; each lands in its own group's place."""
    real = sweep.copy()
    real["alpha"] = np.nan  # acceptance lengths measured at k = 1, 3, 5 / 2, 4 / 3
    lm = LatencyModel()
    model = lm.build_model(real)
    groups = lm.design.acceptance_law.groups
    pinned = [g for g in groups if "olmoe" not in g]
    assert list(model.coords["accept_group_pinned"]) == pinned
    assert list(model.coords["accept_group_latent"]) == [g for g in groups if g not in pinned]
    (theta,) = model.replace_rvs_by_values([model["accept_group_logit"]])
    theta = model.compile_fn(theta, inputs=model.value_vars, on_unused_input="ignore")
    ip = model.initial_point()
    ip.update(accept_logit=1.0, accept_logit_sd_log__=np.log(0.5),
              accept_logit_z=np.array([2.0]), accept_logit_group=np.array([3.0, 4.0]))  # fmt: skip
    want = {pinned[0]: 3.0, pinned[1]: 4.0}  # centred: their own values
    want.update({g: 1.0 + 0.5 * 2.0 for g in groups if g not in pinned})  # θ + sd z
    np.testing.assert_allclose(theta(ip), [want[g] for g in groups])
    # per-position rates at two positions pin a group; one position (k = 1) does not
    law = lm.design.acceptance_law
    for width, expect in ((2, True), (1, False)):
        one = replace(law, measured=np.zeros_like(law.measured), positions=pd.DataFrame(
            {"run": 0, "group": 0, "position": np.arange(width), "rate": 0.5}))  # fmt: skip
        assert graph_side.pinned_groups(one).tolist() == [expect] + [False] * (len(groups) - 1)
    # the i.i.d. law: no δ per group at all
    iid = LatencyModel(model_config={"priors": {"accept_decay": 0.0}}).build_model(real)
    assert not {"accept_decay_group_log", "accept_decay_z", "accept_decay_sd"} & set(iid.named_vars)


def test_per_position_rates_enter_the_law_and_bad_ones_are_refused(sweep):
    real = sweep.copy()
    real["alpha"] = np.nan
    sd = np.flatnonzero((real["k"] > 0).to_numpy())
    one = int(sd[0])
    k = int(real.at[one, "k"])
    rates = acceptance.unconditional_rates(1.0, 0.5, k)
    real["acceptance_per_position"] = None
    real.loc[one, "acceptance_per_position"] = " ".join(f"{r:.4f}" for r in rates)
    model = LatencyModel().build_model(real)
    observed = model.rvs_to_values[model["acceptance_pos_obs"]].eval()
    np.testing.assert_allclose(observed, rates, atol=1e-4)
    # the run's rates replace its length in acceptance_obs (not counted twice)
    length = model.rvs_to_values[model["acceptance_obs"]].eval()
    assert length.size == len(sd) - 1
    for cell, message in (("0.8 0.9" + " 0.1" * (k - 2), "cannot rise"),
                          ("0.8 " * (k + 1), f"for k = {k}"), ("0.8 x", "numbers"),
                          ("1.2" + " 0.1" * (k - 1), "probabilities")):  # fmt: skip
        bad = real.copy()
        bad.loc[one, "acceptance_per_position"] = cell
        with pytest.raises(DataError, match=message) as err:
            LatencyModel().build_model(bad)
        assert err.value.problems[0].field == "acceptance_per_position"


def test_config_validation():
    model = LatencyModel(
        model_config={"priors": {"sigma": Prior("HalfNormal", sigma=0.05, dims="source")}}
    )
    assert model.priors["sigma"].parameters["sigma"] == 0.05
    with pytest.raises(ValueError, match=r"unknown prior name.*bogus"):
        LatencyModel(model_config={"priors": {"bogus": Prior("Normal")}})
    with pytest.raises(ValueError, match="unknown model_config"):
        LatencyModel(model_config={"prior": {}})
    with pytest.raises(ValueError, match="nuts_sampler"):
        LatencyModel(sampler_config={"nuts_sampler": "emcee"})
    with pytest.raises(ValueError, match="unknown sampler_config"):
        LatencyModel(sampler_config={"drawz": 10})
    with pytest.raises(ValueError, match="unknown residual"):
        LatencyModel(model_config={"residuals": ["c9x"]})
    fewer = LatencyModel(model_config={"residuals": ["system"]})
    assert fewer.config_hash != LatencyModel().config_hash


@pytest.mark.parametrize(
    ("backend", "config", "centred", "expected"),
    [
        ("nutpie", {}, "auto", {"nuts": {"adaptation": "diag"}}),  # small sweep: non-centred
        ("nutpie", {}, True, {"nuts": {"adaptation": "draw_diag"}}),
        ("nutpie", {"adaptation": "draw_diag"}, False, {"nuts": {"adaptation": "draw_diag"}}),
        ("pymc", {}, "auto", {"init": "adapt_diag"}),
        ("numpyro", {}, "auto", {"nuts": {"jitter": False}}),
    ],
)
def test_each_backend_gets_its_measured_start_and_adaptation(
    sweep, monkeypatch, backend, config, centred, expected
):
    """nutpie adapts its mass matrix from draw variances for centred residuals and from draw
    and gradient variances for non-centred ones unless told otherwise; PyMC's and numpyro's
    NUTS start unjittered (docs/model.md, Benchmark: the other settings mixed 3x worse per
    second, did not converge, or left every chain divergent)."""
    seen = {}

    def sample(**kwargs):
        seen.update(kwargs)
        stats = {"diverging": lambda size: np.zeros(size, dtype=bool)}
        return mock_sample(sample_stats=stats, **kwargs)

    monkeypatch.setattr(pm, "sample", sample)
    model = LatencyModel(
        model_config={"centred": centred},
        sampler_config={"draws": 5, "nuts_sampler": backend, **config},
    )
    with pytest.warns(ConvergenceWarning):
        model.fit(sweep, random_seed=1)
    assert seen["nuts_sampler"] == backend
    assert {k: seen[k] for k in expected} == expected
    # target_accept "auto": 0.95 for non-centred residuals (few-member spreads), 0.9 centred
    assert seen["target_accept"] == (0.9 if model.centred else 0.95)
    assert model.diagnostics["target_accept"] == seen["target_accept"]
    with pytest.raises(ValueError, match=r"adaptation must be one of auto, draw_diag, diag"):
        LatencyModel(sampler_config={"adaptation": "full"})


def test_residual_groups_can_be_switched_off(sweep):
    config = {"residuals": ["system"], "centred": True}
    model = LatencyModel(model_config=config).build_model(sweep)
    free = {v.name for v in model.free_RVs}
    assert "level_system" in free and not {"level_draft", "level_series", "draft_sd"} & free


def test_non_centred_shifts_same_graph_values(sweep, mocked, tmp_path):
    """centred=False samples standard-normal z and scales them: the shifts (and hence every
    prediction) are the same function of the parameters; the option survives save/load."""
    model = LatencyModel(model_config={"centred": False}, sampler_config={"draws": 10})
    m = model.build_model(sweep)
    free = {v.name for v in m.free_RVs}
    assert {"shift_system_z", "shift_draft_z", "shift_series_z"} <= free
    assert not {"level_system", "level_draft", "level_series"} & free
    assert m["shift_system"].eval().shape == (len(model.design.systems), 2)
    assert model.model_config["centred"] is False
    assert "centred" not in LatencyModel().model_config  # default: hash of older files kept
    with pytest.warns(ConvergenceWarning):
        model.fit(sweep, random_seed=1)
    loaded = LatencyModel.load(model.save(tmp_path / "nc.nc"))
    assert loaded.centred is False
    rows = model.design.rows.head(5)
    np.testing.assert_array_equal(
        model.predict(rows, random_seed=1).draws["latency"].values,
        loaded.predict(rows, random_seed=1).draws["latency"].values,
    )


def _evaluate(model, names, point):
    """Model variables at a point of its value variables (in the unconstrained space)."""
    import pytensor

    outs = model.replace_rvs_by_values([model[n] for n in names])
    f = pytensor.function(model.value_vars, outs, on_unused_input="ignore")
    return dict(zip(names, f(*[point[v.name] for v in model.value_vars]), strict=True))


def test_hierarchical_centring_is_a_reparametrisation(sweep):
    """The default model samples each configuration's log level (centred on its law) and the
    non-centred one standard-normal z: at corresponding points (level − law = sd · z) every
    coefficient and modelled latency is the same, so both are one model."""
    centred = LatencyModel(model_config={"centred": True}).build_model(sweep)
    non = LatencyModel(model_config={"centred": False}).build_model(sweep)
    assert {"level_system", "level_draft", "level_series", "level_gpu"} <= {
        v.name for v in centred.free_RVs
    }
    assert "gpu_z" in {v.name for v in non.free_RVs}
    assert centred.named_vars_to_dims["shift_draft"] == ("draft_system",)  # level 1 only
    rng = np.random.default_rng(0)
    point = {k: v + rng.normal(0, 0.2, np.shape(v)) for k, v in centred.initial_point().items()}
    outs = ["shift_system", "shift_draft", "shift_series", "system_sd", "draft_sd", "series_sd"]
    outs += ["gpu_sd"]
    values = _evaluate(centred, outs, point)
    # the sweep has an MoE target: moe_excess is centred on its log increment in both forms
    assert "moe_level" in point and "moe_level" in {v.name for v in non.free_RVs}
    mapped = {k: v for k, v in point.items() if not k.startswith("level_")}
    for group in ("system", "draft", "series"):
        mapped[f"shift_{group}_z"] = values[f"shift_{group}"] / values[f"{group}_sd"]
    if "series_trend" in centred.named_vars:  # the series shifts around their trend in k
        trend = _evaluate(centred, ["series_trend"], point)["series_trend"]
        mapped["shift_series_z"] = (values["shift_series"] - trend) / values["series_sd"]
    # the zero-sum transform is linear: z's transformed value is the effects' over the spread
    mapped["gpu_z_zerosum__"] = point["level_gpu_zerosum__"] / values["gpu_sd"]
    names = ["c_system", "c_draft", "gpu_effect", "latency"]
    a, b = _evaluate(centred, names, point), _evaluate(non, names, mapped)
    for name in names:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-10)
    assert np.any(values["shift_system"] != 0) and np.any(values["shift_series"] != 0)


def test_auto_centring_chooses_by_design(sweep):
    """ "auto" (the default) centres the residuals of sweeps with many configurations, each
    measured at several rates, and not those of small or sparse ones; the choice is not saved
    in the configuration (it follows from the training data, which the file carries)."""
    small = LatencyModel()
    small.build_model(sweep)  # 3 systems
    assert small.centring == "auto" and small.centred is False
    assert "centred" not in small.model_config
    many = pd.concat(
        [sweep.assign(dataset=f"d{i}", run_id=sweep["run_id"] + f"-{i}") for i in range(8)],
        ignore_index=True,
    )
    big = LatencyModel()
    m = big.build_model(many)
    assert len(big.design.systems) >= 20 and big.centred is True
    assert "level_system" in {v.name for v in m.free_RVs}
    two = big.design.rows.groupby("series").head(2)["run_id"]  # 2 rates per series: sparse
    sparse = LatencyModel()
    sparse.build_model(many[many["run_id"].isin(two)])
    assert len(sparse.design.systems) == len(big.design.systems) and sparse.centred is False
    assert big.centred_series is False and sparse.centred_series is False  # all or sparse
    # few systems, many series measured at several rates each (notebook 01: 4 systems, 49
    # series, 7.8 runs per series): the series shifts centred, the systems' not
    deep, _ = simulate_from_model(
        [{**CONFIGS[0], "sd": [(k, a) for k in (1, 2, 3, 5, 7) for a in (0.6, 0.7, 0.8, 0.9)]}],
        seed=2,
    )
    series = LatencyModel()
    free = {v.name for v in series.build_model(deep).free_RVs}
    assert len(series.design.series) >= 20 and series.design.runs_per_series >= 5
    assert series.centred is False and series.centred_series is True
    assert "level_series" in free and "shift_system_z" in free and "shift_series_z" not in free
    fixed = LatencyModel(model_config={"centred": False})  # asked for: not overridden
    fixed.build_model(deep)
    assert fixed.centred_series is False
    with pytest.raises(ValueError, match="centred must be"):
        LatencyModel(model_config={"centred": "yes"})


def test_fit_returns_datatree_and_diagnostics(fitted):
    assert "posterior" in fitted.idata.children
    diag = fitted.diagnostics
    assert {"max_rhat", "min_ess_bulk", "min_ess_tail", "divergences"} <= set(diag)
    assert diag["runs_fitted"] == len(fitted.design.rows)


@pytest.fixture
def fitted_far_kink(sweep, mocked):
    """As ``fitted`` with the roofline's kink far beyond every load: the graph takes the
    load-dependent terms at the measured batch, predict at its own fixed point, and the two are
    one law where those terms are flat (elsewhere they agree when the fit is good)."""
    priors = {"kink_tokens": Prior("LogNormal", mu=float(np.log(1e8)), sigma=0.1)}
    model = LatencyModel(model_config={"priors": priors}, sampler_config={"draws": 20, "chains": 2})
    with pytest.warns(ConvergenceWarning):
        model.fit(sweep, random_seed=3)
    return model


def test_predict_agrees_with_the_model_graph(fitted_far_kink, sweep):
    fitted = fitted_far_kink
    rows = fitted.design.rows
    dense = rows[rows["target_experts"] == 1].reset_index(drop=True)
    pred = fitted.predict(dense, max_draws=1000)
    assert pred.draws["latency"].dims == ("chain", "draw", "row")
    graph = fitted.idata["posterior"].dataset["latency"]
    graph = graph.sel(point=dense["run_id"].astype(str).to_numpy()).values  # every run a point
    mine = pred.draws["latency"].values
    utilisation = dense["request_rate"].to_numpy() / pred.draws["saturation_rate"].values
    stable = utilisation < 0.8
    assert stable.mean() > 0.5
    # the graph uses a smooth floor on 1 − λC2; away from saturation the two agree
    np.testing.assert_allclose(mine[stable], graph[stable], rtol=1e-3)
    summary = pred.summary
    assert {
        "latency_median",
        "latency_lo",
        "latency_hi",
        "speedup_median",
        "p_speedup_gt_1",
        "saturation_rate_median",
    } <= set(summary.columns)
    base = summary[summary["k"] == 0]
    assert np.allclose(base["speedup_median"], 1.0)


@pytest.mark.parametrize(
    ("rate", "most"), [(0.004, 1), (0.01, 1), (0.05, 1), (2.0, 3), (5.0, 3), (10.0, 0)]
)
def test_moe_solver_lands_on_the_least_root_in_few_steps(rate, most, monkeypatch):
    """Below one request in flight C1 and C2 are constant and the lower bound is the root: the
    solver must stop there (it used to bisect to it in 43 evaluations). Under load (5 and 22
    requests in flight) Newton starts from the bound with the MoE coverage at its batch (5 and
    4 step evaluations from the zero-coverage bound), and past saturation the bound proves
    there is no root before any step."""
    from bayes_sd import _kernels, latency

    if not _kernels.AVAILABLE:
        pytest.skip("numba not installed")
    # kernel order (last axis): c1p c2p c1v c2v c1s c2s c1d c2d; MoE increments s (drafter: 0)
    u = np.array([0.02, 0.001, 0.01, 0.0005, 0.002, 0.0001, 0.001, 0.00005])
    s = np.array([0.01, 0.0005, 0.005, 0.0002, 0.001, 0.00005, 0.0, 0.0])
    k, e, dl, plen, m, experts = 3.0, 2.5, 256.0, 512.0, 8.0, 64.0
    evaluations = []
    real = _kernels._step
    monkeypatch.setattr(_kernels, "_step", lambda *a: evaluations.append(1) or real(*a))
    tm = np.empty(11)  # the step terms, roofline off (kink at infinity)
    _kernels._terms.py_func(u[None, None, :], s[None, None, :], 1.0, 0, 0, k, 1.0, np.inf, 0.0, tm)
    log_q = np.log1p(-m / experts)
    phi_p = 1.0 - np.exp(plen * log_q)
    a1, a2 = tm[0] + phi_p * tm[5], tm[1] + phi_p * tm[6]
    lat = _kernels._solve_open.py_func(tm, k, e, dl, rate, log_q, True, a1, a2)
    names = ("c1p", "c2p", "c1v", "c2v", "c1s", "c2s", "c1d", "c2d")
    coefs = lambda x: latency.Coefficients(**dict(zip(names, x, strict=True)))  # noqa: E731
    # the phases' E2E is the paper's law with the D − 1 cycles after the first token
    ref = latency.moe_open_loop_latency(coefs(u), coefs(s), k, e, dl - 1, rate, experts, m, plen)
    if rate < 1.0:
        assert rate * lat < 1.0
    np.testing.assert_allclose(lat, ref, rtol=1e-9)
    assert np.isinf(lat) == (rate == 10.0)
    assert len(evaluations) <= most


def test_fused_kernel_matches_the_numpy_algebra(fitted, monkeypatch, float64_draws):
    """predict's numba kernel gives the NumPy path's draws, dense and MoE targets (the MoE
    open-loop fixed point: safeguarded Newton there, bisection here): open and closed loop, stable
    and saturated, seen and unseen configurations and engines, with and without noise; the
    percentile pass (``_percentiles.tails``) and the throughput pass likewise."""
    from bayes_sd import _kernels
    from bayes_sd.predict import TAIL_OUTPUTS

    if not _kernels.AVAILABLE:
        pytest.skip("numba is not installed")
    fitted.priors = {**fitted.priors, "burst_share": 0.7}  # the opening wave on (off by default)
    rows = fitted.design.rows
    moe = rows["target_experts"] > 1
    dense = pd.concat([rows[~moe].head(20), rows[moe].head(10)], ignore_index=True)
    assert (dense["target_experts"] > 1).sum() == 10
    closed = dense.copy()
    closed["request_rate"], closed["concurrency"] = np.nan, 8.0
    closed["n_requests"] = np.where(np.arange(len(closed)) % 2, 48, np.nan)  # opening waves
    hot = dense.copy()
    hot["request_rate"] = hot["request_rate"] * 40  # far past saturation: inf latency draws
    unseen = dense.copy()
    unseen["gpu"], unseen["prefill_len"], unseen["engine"] = "A100-SXM-80GB", 333, "sglang"
    table = pd.concat([dense, closed, hot, unseen], ignore_index=True)
    for noise in (False, True):
        fused = fitted.predict(table, random_seed=4, noise=noise).draws
        monkeypatch.setattr(_kernels, "AVAILABLE", False)
        numpy = fitted.predict(table, random_seed=4, noise=noise).draws
        monkeypatch.setattr(_kernels, "AVAILABLE", True)
        for var in ("latency", "ttft", "tpot", "speedup", "saturation_rate", "throughput",
                    "interactivity", "acceptance_length"):  # fmt: skip
            # the kernel's Newton stops within ~1e-8 of the root (_kernels.STEP_TOL), the
            # NumPy path's bisection at 1e-13
            np.testing.assert_allclose(fused[var].values, numpy[var].values, rtol=3e-8)
        for var in TAIL_OUTPUTS:  # exp(exp(·)) of a saturated draw's load amplifies rounding
            np.testing.assert_allclose(fused[var].values, numpy[var].values, rtol=1e-6)
    lat = fused["latency"].values
    assert np.isinf(lat).any()  # the saturated rows were exercised
    assert np.isfinite(lat[..., (table["target_experts"] > 1).to_numpy()]).sum() > 100


def test_draws_are_kept_in_float32_as_the_float64_arithmetic_rounded(fitted, monkeypatch):
    """predict computes in float64 and keeps its draws in float32 (half the memory of 10^5 rows
    x 100 draws): the kernel's planes are the float64 run's rounded to float32, bit for bit, the
    passes after it (percentiles, throughput) and the summary agree to float32's precision."""
    from bayes_sd import _kernels
    from bayes_sd.predict import TAIL_OUTPUTS

    table = fitted.design.rows.head(40)
    small = [fitted.predict(table, random_seed=3, noise=noise) for noise in (False, True)]
    monkeypatch.setattr(_kernels, "DRAW_DTYPE", np.float64)
    wide = [fitted.predict(table, random_seed=3, noise=noise) for noise in (False, True)]
    for f32, f64 in zip(small, wide, strict=True):
        assert all(v.dtype == np.float32 for v in f32.draws.data_vars.values())
        assert all(v.dtype == np.float64 for v in f64.draws.data_vars.values())
        for var in f32.draws.data_vars:  # a prior-drawn tail past 3.4e38 s is +inf in float32
            with np.errstate(over="ignore"):
                rounded = f64.draws[var].values.astype(np.float32)
            tol = 1e-5 if var in TAIL_OUTPUTS else 1e-6  # exp(exp(·)) amplifies the rounding
            np.testing.assert_allclose(f32.draws[var].values, rounded, rtol=tol, err_msg=var)
        numbers = f32.summary.select_dtypes("number").columns
        with np.errstate(over="ignore"):
            rounded = f64.summary[numbers].to_numpy(dtype=float).astype(np.float32)
        np.testing.assert_allclose(f32.summary[numbers].to_numpy(dtype=float), rounded, rtol=1e-5)
    for var in ("latency", "ttft", "tpot", "speedup", "saturation_rate", "acceptance_length"):
        np.testing.assert_array_equal(small[0].draws[var].values,
                                      wide[0].draws[var].values.astype(np.float32))  # fmt: skip


def test_percentile_pass_is_the_tail_law_of_laws_block_by_block(float64_draws):
    """``_percentiles.tails`` evaluates :mod:`bayes_sd.laws` (``predicted_load``,
    ``tail_log_ratios``, ``wave_log_ratios``) a block of rows at a time on every core: blocks of
    3 rows give the whole-array law's planes, open and closed loop, with and without an opening
    wave, saturated (infinite) means included."""
    from bayes_sd import _percentiles, laws

    rng = np.random.default_rng(7)
    draws, n, labels = 6, 11, 2
    level = rng.normal(-0.5, 0.3, size=(draws, 9, labels))
    slope = rng.normal(0.1, 0.05, size=(draws, 9))
    lab = rng.integers(0, labels, size=n)
    is_open = np.arange(n) % 2 == 0
    rows = {"is_open": is_open, "rate": np.where(is_open, 2.0, np.nan),
            "conc": np.where(is_open, np.nan, 16.0), "engines": np.full(n, 2.0),
            "opening": np.where(~is_open & (np.arange(n) % 3 == 0), 0.1, 0.0)}  # fmt: skip
    means = [rng.uniform(0.1, 2.0, size=(draws, n)) for _ in range(3)]
    means[2][0, 0] = np.inf  # a saturated draw
    shares = rng.uniform(0.0, 0.5, size=(2, n, draws))
    load = laws.predicted_load(is_open, np.nan_to_num(rows["rate"]), means[2],
                               np.nan_to_num(rows["conc"]), rows["engines"])  # fmt: skip

    def law(wave) -> np.ndarray:  # the whole-array law, (9, row, draw)
        out = []
        for m, metric in enumerate(laws.TAIL_METRICS):
            terms = range(3 * m, 3 * m + 3)
            ratios = laws.tail_log_ratios([level[:, t, lab] for t in terms],
                                          [slope[:, t, None] for t in terms], load)  # fmt: skip
            if wave is not None and metric in laws.WAVE_METRICS:
                share = np.where(rows["opening"] > 0, wave[laws.WAVE_METRICS.index(metric)].T, 0)
                ratios = laws.wave_log_ratios(ratios, share, rows["opening"])
            out += [(means[m] * np.exp(r)).T for r in ratios]
        return np.stack(out)

    for wave in (shares, None):
        for block in (3, 10**6):
            got = _percentiles.tails(level, slope, lab, rows, means, wave, block_rows=block)
            np.testing.assert_allclose(got, law(wave), rtol=1e-12)
    assert not np.allclose(law(shares), law(None))  # the wave was exercised
    assert np.isinf(got[6:, 0, 0]).all() and np.isfinite(got[:6, 0, 0]).all()


def test_a_configuration_the_model_was_not_fitted_on_is_named(fitted):
    """``unfitted_note`` (plan's note): a fitted system and draft system give none; one field
    off (a layout left out, here one added) names the field, both values and the fix; an
    unseen drafter on a fitted system names the drafters fitted there."""
    from bayes_sd.errors import interface
    from bayes_sd.predict import unfitted_note

    design = fitted.design
    run = design.rows[design.rows["k"] > 0].iloc[0]
    keys = ["source", "dataset", "gpu", "num_gpus", "target", "prefill_len", "decode_len",
            "engine", "precision", "drafter", "method", "k"]  # fmt: skip
    cfg = {key: run[key] for key in keys}
    assert unfitted_note(design, cfg) is None
    assert unfitted_note(design, {**cfg, "k": 0.0, "num_gpus": float(run["num_gpus"])}) is None
    note = unfitted_note(design, {**cfg, "layout": "tp2 pp2"})
    assert "no fitted system matches" in note and "layout ('tp2 pp2' here, '' fitted)" in note
    assert note.endswith("give layout=''")
    with interface("cli"):
        assert unfitted_note(design, {**cfg, "layout": "tp2 pp2"}).endswith("--config layout=''")
    note = unfitted_note(design, {**cfg, "drafter": "never-seen-drafter"})
    assert "has not seen drafter 'never-seen-drafter'" in note and run["drafter"] in note


def test_moe_rows_share_their_baseline_solves(fitted, monkeypatch, float64_draws):
    """A planning grid of draft lengths at each rate solves each MoE baseline once per draw
    (not once per SD row): the same draws as the NumPy path, which solves every row's own;
    rows of the same target with other sizes, or at another rate, get their own baseline, and
    a row whose baseline no other row shares solves it in its own pass."""
    from bayes_sd import _kernels
    from bayes_sd.predict import _moe_baselines, prediction_rows

    if not _kernels.AVAILABLE:
        pytest.skip("numba is not installed")
    rows = fitted.design.rows
    sd_row = rows[(rows["target_experts"] > 1) & (rows["k"] > 0)].iloc[0]
    grid = pd.DataFrame(
        [
            {**sd_row.to_dict(), "k": float(k), "request_rate": rate}
            for rate in (0.05, 0.2, 0.5)
            for k in (0, 1, 2, 4)
        ]
    )
    grid.loc[grid["k"] == 0, ["drafter", "acceptance_length", "alpha"]] = [None, np.nan, np.nan]
    grid = grid.drop(columns=["latency_mean_s"])
    other = grid.copy()
    other["target_active_params"] = other["target_active_params"] * 1.5  # other sizes
    lone = grid.iloc[[2]].assign(request_rate=0.33)  # a baseline no other row shares
    table = pd.concat([grid, other, lone], ignore_index=True)
    base_of = _moe_baselines(prediction_rows(fitted.design, table), np.ones(len(table), dtype=bool))
    assert len(np.unique(base_of)) == 7  # 3 rates x 2 sizes + 1, not one per row
    assert len(np.unique(base_of[:12])) == 3 and not set(base_of[:12]) & set(base_of[12:])
    fused = fitted.predict(table, random_seed=5).draws
    monkeypatch.setattr(_kernels, "AVAILABLE", False)
    numpy = fitted.predict(table, random_seed=5).draws
    for var in ("latency", "speedup", "saturation_rate"):
        np.testing.assert_allclose(fused[var].values, numpy[var].values, rtol=3e-8)
    speedup = fused["speedup"].values
    assert np.isfinite(speedup).sum() > 100
    base = table["k"].to_numpy() == 0
    np.testing.assert_allclose(speedup[..., base][np.isfinite(speedup[..., base])], 1.0)


def test_noise_adds_measurement_scatter_to_the_mean(fitted):
    rows = fitted.design.rows.head(20)
    mean = fitted.predict(rows, random_seed=3).draws["latency"].values
    run = fitted.predict(rows, random_seed=3, noise=True).draws["latency"].values
    ok = np.isfinite(mean)  # prior draws saturate many rows; those stay +inf
    assert ok.sum() > 100 and np.all(np.isinf(run[~ok]))
    log_ratio = np.log(run[ok] / mean[ok])  # same seed: the ratio is the noise alone
    assert log_ratio.std() > 0.01 and abs(np.median(log_ratio)) < 0.5 * log_ratio.std()


def test_unseen_gpu_and_size_draw_new_effects(fitted):
    seen = {
        "gpu": "H100-SXM-80GB",
        "target": "llama-3.1-8b",
        "drafter": "eagle3-head-8b",
        "k": 3,
        "alpha": 0.8,
        "prefill_len": 1024,
        "decode_len": 256,
        "request_rate": 0.25,  # light load: few prior draws saturate
    }
    rows = pd.DataFrame(
        [seen, {**seen, "gpu": "B200"}, {**seen, "target": "qwen2.5-14b", "drafter": "llama-68m"}]
    )
    pred = fitted.predict(rows, random_seed=1)
    width = np.log(pred.summary["latency_hi"] / pred.summary["latency_lo"])
    assert np.all(np.isfinite(width))
    lat = pred.draws["latency"].values.reshape(-1, 3)
    # an unseen GPU gets fresh GPU effects: the draws differ from the seen GPU's, at random
    ratio = np.log(lat[:, 1] / lat[:, 0])
    assert ratio.std() > 0.05 and abs(np.median(ratio)) < 0.5
    # (that intervals are *wider* for unseen GPUs and sizes needs a real posterior; mocked
    # prior draws leave even seen systems unconstrained)


def test_prefill_coefficients_scale_with_the_prefill_workers_gpus(fitted):
    """Disaggregated serving: a prompt is prefilled on one prefill worker, so the prefill
    coefficients take its GPU count (``prefill_gpus``) in the GPU-count law; the others keep
    the deployment's."""
    from bayes_sd.coefs import COEFS, SLOPE_COEFS
    from bayes_sd.design import log_gpus

    table = pd.DataFrame({"num_gpus": [8.0, 40.0], "prefill_gpus": [np.nan, 4.0]})
    lg = log_gpus(table)
    assert lg.shape == (2, len(COEFS))
    np.testing.assert_allclose(lg[0], np.log(8.0))
    prefill = [i for i, c in enumerate(COEFS) if c in ("c1p", "c2p")]
    np.testing.assert_allclose(lg[1, prefill], np.log(4.0))
    np.testing.assert_allclose(np.delete(lg[1], prefill), np.log(40.0))
    # at a vanishing load TTFT is the prefill's c1p: halving the prefill worker's GPUs scales
    # it by 2^-slope, the draw's own GPU elasticity of c1p; TPOT does not move
    rows = fitted.design.rows
    cfg = rows[rows["k"] == 0].iloc[[0]].assign(request_rate=1e-6)
    gpus = float(cfg["num_gpus"].iloc[0]) * 2
    both = pd.concat([cfg.assign(num_gpus=gpus, prefill_gpus=p) for p in (gpus, gpus / 2)],
                     ignore_index=True)  # fmt: skip
    pred = fitted.predict(both, random_seed=1, tails=False).draws
    ttft, tpot = (pred[m].values.reshape(-1, 2) for m in ("ttft", "tpot"))
    slope = fitted.idata["posterior"]["gpus_slope"].values.reshape(len(ttft), -1)
    want = 2.0 ** -slope[:, SLOPE_COEFS.index("c1p")]
    np.testing.assert_allclose(ttft[:, 1] / ttft[:, 0], want, rtol=1e-4)
    np.testing.assert_allclose(tpot[:, 1], tpot[:, 0], rtol=1e-6)


def test_unseen_baseline_row_has_speedup_one(fitted):
    """A k = 0 row of an unseen configuration is its own baseline: one draw of its series
    shift serves both (drawn twice, its speedup against itself was not 1)."""
    rows = fitted.design.rows
    base = rows[rows["k"] == 0].head(3).assign(gpu="B200", request_rate=0.05)
    pred = fitted.predict(base, random_seed=5).draws
    speedup = pred["speedup"].values
    assert np.isfinite(speedup).all()
    np.testing.assert_array_equal(speedup, 1.0)


@pytest.mark.parametrize("centred", [True, False])
def test_gpu_spread_per_coefficient_on_request(sweep, mocked, centred):
    """A gpu_sd prior with dims "coef" gives each coefficient its own GPU spread (the default
    is one for all): the model builds with a finite gradient in both forms, and an unseen
    GPU's effects are drawn with each coefficient's spread."""
    priors = {"gpu_sd": Prior("HalfNormal", sigma=0.3, dims="coef")}
    model = LatencyModel(
        model_config={"priors": priors, "centred": centred}, sampler_config={"draws": 20}
    )
    m = model.build_model(sweep)
    assert m.named_vars_to_dims["gpu_sd"] == ("coef",)
    point = m.initial_point()
    assert np.all(np.isfinite(m.compile_dlogp()(point)))
    with pytest.warns(ConvergenceWarning):
        model.fit(sweep, random_seed=2)
    rows = sweep.head(1).assign(gpu="B200", request_rate=0.05)
    both = pd.concat([sweep.head(1).assign(request_rate=0.05), rows])
    lat = model.predict(both, random_seed=1).draws["latency"].values.reshape(-1, 2)
    ratio = np.log(lat[:, 1] / lat[:, 0])  # the unseen GPU's fresh effects, draw by draw
    assert np.all(np.isfinite(ratio)) and ratio.std() > 0.01


def test_predict_input_errors(fitted):
    with pytest.raises(DataError, match="need column"):
        fitted.predict(pd.DataFrame([{"gpu": "H100-SXM-80GB"}]))
    row = {
        "gpu": "H100-SXM-80GB",
        "target": "llama-3.1-8b",
        "k": 0,
        "prefill_len": 256,
        "decode_len": 256,
    }
    with pytest.raises(DataError, match="exactly one of request_rate or concurrency"):
        fitted.predict(pd.DataFrame([row]))
    with pytest.raises(DataError, match="acceptance_length or alpha"):
        fitted.predict(pd.DataFrame([{**row, "k": 3, "drafter": "llama-68m", "request_rate": 1}]))


def test_save_load_round_trip(fitted, tmp_path):
    path = fitted.save(tmp_path / "model.nc")
    loaded = LatencyModel.load(path)
    rows = fitted.design.rows.head(10)
    a = fitted.predict(rows, random_seed=5).draws
    b = loaded.predict(rows, random_seed=5).draws
    np.testing.assert_array_equal(a["latency"].values, b["latency"].values)
    assert loaded.config_hash == fitted.config_hash
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temporary file


def test_load_rejects_other_files(fitted, tmp_path):
    import xarray as xr

    xr.Dataset({"x": ("a", [1.0])}).to_netcdf(tmp_path / "other.nc", engine="h5netcdf")
    with pytest.raises(DataError, match="not a bayes_sd model file"):
        LatencyModel.load(tmp_path / "other.nc")
    path = fitted.save(tmp_path / "model.nc")
    tree = xr.load_datatree(path, engine="h5netcdf")
    tree.attrs["bayes_sd_structure"] = "0" * 16  # a valid file of another version
    tree.to_netcdf(tmp_path / "tampered.nc", engine="h5netcdf")
    with pytest.raises(DataError, match="different structure"):
        LatencyModel.load(tmp_path / "tampered.nc")
    # damaged bytes (this pattern once made libhdf5 loop forever): refused before parsing
    raw = bytearray(path.read_bytes())
    # the first 100-byte window from the middle on that is not zero already (zeroing a run of
    # zeros, e.g. padding, would leave the file intact)
    at = next(i for i in range(len(raw) // 2, len(raw) - 100, 100) if any(raw[i : i + 100]))
    raw[at : at + 100] = bytes(100)
    (tmp_path / "damaged.nc").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="do not match their checksum"):
        LatencyModel.load(tmp_path / "damaged.nc")
    with pytest.raises(DataError, match="cannot read"):
        (tmp_path / "junk.nc").write_text("junk")
        LatencyModel.load(tmp_path / "junk.nc")


@pytest.fixture(scope="module")
def steps():
    from bayes_sd import load_example

    return load_example("stepcost")


def test_joint_step_likelihood_structure(sweep, steps):
    model = LatencyModel().build_model(sweep, steps)
    assert "log_step_time" in {v.name for v in model.observed_RVs}
    assert "step_overhead" in {v.name for v in model.free_RVs}
    n = len(model.coords["step"])
    # dense targets of the sweep (llama-3.1-8b, llama-3.2-3b) on its two GPUs, q = 1 decode
    # passes and one-sequence prefills only (MoE and drafter timings are not used)
    assert 50 < n < len(steps)
    point = model.initial_point()
    assert np.isfinite(logp(model, point))
    assert np.all(np.isfinite(model.compile_dlogp()(point)))


def test_step_table_errors_name_the_problem(sweep, steps):
    with pytest.raises(DataError, match="lacks column"):
        LatencyModel().build_model(sweep, steps.drop(columns=["time_ms"]))
    other = steps.assign(gpu="A100-SXM-80GB")
    with pytest.raises(DataError, match="no timings of the sweep's dense targets"):
        LatencyModel().build_model(sweep, other)


def test_save_load_with_steps(sweep, steps, mocked, tmp_path):
    model = LatencyModel(sampler_config={"draws": 10, "chains": 1})
    with pytest.warns(ConvergenceWarning):
        model.fit(sweep, steps=steps.head(3000), random_seed=1)
    loaded = LatencyModel.load(model.save(tmp_path / "m.nc"))
    assert len(loaded.model.coords["step"]) == len(model.model.coords["step"])


def test_baseline_fits_closed_form_data(sweep):
    # without the verification premium the dense closed form is the baseline's own model
    pop = with_overrides(
        DEFAULT_POPULATION, intercept={**DEFAULT_POPULATION.intercept, "c1s": -50.0, "c2s": -50.0}
    )
    plain, _ = simulate_from_model(CONFIGS, population=pop, seed=11)
    dense = (plain["target_experts"] == 1).to_numpy()
    fit = fit_baseline(plain)
    assert len(fit.coefficients) == 3
    err = np.abs(fit.predict(plain) / plain["latency_mean_s"].to_numpy() - 1)
    assert np.median(err[dense]) < 0.05
    # with the premium (the default population) its six coefficients misfit SD and k = 0 runs
    premium_err = np.abs(fit_baseline(sweep).predict(sweep) / sweep["latency_mean_s"] - 1)
    assert np.median(premium_err[dense]) > np.median(err[dense])
    unseen = sweep.head(2).assign(
        target="qwen2.5-14b", target_params=14.8e9, target_active_params=14.8e9
    )
    assert np.isnan(fit.predict(unseen)).all()


def test_report_draws_the_moe_coverage_of_moe_targets(fitted, tmp_path):
    from bayes_sd.figures import coverage_figure

    fig = coverage_figure(fitted)  # the sweep has an OLMoE target
    assert fig is not None
    lines = fig.axes[0].get_lines()
    assert any(line.get_label() == "olmoe-1b-7b" for line in lines)
    ys = lines[0].get_ydata()
    assert ys.min() > 0 and ys.max() <= 1 and np.all(np.diff(ys) >= 0)  # coverage grows


def test_report_titles_name_systems_as_people_do(fitted):
    from bayes_sd.figures import system_title

    systems = fitted.design.systems
    titles = [system_title(fitted, s) for s in systems]
    assert not any("|" in t for t in titles)  # not the pipe-joined keys
    assert any(t.startswith("llama-3.1-8b on 1 × H100-SXM-80GB") for t in titles), titles
    draft = next(d for d in fitted.design.draft_systems if "eagle3-head-8b" in d)
    assert system_title(fitted, draft).replace("\n", " ").endswith("drafter eagle3-head-8b")


def test_best_k_figure_plots_the_probability_of_the_choice(fitted):
    from bayes_sd.figures import best_k_figure

    # the mocked posterior is prior draws, a few of which saturate the system at every rate
    # (an infinite mean latency for every k): spread the draws a little around their medians
    post = fitted.idata["posterior"]
    for name in list(post.data_vars):
        draws = post[name]
        middle = draws.median(("chain", "draw"))
        post[name] = (middle + 0.01 * (draws - middle)).transpose(*draws.dims)
    from bayes_sd import planning
    from bayes_sd.decisions import configurations

    asked = []
    real = planning.best_k

    def spy(model, config, **kwargs):
        asked.append((config, kwargs["ks"]))
        return real(model, config, **kwargs)

    planning.best_k = spy
    try:
        fig = best_k_figure(fitted, max_systems=1)
    finally:
        planning.best_k = real
    # the report's configuration: no run's measured acceptance carried to the other k's
    first = next(c for c in configurations(fitted) if len(c["ks"]) > 1)
    assert len(asked) == 1 and asked[0][1] == first["ks"]
    assert pd.Series(asked[0][0]).equals(pd.Series(first["config"]))  # NaN-aware
    assert "acceptance_length" not in asked[0][0]
    ax = fig.axes[0]
    assert ax.get_ylabel() == "P(best)" and ax.get_ylim() == (0.0, 1.05)
    heights = [p.get_height() for p in ax.patches]
    assert heights and all(0.0 <= h <= 1.0 for h in heights)
    assert ax.get_legend().get_texts()[0].get_text() == "no SD"


def test_posterior_predictive_figure_is_not_stretched_by_one_interval():
    from bayes_sd.figures import ppc_figure

    runs = pd.DataFrame({"observed": [1.0, 2.0, 4.0], "predicted": [1.1, 1.9, 4.2],
                         "lo": [0.9, 1.7, 3.8], "hi": [1.2, 2.2, 400.0]})  # fmt: skip
    fig = ppc_figure(runs)
    assert fig.axes[0].get_xlim()[1] <= 4.2 * 2 + 1e-9
    assert fig.axes[0].get_ylim()[0] >= 1.0 / 2 - 1e-9


@pytest.mark.parametrize("chunk_bytes", [1 << 22, 8 * 300 * 7])  # one block; blocks of 7
@pytest.mark.parametrize("layout", ["C", "transposed"])
@pytest.mark.parametrize("nan_share", [0.0, 0.1])  # NaN-free blocks take a shortcut
def test_nan_quantiles_match_numpy_and_keep_saturated_draws(layout, chunk_bytes, nan_share):
    from bayes_sd.predict import nan_quantiles

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 40))
    x = np.ascontiguousarray(x.T).T if layout == "transposed" else x  # the kernel's planes
    x[rng.random(x.shape) < nan_share] = np.nan
    x[:, 0] = np.nan  # a column with no finite draw (the other blocks of 7 have none)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for q in (0.05, 0.5, 0.95):
            ref = np.nanquantile(x, q, axis=0)
            got = nan_quantiles(x, [q], chunk_bytes=chunk_bytes)[0]
            np.testing.assert_allclose(got, ref, equal_nan=True)
    x[:200, 1] = np.inf  # mostly saturated: the upper quantiles are +inf, not NaN
    assert nan_quantiles(x, [0.95])[0][1] == np.inf
    # a quantile that falls exactly on a finite draw next to +inf is that draw, not NaN
    y = np.array([[1.0], [2.0], [np.inf]])
    assert nan_quantiles(y, [0.5])[0][0] == 2.0


def test_measured_percentiles_enter_as_log_ratios_to_their_means(sweep):
    from bayes_sd import laws

    data = sweep.copy()
    data["ttft_mean_s"] = data["latency_mean_s"] * 0.05  # TTFT without TPOT: E2E stays fitted
    data["ttft_p99_s"] = data["ttft_mean_s"] * 3.0
    data["latency_p50_s"] = data["latency_mean_s"] * 0.9
    data.loc[data.index[::2], "latency_p50_s"] = np.nan  # measured for half the runs
    model = LatencyModel().build_model(data)
    observed = {v.name for v in model.observed_RVs}
    assert {"log_ttft_p99", "log_latency_p50"} <= observed
    assert not observed & {"log_ttft_p50", "log_tpot_p99"}  # unmeasured: not in the likelihood
    assert len(model.coords["run_latency_p50"]) == len(data) // 2
    np.testing.assert_allclose(model["log_ttft_p99_obs"].get_value(), np.log(3.0))
    assert list(model.coords["tail"]) == list(laws.TAILS)
    # the tail law is written once: NumPy and PyTensor agree, percentiles ordered at any load
    rng = np.random.default_rng(0)
    level, slope = rng.normal(size=3), rng.normal(size=3)
    load = np.linspace(0.0, 4.0, 9)
    mine = laws.tail_log_ratios(level, slope, load)
    tensor = laws.tail_log_ratios(level, slope, pt.as_tensor_variable(load))
    np.testing.assert_allclose([t.eval() for t in tensor], mine)
    assert np.all(np.diff(np.stack(mine), axis=0) > 0)
    point = model.initial_point()
    assert np.isfinite(logp(model, point))
    # the levels are sampled at 16 requests in flight (where the runs are) with the prior of
    # an idle engine's: tail_level = tail_level_centre − slope · x0 has exactly that prior
    from bayes_sd.priors import DEFAULT_PRIORS

    assert "tail_level_centre" in {v.name for v in model.free_RVs}
    assert "tail_level" in {v.name for v in model.deterministics}
    drawn = pm.draw(model["tail_level"], draws=4000, random_seed=2)
    spec = DEFAULT_PRIORS["tail_level"].parameters
    np.testing.assert_allclose(drawn.mean(axis=0), spec["mu"], atol=0.06)
    np.testing.assert_allclose(drawn.std(axis=0), spec["sigma"], rtol=0.06)
    # several engines: each engine's terms around the population's sum to zero over the
    # engines (free, their mean traded off against tail_level: bulk ESS 8 of 900 draws on
    # InferenceX, all four engines' p50 terms moving with the level)
    engines = data.assign(engine=np.where(data["gpu"].str.startswith("H100"), "vllm", "sglang"))
    model = LatencyModel().build_model(engines)
    assert list(model.coords["engine"]) == ["sglang", "vllm"]
    z = pm.draw(model["tail_engine_z"], draws=5, random_seed=1)
    np.testing.assert_allclose(z.sum(axis=-1), 0.0, atol=1e-12)
    # and each GPU type's (several here), the same way, each term with its own spread; one
    # GPU type: no terms
    assert len(model.coords["gpu"]) > 1
    z = pm.draw(model["tail_gpu_z"], draws=5, random_seed=1)
    assert z.shape == (5, len(laws.TAILS), len(model.coords["gpu"]))
    np.testing.assert_allclose(z.sum(axis=-1), 0.0, atol=1e-12)
    assert pm.draw(model["tail_gpu_sd"], draws=5, random_seed=1).shape == (5, len(laws.TAILS))
    one = data[data["gpu"] == data["gpu"].iloc[0]]
    assert "tail_gpu_z" not in LatencyModel().build_model(one).named_vars


def test_predicted_percentiles_take_the_terms_of_the_rows_engine_and_gpu(fitted, float64_draws):
    """A row's tail levels are the population's plus its engine's and its GPU type's fitted
    terms, each percentile term with its own spread; a GPU type or engine the fit has not seen
    draws a new term from the spread, one per level (rows of one unseen GPU type share it)."""
    from bayes_sd import laws
    from bayes_sd.predict import _tail_draws, prediction_rows

    design, draws = fitted.design, 400
    gpus = design.levels("gpu")
    base = design.rows.iloc[[0]].drop(columns=["latency_mean_s"])
    table = pd.concat([base.assign(gpu=gpus[0]), base.assign(gpu=gpus[1]),
                       base.assign(gpu="A100-SXM-80GB"), base.assign(gpu="A100-SXM-80GB"),
                       base.assign(gpu=gpus[0], engine="sglang")], ignore_index=True)  # fmt: skip
    rows = prediction_rows(design, table)
    rng = np.random.default_rng(0)
    n_tails = len(laws.TAILS)
    z = rng.normal(size=(draws, n_tails, len(gpus)))
    gpu_sd = np.tile(np.linspace(0.1, 0.9, n_tails), (draws, 1))  # (draw, tail)
    flat = {"tail_level": np.zeros((draws, n_tails)), "tail_slope": np.zeros((draws, n_tails)),
            "tail_engine_sd": np.full((draws, n_tails), 0.2), "tail_gpu_sd": gpu_sd,
            "tail_gpu_z": z}  # fmt: skip
    ones = np.ones((draws, len(rows)))
    planes = {"ttft": ones, "tpot": ones, "latency": ones}
    per_row = {"is_open": np.zeros(len(rows), bool), "rate": np.full(len(rows), np.nan),
               "conc": np.full(len(rows), 4.0), "engines": np.ones(len(rows)),
               "opening": np.zeros(len(rows))}  # fmt: skip
    tails = _tail_draws(design, rows, flat, planes, per_row, rng, noise=False)
    for t, name in enumerate(laws.TAILS[:3]):  # TTFT: p50 its level, the gaps exp(level)
        log_ratio = np.log(tails[name] / tails[laws.TAILS[t - 1]]) if t else np.log(tails[name])
        level = np.log(log_ratio) if t else log_ratio
        for row, g in ((0, 0), (1, 1)):  # seen GPU types, the fitted engine: their own terms
            np.testing.assert_allclose(level[:, row], gpu_sd[:, t] * z[:, t, g], rtol=1e-9)
    log_p50 = np.log(tails["ttft_p50"])
    np.testing.assert_allclose(log_p50[:, 2], log_p50[:, 3])  # one unseen GPU type, one draw
    assert 0.08 < np.std(log_p50[:, 2]) < 0.12  # from the spread of its term (0.1)
    engine_term = log_p50[:, 4] - log_p50[:, 0]  # an unseen engine on a seen GPU type
    assert 0.15 < np.std(engine_term) < 0.25


def test_a_sweep_without_percentiles_leaves_the_tail_law_to_its_prior(sweep, fitted):
    from bayes_sd import laws
    from bayes_sd.priors import DEFAULT_PRIORS

    # no percentile measured: no tail parameter for the sampler to wander over
    graph = LatencyModel().build_model(sweep)
    assert not {"tail_level", "tail_slope", "tail_sigma"} & set(graph.named_vars)
    assert "tail_level" not in fitted.idata["posterior"]
    # predict draws the tail law from its prior: ordered percentiles with wide intervals (at a
    # light load: the mocked posterior is prior draws, some of which saturate a heavier one)
    row = sweep.iloc[[0]].assign(request_rate=sweep["request_rate"].iloc[0] / 10)
    pred = fitted.predict(row, random_seed=1, max_draws=400)
    p50, p90, p99 = (pred.draws[f"ttft_{q}"].values.ravel() for q in laws.TAIL_STATS)
    assert np.all((p50 < p90) & (p90 < p99))
    ratio = np.log(p99 / pred.draws["ttft"].values.ravel())
    # the p99/mean ratio spreads as the prior says (its gaps' sd is 1 on the log scale)
    assert np.std(ratio) > 0.5
    # a prior the user changed is the one drawn
    tight = dict(fitted.priors, tail_level=DEFAULT_PRIORS["tail_level"].deepcopy())
    tight["tail_level"].parameters["sigma"] = np.full(len(laws.TAILS), 1e-3)
    tight["tail_slope"] = 0.0
    fitted.priors, saved = tight, fitted.priors
    try:
        pred = fitted.predict(row, random_seed=1, max_draws=400)
    finally:
        fitted.priors = saved
    level = DEFAULT_PRIORS["tail_level"].parameters["mu"][laws.TAILS.index("ttft_p50")]
    ratio = pred.draws["ttft_p50"].values / pred.draws["ttft"].values
    np.testing.assert_allclose(ratio, np.exp(level), rtol=0.01)


def test_planning_rows_use_the_acceptance_the_fit_measured(sweep, mocked):
    from bayes_sd.latency import tokens_per_cycle
    from bayes_sd.schema import acceptance_of

    # runs that measured their acceptance (vLLM's counters), no alpha
    data = sweep.copy()
    data["acceptance_length"] = acceptance_of(data)
    data["alpha"] = np.nan
    model = LatencyModel(sampler_config={"draws": 20, "chains": 2})
    with pytest.warns(ConvergenceWarning):
        model.fit(data, random_seed=3)
    cfg = {k: CONFIGS[0][k] for k in ("gpu", "target", "drafter", "prefill_len", "decode_len")}
    rows = pd.DataFrame([{**cfg, "k": k, "request_rate": 1.0} for k in (3, 4)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the law's draws: no extrapolation warning
        pred = model.predict(rows, random_seed=2)  # no acceptance given
    lat = pred.draws["latency"].values  # prior draws (mocked sampling): a few saturate
    assert not np.isnan(lat).any() and np.isfinite(lat).mean() > 0.9
    # both rows take the positional law of their group, draw by draw
    post = model.idata["posterior"].dataset
    group = model.design.rows.loc[model.design.rows["drafter"] == cfg["drafter"], "dataset"]
    assert group.nunique() == 1
    label = [g for g in post["accept_group"].values if f"|{cfg['drafter']}|" in g]
    theta = post["accept_group_logit"].sel(accept_group=label[0]).values
    delta = post["accept_group_decay"].sel(accept_group=label[0]).values
    for i, k in enumerate((3, 4)):
        np.testing.assert_allclose(pred.draws["acceptance_length"].values[..., i],
                                   acceptance.positional_tokens(theta, delta, k))  # fmt: skip
    assert (pred.draws["acceptance_length"].values[..., 1]
            > pred.draws["acceptance_length"].values[..., 0]).all()  # fmt: skip
    # alpha for a measured series is that series (its fitted shift), not a new one
    alpha = 0.8  # the sweep's alpha at k = 3
    e = float(tokens_per_cycle(alpha, 3))
    a = model.predict(rows.iloc[[0]].assign(alpha=alpha), random_seed=2).draws["latency"]
    b = model.predict(rows.iloc[[0]].assign(acceptance_length=e), random_seed=2).draws["latency"]
    np.testing.assert_allclose(a.values, b.values)


def test_an_unmeasured_k_of_an_imposed_alpha_system_is_warned_by_name(sweep):
    """A draft system fitted under an imposed α, asked at a k it never ran without α or an
    acceptance length: the i.i.d. extrapolation is warned about, naming drafter and target
    (not the pipe-joined key of the draft system)."""
    from bayes_sd.design import Design
    from bayes_sd.predict import prediction_rows

    sd = sweep[sweep["k"] > 0].iloc[0]
    row = {c: sd[c] for c in ("gpu", "target", "drafter", "prefill_len", "decode_len")}
    unseen = int(sweep["k"].max()) + 2
    query = pd.DataFrame([{**row, "k": unseen, "request_rate": 1.0}])
    with pytest.warns(UserWarning, match="acceptance not measured") as seen:
        rows = prediction_rows(Design.from_sweep(sweep), query)
    text = str(seen[0].message)
    assert f"k = {unseen} of drafter {row['drafter']} of {row['target']}" in text
    assert "|" not in text and rows["acceptance_length"].iloc[0] > 1


def test_report_configurations_give_each_k_its_own_imposed_alpha(fitted):
    """A simulated draft system with α imposed per k (0.6, 0.8, 0.9 at k = 1, 3, 5): the
    report's configuration predicts each measured k as its fitted series with its measured
    acceptance, not every k at the first run's α (a new series, the wrong acceptance)."""
    from bayes_sd.decisions import configurations
    from bayes_sd.planning import _rows
    from bayes_sd.predict import prediction_rows
    from bayes_sd.schema import acceptance_of

    c = next(c for c in configurations(fitted) if c["ks"] == [0, 1, 3, 5])
    assert np.isnan(c["config"]["alpha"])
    rows = prediction_rows(fitted.design, _rows(c["config"], c["ks"], [1.0]))
    assert rows["series"].isin(fitted.design.series).all()
    sd = rows[rows["k"] > 0]
    design = fitted.design.rows
    for series, e in zip(sd["series"], sd["acceptance_length"], strict=True):
        fit = design[design["series"] == series]
        assert fit["alpha"].nunique() == 1 and fit["k"].iloc[0] in (1, 3, 5)
        assert e == pytest.approx(float(acceptance_of(fit).mean()))


def test_runs_of_one_workload_are_one_system(sweep):
    """Measured mean lengths scatter from run to run (sampled prompts, outputs ending at an end
    token): within 10% they are one workload, and a prediction at the nominal lengths is that
    system; twice the prompt is another."""
    from bayes_sd.design import Design
    from bayes_sd.predict import prediction_rows

    exact = Design.from_sweep(sweep)
    jitter = sweep.copy()
    rng = np.random.default_rng(0)
    for col in ("prefill_len", "decode_len"):
        jitter[col] = jitter[col] * rng.uniform(0.97, 1.03, len(jitter))
    d = Design.from_sweep(jitter)
    assert len(d.systems) == len(exact.systems) and len(d.series) == len(exact.series)
    first = sweep.iloc[0]
    row = {c: first[c] for c in ("gpu", "target", "prefill_len", "decode_len")}
    rows = prediction_rows(d, pd.DataFrame([{**row, "k": 0, "request_rate": 1.0},
                                            {**row, "k": 0, "request_rate": 1.0,
                                             "prefill_len": 2 * row["prefill_len"]}]))  # fmt: skip
    assert rows["system"].iloc[0] in d.systems
    assert rows["system"].iloc[1] not in d.systems


def test_latency_figure_shows_saturated_runs_it_did_not_fit(sweep, mocked):
    """Runs measured past saturation are left out of the fit but drawn (hollow circles, one
    legend entry per panel) in their series' colour, not hidden."""
    from bayes_sd.figures import latency_figure, saturated_runs

    data = sweep.copy()
    top = data.groupby("series" if "series" in data else "target")["request_rate"].idxmax()
    data.loc[top.to_numpy(), "saturated"] = True  # the highest rate of each: "saturated"
    model = LatencyModel(sampler_config={"draws": 20, "chains": 2})
    with pytest.warns(ConvergenceWarning):
        model.fit(data, random_seed=3)
    sat = saturated_runs(model)
    assert len(sat) == len(top) and set(sat["series"]) <= set(model.design.rows["series"])
    assert len(model.design.rows) == len(data) - len(sat)
    fig = latency_figure(model, model.design.rows, 0.9)
    hollow = [line for ax in fig.axes for line in ax.lines if line.get_markerfacecolor() == "none"]
    assert sum(len(line.get_xdata()) for line in hollow) == len(sat)
    labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts]
    assert "saturated (not fitted)" in labels


def test_predict_adds_the_opening_wave_of_rows_that_give_their_request_count(fitted, float64_draws):
    """With the opening wave on, a closed-loop row with ``n_requests`` carries its benchmark's
    wave in TTFT and E2E (f κ B A2, TPOT unchanged); without it, or in an open loop, the steady
    state; with the default (off) none at all."""
    fitted.priors = {**fitted.priors, "burst_share": 0.7}  # the wave is off by default
    rows = fitted.design.rows.head(4).drop(columns=["n_requests"], errors="ignore").copy()
    rows["request_rate"], rows["concurrency"] = np.nan, 32.0
    steady = fitted.predict(rows, random_seed=1, tails=False).draws
    wave = fitted.predict(rows.assign(n_requests=64), random_seed=1, tails=False).draws
    gain = (wave["ttft"] - steady["ttft"]).values
    assert (gain > 0).all()  # half the run in its opening wave
    np.testing.assert_allclose((wave["latency"] - steady["latency"]).values, gain, rtol=1e-9)
    np.testing.assert_allclose(wave["tpot"].values, steady["tpot"].values, rtol=1e-12)
    opened = rows.assign(request_rate=1.0, concurrency=np.nan)
    same = fitted.predict(opened.assign(n_requests=64), random_seed=1, tails=False).draws
    base = fitted.predict(opened, random_seed=1, tails=False).draws
    np.testing.assert_allclose(same["ttft"].values, base["ttft"].values, rtol=1e-12)
    # the percentiles: the wave is in the top f of the run (here f = 1/2: p99 and p90 inside
    # it, p50 at its edge), the steady state's p50 is the steady run's (laws.wave_log_ratios)
    steady_q = fitted.predict(rows, random_seed=1).draws
    wave_q = fitted.predict(rows.assign(n_requests=64), random_seed=1).draws
    np.testing.assert_allclose(wave_q["ttft_p50"].values, steady_q["ttft_p50"].values,
                               rtol=1e-9)  # fmt: skip
    wave_mean = wave["ttft"] - steady["ttft"]  # f κ B A2, so the span W is 4 × that at f = 1/2
    for q, at in (("p90", 0.8), ("p99", 0.98)):  # a prior-drawn tail can be huge: rtol
        expected = steady_q[f"ttft_{q}"].values + at * 4 * wave_mean.values
        np.testing.assert_allclose(wave_q[f"ttft_{q}"].values, expected, rtol=1e-9)
    fitted.priors = {**fitted.priors, "burst_share": 0.0}  # the default: no wave
    off = fitted.predict(rows.assign(n_requests=64), random_seed=1, tails=False).draws
    np.testing.assert_allclose(off["ttft"].values, steady["ttft"].values, rtol=1e-12)


def test_with_the_opening_wave_on_the_measured_p99_sizes_it(sweep):
    """With ``burst_share`` on and closed-loop runs that give their request count, the wave
    enters the means and the TTFT / E2E percentiles' likelihood (its share of the predicted
    mean, laws.wave_log_ratios): the p99 term depends on κ, the p50 term through the share
    only; fixed at 0 (the default) the graph has no κ and the ratios are the tail law's."""
    from pymc_extras.prior import Prior
    from pytensor.graph.traversal import ancestors

    closed = sweep.copy()
    closed["request_rate"], closed["concurrency"] = np.nan, 16.0
    closed["load_mode"] = "concurrency"
    closed["n_requests"] = 160  # f = 1/10, as InferenceX
    closed["ttft_mean_s"] = closed["latency_mean_s"] * 0.05
    closed["ttft_p50_s"] = closed["ttft_mean_s"] * 0.5
    closed["ttft_p99_s"] = closed["ttft_mean_s"] * 8.0
    on = LatencyModel(model_config={"priors": {"burst_share": Prior("LogNormal", mu=-0.7,
                                                                    sigma=0.5)}})  # fmt: skip
    model = on.build_model(closed)
    assert "burst_share" in model.named_vars
    kappa = model.rvs_to_values[model["burst_share"]]
    for term, sized in (("log_ttft_p99", True), ("log_ttft_p50", True), ("log_tpot_p99", False)):
        if term not in model.named_vars:
            continue
        inputs = ancestors([model.logp(vars=[model[term]])])
        assert (kappa in set(inputs)) is sized, term
    off = LatencyModel().build_model(closed)
    assert "burst_share" not in off.named_vars


def test_ttft_noise_grows_with_the_measured_load_not_with_the_predicted_share(sweep):
    """TTFT's noise scale is ``σ (1 + load_noise · log(1 + B))`` with the measured requests in
    flight B: no function of θ or the coefficients (a predicted-share scale made a second
    posterior mode on InferenceX)."""
    import pytensor

    from bayes_sd import laws

    tpot = sweep["latency_mean_s"] * 0.9 / (sweep["decode_len"] - 1)
    data = sweep.assign(ttft_mean_s=sweep["latency_mean_s"] * 0.1, tpot_mean_s=tpot)
    lm = LatencyModel()
    model = lm.build_model(data)
    sigma = model.replace_rvs_by_values([model["log_ttft"].owner.inputs[-1]])[0]
    f = pytensor.function(model.value_vars, sigma, on_unused_input="ignore")
    point = model.initial_point()
    names = [v.name for v in model.value_vars]
    base = f(*[point[n] for n in names])
    moved = {n: v + 0.3 if n.startswith(("intercept_centre", "ttft_share")) else v
             for n, v in point.items()}  # fmt: skip
    np.testing.assert_allclose(f(*[moved[n] for n in names]), base, rtol=1e-12)
    values = _evaluate(model, ["ttft_sigma", "load_noise"], point)
    load = laws.tail_load(lm.design.batch)
    expected = values["ttft_sigma"][lm.design.source_idx] * (1 + values["load_noise"] * load)
    np.testing.assert_allclose(base, expected, rtol=1e-12)
    assert np.ptp(load) > 1  # the sweep's loads differ: the scale grows with them


def test_tpot_noise_grows_with_the_queueing_share_only_when_on(sweep, fitted):
    """``tpot_load_noise`` (opt-in; fixed at 0 by default): TPOT's noise scale becomes
    ``σ (1 + g · share)`` with an open-loop run's queueing share — measured in the likelihood
    (``graph_side.open_queue_share``: no function of the coefficients), predicted in
    ``predict(noise=True)``; off, or for closed-loop runs, the scale is σ."""
    import pytensor
    from pymc_extras.prior import Prior

    from bayes_sd import graph_side

    tpot = sweep["latency_mean_s"] * 0.9 / (sweep["decode_len"] - 1)
    data = sweep.assign(ttft_mean_s=sweep["latency_mean_s"] * 0.1, tpot_mean_s=tpot)
    assert "tpot_load_noise" not in LatencyModel().build_model(data).named_vars
    on = {"priors": {"tpot_load_noise": Prior("HalfNormal", sigma=1.0)}}
    lm = LatencyModel(model_config=on)
    model = lm.build_model(data)
    scale = model.replace_rvs_by_values([model["log_tpot"].owner.inputs[-1]])[0]
    f = pytensor.function(model.value_vars, scale, on_unused_input="ignore")
    point = model.initial_point()
    names = [v.name for v in model.value_vars]
    sigma = _evaluate(model, ["tpot_sigma"], point)["tpot_sigma"][0]
    shares = []
    for g in (0.5, 1.0):  # log-transformed value of the HalfNormal
        moved = {**point, "tpot_load_noise_log__": np.log(g)}
        shares.append((f(*[moved[n] for n in names]) / sigma - 1.0) / g)
    np.testing.assert_allclose(shares[0], shares[1], rtol=1e-9)  # linear in g
    share = shares[0]
    assert share.min() >= 0 and np.ptp(share) > 0.1
    np.testing.assert_allclose(share, graph_side.open_queue_share(lm.design), rtol=1e-9)
    moved = {n: v + 0.3 if n.startswith("intercept_centre") else v for n, v in point.items()}
    np.testing.assert_allclose(f(*[moved[n] for n in names]), f(*[point[n] for n in names]))
    rate = data["request_rate"].to_numpy()
    assert np.corrcoef(np.argsort(np.argsort(share)), np.argsort(np.argsort(rate)))[0, 1] > 0.5
    closed = data.assign(request_rate=np.nan, concurrency=16.0, load_mode="concurrency")
    # a closed loop holds its batch at the concurrency: no open-loop queue, no growth
    assert "tpot_load_noise" not in LatencyModel(model_config=on).build_model(closed).named_vars
    rows = fitted.design.rows.head(40)
    draws = {}
    for g in (0.0, 2.0):  # a number in the priors is a fixed value
        fitted.priors = {**fitted.priors, "tpot_load_noise": g}
        pred = fitted.predict(rows, random_seed=3, noise=True).draws["tpot"].values
        mean = fitted.predict(rows, random_seed=3).draws["tpot"].values
        with np.errstate(invalid="ignore"):  # saturated draws: inf / inf
            draws[g] = np.log(pred / mean)  # same seed: the noise alone
    ok = np.isfinite(draws[0.0]) & (np.abs(draws[0.0]) > 0)
    ratio = draws[2.0][ok] / draws[0.0][ok]
    assert ok.sum() > 100 and ratio.min() >= 1 - 1e-9 and np.median(ratio) > 1.05


def test_convergence_warning_asks_100_ess_per_chain_in_bulk_and_tail():
    """R-hat ≤ 1.01, bulk and tail ESS ≥ 100 per chain (Vehtari et al. 2021), no
    divergences; the advice names a higher target acceptance than the one used."""
    from bayes_sd.sampling import warn_if_unreliable

    good = {"max_rhat": 1.005, "min_ess_bulk": 250.0, "min_ess_tail": 230.0,
            "divergences": 0, "chains": 2}  # fmt: skip
    assert warn_if_unreliable(good) == []  # 2 chains: 200 needed
    with pytest.warns(ConvergenceWarning, match=r"bulk ESS 250 < 400.*--target-accept 0.95"):
        assert len(warn_if_unreliable({**good, "chains": 4})) == 2  # bulk and tail
    with pytest.warns(ConvergenceWarning, match=r"min tail ESS 150 < 200"):
        warn_if_unreliable({**good, "min_ess_tail": 150.0})
    with pytest.warns(ConvergenceWarning, match=r"--target-accept 0.98"):
        warn_if_unreliable({**good, "divergences": 1, "target_accept": 0.95})
    # trajectories at the tree-depth limit: the advice names the low-rank mass matrix
    slow = {**good, "max_rhat": 1.03, "steps_per_draw": 1018.0}
    with pytest.warns(ConvergenceWarning, match=r"1018 leapfrog.*--adaptation low_rank"):
        warn_if_unreliable(slow)
    with pytest.warns(ConvergenceWarning) as caught:
        warn_if_unreliable({**slow, "steps_per_draw": 63.0})
    assert "low_rank" not in str(caught[0].message)


def test_diagnostics_name_the_parameters_slowest_to_mix():
    """``convergence_summary`` names the elements of least bulk ESS (with their R-hat), and
    the warning repeats them: which part of the model to look at."""
    import xarray as xr

    from bayes_sd.sampling import convergence_summary, warn_if_unreliable

    rng = np.random.default_rng(0)
    chains, draws = 4, 200
    good = rng.normal(size=(chains, draws))
    stuck = rng.normal(size=(chains, draws)) * 0.1 + np.arange(chains)[:, None]  # disagree
    dims = ("chain", "draw")
    post = xr.Dataset({
        "a": (dims, good),
        "b": ((*dims, "coef"), np.stack([good[::-1], stuck], axis=-1)),
        "unlisted": (dims, stuck),
    }, coords={"coef": ["c1v", "c2d"]})  # fmt: skip
    stats = xr.Dataset({"diverging": (dims, np.zeros((chains, draws), dtype=bool))})
    tree = xr.DataTree.from_dict({"posterior": post, "sample_stats": stats})
    diag = convergence_summary(tree, ["a", "b"])
    first = diag["slowest"].split("; ")
    assert first[0].startswith("b[c2d] (R-hat ") and len(first) == 3
    assert "unlisted" not in diag["slowest"]
    # the element of highest R-hat is named even where its ESS is not among the least
    from bayes_sd.sampling import _slowest

    ess = xr.Dataset({"x": 10.0, "y": 20.0, "z": 30.0, "w": 500.0})
    rhat = xr.Dataset({"x": 1.01, "y": 1.01, "z": 1.01, "w": 1.2})
    assert [p.split(" (")[0] for p in _slowest(rhat, ess).split("; ")] == ["x", "y", "w"]
    with pytest.warns(ConvergenceWarning, match=r"Slowest to mix: b\[c2d\] \(R-hat"):
        warn_if_unreliable(diag)


def test_verify_share_enters_where_a_draft_system_runs_several_draft_lengths(sweep, fitted):
    """η (``verify_share``) is a free parameter of a sweep where a draft system runs two or
    more draft lengths and is absent where each runs one (``η k c2v`` would be ``c2s`` and
    ``k c2d`` by other names: InferenceX) or when fixed at 0; predict reads its draws: a
    dearer verification slows SD rows and leaves baselines alone."""
    assert sweep.loc[sweep["k"] > 0, "k"].nunique() >= 2
    assert "verify_share" in LatencyModel().build_model(sweep).named_vars
    one_k = sweep[sweep["k"].isin([0, sweep.loc[sweep["k"] > 0, "k"].iloc[0]])]
    assert "verify_share" not in LatencyModel().build_model(one_k).named_vars
    first_k = sweep.groupby("drafter")["k"].transform(lambda k: k[k > 0].min())
    one_each = sweep[(sweep["k"] == 0) | (sweep["k"] == first_k)]  # several k, one per drafter
    assert one_each.loc[one_each["k"] > 0, "k"].nunique() >= 2
    assert "verify_share" not in LatencyModel().build_model(one_each).named_vars
    off = LatencyModel(model_config={"priors": {"verify_share": 0.0}}).build_model(sweep)
    assert "verify_share" not in off.named_vars
    rows = sweep[sweep["request_rate"] <= sweep["request_rate"].median()].head(12)
    before = fitted.predict(rows, random_seed=2, max_draws=40).draws["latency"].values
    fitted.idata["posterior"]["verify_share"] = fitted.idata["posterior"]["verify_share"] + 0.5
    after = fitted.predict(rows, random_seed=2, max_draws=40).draws["latency"].values
    sd = (rows["k"] > 0).to_numpy()
    finite = np.isfinite(after) & np.isfinite(before)
    assert np.all(after[..., sd][finite[..., sd]] > before[..., sd][finite[..., sd]])
    np.testing.assert_array_equal(after[..., ~sd], before[..., ~sd])


def test_series_of_one_draft_system_share_a_mean_shift(sweep, fitted):
    """With ``series_draft_sd`` on (off by default), the series of a draft system that runs
    two or more draft lengths shift around that draft system's mean (``series_draft_shift``),
    and an unseen k of it is predicted around that mean; an unseen draft system draws one
    mean for all its series."""
    from pymc_extras.prior import Prior

    from bayes_sd.config_draws import draw_shifts
    from bayes_sd.graph_side import series_draft_systems

    assert "series_draft_shift" not in LatencyModel().build_model(sweep).named_vars  # default
    on = {"centred": False, "priors": {"series_draft_sd": Prior("HalfNormal", sigma=0.1)}}
    lm = LatencyModel(model_config=on)
    model = lm.build_model(sweep)
    ds, multi = series_draft_systems(lm.design)
    assert list(model.coords["series_draft"]) == multi.tolist() and len(multi) == 2
    shift, means = model.replace_rvs_by_values([model["shift_series"], model["series_draft_shift"]])
    shift = model.compile_fn([shift, means], inputs=model.value_vars, on_unused_input="ignore")
    ip = model.initial_point()
    ip.update(series_draft_z_zerosum__=np.array([1.0]), series_draft_sd_log__=np.log(0.2),
              shift_series_z=np.zeros_like(ip["shift_series_z"]))  # fmt: skip
    got, mean = shift(ip)
    assert mean.sum() == pytest.approx(0.0) and abs(mean[0]) > 0.05  # zero-sum over them
    want = pd.Series(ds).map(dict(zip(multi, mean, strict=True))).fillna(0.0)
    np.testing.assert_allclose(got, want, atol=1e-12)
    # the offsets are centred within each draft system: its series average to its mean
    ip["shift_series_z"] = np.random.default_rng(0).normal(size=ip["shift_series_z"].shape)
    got = pd.Series(shift(ip)[0]).groupby(ds).mean()
    np.testing.assert_allclose(got[list(multi)], mean, atol=1e-12)
    # with centred series levels (pinned by their runs) the means are sampled themselves
    centred = LatencyModel(model_config={**on, "centred": True}).build_model(sweep)
    free = {v.name for v in centred.free_RVs}
    assert "series_draft_shift" in free and "series_draft_z" not in free
    # predictions: the fitted mean for a new k of that draft system, fresh ones elsewhere
    draws, sd = 20000, len(lm.design.sd_series)
    flat = {"series_sd": np.full(draws, 0.05), "series_draft_sd": np.full(draws, 0.1),
            "series_draft_shift": np.tile([0.3, -0.2], (draws, 1)),
            "shift_series": np.zeros((draws, sd))}  # fmt: skip
    labels = [f"{multi[0]}|k7|a0.9", "new|drafter|k1", "new|drafter|k2", lm.design.sd_series[0]]
    drafts = [multi[0], "new|drafter", "new|drafter", ds[0]]
    out = draw_shifts(fitted, "series", labels, flat, draws, np.random.default_rng(1),
                      drafts=drafts)[1]  # fmt: skip
    np.testing.assert_allclose(out.mean(axis=0), [0.3, 0.0, 0.0, 0.0], atol=0.005)
    np.testing.assert_allclose(out.std(axis=0)[:3], [0.05, np.hypot(0.05, 0.1),
                                                     np.hypot(0.05, 0.1)], rtol=0.03)  # fmt: skip
    shared = np.corrcoef(out[:, 1], out[:, 2])[0, 1]  # one draft system: one mean draw
    assert shared == pytest.approx(0.1**2 / (0.1**2 + 0.05**2), abs=0.03)


def test_series_of_one_draft_system_follow_its_line_in_k(fitted):
    """With ``series_draft_slope_sd`` on (off by default), the series of a draft system that
    runs three or more draft lengths shift by its slope times k less its mean k
    (``series_draft_slope``, zero-sum over such draft systems); an unseen k of it is predicted
    on that line, an unseen draft system draws one slope for all its series."""
    from pymc_extras.prior import Prior

    from bayes_sd.config_draws import draw_shifts
    from bayes_sd.graph_side import series_draft_centres

    configs = [dict(CONFIGS[0]), {**CONFIGS[1], "sd": [(2, 0.7), (4, 0.8), (6, 0.85)]}]
    lines, _ = simulate_from_model(configs, seed=11)
    assert "series_draft_slope" not in LatencyModel().build_model(lines).named_vars  # default
    on = {"centred": False, "priors": {"series_draft_slope_sd": Prior("HalfNormal", sigma=0.05)}}
    lm = LatencyModel(model_config=on)
    model = lm.build_model(lines)
    ds, ks, mean_k, sloped = series_draft_centres(lm.design)
    assert list(model.coords["series_slope_draft"]) == sloped.tolist() and len(sloped) == 2
    assert sorted(mean_k[sloped].tolist()) == [3.0, 4.0]
    shift, slope = model.replace_rvs_by_values([model["shift_series"],
                                                model["series_draft_slope"]])  # fmt: skip
    fn = model.compile_fn([shift, slope], inputs=model.value_vars, on_unused_input="ignore")
    ip = model.initial_point()
    ip.update(series_draft_slope_z_zerosum__=np.array([1.0]),
              series_draft_slope_sd_log__=np.log(0.04),
              shift_series_z=np.zeros_like(ip["shift_series_z"]))  # fmt: skip
    got, line = fn(ip)
    assert line.sum() == pytest.approx(0.0) and abs(line[0]) > 0.01  # zero-sum over them
    at = sloped.get_indexer(ds)
    want = np.where(at >= 0, line[np.maximum(at, 0)], 0.0) * (ks - mean_k.reindex(ds).to_numpy())
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert (want != 0).sum() == 4  # k = 1, 5 and 2, 6 off their lines' centres; k = 3, 4 on
    # centred series levels: the slopes are sampled themselves
    centred = LatencyModel(model_config={**on, "centred": True}).build_model(lines)
    free = {v.name for v in centred.free_RVs}
    assert "series_draft_slope" in free and "series_draft_slope_z" not in free
    # predictions: the fitted line for a new k of a sloped draft system (fitted: the eagle
    # head at k = 1, 3, 5, mean 3), a fresh slope around k = 3 for a new draft system
    _, _, mean_f, sloped_f = series_draft_centres(fitted.design)
    assert len(sloped_f) == 1 and mean_f[sloped_f[0]] == 3.0
    draws, sd = 20000, len(fitted.design.sd_series)
    flat = {"series_sd": np.full(draws, 0.05), "series_draft_slope_sd": np.full(draws, 0.02),
            "series_draft_slope": np.full((draws, 1), 0.03),
            "shift_series": np.zeros((draws, sd))}  # fmt: skip
    labels = [f"{sloped_f[0]}|k7|a0.9", "new|drafter|k1", "new|drafter|k5"]
    out = draw_shifts(
        fitted,
        "series",
        labels,
        flat,
        draws,
        np.random.default_rng(1),
        ks=[7, 1, 5],
        drafts=[sloped_f[0], "new|drafter", "new|drafter"],
    )[1]
    np.testing.assert_allclose(out.mean(axis=0), [0.03 * 4, 0.0, 0.0], atol=0.005)
    np.testing.assert_allclose(out.std(axis=0), [0.05, np.hypot(0.05, 0.04),
                                                 np.hypot(0.05, 0.04)], rtol=0.03)  # fmt: skip
    # one draft system: one slope draw, opposite signs on either side of k = 3
    assert np.corrcoef(out[:, 1], out[:, 2])[0, 1] == pytest.approx(-0.04**2 / (0.04**2 + 0.05**2),
                                                                   abs=0.03)  # fmt: skip


def test_series_shifts_follow_their_trend_in_k(sweep, fitted):
    """With ``series_k_slope`` on (off by default), the SD series' level-2 shifts have a trend
    in k (laws.series_trend) when the series run two or more draft lengths, none otherwise;
    an unseen series is drawn around the trend at its k, a seen one keeps its fitted shift, a
    baseline has none."""
    from pymc_extras.prior import Prior

    from bayes_sd import laws
    from bayes_sd.config_draws import draw_shifts

    assert sweep.loc[sweep["k"] > 0, "k"].nunique() >= 2
    assert "series_k_slope" not in LatencyModel().build_model(sweep).named_vars  # off: default
    on = {"priors": {"series_k_slope": Prior("Normal", mu=0.0, sigma=0.1)}}
    model = LatencyModel(model_config=on).build_model(sweep)
    assert {"series_k_slope", "series_trend"} <= set(model.named_vars)
    one_k = sweep[sweep["k"].isin([0, sweep.loc[sweep["k"] > 0, "k"].iloc[0]])]
    assert "series_k_slope" not in LatencyModel(model_config=on).build_model(one_k).named_vars
    draws = 4000
    seen = fitted.design.sd_series[0]
    flat = {"series_sd": np.full(draws, 1e-6), "series_k_slope": np.full(draws, 0.1),
            "shift_series": np.full((draws, len(fitted.design.sd_series)), 0.25)}  # fmt: skip
    labels = ["new|k7|a0.8", "new|k1|a0.8", seen, "new|k0"]
    shift = draw_shifts(fitted, "series", labels, flat, draws, np.random.default_rng(0),
                         ks=[7, 1, 3, 0])[1]  # fmt: skip
    np.testing.assert_allclose(shift.mean(axis=0), [0.4, -0.2, 0.25, 0.0], atol=1e-5)
    assert laws.series_trend(0.1, np.array([3.0])) == pytest.approx(0.0)
