"""Simulation-based calibration of the hierarchical latency model (bayes_sd.calibration).

Run: ``.venv/bin/python validation/sbc.py [--reps 100] [--draws 500] [--tune 500]``, one
replication after another; ``--workers 2`` runs them on a local Dask cluster of two worker
processes, ``--scheduler tcp://host:8786`` on any Dask cluster (the ``dask`` extra). The same
seeds give the same ranks either way.

Design (a reduced configuration of the simulated demo sweep's design; its latencies are
replaced by the model's own simulations): three dense targets (Llama-3.2-1B, Llama-3.1-8B,
Qwen2.5-14B) on H100 and H200, four workloads (prompt and output lengths 256 or 1024),
baseline and llama-68m drafting at k = 3 (alpha 0.8), three open-loop rates per series (5, 15
and 30% of the demo's measured capacity): 143 runs, 48 series, 24 systems. Default priors; the
default ``centred="auto"`` picks non-centred shifts for this design (``--noncentred`` forces
them whatever the design).

Writes ``validation/results/sbc.json`` (ranks, per-parameter uniformity tests, fit diagnostics),
``docs/validation/sbc_ranks.png`` (rank histograms) and ``docs/validation/sbc.md`` (the table
the Validation page includes).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import _common
import numpy as np

import bayes_sd
from bayes_sd.calibration import simulation_based_calibration


def sbc_design():
    """The reduced demo design described in the module docstring."""
    s = bayes_sd.load_example("demo")
    fraction = s["file"].str.extract(r"/([0-9.]+)sat\.json$")[0].astype(float)
    keep = (
        s["target"].isin(["llama-3.2-1b", "llama-3.1-8b", "qwen2.5-14b"])
        & (s["drafter"].isna() | (s["drafter"] == "llama-68m"))
        & s["k"].isin([0, 1, 3])
        & (s["alpha"].isna() | (s["alpha"] == 0.8))
        & fraction.isin([0.05, 0.15, 0.3])
    )
    return s[keep].reset_index(drop=True)


def rank_figure(result, path: Path, bins: int = 10) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result.ranks.columns)
    ncol = 6
    nrow = int(np.ceil(len(names) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.2 * ncol, 1.7 * nrow), sharey=True)
    reps = len(result.ranks)
    lo, hi = _binomial_band(reps, bins)
    summary = result.summary(bins)
    for ax, name in zip(axes.flat, names, strict=False):
        counts = summary.loc[name, "counts"]
        ax.axhspan(lo, hi, color="0.85", zorder=0)
        p = summary.loc[name, "p_uniform"]
        ax.bar(range(bins), counts, width=1.0, color="C3" if p < 0.01 else "C0", edgecolor="w")
        ax.set_title(name, fontsize=7)
        ax.set_xticks([])
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(
        f"SBC rank histograms, {reps} replications ({bins} bins; grey: 99% band of a uniform "
        "count; red: chi-square p < 0.01)",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _binomial_band(reps: int, bins: int) -> tuple[float, float]:
    from scipy import stats

    return tuple(float(v) for v in stats.binom.ppf([0.005, 0.995], reps, 1 / bins))


def markdown(result, meta: dict, bins: int = 10) -> str:
    summary = result.summary(bins)
    n = len(summary)
    diag = result.diagnostics
    lines = [
        f"{len(result.ranks)} replications of {meta['runs']} runs each "
        f"({meta['systems']} systems); {meta['draws_per_fit']} posterior draws per fit thinned "
        f"to {result.n_draws}; {meta['prior_draws_stable']} of {meta['prior_draws']} prior draws "
        "kept every run below 95% utilisation (the others were rejected, see below); "
        f"{meta['seconds']:.0f} s in all ({meta.get('ran_on', 'serial')}). Residual shifts: "
        f"{'centred' if meta['centred'] else 'non-centred'}.",
        "",
        f"Fits: median {diag['seconds'].median():.1f} s; divergences in "
        f"{int((diag['divergences'] > 0).sum())} of {len(diag)} fits "
        f"({int(diag['divergences'].sum())} in all); max R-hat > 1.05 in "
        f"{int((diag['max_rhat'] > 1.05).sum())} fits; median of the per-fit minimum bulk ESS "
        f"{diag['min_ess_bulk'].median():.0f} (worst parameter most often: "
        f"{diag['worst_ess'].mode().iloc[0]}).",
        "",
        f"Uniformity (chi-square, {bins} bins): {int((summary['p_uniform'] < 0.01).sum())} of {n} "
        f"parameter elements at p < 0.01 (about {0.01 * n:.1f} expected by chance), "
        f"{int((summary['p_uniform'] < 0.05).sum())} at p < 0.05 ({0.05 * n:.1f} expected).",
        "",
        "| parameter | p (uniform) | mean rank (0.5) | ranks in outer 10% (0.10) |",
        "| --- | --- | --- | --- |",
    ]
    for name, r in summary.iterrows():
        flag = " **!**" if r["p_uniform"] < 0.01 else ""
        lines.append(
            f"| `{name}`{flag} | {r['p_uniform']:.3f} | {r['mean_rank']:.2f} | "
            f"{r['outer_10pct']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = _common.parser(__doc__, draws=500, seed=2026, noncentred=True)
    p.add_argument("--reps", type=int, default=100)
    p.add_argument("--tune", type=int, default=500)
    _common.dask_options(p)
    args = _common.parse(p, argv, "sbc")
    dask = _common.dask_target(args)
    design = sbc_design()
    suffix, out, docs = args.suffix, args.out, args.docs
    start = time.perf_counter()

    def progress(i, n, info):
        print(
            f"[{i:>3}/{n}] rep {info['rep']:>3} {info['seconds']:5.1f} s  "
            f"div {info['divergences']:>3}  "
            f"R-hat {info['max_rhat']:.3f}  min ESS {info['min_ess_bulk']:6.0f} "
            f"({info['worst_ess']})",
            flush=True,
        )

    print(f"SBC: {args.reps} replications; compiling the model ...", flush=True)
    result = simulation_based_calibration(
        design,
        reps=args.reps,
        draws=args.draws,
        tune=args.tune,
        seed=args.seed,
        oversample=5,
        progress=progress,
        model_config={"centred": False} if args.noncentred else None,
        **dask,
    )
    meta = {
        **result.extra,
        "reps": args.reps,
        "draws_per_fit": 2 * args.draws,
        "tune": args.tune,
        "seed": args.seed,
        "seconds": time.perf_counter() - start,
        "ran_on": _common.dask_label(dask),
        "bayes_sd": bayes_sd.__version__,
    }
    summary = result.summary()
    print(summary.drop(columns="counts").to_string(float_format=lambda v: f"{v:.3f}"))
    payload = {
        "meta": meta,
        "summary": summary.reset_index().to_dict("records"),
        "diagnostics": result.diagnostics.to_dict("records"),
        "ranks": result.ranks.to_dict("list"),
        "n_draws": result.n_draws,
    }
    _common.write_json(out, payload)
    rank_figure(result, docs / f"sbc{suffix}_ranks.png")
    _common.write_text(docs / f"sbc{suffix}.md", markdown(result, meta))
    print(f"wrote {out} and {docs}/sbc{suffix}.md, sbc{suffix}_ranks.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
