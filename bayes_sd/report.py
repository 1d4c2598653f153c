"""Posterior reports: data first (tables and figures), then rendered as a Markdown folder with
PNG figures, one self-contained HTML file, or LaTeX (booktabs) tables with PDF figures.

    report = build_report(model)          # a fitted or loaded LatencyModel
    report.tables["coefficients"]         # DataFrames ...
    report.figures["latency_vs_rate"]     # ... and matplotlib figures
    report.to_markdown("out/report")      # report.md + figures/*.png + tables/*.csv
    report.to_html("out/report.html")     # one file, figures embedded
    report.to_latex("out/paper")          # tables/*.tex (booktabs) + figures/*.pdf

Tables: population coefficients with credible intervals and R-hat/ESS; sampler diagnostics;
fit quality (R² of log latency overall and per series, 90% predictive-interval coverage of the
training runs). Figures: latency against rate per system with posterior bands and the observed
runs; speedup against rate with the break-even band; the normalised collapse of every run onto
``1/(1 − x)``; observed against predicted (a posterior predictive check).
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_sd.schema import atomic_write

__all__ = ["Report", "build_report", "markdown_table"]

MAX_PANELS = 12


@dataclass
class Report:
    title: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, object] = field(default_factory=dict)  # name -> matplotlib Figure
    notes: dict[str, str] = field(default_factory=dict)  # caption per table or figure

    # ------------------------------------------------------------------ renderers

    def to_markdown(self, folder: str | Path) -> Path:
        """``report.md`` with PNG figures under ``figures/`` and every table as CSV."""
        folder = Path(folder)
        parts = [f"# {self.title}\n"]
        for name, table in self.tables.items():
            parts.append(f"\n## {name.replace('_', ' ').capitalize()}\n\n")
            if name in self.notes:
                parts.append(self.notes[name] + "\n\n")
            parts.append(markdown_table(table, index=True))
            atomic_write(folder / "tables" / f"{name}.csv", lambda p, t=table: t.to_csv(p))
        for name, fig in self.figures.items():
            png = _png(fig)
            atomic_write(folder / "figures" / f"{name}.png", lambda p, b=png: p.write_bytes(b))
            parts.append(f"\n## {name.replace('_', ' ').capitalize()}\n\n")
            if name in self.notes:
                parts.append(self.notes[name] + "\n\n")
            parts.append(f"![{name}](figures/{name}.png)\n")
        text = "".join(parts)
        return atomic_write(folder / "report.md", lambda p: p.write_text(text, encoding="utf-8"))

    def to_html(self, path: str | Path) -> Path:
        """One self-contained HTML file (figures embedded as PNG data URIs)."""
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for name, table in self.tables.items():
            body.append(f"<h2>{html.escape(name.replace('_', ' ').capitalize())}</h2>")
            if name in self.notes:
                body.append(f"<p>{html.escape(self.notes[name])}</p>")
            body.append(table.to_html(float_format=lambda v: f"{v:.4g}", border=0))
        for name, fig in self.figures.items():
            data = base64.b64encode(_png(fig)).decode("ascii")
            body.append(f"<h2>{html.escape(name.replace('_', ' ').capitalize())}</h2>")
            if name in self.notes:
                body.append(f"<p>{html.escape(self.notes[name])}</p>")
            body.append(f'<img alt="{name}" src="data:image/png;base64,{data}">')
        page = (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;"
            "border-bottom:1px solid #ddd;text-align:right}img{max-width:100%}"
            "</style></head><body>" + "\n".join(body) + "</body></html>"
        )
        return atomic_write(path, lambda p: p.write_text(page, encoding="utf-8"))

    def to_latex(self, folder: str | Path) -> Path:
        """``tables/<name>.tex`` (booktabs) and ``figures/<name>.pdf`` and ``.png``."""
        folder = Path(folder)
        for name, table in self.tables.items():
            tex = _booktabs(table, caption=self.notes.get(name, name), label=f"tab:{name}")
            atomic_write(folder / "tables" / f"{name}.tex", lambda p, t=tex: p.write_text(t))
        for name, fig in self.figures.items():
            pdf, png = _fig_bytes(fig, "pdf"), _png(fig)
            atomic_write(folder / "figures" / f"{name}.pdf", lambda p, b=pdf: p.write_bytes(b))
            atomic_write(folder / "figures" / f"{name}.png", lambda p, b=png: p.write_bytes(b))
        return folder


# ---------------------------------------------------------------------- building


def build_report(model, *, interval: float = 0.9, title: str | None = None) -> Report:
    """Tables and figures of a fitted (or loaded) :class:`bayes_sd.LatencyModel`."""
    if model.idata is None or model.design is None:
        raise RuntimeError("fit (or load) the model before reporting on it")
    rep = Report(title or "bayes_sd posterior report")
    rep.tables["coefficients"] = coefficient_table(model, interval)
    rep.notes["coefficients"] = (
        f"Population parameters: posterior mean, median and {interval:.0%} equal-tailed "
        "interval; intercepts are log seconds at the reference sizes (4 B target, 0.25 B "
        "drafter) and 1,024-token lengths."
    )
    rep.tables["diagnostics"] = pd.DataFrame([model.diagnostics]).T.rename(columns={0: "value"})
    fitq, runs = fit_quality(model, interval)
    rep.tables["fit_quality"] = fitq
    rep.notes["fit_quality"] = (
        "R² of log mean latency (posterior median prediction) and the share of training runs "
        f"inside their {interval:.0%} posterior predictive interval (measurement noise included)."
    )
    rep.figures["latency_vs_rate"] = _latency_figure(model, runs, interval)
    rep.notes["latency_vs_rate"] = (
        f"Mean latency against request rate: posterior median and {interval:.0%} band per "
        "series, observed runs as points, runs measured past saturation (not fitted) as hollow "
        "circles (up to 12 systems)."
    )
    spd = _speedup_figure(model, interval)
    if spd is not None:
        rep.figures["speedup_vs_rate"] = spd
        rep.notes["speedup_vs_rate"] = (
            f"Speedup of each SD series over its baseline with {interval:.0%} band; the shaded "
            "vertical band is the break-even rate's interval."
        )
    rep.figures["normalised_collapse"] = _collapse_figure(runs)
    rep.notes["normalised_collapse"] = (
        "Every open-loop run normalised by its series' posterior-median C1 and C2: latency / C1 "
        "against utilisation x = λ·C2 collapses onto 1/(1 − x)."
    )
    bk = _best_k_figure(model)
    if bk is not None:
        rep.figures["best_k_by_load"] = bk
        rep.notes["best_k_by_load"] = (
            "Best draft length by request rate for each drafter configuration: bar colour, the k "
            "with the lowest expected latency; bar height, the posterior probability that it is "
            "best (dashed: 0.5)."
        )
    moe = _coverage_figure(model)
    if moe is not None:
        rep.figures["moe_coverage"] = moe
        rep.notes["moe_coverage"] = (
            "MoE expert coverage: share of experts a pass reads against the tokens in it, per "
            "MoE target, with the training runs' verification passes (B·(k+1)) marked."
        )
    rep.figures["posterior_predictive"] = _ppc_figure(runs)
    rep.notes["posterior_predictive"] = (
        "Observed against predicted mean latency with the posterior predictive interval."
    )
    return rep


def coefficient_table(model, interval: float = 0.9) -> pd.DataFrame:
    """``arviz.summary`` of the population parameters: mean, median, sd, the equal-tailed
    ``interval`` (``lo``, ``hi``), R-hat, bulk and tail ESS, one row per element
    (``intercept[c1p]``)."""
    import arviz as az

    from bayes_sd.model import POPULATION_PARAMS

    post = model.idata["posterior"].dataset
    post = post[[n for n in POPULATION_PARAMS if n in post]]
    stats = az.summary(post, ci_prob=interval, ci_kind="eti", round_to="none", kind="all")
    median = az.summary(post, ci_prob=interval, round_to="none", kind="stats_median")["median"]
    ci = [c for c in stats.columns if c.endswith(("_lb", "_ub"))]
    out = pd.DataFrame(
        {
            "mean": stats["mean"],
            "median": median,
            "sd": stats["sd"],
            "lo": stats[ci[0]],
            "hi": stats[ci[1]],
            "r_hat": stats["r_hat"],
            "ess_bulk": stats["ess_bulk"],
            "ess_tail": stats["ess_tail"],
        }
    ).astype(float)
    out.index = pd.Index([str(i) for i in out.index], name="parameter")
    return out


def fit_quality(model, interval: float = 0.9) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(table of R² and coverage overall and per series, per-run predictions)."""
    rows = model.design.rows
    keep = [c for c in rows.columns if c not in ("latency_mean_s",)]
    pred = model.predict(rows[keep], interval=interval, random_seed=0)
    noisy = model.predict(rows[keep], interval=interval, random_seed=0, noise=True)
    runs = rows[["series", "system", "k", "request_rate", "concurrency"]].copy()
    runs["observed"] = rows["latency_mean_s"].to_numpy(dtype=float)
    runs["predicted"] = pred.summary["latency_median"].to_numpy()
    runs["lo"] = noisy.summary["latency_lo"].to_numpy()
    runs["hi"] = noisy.summary["latency_hi"].to_numpy()
    runs["C2"] = 1.0 / pred.summary["saturation_rate_median"].to_numpy()
    runs["inside"] = (runs["observed"] >= runs["lo"]) & (runs["observed"] <= runs["hi"])
    c1 = _c1(model, rows[keep])
    runs["C1"] = c1

    def r2(g: pd.DataFrame) -> float:
        y, f = np.log(g["observed"]), np.log(g["predicted"])
        ss = float(((y - y.mean()) ** 2).sum())
        return float(1 - ((y - f) ** 2).sum() / ss) if ss > 0 else math.nan

    table = [
        {
            "scope": "all runs",
            "runs": len(runs),
            "r2_log_latency": r2(runs),
            "coverage": float(runs["inside"].mean()),
        }
    ]
    for series, g in runs.groupby("series"):
        table.append(
            {
                "scope": series,
                "runs": len(g),
                "r2_log_latency": r2(g),
                "coverage": float(g["inside"].mean()),
            }
        )
    return pd.DataFrame(table).set_index("scope"), runs


def _c1(model, rows: pd.DataFrame) -> np.ndarray:
    """Posterior-median C1 per row: the latency at (nearly) zero load."""
    zero = rows.copy()
    is_open = zero["request_rate"].notna()
    zero.loc[is_open, "request_rate"] = 1e-9
    zero.loc[~is_open, "concurrency"] = 0.0
    return model.predict(zero, random_seed=0).summary["latency_median"].to_numpy()


# ---------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _series_label(series: str, system: str) -> str:
    """ "no SD", or "SD: <drafter>, k = 4" (α too when the sweep imposed one)."""
    rest = series[len(system) :].strip("|").split("|")
    if rest == ["k0"] or rest == [""]:
        return "no SD"
    parts = {p[:1]: p[1:] for p in rest[1:]}
    text = f"SD: {rest[0].split('/')[-1]}, k = {parts.get('k', '?')}"
    return text + (f", α = {parts['a']}" if "a" in parts else "")


def _plain_log_ticks(axis) -> None:
    """Log-axis tick labels as plain numbers (2, 3, 6), not 6×10⁰."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    # between the decades: 2 and 5 labelled (all eight would collide)
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))


def _latency_figure(model, runs: pd.DataFrame, interval: float):
    plt = _plt()
    systems = list(dict.fromkeys(runs["system"]))[:MAX_PANELS]
    n = len(systems)
    cols = min(3, n)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
    rows = model.design.rows
    keep = [c for c in rows.columns if c != "latency_mean_s"]
    saturated = _saturated_runs(model)
    for ax, system in zip(axes.ravel(), systems, strict=False):
        part = rows[rows["system"] == system]
        shown = False
        for series, g in part.groupby("series"):
            if g["request_rate"].isna().all():
                x = g["concurrency"].astype(float)
                grid_col = "concurrency"
            else:
                x = g["request_rate"].astype(float)
                grid_col = "request_rate"
            grid = np.linspace(float(x.min()) * 0.5, float(x.max()) * 1.05, 40)
            template = g[keep].iloc[[0]]
            new = pd.concat([template] * len(grid), ignore_index=True)
            new[grid_col] = grid
            s = model.predict(new, interval=interval, random_seed=0).summary
            (line,) = ax.plot(grid, s["latency_median"], label=_series_label(series, system))
            ax.fill_between(grid, s["latency_lo"], s["latency_hi"], alpha=0.2,
                            color=line.get_color())  # fmt: skip
            ax.plot(x, g["latency_mean_s"].astype(float), "o", ms=3, color=line.get_color())
            sat = saturated[saturated["series"] == series]
            if len(sat):  # measured past saturation: shown, not fitted
                ax.plot(sat[grid_col].astype(float), sat["latency_mean_s"].astype(float), "o",
                        ms=5, mfc="none", color=line.get_color(),
                        label=None if shown else "saturated (not fitted)")  # fmt: skip
                shown = True
        ax.set_title(_title(model, system), fontsize=9)
        ax.set_xlabel("request rate (req/s)" if part["request_rate"].notna().any() else "N")
        ax.set_ylabel("mean latency (s)")
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
        ax.legend(fontsize=8)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def _saturated_runs(model) -> pd.DataFrame:
    """The sweep's saturated runs (left out of the fit) with their series labels, for figures."""
    from bayes_sd.design import fill_labels, label_systems

    sweep = model.design.sweep
    sat = sweep[sweep["saturated"].astype(bool) & sweep["latency_mean_s"].notna()]
    sat = sat.reset_index(drop=True).copy()
    if sat.empty:
        return sat.assign(series=pd.Series(dtype=str))
    fill_labels(sat)
    label_systems(sat, reference=model.design.rows)
    return sat


def _title(model, system: str) -> str:
    """A system (or draft system) as a person would name it: "Meta-Llama-3-70B-Instruct on
    4 × H100-SXM-80GB, ShareGPT 215/198 tokens" (and the drafter), not its pipe-joined key."""
    import textwrap

    base = system.split("|")
    table = model.design.sys_table
    key = next((s for s in table.index if system == s or system.startswith(s + "|")), None)
    if key is None:
        return "\n".join(textwrap.wrap(" ".join(p for p in base if p), 56))
    r = table.loc[key]
    text = f"{str(r['target']).split('/')[-1]} on {int(r['num_gpus'])} × {r['gpu']}"
    extra = [str(r[c]) for c in ("engine", "precision") if str(r[c]) not in ("", "unknown")]
    if str(r["dataset"]):
        extra.append(f"{r['dataset']} {float(r['prefill_len']):.0f}/{float(r['decode_len']):.0f}"
                     " tokens")  # fmt: skip
    if extra:
        text += ", " + ", ".join(extra)
    if system != key:  # a draft system: its drafter (or method)
        text += f"; drafter {system[len(key) + 1 :].split('/')[-1]}"
    return "\n".join(textwrap.wrap(text, 56))


def _speedup_figure(model, interval: float):
    from bayes_sd import planning

    rows = model.design.rows
    sd = rows[(rows["k"] > 0) & rows["request_rate"].notna()]
    if sd.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    keep = [c for c in rows.columns if c not in ("latency_mean_s", "request_rate")]
    for series, g in list(sd.groupby("series"))[:MAX_PANELS]:
        cfg = g[keep].iloc[0].to_dict()
        k = int(cfg["k"])
        top = 1.3 * float(g["request_rate"].max())
        rates = np.linspace(top / 100, top, 100)
        be = planning.break_even(model, cfg, k=k, interval=interval, rates=rates)
        a = be.along
        label = f"{cfg['dataset'] or cfg['target']}, {_series_label(series, cfg['system'])}"
        # past the SD system's saturation its latency is unbounded: the curve stops there
        # (a speedup of 0 drawn flat would read as a measurement)
        a = a[a["speedup_median"] > 0]
        (line,) = ax.plot(a["rate"], a["speedup_median"], label=label)
        ax.fill_between(a["rate"], a["speedup_lo"], a["speedup_hi"], alpha=0.15,
                        color=line.get_color())  # fmt: skip
        s = be.summary(interval)
        if np.isfinite(s["break_even_hi"]) and s["break_even_hi"] > 0:
            ax.axvspan(s["break_even_lo"], s["break_even_hi"], alpha=0.1, color=line.get_color(),
                       label=f"break-even rate, {interval:.0%} interval")  # fmt: skip
        base = rows[(rows["series"] == g["base_series"].iloc[0])]
        merged = g.merge(base[["request_rate", "latency_mean_s"]], on="request_rate",
                         suffixes=("", "_base"))  # fmt: skip
        if not merged.empty:
            ax.plot(merged["request_rate"], merged["latency_mean_s_base"] /
                    merged["latency_mean_s"], "o", ms=4, color=line.get_color())  # fmt: skip
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("request rate (req/s)")
    ax.set_ylabel("speedup (latency without SD / with SD)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _best_k_figure(model, max_systems: int = 4):
    from bayes_sd import planning

    rows = model.design.rows
    sd = rows[(rows["k"] > 0) & rows["request_rate"].notna()]
    if sd.empty:
        return None
    plt = _plt()
    groups = list(sd.groupby("draft_system"))[:max_systems]
    fig, axes = plt.subplots(len(groups), 1, figsize=(7, 1.4 * len(groups) + 0.8), squeeze=False)
    keep = [c for c in rows.columns if c not in ("latency_mean_s", "request_rate", "k")]
    for ax, (name, g) in zip(axes[:, 0], groups, strict=True):
        cfg = g[keep].iloc[0].to_dict()
        ks = [0, *sorted(int(k) for k in g["k"].unique())]
        rates = np.linspace(g["request_rate"].min() / 2, g["request_rate"].max() * 1.1, 40)
        res = planning.best_k(model, cfg, ks=ks, rates=rates, max_draws=400)
        ch = res.choice
        cmap = plt.get_cmap("viridis", max(ks) + 1)
        # bar colour: the k chosen at that rate; bar height: P(that k is best) — a height
        # below the dashed 0.5 line is a choice the posterior does not settle
        for _, r in ch.iterrows():
            if np.isnan(r["k"]):
                continue
            ax.bar(r["rate"], r["p_best"], width=rates[1] - rates[0], color=cmap(int(r["k"])))
        from matplotlib.patches import Patch

        handles = [Patch(color=cmap(k), label="no SD" if k == 0 else f"k = {k}") for k in ks]
        ax.axhline(0.5, color="k", lw=0.8, ls="--")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("P(best)")
        ax.set_title(_title(model, name), fontsize=9)
        ax.legend(handles=handles, fontsize=8, ncol=len(ks), loc="lower left", framealpha=0.9)
    axes[-1, 0].set_xlabel("request rate (req/s)")
    fig.tight_layout()
    return fig


def _coverage_figure(model):
    from bayes_sd import latency

    rows = model.design.rows
    moe = rows[rows["target_experts"].astype(float) > 1]
    if moe.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    tokens = np.logspace(0, 4, 200)
    for target, g in moe.groupby("target"):
        n = float(g["target_experts"].iloc[0])
        m = float(g["target_experts_per_token"].iloc[0])
        (line,) = ax.plot(tokens, latency.expert_coverage(tokens, n, m), label=str(target))
        batch = g["request_rate"].astype(float) * g["latency_mean_s"].astype(float)
        passes = np.maximum(batch.fillna(g["concurrency"].astype(float)), 1) * (g["k"] + 1)
        ax.plot(passes, latency.expert_coverage(passes.to_numpy(), n, m), "|",
                color=line.get_color(), ms=8)  # fmt: skip
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("tokens in a forward pass")
    ax.set_ylabel("share of experts read")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _collapse_figure(runs: pd.DataFrame):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    open_runs = runs[runs["request_rate"].notna()]
    x = open_runs["request_rate"].astype(float) * open_runs["C2"]
    y = open_runs["observed"] / open_runs["C1"]
    ax.plot(x, y, ".", ms=3, alpha=0.6, label="runs")
    grid = np.linspace(0, min(0.97, float(x.max()) if len(x) else 0.9), 100)
    ax.plot(grid, 1 / (1 - grid), "k-", label="1/(1 − x)")
    ax.set_xlabel("utilisation x = λ · C2 (posterior median)")
    ax.set_ylabel("latency / C1")
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    ax.legend()
    fig.tight_layout()
    return fig


def _ppc_figure(runs: pd.DataFrame):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.errorbar(
        runs["predicted"],
        runs["observed"],
        xerr=[runs["predicted"] - runs["lo"], runs["hi"] - runs["predicted"]],
        fmt=".",
        ms=3,
        alpha=0.5,
        elinewidth=0.5,
    )
    # the axes span the runs (observed and predicted), a third of a decade beyond: one run's
    # wide interval (an unseen configuration near saturation) is clipped, not the scale
    points = runs[["observed", "predicted"]].to_numpy(dtype=float)
    points = points[np.isfinite(points) & (points > 0)]
    lim = [float(points.min()) / 2.0, float(points.max()) * 2.0]
    ax.plot(lim, lim, "k-", lw=0.8)
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    ax.set_xlabel("predicted mean latency (s)")
    ax.set_ylabel("observed mean latency (s)")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- helpers


def _fig_bytes(fig, fmt: str) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=120)
    return buf.getvalue()


def _png(fig) -> bytes:
    return _fig_bytes(fig, "png")


def _fmt(v) -> str:
    if isinstance(v, float | np.floating):
        return "" if np.isnan(v) else f"{v:.4g}"
    return "" if v is None or v is pd.NA else str(v)


def markdown_table(df: pd.DataFrame, index: bool = False) -> str:
    """A Markdown table of ``df`` (``DataFrame.to_markdown``; floats to 4 significant digits,
    missing values blank; the index as the first column with ``index=True``); ``_(none)_`` for
    an empty table."""
    if df.empty:
        return "_(none)_\n"
    cell = lambda v: _fmt(v).replace("|", "\\|")  # noqa: E731  (a bare | splits the cell)
    d = (df.reset_index() if index else df).map(cell)
    d.columns = [cell(c) for c in d.columns]
    return d.to_markdown(index=False, disable_numparse=True) + "\n"


_TEX_ESCAPE = {
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\^{}",
    "\\": r"\textbackslash{}",
    "|": r"\textbar{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPE.get(c, c) for c in str(text))


def _booktabs(df: pd.DataFrame, *, caption: str, label: str) -> str:
    """``Styler.to_latex`` (booktabs rules, caption, label), cells and headers escaped by
    :func:`_tex` (which also covers ``|``, ``<``, ``>``), scaled to the column width."""
    d = df.reset_index()
    styler = d.style.hide(axis="index").format(lambda v: _tex(_fmt(v)))
    styler = styler.format_index(_tex, axis=1)
    tex = styler.to_latex(caption=_tex(caption), label=label, position="t",
                          position_float="centering", hrules=True,
                          column_format="l" + "r" * (len(d.columns) - 1))  # fmt: skip
    # wide tables fit the column (needs graphicx)
    tex = tex.replace("\\begin{tabular}", "\\resizebox{\\linewidth}{!}{%\n\\begin{tabular}", 1)
    return tex.replace("\\end{tabular}", "\\end{tabular}}", 1)
