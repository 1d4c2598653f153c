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

__all__ = ["FitMany", "dask_client", "fit_many", "run_tasks", "worker_cores"]


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


def _flags(path) -> str:
    """``PYTENSOR_FLAGS`` of this process with ``base_compiledir`` set to ``path``."""
    flags = [f for f in os.environ.get("PYTENSOR_FLAGS", "").split(",")
             if f and not f.startswith("base_compiledir=")]  # fmt: skip
    return ",".join([*flags, f"base_compiledir={path}"])


def _compile_dir_plugin(root: str):
    """A worker plugin giving each worker process its own PyTensor compile directory."""
    distributed = _distributed()

    class CompileDir(distributed.WorkerPlugin):
        name = "bayes_sd-compile-dir"

        def __init__(self, root: str) -> None:
            self.root = root

        def setup(self, worker) -> None:
            if "pytensor" in sys.modules:  # too late to choose: is it one of ours?
                import pytensor

                if Path(self.root) in Path(pytensor.config.base_compiledir).parents:
                    return
                logging.getLogger("bayes_sd.fleet").warning(
                    "worker %s imported PyTensor before bayes_sd set its compile directory: "
                    "start workers with their own PYTENSOR_FLAGS=base_compiledir=...",
                    worker.address,
                )
                return
            os.environ["PYTENSOR_FLAGS"] = _flags(Path(self.root) / f"worker-{os.getpid()}")

    return CompileDir(root)


def _local_cluster(distributed, workers: int, root: str):
    """A ``LocalCluster`` of single-threaded worker processes, each started with its own
    ``base_compiledir`` in its environment: a spawned worker re-imports the caller's main
    module, which may import PyTensor before any plugin runs. Workers start one at a time (the
    environment is the parent's at spawn) and the parent's environment is restored after."""
    cluster = distributed.LocalCluster(n_workers=0, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")  # fmt: skip
    saved = os.environ.get("PYTENSOR_FLAGS")
    try:
        for i in range(workers):
            os.environ["PYTENSOR_FLAGS"] = _flags(Path(root) / f"worker-{i}")
            cluster.scale(i + 1)
            cluster.wait_for_workers(i + 1, timeout=120)
    except BaseException:
        cluster.close()
        raise
    finally:
        if saved is None:
            os.environ.pop("PYTENSOR_FLAGS", None)
        else:
            os.environ["PYTENSOR_FLAGS"] = saved
    return cluster


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


@contextlib.contextmanager
def dask_client(client=None, *, workers: int = 2, compile_root: str | os.PathLike | None = None):
    """A ``distributed.Client`` for a block of work, each worker with its own compile directory.

    ``client``: a ``Client`` (used as it is), a scheduler address (``"tcp://host:8786"``:
    connected for the block, the cluster left running), or ``None``: a ``LocalCluster`` of
    ``workers`` single-threaded worker processes, started for the block and closed after it.
    Every worker process compiles into ``compile_root/worker-<pid>`` (default: a folder under
    the system's temporary directory)."""
    distributed = _distributed()
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers!r}")
    root = str(compile_root or Path(tempfile.gettempdir()) / "bayes_sd-compile")
    with contextlib.ExitStack() as stack:
        if client is None:
            cluster = stack.enter_context(_local_cluster(distributed, workers, root))
            client = stack.enter_context(distributed.Client(cluster))
        elif isinstance(client, str):
            try:
                client = stack.enter_context(distributed.Client(client, timeout="30s"))
            except OSError as err:
                raise OSError(f"cannot reach the Dask scheduler at {client}: {err}") from err
        client.register_plugin(_compile_dir_plugin(root))
        yield client


def worker_cores(client, cores: int | None = None) -> int:
    """Cores for one task's chains: ``cores`` if given, else this machine's cores shared by the
    client's workers (two workers on two cores: one each)."""
    if cores:
        return int(cores)
    n = max(1, len(client.scheduler_info().get("workers", {})))
    return max(1, (os.cpu_count() or 1) // n)


def run_tasks(client, fn, tasks: Mapping[Any, tuple], *, label: str, progress: bool = True,
              **shared):  # fmt: skip
    """Run ``fn(*args, **shared)`` for every ``key -> args`` of ``tasks`` on ``client``; yield
    ``(key, result, None)`` or ``(key, None, "ExceptionType: message")`` as tasks finish (a
    failed task does not stop the others). ``shared`` tables are scattered to every worker once.
    A progress bar on stderr (``label``) counts finished tasks."""
    from bayes_sd.sweeps import progress_bar

    distributed = _distributed()
    shared = {k: client.scatter(v, broadcast=True) if isinstance(v, pd.DataFrame) else v
              for k, v in shared.items()}  # fmt: skip
    futures = {}
    for i, (key, args) in enumerate(tasks.items()):
        future = client.submit(fn, *args, **shared, key=f"bayes_sd-{label}-{i}", pure=False)
        futures[future] = key
    quiet = contextlib.nullcontext(lambda n=1: None)
    with progress_bar(len(futures), label) if progress else quiet as tick:
        for future in distributed.as_completed(futures):
            key = futures[future]
            if future.status == "error":
                err = future.exception()
                yield key, None, f"{type(err).__name__}: {err}"[:400]
            else:
                yield key, future.result(), None
            tick()


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
    ``distributed.Client`` of any cluster or a scheduler address (``"tcp://host:8786"``);
    ``None`` starts a ``LocalCluster`` of ``workers`` single-threaded worker processes for the
    call (and closes it). Each fit samples with ``sampler_config`` (its chains run on
    ``cpu_count // workers`` cores unless ``cores`` is given) and seed ``random_seed + i`` for
    the i-th sweep, so a run is reproducible. Each worker process compiles into
    ``compile_root/worker-<pid>`` (default: a folder under the system's temporary directory). A
    progress bar on stderr counts finished fits; a failed fit is recorded in ``.failures`` and
    the others go on. Returns :class:`FitMany`."""
    from bayes_sd.sampling import check_sampler_config

    if not isinstance(sweeps, Mapping) or not sweeps:
        raise ValueError("sweeps must be a non-empty mapping of name -> sweep table")
    out = FitMany()
    with dask_client(client, workers=workers, compile_root=compile_root) as client:
        config = dict(sampler_config or {})
        config["cores"] = worker_cores(client, config.get("cores"))
        config.setdefault("progressbar", False)
        check_sampler_config(config)
        tasks = {name: (name, sweep, model_config, config, random_seed + i)
                 for i, (name, sweep) in enumerate(sweeps.items())}  # fmt: skip
        rows = []
        for name, res, error in run_tasks(client, _fit_one, tasks, label="fitting",
                                          progress=progress):  # fmt: skip
            if error is not None:
                out.failures[name] = error
            else:
                out.models[name] = _load(res["model"])
                rows.append({"sweep": name, **res["diagnostics"]})
    out.diagnostics = pd.DataFrame(rows)
    return out


def _load(data: bytes):
    from bayes_sd.model import LatencyModel

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.nc"
        path.write_bytes(data)
        return LatencyModel.load(path)
