"""Posterior reports that open with decisions: data first (tables and figures), then rendered
as a Markdown folder with PNG figures, one self-contained HTML file, or LaTeX (booktabs) tables
with PDF figures.

    report = build_report(model, slo="p99_ttft_ms<=2000,p99_tpot_ms<=50")
    report.summary                        # the decisions, one paragraph per configuration
    report.tables["decisions"]            # DataFrames ...
    report.figures["latency_vs_rate"]     # ... and matplotlib figures
    report.to_markdown("out/report")      # report.md + figures/*.png + tables/*.csv
    report.to_html("out/report.html")     # one file, figures embedded
    report.to_latex("out/paper")          # summary.tex, tables/*.tex (booktabs), figures/*.pdf

Three sections. **Decisions** (:mod:`bayes_sd.decisions`): per configuration of the training
data, capacity under the SLO and the binding term, break-even, the best draft length by load
and the throughput–interactivity frontier per workload, with the speedup and best-k figures.
**Fit**: latency against load per system with posterior bands and the observed runs, observed
against predicted, fit quality (R² of log latency, predictive-interval coverage), the normalised
collapse onto ``1/(1 − x)``, MoE coverage. **Appendix**: population coefficients (``arviz``
summary with R-hat and ESS) and sampler diagnostics.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_sd import figures
from bayes_sd.schema import atomic_write

__all__ = ["Report", "build_report", "markdown_table"]

SECTIONS = ("Decisions", "Fit", "Appendix")


@dataclass
class Report:
    """``tables`` and ``figures`` by name, a caption per name in ``notes``; ``summary``: the
    paragraphs the report opens with (Markdown); ``sections``: the names under each heading in
    order (names in no section follow at the end); ``headings``: a name's heading when it is
    not the name itself; ``data``: tables too long to read, written as CSV beside the others
    (the frontiers' levels)."""

    title: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, object] = field(default_factory=dict)  # name -> matplotlib Figure
    notes: dict[str, str] = field(default_factory=dict)  # caption per table or figure
    summary: list[str] = field(default_factory=list)
    sections: dict[str, list[str]] = field(default_factory=dict)
    headings: dict[str, str] = field(default_factory=dict)  # name -> heading, when not the name
    data: dict[str, pd.DataFrame] = field(default_factory=dict)  # written as CSV, not shown

    def layout(self) -> list[tuple[str, list[str]]]:
        """(heading, names) in reading order; every table and figure appears once."""
        out, seen = [], set()
        for heading, names in self.sections.items():
            names = [n for n in names if n in self.tables or n in self.figures]
            seen.update(names)
            out.append((heading, names))
        rest = [n for n in [*self.tables, *self.figures] if n not in seen]
        if rest:
            out.append(("More", rest))
        return out

    # ------------------------------------------------------------------ renderers

    def to_markdown(self, folder: str | Path) -> Path:
        """``report.md`` with PNG figures under ``figures/`` and every table as CSV."""
        folder = Path(folder)
        parts = [f"# {self.title}\n"]
        if SECTIONS[0] not in self.sections:  # a report built by hand: the summary first
            parts += ["\n", *(p + "\n\n" for p in self.summary)]
        for heading, names in self.layout():
            parts.append(f"\n## {heading}\n\n")
            if heading == SECTIONS[0]:
                parts += [p + "\n\n" for p in self.summary]
            for name in names:
                parts.append(f"\n### {self.headings.get(name, _heading(name))}\n\n")
                if name in self.notes:
                    parts.append(self.notes[name] + "\n\n")
                if name in self.tables:
                    table = self.tables[name]
                    parts.append(markdown_table(table, index=True))
                    atomic_write(folder / "tables" / f"{name}.csv", lambda p, t=table: t.to_csv(p))
                else:
                    png = _png(self.figures[name])
                    atomic_write(folder / "figures" / f"{name}.png",
                                 lambda p, b=png: p.write_bytes(b))  # fmt: skip
                    parts.append(f"![{name}](figures/{name}.png)\n")
        for name, table in self.data.items():
            atomic_write(folder / "tables" / f"{name}.csv", lambda p, t=table: t.to_csv(p))
        text = "".join(parts)
        return atomic_write(folder / "report.md", lambda p: p.write_text(text, encoding="utf-8"))

    def to_html(self, path: str | Path) -> Path:
        """One self-contained HTML file (figures embedded as PNG data URIs)."""
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        if SECTIONS[0] not in self.sections:  # a report built by hand: the summary first
            body += [f"<p>{_html_bold(p)}</p>" for p in self.summary]
        for heading, names in self.layout():
            body.append(f"<h2>{html.escape(heading)}</h2>")
            if heading == SECTIONS[0]:
                body += [f"<p>{_html_bold(p)}</p>" for p in self.summary]
            for name in names:
                body.append(f"<h3>{html.escape(self.headings.get(name, _heading(name)))}</h3>")
                if name in self.notes:
                    body.append(f"<p>{html.escape(self.notes[name])}</p>")
                if name in self.tables:
                    body.append(self.tables[name].to_html(float_format=lambda v: f"{v:.4g}",
                                                          border=0))  # fmt: skip
                else:
                    data = base64.b64encode(_png(self.figures[name])).decode("ascii")
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
        """``summary.tex`` (the decisions as paragraphs), ``tables/<name>.tex`` (booktabs) and
        ``figures/<name>.pdf`` and ``.png``."""
        folder = Path(folder)
        summary = "\n\n".join(_tex_bold(p) for p in self.summary) + "\n"
        atomic_write(folder / "summary.tex", lambda p: p.write_text(summary, encoding="utf-8"))
        for name, table in self.tables.items():
            tex = _booktabs(table, caption=self.notes.get(name, name), label=f"tab:{name}")
            atomic_write(folder / "tables" / f"{name}.tex", lambda p, t=tex: p.write_text(t))
        for name, table in self.data.items():
            atomic_write(folder / "tables" / f"{name}.csv", lambda p, t=table: t.to_csv(p))
        for name, fig in self.figures.items():
            pdf, png = _fig_bytes(fig, "pdf"), _png(fig)
            atomic_write(folder / "figures" / f"{name}.pdf", lambda p, b=pdf: p.write_bytes(b))
            atomic_write(folder / "figures" / f"{name}.png", lambda p, b=png: p.write_bytes(b))
        return folder


# ---------------------------------------------------------------------- building


def build_report(model, *, interval: float = 0.9, title: str | None = None, slo=None,
                 credibility: float = 0.95, max_configs: int = 8) -> Report:  # fmt: skip
    """The report of a fitted (or loaded) :class:`bayes_sd.LatencyModel`: decisions first
    (capacity under ``slo`` — any form :func:`bayes_sd.slo.parse_slo` reads — with
    ``credibility``; without an SLO the report says how to give one) for the first
    ``max_configs`` configurations (:func:`bayes_sd.decisions.configurations`: with SD first),
    then the fit, then the coefficients and diagnostics."""
    if model.idata is None or model.design is None:
        raise RuntimeError("fit (or load) the model before reporting on it")
    rep = Report(title or "bayes_sd posterior report")
    rep.sections = {s: [] for s in SECTIONS}
    _decisions(rep, model, slo, credibility, interval, max_configs)
    _fit(rep, model, interval)
    rep.tables["coefficients"] = coefficient_table(model, interval)
    rep.notes["coefficients"] = (
        f"Population parameters: posterior mean, median and {interval:.0%} equal-tailed "
        "interval; intercepts are log seconds at the reference sizes (4 B target, 0.25 B "
        "drafter) and 1,024-token lengths."
    )
    rep.tables["diagnostics"] = pd.DataFrame([model.diagnostics]).T.rename(columns={0: "value"})
    rep.notes["diagnostics"] = "Sampler diagnostics (R-hat, ESS, divergences) and settings."
    rep.sections["Appendix"] = ["coefficients", "diagnostics"]
    return rep


def _decisions(rep: Report, model, slo, credibility: float, interval: float,
               max_configs: int) -> None:  # fmt: skip
    from bayes_sd.decisions import decide

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        d = decide(model, slo=slo, credibility=credibility, interval=interval,
                   max_configs=max_configs)  # fmt: skip
    if d.slo is None:
        rep.summary.append(
            "No SLO given, so no capacity: give one, e.g. `bayes-sd report --slo "
            '"p99_ttft_ms<=2000,p99_tpot_ms<=50"` or `build_report(model, slo=...)`.'
        )
    else:
        rep.summary.append(
            f"SLO: {' and '.join(t.label for t in d.slo)}, each load's answer held with "
            f"credibility {credibility:g} (checked on fresh draws); intervals are "
            f"{interval:.0%}. Loads are those the sweep measured: request rate (open loop) or "
            "requests in flight (closed loop)."
        )
    rep.summary += d.sentences
    rep.summary += [f"Note: {str(w.message).rstrip('.')}." for w in caught]
    if d.left_out:
        shown = "; ".join(d.left_out[:5]) + ("; …" if len(d.left_out) > 5 else "")
        rep.summary.append(
            f"Not covered: {len(d.left_out)} more configurations ({shown}). Configurations with "
            "SD come first; raise `max_configs` (`bayes-sd report --max-configs N`) to cover "
            "more."
        )
    names = rep.sections["Decisions"]
    rep.tables["decisions"] = d.table.set_index("configuration")
    rep.notes["decisions"] = (
        "Per configuration: capacity without SD and at the draft length that serves most under "
        "the SLO, the binding term, the break-even rate of that k (or the longest measured) "
        f"with its {interval:.0%} interval, and the draft length of lowest expected latency "
        "along the request rate."
    )
    names.append("decisions")
    if not d.capacity.empty:
        rep.tables["capacity"] = d.capacity.set_index("configuration")
        rep.notes["capacity"] = ("Capacity under the SLO per draft length: P(term holds) at the "
                                 "answer for each term, and the credibility achieved.")  # fmt: skip
        names.append("capacity")
    for i, (workload, f) in enumerate(d.frontiers.items()):
        name = "frontier" if len(d.frontiers) == 1 else f"frontier_{i + 1}"
        rep.figures[name] = f.figure(title=f"Frontier: {workload}")
        rep.headings[name] = f"Throughput–interactivity frontier: {workload}"
        rep.data[name] = f.table.set_index("config")
        rep.notes[name] = (
            "Output throughput per GPU at each interactivity level (tok/s per user), median "
            f"and {interval:.0%} band per configuration and draft length; below, P(it gives the "
            f"most throughput there). The levels: `tables/{name}.csv`."
        )
        names.append(name)
    spd = figures.speedup_figure(model, interval)
    if spd is not None:
        rep.figures["speedup_vs_rate"] = spd
        rep.notes["speedup_vs_rate"] = (
            f"Speedup of each SD series over its baseline with {interval:.0%} band; the shaded "
            "vertical band is the break-even rate's interval."
        )
        names.append("speedup_vs_rate")
    bk = figures.best_k_figure(model)
    if bk is not None:
        rep.figures["best_k_by_load"] = bk
        rep.notes["best_k_by_load"] = (
            "Best draft length by request rate for each drafter configuration: bar colour, the k "
            "with the lowest expected latency; bar height, the posterior probability that it is "
            "best (dashed: 0.5)."
        )
        names.append("best_k_by_load")


def _fit(rep: Report, model, interval: float) -> None:
    names = rep.sections["Fit"]
    fitq, runs = fit_quality(model, interval)
    rep.figures["latency_vs_rate"] = figures.latency_figure(model, runs, interval)
    rep.notes["latency_vs_rate"] = (
        f"Mean latency against load: posterior median and {interval:.0%} band per "
        "series, observed runs as points, runs measured past saturation (not fitted) as hollow "
        "circles (up to 12 systems)."
    )
    rep.figures["posterior_predictive"] = figures.ppc_figure(runs)
    rep.notes["posterior_predictive"] = (
        "Observed against predicted mean latency with the posterior predictive interval."
    )
    rep.tables["fit_quality"] = fitq
    rep.notes["fit_quality"] = (
        "R² of log mean latency (posterior median prediction) and the share of training runs "
        f"inside their {interval:.0%} posterior predictive interval (measurement noise included)."
    )
    names += ["latency_vs_rate", "posterior_predictive", "fit_quality"]
    names += _data_checks(rep, model)
    rep.figures["normalised_collapse"] = figures.collapse_figure(runs)
    rep.notes["normalised_collapse"] = (
        "Every open-loop run normalised by its series' posterior-median C1 and C2: latency / C1 "
        "against utilisation x = λ·C2 collapses onto 1/(1 − x)."
    )
    names.append("normalised_collapse")
    moe = figures.coverage_figure(model)
    if moe is not None:
        rep.figures["moe_coverage"] = moe
        rep.notes["moe_coverage"] = (
            "MoE expert coverage: share of experts a pass reads against the tokens in it, per "
            "MoE target, with the training runs' verification passes (B·(k+1)) marked."
        )
        names.append("moe_coverage")


def _data_checks(rep: Report, model) -> list[str]:
    """The series whose measured mean falls with load (:mod:`bayes_sd.load_checks`), if any:
    fitted, with an effect the load law does not have."""
    from bayes_sd.load_checks import METRICS, WHY, falling_series

    found = falling_series(model.design.rows)
    if found.empty:
        return []
    rep.tables["latency_falling_with_load"] = pd.DataFrame({
        "configuration": found["name"],
        "metric": found["metric"].map(METRICS),
        "at load": found["peak_load"],
        "measured (s)": found["peak"].round(4),
        "at higher load": found["load"],
        "then (s)": found["value"].round(4),
        "ratio": found["ratio"].round(2),
    }).set_index("configuration")  # fmt: skip
    rep.notes["latency_falling_with_load"] = (
        f"Series whose measured mean falls below 2/3 of its value at a lower load: {WHY}."
    )
    return ["latency_falling_with_load"]


def _heading(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _html_bold(text: str) -> str:
    """A paragraph's Markdown ``**bold**`` and ```code``` as HTML, the rest escaped."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _tex_bold(text: str) -> str:
    """A paragraph's Markdown ``**bold**`` as ``\\textbf``, ```code``` as ``\\texttt``, the rest
    escaped."""
    parts = re.split(r"(\*\*.+?\*\*|`.+?`)", text)
    out = []
    for part in parts:
        if part.startswith("**") and part.endswith("**") and len(part) > 4:
            out.append(r"\textbf{" + _tex(part[2:-2]) + "}")
        elif part.startswith("`") and part.endswith("`") and len(part) > 2:
            out.append(r"\texttt{" + _tex(part[1:-1]) + "}")
        else:
            out.append(_tex(part))
    return "".join(out)


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
    for (system, series), g in runs.groupby(["system", "series"], sort=False):
        where = figures.system_title(model, system).replace("\n", " ")
        table.append(
            {
                "scope": f"{where}: {figures.series_label(series, system)}",
                "runs": len(g),
                "r2_log_latency": r2(g),
                "coverage": float(g["inside"].mean()),
            }
        )
    return pd.DataFrame(table).set_index("scope"), runs


def _c1(model, rows: pd.DataFrame) -> np.ndarray:
    """Posterior-median C1 per row: the latency at (nearly) zero load — a vanishing rate in
    open loop, one request in flight in closed loop (the least a closed loop can hold)."""
    zero = rows.copy()
    is_open = zero["request_rate"].notna()
    zero.loc[is_open, "request_rate"] = 1e-9
    zero.loc[~is_open, "concurrency"] = 1.0
    return model.predict(zero, random_seed=0).summary["latency_median"].to_numpy()


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
