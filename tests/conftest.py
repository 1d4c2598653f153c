import json
import os
import warnings
from pathlib import Path

import numpy as np

# PyTensor graphs built by the tests (log densities, gradients, prior draws) compile in
# FAST_COMPILE (the Python VM): each cold numba compile of the model graph took 30-130 s in a
# fresh CI clone, 10-40 times its evaluation here. Set before pytensor is imported, and
# inherited by the notebook kernels. Samplers are not affected: nutpie compiles its own
# numba functions, so every real-sampler test still runs the numba path users run.
os.environ["PYTENSOR_FLAGS"] = ",".join(
    f for f in (os.environ.get("PYTENSOR_FLAGS", ""), "mode=FAST_COMPILE") if f
)

import pytest
from hypothesis import settings


def logp(model, point) -> float:
    """The model's log density at ``point``, summed outside the graph: PyMC adds every
    variable's term in one Add, which the Python VM of FAST_COMPILE cannot run past 32
    operands (the numba backend users fit with can)."""
    return float(sum(np.sum(term) for term in model.compile_logp(sum=False)(point)))


FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def expected() -> dict:
    return json.loads((FIXTURES / "expected.json").read_text())


@pytest.fixture
def float64_draws(monkeypatch):
    """predict keeps its draws in float64 (``_kernels.DRAW_DTYPE``, float32 by default): for the
    tests of the algebra itself, to the last bits its float64 arithmetic carries."""
    from bayes_sd import _kernels

    monkeypatch.setattr(_kernels, "DRAW_DTYPE", np.float64)


# Timing varies on shared 2-core machines (and compiles happen on first use): no deadlines.
settings.register_profile("bayes_sd", deadline=None, max_examples=100)
settings.load_profile("bayes_sd")


RECOVERY_CONFIGS = [
    {
        "gpu": "H100-SXM-80GB",
        "target": target,
        "drafter": drafter,
        "prefill_len": p,
        "decode_len": d,
        "sd": sd,
    }
    for target, drafter, p, d, sd in [
        ("llama-3.2-1b", "llama-68m", 256, 1024, [(2, 0.7), (4, 0.8)]),
        ("llama-3.2-3b", "llama-68m", 1024, 256, [(1, 0.6), (3, 0.8)]),
        ("llama-3.1-8b", "eagle3-head-8b", 1024, 1024, [(2, 0.7), (5, 0.9)]),
        ("qwen2.5-14b", "llama-3.2-1b", 256, 256, [(3, 0.8), (4, 0.7)]),
    ]
]


@pytest.fixture(scope="session")
def small_fit():
    """One real nutpie fit shared by the tests that need a posterior (about a minute).

    A closed-form sweep drawn from the known default population (4 dense targets with drafters
    on H100, 6 rates per series; noise 2%), 2 x 600 draws: at 2 x 300 a fresh clone once gave
    R-hat 1.051 against the tests' 1.05 bound (runs are not bit-identical across machines).
    Returns (truth population, model, posterior)."""
    from bayes_sd.model import ConvergenceWarning, LatencyModel
    from bayes_sd.population import DEFAULT_POPULATION, simulate_from_model, with_overrides

    truth = with_overrides(DEFAULT_POPULATION, noise_sd=0.02)
    sweep, _ = simulate_from_model(
        RECOVERY_CONFIGS, population=truth, fractions=(0.05, 0.2, 0.35, 0.5, 0.65, 0.8), seed=4
    )
    model = LatencyModel(
        sampler_config={"draws": 600, "tune": 600, "chains": 2, "progressbar": False}
    )
    with warnings.catch_warnings():  # 1,200 draws: ESS may stay under 400; R-hat is checked
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        idata = model.fit(sweep, random_seed=7)
    return truth, model, idata["posterior"].dataset
