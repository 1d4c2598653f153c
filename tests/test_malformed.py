"""Bad input gives DataError naming file, record and field — and nothing else escapes (fuzzed)."""

import copy
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bayes_sd
from bayes_sd import DataError, read_sweep, validate_sweep
from bayes_sd.errors import Problem

# The vLLM fixture records gpu itself (--metadata gpu=...); the GuideLLM one does not.
META = {"num_gpus": 1, "method": "eagle3"}
META_G = {"gpu": "H100", "num_gpus": 1, "k": 0}


@pytest.fixture(scope="module")
def vllm_obj(fixtures):
    path = fixtures / "vllm_eagle" / "eagle3-4.0qps-Llama-3.1-8B-Instruct-20261101-101500.json"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def guidellm_obj(fixtures):
    return json.loads((fixtures / "guidellm" / "benchmarks.json").read_text())


def write(tmp_path: Path, obj, name="run.json") -> Path:
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_truncated_json(tmp_path, vllm_obj):
    path = write(tmp_path, json.dumps(vllm_obj)[:500])
    with pytest.raises(DataError, match=r"invalid JSON.*truncated") as err:
        read_sweep(path, **META)
    assert err.value.file == str(path)


def test_truncated_jsonl_names_the_line(tmp_path, vllm_obj):
    text = json.dumps(vllm_obj) + "\n" + json.dumps(vllm_obj)[:300] + "\n"
    with pytest.raises(DataError, match="record line 2") as err:
        read_sweep(write(tmp_path, text, "runs.jsonl"), **META)
    assert err.value.record == "line 2"


@pytest.mark.parametrize("content", ["", "   \n", "\ufeff"])
def test_empty_files(tmp_path, content):
    with pytest.raises(DataError, match="empty"):
        read_sweep(write(tmp_path, content), **META)
    (tmp_path / "e.csv").write_text(content)
    with pytest.raises(DataError, match=r"empty|no rows|parse"):
        read_sweep(tmp_path / "e.csv")


def test_missing_required_field(tmp_path, vllm_obj):
    obj = copy.deepcopy(vllm_obj)
    del obj["completed"]
    with pytest.raises(DataError, match="field 'completed': required field is missing"):
        read_sweep(write(tmp_path, obj), **META)


def test_missing_latency_says_how_to_record_it(tmp_path, vllm_obj):
    obj = copy.deepcopy(vllm_obj)
    for key in ("mean_e2el_ms", "latencies", "mean_tpot_ms"):
        obj.pop(key)
    with pytest.raises(DataError, match="--percentile-metrics ttft,tpot,itl,e2el"):
        read_sweep(write(tmp_path, obj), **META)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("completed", "200", "expected a number"),
        ("mean_e2el_ms", -5.0, "must be >= 0"),
        ("mean_e2el_ms", float("nan"), "finite"),
        ("latencies", [1.0, "x"], "list of numbers"),
        ("request_rate", "fast", "expected a number"),
        ("spec_decode_num_drafts", True, "expected a number"),
        ("total_output_tokens", None, None),  # optional field: absent is fine
    ],
)
def test_wrong_types_and_values(tmp_path, vllm_obj, field, value, message):
    obj = copy.deepcopy(vllm_obj)
    obj[field] = value
    path = write(tmp_path, obj)
    if message is None:
        with pytest.raises(DataError, match="decode_len"):  # then decode_len is missing
            read_sweep(path, **META)
        assert len(read_sweep(path, decode_len=256, **META)) == 1
        return
    with pytest.raises(DataError, match=message) as err:
        read_sweep(path, **META)
    assert err.value.field == field and err.value.file == str(path)


def test_zero_latency_rejected_by_validation(tmp_path, vllm_obj):
    obj = copy.deepcopy(vllm_obj)
    obj["mean_e2el_ms"] = 0.0
    with pytest.raises(DataError, match="field 'latency_mean_s': must be >= 1e-05"):
        read_sweep(write(tmp_path, obj), **META)


def test_k_conflict_between_counters_and_metadata(tmp_path, vllm_obj):
    with pytest.raises(DataError, match=r"conflicting values for 'k': 5.0 .* 3.0"):
        read_sweep(write(tmp_path, vllm_obj), k=5, **META)


def test_acceptance_length_above_k_plus_one(tmp_path, vllm_obj):
    obj = copy.deepcopy(vllm_obj)
    obj["spec_decode_acceptance_length"] = 4.5
    with pytest.raises(DataError, match=r"acceptance_length.*\[1, 4\]"):
        read_sweep(write(tmp_path, obj), **META)


def test_duplicate_runs(tmp_path, vllm_obj):
    write(tmp_path, vllm_obj, "a.json")
    write(tmp_path, vllm_obj, "b.json")
    with pytest.raises(DataError, match=r"duplicate of .*a.json") as err:
        read_sweep(tmp_path, **META)
    assert "b.json" in str(err.value)


def test_not_a_result_file(tmp_path):
    with pytest.raises(DataError, match="not a vllm bench serve result"):
        read_sweep(write(tmp_path, {"hello": 1}), **META)
    with pytest.raises(DataError, match="no such file"):
        read_sweep(tmp_path / "missing.json")
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError, match="no result files"):
        read_sweep(tmp_path / "sub")


def test_size_limit(tmp_path, vllm_obj):
    with pytest.raises(DataError, match="over the 0 MiB limit"):
        read_sweep(write(tmp_path, vllm_obj), max_bytes=100, **META)


def test_guidellm_errors(tmp_path, guidellm_obj):
    obj = copy.deepcopy(guidellm_obj)
    obj["metadata"]["version"] = 9
    with pytest.raises(DataError, match="schema version 9"):
        read_sweep(write(tmp_path, obj), **META_G)
    obj = copy.deepcopy(guidellm_obj)
    del obj["benchmarks"][3]["metrics"]["request_latency"]
    with pytest.raises(DataError, match=r"benchmark 3: field 'metrics.request_latency"):
        read_sweep(write(tmp_path, obj), **META_G)
    obj = copy.deepcopy(guidellm_obj)
    obj["benchmarks"][0]["config"]["strategy"]["type_"] = "trace"
    with pytest.raises(DataError, match="unsupported strategy 'trace'"):
        read_sweep(write(tmp_path, obj), **META_G)
    v03 = {"benchmarks": [{"type_": "generative_benchmark", "args": {}}]}
    with pytest.raises(DataError, match=r"v0.3"):
        read_sweep(write(tmp_path, v03), **META_G)


def test_bad_yaml_sidecar(tmp_path, vllm_obj):
    write(tmp_path, vllm_obj)
    (tmp_path / "bayes_sd.yaml").write_text("gpu: [unclosed\n")
    with pytest.raises(DataError, match=r"bayes_sd.yaml: invalid YAML"):
        read_sweep(tmp_path, **META)
    (tmp_path / "bayes_sd.yaml").write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(DataError, match="invalid YAML"):  # safe_load refuses to execute
        read_sweep(tmp_path, **META)


def test_tidy_csv_errors_name_row_and_field(tmp_path):
    sweep = bayes_sd.load_example("vllm-blog-2024")
    bad = sweep.copy()
    bad = bad.astype({"latency_mean_s": object, "k": object})
    bad.loc[4, "latency_mean_s"] = "NaN"
    bad.loc[6, "latency_mean_s"] = -1.0
    bad.loc[8, "k"] = 2.5
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        read_sweep(path)
    text = str(err.value)
    assert text.startswith(f"3 problems in {path}:")  # the file named once, then each problem
    assert "record row 5: field 'latency_mean_s': required value is missing" in text
    assert "record row 7: field 'latency_mean_s': must be >= 1e-05" in text
    assert "record row 9: field 'k': must be a whole number" in text
    assert len(err.value.problems) == 3
    sweep.drop(columns=["gpu"]).to_csv(path, index=False)
    with pytest.raises(DataError, match="missing required column"):
        read_sweep(path)
    assert len(read_sweep(path, gpu="H100")) == 18  # metadata fills the column


def test_validate_sweep_consistency():
    sweep = bayes_sd.load_example("vllm-blog-2024")
    bad = sweep.copy()
    bad.loc[0, "method"] = "none"  # k = 4
    bad.loc[1, "load_mode"] = "sometimes"
    bad.loc[2, "target_active_params"] = 1e12
    bad.loc[3, "latency_p50_s"] = 3.0
    bad.loc[3, "latency_p99_s"] = 2.0
    with pytest.raises(DataError) as err:
        validate_sweep(bad)
    fields = {p.field for p in err.value.problems}
    assert fields == {"method", "load_mode", "target_active_params", "latency_p90_s"}
    with pytest.raises(DataError, match="DataFrame"):
        validate_sweep({"a": 1})


# ---------------------------------------------------------------- fuzzing

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=8)
    | st.floats(allow_nan=True, allow_infinity=True),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6),
                                                                       children, max_size=4),
    max_leaves=10,
)  # fmt: skip


def _read_only_data_errors(text: str, suffix: str, **meta) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{suffix}"
        path.write_text(text)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                table = read_sweep(path, **meta)
        except DataError as err:  # names the file; short and printable anywhere
            assert err.file and len(str(err)) < 1200
            str(err).encode("utf-8")
            return
        assert isinstance(table, pd.DataFrame) and len(table) >= 1
        # nothing absurd accepted: times within 10 µs .. 11 days, TTFT within E2E
        lat = table["latency_mean_s"]
        assert ((lat >= 1e-5) & (lat <= 1e6)).all()
        ttft = table["ttft_mean_s"].astype(float)
        assert not (ttft > lat * 1.01).any()


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_vllm_fields(vllm_obj, data):
    obj = copy.deepcopy(vllm_obj)
    keys = sorted(obj)
    for _ in range(data.draw(st.integers(1, 4))):
        key = data.draw(st.sampled_from(keys))
        if data.draw(st.booleans()):
            obj.pop(key, None)
        else:
            obj[key] = data.draw(json_values)
    _read_only_data_errors(json.dumps(obj), ".json", **META)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_guidellm_paths(guidellm_obj, data):
    obj = copy.deepcopy(guidellm_obj)
    obj["benchmarks"] = obj["benchmarks"][2:4]
    for _ in range(data.draw(st.integers(1, 3))):
        node = obj["benchmarks"][data.draw(st.integers(0, 1))]
        while isinstance(node, dict) and node and data.draw(st.booleans()):
            key = data.draw(st.sampled_from(sorted(node)))
            if not isinstance(node[key], dict):
                break
            node = node[key]
        if isinstance(node, dict) and node:
            node[data.draw(st.sampled_from(sorted(node)))] = data.draw(json_values)
    _read_only_data_errors(json.dumps(obj), ".json", **META_G)


@settings(max_examples=150)
@given(st.text(max_size=300), st.sampled_from([".json", ".jsonl", ".yaml", ".csv"]))
def test_fuzz_arbitrary_text(text, suffix):
    _read_only_data_errors(text, suffix, **META)


@pytest.fixture(scope="module")
def blog_sweep():
    return bayes_sd.load_example("vllm-blog-2024")


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_tidy_cells(blog_sweep, data):
    sweep = blog_sweep.copy()
    col = data.draw(st.sampled_from(list(sweep.columns)))
    row = data.draw(st.integers(0, len(sweep) - 1))
    sweep[col] = sweep[col].astype(object)
    sweep.loc[row, col] = data.draw(
        st.none() | st.text(max_size=5) | st.floats() | st.integers(-5, 10**12)
    )
    _read_only_data_errors(sweep.to_csv(index=False), ".csv")


def test_fuzzed_truncations_of_every_fixture(fixtures):
    rng = np.random.default_rng(0)
    for path in sorted(fixtures.rglob("*.json*")) + sorted(fixtures.rglob("*.yaml")):
        if path.name == "expected.json" or ".meta." in path.name or path.name == "bayes_sd.yaml":
            continue
        text = path.read_text()
        if len(text) < 10:
            continue
        for cut in rng.integers(1, len(text) - 1, size=5):
            _read_only_data_errors(text[:cut], path.suffix, **META_G)


def test_an_error_of_many_problems_names_its_file_once_and_stays_short():
    """Found by the fuzz test in a clean clone: 15 problems of one CSV under a temporary
    directory made a 1,380-character message (the path repeated per problem)."""
    where = "/tmp/" + "d" * 120 + "/fuzz.csv"
    err = DataError(problems=[Problem("required value is missing", where, f"row {i}", "source")
                              for i in range(40)])  # fmt: skip
    text = str(err)
    assert text.startswith(f"40 problems in {where}:") and text.count(where) == 1
    assert len(text) < 1200 and text.endswith("more problems")
    assert "record row 0: field 'source'" in text and err.file == where
    # problems of several files keep each its file
    two = str(DataError(problems=[Problem("bad", "a.json", 1, "x"), Problem("bad", "b.json")]))
    assert "a.json: record 1: field 'x': bad" in two and "b.json: bad" in two


def test_labelling_a_run_of_unknown_draft_length_names_it(blog_sweep):
    """``label_systems`` (public, and the fit's and predict's labelling) refuses a row whose
    draft length is unknown with the row and the field, not pandas' "boolean value of NA"."""
    from bayes_sd.design import fill_labels, label_systems

    rows = blog_sweep.head(5).reset_index(drop=True)
    rows["k"] = pd.array([0, 3, pd.NA, 1, 2], dtype="Int64")
    fill_labels(rows)
    with pytest.raises(DataError, match="unknown draft length") as err:
        label_systems(rows)
    assert (err.value.record, err.value.field) == (2, "k")
    rows["k"] = rows["k"].fillna(5)
    label_systems(rows)
    assert rows["series"].str.endswith("|k5").iloc[2]
