"""``bayes-sd fit-many``: one fitted model per sweep, the fits run on Dask workers
(:func:`bayes_sd.fleet.fit_many`). Registered by :func:`bayes_sd.cli.build_parser`; errors follow
its exit codes (a sweep whose fit failed: exit 2 after the others are saved)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bayes_sd.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

EXIT_OK, EXIT_DATA = 0, 2


def _file_name(name: str) -> str:
    """A sweep's name as a file name: letters, digits, ``.-_`` kept, the rest ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "sweep"


def _sweeps(args: argparse.Namespace) -> dict[str, pd.DataFrame]:
    """The sweeps to fit: one per input (named by its file or folder name), or one input set
    split by ``--by`` (named by the column's values)."""
    from bayes_sd.cli import _parse_meta
    from bayes_sd.io import read_sweep

    meta = _parse_meta(args.meta)
    if args.by:
        table = read_sweep(args.inputs, **meta)
        if args.by not in table.columns:
            raise DataError(f"--by {args.by}: no such column; columns: {', '.join(table.columns)}")
        if table[args.by].isna().any():
            raise DataError(
                f"--by {args.by}: {int(table[args.by].isna().sum())} runs have no value"
            )
        return {str(k): part for k, part in table.groupby(args.by, sort=True)}
    sweeps = {}
    for path in args.inputs:
        name = Path(path).stem if Path(path).is_file() else Path(path).name
        if name in sweeps:
            raise DataError(f"two inputs are named {name!r}: rename one or use --by", file=path)
        sweeps[name] = read_sweep(path, **meta)
    return sweeps


def cmd_fit_many(args: argparse.Namespace) -> int:
    """Fit one model per sweep on Dask workers; save each as OUT/<name>.nc with a diagnostics
    table."""
    from bayes_sd.cli import sampler_config_of
    from bayes_sd.fleet import fit_many
    from bayes_sd.priors import load_model_config
    from bayes_sd.report import markdown_table
    from bayes_sd.schema import atomic_write

    if args.scheduler and args.workers is not None:
        raise DataError("give --scheduler or --workers, not both")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DataError("--out must be a folder (one model file per sweep)", file=out)
    model_config = load_model_config(args.model_config) if args.model_config else None
    sweeps = _sweeps(args)
    files = {name: out / f"{_file_name(name)}.nc" for name in sweeps}
    if len(set(files.values())) < len(files):
        raise DataError("two sweeps map to the same model file name; rename them")
    clash = [str(f) for f in files.values() if f.exists()]
    if clash:  # before any fitting: a fit is minutes, an overwrite is data lost
        raise DataError(f"model files exist already (remove them or choose another --out): "
                        f"{', '.join(clash[:3])}{' ...' if len(clash) > 3 else ''}")  # fmt: skip
    workers = 2 if args.workers is None else args.workers
    where = args.scheduler or f"a local cluster of {workers} worker processes"
    print(f"bayes-sd fit-many: {len(sweeps)} sweeps ({', '.join(map(str, sweeps))}) on {where}; "
          "each worker compiles the model once (a minute) ...", file=sys.stderr)  # fmt: skip
    res = fit_many(
        sweeps,
        client=args.scheduler,
        workers=workers,
        model_config=model_config,
        sampler_config=sampler_config_of(args),
        random_seed=args.seed,
        compile_root=args.compile_root,
        progress=not args.quiet,
    )
    out.mkdir(parents=True, exist_ok=True)
    for name, model in res.models.items():
        print(f"wrote {model.save(files[name])}")
    if len(res.diagnostics):
        diag = res.diagnostics[["sweep", "runs_fitted", "max_rhat", "min_ess_bulk", "divergences",
                                "seconds"]]  # fmt: skip
        atomic_write(out / "diagnostics.csv", lambda p: diag.to_csv(p, index=False))
        print(markdown_table(diag))
        print(f"wrote {out / 'diagnostics.csv'}")
    for name, error in res.failures.items():
        print(f"bayes-sd: error: sweep {name!r} was not fitted: {error}", file=sys.stderr)
    return EXIT_DATA if res.failures else EXIT_OK


def add_commands(add) -> None:
    """Register ``fit-many`` with the parser's ``add(name, **kw)``."""
    from bayes_sd.cli import add_sampler_options

    p = add(
        "fit-many",
        help="fit one model per sweep on Dask workers (the dask extra)",
        description="Fit one hierarchical model per sweep — per input, or per value of a column "
        "with --by — on a local Dask cluster (--workers) or any Dask scheduler (--scheduler); "
        "saves OUT/<sweep>.nc per fitted sweep and OUT/diagnostics.csv. A sweep whose fit fails "
        "is reported by name (exit 2) and the others are saved. Needs "
        "pip install 'bayes_sd[dask]'.",
    )
    p.add_argument("inputs", nargs="+", help="result files, folders or tables: one sweep each")
    p.add_argument("--by", metavar="COLUMN",
                   help="read every input as one table and fit one sweep per value of COLUMN "
                        "(e.g. source, gpu, dataset)")  # fmt: skip
    p.add_argument("--out", required=True, help="folder for the model files")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                   help="metadata for every run")  # fmt: skip
    p.add_argument("--model-config", default=None, metavar="FILE.yaml",
                   help="priors and model options from a YAML file (as bayes-sd fit)")  # fmt: skip
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N", default=None,
                       help="worker processes of a local Dask cluster (default: 2)")  # fmt: skip
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="a running Dask scheduler instead, e.g. tcp://host:8786")  # fmt: skip
    p.add_argument("--compile-root", default=None, metavar="FOLDER",
                   help="folder of the workers' PyTensor compile directories (default: under "
                        "the system's temporary folder)")  # fmt: skip
    add_sampler_options(p)
    p.add_argument(
        "--seed", type=int, default=0, help="sweep i is fitted with seed + i (default: %(default)s)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_fit_many)
