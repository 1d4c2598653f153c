"""Simulated sweeps: the demo grid, its regeneration, the CLI, and closed-form draws with truth."""

import numpy as np
import pandas as pd
import pytest

import bayes_sd
from bayes_sd import latency, sweeps
from bayes_sd.cli import EXIT_OK, main
from bayes_sd.io import sweep_from_results
from bayes_sd.population import DEFAULT_POPULATION, simulate_from_model, with_overrides
from bayes_sd.stepmodel import StepCostModel


@pytest.fixture(scope="module")
def steps():
    return StepCostModel.from_table(bayes_sd.load_example("stepcost"))


@pytest.fixture(scope="module")
def demo():
    return bayes_sd.load_example("demo")


def test_demo_grid_covers_the_issue_grid():
    grid = sweeps.demo_grid()
    assert len(grid) == 320
    assert {c.gpu for c in grid} == set(sweeps.GPUS)
    assert {c.target for c in grid} == set(sweeps.TARGETS)
    assert {c.drafter for c in grid} == {None, "llama-68m", "eagle3-head-8b", "llama-3.2-1b"}
    assert {c.k for c in grid} == {0, 1, 2, 3, 5, 7}
    assert {c.alpha for c in grid if c.k} == {0.6, 0.8, 0.9}
    assert {(c.prompt_len, c.output_len) for c in grid} == set(sweeps.LENGTHS)


def test_demo_sweep_is_labelled_and_flags_saturation(demo):
    assert len(demo) == 2586
    assert demo["source"].eq("simulated").all()
    assert "SIMULATED" in bayes_sd.list_examples()["demo"]
    fraction = demo["file"].str.extract(r"/([0-9.]+)sat\.json$")[0].astype(float)
    over = demo[fraction > 1]
    assert len(over) > 0 and over["saturated"].all()  # deliberately saturated runs are flagged
    light = demo[fraction <= 0.5]
    assert light["saturated"].mean() < 0.01
    assert demo["acceptance_length"].between(1, 8).all()
    assert set(demo["target_experts"]) == {1, 64, 128}


def test_demo_regenerates_bit_for_bit(demo, steps):
    runs = sweeps.plan_runs(sweeps.demo_grid(), steps, seed=0, indices=(0, 150, 319))
    pick = [runs[i] for i in (0, 9, 12, len(runs) - 1)]
    results = sweeps.run_grid(pick, steps, jobs=1)
    again = sweep_from_results([(n, o) for n, o, _ in results], num_gpus=1, source="simulated")
    committed = demo.set_index("file").loc[again["file"]].reset_index()
    for col in (
        "latency_mean_s",
        "latency_p99_s",
        "request_rate",
        "acceptance_length",
        "n_requests",
        "run_id",
        "saturated",
    ):
        assert list(again[col]) == list(committed[col]), col


def test_run_grid_in_parallel_matches_serial(steps):
    cfg = sweeps.demo_grid()[0]
    runs = sweeps.plan_runs([cfg], steps, fractions=(0.2, 0.5), saturated_every=0, seed=3)
    serial = sweeps.run_grid(runs, steps, jobs=1, min_requests=200, max_requests=400)
    parallel = sweeps.run_grid(runs, steps, jobs=2, min_requests=200, max_requests=400)
    assert [o for _, o, _ in serial] == [o for _, o, _ in parallel]


def test_cli_simulate_writes_json_and_csv(tmp_path, capsys):
    code = main(
        [
            "simulate",
            "--grid",
            "small",
            "--target",
            "llama-3.2-1b",
            "--out",
            str(tmp_path),
            "--jobs",
            "1",
        ]
    )
    assert code == EXIT_OK
    table = bayes_sd.read_sweep(tmp_path / "sweep.csv")
    runs = sorted((tmp_path / "runs").rglob("*.json"))
    assert len(runs) == len(table) > 8
    from_json = bayes_sd.read_sweep(tmp_path / "runs", num_gpus=1, source="simulated")
    pd.testing.assert_series_equal(
        from_json.sort_values("run_id")["latency_mean_s"].reset_index(drop=True),
        table.sort_values("run_id")["latency_mean_s"].reset_index(drop=True),
        check_names=False,
    )
    err = capsys.readouterr().err
    assert "simulating" in err and f"{len(table)}/{len(table)}" in err  # the bar reached the end


def test_simulate_from_model_returns_truth():
    configs = [
        {
            "gpu": "H100-SXM-80GB",
            "target": "llama-3.1-8b",
            "drafter": "eagle3-head-8b",
            "prefill_len": 1024,
            "decode_len": 256,
            "sd": [(3, 0.8)],
        },
        {
            "gpu": "H200-SXM-141GB",
            "target": "qwen3-30b-a3b",
            "drafter": "llama-68m",
            "prefill_len": 256,
            "decode_len": 1024,
            "sd": [(2, 0.7)],
        },
    ]
    sweep, truth = simulate_from_model(configs, seed=4)
    assert len(sweep) == 2 * 2 * 6 and sweep["source"].eq("simulated-closed-form").all()
    assert truth["population"] is DEFAULT_POPULATION
    cfg = truth["configs"][0]
    coefs = latency.Coefficients(**cfg["unsaturated"])
    base = sweep[(sweep["target"] == "llama-3.1-8b") & (sweep["k"] == 0)]
    c1, c2 = latency.demand(coefs, 0, 1.0, 256)
    np.testing.assert_allclose(
        base["true_latency_s"], latency.open_loop_latency(c1, c2, base["request_rate"]), rtol=1e-9
    )
    # noise is small and centred: observed within 20% of the truth
    assert np.all(np.abs(np.log(sweep["latency_mean_s"] / sweep["true_latency_s"])) < 0.2)
    moe = truth["configs"][1]
    assert moe["increment"]["c1v"] > 0 and truth["configs"][0]["increment"]["c1v"] == 0
    again, _ = simulate_from_model(configs, seed=4)
    pd.testing.assert_frame_equal(sweep, again)


def test_fleet_configurations_one_workload_apart_stay_apart_with_their_datasets():
    """Two simulated configurations of one GPU and target whose lengths lie within 10% are one
    workload (one system) to the model, with two truths; each with its own dataset they are two
    systems (bench_scale's fleet)."""
    from bayes_sd.design import Design
    from bayes_sd.load_checks import falling_series

    base = {"gpu": "H100-SXM-80GB", "target": "llama-3.1-8b", "drafter": None, "sd": []}
    pair = [{**base, "prefill_len": 1024, "decode_len": 256},
            {**base, "prefill_len": 1060, "decode_len": 262}]  # fmt: skip
    truth = with_overrides(DEFAULT_POPULATION, config_sd=0.6, noise_sd=0.01)
    merged, _ = simulate_from_model(pair, population=truth, seed=1)
    rows = Design.from_sweep(merged).rows
    assert rows["system"].nunique() == 1 and "dataset" not in pd.DataFrame(pair)
    apart, _ = simulate_from_model(
        [{**c, "dataset": f"fleet-{i}"} for i, c in enumerate(pair)], population=truth, seed=1
    )
    rows = Design.from_sweep(apart).rows
    assert rows["system"].nunique() == 2 and set(apart["dataset"]) == {"fleet-0", "fleet-1"}
    assert falling_series(rows).empty
