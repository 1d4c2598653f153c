"""Embedded example data, loadable from any working directory."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["data_dir", "list_examples", "load_example"]

EXAMPLES = {
    "stepcost": (
        "stepcost/step_times.csv",
        "Measured forward-pass times of 8 architectures (dense and MoE) on H100 and H200.",
    ),
    "demo": (
        "demo/sweep.csv",
        "SIMULATED demo sweep: 2,586 open-loop runs of 320 configurations (6 targets, dense and "
        "MoE; 3 drafters; H100 and H200; k 0-7; acceptance 0.6-0.9), from the discrete-event "
        "simulator driven by the measured step costs.",
    ),
    "inferencex": (
        "inferencex/benchmarks.json",
        "Real closed-loop serving benchmarks of DeepSeek-R1 (MoE) on 7 GPU types, 4 engines, "
        "MTP on and off: TTFT, TPOT and E2E mean and percentiles (SemiAnalysis InferenceX).",
    ),
    "inferencex-history": (
        "inferencex/benchmarks-history.json",
        "The InferenceX points measured on earlier dates (medians and p99 only).",
    ),
    "vllm-blog-2024": (
        "vllm-blog-2024/sweep.csv",
        "Real open-loop vLLM sweep, Llama-3-70B on 4xH100, with and without SD (vLLM blog, "
        "2024-10-17; digitised from its figures).",
    ),
}


def data_dir() -> Path:
    """The embedded data folder: ``bayes_sd/_data`` in a wheel, ``data/`` in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_data", here.parent / "data"):
        if (candidate / "README.md").is_file():
            return candidate
    raise FileNotFoundError(
        "bayes_sd's embedded data folder is missing; reinstall the package (pip install bayes_sd)"
    )


def list_examples() -> dict[str, str]:
    """Names of the embedded examples and what each holds."""
    return {name: doc for name, (_, doc) in EXAMPLES.items()}


def load_example(name: str) -> pd.DataFrame:
    """Load an embedded example: ``"demo"``, ``"stepcost"``, ``"vllm-blog-2024"``,
    ``"inferencex"`` or ``"inferencex-history"``.

    ``"stepcost"`` returns the validated step-time table (see :func:`bayes_sd.read_step_costs`);
    sweeps return the validated canonical sweep table. Each dataset's provenance is in the
    README beside it (``data_dir()``).
    """
    if name not in EXAMPLES:
        raise ValueError(f"unknown example {name!r}; choose one of: {', '.join(EXAMPLES)}")
    path = data_dir() / EXAMPLES[name][0]
    if name == "stepcost":
        from bayes_sd.io import read_step_costs

        return read_step_costs(path)
    from bayes_sd.io import read_sweep

    return read_sweep(path)
