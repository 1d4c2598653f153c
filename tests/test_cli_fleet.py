"""``bayes-sd fit-many``: one model file per sweep from a Dask cluster reached by address, bad
arguments refused before any fitting, a failed sweep reported by name while the others are
saved. The sampler is PyMC's mock (prior draws): what is tested is the command, not a
posterior (the real fits on Dask are tests/test_fleet.py's)."""

from functools import partial

import numpy as np
import pandas as pd
import pymc as pm
import pytest
from pymc.testing import mock_sample

import bayes_sd
from bayes_sd.cli import main
from bayes_sd.population import simulate_from_model

distributed = pytest.importorskip("distributed")

CONFIG = [{"gpu": "H100-SXM-80GB", "target": "llama-3.1-8b", "drafter": "eagle3-head-8b",
           "prefill_len": 512, "decode_len": 256, "sd": [(3, 0.8)]}]  # fmt: skip


@pytest.fixture
def sweeps(tmp_path):
    good, _ = simulate_from_model(CONFIG, seed=3)
    a = tmp_path / "eagle.csv"
    good.assign(source="eagle").to_csv(a, index=False)
    b = tmp_path / "broken.csv"
    good.assign(source="broken", saturated=True).to_csv(b, index=False)  # nothing to fit
    return a, b


def test_fit_many_cli_saves_a_model_per_sweep_and_names_the_failed_one(
    sweeps, tmp_path, monkeypatch, capsys
):
    stats = {"diverging": lambda size: np.zeros(size, dtype=bool)}
    monkeypatch.setattr(pm, "sample", partial(mock_sample, sample_stats=stats))
    out = tmp_path / "models"
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=1,
                                  dashboard_address=":0") as cluster:  # fmt: skip
        code = main(["fit-many", *map(str, sweeps), "--out", str(out), "--scheduler",
                     cluster.scheduler_address, "--draws", "10", "--chains", "2", "--quiet",
                     "--compile-root", str(tmp_path / "cc")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2  # one sweep failed; the other is saved
    assert "sweep 'broken' was not fitted: DataError" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["diagnostics.csv", "eagle.nc"]
    model = bayes_sd.LatencyModel.load(out / "eagle.nc")
    assert model.idata["posterior"].dataset.sizes["draw"] == 10
    diag = pd.read_csv(out / "diagnostics.csv")
    assert diag["sweep"].tolist() == ["eagle"] and diag["runs_fitted"].iloc[0] > 0
    # the model file exists now: a second run refuses before fitting anything
    code = main(["fit-many", str(sweeps[0]), "--out", str(out), "--scheduler", "tcp://nowhere:1"])
    assert code == 2 and "exist already" in capsys.readouterr().err


def test_fit_many_cli_refuses_bad_arguments_before_fitting(sweeps, tmp_path, capsys):
    a, _ = sweeps
    assert main(["fit-many", str(a), "--out", str(a)]) == 2
    assert "--out must be a folder" in capsys.readouterr().err
    assert main(["fit-many", str(a), "--by", "colour", "--out", str(tmp_path / "m")]) == 2
    assert "--by colour: no such column" in capsys.readouterr().err
    assert main(["fit-many", str(a), str(a), "--out", str(tmp_path / "m")]) == 2
    assert "two inputs are named 'eagle'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse: one place to run, not two
        main(["fit-many", str(a), "--out", "m", "--workers", "2", "--scheduler", "tcp://x:1"])
    assert exc.value.code == 2
    assert main(["fit-many", str(a), "--out", str(tmp_path / "m"), "--workers", "0"]) == 2
    assert "workers must be at least 1" in capsys.readouterr().err
