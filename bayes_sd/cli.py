"""The ``bayes-sd`` command line: a thin layer over the library.

Exit codes: 0 success, 1 unexpected internal error, 2 bad input data or usage.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from bayes_sd import __version__
from bayes_sd.errors import DataError, interface

if TYPE_CHECKING:
    import pandas as pd

EXIT_OK, EXIT_INTERNAL, EXIT_DATA = 0, 1, 2


def _markdown_table(df: pd.DataFrame) -> str:
    from bayes_sd.report import markdown_table

    return markdown_table(df)


def _write_report(model, folder: Path, title: str, slo=None, credibility: float = 0.95,
                  max_configs: int = 8) -> None:  # fmt: skip
    from bayes_sd.report import build_report

    print(f"  writing the posterior report to {folder} ...", file=sys.stderr)
    rep = build_report(model, title=title, slo=slo, credibility=credibility,
                       max_configs=max_configs)  # fmt: skip
    rep.to_markdown(folder)
    rep.to_html(folder / "report.html")
    rep.to_latex(folder / "latex")


def cmd_report(args: argparse.Namespace) -> int:
    """Posterior report of a saved model: Markdown + PNG, one HTML file, LaTeX tables."""
    from bayes_sd.slo import parse_slo

    # the arguments first (fast errors), then the model
    slo = parse_slo(args.slo) if args.slo is not None else None
    if not 0 < args.credibility < 1:
        raise DataError(f"--credibility must be between 0 and 1, got {args.credibility:g}")
    if args.max_configs < 1:
        raise DataError(f"--max-configs must be at least 1, got {args.max_configs}")
    model = _load_model(args.model)
    out = Path(args.out)
    _write_report(model, out, args.title, slo, args.credibility, args.max_configs)
    print(f"wrote {out / 'report.md'}, {out / 'report.html'} and {out / 'latex'}/")
    return EXIT_OK


def _parse_meta(items: list[str]) -> dict[str, str]:
    meta = {}
    for item in items:
        if "=" not in item:
            raise DataError(f"--meta expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        meta[key.strip()] = value.strip()
    return meta


def cmd_ingest(args: argparse.Namespace) -> int:
    """Read any supported input and write the canonical sweep table."""
    from bayes_sd.io import read_sweep
    from bayes_sd.load_checks import at_ingest
    from bayes_sd.schema import write_sweep

    table = read_sweep(args.inputs, **_parse_meta(args.meta))
    table, n_falling = at_ingest(table, exclude=args.exclude_falling)
    path = write_sweep(table, args.out)
    n_sat = int(table["saturated"].sum())
    note = f", {n_falling} excluded: latency falls with load" if n_falling else ""
    print(f"wrote {path}: {len(table)} runs ({n_sat} flagged saturated{note})")
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    """Simulate a grid of configurations × rates; write vLLM JSON per run and a canonical CSV."""
    import json

    from bayes_sd import datasets, sweeps
    from bayes_sd.io import read_step_costs, sweep_from_results
    from bayes_sd.schema import atomic_write, write_sweep
    from bayes_sd.stepmodel import StepCostModel

    if args.step_costs is None:
        steps_table = datasets.load_example("stepcost")
    else:
        steps_table = read_step_costs(args.step_costs)
    steps = StepCostModel.from_table(steps_table)
    configs = sweeps.demo_grid()
    if args.grid == "small":  # one GPU, three targets, two SD settings: a quick look
        configs = [c for c in configs if c.gpu == "H100-SXM-80GB"
                   and c.target in ("llama-3.2-1b", "llama-3.1-8b", "olmoe-1b-7b")
                   and (c.prompt_len, c.output_len) == (1024, 256)
                   and (c.k == 0 or (c.k, c.alpha) in ((1, 0.6), (3, 0.8)))]  # fmt: skip
    for key in ("gpu", "target"):
        wanted = getattr(args, key)
        if wanted:
            configs = [c for c in configs if getattr(c, key) in wanted]
    if not configs:
        raise DataError("no configuration left after the --gpu/--target filters")
    runs = sweeps.plan_runs(configs, steps, seed=args.seed)
    out = Path(args.out)
    print(f"bayes-sd simulate: {len(configs)} configurations, {len(runs)} runs "
          f"(seed {args.seed}, {args.jobs or 'all'} processes) -> {out}",
          file=sys.stderr)  # fmt: skip
    with sweeps.progress_bar(len(runs), "simulating") as update:
        results = sweeps.run_grid(
            runs,
            steps,
            jobs=args.jobs,
            progress=update,
            min_requests=args.min_requests,
            max_requests=args.max_requests,
        )
    if args.json:
        for name, obj, _ in results:
            text = json.dumps(obj)
            atomic_write(out / "runs" / name, lambda p, text=text: p.write_text(text))
    table = sweep_from_results([(name, obj) for name, obj, _ in results], num_gpus=1,
                               source="simulated")  # fmt: skip
    path = write_sweep(table, out / "sweep.csv")
    n_ext = sum(info["extrapolated"] for _, _, info in results)
    print(
        f"wrote {path}: {len(table)} runs ({int(table['saturated'].sum())} flagged saturated,"
        f" {n_ext} used extrapolated step costs)"
    )
    return EXIT_OK


def _parse_ints(text: str, name: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DataError(f"{name} expects comma-separated integers, got {text!r}") from None


def _parse_floats(text: str, name: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DataError(f"{name} expects comma-separated numbers, got {text!r}") from None
    if not values or not all(0 < v < float("inf") for v in values):
        raise DataError(f"{name} expects positive numbers, got {text!r}")
    return values


def _sweep_from_args(args: argparse.Namespace) -> pd.DataFrame:
    from bayes_sd import datasets
    from bayes_sd.io import read_sweep

    if args.example and args.inputs:
        raise DataError("give input files or --example, not both")
    if args.example:
        return datasets.load_example(args.example)
    if not args.inputs:
        raise DataError("give input files (vLLM JSON, GuideLLM reports, tables) or --example")
    return read_sweep(args.inputs, **_parse_meta(args.meta))


def cmd_fit(args: argparse.Namespace) -> int:
    """Fit the hierarchical model to a sweep and save it (NetCDF)."""
    from bayes_sd import datasets
    from bayes_sd.io import read_step_costs

    # the inputs first: a missing or bad file answers before PyMC is imported (seconds)
    sweep = _sweep_from_args(args)
    steps = None
    if args.steps == "example":
        steps = datasets.load_example("stepcost")
    elif args.steps:
        steps = read_step_costs(args.steps)
    from bayes_sd.model import LatencyModel
    from bayes_sd.priors import load_model_config

    model_config = load_model_config(args.model_config) if args.model_config else None
    model = LatencyModel(
        model_config=model_config,
        sampler_config={**sampler_config_of(args), "progressbar": not args.quiet},
    )
    print(
        f"bayes-sd fit: {len(sweep)} runs, {args.chains} chains x {args.draws} draws "
        f"({args.sampler}); compiling the model takes a minute the first time ...",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    # the sampler's progress (PyMC's rich bar draws on stdout) goes to stderr: stdout carries
    # the results alone
    with contextlib.redirect_stdout(sys.stderr):
        model.fit(sweep, steps=steps, random_seed=args.seed)
    d = model.diagnostics
    print(
        f"  {d['runs_fitted']} runs fitted, {d['runs_left_out_saturated']} saturated left out; "
        f"max R-hat {d['max_rhat']:.3f}, min bulk ESS {d['min_ess_bulk']:.0f}, "
        f"{d['divergences']} divergences ({time.perf_counter() - t0:.0f} s)",
        file=sys.stderr,
    )
    path = model.save(args.out)
    print(f"wrote {path}")
    return EXIT_OK


def _load_model(path: str):
    if not Path(path).is_file():  # before importing PyMC (seconds): a bad path fails at once
        raise DataError("no such model file (write one with bayes-sd fit)", file=path)
    from bayes_sd.model import LatencyModel

    return LatencyModel.load(path)


def cmd_predict(args: argparse.Namespace) -> int:
    """Posterior predictive latency, speedup and saturation rate for new rows."""
    import pandas as pd

    from bayes_sd.schema import atomic_write

    model = _load_model(args.model)
    path = Path(args.rows)
    if not path.is_file():
        raise DataError("no such file", file=str(path))
    rows = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    pred = model.predict(rows, interval=args.interval, random_seed=args.seed, noise=args.noise)
    atomic_write(args.out, lambda p: pred.summary.to_csv(p, index=False))
    print(f"wrote {args.out}: {len(pred.summary)} rows")
    return EXIT_OK


def add_sampler_options(parser) -> None:
    """The sampler's options of a fitting command (``bayes-sd fit``, ``fit-many``)."""
    parser.add_argument("--draws", type=int, default=1000,
                        help="posterior draws per chain (default: %(default)s)")  # fmt: skip
    parser.add_argument("--tune", type=int, default=1000,
                        help="tuning steps per chain (default: %(default)s)")  # fmt: skip
    parser.add_argument("--chains", type=int, default=4,
                        help="chains per fit (default: %(default)s)")  # fmt: skip
    parser.add_argument(
        "--target-accept",
        type=_target_accept,
        default="auto",
        help="NUTS target acceptance, a number in (0, 1) or auto (default: %(default)s — 0.9 "
        "for centred residuals, 0.95 for non-centred, by measurement); raise it on divergences",
    )
    parser.add_argument("--sampler", choices=["nutpie", "pymc", "numpyro"], default="nutpie",
                        help="NUTS backend (default: %(default)s)")  # fmt: skip
    parser.add_argument(
        "--adaptation",
        choices=["auto", "draw_diag", "diag", "low_rank"],
        default="auto",
        help="nutpie's mass-matrix adaptation (default: %(default)s — draw_diag for centred "
        "residuals, diag for non-centred, by measurement)",
    )


def _target_accept(text: str) -> str | float:
    """``--target-accept``: ``auto`` or a number (its range is checked with the config)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or auto: {text!r}") from None


def sampler_config_of(args) -> dict:
    """The ``sampler_config`` of the options :func:`add_sampler_options` added."""
    return {"draws": args.draws, "tune": args.tune, "chains": args.chains,
            "target_accept": args.target_accept, "nuts_sampler": args.sampler,
            "adaptation": args.adaptation}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayes-sd",
        description="Bayesian latency models of speculative decoding in LLM serving.",
    )
    parser.add_argument("--version", action="version", version=f"bayes_sd {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of internal errors"
    )
    # --debug is also accepted after the command (bayes-sd fit ... --debug)
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of internal errors")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[debug], **kw)

    ingest = add(
        "ingest",
        help="read vLLM bench JSON, GuideLLM reports or tidy tables into a canonical CSV",
        description="Read result files, folders or tables and write the validated canonical "
        "sweep table (.csv or .parquet). Metadata the files lack comes from --meta, sidecar "
        "bayes_sd.yaml files, or --metadata keys recorded by vllm bench serve.",
    )
    ingest.add_argument("inputs", nargs="+", help="result files or folders")
    ingest.add_argument("--out", required=True, help="output .csv or .parquet")
    ingest.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="metadata for every run, e.g. --meta gpu=H100 --meta k=0",
    )
    ingest.add_argument(
        "--exclude-falling", action="store_true",
        help="mark excluded (kept, not fitted) every run of a series whose mean TTFT, TPOT or "
        "E2E falls below 2/3 of its value at a lower load: an effect the load law does not "
        "have (default: warn only)",
    )  # fmt: skip
    ingest.set_defaults(func=cmd_ingest)

    sim = add(
        "simulate",
        help="simulate a sweep of a continuous-batching server with SD (simulated data)",
        description="Simulate configurations x rates with the discrete-event simulator driven by "
        "measured step costs. Writes sweep.csv (canonical) and, with --json, one vllm bench "
        "serve result JSON per run under runs/. The demo grid regenerates the embedded demo "
        "sweep bit for bit at --seed 0.",
    )
    sim.add_argument(
        "--grid",
        choices=["demo", "small"],
        default="small",
        help="configuration grid (default: %(default)s)",
    )
    sim.add_argument("--gpu", action="append", help="keep only this GPU (repeatable)")
    sim.add_argument("--target", action="append", help="keep only this target (repeatable)")
    sim.add_argument("--out", required=True, help="output folder")
    sim.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    sim.add_argument("--jobs", type=int, default=None, help="processes (default: all CPUs)")
    sim.add_argument(
        "--json",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also write one vLLM result JSON per run (default: on)",
    )
    sim.add_argument(
        "--step-costs",
        default=None,
        help="step-time table to drive the simulator (default: embedded stepcost)",
    )
    sim.add_argument(
        "--min-requests",
        type=int,
        default=1000,
        help="requests per run at least (default: %(default)s)",
    )
    sim.add_argument(
        "--max-requests",
        type=int,
        default=3000,
        help="requests per run at most; runs get 20 per request in flight (default: %(default)s)",
    )
    sim.set_defaults(func=cmd_simulate)

    fit = add(
        "fit",
        help="fit the hierarchical Bayesian model to a sweep and save it (NetCDF)",
        description="Read a sweep (any supported input, or --example) and sample the posterior "
        "of the hierarchical latency model; prints R-hat, ESS and divergences and saves the "
        "model with its training data (load it with LatencyModel.load or bayes-sd predict/plan).",
    )
    fit.add_argument("inputs", nargs="*", help="result files, folders or tables")
    fit.add_argument("--example", help="an embedded sweep instead: demo, vllm-blog-2024 or "
                     "inferencex")  # fmt: skip
    fit.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                     help="metadata for every run, e.g. --meta gpu=H100 (as ingest)")  # fmt: skip
    fit.add_argument("--out", required=True, help="model file to write (.nc)")
    fit.add_argument(
        "--model-config",
        default=None,
        metavar="FILE.yaml",
        help="priors (by name, as {dist, kwargs, dims}), centred, residuals and coverage "
        "from a YAML file (docs/model.md, 'Changing a prior')",
    )
    fit.add_argument(
        "--steps",
        default=None,
        help="step-cost table for the joint step-level likelihood ('example': embedded)",
    )
    add_sampler_options(fit)
    fit.add_argument("--seed", type=int, default=None,
                     help="random seed of the sampler (default: none, a fresh one)")  # fmt: skip
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    fit.set_defaults(func=cmd_fit)

    pred = add(
        "predict",
        help="posterior predictive latency and speedup for new rows",
        description="Rows (CSV or Parquet): gpu, target, k, prefill_len, decode_len, "
        "request_rate or concurrency, and for SD a drafter with alpha or acceptance_length.",
    )
    pred.add_argument("--model", required=True, help="model file from bayes-sd fit")
    pred.add_argument("--rows", required=True, help="rows to predict (.csv or .parquet)")
    pred.add_argument("--out", required=True, help="summary table to write (.csv)")
    pred.add_argument("--interval", type=float, default=0.9,
                      help="credible interval, in (0, 1) (default: %(default)s)")  # fmt: skip
    pred.add_argument("--noise", action="store_true", help="include measurement noise")
    pred.add_argument("--seed", type=int, default=0,
                      help="seed of the predictive draws (default: %(default)s)")  # fmt: skip
    pred.set_defaults(func=cmd_predict)

    from bayes_sd import cli_demo, cli_fleet, cli_plan

    cli_demo.add_commands(add)
    cli_plan.add_commands(add)
    cli_fleet.add_commands(add)

    report = add(
        "report",
        help="posterior report of a saved model (Markdown + PNG, HTML, LaTeX)",
        description="Opens with decisions per configuration of the training data (capacity "
        "under --slo and the binding term, break-even, best draft length by load, the "
        "throughput-interactivity frontier per workload), then the fit (latency against load "
        "with posterior bands, a posterior predictive check, R² and interval coverage), then an "
        "appendix (coefficients with credible intervals, R-hat and ESS; sampler diagnostics).",
    )
    report.add_argument("--model", required=True, help="model file from bayes-sd fit")
    report.add_argument("--out", required=True, help="output folder")
    report.add_argument("--title", default="bayes_sd posterior report",
                        help="the report's title (default: %(default)s)")  # fmt: skip
    report.add_argument(
        "--slo", default=None,
        help="the SLO the decisions answer (capacity and binding term per configuration): "
        "'p99_ttft_ms<=2000,p99_tpot_ms<=50', 'ttft:300 tpot:50' (ms, planned as p90), "
        "'{ttft: {p99: 2s}}' or a duration such as 3s (mean E2E) (default: none — the report "
        "then has break-even, best k and frontier, not capacity)",
    )  # fmt: skip
    report.add_argument(
        "--credibility", type=float, default=0.95,
        help="probability every SLO term holds at the capacity reported (default: %(default)s)",
    )  # fmt: skip
    report.add_argument(
        "--max-configs", type=int, default=8,
        help="configurations the decisions cover, those with SD first (default: %(default)s)",
    )  # fmt: skip
    report.set_defaults(func=cmd_report)
    return parser


_FORMAT_WARNING = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"bayes-sd: {category.__name__}: {message}\n"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(), interface("cli"):  # advice names the CLI's flags
            warnings.simplefilter("default")
            # deprecations inside pytensor / pymc-extras are not the user's to act on
            warnings.simplefilter("ignore", DeprecationWarning)
            if not args.debug:  # one line per warning, without the library's source line
                warnings.formatwarning = _format_warning
            try:
                return int(args.func(args))
            finally:
                warnings.formatwarning = _FORMAT_WARNING
    except ValueError as err:  # DataError and bad arguments to the library
        print(f"bayes-sd: error: {err}", file=sys.stderr)
        return EXIT_DATA
    except ImportError as err:  # an optional extra that is not installed: the message says which
        print(f"bayes-sd: error: {err}", file=sys.stderr)
        return EXIT_DATA
    except KeyboardInterrupt:
        print("bayes-sd: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one clear line; the traceback only on request
        if args.debug:
            raise
        print(
            f"bayes-sd: internal error: {type(err).__name__}: {err} "
            "(please report it; rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
