"""Series whose measured latency falls with load (bayes_sd.load_checks): found on real data,
said at ingest and fit, excluded on request."""

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import bayes_sd
from bayes_sd.cli import EXIT_OK, main
from bayes_sd.design import Design
from bayes_sd.load_checks import FALL, LoadLawWarning, exclude_falling, falling_series
from bayes_sd.model import LatencyModel


def test_real_sweeps_flag_only_dynamo_trt_ttft():
    """InferenceX: mean TTFT of Dynamo + TensorRT-LLM falls with load in 8 of its 10 multi-load
    series (to 0.15x); SGLang, TensorRT-LLM, the vLLM blog sweep and the demo stay above 2/3."""
    found = falling_series(Design.from_sweep(bayes_sd.load_example("inferencex")).rows)
    assert set(found["engine"]) == {"dynamo-trt"} and set(found["metric"]) == {"ttft_mean_s"}
    assert len(found) == 8 and (found["multi_load"] == 10).all()
    worst = found.loc[found["ratio"].idxmin()]
    assert worst["ratio"] == pytest.approx(0.313 / 2.153, abs=0.01)
    assert (worst["peak_load"], worst["load"]) == (4.0, 32.0)
    # named as the reports name the configuration (figures.config_name), with its k
    assert worst["name"].startswith("DeepSeek-R1-0528 on 32 × B200, dynamo-trt, fp8")
    assert worst["name"].endswith("random 922/922 tokens, k = 0") and "|" not in worst["name"]
    assert (found["ratio"] < FALL).all() and found["run_ids"].map(len).min() >= 2
    for name in ("vllm-blog-2024", "demo"):
        assert falling_series(Design.from_sweep(bayes_sd.load_example(name)).rows).empty


@pytest.fixture(scope="module")
def blog_with_a_fall():
    """The blog sweep with one series' highest load measured at `factor` of the load below."""
    sweep = bayes_sd.load_example("vllm-blog-2024")
    rows = Design.from_sweep(sweep).rows
    series = rows.groupby("series")["request_rate"].nunique().idxmax()
    runs = rows[rows["series"] == series].sort_values("request_rate")
    lower, top = runs.iloc[-2], runs.iloc[-1]

    def make(factor):
        out = sweep.copy()
        out.loc[out["run_id"] == top["run_id"], "latency_mean_s"] = factor * lower["latency_mean_s"]
        return out

    return make, series, runs, lower, top


def test_a_fall_beyond_two_thirds_is_found_and_noise_is_not(blog_with_a_fall):
    make, series, runs, lower, top = blog_with_a_fall
    found = falling_series(Design.from_sweep(make(0.5)).rows)
    assert len(found) == 1
    f = found.iloc[0]
    assert f["series"] == series and f["metric"] == "latency_mean_s"
    assert f["ratio"] == pytest.approx(0.5) and f["load"] == top["request_rate"]
    assert f["peak_load"] == lower["request_rate"]
    assert sorted(f["run_ids"]) == sorted(runs["run_id"])
    assert falling_series(Design.from_sweep(make(0.8)).rows).empty  # a finite run's scatter


def test_exclude_falling_keeps_the_runs_and_gives_the_reason(blog_with_a_fall):
    make, _, runs, _, _ = blog_with_a_fall
    sweep = make(0.5)
    sweep.loc[sweep["run_id"] == runs["run_id"].iloc[0], "excluded_reason"] = "earlier reason"
    out = exclude_falling(sweep)
    assert len(out) == len(sweep) and sweep["excluded"].fillna(False).eq(False).all()
    hit = out["run_id"].isin(runs["run_id"]).to_numpy()
    assert out.loc[hit, "excluded"].all() and not out.loc[~hit, "excluded"].fillna(False).any()
    reasons = out.loc[hit, "excluded_reason"].tolist()
    assert all("mean E2E falls with load in its series (0.50x" in r for r in reasons)
    assert sum(r.startswith("earlier reason; ") for r in reasons) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LatencyModel().build_model(out)  # nothing left to warn about
    assert len(Design.from_sweep(out).rows) == len(Design.from_sweep(sweep).rows) - hit.sum()


def test_fit_and_ingest_say_so(blog_with_a_fall, tmp_path, capsys):
    make, *_ = blog_with_a_fall
    sweep = make(0.5)
    with pytest.warns(LoadLawWarning, match=r"mean E2E falls with load in 1 of \d multi-load "
                      r"series of the sweep \(down to 0.50x"):  # fmt: skip
        LatencyModel().build_model(sweep)
    path = tmp_path / "sweep.csv"
    sweep.to_csv(path, index=False)
    with pytest.warns(LoadLawWarning, match="--exclude-falling"):
        assert main(["ingest", str(path), "--out", str(tmp_path / "a.csv")]) == EXIT_OK
    # as a shell user sees it: one line on stderr, without the library's source line
    cmd = [
        sys.executable,
        "-m",
        "bayes_sd.cli",
        "ingest",
        str(path),
        "--out",
        str(tmp_path / "c.csv"),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert run.stderr.startswith("bayes-sd: LoadLawWarning: mean E2E falls with load")
    assert len(run.stderr.splitlines()) == 1 and run.stdout.startswith("wrote ")
    out = tmp_path / "b.csv"
    assert main(["ingest", str(path), "--out", str(out), "--exclude-falling"]) == EXIT_OK
    std = capsys.readouterr()
    n = int(np.sum(pd.read_csv(out)["excluded"]))
    assert n >= 2 and f"{n} excluded: latency falls with load" in std.out
    assert "LoadLawWarning" not in std.err


def test_the_report_lists_them(blog_with_a_fall):
    from bayes_sd.report import Report, _data_checks

    make, *_, top = blog_with_a_fall
    model = LatencyModel()
    with pytest.warns(LoadLawWarning):
        model.build_model(make(0.5))
    rep = Report("t")
    assert _data_checks(rep, model) == ["latency_falling_with_load"]
    table = rep.tables["latency_falling_with_load"]
    assert len(table) == 1 and table["metric"].iloc[0] == "mean E2E"
    assert table["ratio"].iloc[0] == 0.5 and table["at higher load"].iloc[0] == top["request_rate"]
    assert "|" not in table.index[0] and table.index.name == "configuration"
    clean = LatencyModel()
    clean.build_model(make(1.0))
    assert _data_checks(Report("t"), clean) == []
