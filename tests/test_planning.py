"""Planning decisions on a real (small) posterior: each answer is checked against the draws it
claims to summarise, and against the closed form where one exists."""

import numpy as np
import pandas as pd
import pytest

from bayes_sd import planning

# the tests that share the session fit run in one pytest-xdist worker (one fit, not two)
pytestmark = pytest.mark.xdist_group("small_fit")

CONFIG = {
    "gpu": "H100-SXM-80GB",
    "target": "llama-3.1-8b",
    "drafter": "eagle3-head-8b",
    "alpha": 0.7,
    "prefill_len": 1024,
    "decode_len": 1024,
}


@pytest.fixture(scope="module")
def model(small_fit):
    return small_fit[1]


def _p_latency_under(model, k, rate, slo):
    rows = pd.DataFrame([{**CONFIG, "k": k, "request_rate": rate}])
    lat = model.predict(rows, random_seed=0).draws["latency"].values.ravel()
    return np.mean(lat <= slo)


def test_sustainable_rate_meets_its_credibility(model):
    slo = 12.0
    table = planning.sustainable_rate(model, CONFIG, slo_s=slo, credibility=0.9, ks=(0, 2))
    assert list(table["k"]) == [0, 2]
    for _, row in table.iterrows():
        assert 0 < row["rate"] <= row["rate_median"]
        # at the answer the SLO holds with the stated credibility, and 10% above it does not
        p_at = _p_latency_under(model, row["k"], row["rate"] * 0.995, slo)
        p_above = _p_latency_under(model, row["k"], row["rate"] * 1.1, slo)
        assert p_at >= 0.9 - 0.03 and p_above < 0.9


def test_sustainable_rate_is_zero_when_even_light_load_misses(model):
    table = planning.sustainable_rate(model, CONFIG, slo_s=0.01, ks=(0,))
    assert table["rate"].iloc[0] == 0.0


def test_break_even_distribution_matches_speedup_along_the_grid(model):
    be = planning.break_even(model, CONFIG, k=2)
    s = be.summary()
    assert s["break_even_lo"] <= s["break_even_median"] <= s["break_even_hi"]
    along = be.along
    assert along["p_speedup_gt_1"].is_monotonic_decreasing or (
        np.diff(along["p_speedup_gt_1"]).max() < 0.05
    )
    # P(speedup > 1) at the median break-even is about one half
    med = s["break_even_median"]
    if np.isfinite(med) and med > 0:
        p = np.interp(med, along["rate"], along["p_speedup_gt_1"])
        assert 0.3 < p < 0.7


def test_best_k_probabilities_and_schedule(model):
    rates = np.linspace(0.05, 1.0, 8)
    res = planning.best_k(model, CONFIG, ks=(0, 1, 2, 3), rates=rates)
    sums = res.table.groupby("rate")["p_best"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0)
    assert len(res.choice) == len(rates)
    # the chosen k has the lowest expected latency (objective "mean")
    for rate, g in res.table.groupby("rate"):
        chosen = res.choice.loc[np.isclose(res.choice["rate"], rate), "k"].iloc[0]
        assert g.loc[g["expected_latency"].idxmin(), "k"] == chosen
    sched = res.schedule()
    assert {"batch_from", "batch_to", "k", "min_p_best"} <= set(sched.columns)
    assert (sched["batch_from"] <= sched["batch_to"]).all()
    tail = planning.best_k(model, CONFIG, ks=(0, 2), rates=rates, objective="shortfall")
    assert tail.objective == "shortfall"
    with pytest.raises(ValueError, match="objective"):
        planning.best_k(model, CONFIG, objective="median")


def test_next_measurement_ranks_candidates(model):
    # a drafter that accepts less: SD's load-dependent cost exceeds the baseline's, so it
    # stops paying at a (posterior-uncertain) break-even; at alpha 0.7 this population's SD
    # pays at every rate either system sustains, and the break-even is +inf in every draw
    config = {**CONFIG, "alpha": 0.45}
    ranked = planning.next_measurement(model, config, k=2, ks=(0, 2), rates=[0.1, 0.5, 1.0])
    assert len(ranked) == 6
    assert ranked["score"].is_monotonic_decreasing
    assert (ranked["share"] >= 0).all() and ranked["share"].iloc[0] > 0
    with pytest.raises(ValueError, match="slo_s"):
        planning.next_measurement(model, CONFIG, question="sustainable_rate")
