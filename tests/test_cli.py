"""The bayes-sd command line: demo report, ingest, errors as one line with exit codes."""

import pandas as pd
import pytest

import bayes_sd
from bayes_sd import summaries
from bayes_sd.cli import EXIT_DATA, EXIT_OK, main


def test_demo_writes_a_report_with_the_real_break_even(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == EXIT_OK
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
