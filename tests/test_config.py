"""Configuration surfaces: priors by name and from YAML, sampler keywords, --debug, and saving
the step-level model (mocked sampling: plumbing only, no claim about recovery)."""

import textwrap
from functools import partial

import numpy as np
import pymc as pm
import pytest
from pymc.testing import mock_sample
from pymc_extras.prior import Prior

import bayes_sd
from bayes_sd import DataError
from bayes_sd.cli import EXIT_DATA, EXIT_INTERNAL, main
from bayes_sd.model import ConvergenceWarning, LatencyModel
from bayes_sd.population import simulate_from_model
from bayes_sd.priors import DEFAULT_PRIORS, STEP_PRIORS, load_model_config

CONFIGS = [
    {"gpu": "H100-SXM-80GB", "target": "llama-3.1-8b", "drafter": "eagle3-head-8b",
     "prefill_len": 1024, "decode_len": 256, "sd": [(3, 0.8)]},
    {"gpu": "H100-SXM-80GB", "target": "olmoe-1b-7b", "drafter": "llama-68m",
     "prefill_len": 256, "decode_len": 256, "sd": [(3, 0.8)]},
]  # fmt: skip


@pytest.fixture(scope="module")
def sweep():
    return simulate_from_model(CONFIGS, seed=3)[0]


@pytest.fixture
def mocked(monkeypatch):
    stats = {"diverging": lambda size: np.zeros(size, dtype=bool)}
    monkeypatch.setattr(pm, "sample", partial(mock_sample, sample_stats=stats))


def test_every_prior_of_the_graph_is_overridable_by_name(sweep, steps_table):
    """Every free variable the latency model creates from a prior (not a structural offset or
    level) has its default in priors.py: changing it by name changes the graph."""
    model = LatencyModel(model_config={"centred": False}).build_model(sweep, steps_table)
    structural = {"gpu_z", "engine_z", "precision_z", "shift_system_z", "shift_draft_z",
                  "shift_series_z", "capacity_z"}  # fmt: skip
    # the intercepts are sampled at the design's mean covariates, from the "intercept" prior;
    # the MoE increment at its log increment, from the "moe_excess" prior
    centred = {"intercept_centre", "moe_level"}
    free = {v.name for v in model.free_RVs} - structural - centred | {"intercept", "moe_excess"}
    assert free <= set(DEFAULT_PRIORS), free - set(DEFAULT_PRIORS)
    for name in ("step_overhead", "step_sigma", "nu", "load_noise"):
        prior = DEFAULT_PRIORS[name]
        changed = Prior(prior.distribution, **{k: v * 2 for k, v in prior.parameters.items()},
                        dims=prior.dims)  # fmt: skip
        m = LatencyModel(model_config={"priors": {name: changed}, "centred": False})
        m.build_model(sweep, steps_table)
        value = np.full(model[name].eval().shape, 0.7)  # the same value in both models
        before = pm.logp(model[name], value).sum().eval()
        after = pm.logp(m.model[name], value).sum().eval()
        assert before != after, name
    # the likelihood family is configuration too: a Normal likelihood has no ν
    normal = LatencyModel(model_config={"priors": {"likelihood": Prior("Normal")}})
    assert "nu" not in {v.name for v in normal.build_model(sweep).free_RVs}


@pytest.fixture(scope="module")
def steps_table():
    return bayes_sd.load_example("stepcost")


def test_unknown_sampler_keywords_are_an_error_that_lists_them(sweep):
    with pytest.raises(TypeError, match=r"unknown sampler keyword\(s\) drawz, warmup"):
        LatencyModel().fit(sweep, drawz=10, warmup=5)
    with pytest.raises(ValueError, match="draws must be a positive whole number"):
        LatencyModel(sampler_config={"draws": 0})


def test_moe_excess_prior_without_a_location_is_not_silently_uncentred(sweep):
    config = {"centred": True, "priors": {"moe_excess": Prior("Cauchy", alpha=0.0, beta=0.5,
                                                              dims="coef_pv")}}  # fmt: skip
    with pytest.warns(UserWarning, match="no fixed location"):
        model = LatencyModel(model_config=config).build_model(sweep)
    assert "moe_excess" in {v.name for v in model.free_RVs}


def test_model_config_from_yaml(tmp_path, sweep):
    good = tmp_path / "model.yaml"
    good.write_text(
        textwrap.dedent("""
        centred: false
        residuals: [system, series]
        priors:
          sigma: {dist: HalfNormal, kwargs: {sigma: 0.05}, dims: source}
          series_sd: {dist: HalfNormal, kwargs: {sigma: 0.2}}
          capacity_sd: 0.5
    """)
    )
    config = load_model_config(good)
    model = LatencyModel(model_config=config)
    assert model.priors["sigma"].parameters["sigma"] == 0.05
    assert model.priors["capacity_sd"] == 0.5  # a number fixes the value
    assert model.residuals == ("system", "series") and model.centring is False
    for text, field in [
        ("priors: {sigmaa: {dist: HalfNormal}}", "priors.sigmaa"),
        ("priors: {sigma: [0.1]}", "priors.sigma"),
        ("priors: {sigma: .nan}", "priors.sigma"),
        ("priors: {sigma: {dist: NoSuchDist, kwargs: {}}}", "priors.sigma"),
        ("centred: maybe", "centred"),
        ("colour: blue", "colour"),
        ("residuals: system", "residuals"),
    ]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(DataError) as err:
            load_model_config(bad)
        assert err.value.field == field and err.value.file == str(bad), text


def test_fit_reads_model_config_from_the_command_line(tmp_path, monkeypatch):
    seen = {}

    class Stop(Exception):
        pass

    def fit(self, sweep, **kwargs):
        seen["sigma"] = self.priors["sigma"].parameters["sigma"]
        raise Stop

    monkeypatch.setattr(LatencyModel, "fit", fit)
    cfg = tmp_path / "m.yaml"
    cfg.write_text("priors: {sigma: {dist: HalfNormal, kwargs: {sigma: 0.02}, dims: source}}")
    args = ["fit", "--example", "vllm-blog-2024", "--out", str(tmp_path / "m.nc"), "--quiet"]
    assert main([*args, "--model-config", str(cfg)]) == EXIT_INTERNAL  # the stop
    assert seen["sigma"] == 0.02
    cfg.write_text("priors: {sigmaa: {dist: HalfNormal}}")
    assert main([*args, "--model-config", str(cfg)]) == EXIT_DATA


def test_debug_shows_the_traceback_of_internal_errors(tmp_path, monkeypatch, capsys):
    def boom(self, *a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(LatencyModel, "fit", boom)
    args = ["fit", "--example", "vllm-blog-2024", "--out", str(tmp_path / "m.nc"), "--quiet"]
    assert main(args) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: boom" in err and "--debug" in err
    with pytest.raises(RuntimeError, match="boom"):
        main(["--debug", *args])
    with pytest.raises(RuntimeError, match="boom"):
        main([*args, "--debug"])


def test_step_level_model_saves_and_loads(steps_table, mocked, tmp_path):
    from bayes_sd.stepfit import StepLevelModel

    table = steps_table[steps_table["model"].isin(["llama-3.1-8b", "llama-3.2-1b"])]
    priors = {"sigma": STEP_PRIORS["sigma"].to_dict() | {"kwargs": {"sigma": 0.05}}}
    model = StepLevelModel(sampler_config={"draws": 20, "chains": 2}, priors=priors)
    with pytest.warns(ConvergenceWarning):
        model.fit(table, random_seed=1)
    path = model.save(tmp_path / "steps.nc")
    loaded = StepLevelModel.load(path)
    assert loaded.priors["sigma"].parameters["sigma"] == 0.05
    a = model.step_time_ms("llama-3.1-8b", "H100-SXM-80GB", [1, 8, 64], 1, 1024)
    b = loaded.step_time_ms("llama-3.1-8b", "H100-SXM-80GB", [1, 8, 64], 1, 1024)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(DataError, match="holds a StepLevelModel, not a LatencyModel"):
        LatencyModel.load(path)
    with pytest.raises(RuntimeError, match="fit the step-level model"):
        StepLevelModel().save(tmp_path / "x.nc")
