"""Simulation-based calibration and the step-level model: unit checks and small real runs.

The full SBC (100 replications) and the full step-level fit are validation scripts
(validation/sbc.py, validation/stepcost_fit.py), not tests; here a few replications and a fit on
part of the step table check that the machinery runs and gives physically sensible answers.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

import bayes_sd
from bayes_sd.calibration import rank_of_truth, simulation_based_calibration, uniformity
from bayes_sd.errors import DataError
from bayes_sd.model import ConvergenceWarning
from bayes_sd.stepfit import StepLevelModel, decode_shapes


def test_rank_of_truth_counts_draws_below():
    draws = np.arange(10.0)[:, None] * np.array([1.0, -1.0])  # (10 draws, 2 parameters)
    assert rank_of_truth(draws, [4.5, -4.5]).tolist() == [5, 5]
    assert rank_of_truth(draws, [-1.0, 1.0]).tolist() == [0, 10]


def test_uniformity_accepts_uniform_and_rejects_piled_up_ranks():
    rng = np.random.default_rng(0)
    counts, p = uniformity(rng.integers(0, 100, size=1000), n_draws=99, bins=10)
    assert counts.sum() == 1000 and p > 0.001
    counts, p = uniformity(rng.integers(0, 10, size=200), n_draws=99, bins=10)
    assert counts[0] == 200 and p < 1e-6
    with pytest.raises(ValueError, match="divisible"):
        uniformity(np.zeros(5, dtype=int), n_draws=100, bins=10)


@pytest.mark.slow  # 3 real fits (~95 s cold); the per-phase SBC test below runs in CI
def test_sbc_smoke_runs_real_fits_and_ranks_every_population_parameter():
    s = bayes_sd.load_example("demo")
    fraction = s["file"].str.extract(r"/([0-9.]+)sat\.json$")[0].astype(float)
    design = s[
        s["target"].isin(["llama-3.2-1b", "llama-3.1-8b"])
        & (s["gpu"] == "H100-SXM-80GB")
        & (s["drafter"].isna() | (s["drafter"] == "llama-68m"))
        & s["k"].isin([0, 3])
        & (s["alpha"].isna() | (s["alpha"] == 0.8))
        & fraction.isin([0.05, 0.15, 0.3])
    ]
    # the E2E likelihood (the per-phase one is exercised by test_sbc_simulates_every_metric)
    design = design.assign(ttft_mean_s=np.nan, tpot_mean_s=np.nan)
    seen = []
    res = simulation_based_calibration(
        design, reps=3, draws=99, tune=150, thin_to=99, seed=3, oversample=6,
        progress=lambda i, n, info: seen.append((i, n)),
    )  # fmt: skip
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert res.ranks.shape[0] == 3
    assert list(res.ranks.columns) == list(res.truth.columns)
    assert {"intercept[c1v]", "size_slope[c2v]", "sigma[simulated]", "nu"} <= set(res.ranks)
    assert res.ranks.to_numpy().min() >= 0 and res.ranks.to_numpy().max() <= 99
    # the truths are prior draws: size slopes positive, near their LogNormal(log 0.8, 0.5)
    slopes = res.truth.filter(like="size_slope").to_numpy()
    assert np.all(slopes > 0) and np.all(np.abs(np.log(slopes / 0.8)) < 2.5)
    assert np.all(res.truth["nu"] > 0)
    summary = res.summary()
    assert summary["p_uniform"].between(0, 1).all()
    assert set(res.diagnostics.columns) >= {"divergences", "max_rhat", "min_ess_bulk", "worst_ess"}
    assert res.extra["prior_draws_stable"] >= 3


# one fit per run: every test that reads it runs on the same xdist worker
ONE_STEP_FIT = pytest.mark.xdist_group("step_fit")


@pytest.fixture(scope="module")
def step_fit():
    steps = bayes_sd.load_example("stepcost")
    keep = ["llama-3.2-1b", "llama-3.1-8b", "eagle3-head-8b", "olmoe-1b-7b"]
    model = StepLevelModel(
        sampler_config={"draws": 150, "tune": 250, "chains": 2, "progressbar": False}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(steps[steps["model"].isin(keep)], random_seed=2)
    return model


@pytest.mark.xdist_group("sbc_design")  # its compiled model is reused by test_fleet's SBC test
def test_sbc_simulates_every_metric_of_a_per_phase_design():
    """A design that measures TTFT and TPOT is simulated and refitted in both metrics: the
    simulated values go back into their data containers (not the template's)."""
    s = bayes_sd.load_example("demo")
    design = s[(s["target"] == "llama-3.2-1b") & (s["gpu"] == "H100-SXM-80GB") & (s["k"] == 0)]
    design = design[design["prefill_len"] == design["prefill_len"].iloc[0]].head(6)
    seen = []
    res = simulation_based_calibration(design, reps=2, draws=99, tune=100, thin_to=99, seed=1,
                                       oversample=10,
                                       progress=lambda i, n, info: seen.append((i, n)))  # fmt: skip
    assert seen == [(1, 2), (2, 2)] and res.ranks.shape[0] == 2
    assert {"ttft_sigma[simulated]", "tpot_sigma[simulated]", "ttft_share"} <= set(res.ranks)
    assert "sigma[simulated]" not in res.ranks  # E2E is not fitted beside TTFT and TPOT
    assert list(res.ranks.columns) == list(res.truth.columns)
    assert res.ranks.to_numpy().min() >= 0 and res.ranks.to_numpy().max() <= 99
    assert res.summary()["p_uniform"].between(0, 1).all()
    assert set(res.diagnostics.columns) >= {"divergences", "max_rhat", "min_ess_bulk", "worst_ess"}


@ONE_STEP_FIT
def test_step_model_fits_measured_passes(step_fit):
    q = step_fit.fit_quality()
    assert len(q) == 8  # 4 models x 2 GPUs
    assert (q["r2_log"] > 0.9).all(), q
    assert (q["median_rel_error"] < 0.08).all(), q


@ONE_STEP_FIT
def test_step_model_physics_gpu_and_moe_coverage(step_fit):
    g = step_fit.gpu_effects().set_index(["kind", "term"])
    # H200 has 1.4x the memory bandwidth of H100: weight and KV reads are cheaper
    assert g.loc[("dense", "a"), "ratio_hi"] < 1
    assert g.loc[("dense", "c"), "ratio_hi"] < 1
    # MoE: t(64)/t(1) follows the measured growth with experts touched (a dense form: ~1.2)
    sh = step_fit.shapes
    ref = sh[(sh["model"] == "olmoe-1b-7b") & (sh["gpu"] == "H100-SXM-80GB") & (sh["q"] == 1)
             & (sh["ctx"] == 256)].set_index("batch")["time_ms"]  # fmt: skip
    t = np.median(step_fit.step_time_ms("olmoe-1b-7b", "H100-SXM-80GB", [1, 64], 1, 256), axis=0)
    measured = ref[64] / ref[1]
    assert measured > 2.5
    assert abs(t[1] / t[0] / measured - 1) < 0.2


@ONE_STEP_FIT
def test_closed_loop_speedup_is_the_draftwise_formula(step_fit):
    gpu = "H100-SXM-80GB"
    out = step_fit.closed_loop_speedup(
        "llama-3.1-8b", "eagle3-head-8b", gpu, k=3, acceptance_length=2.5, batches=[1, 16, 128]
    )
    base = step_fit.step_time_ms("llama-3.1-8b", gpu, [1, 16, 128], 1, 1024)
    draft = step_fit.step_time_ms("eagle3-head-8b", gpu, [1, 16, 128], 1, 1024)
    verify = step_fit.step_time_ms("llama-3.1-8b", gpu, [1, 16, 128], 4, 1024)
    direct = np.median(base / ((3 * draft + verify) / 2.5), axis=0)
    np.testing.assert_allclose(out["speedup_median"], direct, rtol=1e-12)
    assert (out["speedup_lo"] <= out["speedup_median"]).all()
    assert (out["speedup_median"] <= out["speedup_hi"]).all()
    assert out["speedup_median"].is_monotonic_decreasing  # SD pays less as batches grow
    assert out["speedup_median"].iloc[0] > 1.5
    noisy = step_fit.closed_loop_speedup(
        "llama-3.1-8b", "eagle3-head-8b", gpu, k=3, acceptance_length=2.5, batches=[1, 16, 128],
        noise=True,
    )  # fmt: skip
    width = lambda d: (d["speedup_hi"] - d["speedup_lo"]).to_numpy()  # noqa: E731
    assert (width(noisy) > width(out)).all()  # the fitted scatter of measured passes
    with pytest.raises(ValueError, match="acceptance_length"):
        step_fit.closed_loop_speedup("llama-3.1-8b", "eagle3-head-8b", gpu, k=3,
                                     acceptance_length=5.0)  # fmt: skip
    with pytest.raises(ValueError, match="unknown model 'gpt-9'"):
        step_fit.step_time_ms("gpt-9", gpu, 1, 1, 1024)


def test_step_table_errors_name_the_field():
    steps = bayes_sd.load_example("stepcost").drop(columns=["kv_heads"])
    with pytest.raises(DataError, match="kv_heads"):
        decode_shapes(steps)
    only_prefill = bayes_sd.load_example("stepcost").query("phase == 'prefill'")
    with pytest.raises(DataError, match="no decode passes"):
        decode_shapes(only_prefill)
    with pytest.raises(ValueError, match="unknown sampler_config"):
        StepLevelModel(sampler_config={"draw": 10})
    assert isinstance(decode_shapes(bayes_sd.load_example("stepcost")), pd.DataFrame)


def test_tail_scatter_script_measures_the_percentiles_floor(tmp_path):
    """validation/tail_scatter.py on the real InferenceX rows: a run's p99 TTFT scatters ~31%
    around its configuration's (the floor under issue 18's p99 TTFT target), p99 TPOT ~4%."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "validation" / "tail_scatter.py"
    out = tmp_path / "tail_scatter.json"
    subprocess.run([sys.executable, str(script), "--out", str(out), "--docs", str(tmp_path)],
                   check=True, capture_output=True)  # fmt: skip
    rows = {r["percentile"]: r for r in json.loads(out.read_text())["rows"]}
    assert len(rows) == 9 and rows["p99 TTFT"]["runs"] == 131
    assert rows["p99 TTFT"]["median_scatter"] == pytest.approx(0.307, abs=0.01)
    assert rows["p99 TPOT"]["median_scatter"] < 0.05 < rows["p50 TTFT"]["median_scatter"]
    assert (tmp_path / "tail_scatter.md").read_text().count("TTFT") == 3


def test_validation_scripts_take_a_model_config_file(monkeypatch):
    """``--model-config FILE`` (the scripts that pass it to their fits): the file's priors under
    the script's own, the outputs suffixed with its name; the shipped variant builds a model
    with TPOT's noise growth on. Scripts that cannot honour it do not offer it."""
    from pathlib import Path

    from bayes_sd.model import LatencyModel

    root = Path(__file__).parents[1] / "validation"
    monkeypatch.syspath_prepend(str(root))
    import _common

    p = _common.parser("x", draws=1, chains=1, model_config=True)
    args = _common.parse(p, ["--model-config", str(root / "configs/tpot_load_noise.yaml")], "x")
    assert args.out.name == "x_tpot_load_noise.json"
    config = _common.model_config(args, priors={"accept_decay": 0.0}, centred=False)
    assert set(config["priors"]) == {"tpot_load_noise", "accept_decay"} and not config["centred"]
    assert _common.model_config(_common.parse(p, [], "x")) is None
    sweep = bayes_sd.load_example("demo").head(60)
    model = LatencyModel(model_config=_common.model_config(args)).build_model(sweep)
    assert "tpot_load_noise" in model.named_vars
    without = _common.parser("x", draws=1)  # e.g. SBC, which draws truths from the defaults
    with pytest.raises(SystemExit):
        without.parse_args(["--model-config", "f.yaml"])
