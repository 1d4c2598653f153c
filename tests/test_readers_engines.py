"""Readers of real-engine measurements: InferenceX rows and `vllm bench sweep serve` folders,
and the per-metric (TTFT, TPOT, E2E) columns every reader fills."""

import json
import shutil

import pandas as pd
import pytest
import yaml

import bayes_sd
from bayes_sd import DataError
from bayes_sd.datasets import data_dir

FIXTURE = "eagle3-4.0qps-Llama-3.1-8B-Instruct-20261101-101500.json"


@pytest.fixture(scope="module")
def inferencex():
    return bayes_sd.load_example("inferencex")


def test_inferencex_rows_map_to_the_canonical_table(inferencex):
    t = inferencex
    raw = json.loads((data_dir() / "inferencex" / "benchmarks.json").read_text())
    assert len(t) == len(raw) == 295
    first = t.iloc[0]  # b200, trt, fp8, tp8 ep1, none, 1k/1k, conc 4 (data/inferencex/SOURCE.md)
    assert (first["gpu"], first["num_gpus"], first["engine"], first["precision"]) == (
        "B200",
        8,
        "trt",
        "fp8",
    )
    assert first["layout"] == "tp8 ep1" and first["engines"] == 1
    assert first["prefill_len"] == pytest.approx(0.9 * 1024) and first["concurrency"] == 4
    assert first["load_mode"] == "concurrency" and first["k"] == 0 and first["method"] == "none"
    m = raw[0]["metrics"]
    assert first["ttft_mean_s"] == m["mean_ttft"] and first["tpot_p99_s"] == m["p99_tpot"]
    assert first["latency_p50_s"] == m["median_e2el"] and first["latency_p90_s"] == m["p90_e2el"]
    assert first["target_active_params"] == 37e9 and first["target_experts"] == 256
    # decode GPUs x output tokens/s per GPU
    assert first["output_throughput"] == pytest.approx(8 * m["output_tput_per_gpu"])
    # multi-node: prefill + decode GPUs; engines = decode workers x attention DP ranks
    first_multi = next(i for i, r in enumerate(raw) if r["is_multinode"])
    multi = t.iloc[first_multi]
    row = raw[first_multi]
    assert multi["num_gpus"] == row["num_prefill_gpu"] + row["num_decode_gpu"]
    dpa_ranks = row["decode_tp"] if row["decode_dp_attention"] else 1
    assert multi["engines"] == max(row["decode_num_workers"], 1) * dpa_ranks
    # prefill on its own workers (Dynamo), recorded for the disaggregated law to come
    assert not first["disaggregated"] and bool(multi["disaggregated"]) == bool(row["disagg"])
    assert t["disaggregated"].sum() == sum(bool(r["disagg"]) for r in raw) == 155
    # one prefill worker's GPUs: the prefill coefficients' GPU count in the GPU-count law
    assert multi["prefill_gpus"] == row["prefill_tp"] and pd.isna(first["prefill_gpus"])
    # single-node recipes send 10 x conc prompts (the opening wave is a tenth of the run);
    # the multi-node harness was not checked: unknown, not guessed
    assert first["n_requests"] == 40 and pd.isna(multi["n_requests"])


def test_inferencex_k_comes_from_the_recipe_table_or_stays_unknown(inferencex):
    t = inferencex
    mtp = t[t["method"] == "mtp"]
    assert len(mtp) == 103 and mtp["drafter"].eq("deepseek-r1-mtp").all()
    known = mtp["k"].notna()
    assert known.sum() == 63 and set(mtp.loc[known, "k"]) <= {1, 2, 3}
    # rows 4 and 1 of the file: a unique recipe k (1, DP attention) and none (not guessed)
    assert t.iloc[4]["k"] == 1 and pd.isna(t.iloc[1]["k"])
    assert "not guessed" in t.iloc[1]["excluded_reason"] and t.iloc[1]["excluded"]
    assert mtp["acceptance_length"].isna().all()  # not recorded: latent in the model


def test_inferencex_flags_what_it_cannot_map(inferencex):
    t = inferencex
    mixed = t["excluded_reason"].fillna("").str.contains("mixed GPU bases")
    assert mixed.sum() == 8 and t.loc[mixed, "excluded"].all()
    little = bayes_sd.load_example("inferencex-history")
    broken = little["excluded_reason"].fillna("").str.contains("Little's law")
    assert broken.sum() >= 10 and little.loc[broken, "excluded"].all()
    assert little["latency_mean_s"].isna().all()  # the history API drops the means
    from bayes_sd.design import Design

    with pytest.raises(DataError, match=r"no runs to fit.*without a mean latency"):
        Design.from_sweep(little)


def test_inferencex_errors_name_file_record_and_field(tmp_path):
    rows = json.loads((data_dir() / "inferencex" / "benchmarks.json").read_text())[:3]
    del rows[1]["conc"]
    path = tmp_path / "ix.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError) as err:
        bayes_sd.read_sweep(path)
    assert (err.value.file, err.value.record, err.value.field) == (str(path), "row 1", "conc")
    rows[1]["conc"] = "many"
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError, match="expected a number"):
        bayes_sd.read_sweep(path)
    # a recipe table beside a file must describe that file's rows
    rows = json.loads((data_dir() / "inferencex" / "benchmarks.json").read_text())
    rows[4]["conc"] = 999
    (tmp_path / "benchmarks.json").write_text(json.dumps(rows))
    shutil.copy(data_dir() / "inferencex" / "mtp_k_from_recipes_DERIVED.csv", tmp_path)
    with pytest.raises(DataError, match="recipe table's row does not match"):
        bayes_sd.read_sweep(tmp_path / "benchmarks.json")


def test_vllm_bench_sweep_serve_folder(fixtures, tmp_path):
    """run=N.json files are runs (with the sweep's serve parameters as metadata); the
    summary.json of a combination and the experiment's summary.csv repeat them; warm-up and
    failed runs are not measurements."""
    obj = json.loads((fixtures / "vllm_eagle" / FIXTURE).read_text())
    exp = tmp_path / "20261201_120000"
    runs = []
    for comb, conc in (("SERVE--max_num_seqs=64-BENCH--max_concurrency=8", 8),
                       ("SERVE--max_num_seqs=64-BENCH--max_concurrency=16", 16)):  # fmt: skip
        folder = exp / comb
        folder.mkdir(parents=True)
        for n in range(2):
            run = {
                **obj,
                "max_concurrency": conc,
                "request_rate": "inf",
                "max_num_seqs": 64,
                "run_number": n,
                "mean_e2el_ms": obj["mean_e2el_ms"] * (1 + 0.01 * n),
            }
            (folder / f"run={n}.json").write_text(json.dumps(run))
            runs.append(run)
        (folder / "warmup.json").write_text(json.dumps({**run, "run_number": -1}))
        (folder / "summary.json").write_text(json.dumps(runs[-2:]))
    (exp / "SERVE--max_num_seqs=64-BENCH--max_concurrency=8" / "run=2.failure.json").write_text(
        json.dumps({"run_number": 2, "error_type": "TimeoutError", "error": "timed out"})
    )
    (exp / "summary.csv").write_text(",run_number,max_concurrency\n0,0,8\n")
    shutil.copy(fixtures / "vllm_eagle" / "bayes_sd.yaml", exp / "bayes_sd.yaml")
    with pytest.warns(UserWarning, match="1 failed benchmark run"):
        t = bayes_sd.read_sweep(exp)
    assert len(t) == 4 and sorted(t["concurrency"]) == [8, 8, 16, 16]
    assert t["max_num_seqs"].eq(64).all() and t["load_mode"].eq("concurrency").all()
    assert t["ttft_p99_s"].notna().all() and t["tpot_p50_s"].notna().all()
    # a combination's summary.json alone (the run files removed) is read as its runs
    for p in (exp / "SERVE--max_num_seqs=64-BENCH--max_concurrency=16").glob("run=*.json"):
        p.unlink()
    with pytest.warns(UserWarning):
        t = bayes_sd.read_sweep(exp)
    assert len(t) == 4


def test_vllm_reader_fills_the_percentile_columns(fixtures):
    t = bayes_sd.read_sweep(fixtures / "vllm_eagle" / FIXTURE)
    obj = json.loads((fixtures / "vllm_eagle" / FIXTURE).read_text())
    row = t.iloc[0]
    assert row["ttft_p50_s"] == pytest.approx(obj["median_ttft_ms"] / 1e3)
    assert row["tpot_p99_s"] == pytest.approx(obj["p99_tpot_ms"] / 1e3)
    assert row["output_throughput"] == pytest.approx(obj["output_throughput"])


def test_ttft_above_e2e_and_unordered_percentiles_are_errors(tmp_path):
    t = bayes_sd.load_example("vllm-blog-2024").head(3).copy()
    t.loc[0, "ttft_mean_s"] = 99.0
    t.loc[1, ["tpot_p50_s", "tpot_p90_s"]] = [0.05, 0.01]
    with pytest.raises(DataError) as err:
        bayes_sd.validate_sweep(t)
    fields = {p.field for p in err.value.problems}
    assert fields == {"ttft_mean_s", "tpot_p90_s"}


def test_nearer_sidecar_overrides_a_folder_above(fixtures, tmp_path):
    """A sidecar at the top of a results tree applies to every run below it; a sub-folder's
    sidecar overrides it key by key; the file's own sidecar and its folder's must agree."""
    obj = json.loads((fixtures / "vllm_eagle" / FIXTURE).read_text())
    top = yaml.safe_load((fixtures / "vllm_eagle" / "bayes_sd.yaml").read_text())
    top.pop("speculative_config", None)
    (tmp_path / "bayes_sd.yaml").write_text(yaml.safe_dump({**top, "k": 0, "method": "none"}))
    for name, k in (("baseline", None), ("eagle3", 3)):
        (tmp_path / name).mkdir()
        run = obj if k else {f: v for f, v in obj.items() if not f.startswith("spec_decode")}
        (tmp_path / name / "run.json").write_text(json.dumps(run))
        if k is not None:
            (tmp_path / name / "bayes_sd.yaml").write_text(
                yaml.safe_dump({"k": k, "method": "eagle3"})
            )
    t = bayes_sd.read_sweep(tmp_path)
    assert t["source"].nunique() == 1  # one results folder: one system with and without SD
    t = t.set_index("file")
    base, eagle = (t.loc[str(tmp_path / name / "run.json")] for name in ("baseline", "eagle3"))
    assert base["k"] == 0 and eagle["k"] == 3
    assert eagle["method"] == "eagle3" and eagle["gpu"] == base["gpu"]
    (tmp_path / "eagle3" / "run.meta.yaml").write_text(yaml.safe_dump({"k": 4}))
    with pytest.raises(bayes_sd.DataError, match="conflicting values for 'k'"):
        bayes_sd.read_sweep(tmp_path)
