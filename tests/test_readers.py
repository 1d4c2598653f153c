"""Readers on realistic fixtures of every format, and round trips through the tidy table."""

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

import bayes_sd
from bayes_sd import DataError, read_sweep, write_sweep


def test_vllm_current_json(fixtures, expected):
    path = fixtures / "vllm_eagle" / "eagle3-4.0qps-Llama-3.1-8B-Instruct-20261101-101500.json"
    t = read_sweep(path)
    assert len(t) == 1
    row = t.iloc[0]
    exp = expected["vllm_current"]
    assert row["latency_mean_s"] == pytest.approx(exp["latency_mean_s"], rel=1e-9)
    assert row["acceptance_length"] == pytest.approx(exp["acceptance_length"])
    assert row["acceptance_source"] == "server"
    assert row["k"] == 3 and row["method"] == "eagle3"  # from the sidecar's speculative_config
    assert row["drafter"] == "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B"
    assert row["drafter_params"] == pytest.approx(480_247_808)  # registry alias
    assert row["gpu"] == "H100-SXM-80GB" and row["num_gpus"] == 1
    assert row["target_params"] == pytest.approx(8_029_995_008)
    assert row["load_mode"] == "rate" and row["request_rate"] == 4.0
    assert row["prefill_len"] == 512 and row["decode_len"] == 256
    assert row["latency_p99_s"] > row["latency_p50_s"] > 0
    assert 0.8 < row["latency_growth"] < 1.25 and not row["saturated"]


def test_vllm_jsonl_append_result(fixtures, expected):
    t = read_sweep(fixtures / "vllm_eagle" / "appended.jsonl")
    assert list(t["record"]) == ["line 1", "line 2", "line 3"]
    np.testing.assert_allclose(t["latency_mean_s"], expected["vllm_jsonl"]["latency_mean_s"])
    np.testing.assert_allclose(t["request_rate"], expected["vllm_jsonl"]["rates"])
    assert t["run_id"].is_unique


def test_vllm_directory_skips_pytorch_companion_and_sidecar(fixtures):
    t = read_sweep(fixtures / "vllm_eagle")
    assert len(t) == 4
    assert not t["file"].str.endswith(".pytorch.json").any()


def test_vllm_percentiles_from_latencies_when_summary_missing(fixtures, expected):
    t = read_sweep(fixtures / "vllm_base" / "base-inf-concurrency16.json")
    row = t.iloc[0]
    exp = expected["vllm_no_e2el"]
    assert row["latency_source"] == "latencies"
    assert row["latency_mean_s"] == pytest.approx(exp["latency_mean_s"])
    assert row["latency_p90_s"] == pytest.approx(exp["latency_p90_s"])
    assert row["load_mode"] == "concurrency" and row["concurrency"] == 16
    assert row["k"] == 0 and row["method"] == "none" and row["acceptance_length"] == 1


def test_vllm_legacy_reconstructs_latency_from_ttft_and_itl(fixtures, expected):
    t = read_sweep(fixtures / "vllm_base" / "legacy-2.0qps.json")
    row = t.iloc[0]
    assert row["latency_source"] == "ttft+itl"
    assert row["latency_mean_s"] == pytest.approx(expected["vllm_legacy"]["latency_mean_s"])
    assert row["n_failed"] == 0  # legacy: num_prompts − completed


def test_guidellm_v2_sweep(fixtures, expected):
    t = read_sweep(fixtures / "guidellm" / "benchmarks.json")
    assert len(t) == 5
    np.testing.assert_allclose(t["latency_mean_s"], expected["guidellm_v2"]["latency_mean_s"])
    assert list(t["load_mode"]) == expected["guidellm_v2"]["modes"]
    assert t.loc[0, "concurrency"] == 1  # synchronous
    assert t.loc[1, "saturated"] and "throughput" in t.loc[1, "saturation_reason"]
    assert list(t.loc[2:, "request_rate"]) == [2.0, 5.0, 8.0]
    assert t["target"].eq("meta-llama/Llama-3.1-8B-Instruct").all()
    assert t["gpu"].eq("H200-SXM-141GB").all() and t["source"].eq("guidellm").all()
    # GuideLLM's inter-token latency is vLLM's TPOT (not its time_per_output_token_ms)
    assert (t["tpot_mean_s"] < t["latency_mean_s"] / 255).all()


def test_guidellm_v1_yaml_with_file_sidecar(fixtures, expected):
    t = read_sweep(fixtures / "guidellm" / "v1" / "benchmarks.yaml")
    np.testing.assert_allclose(t["latency_mean_s"], expected["guidellm_v1"]["latency_mean_s"])
    assert t["k"].eq(2).all() and t["method"].eq("draft_model").all()
    assert t["drafter_params"].eq(1_498_415_104).all()
    np.testing.assert_allclose(
        t["acceptance_length"], expected["guidellm_v1"]["acceptance_length"], rtol=1e-9
    )
    assert t["acceptance_source"].eq("client_stream").all()


def test_all_fixtures_together(fixtures):
    paths = [fixtures / "vllm_eagle", fixtures / "vllm_base", fixtures / "guidellm"]
    with pytest.warns(UserWarning, match="'vllm_eagle' holds SD runs without a baseline"):
        t = read_sweep(paths)  # folders given one by one: one source each, and said
    assert len(t) == 4 + 2 + 5 + 2
    assert t["run_id"].is_unique
    assert list(t.columns[: len(bayes_sd.SWEEP_COLUMNS)]) == list(bayes_sd.SWEEP_COLUMNS)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tidy_round_trip_is_exact(fixtures, tmp_path, suffix):
    paths = [fixtures / "vllm_eagle", fixtures / "vllm_base", fixtures / "guidellm"]
    with pytest.warns(UserWarning, match="without a baseline"):
        t = read_sweep(paths)
    path = write_sweep(t, tmp_path / f"sweep{suffix}")
    with pytest.warns(UserWarning, match="without a baseline"):
        back = read_sweep(path)
    pd.testing.assert_frame_equal(back, t)


def test_metadata_from_keywords_and_conflicts(fixtures, tmp_path):
    src = fixtures / "vllm_base" / "legacy-2.0qps.json"
    dst = tmp_path / "legacy.json"
    shutil.copy(src, dst)
    with pytest.raises(DataError, match="missing 'gpu'") as err:
        read_sweep(dst)
    assert err.value.field == "gpu" and err.value.file == str(dst)
    t = read_sweep(dst, gpu="4xH100", k=0)
    assert t.loc[0, "gpu"] == "H100" and t.loc[0, "num_gpus"] == 4
    (tmp_path / "bayes_sd.yaml").write_text("gpu: H200\n")
    with pytest.raises(DataError, match="conflicting values for 'gpu'"):
        read_sweep(dst, gpu="H100", k=0, num_gpus=1)
    with pytest.raises(DataError, match="unknown metadata key"):
        read_sweep(dst, gpu="H200", k=0, colour="blue")


def test_assumed_defaults_warn_once(fixtures, tmp_path):
    shutil.copy(fixtures / "vllm_base" / "legacy-2.0qps.json", tmp_path / "a.json")
    with pytest.warns(UserWarning, match="num_gpus=1 for 1 run"):
        read_sweep(tmp_path / "a.json", gpu="H100", k=0)


def test_unknown_model_needs_sizes(fixtures, tmp_path):
    obj = (fixtures / "vllm_base" / "legacy-2.0qps.json").read_text()
    (tmp_path / "x.json").write_text(obj.replace("meta-llama/Llama-3.1-8B-Instruct", "acme/Z-9"))
    with pytest.raises(DataError, match="not in the registry"):
        read_sweep(tmp_path / "x.json", gpu="H100", k=0, num_gpus=1)
    t = read_sweep(tmp_path / "x.json", gpu="H100", k=0, num_gpus=1, target_params=9e9)
    assert t.loc[0, "target_active_params"] == 9e9


def test_ttft_tpot_fallback_warns(fixtures, tmp_path):
    import json

    obj = json.loads((fixtures / "vllm_base" / "base-inf-concurrency16.json").read_text())
    del obj["latencies"]
    (tmp_path / "r.json").write_text(json.dumps(obj))
    with pytest.warns(UserWarning, match="no end-to-end latency recorded"):
        t = read_sweep(tmp_path / "r.json", gpu="H100", k=0, num_gpus=1)
    assert t.loc[0, "latency_source"] == "ttft+tpot"


def test_saturation_flags(fixtures, tmp_path):
    import json

    obj = json.loads((fixtures / "vllm_base" / "legacy-2.0qps.json").read_text())
    obj["request_throughput"] = 1.0  # offered 2 req/s, completed half of that
    (tmp_path / "slow.json").write_text(json.dumps(obj))
    obj["request_throughput"] = 1.9
    obj["completed"] = 95  # 5 of 100 prompts failed
    (tmp_path / "failed.json").write_text(json.dumps(obj))
    with pytest.warns(UserWarning, match=r"1 run\(s\) had failed requests \(most: 5 in"):
        t = read_sweep(tmp_path, gpu="H100", k=0, num_gpus=1).set_index("file")
    assert t.loc[str(tmp_path / "slow.json"), "saturated"]
    assert "achieved" in t.loc[str(tmp_path / "slow.json"), "saturation_reason"]
    failed = t.loc[str(tmp_path / "failed.json")]  # failures are not overload: kept, counted
    assert not failed["saturated"] and pd.isna(failed["excluded"]) and failed["n_failed"] == 5


def test_load_examples_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = bayes_sd.load_example("vllm-blog-2024")
    assert len(sweep) == 18 and set(sweep["k"]) == {0, 4}
    assert sweep["gpu"].eq("H100-SXM-80GB").all() and sweep["num_gpus"].eq(4).all()
    share = sweep[(sweep["dataset"] == "ShareGPT") & (sweep["request_rate"] == 1)]
    assert sorted(share["latency_mean_s"]) == [1.65, 2.56]  # SD, no SD: the blog's 1.5x
    steps = bayes_sd.load_example("stepcost")
    assert len(steps) == 29_947 and steps["gpu"].nunique() == 2 and steps["model"].nunique() == 8
    assert set(bayes_sd.list_examples()) == {"demo", "stepcost", "vllm-blog-2024", "inferencex",
                                             "inferencex-history"}  # fmt: skip
    with pytest.raises(ValueError, match="unknown example"):
        bayes_sd.load_example("nope")


def test_step_costs_reader_errors(tmp_path):
    steps = bayes_sd.load_example("stepcost").head(50).copy()
    steps.loc[3, "time_ms"] = -1.0
    steps.loc[7, "phase"] = "training"
    path = tmp_path / "steps.csv"
    steps.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"row 4: field 'time_ms': must be > 0"):
        bayes_sd.read_step_costs(path)
    steps.loc[3, "time_ms"] = 1.0
    steps.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"row 8: field 'phase'"):
        bayes_sd.read_step_costs(path)
    path.write_text("")
    with pytest.raises(DataError, match="empty"):
        bayes_sd.read_step_costs(path)


def test_registry_names():
    info = bayes_sd.lookup_model("meta-llama/Llama-3.1-8B-Instruct")
    assert info.name == "llama-3.1-8b" and not info.moe
    moe = bayes_sd.lookup_model("Qwen/Qwen3-30B-A3B-Instruct-2507")
    assert moe.experts == 128 and moe.experts_per_token == 8 and moe.active_params < moe.params
    assert bayes_sd.lookup_model("acme/unknown") is None
    with pytest.raises(ValueError, match="active"):
        bayes_sd.register_model("bad", 1e9, 2e9)


def test_no_warnings_on_clean_fixtures(fixtures):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_sweep([fixtures / "vllm_eagle", fixtures / "guidellm"])


def test_one_results_folder_is_one_source_and_a_split_is_warned(fixtures, tmp_path):
    # the natural layout: results/baseline/ and results/eagle3/ are one system with and
    # without SD, so the SD runs are compared with their own baseline
    root = tmp_path / "llama8b-h100"
    shutil.copytree(fixtures / "vllm_base", root / "baseline")
    shutil.copytree(fixtures / "vllm_eagle", root / "eagle3")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one system: nothing to warn about
        t = read_sweep(root)
    assert set(t["k"]) == {0, 3} and t["source"].eq("llama8b-h100").all()
    # the two folders given one by one are two sources: said, with the fix in the API's words
    with pytest.warns(UserWarning, match=r"source 'eagle3' holds SD runs without a baseline"):
        t = read_sweep([root / "baseline", root / "eagle3"])
    assert set(t["source"]) == {"baseline", "eagle3"}
    # and in the CLI's words from the CLI
    from bayes_sd.errors import interface

    with interface("cli"), pytest.warns(UserWarning, match="--meta source=NAME"):
        read_sweep([root / "baseline", root / "eagle3"])


def test_advice_for_missing_metadata_matches_the_format_and_the_interface(fixtures, tmp_path):
    from bayes_sd.errors import interface

    vllm = tmp_path / "vllm"
    shutil.copytree(fixtures / "vllm_base", vllm)
    (vllm / "bayes_sd.yaml").unlink()
    with pytest.raises(DataError, match="vllm bench serve --metadata gpu=") as err:
        read_sweep(vllm)
    assert "read_sweep(..., gpu=...)" in str(err.value) and "--meta gpu" not in str(err.value)
    guide = tmp_path / "guidellm"
    shutil.copytree(fixtures / "guidellm", guide)
    (guide / "bayes_sd.yaml").unlink()
    with interface("cli"), pytest.raises(DataError, match="missing 'gpu'") as err:
        read_sweep(guide)
    text = str(err.value)  # GuideLLM has no --metadata; the CLI has no read_sweep
    assert "--meta gpu=..." in text and "bayes_sd.yaml" in text
    assert "vllm bench serve" not in text and "read_sweep" not in text


def _vllm_run(fixtures, **changes):
    import json

    obj = json.loads((fixtures / "vllm_base" / "legacy-2.0qps.json").read_text())
    for key in ("ttfts", "itls", "generated_texts", "errors", "input_lens", "output_lens"):
        obj.pop(key)  # the summary fields carry what this test needs
    obj["mean_e2el_ms"] = 2100.0
    obj.update(changes)
    return obj


def test_failures_are_failures_and_overload_is_overload(fixtures):
    meta = {"gpu": "H100", "target": "llama-3.1-8b", "k": 0}
    # 2 failed of 200: kept, said to be failures, not flagged saturated
    few = _vllm_run(fixtures, num_prompts=200, completed=198)
    # 30 failed of 130: excluded from fits, with the reason
    many = _vllm_run(fixtures, num_prompts=130, completed=100, request_rate=3.0,
                     request_throughput=2.8, duration=35.7)  # fmt: skip
    with pytest.warns(UserWarning) as said:
        t = bayes_sd.sweep_from_results([("few.json", few), ("many.json", many)], **meta)
    assert any("2 run(s) had failed requests" in str(w.message) for w in said)
    assert any("1 with more than 5% failed are excluded" in str(w.message) for w in said)
    assert not t["saturated"].any()
    assert t["n_failed"].tolist() == [2, 30]
    assert t["excluded"].tolist() == [False, True]
    assert t.loc[1, "excluded_reason"] == "30 of 130 requests failed"
    # a rate series whose TTFT explodes at the top rate (requests queue past capacity) while
    # the finite run hides it in the achieved rate: flagged, its lower rates not
    series = [
        (f"r{rate}.json", _vllm_run(fixtures, request_rate=rate, mean_ttft_ms=ttft,
                                   request_throughput=achieved, duration=100 / achieved))
        for rate, ttft, achieved in ((1.0, 40.0, 0.98), (2.0, 55.0, 1.9), (6.0, 1600.0, 5.1))
    ]  # fmt: skip
    t = bayes_sd.sweep_from_results(series, **meta)
    assert t["saturated"].tolist() == [False, False, True]
    assert "mean TTFT 40x that of the lowest rate" in t.loc[2, "saturation_reason"]


SCRAPE = """# HELP vllm:spec_decode_num_drafts Number of spec decoding drafts.
# TYPE vllm:spec_decode_num_drafts counter
vllm:spec_decode_num_drafts_total{{engine="0",model_name="m"}} {drafts}
vllm:spec_decode_num_drafts_created{{engine="0",model_name="m"}} 1.7e+09
# TYPE vllm:spec_decode_num_draft_tokens counter
vllm:spec_decode_num_draft_tokens_total{{engine="0",model_name="m"}} {tokens}
# TYPE vllm:spec_decode_num_accepted_tokens counter
vllm:spec_decode_num_accepted_tokens_total{{engine="0",model_name="m"}} {accepted}
# TYPE vllm:spec_decode_num_accepted_tokens_per_pos counter
vllm:spec_decode_num_accepted_tokens_per_pos_total{{engine="0",model_name="m",position="0"}} {p0}
vllm:spec_decode_num_accepted_tokens_per_pos_total{{engine="0",model_name="m",position="1"}} {p1}
vllm:spec_decode_num_accepted_tokens_per_pos_total{{engine="0",model_name="m",position="2"}} {p2}
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="m"}} 0.0
"""


def _scrape(drafts, accepted_per_pos):
    p0, p1, p2 = accepted_per_pos
    counts = {"p0": p0, "p1": p1, "p2": p2, "accepted": p0 + p1 + p2}
    return SCRAPE.format(drafts=drafts, tokens=3 * drafts, **counts)


def test_prometheus_scrapes_beside_a_result_give_its_acceptance(fixtures, tmp_path):
    """A result without spec-decode fields, scraped before and after: the difference is the
    run's counters (k from draft tokens per draft, per-position rates, acceptance length)."""
    import json

    src = fixtures / "vllm_eagle"
    name = "eagle3-4.0qps-Llama-3.1-8B-Instruct-20261101-101500"
    obj = json.loads((src / f"{name}.json").read_text())
    obj = {k: v for k, v in obj.items() if not k.startswith("spec_decode")}
    (tmp_path / "run.json").write_text(json.dumps(obj))
    shutil.copy(src / "bayes_sd.yaml", tmp_path / "bayes_sd.yaml")
    (tmp_path / "run.before.prom").write_text(_scrape(1000, [700, 500, 300]))
    (tmp_path / "run.prom").write_text(_scrape(11000, [8700, 6500, 4300]))
    row = read_sweep(tmp_path).iloc[0]
    assert row["k"] == 3 and row["acceptance_source"] == "server"
    np.testing.assert_allclose([float(v) for v in row["acceptance_per_position"].split()],
                               [0.8, 0.6, 0.4])  # fmt: skip
    assert row["acceptance_length"] == pytest.approx(1 + (8000 + 6000 + 4000) / 10000)
    # a counter that fell (a restarted server) and a file that is not a scrape: DataErrors
    (tmp_path / "run.before.prom").write_text(_scrape(20000, [700, 500, 300]))
    with pytest.raises(DataError, match="fell") as err:
        read_sweep(tmp_path)
    assert err.value.file.endswith("run.prom")
    (tmp_path / "run.before.prom").unlink()
    (tmp_path / "run.prom").write_text("vllm:spec_decode_num_drafts_total{engine=} x\n")
    with pytest.raises(DataError, match="Prometheus") as err:
        read_sweep(tmp_path)
    assert err.value.file.endswith("run.prom")
