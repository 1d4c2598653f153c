"""The bayes-sd command line: demo report, ingest, errors as one line with exit codes."""

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


@pytest.fixture(scope="module")
def demo_fit(tmp_path_factory):
    """The README's main job with a small sampling budget: a real fit of the vLLM sweep."""
    out = tmp_path_factory.mktemp("demo")
    from bayes_sd.model import ConvergenceWarning

    with pytest.warns(ConvergenceWarning):  # 2 x 150 draws: ESS < 400 by design
        assert main(["demo", "--out", str(out), "--draws", "150", "--chains", "2"]) == EXIT_OK
    return out


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
    assert f"| ShareGPT | 4 | {be['break_even_median']:.4g} |" in report
    # and the real crossing near 8 QPS lies inside its 90% interval
    assert be["break_even_lo"] < 8.0 < be["break_even_hi"] + 0.5


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
    args = ["plan", "--model", model, "--ks", "0,4", "--slo", "3s", "--out", str(tmp_path)]
    for c in cfg:
        args += ["--config", c]
    assert main(args) == EXIT_OK
    sustain = pd.read_csv(tmp_path / "sustainable_rate.csv")
    assert list(sustain["k"]) == [0, 4] and (sustain["rate"] > 0).all()
    assert (sustain["p_at_rate"] > 0.9).all()
    assert "Break-even" in (tmp_path / "plan.md").read_text()
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


def test_demo_report_files_and_numbers_match_the_posterior(demo_fit, tmp_path):
    import numpy as np

    folder = demo_fit / "report"
    for rel in ("report.md", "report.html", "latex/tables/coefficients.tex"):
        assert (folder / rel).stat().st_size > 200, rel
    for name in ("latency_vs_rate", "speedup_vs_rate", "normalised_collapse",
                 "best_k_by_load", "posterior_predictive"):  # fmt: skip
        assert (folder / "figures" / f"{name}.png").stat().st_size > 5000
        assert (folder / "latex" / "figures" / f"{name}.pdf").stat().st_size > 1000
    html = (folder / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5  # no MoE target: no coverage figure
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
    # the report command renders a saved model the same way
    out = tmp_path / "rep"
    assert main(["report", "--model", str(demo_fit / "vllm-blog-model.nc"), "--out",
                 str(out)]) == EXIT_OK  # fmt: skip
    again = pd.read_csv(out / "tables" / "coefficients.csv", index_col="parameter")
    pd.testing.assert_frame_equal(again, coefs)


def test_latex_tables_escape_special_characters():
    from bayes_sd.report import _booktabs

    tex = _booktabs(pd.DataFrame({"a_b": ["x&y", "50%"]}), caption="c_1", label="tab:t")
    assert r"a\_b" in tex and r"x\&y" in tex and r"50\%" in tex and r"\caption{c\_1}" in tex


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
    with pytest.raises(SystemExit):
        main([*args, "--adaptation", "full"])
