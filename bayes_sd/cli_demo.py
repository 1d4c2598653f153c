"""The ``demo`` command of ``bayes-sd``: the main job on the embedded data (``make demo``) — a
first look by least squares, the Bayesian fit of the real vLLM sweep with its report, and TTFT,
TPOT and E2E of a real engine against load. Registered by :func:`bayes_sd.cli.build_parser`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bayes_sd import __version__

EXIT_OK = 0


def _helpers():
    from bayes_sd import cli

    return cli


def _table(df) -> str:
    return _helpers()._markdown_table(df)


def add_commands(add) -> None:
    """Register ``demo`` with ``add`` (``bayes_sd.cli.build_parser``'s sub-parser factory)."""
    demo = add("demo", help="summarise the embedded example data into a report")
    demo.add_argument("--out", default="reports/demo", help="output folder (default: %(default)s)")
    demo.add_argument(
        "--fit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also fit the Bayesian model to the real sweep, and with --phases to a real "
        "engine's TTFT, TPOT and E2E (default: on)",
    )
    demo.add_argument(
        "--draws",
        type=int,
        default=1000,
        help="posterior draws (and tuning steps) per chain (default: %(default)s)",
    )
    demo.add_argument("--chains", type=int, default=4, help="chains per fit (default: %(default)s)")
    demo.add_argument("--slo", type=float, default=3.0,
                      help="latency SLO in seconds (default: %(default)s)")  # fmt: skip
    demo.add_argument(
        "--phases",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also fit TTFT, TPOT and E2E of a real engine's closed-loop sweep (InferenceX: "
        "DeepSeek-R1 on 8×H200 with SGLang; default: on)",
    )
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """Summarise the embedded data: the real vLLM sweep and the measured step costs."""
    from bayes_sd import demo
    from bayes_sd.schema import atomic_write

    out = Path(args.out)
    t0 = time.perf_counter()
    print("bayes-sd demo: loading embedded examples; fitting C1/(1 - rate*C2) per series and "
          "a + b*B*q + c*B*ctx per model ...", file=sys.stderr)  # fmt: skip
    look = demo.first_look()
    print(f"  vllm-blog-2024: {look.counts['runs']} runs; stepcost: {look.counts['steps']} "
          "timed passes", file=sys.stderr)  # fmt: skip
    show_series = look.series[
        ["dataset", "method", "k", "C1_s", "C2_s", "saturation_rate", "rms_rel_error", "n_runs"]
    ]
    show_pairs = look.pairs[["dataset", "method", "k", "speedup_at_zero_load", "C1R", "C2R",
                             "break_even_rate", "sustainable_rate_ratio"]]  # fmt: skip
    text = [
        "# bayes_sd demo: what the embedded data says\n\n",
        f"bayes_sd {__version__}. Point estimates by least squares (no intervals): a first look "
        "before the Bayesian model. Data provenance: `bayes_sd.datasets.data_dir()` READMEs.\n",
        "## Real vLLM sweep (Llama-3-70B, 4×H100, vLLM blog 2024-10-17)\n\n",
        _table(look.overview.drop(columns=["source", "gpu", "target"])),
        "\n### Open-loop fit per series: L = C1 / (1 − λ·C2)\n\n",
        _table(show_series),
        "\n### SD against no SD\n\n",
        "Speedup at zero load is 1/C1R; SD loses beyond the break-even rate "
        "(docs/science.md). The blog reported SD losing past about 8 QPS on ShareGPT.\n\n",
        _table(show_pairs),
        "\n## Measured step costs (H100, H200): t = a + b·B·q + c·B·ctx (decode, ms)\n\n",
        "MoE targets fit worse: their weight reads grow with the experts touched.\n\n",
        _table(look.step_fit),
    ]
    if args.fit:
        text += _demo_bayes(out, args)
    if args.fit and args.phases:
        text += _demo_phases(out, args)
    report = "".join(text)
    atomic_write(out / "summary.md", lambda p: p.write_text(report, encoding="utf-8"))
    atomic_write(out / "series_fits.csv", lambda p: look.series.to_csv(p, index=False))
    atomic_write(out / "step_cost_fits.csv", lambda p: look.step_fit.to_csv(p, index=False))
    for _, row in look.pairs.iterrows():
        print(
            f"  {row['dataset']}: SD ({row['method']}, k={row['k']}) speedup "
            f"{row['speedup_at_zero_load']:.2f}x at zero load, break-even at "
            f"{row['break_even_rate']:.1f} req/s",
            file=sys.stderr,
        )
    print(f"wrote {out / 'summary.md'} ({time.perf_counter() - t0:.1f} s)")
    return EXIT_OK


def _demo_bayes(out: Path, args: argparse.Namespace) -> list[str]:
    """The Bayesian section of the demo report (see :func:`bayes_sd.demo.bayesian_fit`)."""
    from bayes_sd import demo

    print(
        f"  Bayesian fit of the real sweep (nutpie, {args.chains} chains x {args.draws} draws; "
        "the first compile takes a minute) ...",
        file=sys.stderr,
    )
    res = demo.bayesian_fit(draws=args.draws, chains=args.chains, slo_s=args.slo)
    res.model.save(out / "vllm-blog-model.nc")
    title = "Posterior report: real vLLM sweep (vLLM blog 2024)"
    _helpers()._write_report(res.model, out / "report", title, slo=args.slo)
    for _, be in res.break_even.iterrows():
        print(
            f"  {be['dataset']}: break-even {be['break_even_median']:.1f} req/s "
            f"(90%: {be['break_even_lo']:.1f}-{be['break_even_hi']:.1f})",
            file=sys.stderr,
        )
    return [
        "\n## Bayesian model of the real sweep (posterior, 90% intervals)\n\n",
        f"Fitted in {res.fit_seconds:.0f} s (compile included). Sampler diagnostics:\n\n",
        _table(res.diagnostics),
        f"\n### Predicted against measured speedup (k = {demo.BLOG_K})\n\n",
        _table(res.speedup),
        "\n### Break-even rate (SD stops paying)\n\n",
        "The blog saw SD stop paying near 8 QPS on ShareGPT.\n\n",
        _table(res.break_even),
        f"\n### Highest rate with P(mean latency <= {args.slo:g} s) >= 0.9\n\n",
        _table(res.sustainable),
        "\nThe posterior report opens with the decisions per configuration (capacity under "
        "the SLO and the binding term, break-even, best k by load, the throughput-"
        "interactivity frontier), then figures, fit quality and coefficient tables: "
        "`report/report.md`, "
        "`report/report.html` (one file) and `report/latex/` (booktabs tables, PDF figures).\n",
        "\nThe fitted model is saved as `vllm-blog-model.nc`: try "
        f"`bayes-sd plan --model {out / 'vllm-blog-model.nc'} --config gpu=H100-SXM-80GB "
        "--config num_gpus=4 --config target=meta-llama/Meta-Llama-3-70B-Instruct "
        "--config dataset=ShareGPT --config prefill_len=215 --config decode_len=198 "
        "--config drafter=turboderp/Qwama-0.5B-Instruct --config method=draft_model "
        "--ks 0,2,4 --slo 3s`.\n",
    ]


def _demo_phases(out: Path, args: argparse.Namespace) -> list[str]:
    """The per-phase section: TTFT, TPOT and E2E of a real engine against load, with bands
    (see :func:`bayes_sd.demo.real_engine_fit`), and its figure ``real-engine-phases.png``."""
    from bayes_sd import demo, figures
    from bayes_sd.schema import atomic_write

    where = f"{demo.REAL_ENGINE['engine']} on 8 × {demo.REAL_ENGINE['gpu']}"
    # 1.5x the draws: its noise scales mix slowly (at 4 x 1,000 a fresh machine's draws gave
    # bulk ESS 366 for tpot_sigma, under the 400 the convergence check asks)
    draws = args.draws * 3 // 2
    print(f"  per-phase fit of a real engine (InferenceX, DeepSeek-R1, {where}; {args.chains} "
          f"chains x {draws} draws) ...", file=sys.stderr)  # fmt: skip
    res = demo.real_engine_fit(draws=draws, chains=args.chains)
    res.model.save(out / "real-engine-model.nc")
    fig = figures.phases_figure(res.model)
    atomic_write(out / "real-engine-phases.png",
                 lambda p: fig.savefig(p, format="png", dpi=120, bbox_inches="tight"))  # fmt: skip
    atomic_write(out / "real-engine-phases.csv", lambda p: res.runs.to_csv(p, index=False))
    inside = res.runs.groupby("metric", sort=False)["inside"].mean()
    print("  TTFT / TPOT / E2E inside their 90% intervals: "
          + " / ".join(f"{v:.0%}" for v in inside), file=sys.stderr)  # fmt: skip
    return [
        f"\n## TTFT, TPOT and E2E of a real engine against load (InferenceX: DeepSeek-R1, "
        f"{where}, MTP off and on; closed loop)\n\n",
        f"One model for the three phases (docs/model.md), fitted in {res.fit_seconds:.0f} s "
        "(compile included). Sampler diagnostics:\n\n",
        _table(res.diagnostics),
        "\n![TTFT, TPOT and E2E against requests in flight: posterior median (line), 90% "
        "interval of a measured run (band), measured means (points)](real-engine-phases.png)"
        "\n\nEvery run, measured against the posterior median and the 90% interval of a "
        "measured run (`real-engine-phases.csv`; the model: `real-engine-model.nc`); the figure "
        "extends to twice the largest measured load. Held out, at higher loads and on unseen "
        "GPUs: docs/validation.md §5.\n\n",
        _table(res.runs),
    ]
