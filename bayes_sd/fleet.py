"""Many fits at once on a Dask cluster: one fitted :class:`~bayes_sd.LatencyModel` per sweep.

``fit_many(sweeps)`` sends one fit per sweep to ``dask.distributed`` workers — a
``LocalCluster`` of worker *processes* on this machine when no ``client`` is given, or any
scheduler (``Client("tcp://host:8786")``, ``bayes-sd fit-many --scheduler tcp://…``) — and
gathers the fitted models. A fit that fails is reported with its sweep's name and the error;
the others finish. Each worker compiles into its own PyTensor compile directory (PyTensor's
compile cache is not safe to share between processes writing at once): a worker plugin sets
``base_compiledir`` before the worker first imports PyTensor. Models travel back as their saved
NetCDF bytes (``LatencyModel.save`` / ``load``: the posterior ``DataTree``, configuration and
training data), so what comes back is what a save would load.

Dask is an extra: ``pip install 'bayes_sd[dask]'``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["FitMany", "fit_many"]


@dataclass
class FitMany:
    """What :func:`fit_many` returns: the fitted models by sweep name, the failures (name →
    ``"ExceptionType: message"``) and one row of diagnostics per fit (R-hat, ESS, divergences,
    seconds, the worker that ran it)."""

    models: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    diagnostics: pd.DataFrame = field(default_factory=pd.DataFrame)


def _distributed():
    try:
        import distributed
    except ImportError as err:  # an extra, not a dependency
        raise ImportError(
            f"fit_many needs dask.distributed ({err}): pip install 'bayes_sd[dask]'"
        ) from err
    return distributed


def _compile_dir_plugin(root: str):
    """A worker plugin giving each worker process its own PyTensor compile directory."""
    distributed = _distributed()

    class CompileDir(distributed.WorkerPlugin):
        name = "bayes_sd-compile-dir"

        def __init__(self, root: str) -> None:
            self.root = root

        def setup(self, worker) -> None:
            path = Path(self.root) / f"worker-{os.getpid()}"
            if "pytensor" in sys.modules:  # too late: this process compiles where it already does
                logging.getLogger("bayes_sd.fleet").warning(
                    "worker %s imported PyTensor before bayes_sd set its compile directory: "
                    "start workers with their own PYTENSOR_FLAGS=base_compiledir=...",
                    worker.address,
                )
                return
            flags = [f for f in os.environ.get("PYTENSOR_FLAGS", "").split(",")
                     if f and not f.startswith("base_compiledir=")]  # fmt: skip
            os.environ["PYTENSOR_FLAGS"] = ",".join([*flags, f"base_compiledir={path}"])

    return CompileDir(root)


def _fit_one(name: str, sweep: pd.DataFrame, model_config, sampler_config, seed) -> dict:
    """One fit on a worker: the saved model's bytes and its diagnostics."""
    import time

    from bayes_sd.model import LatencyModel

    start = time.perf_counter()
    model = LatencyModel(model_config=model_config, sampler_config=sampler_config)
    with warnings.catch_warnings(record=True) as caught:  # reported per fit, not lost
        warnings.simplefilter("always")
        model.fit(sweep, random_seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = model.save(Path(tmp) / "model.nc")
        data = Path(path).read_bytes()
    diag = {**model.diagnostics, "seconds": round(time.perf_counter() - start, 1),
            "worker_pid": os.getpid(),
            "warnings": "; ".join(sorted({str(w.message)[:200] for w in caught}))}  # fmt: skip
    return {"name": name, "model": data, "diagnostics": diag}


def fit_many(
    sweeps: Mapping[str, pd.DataFrame],
    *,
    client=None,
    workers: int = 2,
    model_config: dict | None = None,
    sampler_config: dict | None = None,
    random_seed: int = 0,
    compile_root: str | os.PathLike | None = None,
    progress: bool = True,
) -> FitMany:
    """Fit one :class:`~bayes_sd.LatencyModel` per sweep on Dask workers.

    ``sweeps`` maps a name to a sweep table (``read_sweep``'s). ``client``: a
    ``distributed.Client`` of any cluster; ``None`` starts a ``LocalCluster`` of ``workers``
    single-threaded worker processes for the call (and closes it). Each fit samples with
    ``sampler_config`` (its chains run on ``cpu_count // workers`` cores unless ``cores`` is
    given) and seed ``random_seed + i`` for the i-th sweep, so a run is reproducible. Each
    worker process compiles into ``compile_root/worker-<pid>`` (default: a folder under the
    system's temporary directory). A progress bar on stderr counts finished fits; a failed fit
    is recorded in ``.failures`` and the others go on. Returns :class:`FitMany`."""
    from bayes_sd.sampling import check_sampler_config
    from bayes_sd.sweeps import progress_bar

    distributed = _distributed()
    if not isinstance(sweeps, Mapping) or not sweeps:
        raise ValueError("sweeps must be a non-empty mapping of name -> sweep table")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers!r}")
    config = dict(sampler_config or {})
    config.setdefault("cores", max(1, (os.cpu_count() or 1) // workers))
    config.setdefault("progressbar", False)
    check_sampler_config(config)
    root = str(compile_root or Path(tempfile.gettempdir()) / "bayes_sd-compile")
    own = client is None
    if own:
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                           processes=True, dashboard_address=None)  # fmt: skip
        client = distributed.Client(cluster)
    out = FitMany()
    try:
        client.register_plugin(_compile_dir_plugin(root))
        futures = {}
        for i, (name, sweep) in enumerate(sweeps.items()):
            future = client.submit(_fit_one, name, sweep, model_config, config, random_seed + i,
                                   key=f"bayes_sd-fit-{i}-{name}", pure=False)  # fmt: skip
            futures[future] = name
        rows = []
        quiet = contextlib.nullcontext(lambda n=1: None)
        with progress_bar(len(futures), "fitting") if progress else quiet as tick:
            for future in distributed.as_completed(futures):
                name = futures[future]
                if future.status == "error":
                    err = future.exception()
                    out.failures[name] = f"{type(err).__name__}: {err}"[:400]
                else:
                    res = future.result()
                    out.models[name] = _load(res["model"])
                    rows.append({"sweep": name, **res["diagnostics"]})
                tick()
        out.diagnostics = pd.DataFrame(rows)
    finally:
        if own:
            client.close()
            cluster.close()
    return out


def _load(data: bytes):
    from bayes_sd.model import LatencyModel

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.nc"
        path.write_bytes(data)
        return LatencyModel.load(path)
