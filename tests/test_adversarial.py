"""Inputs an adversary (or an unlucky disk) would send: each reproduced from the fuzz run of
issue 20 (items 9 to 12). The promise: a DataError naming the file (and record and field where
there is one), a short printable message, bounded memory — never another exception, never a
silently accepted absurdity, never a file outside the folder given."""

import json
import shutil
import time
import warnings

import numpy as np
import pandas as pd
import pytest

import bayes_sd
from bayes_sd import DataError, read_sweep

FIXTURE = "eagle3-4.0qps-Llama-3.1-8B-Instruct-20261101-101500.json"
META = {"num_gpus": 1, "method": "eagle3"}


@pytest.fixture
def run_dir(fixtures, tmp_path):
    """A results folder holding one real-looking vLLM result (gpu in its metadata)."""
    folder = tmp_path / "results"
    folder.mkdir()
    shutil.copy(fixtures / "vllm_eagle" / FIXTURE, folder / "run.json")
    return folder


def _obj(run_dir):
    return json.loads((run_dir / "run.json").read_text())


def _rejects(path, match=None, **meta) -> DataError:
    """read_sweep(path) raises a DataError naming a file, short and printable anywhere."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match=match) as info:
            read_sweep(path, **meta)
    err = info.value
    assert err.file, f"no file named: {err}"
    text = str(err)
    text.encode("utf-8")  # no lone surrogate: printable to any terminal
    assert len(text) < 1200
    return err


def test_yaml_alias_bomb_is_refused_fast(run_dir):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]")
    lines.append("gpu: *i")
    (run_dir / "bayes_sd.yaml").write_text("\n".join(lines))
    start = time.perf_counter()
    err = _rejects(run_dir, match="expands to over", **META)
    assert err.file.endswith("bayes_sd.yaml") and time.perf_counter() - start < 10


@pytest.mark.parametrize(
    "sidecar, match",
    [
        ("gpu: H100\ndate: 2001-02-30\n", "invalid YAML value"),
        ("gpu: H100\nnum_gpus: !!int abc\n", "invalid YAML value"),
        ("gpu: H100\n? [1, 2]\n: x\n", None),  # a key that is not a string
        ("gpu: H100\nnum_gpus: " + "9" * 5000 + "\n", None),  # 5,000 digits
    ],
)
def test_malformed_yaml_values_are_data_errors(run_dir, sidecar, match):
    (run_dir / "bayes_sd.yaml").write_text(sidecar)
    _rejects(run_dir, match=match, **META)


@pytest.mark.parametrize("field", ["request_rate", "completed", "mean_e2el_ms", "duration"])
def test_integers_of_thousands_of_digits(run_dir, field):
    text = (run_dir / "run.json").read_text()
    obj = _obj(run_dir)
    huge = "7" * 5000
    text = text.replace(f'"{field}": {json.dumps(obj[field])}', f'"{field}": {huge}', 1)
    (run_dir / "run.json").write_text(text)
    _rejects(run_dir, **META)


def test_a_lone_surrogate_and_a_long_file_name_print(run_dir):
    obj = _obj(run_dir)
    obj["model_id"] = "model-\udcff-x"
    obj.pop("gpu")
    (run_dir / "run.json").unlink()
    long_name = run_dir / ("r" * 200 + ".json")
    long_name.write_text(json.dumps(obj))
    err = _rejects(run_dir, match="missing 'gpu'", **META)
    assert "…" in str(err)  # the 200-character name is cut, not echoed whole


@pytest.mark.parametrize(
    "change, field",
    [
        ({"p99_ttft_ms": 5000.0}, "ttft_p99_s"),  # TTFT above the E2E at the same percentile
        ({"mean_e2el_ms": 1e-9, "median_e2el_ms": 1e-9, "p99_e2el_ms": 1e-9}, "latency_mean_s"),
        ({"mean_e2el_ms": 1e15, "median_e2el_ms": 1e15, "p99_e2el_ms": 1e15}, "latency_mean_s"),
        ({"request_throughput": 3.626586828206808 * 50}, "request_throughput"),
        ({"spec_decode_per_position_acceptance_rates": [0.8, 1.7, 0.5]}, "spec_decode_per"),
        ({"duration": 1e-6}, "request_throughput"),  # 200 requests in 1 µs at 3.6 req/s
    ],
)
def test_absurd_values_are_not_accepted(run_dir, change, field):
    obj = _obj(run_dir)
    obj.update(change)
    (run_dir / "run.json").write_text(json.dumps(obj))
    err = _rejects(run_dir, **META)
    assert field in " ".join(str(p.field) for p in err.problems)


def test_a_one_microsecond_guidellm_window(fixtures, tmp_path):
    obj = json.loads((fixtures / "guidellm" / "benchmarks.json").read_text())
    bench = obj["benchmarks"][0]
    window = bench["scheduler_metrics"]
    window["measure_end_time"] = window["measure_start_time"] + 1e-6
    (tmp_path / "g.json").write_text(json.dumps(obj))
    err = _rejects(tmp_path / "g.json", gpu="H100", num_gpus=1, k=0)
    assert err.field == "duration_s" and "less than its mean request" in str(err)


def test_negative_latencies_are_an_error_not_dropped(run_dir):
    obj = _obj(run_dir)
    obj.pop("mean_e2el_ms")
    obj["latencies"] = [-x if i % 3 == 0 else x for i, x in enumerate(obj["latencies"])]
    (run_dir / "run.json").write_text(json.dumps(obj))
    err = _rejects(run_dir, match="negative", **META)
    assert err.field == "latencies"


def test_the_same_run_in_two_sub_folders_is_a_duplicate(run_dir):
    (run_dir / "old").mkdir()
    shutil.copy(run_dir / "run.json", run_dir / "old" / "run.json")
    _rejects(run_dir, match="duplicate", **META)


def test_tidy_table_and_metadata_must_agree(tmp_path):
    sweep = bayes_sd.load_example("vllm-blog-2024")
    path = bayes_sd.write_sweep(sweep, tmp_path / "t" / "sweep.csv")
    (path.parent / "bayes_sd.yaml").write_text("gpu: A100-SXM-80GB\n")
    err = _rejects(path.parent, match="the table says")
    assert err.field == "gpu" and err.record == "row 1"
    for meta in ({"num_gpus": 8}, {"k": 3}):  # keyword metadata: the same rule
        (path.parent / "bayes_sd.yaml").unlink(missing_ok=True)
        _rejects(path, match="the table says", **meta)


@pytest.mark.parametrize("order", ["k first", "spec first"])
def test_k_and_speculative_config_disagreeing_in_one_sidecar(run_dir, order):
    k, spec = "k: 5", "speculative_config:\n  method: eagle3\n  num_speculative_tokens: 3"
    lines = [k, spec] if order == "k first" else [spec, k]
    (run_dir / "bayes_sd.yaml").write_text("\n".join(["num_gpus: 1", *lines]) + "\n")
    _rejects(run_dir)


def test_links_out_of_the_folder_are_not_followed(run_dir, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "shadow.csv").write_text("root:$6$SECRETHASH:19000:0:99999:7:::\n")
    (run_dir / "shadow.csv").symlink_to(secret / "shadow.csv")
    (run_dir / "linked").symlink_to(secret, target_is_directory=True)
    with pytest.warns(UserWarning, match="link\\(s\\) pointing outside the folder not followed"):
        table = read_sweep(run_dir, **META)  # the one real run, nothing else
    assert len(table) == 1
    # given the link itself (not a folder), it is read — and its content never echoed
    with pytest.raises(DataError) as info:
        read_sweep(run_dir / "shadow.csv")
    assert "SECRETHASH" not in str(info.value)


def test_tables_are_checked_before_their_cells_are_read(tmp_path, monkeypatch):
    # a one-column CSV: refused from its header, not after reading and validating every cell
    path = tmp_path / "one.csv"
    path.write_text("x\n" + "1\n" * 200_000)
    start = time.perf_counter()
    _rejects(path, match="no 'latency_mean_s' column")
    assert time.perf_counter() - start < 5
    # a Parquet file's row count is read from its footer before its rows
    import bayes_sd.io as io

    monkeypatch.setattr(io, "MAX_ROWS", 1000)
    table = pd.DataFrame({"latency_mean_s": np.ones(1001)})
    table.to_parquet(tmp_path / "big.parquet")
    _rejects(tmp_path / "big.parquet", match="over the 1,000 limit")


def test_messages_are_capped():
    from bayes_sd.errors import MAX_MESSAGE

    err = DataError("x" * 100_000, file="f" * 1000, field="g")
    assert len(str(err)) < MAX_MESSAGE + 200 and str(err).endswith("…")
