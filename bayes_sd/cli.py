"""The ``bayes-sd`` command line: a thin layer over the library.

Exit codes: 0 success, 1 unexpected internal error, 2 bad input data or usage.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

from bayes_sd import __version__
from bayes_sd.errors import DataError

EXIT_OK, EXIT_INTERNAL, EXIT_DATA = 0, 1, 2


def _markdown_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    if df.empty:
        return "_(none)_\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, float):
                cells.append(format(v, floatfmt))
            else:
                cells.append("" if pd.isna(v) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cmd_demo(args: argparse.Namespace) -> int:
    """Summarise the embedded data: the real vLLM sweep and the measured step costs."""
    from bayes_sd import datasets, summaries
    from bayes_sd.schema import atomic_write

    out = Path(args.out)
    t0 = time.perf_counter()
    print("bayes-sd demo: loading embedded examples ...", file=sys.stderr)
    sweep = datasets.load_example("vllm-blog-2024")
    steps = datasets.load_example("stepcost")
    print(
        f"  vllm-blog-2024: {len(sweep)} runs; stepcost: {len(steps)} timed passes", file=sys.stderr
    )
    print(
        "  fitting C1/(1 - rate*C2) per series and a + b*B*q + c*B*ctx per model ...",
        file=sys.stderr,
    )
    series = summaries.fit_open_loop_series(sweep)
    pairs = summaries.break_even_table(series)
    step_fit = summaries.fit_step_costs(steps)
    overview = summaries.sweep_overview(sweep)

    show_series = series[
        ["dataset", "method", "k", "C1_s", "C2_s", "saturation_rate", "rms_rel_error", "n_runs"]
    ]
    show_pairs = pairs[
        [
            "dataset",
            "method",
            "k",
            "speedup_at_zero_load",
            "C1R",
            "C2R",
            "break_even_rate",
            "sustainable_rate_ratio",
        ]
    ]
    text = [
        "# bayes_sd demo: what the embedded data says\n\n",
        f"bayes_sd {__version__}. Point estimates by least squares (no intervals): a first look "
        "before the Bayesian model. Data provenance: `bayes_sd.datasets.data_dir()` READMEs.\n",
        "## Real vLLM sweep (Llama-3-70B, 4×H100, vLLM blog 2024-10-17)\n\n",
        _markdown_table(overview.drop(columns=["source", "gpu", "target"])),
        "\n### Open-loop fit per series: L = C1 / (1 − λ·C2)\n\n",
        _markdown_table(show_series),
        "\n### SD against no SD\n\n",
        "Speedup at zero load is 1/C1R; SD loses beyond the break-even rate "
        "(docs/science.md). The blog reported SD losing past about 8 QPS on ShareGPT.\n\n",
        _markdown_table(show_pairs),
        "\n## Measured step costs (H100, H200): t = a + b·B·q + c·B·ctx (decode, ms)\n\n",
        "MoE targets fit worse: their weight reads grow with the experts touched.\n\n",
        _markdown_table(step_fit),
    ]
    report = "".join(text)
    atomic_write(out / "summary.md", lambda p: p.write_text(report, encoding="utf-8"))
    atomic_write(out / "series_fits.csv", lambda p: series.to_csv(p, index=False))
    atomic_write(out / "step_cost_fits.csv", lambda p: step_fit.to_csv(p, index=False))
    for _, row in pairs.iterrows():
        print(
            f"  {row['dataset']}: SD ({row['method']}, k={row['k']}) speedup "
            f"{row['speedup_at_zero_load']:.2f}x at zero load, break-even at "
            f"{row['break_even_rate']:.1f} req/s",
            file=sys.stderr,
        )
    print(f"wrote {out / 'summary.md'} ({time.perf_counter() - t0:.1f} s)")
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
    from bayes_sd.schema import write_sweep

    table = read_sweep(args.inputs, **_parse_meta(args.meta))
    path = write_sweep(table, args.out)
    n_sat = int(table["saturated"].sum())
    print(f"wrote {path}: {len(table)} runs ({n_sat} flagged saturated)")
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
    bar = sweeps.Progress(len(runs), "simulating")
    results = sweeps.run_grid(
        runs,
        steps,
        jobs=args.jobs,
        progress=bar.update,
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayes-sd",
        description="Bayesian latency models of speculative decoding in LLM serving.",
    )
    parser.add_argument("--version", action="version", version=f"bayes_sd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="summarise the embedded example data into a report")
    demo.add_argument("--out", default="reports/demo", help="output folder (default: %(default)s)")
    demo.set_defaults(func=cmd_demo)

    ingest = sub.add_parser(
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
    ingest.set_defaults(func=cmd_ingest)

    sim = sub.add_parser(
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
    sim.add_argument("--seed", type=int, default=0)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return int(args.func(args))
    except DataError as err:
        print(f"bayes-sd: error: {err}", file=sys.stderr)
        return EXIT_DATA
    except KeyboardInterrupt:
        print("bayes-sd: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one clear line; the traceback only on request
        if "--debug" in sys.argv:
            raise
        print(
            f"bayes-sd: internal error: {type(err).__name__}: {err} "
            "(please report it; rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
