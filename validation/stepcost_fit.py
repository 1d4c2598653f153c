"""Real step costs: fit the Bayesian step-level model (bayes_sd.stepfit) to the measured
forward passes on H100 and H200 and check it.

Run: ``.venv/bin/python validation/stepcost_fit.py [--draws 500] [--chains 4]`` (~5 min).

Data: ``load_example("stepcost")`` — 29,947 timed forward passes of eight architectures (dense
and MoE) on H100 and H200 (data/stepcost/README.md: real GPU timings of PyTorch forward passes,
not vLLM). Decode/verification passes only (1,184 measured shapes).

Reports R² per model and GPU (next to a per-model least-squares fit of ``a + b·Bq + c·B·ctx``),
the H200-against-H100 effect on each coefficient for dense and MoE models, the MoE coverage
curve against the measured batch-size scaling, and the closed-loop SD speedup against batch
size for Llama-3.1-8B with the EAGLE-style head on H100 (k = 3, acceptance rate 0.7), next to
the speedup computed directly from the measured passes.

Writes ``validation/results/stepcost_fit.json``, ``docs/validation/stepcost.md`` and
``docs/validation/step_*.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import _common
import numpy as np
import pandas as pd

import bayes_sd
from bayes_sd import summaries
from bayes_sd.stepfit import StepLevelModel

TARGET, DRAFTER, GPU = "llama-3.1-8b", "eagle3-head-8b", "H100-SXM-80GB"
K, ALPHA, CTX = 3, 0.7, 1024
BATCHES = [1, 2, 4, 8, 16, 32, 64, 128]


def measured_speedup(shapes: pd.DataFrame, acceptance_length: float) -> pd.DataFrame:
    """Speedup from the measured median passes at the same shapes (no model)."""
    sel = lambda m, q: shapes[  # noqa: E731
        (shapes["model"] == m) & (shapes["gpu"] == GPU) & (shapes["q"] == q)
        & (shapes["ctx"] == CTX)
    ].set_index("batch")["time_ms"]  # fmt: skip
    base, draft, verify = sel(TARGET, 1), sel(DRAFTER, 1), sel(TARGET, K + 1)
    b = [x for x in BATCHES if x in base.index and x in draft.index and x in verify.index]
    spd = base[b] / ((K * draft[b] + verify[b]) / acceptance_length)
    return pd.DataFrame({"batch": b, "measured_speedup": spd.to_numpy()})


def coverage_table(model: StepLevelModel, lsq: pd.DataFrame) -> pd.DataFrame:
    """MoE models, q = 1, smallest context: measured t(B)/t(1), the posterior of the same ratio,
    and the least-squares dense form's."""
    sh = model.shapes
    rows = []
    for (name, gpu), g in sh[(sh["experts"] > 1) & (sh["q"] == 1)].groupby(["model", "gpu"]):
        g = g[g["ctx"] == g["ctx"].min()].sort_values("batch")
        draws = model.step_time_ms(name, gpu, g["batch"], 1, g["ctx"])
        ratio = draws / draws[:, :1]
        fit = lsq[(lsq["model"] == name) & (lsq["gpu"] == gpu)].iloc[0]
        dense = (
            fit["a_ms"]
            + fit["b_ms_per_token"] * g["batch"]
            + fit["c_ms_per_ctx_token"] * g["batch"] * g["ctx"]
        )
        dense = dense.to_numpy() / dense.to_numpy()[0]
        y = g["time_ms"].to_numpy()
        for j, (_, r) in enumerate(g.iterrows()):
            rows.append(
                {
                    "model": name,
                    "gpu": gpu,
                    "batch": int(r["batch"]),
                    "ctx": int(r["ctx"]),
                    "measured_ratio": y[j] / y[0],
                    "model_median": float(np.median(ratio[:, j])),
                    "model_lo": float(np.quantile(ratio[:, j], 0.05)),
                    "model_hi": float(np.quantile(ratio[:, j], 0.95)),
                    "dense_lsq_ratio": float(dense[j]),
                }
            )
    return pd.DataFrame(rows)


def figures(cov: pd.DataFrame, spd: pd.DataFrame, docs: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs.mkdir(parents=True, exist_ok=True)
    groups = list(cov.groupby(["model", "gpu"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.2), sharey=True)
    for ax, ((name, gpu), g) in zip(np.atleast_1d(axes), groups, strict=True):
        ax.fill_between(g["batch"], g["model_lo"], g["model_hi"], color="C0", alpha=0.3)
        ax.plot(g["batch"], g["model_median"], color="C0", label="step-level model (coverage)")
        ax.plot(g["batch"], g["dense_lsq_ratio"], color="C1", ls="--", label="a + b·B + c·B·ctx")
        ax.plot(g["batch"], g["measured_ratio"], "ko", ms=4, label="measured")
        ax.set_xscale("log", base=2)
        ax.set_title(f"{name}\n{gpu}", fontsize=8)
        ax.set_xlabel("batch size B (q = 1)")
    np.atleast_1d(axes)[0].set_ylabel("t(B) / t(1)")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(docs / "step_moe_coverage.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.fill_between(spd["batch"], spd["pred_lo"], spd["pred_hi"], color="C0", alpha=0.12,
                    label="90%, with the step model's scatter")  # fmt: skip
    ax.fill_between(spd["batch"], spd["speedup_lo"], spd["speedup_hi"], color="C0", alpha=0.35,
                    label="90% interval (mean step times)")  # fmt: skip
    ax.plot(spd["batch"], spd["speedup_median"], color="C0", label="posterior median")
    ax.plot(spd["batch"], spd["measured_speedup"], "ko", ms=4, label="from measured passes")
    ax.axhline(1, color="0.5", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (closed loop)")
    ax.set_ylabel("SD speedup")
    ax.set_title(f"{TARGET} + {DRAFTER}, {GPU}\nk = {K}, acceptance rate {ALPHA}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(docs / "step_speedup_by_batch.png", dpi=110)
    plt.close(fig)


def markdown(meta, quality, gpu, cov, spd, e_len) -> str:
    d = meta["diagnostics"]
    lines = [
        f"Fit: {meta['chains']} chains × {meta['draws']} draws, {meta['seconds']:.0f} s; "
        f"{d['shapes']} measured shapes; max R-hat {d['max_rhat']:.3f}, min bulk ESS "
        f"{d['min_ess_bulk']:.0f}, {d['divergences']} divergences.",
        "",
        "**Fit quality per model and GPU** (posterior median prediction of each shape's median "
        "time; the least-squares column is a separate `a + b·Bq + c·B·ctx` per model and GPU):",
        "",
        "| model | GPU | shapes | R² | R² (log) | median rel. error | max rel. error | R² least "
        "squares |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for _, r in quality.iterrows():
        lines.append(
            f"| {r['model']}{' (MoE)' if r['moe'] else ''} | {r['gpu']} | {r['shapes']} | "
            f"{r['r2']:.3f} | {r['r2_log']:.3f} | {r['median_rel_error']:.1%} | "
            f"{r['max_rel_error']:.0%} | {r['r2_lsq']:.3f} |"
        )
    lines += [
        "",
        "**GPU effect**: each coefficient on H200 over H100 (posterior median, 90% interval):",
        "",
        "| models | a (weights) | b (per token) | c (KV per cached token) | s (multi-token "
        "premium) | e (attention per new × cached token) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for kind, g in gpu.groupby("kind", sort=False):
        cells = [
            f"{r['ratio_median']:.2f} ({r['ratio_lo']:.2f}–{r['ratio_hi']:.2f})"
            for _, r in g.set_index("term").loc[["a", "b", "c", "s", "e"]].iterrows()
        ]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "**MoE coverage**: time at batch B over batch 1 (q = 1, smallest context), measured "
        "against the step-level model with its coverage term and a dense-form least-squares "
        "fit:",
        "",
        "| model | GPU | B | measured | model (90%) | dense least squares |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for _, r in cov[cov["batch"].isin([4, 16, 64, 128])].iterrows():
        lines.append(
            f"| {r['model']} | {r['gpu']} | {r['batch']} | {r['measured_ratio']:.2f} | "
            f"{r['model_median']:.2f} ({r['model_lo']:.2f}–{r['model_hi']:.2f}) | "
            f"{r['dense_lsq_ratio']:.2f} |"
        )
    lines += [
        "",
        f"**Closed-loop SD speedup by batch size**: {TARGET} with {DRAFTER} on {GPU}, k = {K}, "
        f"acceptance rate {ALPHA} (acceptance length {e_len:.2f}), context {CTX}:",
        "",
        "| batch | posterior median | 90% interval (mean step times) | 90% interval (with the "
        "step model's scatter) | from measured passes |",
        "| --- | --- | --- | --- | --- |",
    ]
    for _, r in spd.iterrows():
        lines.append(
            f"| {int(r['batch'])} | {r['speedup_median']:.2f} | {r['speedup_lo']:.2f}–"
            f"{r['speedup_hi']:.2f} | {r['pred_lo']:.2f}–{r['pred_hi']:.2f} | "
            f"{r['measured_speedup']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = _common.parse(_common.parser(__doc__, draws=500, chains=4), argv, "stepcost_fit")
    steps = bayes_sd.load_example("stepcost")
    model = StepLevelModel(sampler_config=_common.sampler_config(args))
    seconds = _common.fit_timed(model, steps, args, "the step-level model")
    lsq = summaries.fit_step_costs(steps)
    quality = model.fit_quality().merge(
        lsq[["model", "gpu", "r2"]].rename(columns={"r2": "r2_lsq"}), on=["model", "gpu"]
    )
    gpu = model.gpu_effects()
    cov = coverage_table(model, lsq)
    e_len = (1 - ALPHA ** (K + 1)) / (1 - ALPHA)
    kw = {"k": K, "acceptance_length": e_len, "batches": BATCHES, "ctx": CTX}
    spd = model.closed_loop_speedup(TARGET, DRAFTER, GPU, **kw)
    noisy = model.closed_loop_speedup(TARGET, DRAFTER, GPU, noise=True, **kw)
    spd["pred_lo"], spd["pred_hi"] = noisy["speedup_lo"], noisy["speedup_hi"]
    spd = spd.merge(measured_speedup(model.shapes, e_len), on="batch", how="left")
    meta = {
        "chains": args.chains,
        "draws": args.draws,
        "seed": args.seed,
        "seconds": seconds,
        "diagnostics": model.diagnostics,
        "bayes_sd": bayes_sd.__version__,
    }
    pd.set_option("display.width", 200)
    for table in (quality, gpu, cov, spd):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    figures(cov, spd, args.docs)
    _common.write_text(args.docs / "stepcost.md", markdown(meta, quality, gpu, cov, spd, e_len))
    payload = {
        "meta": meta,
        "fit_quality": quality.to_dict("records"),
        "gpu_effects": gpu.to_dict("records"),
        "moe_coverage": cov.to_dict("records"),
        "speedup_by_batch": spd.to_dict("records"),
    }
    _common.write_json(args.out, payload)
    print(f"wrote {args.out} and {args.docs}/stepcost.md, step_*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
