"""The decisions a report opens with (bayes_sd.decisions) and the report's order.

Mocked sampling (prior draws in place of MCMC): these tests check that each headline number is
the planning function's answer for that configuration, and what the report says around it —
not that the numbers are right (the real-sweep report is checked in tests/test_cli.py).
"""

from functools import partial

import numpy as np
import pandas as pd
import pymc as pm
import pytest
from pymc.testing import mock_sample

from bayes_sd import planning
from bayes_sd.capacity import UnmeasuredTailWarning, slo_capacity
from bayes_sd.decisions import configurations, decide
from bayes_sd.model import ConvergenceWarning, LatencyModel
from bayes_sd.population import simulate_from_model
from bayes_sd.report import build_report

CONFIGS = [  # in the data, the configuration without SD first; the report puts it last
    {"gpu": "H100-SXM-80GB", "target": "llama-3.2-1b", "drafter": None,
     "prefill_len": 256, "decode_len": 512, "sd": []},
    {"gpu": "H200-SXM-141GB", "target": "llama-3.1-8b", "drafter": "eagle3-head-8b",
     "prefill_len": 1024, "decode_len": 256, "sd": [(3, 0.8)]},
    {"gpu": "H100-SXM-80GB", "target": "llama-3.1-8b", "drafter": "eagle3-head-8b",
     "prefill_len": 1024, "decode_len": 256, "sd": [(2, 0.7), (4, 0.8)]},
]  # fmt: skip
SLO = "p99_ttft_ms<=2000,mean_e2el_ms<=20000"


@pytest.fixture(scope="module")
def model():
    sweep, _ = simulate_from_model(CONFIGS, seed=5)
    # the 1B target measured closed loop: requests in flight by Little's law, no rate
    closed = sweep["target"] == "llama-3.2-1b"
    sweep.loc[closed, "concurrency"] = np.maximum(
        1.0, np.round(sweep.loc[closed, "request_rate"] * sweep.loc[closed, "latency_mean_s"])
    )
    sweep.loc[closed, "request_rate"] = np.nan
    sweep.loc[closed, "load_mode"] = "concurrency"
    with pytest.MonkeyPatch.context() as mp:
        stats = {"diverging": lambda size: np.zeros(size, dtype=bool)}
        mp.setattr(pm, "sample", partial(mock_sample, sample_stats=stats))
        m = LatencyModel(sampler_config={"draws": 30, "chains": 2})
        with pytest.warns(ConvergenceWarning):  # prior draws are not a converged posterior
            m.fit(sweep, random_seed=3)
    return m


def test_configurations_are_the_measured_ones(model):
    cs = configurations(model)
    # the decisions that matter first: more draft lengths first, no SD last
    assert [c["ks"] for c in cs] == [[0, 2, 4], [0, 3], [0]]
    assert [c["load"] for c in cs] == ["rate", "rate", "concurrency"]
    # readable names, not pipe-joined keys; the two 8B configurations share one workload
    assert all("|" not in c["name"] for c in cs)
    assert cs[0]["name"].startswith("llama-3.1-8b on 1 × H100-SXM-80GB")
    assert cs[0]["name"].endswith("drafter eagle3-head-8b")
    assert cs[0]["workload"] == cs[1]["workload"] != cs[2]["workload"]
    assert cs[0]["short"] == "1 × H100-SXM-80GB, drafter eagle3-head-8b"
    # a run's measured acceptance is its k's: not carried to the configuration's other ks
    assert not {"acceptance_length", "acceptance_source", "k"} & set(cs[0]["config"])


@pytest.mark.filterwarnings("ignore::bayes_sd.capacity.UnmeasuredTailWarning")
def test_headline_numbers_are_the_planning_functions_answers(model):
    with pytest.warns(UnmeasuredTailWarning):  # no run measured a TTFT percentile
        d = decide(model, slo=SLO, credibility=0.9)
    cs = configurations(model)
    assert list(d.table["configuration"]) == [c["name"] for c in cs]
    for c, (_, row) in zip(cs, d.table.iterrows(), strict=True):
        cap = slo_capacity(model, c["config"], SLO, ks=c["ks"], credibility=0.9, load=c["load"],
                           max_draws=400, random_seed=0)  # fmt: skip
        assert row["load"] == ("req/s" if c["load"] == "rate" else "requests in flight")
        base = cap[cap["k"] == 0].iloc[0]
        np.testing.assert_equal(row["capacity without SD"], base["capacity"])
        met = cap[cap["meets"]]
        if len(met):
            best = met.sort_values(["capacity", "k"], ascending=[False, True]).iloc[0]
            assert row["best k under the SLO"] == best["k"]
            assert row["capacity at best k"] == best["capacity"]
            assert row["binding term"] == best["binding"]
        if len(c["ks"]) > 1:
            k = int(row["break-even k"])
            assert k in c["ks"][1:]
            be = planning.break_even(model, c["config"], k=k, max_draws=400, random_seed=0)
            assert row["break-even rate"] == be.summary()["break_even_median"]
        else:  # no SD measured: no break-even, no best k
            assert np.isnan(row["break-even rate"]) and pd.isna(row["best k by rate"])
    # the capacity table behind the headline: every configuration and k
    assert len(d.capacity) == sum(len(c["ks"]) for c in cs)
    assert set(d.capacity["load"]) == {"rate", "concurrency"}
    # one frontier per workload, each over its configurations' draft lengths
    assert len(d.frontiers) == 2
    eight = next(f for w, f in d.frontiers.items() if w.startswith("llama-3.1-8b"))
    assert eight.table["config"].nunique() == 2 + 3  # H200 (0, 3) and H100 (0, 2, 4)


def test_sentences_say_the_numbers_of_the_table(model):
    with pytest.warns(UnmeasuredTailWarning):
        d = decide(model, slo=SLO, credibility=0.9)
    for text, (_, row) in zip(d.sentences, d.table.iterrows(), strict=True):
        assert text.startswith(f"**{row['configuration']}.**")
        if np.isfinite(row["capacity at best k"]):
            assert f"up to {row['capacity at best k']:.3g} {row['load']}" in text
            assert f"binding term: {row['binding term']}" in text
        else:
            assert "No load meets the SLO" in text
        if np.isfinite(row.get("break-even rate", np.nan)):
            assert f"k = {int(row['break-even k'])}" in text
        if isinstance(row["best k by rate"], str):
            assert row["best k by rate"] in text


def test_without_an_slo_no_capacity_and_the_rest_kept(model):
    d = decide(model, max_configs=1)
    assert d.slo is None and d.capacity.empty
    assert "capacity without SD" not in d.table.columns
    assert len(d.table) == 1 and np.isfinite(d.table["break-even rate"].iloc[0])
    assert d.left_out == [c["name"] for c in configurations(model)[1:]]
    with pytest.raises(ValueError, match="credibility"):
        decide(model, slo="3s", credibility=1.0)
    with pytest.raises(ValueError, match="cannot read the SLO"):
        decide(model, slo="fast please")


def test_report_opens_with_decisions_and_keeps_the_appendix_last(model, tmp_path):
    with pytest.warns(UnmeasuredTailWarning):  # said in the report too, as a note
        pass_through = decide(model, slo=SLO, credibility=0.9)
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    rep = build_report(model, slo=SLO, credibility=0.9)
    # the figures live in the report, not in pyplot (a notebook would show them all, a loop of
    # reports would keep them all)
    assert plt.get_fignums() == before and len(rep.figures) >= 5
    assert [h for h, _ in rep.layout()] == ["Decisions", "Fit", "Appendix"]
    assert rep.sections["Decisions"][0] == "decisions"
    assert rep.sections["Appendix"] == ["coefficients", "diagnostics"]
    assert rep.summary[0].startswith("SLO: p99 TTFT ≤ 2 s and mean E2E ≤ 20 s")
    assert rep.summary[1 : 1 + len(pass_through.sentences)] == pass_through.sentences
    assert any(p.startswith("Note: no training run measured a percentile of TTFT")
               for p in rep.summary)  # fmt: skip
    md = (rep.to_markdown(tmp_path / "md")).read_text()
    order = [md.index(h) for h in ("## Decisions", "## Fit", "## Appendix")]
    assert order == sorted(order) and md.index(pass_through.sentences[0]) < order[1]
    assert "llama-3.1-8b|" not in md and "H100-SXM-80GB|" not in md  # no pipe-joined keys
    fitq = pd.read_csv(tmp_path / "md" / "tables" / "fit_quality.csv", index_col="scope")
    assert all("|" not in s for s in fitq.index)
    # the frontiers' levels are CSV files, their figures in the report
    assert (tmp_path / "md" / "tables" / "frontier_1.csv").stat().st_size > 1000
    assert "figures/frontier_1.png" in md and "figures/frontier_2.png" in md
    html = rep.to_html(tmp_path / "r.html").read_text()
    assert html.index("<h2>Decisions</h2>") < html.index("<h2>Appendix</h2>")
    assert "<strong>llama-3.1-8b on 1 × H100-SXM-80GB" in html
    tex = (rep.to_latex(tmp_path / "tex") / "summary.tex").read_text()
    assert r"\textbf{llama-3.1-8b on 1 × H100-SXM-80GB" in tex and "**" not in tex


def test_names_that_collide_are_made_unique_where_they_name():
    from bayes_sd.decisions import _unique

    w1, w2 = ("t", "d", 1.0, 1.0), ("t", "d", 2.0, 1.0)
    cs = [
        {"name": "A", "short": "1 × H100", "workload": w1, "config": {"source": "lab"}},
        {"name": "A", "short": "1 × H100", "workload": w1, "config": {"source": "cloud"}},
        {"name": "B", "short": "1 × H100", "workload": w2, "config": {"source": "lab"}},
    ]
    _unique(cs)
    assert [c["name"] for c in cs] == ["A (lab, #1)", "A (cloud, #2)", "B"]
    # short names name a configuration within its workload only: B's stays as it was
    assert [c["short"] for c in cs] == ["1 × H100 (lab, #1)", "1 × H100 (cloud, #2)", "1 × H100"]


def test_frontier_legend_moves_under_the_panels_when_crowded(model):
    from bayes_sd.frontier import frontier

    cs = configurations(model)
    two = frontier(model, {cs[1]["short"]: {**cs[1]["config"], "ks": cs[1]["ks"]}},
                   load="rate", max_draws=50)  # fmt: skip
    fig = two.figure(title="few")
    assert fig.axes[0].get_legend() is not None and not fig.legends
    five = frontier(model, {c["short"]: {**c["config"], "ks": c["ks"]} for c in cs[:2]},
                    load="rate", max_draws=50)  # fmt: skip
    fig = five.figure(title="crowded")
    assert fig.axes[0].get_legend() is None and len(fig.legends) == 1
    assert fig.axes[0].get_title() == "crowded"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == list(five.table["config"].unique()) and len(labels) == 5


def test_frontier_sentence_reads_its_own_curves_only():
    """One short name may begin another's ("8 × B200, trt" and "8 × B200, trt, fp8"): the
    sentence of the first must not take the second's curves."""
    from types import SimpleNamespace

    from bayes_sd.decisions import _frontier_text
    from bayes_sd.frontier import curve_label

    rows = []
    for name, p in (("8 × B200, trt", 0.0), ("8 × B200, trt, fp8", 1.0)):
        for level in (10.0, 20.0):
            rows.append({"config": curve_label(name, 0), "interactivity": level, "p_frontier": p})
    f = SimpleNamespace(table=pd.DataFrame(rows))
    assert "no draft length of it is on it" in _frontier_text(f, "8 × B200, trt", [0], True)
    text = _frontier_text(f, "8 × B200, trt, fp8", [0], True)
    assert "no SD from 10 to 20 tok/s per user" in text and "among the configurations" in text


def test_a_report_built_by_hand_keeps_its_summary(tmp_path):
    from bayes_sd.report import Report

    rep = Report("t", tables={"a": pd.DataFrame({"x": [1]})}, summary=["**hello** world"])
    md = rep.to_markdown(tmp_path).read_text()
    assert md.index("**hello** world") < md.index("## More") < md.index("### A")
    assert "<p><strong>hello</strong> world</p>" in rep.to_html(tmp_path / "r.html").read_text()


def test_frontier_marks_the_levels_beyond_the_measured_loads(model):
    from bayes_sd.frontier import frontier

    c = configurations(model)[1]  # open loop: rates
    cfg = {**c["config"], "ks": c["ks"]}
    plain = frontier(model, {"x": cfg}, load="rate", max_draws=50)
    assert not plain.table["extrapolated"].any()
    low = float(np.quantile(plain.curves["load"], 0.3))
    marked = frontier(model, {"x": {**cfg, "measured_to": low}}, load="rate", max_draws=50)
    t = marked.table
    assert t["extrapolated"].any() and not t["extrapolated"].all()
    # heavier loads mean less interactivity: the marked levels are the lowest of each curve
    for _, g in t.groupby("config"):
        far = g["extrapolated"].to_numpy()
        assert (np.diff(far.astype(int)) <= 0).all()
    fig = marked.figure()
    assert any(line.get_linestyle() == "--" for line in fig.axes[0].get_lines())
    # the sentence says so
    from types import SimpleNamespace

    from bayes_sd.decisions import _frontier_text
    from bayes_sd.frontier import curve_label

    rows = [{"config": curve_label("a", 0), "interactivity": u, "p_frontier": 1.0,
             "extrapolated": u < 20} for u in (10.0, 20.0, 40.0)]  # fmt: skip
    text = _frontier_text(SimpleNamespace(table=pd.DataFrame(rows)), "a", [0], False)
    assert "no SD from 10 to 40 tok/s per user (below 20 beyond the measured loads)" in text
