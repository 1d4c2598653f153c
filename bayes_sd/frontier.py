"""The throughput–interactivity frontier with credible bands.

Serving systems are compared on one picture: output tokens per second per GPU (throughput, what
the operator pays for) against output tokens per second per user (interactivity, 1 / TPOT: what
the user feels). Raising the load moves a configuration along its curve — more throughput,
less interactivity. At an interactivity level ``u``, a configuration's best throughput is the
throughput at the highest load whose interactivity is still ≥ ``u``; the frontier is the best
configuration at each level.

:func:`frontier` computes both from joint posterior draws: per configuration the throughput it
reaches at each interactivity level (median and credible band), and P(the configuration is on
the frontier) — the share of draws in which it gives the most throughput at that level, so two
configurations whose bands overlap share the probability instead of one being declared best.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["Frontier", "curve_label", "frontier"]


@dataclass
class Frontier:
    """``table``: one row per (configuration, interactivity level) — ``config``, ``k``,
    ``interactivity`` (tok/s per user), ``throughput_median``, ``throughput_lo``,
    ``throughput_hi`` (tok/s per GPU; NaN where the configuration cannot reach that level in
    most draws), ``p_reach`` (P(it reaches the level)), ``p_frontier`` (P(it gives the most
    throughput there)), ``extrapolated`` (the level needs loads heavier than the heaviest
    measured, where a configuration gave ``measured_to``: dashed in the figure). ``curves``:
    per configuration and load, the median and band of both axes (the curve itself)."""

    table: pd.DataFrame
    curves: pd.DataFrame
    interval: float

    def to_files(self, folder: str | Path) -> list[Path]:
        """Write ``frontier.csv``, ``frontier_curves.csv``, ``frontier.json`` and
        ``frontier.png`` (atomically); returns the paths."""
        from bayes_sd.schema import atomic_write

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / n for n in ("frontier.csv", "frontier_curves.csv", "frontier.json",
                                      "frontier.png")]  # fmt: skip
        atomic_write(paths[0], lambda p: self.table.to_csv(p, index=False))
        atomic_write(paths[1], lambda p: self.curves.to_csv(p, index=False))
        atomic_write(paths[2], lambda p: self.table.to_json(p, orient="records", indent=1))
        fig = self.figure()
        atomic_write(paths[3], lambda p: fig.savefig(p, dpi=200, bbox_inches="tight",
                                                     format="png"))  # fmt: skip
        return paths

    def figure(self, title: str | None = None):
        """Two panels: throughput per GPU against interactivity with the credible band of each
        configuration, and P(on the frontier) along the same axis; ``title`` above (the
        workload, say), the default names the bands."""
        from bayes_sd.figures import _subplots

        names = self.table["config"].unique()
        # more than four curves: the legend goes under the panels (inside, it hides them), in
        # two columns when the names are short enough to fit side by side
        below = len(names) > 4
        ncol = 2 if max(len(str(x)) for x in names) <= 40 else 1
        rows = -(-len(names) // ncol) if below else 0
        fig, (top, bottom) = _subplots(
            2, 1, figsize=(7.0, 6.5 + 0.2 * rows), sharex=True,
            gridspec_kw={"height_ratios": [3, 1.3]}, layout="constrained",
        )  # fmt: skip
        pct = round(100 * self.interval)
        extrapolated = self.table.get("extrapolated", pd.Series(False, index=self.table.index))
        for i, (name, t) in enumerate(self.table.groupby("config", sort=False)):
            colour = f"C{i % 10}"
            far = extrapolated.loc[t.index].to_numpy(dtype=bool)
            # dashed beyond the measured loads, joined at the first measured level
            dashed = far | (np.r_[False, far[:-1]] & ~far)
            x, y = t["interactivity"].to_numpy(), t["throughput_median"].to_numpy()
            if dashed.any():
                top.plot(x[dashed], y[dashed], color=colour, lw=1.2, ls="--")
            top.plot(x[~far], y[~far], color=colour, lw=1.8, label=name)
            top.fill_between(t["interactivity"], t["throughput_lo"], t["throughput_hi"],
                             color=colour, alpha=0.2, lw=0)  # fmt: skip
            bottom.plot(t["interactivity"], t["p_frontier"], color=colour, lw=1.5)
        top.set_xscale("log")
        top.set_ylabel("output throughput per GPU (tok/s)", fontsize=10)
        top.set_title(title or f"Throughput–interactivity frontier (median, {pct}% credible "
                      "band)", fontsize=11)  # fmt: skip
        if extrapolated.any():  # one legend entry for the dashes
            top.plot([], [], color="0.4", lw=1.2, ls="--", label="beyond the measured loads")
        if below:
            fig.legend(*top.get_legend_handles_labels(), loc="outside lower center", ncol=ncol,
                       fontsize=8, frameon=False)  # fmt: skip
        else:
            top.legend(fontsize=9, frameon=False)
        top.grid(alpha=0.3, which="both")
        bottom.set_ylabel("P(on frontier)", fontsize=10)
        bottom.set_ylim(-0.02, 1.02)
        bottom.set_xlabel("interactivity (output tok/s per user)", fontsize=10)
        bottom.grid(alpha=0.3, which="both")
        from matplotlib.ticker import ScalarFormatter

        bottom.xaxis.set_major_formatter(ScalarFormatter())
        for ax in (top, bottom):
            ax.tick_params(labelsize=9)
        return fig


def frontier(
    model,
    configs: Mapping[str, dict] | dict,
    *,
    ks=(0,),
    load: str = "concurrency",
    loads=None,
    levels: int = 40,
    interval: float = 0.9,
    max_draws: int = 400,
    random_seed: int = 0,
) -> Frontier:
    """The frontier of ``configs`` (a mapping of readable names to configurations as in
    :mod:`bayes_sd.planning`, or one configuration), each at every draft length of ``ks``
    (0 = no SD; a configuration with a ``ks`` entry uses its own; a ``measured_to`` entry,
    the heaviest load its sweep measured, marks the levels beyond it), swept over ``loads``
    (closed-loop concurrencies 1 … 512 by default, or open-loop rates with ``load="rate"``),
    at ``levels`` interactivity levels spanning what the configurations reach."""
    from bayes_sd.capacity import load_grid
    from bayes_sd.planning import _rows

    if not 0 < interval < 1:
        raise ValueError("interval must be in (0, 1)")
    if "gpu" in configs and "target" in configs:  # one configuration
        configs = {_name(configs): configs}
    if not configs:
        raise ValueError("give at least one configuration")
    ks = [int(k) for k in ks]
    names, parts, measured, without_sd = [], [], {}, set()
    for name, cfg in configs.items():
        own = [int(k) for k in cfg.get("ks", ks)]  # a configuration may name its own ks
        top = cfg.get("measured_to")  # the heaviest load measured, when the caller knows it
        cfg = {c: v for c, v in cfg.items() if c not in ("ks", "measured_to")}
        if 0 in own:  # variants that differ in SD settings alone share one no-SD curve
            key = _rows(cfg, [0], [1.0], load).iloc[0].to_json()
            own = [k for k in own if k != 0 or key not in without_sd]
            without_sd.add(key)
        if not own:
            continue
        grid = (load_grid(model, cfg, own, load=load, points=48, max_concurrency=512.0)
                if loads is None else np.asarray(loads, dtype=float))  # fmt: skip
        names += [(curve_label(name, k), k, grid) for k in own]
        measured.update({curve_label(name, k): top for k in own})
        parts.append(_rows(cfg, own, grid, load))
    rows = pd.concat(parts, ignore_index=True)
    pred = model.predict(rows, max_draws=max_draws, random_seed=random_seed, tails=False)
    thr = pred.draws["throughput"].values.reshape(-1, len(rows))
    inter = pred.draws["interactivity"].values.reshape(-1, len(rows))
    lo_q, hi_q = (1 - interval) / 2, 1 - (1 - interval) / 2
    curves, blocks, start = [], [], 0
    for label, k, grid in names:
        part = slice(start, start + len(grid))
        start += len(grid)
        t, u = thr[:, part], inter[:, part]
        blocks.append((label, k, t, u))
        curves.append(pd.DataFrame({
            "config": label, "k": k, "load": grid,
            "interactivity_median": np.median(u, axis=0),
            "throughput_median": np.median(t, axis=0),
            "throughput_lo": np.quantile(t, lo_q, axis=0),
            "throughput_hi": np.quantile(t, hi_q, axis=0),
        }))  # fmt: skip
    reach = np.concatenate([np.median(u, axis=0) for _, _, _, u in blocks])
    reach = reach[np.isfinite(reach) & (reach > 0)]
    if reach.size == 0:
        raise ValueError("no configuration has a finite interactivity on the load grid")
    u_levels = np.geomspace(reach.min(), reach.max(), levels)
    # per draw, configuration and level: the most throughput with interactivity ≥ the level
    best = np.stack([_best_at(t, u, u_levels) for _, _, t, u in blocks])  # (config, draw, level)
    winner = np.argmax(np.nan_to_num(best, nan=-np.inf), axis=0)  # (draw, level)
    none = np.isnan(best).all(axis=0)
    table = []
    for c, (label, k, _, _) in enumerate(blocks):
        b = best[c]
        reached = ~np.isnan(b)
        p_reach = reached.mean(axis=0)
        with warnings.catch_warnings():  # levels a configuration never reaches: all-NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(b, axis=0)
            lo, hi = np.nanquantile(b, lo_q, axis=0), np.nanquantile(b, hi_q, axis=0)
        mostly = p_reach >= 0.5
        # levels below the interactivity at the heaviest measured load need heavier loads:
        # their throughput is extrapolated
        top, grid = measured.get(label), names[c][2]
        inside = grid <= top if top is not None else np.zeros(len(grid), bool)
        edge = (float(np.median(blocks[c][3][:, np.flatnonzero(inside)[-1]]))
                if top is not None and inside.any() else -np.inf)  # fmt: skip
        table.append(pd.DataFrame({
            "config": label, "k": k, "interactivity": u_levels,
            "throughput_median": np.where(mostly, med, np.nan),
            "throughput_lo": np.where(mostly, lo, np.nan),
            "throughput_hi": np.where(mostly, hi, np.nan),
            "p_reach": p_reach,
            "p_frontier": ((winner == c) & ~none).mean(axis=0),
            "extrapolated": u_levels < edge,
        }))  # fmt: skip
    return Frontier(pd.concat(table, ignore_index=True), pd.concat(curves, ignore_index=True),
                    interval)  # fmt: skip


def curve_label(name: str, k: int) -> str:
    """The label of configuration ``name`` at draft length ``k`` in a frontier's tables."""
    return f"{name}, {'no SD' if k == 0 else f'SD k={k}'}"


def _best_at(thr: np.ndarray, inter: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """(draw, level): max throughput over the loads whose interactivity ≥ each level; NaN
    where no load reaches the level."""
    ok = inter[:, :, None] >= levels[None, None, :]  # (draw, load, level)
    t = np.where(ok, thr[:, :, None], -np.inf).max(axis=1)
    return np.where(np.isfinite(t), t, np.nan)


def _name(cfg: dict) -> str:
    parts = [str(cfg["target"]).rsplit("/", 1)[-1], str(cfg["gpu"])]
    if cfg.get("engine"):
        parts.append(str(cfg["engine"]))
    return " · ".join(parts)
