"""bayes_sd: Bayesian latency models of speculative decoding in LLM serving."""

from bayes_sd._version import __version__
from bayes_sd.errors import DataError

__all__ = [
    "SWEEP_COLUMNS",
    "ConvergenceWarning",
    "DataError",
    "FitMany",
    "LatencyModel",
    "StepLevelModel",
    "__version__",
    "fit_many",
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


# name -> module: imported on first use, so `bayes-sd --help` and every argument error answer
# without loading pandas (0.5 s) or PyMC (seconds)
_LAZY = {
    "latency": "bayes_sd.latency",
    "list_examples": "bayes_sd.datasets",
    "load_example": "bayes_sd.datasets",
    "read_step_costs": "bayes_sd.io",
    "read_sweep": "bayes_sd.io",
    "sweep_from_results": "bayes_sd.io",
    "lookup_model": "bayes_sd.registry",
    "register_model": "bayes_sd.registry",
    "flag_saturation": "bayes_sd.saturation",
    "SWEEP_COLUMNS": "bayes_sd.schema",
    "validate_sweep": "bayes_sd.schema",
    "write_sweep": "bayes_sd.schema",
    "LatencyModel": "bayes_sd.model",
    "ConvergenceWarning": "bayes_sd.model",
    "StepLevelModel": "bayes_sd.stepfit",
    "fit_many": "bayes_sd.fleet",
    "FitMany": "bayes_sd.fleet",
}


def __getattr__(name: str):
    import importlib

    if name not in _LAZY:
        raise AttributeError(f"module 'bayes_sd' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if name == "latency" else getattr(module, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
