"""fit_many on Dask: one fitted model per sweep, failures reported by name, the others finish.

The fast test runs an in-process cluster with PyMC's mock sampler (prior draws: what is tested
is the orchestration, not a posterior); the slow one fits two real sweeps with NUTS on two
worker processes, each compiling into its own PyTensor directory."""

import warnings
from functools import partial

import numpy as np
import pymc as pm
import pytest
from pymc.testing import mock_sample

import bayes_sd
from bayes_sd.fleet import fit_many
from bayes_sd.population import simulate_from_model

distributed = pytest.importorskip("distributed")

CONFIG = [{"gpu": "H100-SXM-80GB", "target": "llama-3.1-8b", "drafter": "eagle3-head-8b",
           "prefill_len": 512, "decode_len": 256, "sd": [(3, 0.8)]}]  # fmt: skip


def test_fit_many_gathers_models_and_reports_a_failed_sweep(monkeypatch, capsys, tmp_path):
    stats = {"diverging": lambda size: np.zeros(size, dtype=bool)}
    monkeypatch.setattr(pm, "sample", partial(mock_sample, sample_stats=stats))
    good, _ = simulate_from_model(CONFIG, seed=3)
    bad = good.assign(saturated=True)  # nothing left to fit: a DataError on the worker
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1,
                            dashboard_address=":0") as client:  # fmt: skip
        res = fit_many({"good": good, "bad": bad}, client=client, compile_root=tmp_path,
                       sampler_config={"draws": 10, "chains": 2})  # fmt: skip
    assert set(res.models) == {"good"} and set(res.failures) == {"bad"}
    assert res.failures["bad"].startswith("DataError") and "no runs to fit" in res.failures["bad"]
    model = res.models["good"]
    assert isinstance(model, bayes_sd.LatencyModel)
    assert model.diagnostics["runs_fitted"] == len(good)
    # what came back is what a save loads: its draws, and it predicts
    assert model.idata["posterior"].dataset.sizes["draw"] == 10
    rows = good.head(3).drop(columns=["latency_mean_s"])
    assert len(model.predict(rows, max_draws=10).summary) == 3
    assert list(res.diagnostics["sweep"]) == ["good"] and res.diagnostics["seconds"].iloc[0] > 0
    assert "fitting" in capsys.readouterr().err  # the progress bar
    with pytest.raises(ValueError, match="non-empty mapping"):
        fit_many({}, client=client)


@pytest.mark.slow
def test_fit_many_on_two_worker_processes_with_their_own_compile_dirs(tmp_path):
    blog = bayes_sd.load_example("vllm-blog-2024")
    sweeps = {name: part for name, part in blog.groupby("dataset")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit_many(sweeps, workers=2, compile_root=tmp_path, progress=False,
                       sampler_config={"draws": 300, "tune": 300, "chains": 2})  # fmt: skip
    assert set(res.models) == set(sweeps) and not res.failures
    assert (res.diagnostics["max_rhat"] < 1.1).all()
    assert res.diagnostics["worker_pid"].nunique() == 2
    assert len(list(tmp_path.glob("worker-*"))) == 2  # one compile directory per worker


@pytest.mark.xdist_group("sbc_design")  # the design of test_validation's SBC test: one compile
def test_sbc_on_dask_gives_the_ranks_of_the_serial_run():
    """The same seeds give the same ranks whether the replications run here one after another
    or on Dask workers (in-process here, sharing this process's compiled model); results come
    back in replication order whatever order they finish in."""
    from bayes_sd.calibration import simulation_based_calibration

    s = bayes_sd.load_example("demo")
    design = s[(s["target"] == "llama-3.2-1b") & (s["gpu"] == "H100-SXM-80GB") & (s["k"] == 0)]
    design = design[design["prefill_len"] == design["prefill_len"].iloc[0]].head(6)
    kw = {"reps": 2, "draws": 99, "tune": 100, "thin_to": 99, "seed": 1, "oversample": 10}
    serial = simulation_based_calibration(design, **kw)
    seen = []
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1,
                            dashboard_address=":0") as client:  # fmt: skip
        on_dask = simulation_based_calibration(
            design, client=client, progress=lambda i, n, info: seen.append((i, n)), **kw
        )
    assert sorted(seen) == [(1, 2), (2, 2)]
    assert on_dask.ranks.equals(serial.ranks)
    assert on_dask.truth.equals(serial.truth)
    assert on_dask.diagnostics["rep"].tolist() == [0, 1]
    assert on_dask.diagnostics["seed"].tolist() == serial.diagnostics["seed"].tolist()
