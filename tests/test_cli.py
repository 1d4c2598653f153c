"""The bayes-sd command line: demo report, ingest, errors as one line with exit codes."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest

import bayes_sd
from bayes_sd import summaries
from bayes_sd.cli import EXIT_DATA, EXIT_OK, main


def test_demo_writes_a_report_with_the_real_break_even(tmp_path, capsys):
    assert main(["demo", "--no-fit", "--out", str(tmp_path)]) == EXIT_OK
    report = (tmp_path / "summary.md").read_text()
    fits = pd.read_csv(tmp_path / "series_fits.csv")
    assert len(fits) == 4 and (fits["C1_s"] > 0).all() and (fits["C2_s"] > 0).all()
    pairs = summaries.break_even_table(fits)
    share = pairs[pairs["dataset"] == "ShareGPT"].iloc[0]
    # The blog: SD 1.5x faster at QPS 1 and slower past about 8 QPS on ShareGPT
    assert 1.4 < share["speedup_at_zero_load"] < 1.8
    assert 6.0 < share["break_even_rate"] < 9.5
    assert f"{share['break_even_rate']:.4g}" in report
    steps = pd.read_csv(tmp_path / "step_cost_fits.csv")
    assert len(steps) == 16 and (steps["a_ms"] > 0).all()
    dense_8b = steps[(steps["model"] == "llama-3.1-8b") & (steps["gpu"].str.startswith("H100"))]
    assert dense_8b["r2"].iloc[0] > 0.95
    assert "break-even" in capsys.readouterr().err


def test_ingest_to_csv_round_trips(fixtures, tmp_path, capsys):
    out = tmp_path / "sweep.csv"
    assert main(["ingest", str(fixtures / "vllm_eagle"), str(fixtures / "guidellm"),
                 "--out", str(out)]) == EXIT_OK  # fmt: skip
    assert "wrote" in capsys.readouterr().out
    direct = bayes_sd.read_sweep([fixtures / "vllm_eagle", fixtures / "guidellm"])
    pd.testing.assert_frame_equal(bayes_sd.read_sweep(out), direct)


def test_ingest_with_meta_and_data_error(fixtures, tmp_path, capsys):
    src = fixtures / "vllm_base" / "legacy-2.0qps.json"
    (tmp_path / "r.json").write_text(src.read_text())
    code = main(["ingest", str(tmp_path / "r.json"), "--out", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert code == EXIT_DATA
    assert err.startswith("bayes-sd: error:") and "missing 'gpu'" in err
    assert "Traceback" not in err
    code = main(["ingest", str(tmp_path / "r.json"), "--out", str(tmp_path / "o.csv"),
                 "--meta", "gpu=H100", "--meta", "k=0", "--meta", "num_gpus=1"])  # fmt: skip
    assert code == EXIT_OK and (tmp_path / "o.csv").is_file()
    assert main(["ingest", str(tmp_path / "r.json"), "--out", "x.csv", "--meta", "gpu"]) == 2


def test_help_and_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


# the tests of the demo fit run in one pytest-xdist worker: one fit (about a minute), not two
ONE_DEMO_FIT = pytest.mark.xdist_group("demo_fit")


@pytest.fixture(scope="module")
def demo_fit(tmp_path_factory):
    """The README's main job with a small sampling budget: a real fit of the vLLM sweep."""
    out = tmp_path_factory.mktemp("demo")
    from bayes_sd.model import ConvergenceWarning

    with pytest.warns(ConvergenceWarning):  # 2 x 150 draws: ESS < 400 by design
        assert main(["demo", "--out", str(out), "--draws", "150", "--chains", "2"]) == EXIT_OK
    return out


@ONE_DEMO_FIT
def test_demo_bayesian_section_matches_the_saved_posterior(demo_fit):
    from bayes_sd import planning

    report = (demo_fit / "summary.md").read_text()
    assert "## Bayesian model of the real sweep" in report
    model = bayes_sd.LatencyModel.load(demo_fit / "vllm-blog-model.nc")
    cfg = {
        "gpu": "H100-SXM-80GB",
        "num_gpus": 4,
        "target": "meta-llama/Meta-Llama-3-70B-Instruct",
        "dataset": "ShareGPT",
        "prefill_len": 215,
        "decode_len": 198,
        "drafter": "turboderp/Qwama-0.5B-Instruct",
        "method": "draft_model",
    }
    be = planning.break_even(model, cfg, k=4).summary()
    # the number in the report is the loaded posterior's (same draws, same seed)
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in report.splitlines()
             if line.startswith("|")]  # fmt: skip
    assert ["ShareGPT", "4", f"{be['break_even_median']:.4g}"] in [c[:3] for c in cells]
    # and the real crossing near 8 QPS lies inside its 90% interval
    assert be["break_even_lo"] < 8.0 < be["break_even_hi"] + 0.5


@ONE_DEMO_FIT
def test_demo_shows_ttft_tpot_and_e2e_of_a_real_engine_with_bands(demo_fit):
    """The per-phase section: every InferenceX run of the demo's engine with its measured
    TTFT, TPOT and E2E beside the saved model's posterior median and 90% interval, and the
    figure of the three against load."""
    from PIL import Image

    from bayes_sd import demo

    report = (demo_fit / "summary.md").read_text()
    assert "## TTFT, TPOT and E2E of a real engine against load" in report
    assert "(real-engine-phases.png)" in report
    runs = pd.read_csv(demo_fit / "real-engine-phases.csv")
    sweep = bayes_sd.load_example("inferencex")
    part = sweep[(sweep["gpu"] == demo.REAL_ENGINE["gpu"])
                 & (sweep["engine"] == demo.REAL_ENGINE["engine"])
                 & ~sweep["excluded"].astype(bool)]  # fmt: skip
    assert len(runs) == 3 * len(part) and set(runs["metric"]) == {"TTFT", "TPOT", "E2E"}
    assert (runs["lo_s"] < runs["median_s"]).all() and (runs["median_s"] < runs["hi_s"]).all()
    inside = (runs["lo_s"] <= runs["measured_s"]) & (runs["measured_s"] <= runs["hi_s"])
    assert (inside == runs["inside"]).all() and inside.mean() > 0.8
    # the medians are the saved model's (same draws, same seed)
    model = bayes_sd.LatencyModel.load(demo_fit / "real-engine-model.nc")
    query = part.drop(columns=[c for c in part.columns if c.endswith("_mean_s")])
    pred = model.predict(query.reset_index(drop=True), random_seed=0).summary
    tpot = runs[runs["metric"] == "TPOT"]["median_s"].to_numpy()
    np.testing.assert_allclose(tpot, pred["tpot_median"].to_numpy(), rtol=1e-9)
    e2e = runs[runs["metric"] == "E2E"]
    measured = part["latency_mean_s"].to_numpy(dtype=float)
    np.testing.assert_allclose(e2e["measured_s"].to_numpy(), measured, rtol=1e-12)
    with Image.open(demo_fit / "real-engine-phases.png") as img:  # three panels per series
        assert img.width > 1000 and img.height > 400


@ONE_DEMO_FIT
def test_plan_and_predict_from_the_command_line(demo_fit, tmp_path, capsys):
    model = str(demo_fit / "vllm-blog-model.nc")
    cfg = [
        "gpu=H100-SXM-80GB",
        "num_gpus=4",
        "target=meta-llama/Meta-Llama-3-70B-Instruct",
        "dataset=ShareGPT",
        "prefill_len=215",
        "decode_len=198",
        "drafter=turboderp/Qwama-0.5B-Instruct",
        "method=draft_model",
    ]
    # the blog sweep recorded means only: the p90 term rests on the tail law's prior (warned)
    slo = "p90_e2el_s<=30,mean_e2el_ms<=4000"
    args = ["plan", "--model", model, "--ks", "0,4", "--slo", slo, "--load", "both",
            "--credibility", "0.9", "--goodput-at", "2,6", "--out", str(tmp_path),
            "--schedule-json", str(tmp_path / "spec.json")]  # fmt: skip
    for c in cfg:
        args += ["--config", c]
    with pytest.warns(UserWarning, match="no training run measured a percentile of E2E"):
        assert main(args) == EXIT_OK
    # vLLM's speculative-config fields: whole, contiguous ranges from batch 1, one per line
    text = (tmp_path / "spec.json").read_text()
    spec = json.loads(text)
    ranges = spec["num_speculative_tokens_per_batch_size"]
    assert ranges[0][0] == 1 and all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges))
    assert all(f"[{lo}, {hi}, {k}]" in text for lo, hi, k in ranges)
    assert spec["num_speculative_tokens"] == max(k for *_, k in ranges)
    # the engine's max_num_seqs (advertised by --config's help) ends the schedule
    assert ranges[-1][1] > 12
    capped = tmp_path / "capped.json"
    at = args.index("--schedule-json")
    with pytest.warns(UserWarning, match="no training run measured a percentile of E2E"):
        assert main([*args[:at], "--schedule-json", str(capped), *args[at + 2:],
                     "--config", "max_num_seqs=12"]) == EXIT_OK  # fmt: skip
    assert json.loads(capped.read_text())["num_speculative_tokens_per_batch_size"][-1][1] == 12
    for cap in ("0", "0.5"):  # not a cap (0 was taken as "none given", 0.5 dropped the ranges)
        assert main([*args, "--config", f"max_num_seqs={cap}"]) == EXIT_DATA
        assert "max_num_seqs must be a whole number ≥ 1" in capsys.readouterr().err
    capacity = pd.read_csv(tmp_path / "capacity.csv")
    assert list(capacity["k"]) == [0, 4, 0, 4]
    assert list(capacity["load"]) == ["rate", "rate", "concurrency", "concurrency"]
    assert capacity["meets"].all() and (capacity["capacity"] > 0).all()
    assert (capacity["credibility_achieved"] >= 0.9).all()
    assert set(capacity["binding"]) <= {"p90 E2E ≤ 30 s", "mean E2E ≤ 4 s",
                                        "none up to the largest load searched"}  # fmt: skip
    plan = (tmp_path / "plan.md").read_text()
    assert "Break-even" in plan and "SLO: p90 E2E ≤ 30 s and mean E2E ≤ 4 s" in plan
    assert "no fitted system" not in plan and "has not seen drafter" not in plan  # the fitted one
    assert "* SD k=4: up to" in plan and "## Goodput at the given rates" in plan
    good = pd.read_csv(tmp_path / "goodput.csv")
    assert list(good["value"]) == [2.0, 6.0, 2.0, 6.0]
    assert (good["goodput_low"] <= good["goodput_high"] + 1e-12).all()
    assert (good["goodput_high"] <= good["request_rate"] + 1e-12).all()
    rows = tmp_path / "rows.csv"
    pd.DataFrame(
        [dict(c.split("=", 1) for c in cfg) | {"k": 4, "request_rate": r} for r in (1, 8)]
    ).to_csv(rows, index=False)
    assert main(["predict", "--model", model, "--rows", str(rows), "--out",
                 str(tmp_path / "p.csv")]) == EXIT_OK  # fmt: skip
    pred = pd.read_csv(tmp_path / "p.csv")
    assert pred["latency_median"].iloc[0] < pred["latency_median"].iloc[1]
    # bad input: one line, exit 2
    assert main(["plan", "--model", model, "--config", "gpu=H100-SXM-80GB"]) == EXIT_DATA
    assert "needs target" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path / "none.nc"), "--rows", str(rows),
                 "--out", str(tmp_path / "x.csv")]) == EXIT_DATA  # fmt: skip
    assert main(["fit", "--out", str(tmp_path / "m.nc")]) == EXIT_DATA
    flags = [x for c in cfg for x in ("--config", c)]
    assert main(["plan", "--model", model, "--slo", "fast", *flags]) == EXIT_DATA
    assert main(["plan", "--model", model, "--slo", "p99_itl_ms<=5", *flags]) == EXIT_DATA
    assert "p99_itl_ms<=5" in capsys.readouterr().err


@ONE_DEMO_FIT
def test_frontier_from_the_command_line(demo_fit, tmp_path, capsys):
    model = str(demo_fit / "vllm-blog-model.nc")
    cfg = ["gpu=H100-SXM-80GB", "num_gpus=4", "target=meta-llama/Meta-Llama-3-70B-Instruct",
           "dataset=ShareGPT", "prefill_len=215", "decode_len=198",
           "drafter=turboderp/Qwama-0.5B-Instruct", "method=draft_model"]  # fmt: skip
    flags = [x for c in cfg for x in ("--config", c)]
    args = ["frontier", "--model", model, *flags, "--ks", "0,4", "--load", "rate",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == EXIT_OK
    table = pd.read_csv(tmp_path / "frontier.csv")
    name = "Meta-Llama-3-70B-Instruct"
    assert set(table["config"]) == {f"{name}, no SD", f"{name}, SD k=4"}
    assert table.groupby("interactivity")["p_frontier"].sum().max() <= 1 + 1e-9
    assert (tmp_path / "frontier.png").stat().st_size > 20_000
    assert "p_frontier" in capsys.readouterr().out
    # variants: the two datasets of the sweep without SD (the draft model ran on ShareGPT only)
    args = ["frontier", "--model", model, *flags, "--load", "rate", "--compare",
            "dataset=ShareGPT,CNN", "--out", str(tmp_path / "datasets")]  # fmt: skip
    assert main(args) == EXIT_OK
    table = pd.read_csv(tmp_path / "datasets" / "frontier.csv")
    assert set(table["config"]) == {"ShareGPT, no SD", "CNN, no SD"}
    bad = ["frontier", "--model", model, *flags, "--compare", "gpu", "--out", str(tmp_path)]
    assert main(bad) == EXIT_DATA
    assert "--compare expects KEY=V1,V2" in capsys.readouterr().err


@ONE_DEMO_FIT
def test_bad_planning_arguments_are_one_line_and_exit_2(demo_fit, tmp_path, capsys):
    model = str(demo_fit / "vllm-blog-model.nc")
    cfg = ["gpu=H100-SXM-80GB", "num_gpus=4", "target=meta-llama/Meta-Llama-3-70B-Instruct",
           "dataset=ShareGPT", "prefill_len=215", "decode_len=198"]  # fmt: skip
    flags = [x for c in cfg for x in ("--config", c)]
    cases = {
        ("--config", "colour=blue"): "--config colour: unknown key",
        ("--config", "tp=1"): "--config tp: unknown key",
        ("--config", "num_gpus=0"): "num_gpus must be a whole number ≥ 1",
        ("--config", "prefill_len=-100"): "prefill_len must be a positive number of tokens",
        ("--ks", "0,1000000"): "--ks expects draft lengths from 0 to 64",
        ("--slo", "nan"): "cannot read the SLO 'nan'",
        ("--slo", "p99_ttft_ms<=nan"): "the threshold must be a positive finite duration",
        ("--credibility", "1.5"): "--credibility must be between 0 and 1",
    }
    for extra, message in cases.items():
        args = ["plan", "--model", model, *flags, "--ks", "0", *extra]
        assert main(args) == EXIT_DATA, extra
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (extra, err)
    rows = tmp_path / "rows.csv"
    pd.DataFrame([dict(c.split("=", 1) for c in cfg) | {"k": 0, "request_rate": 1.0}]).to_csv(
        rows, index=False
    )
    for interval in ("90", "2", "0"):
        args = ["predict", "--model", model, "--rows", str(rows), "--interval", interval,
                "--out", str(tmp_path / "p.csv")]  # fmt: skip
        assert main(args) == EXIT_DATA
        assert "interval must be a probability in (0, 1)" in capsys.readouterr().err
    # an SLO no load meets is said in words, not as a rate of 0
    args = ["plan", "--model", model, *flags, "--ks", "0", "--slo", "mean_e2el_ms<=1"]
    assert main(args) == EXIT_OK
    assert "without SD: no rate searched meets the SLO" in capsys.readouterr().out


@ONE_DEMO_FIT
def test_demo_report_files_and_numbers_match_the_posterior(demo_fit, tmp_path, capsys):
    import numpy as np

    from bayes_sd import planning

    folder = demo_fit / "report"
    for rel in ("report.md", "report.html", "latex/tables/coefficients.tex"):
        assert (folder / rel).stat().st_size > 200, rel
    for name in ("latency_vs_rate", "speedup_vs_rate", "normalised_collapse",
                 "best_k_by_load", "posterior_predictive"):  # fmt: skip
        assert (folder / "figures" / f"{name}.png").stat().st_size > 5000
        assert (folder / "latex" / "figures" / f"{name}.pdf").stat().st_size > 1000
    html = (folder / "report.html").read_text()
    # two frontiers (one per workload) and five more; no MoE target: no coverage figure
    assert html.count("data:image/png;base64,") == 7
    tex = (folder / "latex" / "tables" / "coefficients.tex").read_text()
    assert r"\toprule" in tex and r"intercept[c1v]" in tex.replace(r"\_", "_")
    # key numbers in the tables are the posterior's
    model = bayes_sd.LatencyModel.load(demo_fit / "vllm-blog-model.nc")
    post = model.idata["posterior"].dataset
    coefs = pd.read_csv(folder / "tables" / "coefficients.csv", index_col="parameter")
    for c in ("c1v", "c2v", "c1d"):
        want = float(np.median(post["intercept"].sel(coef=c).values))
        assert coefs.loc[f"intercept[{c}]", "median"] == pytest.approx(want, rel=1e-9)
    fitq = pd.read_csv(folder / "tables" / "fit_quality.csv", index_col="scope")
    assert fitq.loc["all runs", "runs"] == 18
    assert fitq.loc["all runs", "r2_log_latency"] > 0.9  # the real sweep is well described
    assert 0.7 <= fitq.loc["all runs", "coverage"] <= 1.0
    # the report opens with the decisions under the demo's SLO (mean E2E ≤ 3 s): capacity,
    # break-even, best k — the numbers of the planning functions on the saved posterior
    md = (folder / "report.md").read_text()
    assert md.index("## Decisions") < md.index("## Fit") < md.index("## Appendix")
    assert md.index("**Meta-Llama-3-70B-Instruct on 4 × H100-SXM-80GB, ShareGPT") < md.index(
        "### Coefficients"
    )
    assert "vllm-blog-2024|" not in md.replace("\\|", "|")  # no pipe-joined keys anywhere
    dec = pd.read_csv(folder / "tables" / "decisions.csv", index_col="configuration")
    assert len(dec) == 2 and set(dec["break-even k"]) == {4}
    from bayes_sd.capacity import slo_capacity
    from bayes_sd.decisions import configurations

    share = next(c for c in configurations(model) if "ShareGPT" in c["name"])
    cap = slo_capacity(model, share["config"], "3s", ks=share["ks"], max_draws=400)
    row = dec.loc[share["name"]]
    assert row["capacity without SD"] == pytest.approx(cap["capacity"].iloc[0], rel=1e-9)
    be = planning.break_even(model, share["config"], k=4, max_draws=400).summary()
    assert row["break-even rate"] == pytest.approx(be["break_even_median"], rel=1e-9)
    assert row["binding term"] == "mean E2E ≤ 3 s"
    # the report command renders a saved model the same way; --slo is read before the model
    out = tmp_path / "rep"
    assert main(["report", "--model", str(demo_fit / "vllm-blog-model.nc"), "--out",
                 str(out)]) == EXIT_OK  # fmt: skip
    again = pd.read_csv(out / "tables" / "coefficients.csv", index_col="parameter")
    pd.testing.assert_frame_equal(again, coefs)
    assert "No SLO given, so no capacity" in (out / "report.md").read_text()
    assert not (out / "tables" / "capacity.csv").exists()
    capsys.readouterr()
    assert main(["report", "--model", "missing.nc", "--out", str(out), "--slo", "fast"]) == 2
    assert "cannot read the SLO 'fast'" in capsys.readouterr().err
    assert main(["report", "--model", "missing.nc", "--out", str(out), "--max-configs", "0"]) == 2
    assert "--max-configs must be at least 1" in capsys.readouterr().err


def test_latex_tables_escape_special_characters():
    from bayes_sd.report import _booktabs

    tex = _booktabs(pd.DataFrame({"a_b": ["x&y", "50%", "a|b"]}), caption="c_1", label="tab:t")
    assert r"a\_b" in tex and r"x\&y" in tex and r"50\%" in tex and r"\caption{c\_1}" in tex
    assert r"a\textbar{}b" in tex and "|" not in tex  # a raw | is a column rule in LaTeX
    # wide tables (the coefficients: 604 pt) are scaled to the column
    assert r"\resizebox{\linewidth}{!}{%" in tex and r"\end{tabular}}" in tex
    assert r"\toprule" in tex and r"\begin{table}[t]" in tex  # Styler.to_latex's booktabs


def test_markdown_tables_escape_pipes_and_blank_missing_values():
    from bayes_sd.report import markdown_table

    md = markdown_table(pd.DataFrame({"a|b": ["x", "y|z"], "v": [1.23456789, np.nan]}))
    header, rule, first, second = md.strip().splitlines()
    assert [c.strip() for c in header.strip("|").split(" | ")] == [r"a\|b", "v"]
    assert set(rule) <= set("|:-") and "1.235" in first and "nan" not in md
    assert r"y\|z" in second and second.count(" | ") == 1  # two cells, the pipe escaped
    assert markdown_table(pd.DataFrame()) == "_(none)_\n"


def test_fit_passes_the_sampler_options(tmp_path, monkeypatch):
    """``bayes-sd fit --sampler/--adaptation`` reach the model's sampler configuration (the
    fit itself is stopped: main reports the exception as one line)."""
    from bayes_sd.model import LatencyModel

    class Stop(Exception):
        pass

    seen = {}

    def fit(self, sweep, **kwargs):
        seen.update(self.sampler_config)
        raise Stop

    monkeypatch.setattr(LatencyModel, "fit", fit)
    args = ["fit", "--example", "vllm-blog-2024", "--out", str(tmp_path / "m.nc"), "--quiet"]
    assert main([*args, "--adaptation", "diag", "--draws", "50"]) != EXIT_OK  # stopped
    assert seen["adaptation"] == "diag" and seen["draws"] == 50
    assert main(args) != EXIT_OK
    assert seen["adaptation"] == "auto" and seen["nuts_sampler"] == "nutpie"
    assert seen["target_accept"] == "auto"  # resolved by the residuals' form in fit
    assert main([*args, "--target-accept", "0.95"]) != EXIT_OK
    assert seen["target_accept"] == 0.95
    assert main([*args, "--target-accept", "1.5"]) == 2  # one line, exit 2, before any fit
    with pytest.raises(SystemExit):  # argparse: not a number or auto
        main([*args, "--target-accept", "high"])
    with pytest.raises(SystemExit):
        main([*args, "--adaptation", "full"])


def test_fit_progress_goes_to_stderr_and_results_to_stdout(tmp_path, monkeypatch, capsys):
    """The sampler's progress (PyMC draws its bar on stdout) is redirected to stderr during
    ``bayes-sd fit``: a script reading stdout gets the results only."""
    from bayes_sd.model import LatencyModel

    class Stop(Exception):
        pass

    def fit(self, sweep, **kwargs):
        print("Sampling 4 chains: 50% | 1000/2000 draws")  # as the sampler's bar would
        raise Stop

    monkeypatch.setattr(LatencyModel, "fit", fit)
    capsys.readouterr()
    assert main(["fit", "--example", "vllm-blog-2024", "--out", str(tmp_path / "m.nc")]) != 0
    out, err = capsys.readouterr()
    assert "Sampling 4 chains" in err and "Sampling" not in out
    print("after the fit")  # stdout is stdout again
    assert capsys.readouterr().out == "after the fit\n"


def test_plan_pins_the_break_even_of_the_draft_length_it_would_run():
    """``plan``'s next measurement targets the SD k chosen at most rates, not the shortest."""
    from bayes_sd.cli_plan import next_k
    from bayes_sd.planning import BestK

    choice = pd.DataFrame({"rate": [1, 2, 3, 4, 5], "k": [3, 3, 3, 0, np.nan]})
    assert next_k(BestK(pd.DataFrame(), choice, "mean"), [1, 3, 5]) == 3
    none = choice.assign(k=[0, 0, 0, 0, np.nan])  # SD chosen nowhere: the shortest asked
    assert next_k(BestK(pd.DataFrame(), none, "mean"), [1, 3, 5]) == 1


def test_every_option_of_every_command_has_help():
    """``bayes-sd <command> --help`` explains each option (issue 20: help for every option)."""
    import argparse

    from bayes_sd.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {action.option_strings[-1]}"
               for name, sub in commands.choices.items() for action in sub._actions
               if action.option_strings and not action.help]  # fmt: skip
    assert len(commands.choices) >= 9 and missing == []
    # and an option with a default says it
    unsaid = [f"{name} {action.option_strings[-1]}"
              for name, sub in commands.choices.items() for action in sub._actions
              if action.option_strings and action.default not in (None, False, [], "==SUPPRESS==")
              and "default" not in action.help]  # fmt: skip
    assert unsaid == []


def test_argument_errors_come_before_the_heavy_imports():
    """A bad argument or a missing model file fails without importing PyMC (seconds)."""
    import subprocess
    import sys

    code = (
        "import sys; from bayes_sd.cli import main\n"
        "a = main(['plan', '--model', 'missing.nc', '--config', 'colour=blue'])\n"
        "b = main(['plan', '--model', 'missing.nc', '--config', 'gpu=H100', '--config', "
        "'target=t', '--config', 'prefill_len=1', '--config', 'decode_len=1', '--ks', '0'])\n"
        "c = main(['frontier', '--model', 'missing.nc', '--out', 'x', '--config', 'gpu=H100'])\n"
        "d = main(['fit', 'missing.csv', '--out', 'm.nc'])\n"
        "print(a, b, c, d, 'pymc' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "2", "2", "2", "False"], out.stderr
    assert "no such model file" in out.stderr and "unknown key" in out.stderr
    # help loads neither pandas nor PyMC (0.1 s; it was 0.9 s with pandas)
    code = (
        "import sys; from bayes_sd.cli import main\n"
        "try:\n    main(['plan', '--help'])\nexcept SystemExit as e:\n    print(e.code)\n"
        "print('pandas' in sys.modules, 'pymc' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-3:] == ["0", "False", "False"], out.stderr
