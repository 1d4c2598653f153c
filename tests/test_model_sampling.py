"""Real-sampler checks of the latency model (slow: run with `make test-slow`, not in CI).

These sample with nutpie. They are the only tests here that say anything about whether the
model learns from data; the mocked tests in test_model.py check plumbing only.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

from bayes_sd.model import ConvergenceWarning, LatencyModel
from bayes_sd.population import simulate_from_model

pytestmark = pytest.mark.slow

CONFIGS = [
    {
        "gpu": "H100-SXM-80GB",
        "target": "llama-3.1-8b",
        "drafter": "eagle3-head-8b",
        "prefill_len": 1024,
        "decode_len": 256,
        "sd": [(1, 0.6), (3, 0.8), (5, 0.9)],
    },
    {
        "gpu": "H100-SXM-80GB",
        "target": "llama-3.2-3b",
        "drafter": "llama-68m",
        "prefill_len": 256,
        "decode_len": 256,
        "sd": [(2, 0.7), (4, 0.8)],
    },
]


def test_recovers_held_out_latencies_of_known_truth():
    sweep, truth = simulate_from_model(
        CONFIGS, fractions=(0.1, 0.25, 0.4, 0.55, 0.7, 0.85), seed=21
    )
    held_out = sweep["utilisation"].isin([0.25, 0.55])
    train, held = sweep[~held_out], sweep[held_out].reset_index(drop=True)
    model = LatencyModel(
        sampler_config={"draws": 500, "tune": 500, "chains": 2, "progressbar": False}
    )
    with warnings.catch_warnings():  # a short run: ESS below 400 is expected; R-hat is checked
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(train, random_seed=5)
    assert model.diagnostics["max_rhat"] < 1.05
    pred = model.predict(held.drop(columns=["latency_mean_s"]), random_seed=1)
    lo, hi = pred.summary["latency_lo"], pred.summary["latency_hi"]
    inside = (held["true_latency_s"] >= lo) & (held["true_latency_s"] <= hi)
    assert inside.mean() >= 0.8
    rel = np.abs(pred.summary["latency_median"] / held["true_latency_s"] - 1)
    assert np.median(rel) < 0.05
    assert isinstance(truth["configs"], list) and isinstance(pred.summary, pd.DataFrame)
