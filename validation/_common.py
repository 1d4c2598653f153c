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
    doc: str, *, draws: int, chains: int | None = None, seed: int = 1, noncentred: bool = False
) -> argparse.ArgumentParser:
    """The common options: --draws, --chains, --seed, --noncentred, --out (JSON), --docs."""
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
    p.add_argument("--out", help="the JSON results (default: validation/results/<name>.json)")
    p.add_argument("--docs", default=str(DOCS), help="folder of the page's tables and figures")
    return p


def parse(p: argparse.ArgumentParser, argv, name: str) -> argparse.Namespace:
    """Parse, silence library deprecation noise, and resolve ``suffix``, ``out`` and ``docs``."""
    args = p.parse_args(argv)
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", FutureWarning)
    args.suffix = "_noncentred" if getattr(args, "noncentred", False) else ""
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
