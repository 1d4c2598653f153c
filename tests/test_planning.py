"""Planning decisions on a real (small) posterior: each answer is checked against the draws it
claims to summarise, and against the closed form where one exists."""

import warnings

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


def test_break_even_past_both_saturations_keeps_who_outlived_whom(monkeypatch):
    """Where SD and the baseline are both saturated (speedup NaN), SD paid only if the
    baseline saturated first: a draw whose SD system saturated first (speedup 0, then NaN)
    does not pay again past the baseline's saturation (it used to count as paying: P(speedup
    > 1) rose from 0 to 1 past both saturations)."""
    inf, nan = np.inf, np.nan
    spd = np.array([[1.3, 1.1, 0.8, 0.0, nan, nan],  # SD saturates first
                    [1.3, 1.2, 1.1, inf, nan, nan],  # the baseline saturates first
                    [nan, nan, nan, nan, nan, nan]])[:, None, :]  # fmt: skip
    monkeypatch.setattr(planning, "_draws", lambda *a, **k: (None, spd, None))
    be = planning.break_even(None, CONFIG, k=2, rates=np.arange(1.0, 7.0))
    np.testing.assert_allclose(be.along["p_speedup_gt_1"], [2 / 3, 2 / 3, 1 / 3, 1 / 3, 1 / 3,
                                                            1 / 3])  # fmt: skip
    assert be.draws[0] == pytest.approx(2 + 1 / 3)  # 1.1 → 0.8 crosses 1 a third of the way
    assert be.draws[1] == np.inf and be.draws[2] == 0.0


def test_best_k_probabilities_and_schedule(model):
    rates = np.linspace(0.05, 1.0, 8)
    res = planning.best_k(model, CONFIG, ks=(0, 1, 2, 3), rates=rates)
    sums = res.table.groupby("rate")["p_best"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0)
    assert len(res.choice) == len(rates)
    # the chosen k is the shortest whose objective (the mean over the draws that sustain the
    # rate) is within 1% of the lowest
    for rate, g in res.table.groupby("rate"):
        chosen = res.choice.loc[np.isclose(res.choice["rate"], rate), "k"].iloc[0]
        near = g[g["objective"] <= g["objective"].min() * (1 + planning.CHOICE_TOLERANCE)]
        assert near["k"].min() == chosen
        assert g["p_saturated"].between(0, 1).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # P(best) may be low on this small fit
        sched = res.schedule()
    _check_schedule(sched)
    vllm = res.to_vllm()
    assert vllm["num_speculative_tokens_per_batch_size"] == sched[
        ["batch_from", "batch_to", "k"]].to_numpy().tolist()  # fmt: skip
    tail = planning.best_k(model, CONFIG, ks=(0, 2), rates=rates, objective="shortfall")
    assert tail.objective == "shortfall"
    with pytest.raises(ValueError, match="objective"):
        planning.best_k(model, CONFIG, objective="median")


def test_schedule_compares_the_draft_lengths_at_each_running_batch(model):
    """``best_k``'s schedule is the best k with B requests running per engine (a closed loop
    at B): checked against fresh closed-loop predictions at the batches it chose from."""
    res = planning.best_k(model, CONFIG, ks=(0, 1, 3), max_draws=400)
    by = res.by_batch
    assert by["batch_size"].iloc[0] == 1 and (np.diff(by["batch_size"]) > 0).all()
    assert np.allclose(by["batch_size"], np.round(by["batch_size"]))
    # the schedule spans 1 to the largest batch a chosen k sustains on the rate grid
    top = int(np.floor(res.choice["batch_size"].max()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", planning.UncertainScheduleWarning)
        sched = res.schedule()
    _check_schedule(sched)
    assert sched["batch_to"].iloc[-1] == top
    for batch in by["batch_size"].iloc[[0, len(by) // 2, -1]]:
        rows = planning._rows(CONFIG, (0, 1, 3), [batch], load="concurrency")
        lat = model.predict(rows, max_draws=400, random_seed=0).draws["latency"].values
        lat = lat.reshape(-1, 3)
        row = by[by["batch_size"] == batch].iloc[0]
        assert (0, 1, 3)[int(np.argmin(lat.mean(axis=0)))] == row["k"]
        best = np.argmin(lat, axis=1)
        assert row["p_best"] == pytest.approx(np.mean(best == (0, 1, 3).index(row["k"])))
        # and the range holding this batch carries its k
        holder = sched[(sched["batch_from"] <= batch) & (sched["batch_to"] >= batch)]
        assert len(holder) == 1 and holder["k"].iloc[0] == row["k"]
    # an engine's max_num_seqs ends the schedule: it never runs more requests at once
    capped = planning.best_k(model, {**CONFIG, "max_num_seqs": top // 2}, ks=(0, 1, 3),
                             max_draws=400)  # fmt: skip
    assert capped.by_batch["batch_size"].max() == top // 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", planning.UncertainScheduleWarning)
        assert capped.schedule()["batch_to"].iloc[-1] == top // 2


def test_draft_lengths_within_the_tolerance_tie_and_the_shortest_is_chosen():
    """SD, or a longer draft, is chosen only when it pays by more than 1%; saturated loads
    (every objective infinite) stay unchosen."""
    k0 = [1.000, 1.000, 1.000, np.inf]
    k2 = [0.992, 0.950, 0.975, np.inf]
    k1 = [0.995, 0.940, 0.980, np.inf]
    chosen = planning._choose(np.array([k0, k2, k1]), [0, 2, 1])  # ks need not be sorted
    # load 1: SD 0.8% better, a tie: k = 0; load 2: k = 1 (k = 2 is 1.06% slower, not within
    # 1% of it); load 3: k = 2 only 0.5% better than k = 1: k = 1
    assert chosen[:3].tolist() == [0, 2, 2]
    assert not np.isfinite([k0, k2, k1][chosen[3]][3])


def test_a_rare_saturated_draw_does_not_decide_the_risk_neutral_choice():
    """k = 3 faster in 999 of 1,000 draws and saturated in one; k = 0 sustains every draw: the
    mean objective (over the sustaining draws, k admitted up to 1 − quantile saturated)
    chooses k = 3; the expected shortfall, which counts the saturated draw, k = 0."""
    lat = np.column_stack([np.full(1000, 2.0), np.r_[np.full(999, 1.0), np.inf]])  # k 0, 3
    choose = {}
    for name in planning.OBJECTIVES:
        values = [planning._objective(lat[:, [j]], name, 0.9)[1][0] for j in range(2)]
        choose[name] = int(np.argmin(values))
    assert choose == {"mean": 1, "quantile": 1, "shortfall": 0}
    mean, _ = planning._objective(lat, "mean", 0.9)
    assert mean[0] == 2.0 and mean[1] == np.inf  # the expected latency itself is infinite
    # saturated in more than 1 − quantile of the draws: not chosen by the mean objective
    risky = np.r_[np.full(850, 1.0), np.full(150, np.inf)][:, None]
    assert planning._objective(risky, "mean", 0.9)[1][0] == np.inf


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


# ---------------------------------------------------------------- percentile SLOs


def _p_all_hold(model, terms, k, load, value, seed):
    from bayes_sd.slo import statistic_draws

    column = "request_rate" if load == "rate" else "concurrency"
    rows = pd.DataFrame([{**CONFIG, "k": k, column: value}])
    draws = {n: v.values.ravel() for n, v in model.predict(rows, random_seed=seed).draws.items()}
    held = [statistic_draws(draws, t) <= t.threshold_s for t in terms]
    return float(np.mean(np.all(held, axis=0)))


@pytest.mark.parametrize("load", ["rate", "concurrency"])
def test_slo_capacity_holds_every_term_with_the_credibility_asked(model, load):
    from bayes_sd.capacity import UnmeasuredTailWarning, load_grid, mc_margin, slo_capacity
    from bayes_sd.slo import parse_slo

    # thresholds from the model's own light-load predictions, so that they bind inside the grid
    grid = load_grid(model, CONFIG, (0, 2), load=load, points=60)
    column = "request_rate" if load == "rate" else "concurrency"
    mid = pd.DataFrame([{**CONFIG, "k": 0, column: grid[len(grid) // 3]}])
    med = model.predict(mid, random_seed=0).summary.iloc[0]  # its 95th percentiles
    slo = (f"p99_ttft_ms<={med['ttft_p99_hi'] * 1e3:.6g},"
           f"p90_tpot_ms<={med['tpot_p90_hi'] * 1e3:.6g},mean_e2el_s<=100000")  # fmt: skip
    terms = parse_slo(slo)
    # this sweep recorded no percentiles: the TTFT and TPOT terms rest on the prior, and say so
    with pytest.warns(UnmeasuredTailWarning, match="percentile of (TTFT|TPOT)"):
        table = slo_capacity(model, CONFIG, slo, ks=(0, 2), credibility=0.9, load=load, grid=grid)
    assert list(table["k"]) == [0, 2] and (table["load"] == load).all()
    for _, row in table.iterrows():
        assert row["meets"] and row["capacity"] <= row["capacity_median"]
        # its own fresh check holds by two Monte Carlo standard errors (1,000 draws: 0.019) ...
        assert row["credibility_achieved"] >= 0.9 + mc_margin(0.9, 1000)
        # ... so other fresh predictions at the answer hold every term with the credibility
        # asked; the next load of the grid does not, within Monte Carlo error (1,000 draws:
        # 3 SE = 0.028; the answer steps down until fresh draws agree, so the next load may sit
        # near 0.9)
        assert _p_all_hold(model, terms, row["k"], load, row["capacity"], seed=11) >= 0.9
        above = grid[np.searchsorted(grid, row["capacity"]) + 2]
        assert _p_all_hold(model, terms, row["k"], load, above, seed=0) < 0.9 + 0.028
        # the loose mean-E2E term never binds
        assert row["binding"] in (terms[0].label, terms[1].label)
        assert row[f"P({terms[2].label})"] == 1.0


def test_slo_capacity_says_when_no_load_meets_the_slo(model):
    from bayes_sd.capacity import UnmeasuredTailWarning, slo_capacity

    with pytest.warns(UnmeasuredTailWarning):
        table = slo_capacity(model, CONFIG, "p50_ttft_ms<=0.001", ks=(0,))
    row = table.iloc[0]
    assert not row["meets"] and np.isnan(row["capacity"])
    assert row["binding"] == "p50 TTFT ≤ 0.001 ms"


def test_predicted_percentiles_are_ordered_and_scale_their_mean(model):
    rows = pd.DataFrame([{**CONFIG, "k": k, "request_rate": r} for k in (0, 2)
                         for r in (0.5, 2.0)])  # fmt: skip
    draws = model.predict(rows, random_seed=0).draws
    for metric in ("ttft", "tpot", "latency"):
        p50, p90, p99 = (draws[f"{metric}_{q}"].values for q in ("p50", "p90", "p99"))
        assert np.all(p50 > 0) and np.all(p50 <= p90) and np.all(p90 <= p99)
        # this sweep measured no percentile: the median's ratio to the mean keeps its prior
        # (centred within 0.1 of log 1, sd 0.3 at light load)
        log_ratio = np.log(p50 / draws[metric].values)[..., [0, 2]]  # the light loads
        assert abs(np.median(log_ratio)) < 0.3 and 0.1 < np.std(log_ratio) < 1.0


def test_frontier_bands_and_probabilities_follow_the_draws(model, tmp_path):
    from bayes_sd.frontier import frontier

    other = {**CONFIG, "gpu": "H200-SXM-141GB"}  # a GPU type the fit has not seen: wider
    result = frontier(model, {"H100": CONFIG, "H200": other}, ks=(0, 2), load="rate", levels=25)
    table = result.table
    assert set(table["config"]) == {"H100, no SD", "H100, SD k=2", "H200, no SD", "H200, SD k=2"}
    # at each interactivity level the frontier probabilities sum to P(anyone reaches it): at
    # least the best single configuration's P(reach), at most one
    level = table.groupby("interactivity")
    total, reach = level["p_frontier"].sum(), level["p_reach"].max()
    assert np.all(total <= 1 + 1e-12) and np.all(total >= reach - 1e-12)
    assert np.allclose(total.iloc[: len(total) // 2], 1.0)  # the low levels: everyone reaches
    for name, t in table.groupby("config"):
        t = t.dropna(subset=["throughput_median"]).sort_values("interactivity")
        assert len(t) >= 5, name
        # asking for more interactivity never buys throughput; bands hold their median
        assert np.all(np.diff(t["throughput_median"]) <= 1e-9), name
        assert np.all((t["throughput_lo"] <= t["throughput_median"])
                      & (t["throughput_median"] <= t["throughput_hi"])), name  # fmt: skip
    # the median curve of a configuration agrees with its frontier: at the interactivity of a
    # load on the curve, the frontier's throughput is at least that load's
    curve = result.curves[result.curves["config"] == "H100, no SD"].iloc[10]
    at = table[table["config"] == "H100, no SD"]
    row = at.iloc[
        np.searchsorted(at["interactivity"].to_numpy(), curve["interactivity_median"]) - 1
    ]
    assert row["throughput_median"] >= 0.9 * curve["throughput_median"]
    # the unseen GPU's bands are wider than the fitted one's
    width = table.assign(w=table["throughput_hi"] / table["throughput_lo"]).groupby("config")["w"]
    assert width.median()["H200, no SD"] > width.median()["H100, no SD"]
    paths = result.to_files(tmp_path)
    assert [p.name for p in paths] == ["frontier.csv", "frontier_curves.csv", "frontier.json",
                                       "frontier.png"]  # fmt: skip
    back = pd.read_csv(paths[0])
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    assert paths[3].stat().st_size > 20_000


def test_frontier_variants_differing_in_sd_alone_share_one_no_sd_curve(model):
    """``--compare drafter=A,B``: without SD the two variants are one configuration; one
    no-SD curve, not two identical ones that split P(on the frontier) between them."""
    from bayes_sd.frontier import frontier

    other = {**CONFIG, "drafter": "llama-68m"}
    result = frontier(model, {"eagle": CONFIG, "68m": other}, ks=(0, 2), load="rate", levels=12)
    assert set(result.table["config"]) == {"eagle, no SD", "eagle, SD k=2", "68m, SD k=2"}
    assert set(result.curves["config"]) == set(result.table["config"])


def test_goodput_counts_requests_meeting_every_threshold(model):
    from bayes_sd.capacity import UnmeasuredTailWarning, goodput

    rates = [0.2, 1.0, 2.0]
    with pytest.warns(UnmeasuredTailWarning):
        one = goodput(model, CONFIG, "e2el:1000000", rates, ks=(0, 2))  # every request meets
        two = goodput(model, CONFIG, "ttft:300 tpot:30", rates, ks=(0, 2))
    # a threshold no request misses: goodput is the request rate, both bounds
    np.testing.assert_allclose(one["goodput_low"], one["request_rate"], rtol=1e-9)
    np.testing.assert_allclose(one["goodput_high"], one["request_rate"], rtol=1e-9)
    assert list(two["k"]) == [0, 0, 0, 2, 2, 2] and list(two["value"]) == rates * 2
    assert np.all(two["goodput_low"] <= two["goodput_high"] + 1e-12)
    assert np.all(two["goodput_high"] <= two["request_rate"] + 1e-12)
    assert np.all((two["goodput_low_lo"] <= two["goodput_low"])
                  & (two["goodput_low"] <= two["goodput_low_hi"]))  # fmt: skip
    # one term: the bounds agree, and equal the rate times the share within the threshold
    with pytest.warns(UnmeasuredTailWarning):
        single = goodput(model, CONFIG, "tpot:30", [1.0], ks=(0,), load="rate")
    assert single["goodput_low"].iloc[0] == pytest.approx(single["goodput_high"].iloc[0])


def _check_schedule(sched):
    """Integer, contiguous, non-overlapping ranges from batch 1, each with its k and P(best)."""
    assert list(sched.columns) == ["batch_from", "batch_to", "k", "p_best"]
    assert len(sched) and sched["batch_from"].iloc[0] == 1
    for col in ("batch_from", "batch_to", "k"):
        assert all(isinstance(v, int) for v in sched[col].tolist())
    assert (sched["batch_from"] <= sched["batch_to"]).all()
    assert (sched["batch_from"].iloc[1:].to_numpy() == sched["batch_to"].iloc[:-1] + 1).all()
    assert (sched["k"].iloc[1:].to_numpy() != sched["k"].iloc[:-1].to_numpy()).all()
    assert sched["p_best"].between(0, 1).all()


def test_schedule_ranges_are_whole_contiguous_and_stop_at_saturation():
    """From a known choice: boundaries half-way between loads, saturated loads left out, a
    range narrower than one batch size absorbed, a weak choice warned about."""
    choice = pd.DataFrame({
        "rate": [1, 2, 3, 4, 5, 6, 7, 8],
        "k": [5, 5, 3, 3, 1, 0, 0, np.nan],
        "p_best": [0.9, 0.8, 0.7, 0.45, 0.6, 0.9, 0.95, np.nan],
        "batch_size": [0.6, 2.4, 5.2, 9.0, 9.3, 20.5, 41.7, np.nan],
    })  # fmt: skip
    best = planning.BestK(pd.DataFrame(), choice, "mean")
    weak = r"batch 4–9: k = 3 with P\(best\) 0\.45"
    with pytest.warns(planning.UncertainScheduleWarning, match=weak):
        sched = best.schedule()
    _check_schedule(sched)
    # 1–3 at k = 5 (half-way 2.4 → 5.2 is 3.8), k = 3 up to (9.0 + 9.3) / 2; k = 1 (9.3 only)
    # would span 10–14 and stays; k = 0 to the last sustained batch, 41
    assert sched[["batch_from", "batch_to", "k"]].to_numpy().tolist() == [
        [1, 3, 5], [4, 9, 3], [10, 14, 1], [15, 41, 0]]  # fmt: skip
    assert sched["p_best"].tolist() == [0.8, 0.45, 0.6, 0.9]
    assert best.to_vllm()["num_speculative_tokens"] == 5
    # a load whose choice is one point between two equal neighbours, narrower than a batch
    thin = choice.assign(batch_size=[0.6, 2.4, 5.2, 9.0, 9.05, 9.1, 41.7, np.nan],
                         k=[5, 5, 3, 3, 1, 3, 3, np.nan])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sched = planning.BestK(pd.DataFrame(), thin, "mean").schedule()
    _check_schedule(sched)
    assert sched["k"].tolist() == [5, 3]
    assert planning.BestK(pd.DataFrame(), choice.iloc[[7]], "mean").schedule().empty
