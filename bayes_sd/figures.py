"""The report's figures, each a function of a fitted (or loaded) model returning a matplotlib
figure (or ``None`` when the data have nothing to show): latency against load per system,
speedup with the break-even band, best draft length by load, MoE coverage, the normalised
collapse onto ``1/(1 − x)``, observed against predicted; and the readable names of systems and
series every figure and table of a report uses (:func:`system_title`, :func:`series_label`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = [
    "best_k_figure",
    "collapse_figure",
    "coverage_figure",
    "known",
    "latency_figure",
    "phases_figure",
    "ppc_figure",
    "saturated_runs",
    "series_label",
    "speedup_figure",
    "system_title",
]

MAX_PANELS = 12


def _subplots(*args, **kwargs):
    """``Figure.subplots`` on a figure outside pyplot's registry: a library's figures are not
    shown by a notebook's inline backend unless asked for, and are freed with their last
    reference (no ``plt.close``)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=kwargs.pop("figsize", None), layout=kwargs.pop("layout", None))
    return fig, fig.subplots(*args, **kwargs)


def series_label(series: str, system: str) -> str:
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

    def minor(v, _):
        # between the decades: 2 and 5 labelled (all eight would collide over a decade); an
        # axis spanning less than a factor 4 (no decade, perhaps no 2 or 5) labels every one
        lo, hi = sorted(axis.get_view_interval())
        narrow = lo > 0 and hi / lo < 4
        return f"{v:.3g}" if narrow or f"{v:.0e}"[0] in "25" else ""

    axis.set_minor_formatter(FuncFormatter(minor))


def latency_figure(model, runs: pd.DataFrame, interval: float):
    systems = list(dict.fromkeys(runs["system"]))[:MAX_PANELS]
    n = len(systems)
    cols = min(3, n)
    nrows = math.ceil(n / cols)
    fig, axes = _subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
    rows = model.design.rows
    keep = [c for c in rows.columns if c != "latency_mean_s"]
    saturated = saturated_runs(model)
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
            (line,) = ax.plot(grid, s["latency_median"], label=series_label(series, system))
            ax.fill_between(grid, s["latency_lo"], s["latency_hi"], alpha=0.2,
                            color=line.get_color())  # fmt: skip
            ax.plot(x, g["latency_mean_s"].astype(float), "o", ms=3, color=line.get_color())
            sat = saturated[saturated["series"] == series]
            if len(sat):  # measured past saturation: shown, not fitted
                ax.plot(sat[grid_col].astype(float), sat["latency_mean_s"].astype(float), "o",
                        ms=5, mfc="none", color=line.get_color(),
                        label=None if shown else "saturated (not fitted)")  # fmt: skip
                shown = True
        ax.set_title(system_title(model, system), fontsize=9)
        ax.set_xlabel(
            "request rate (req/s)" if part["request_rate"].notna().any() else "requests in flight"
        )
        ax.set_ylabel("mean latency (s)")
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
        ax.legend(fontsize=8)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig


PHASES = (("ttft", "TTFT (s)"), ("tpot", "TPOT (ms)"), ("latency", "E2E (s)"))


def phases_figure(model, interval: float = 0.9, max_series: int = 6):
    """TTFT, TPOT and E2E against load, one row per series of the training data whose runs
    measured TTFT and TPOT (``max_series`` of the most measured): the posterior median of the
    mean (line), the interval of a measured run (``predict(noise=True)``, band) and the
    measured means (points); None when no run measured both."""
    rows = model.design.rows
    measured = rows[rows["ttft_mean_s"].notna() & rows["tpot_mean_s"].notna()]
    if measured.empty:
        return None
    order = measured["series"].value_counts(sort=True).index[:max_series]
    keep = [c for c in rows.columns if not c.endswith("_s") or c == "duration_s"]
    fig, axes = _subplots(len(order), 3, figsize=(11, 2.6 * len(order)), squeeze=False)
    for row_axes, series in zip(axes, order, strict=True):
        g = measured[measured["series"] == series]
        col = "concurrency" if g["request_rate"].isna().all() else "request_rate"
        x = g[col].astype(float)
        grid = np.geomspace(float(x.min()) * 0.5, float(x.max()) * 2.0, 30)
        new = pd.concat([g[keep].iloc[[0]]] * len(grid), ignore_index=True)
        new[col] = grid
        mean = model.predict(new, interval=interval, random_seed=0).summary
        run = model.predict(new, interval=interval, random_seed=0, noise=True).summary
        for ax, (metric, label) in zip(row_axes, PHASES, strict=True):
            scale = 1e3 if metric == "tpot" else 1.0
            (line,) = ax.plot(grid, mean[f"{metric}_median"] * scale)
            ax.fill_between(grid, run[f"{metric}_lo"] * scale, run[f"{metric}_hi"] * scale,
                            alpha=0.2, color=line.get_color(), lw=0)  # fmt: skip
            ax.plot(x, g[f"{metric}_mean_s"].astype(float) * scale, "o", ms=4, color="k")
            ax.set_xscale("log")
            ax.set_yscale("log")
            _plain_log_ticks(ax.xaxis)
            _plain_log_ticks(ax.yaxis)
            ax.set_ylabel(label)
            ax.set_xlabel("requests in flight" if col == "concurrency" else "request rate (req/s)")
        system = g["system"].iloc[0]
        row_axes[0].set_title(f"{system_title(model, system)} · {series_label(series, system)}",
                              fontsize=8, loc="left")  # fmt: skip
    fig.tight_layout()
    return fig


def saturated_runs(model) -> pd.DataFrame:
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


def known(value) -> bool:
    """A label worth showing: not missing, empty or ``unknown``."""
    return not pd.isna(value) and str(value) not in ("", "unknown")


def config_name(r: pd.Series) -> str:
    """A system's row in words: "Meta-Llama-3-70B-Instruct on 4 × H100-SXM-80GB, ShareGPT
    215/198 tokens" (engine, precision and parallel layout when known)."""
    text = f"{str(r['target']).split('/')[-1]} on {int(r['num_gpus'])} × {r['gpu']}"
    extra = [str(r[c]) for c in ("engine", "precision", "layout") if known(r[c])]
    if str(r["dataset"]):
        extra.append(f"{r['dataset']} {float(r['prefill_len']):.0f}/{float(r['decode_len']):.0f}"
                     " tokens")  # fmt: skip
    return ", ".join([text, *extra])


def system_title(model, system: str) -> str:
    """A system (or draft system) as a person would name it: "Meta-Llama-3-70B-Instruct on
    4 × H100-SXM-80GB, ShareGPT 215/198 tokens" (engine, precision and parallel layout when
    known; the drafter), not its pipe-joined key."""
    import textwrap

    base = system.split("|")
    table = model.design.sys_table
    key = next((s for s in table.index if system == s or system.startswith(s + "|")), None)
    if key is None:
        return "\n".join(textwrap.wrap(" ".join(p for p in base if p), 50))
    text = config_name(table.loc[key])
    if system != key:  # a draft system: its drafter (or method)
        text += f"; drafter {system[len(key) + 1 :].split('/')[-1]}"
    return "\n".join(textwrap.wrap(text, 50))


def speedup_figure(model, interval: float):
    from bayes_sd import planning

    rows = model.design.rows
    sd = rows[(rows["k"] > 0) & rows["request_rate"].notna()]
    if sd.empty:
        return None
    fig, ax = _subplots(figsize=(7, 4))
    keep = [c for c in rows.columns if c not in ("latency_mean_s", "request_rate")]
    for series, g in list(sd.groupby("series"))[:MAX_PANELS]:
        cfg = g[keep].iloc[0].to_dict()
        k = int(cfg["k"])
        top = 1.3 * float(g["request_rate"].max())
        rates = np.linspace(top / 100, top, 100)
        be = planning.break_even(model, cfg, k=k, interval=interval, rates=rates)
        a = be.along
        label = f"{cfg['dataset'] or cfg['target']}, {series_label(series, cfg['system'])}"
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


def best_k_figure(model, max_systems: int = 4):
    import matplotlib

    from bayes_sd import planning
    from bayes_sd.decisions import configurations

    rows = model.design.rows
    # the report's configurations (each k with its own measured acceptance: the first run's
    # acceptance length held for every k made k = 3 look like k = 1 and never chosen)
    confs = [c for c in configurations(model) if len(c["ks"]) > 1 and c["load"] == "rate"]
    confs = confs[:max_systems]
    if not confs:
        return None
    fig, axes = _subplots(len(confs), 1, figsize=(7, 1.4 * len(confs) + 0.8), squeeze=False)
    for ax, c in zip(axes[:, 0], confs, strict=True):
        name, ks = c["key"], c["ks"]
        g = rows[(rows["draft_system"] == name) & rows["request_rate"].notna()]
        rates = np.linspace(g["request_rate"].min() / 2, g["request_rate"].max() * 1.1, 40)
        res = planning.best_k(model, c["config"], ks=ks, rates=rates, max_draws=400)
        ch = res.choice
        cmap = matplotlib.colormaps["viridis"].resampled(max(ks) + 1)
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
        ax.set_title(system_title(model, name), fontsize=9)
        ax.legend(handles=handles, fontsize=8, ncol=len(ks), loc="lower left", framealpha=0.9)
    axes[-1, 0].set_xlabel("request rate (req/s)")
    fig.tight_layout()
    return fig


def coverage_figure(model):
    from bayes_sd import latency

    rows = model.design.rows
    moe = rows[rows["target_experts"].astype(float) > 1]
    if moe.empty:
        return None
    fig, ax = _subplots(figsize=(5.5, 3.5))
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


def collapse_figure(runs: pd.DataFrame):
    fig, ax = _subplots(figsize=(5, 4))
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


def ppc_figure(runs: pd.DataFrame):
    fig, ax = _subplots(figsize=(5, 4.5))
    # the axes span the runs (observed and predicted), a third of a decade beyond: one run's
    # wide interval (an unseen configuration near saturation) is clipped, not the scale
    points = runs[["observed", "predicted"]].to_numpy(dtype=float)
    points = points[np.isfinite(points) & (points > 0)]
    lim = [float(points.min()) / 2.0, float(points.max()) * 2.0]
    # runs predicted past saturation (median infinite) have no point; an interval open above
    # runs off the axes
    shown = runs[np.isfinite(runs["predicted"].to_numpy(dtype=float))]
    hi = np.minimum(shown["hi"].to_numpy(dtype=float), lim[1] * 10)
    ax.errorbar(
        shown["predicted"],
        shown["observed"],
        xerr=[shown["predicted"] - shown["lo"], hi - shown["predicted"]],
        fmt=".",
        ms=3,
        alpha=0.5,
        elinewidth=0.5,
    )
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
