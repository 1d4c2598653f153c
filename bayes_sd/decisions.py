"""The decisions a posterior report opens with, for every configuration of the training data.

Per configuration (a system with each drafter it was measured with; the measured draft lengths
and k = 0):

* **capacity under the SLO** — the highest load (request rate for open-loop sweeps, requests in
  flight for closed-loop ones) meeting every term with the credibility asked, per k, the k that
  serves the most and the term that binds (:func:`bayes_sd.capacity.slo_capacity`);
* **break-even** — the rate where SD stops paying, with its interval
  (:func:`bayes_sd.planning.break_even`);
* **best k by load** — the draft length with the lowest expected latency along the rate axis and
  how sure the posterior is (:func:`bayes_sd.planning.best_k`);
* **the frontier** — per workload (target and request lengths), which configuration gives the
  most output throughput per GPU at each interactivity level (:func:`bayes_sd.frontier.frontier`).

:func:`decide` returns the tables and one readable paragraph per configuration; the report
(:func:`bayes_sd.report.build_report`) puts them first.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["Decisions", "decide"]

# the report's decisions cover this many configurations (the tables say which were left out)
MAX_CONFIGS = 8


@dataclass
class Decisions:
    """``table``: one row per configuration — the headline numbers; ``capacity``,
    ``break_even``, ``best_k``: the full tables behind them (a ``configuration`` column names
    the row's configuration); ``frontiers``: one :class:`bayes_sd.frontier.Frontier` per
    workload; ``sentences``: one Markdown paragraph per configuration; ``slo``: the terms
    (``None``: no SLO given, no capacity); ``left_out``: configurations not covered."""

    table: pd.DataFrame
    capacity: pd.DataFrame
    break_even: pd.DataFrame
    best_k: pd.DataFrame
    frontiers: dict = field(default_factory=dict)
    sentences: list[str] = field(default_factory=list)
    slo: list | None = None
    credibility: float = 0.95
    left_out: list[str] = field(default_factory=list)


def configurations(model) -> list[dict]:
    """The configurations of the training data: per system, one per drafter (its measured
    draft lengths with k = 0), or the system alone when it has no SD runs. Each entry:
    ``name`` (readable), ``key`` (the draft system or system label), ``config`` (prediction
    columns without the load), ``ks``, ``load`` (``rate`` or ``concurrency``: as measured),
    ``workload`` (target and lengths: configurations comparable on one frontier), ``short``
    (what tells it apart from the others of its workload), ``runs`` (fitted runs),
    ``measured_to`` (its heaviest load measured, the system's k = 0 runs included). Names are
    unique. Ordered as the report covers them: with SD first (more draft lengths first), then
    by runs measured."""
    from bayes_sd.figures import system_title

    rows = model.design.rows
    # the load and k vary; a run's measured acceptance belongs to its k, not to the others:
    # without it the model uses each k's measured mean or its acceptance law (predict)
    drop = {"latency_mean_s", "request_rate", "concurrency", "k", "acceptance_length",
            "acceptance_per_position", "acceptance_source"}  # fmt: skip
    keep = [c for c in rows.columns if c not in drop]
    out = []
    for system, part in rows.groupby("system", sort=False):
        drafts = [d for d in dict.fromkeys(part["draft_system"]) if d]
        load = "rate" if part["request_rate"].notna().any() else "concurrency"
        for key in drafts or [system]:
            g = part[part["draft_system"] == key] if drafts else part
            ks = [0, *sorted({int(k) for k in g["k"] if k > 0})]
            r = g.iloc[0]
            config = g[keep].iloc[0].to_dict()
            if g.loc[g["k"] > 0, "alpha"].nunique() > 1:  # an α imposed per k (simulated):
                config["alpha"] = np.nan  # each k takes its own, not the first run's
            out.append({
                "name": system_title(model, key).replace("\n", " "),
                "short": _short_name(r),
                "key": key,
                "config": config,
                "ks": ks,
                "load": load,
                "workload": (str(r["target"]), str(r["dataset"]), float(r["prefill_len"]),
                             float(r["decode_len"])),
                "runs": len(g) + (0 if not drafts else int((part["k"] == 0).sum())),
                "measured_to": float(part["request_rate" if load == "rate"
                                          else "concurrency"].max()),
            })  # fmt: skip
    _unique(out)
    # the decisions that matter first: configurations with SD (more draft lengths first), then
    # the better measured; ties keep the data's order
    order = sorted(range(len(out)), key=lambda i: (-len(out[i]["ks"]), -out[i]["runs"], i))
    return [out[i] for i in order]


def _short_name(r: pd.Series) -> str:
    """What tells configurations of one workload apart: GPUs, engine, precision, layout,
    drafter."""
    from bayes_sd.figures import known

    text = f"{int(r['num_gpus'])} × {r['gpu']}"
    extra = [str(r[c]) for c in ("engine", "precision", "layout") if known(r[c])]
    drafter = r["drafter"] if known(r["drafter"]) else r["method"]
    if known(drafter) and str(drafter) != "none":
        extra.append(f"drafter {str(drafter).split('/')[-1]}")
    return ", ".join([text, *extra])


def _unique(configs: list[dict]) -> None:
    """Names that still collide — systems that differ only in a key the names leave out, such
    as the source — get the source and a number: ``name`` over all configurations, ``short``
    within a workload (it names a configuration only there)."""
    for field_, scope in (("name", lambda c: None), ("short", lambda c: c["workload"])):
        seen: dict = {}
        for c in configs:
            key = (scope(c), c[field_])
            seen[key] = seen.get(key, 0) + 1
        counts: dict = {}
        for c in configs:
            key = (scope(c), c[field_])
            if seen[key] > 1:
                counts[key] = counts.get(key, 0) + 1
                c[field_] = f"{c[field_]} ({c['config'].get('source')}, #{counts[key]})"


def decide(
    model,
    *,
    slo=None,
    credibility: float = 0.95,
    interval: float = 0.9,
    max_configs: int = MAX_CONFIGS,
    max_draws: int = 400,
    random_seed: int = 0,
) -> Decisions:
    """The decisions for the first ``max_configs`` configurations of a fitted (or loaded)
    model's training data; ``slo`` in any form :func:`bayes_sd.slo.parse_slo` reads (``None``:
    no capacity, the rest still computed)."""
    from bayes_sd.slo import parse_slo

    if model.idata is None or model.design is None:
        raise RuntimeError("fit (or load) the model before deciding with it")
    if not 0 < credibility < 1:
        raise ValueError("credibility must be in (0, 1)")
    if int(max_configs) != max_configs or max_configs < 1:
        raise ValueError(f"max_configs must be a whole number ≥ 1, got {max_configs!r}")
    terms = parse_slo(slo) if slo is not None else None
    if terms is not None:  # once for the report, not once per configuration
        from bayes_sd.capacity import _warn_unmeasured

        _warn_unmeasured(model, terms)
    configs = configurations(model)
    left_out = [c["name"] for c in configs[max_configs:]]
    configs = configs[:max_configs]
    caps, breaks, bests, table, sentences = [], [], [], [], []
    for c in configs:
        cap = _capacity(model, c, terms, credibility, max_draws, random_seed)
        be = _break_even(model, c, interval, max_draws, random_seed)
        bk = _best_k(model, c, max_draws, random_seed)
        for df, acc in ((cap, caps), (be, breaks), (bk, bests)):
            if df is not None and len(df):
                acc.append(df.assign(configuration=c["name"]))
        row, text = _headline(c, cap, be, bk, terms, credibility, interval)
        table.append(row)
        sentences.append(text)
    frontiers = _frontiers(model, configs, interval, max_draws, random_seed)
    for i, c in enumerate(configs):
        f = frontiers.get(c["workload"])
        if f is not None:
            part = _frontier_text(f, c["short"], c["ks"],
                                  f.table["config"].nunique() > len(c["ks"]))  # fmt: skip
            if part:
                sentences[i] += " " + part

    def cat(parts: list[pd.DataFrame]) -> pd.DataFrame:
        if not parts:
            return pd.DataFrame()
        df = pd.concat(parts, ignore_index=True)
        return df[["configuration", *[c for c in df.columns if c != "configuration"]]]

    named = {_workload_name(w): f for w, f in frontiers.items()}
    return Decisions(pd.DataFrame(table), cat(caps), cat(breaks), cat(bests), named, sentences,
                     terms, credibility, left_out)  # fmt: skip


def _capacity(model, c, terms, credibility, max_draws, seed) -> pd.DataFrame | None:
    if terms is None:
        return None
    from bayes_sd.capacity import UnmeasuredTailWarning, slo_capacity

    with warnings.catch_warnings():  # said once by the report, not per configuration
        warnings.simplefilter("ignore", UnmeasuredTailWarning)
        return slo_capacity(model, c["config"], terms, ks=c["ks"], credibility=credibility,
                            load=c["load"], max_draws=max_draws, random_seed=seed)  # fmt: skip


def _break_even(model, c, interval, max_draws, seed) -> pd.DataFrame | None:
    from bayes_sd.planning import break_even

    rows = [break_even(model, c["config"], k=k, interval=interval, max_draws=max_draws,
                       random_seed=seed).summary(interval) for k in c["ks"] if k > 0]  # fmt: skip
    return pd.DataFrame(rows) if rows else None


def _best_k(model, c, max_draws, seed) -> pd.DataFrame | None:
    from bayes_sd.planning import best_k

    if len(c["ks"]) < 2:
        return None
    return best_k(model, c["config"], ks=c["ks"], max_draws=max_draws,
                  random_seed=seed).choice  # fmt: skip


def _unit(load: str) -> str:
    return "req/s" if load == "rate" else "requests in flight"


def _k(k) -> str:
    return "no SD" if int(k) == 0 else f"k = {int(k)}"


def _headline(c, cap, be, bk, terms, credibility, interval) -> tuple[dict, str]:
    """One row of the headline table and the paragraph that says it."""
    unit = _unit(c["load"])
    row: dict = {"configuration": c["name"], "draft lengths": ", ".join(map(str, c["ks"]))}
    text = [f"**{c['name']}.**"]
    if cap is not None:
        slo_text = " and ".join(t.label for t in terms)
        met = cap[cap["meets"]]
        base = cap[cap["k"] == 0].iloc[0]
        row["load"] = unit
        row["capacity without SD"] = base["capacity"]
        if met.empty:
            row.update({"best k under the SLO": np.nan, "capacity at best k": np.nan,
                        "binding term": base["binding"]})  # fmt: skip
            # the lightest load searched: how far from the credibility each term is
            ps = [f"{cap[f'P({t.label})'].max():.2f} ({t.label})" for t in terms]
            text.append(f"No load meets the SLO ({slo_text}) with credibility {credibility:g} "
                        "at any draft length measured: at the lightest load searched the terms "
                        f"hold with P at most {', '.join(ps)}; binding: "
                        f"{base['binding']}.")  # fmt: skip
        else:
            best = met.sort_values(["capacity", "k"], ascending=[False, True]).iloc[0]
            row.update({"best k under the SLO": int(best["k"]), "capacity at best k":
                        best["capacity"], "binding term": best["binding"]})  # fmt: skip
            said = (f"Under the SLO ({slo_text}, credibility {credibility:g}): up to "
                    f"{best['capacity']:.3g} {unit} with {_k(best['k'])}")  # fmt: skip
            if int(best["k"]) != 0:
                said += (f", {base['capacity']:.3g} {unit} without SD" if base["meets"]
                         else ", while without SD no load meets it")  # fmt: skip
            others = [f"{_k(r['k'])}: {r['capacity']:.3g}" if r["meets"] else
                      f"{_k(r['k'])}: none" for _, r in cap.iterrows()
                      if int(r["k"]) not in (0, int(best["k"]))]  # fmt: skip
            if others:
                said += f" ({'; '.join(others)})"
            text.append(said + f"; binding term: {best['binding']}.")
    if be is not None:
        # the k that serves most under the SLO when it is an SD one, else the longest measured
        chosen = float(row.get("best k under the SLO", np.nan))
        pick = int(chosen) if np.isfinite(chosen) and chosen > 0 else int(be["k"].max())
        b = be[be["k"] == pick].iloc[0]
        row.update(
            {
                "break-even k": pick,
                "break-even rate": b["break_even_median"],
                "break-even lo": b["break_even_lo"],
                "break-even hi": b["break_even_hi"],
            }
        )
        text.append(_break_even_text(b, interval))
    if bk is not None:
        row["best k by rate"] = _ranges(bk)
        text.append(f"Lowest expected latency by request rate: {row['best k by rate']}.")
    return row, " ".join(text)


def _break_even_text(b, interval: float) -> str:
    k = int(b["k"])
    if b["p_sd_never_pays"] > 0.5:
        return f"SD with k = {k} does not pay at any rate (P = {b['p_sd_never_pays']:.2f})."
    if b["p_sd_pays_on_whole_grid"] > 0.5:
        return (f"SD with k = {k} pays up to the largest rate searched "
                f"(P = {b['p_sd_pays_on_whole_grid']:.2f}).")  # fmt: skip
    hi = b["break_even_hi"]
    return (f"SD with k = {k} stops paying at {b['break_even_median']:.3g} req/s "
            f"({interval:.0%} interval {b['break_even_lo']:.3g}–"
            f"{'beyond the grid' if not np.isfinite(hi) else f'{hi:.3g}'}).")  # fmt: skip


def _ranges(choice: pd.DataFrame) -> str:
    """The chosen k's contiguous runs along the rate grid, with the lowest P(best) of each:
    ``k = 4 up to 6.2 req/s (P(best) ≥ 0.81), then no SD up to 9.8 req/s (…)``."""
    c = choice[choice["k"].notna()]
    if c.empty:
        return "every draft length saturates on the grid"
    ks = c["k"].to_numpy()
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    ends = np.r_[starts[1:], len(ks)] - 1
    parts = []
    for s, e in zip(starts, ends, strict=True):
        p = float(c["p_best"].iloc[s : e + 1].min())
        parts.append(f"{_k(ks[s])} up to {c['rate'].iloc[e]:.3g} req/s (P(best) ≥ {p:.2f})")
    return ", then ".join(parts)


def _workload_name(w: tuple) -> str:
    target, dataset, prefill, decode = w
    text = f"{target.split('/')[-1]}, {prefill:.0f}/{decode:.0f} tokens"
    return f"{text} ({dataset})" if dataset else text


def _frontiers(model, configs, interval, max_draws, seed) -> dict:
    """One frontier per workload over its configurations (each with its ks)."""
    from bayes_sd.frontier import frontier

    groups: dict = {}
    for c in configs:
        groups.setdefault(c["workload"], []).append(c)
    out = {}
    for w, cs in groups.items():
        named = {c["short"]: {**c["config"], "ks": c["ks"], "measured_to": c["measured_to"]}
                 for c in cs}  # fmt: skip
        load = "rate" if all(c["load"] == "rate" for c in cs) else "concurrency"
        try:
            out[w] = frontier(model, named, load=load, interval=interval, max_draws=max_draws,
                              random_seed=seed)  # fmt: skip
        except ValueError as err:  # nothing reaches a finite interactivity: said, not fatal
            warnings.warn(f"no frontier for {_workload_name(w)}: {err}", stacklevel=3)
    return out


def _frontier_text(f, name: str, ks, others: bool) -> str:
    """Where each k of configuration ``name`` is on the frontier with P ≥ 0.5 (its curves by
    their exact labels: one short name may begin another's, "8 × B200, trt" and
    "8 × B200, trt, fp8")."""
    from bayes_sd.frontier import curve_label

    labels = {curve_label(name, k) for k in ks}
    t = f.table[f.table["config"].isin(labels)]
    parts = []
    for label, g in t.groupby("config", sort=False):
        on = g[g["p_frontier"] >= 0.5]
        if on.empty:
            continue
        what = label[len(name) + 2 :].replace("SD k=", "SD k = ")
        text = (f"{what} from {on['interactivity'].min():.3g} to "
                f"{on['interactivity'].max():.3g} tok/s per user")  # fmt: skip
        far = on["extrapolated"].to_numpy(dtype=bool) if "extrapolated" in on else None
        if far is not None and far.all():
            text += " (all beyond the measured loads)"
        elif far is not None and far.any():
            measured = g.loc[~g["extrapolated"].astype(bool), "interactivity"].min()
            text += f" (below {measured:.3g} beyond the measured loads)"
        parts.append(text)
    among = " among the configurations of this workload" if others else ""
    if not parts:
        return f"Frontier{among}: no draft length of it is on it with P ≥ 0.5."
    return (
        f"Most output throughput per GPU{among} (on the frontier with P ≥ 0.5): "
        + "; ".join(parts)
        + "."
    )
