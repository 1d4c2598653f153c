"""Shared plumbing of the validation scripts: arguments, quiet warnings, atomic outputs."""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

from bayes_sd.schema import atomic_write

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "validation" / "results"
DOCS = ROOT / "docs" / "validation"


def parser(
    doc: str,
    *,
    draws: int,
    chains: int | None = None,
    seed: int = 1,
    noncentred: bool = False,
    model_config: bool = False,
) -> argparse.ArgumentParser:
    """The common options: --draws, --chains, --seed, --noncentred, --model-config (scripts
    that pass it to their fits), --out (JSON), --docs."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--draws", type=int, default=draws, help="posterior draws per chain")
    if chains is not None:
        p.add_argument("--chains", type=int, default=chains)
    p.add_argument("--seed", type=int, default=seed)
    if noncentred:
        p.add_argument(
            "--noncentred",
            action="store_true",
            help="non-centred residual shifts (model_config centred=False); outputs get a "
            "'_noncentred' suffix",
        )
    if model_config:
        p.add_argument(
            "--model-config",
            metavar="FILE",
            help="a YAML/JSON model configuration, as `bayes-sd fit --model-config` (e.g. a "
            "prior to try: validation/configs/); outputs get its name as a suffix",
        )
    p.add_argument("--out", help="the JSON results (default: validation/results/<name>.json)")
    p.add_argument("--docs", default=str(DOCS), help="folder of the page's tables and figures")
    return p


def model_config(args: argparse.Namespace, **extra) -> dict | None:
    """The ``model_config`` of --model-config (read by ``bayes_sd.priors.load_model_config``)
    with ``extra`` on top; None when neither gives anything (the package's defaults)."""
    from bayes_sd.priors import load_model_config

    config = load_model_config(args.model_config) if args.model_config else {}
    for key, value in extra.items():  # priors merge: the script's own on top of the file's
        config[key] = {**config.get(key, {}), **value} if key == "priors" else value
    return config or None


def dask_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--scheduler and --workers: run the script's fits on Dask (the ``dask`` extra)."""
    g = p.add_argument_group("Dask (pip install 'bayes_sd[dask]')")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the fits on this Dask scheduler (tcp://host:8786)")  # fmt: skip
    g.add_argument("--workers", type=int, metavar="N",
                   help="run the fits on a local Dask cluster of N worker processes")  # fmt: skip
    return p


def dask_target(args: argparse.Namespace) -> dict:
    """``client``/``workers`` keywords for bayes_sd's Dask paths (empty: run here, serially)."""
    if args.scheduler and args.workers:
        raise SystemExit("give --scheduler or --workers, not both")
    if args.scheduler:
        return {"client": args.scheduler}
    if args.workers:
        if args.workers < 1:
            raise SystemExit("--workers must be at least 1")
        return {"workers": args.workers, "compile_root": ROOT / ".cache" / "dask-workers"}
    return {}


def dask_label(target: dict) -> str:
    """Where the fits ran, for the results' metadata."""
    if "client" in target:
        return f"Dask scheduler {target['client']}"
    if "workers" in target:
        return f"local Dask cluster of {target['workers']} worker processes"
    return "serial, one process"


def parse(p: argparse.ArgumentParser, argv, name: str) -> argparse.Namespace:
    """Parse, silence library deprecation noise, and resolve ``suffix``, ``out`` and ``docs``."""
    args = p.parse_args(argv)
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", FutureWarning)
    args.suffix = "_noncentred" if getattr(args, "noncentred", False) else ""
    if getattr(args, "model_config", None):  # a variant's outputs beside the default's
        args.suffix += "_" + Path(args.model_config).stem
    args.out = Path(args.out or RESULTS / f"{name}{args.suffix}.json")
    args.docs = Path(args.docs)
    return args


def write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: Path, payload: Any) -> Path:
    return write_text(path, json.dumps(payload, indent=1, default=float))


def sampler_config(args: argparse.Namespace, **extra) -> dict:
    """Draws and tuning steps from --draws, chains from --chains, no progress bar."""
    return {
        "draws": args.draws,
        "tune": args.draws,
        "chains": args.chains,
        "progressbar": False,
        **extra,
    }


def fit_timed(model, data, args: argparse.Namespace, what: str) -> float:
    """Fit ``model`` to ``data`` with --seed, printing what is fitted, the wall time and the
    sampler diagnostics; returns the seconds."""
    print(f"fitting {what} ({args.chains} x {args.draws} draws) ...", flush=True)
    start = time.perf_counter()
    model.fit(data, random_seed=args.seed)
    seconds = time.perf_counter() - start
    print(f"  {seconds:.0f} s; {model.diagnostics}", flush=True)
    return seconds
