"""bayes_sd: Bayesian latency models of speculative decoding in LLM serving."""

from bayes_sd import latency
from bayes_sd._version import __version__
from bayes_sd.datasets import list_examples, load_example
from bayes_sd.errors import DataError
from bayes_sd.io import read_step_costs, read_sweep, sweep_from_results
from bayes_sd.registry import lookup_model, register_model
from bayes_sd.saturation import flag_saturation
from bayes_sd.schema import SWEEP_COLUMNS, validate_sweep, write_sweep

__all__ = [
    "SWEEP_COLUMNS",
    "ConvergenceWarning",
    "DataError",
    "LatencyModel",
    "StepLevelModel",
    "__version__",
    "flag_saturation",
    "latency",
    "list_examples",
    "load_example",
    "lookup_model",
    "read_step_costs",
    "read_sweep",
    "register_model",
    "sweep_from_results",
    "validate_sweep",
    "write_sweep",
]


def __getattr__(name: str):
    # The model pulls in PyMC (seconds to import): load it on first use, not with the readers.
    if name in ("LatencyModel", "ConvergenceWarning"):
        from bayes_sd import model

        return getattr(model, name)
    if name == "StepLevelModel":
        from bayes_sd import stepfit

        return stepfit.StepLevelModel
    raise AttributeError(f"module 'bayes_sd' has no attribute {name!r}")
