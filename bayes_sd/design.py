"""From a sweep table to the model's design: labels, indices and covariates, computed once.

A *system* is one target served on one GPU type and count with one workload (source, dataset,
prompt and output lengths); its target coefficients are shared by its baseline (k = 0) and SD
runs. A *draft system* is a system with one drafter (or method, for n-gram lookup). A *series*
is one draft system at one draft length (and acceptance α when the sweep gives it), or a
system's baseline: the runs of one curve over load.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from bayes_sd.coefs import COEFS, NGRAM_PARAMS, REF_DRAFTER_PARAMS, REF_TARGET_PARAMS
from bayes_sd.errors import DataError
from bayes_sd.laws import length_covariates, opening_fraction, requests_in_flight
from bayes_sd.schema import acceptance_of, per_position_rates, validate_sweep

__all__ = [
    "ACCEPTANCE_KEYS",
    "CONFIG_SIZE_COLUMNS",
    "SYSTEM_KEYS",
    "AcceptanceLaw",
    "Design",
    "acceptance_groups",
    "drafter_log_size",
    "label_systems",
    "log_gpus",
    "system_covariates",
]

SYSTEM_KEYS = ("source", "dataset", "gpu", "num_gpus", "target", "prefill_len", "decode_len",
               "engine", "precision", "layout")  # fmt: skip
# categorical effects beside the population laws: one per GPU (type and count), engine and
# weight precision, partially pooled (docs/model.md)
EFFECTS = ("gpu", "engine", "precision")
UNKNOWN = "unknown"
# columns besides the series label that fix a prediction row's coefficients
CONFIG_SIZE_COLUMNS = (
    "target_params",
    "target_active_params",
    "target_experts",
    "target_experts_per_token",
    "drafter_params",
)


def _label(values: tuple) -> str:
    return "|".join(
        "" if pd.isna(v) else (f"{v:g}" if isinstance(v, float) else str(v)) for v in values
    )


def fill_labels(rows: pd.DataFrame) -> None:
    """Blank labels as the model names them: no dataset, layout ``""``; engine and precision
    ``unknown``; one engine."""
    rows["dataset"] = rows["dataset"].fillna("")
    rows["layout"] = rows["layout"].fillna("")
    for col in ("engine", "precision"):
        rows[col] = rows[col].fillna(UNKNOWN)
    rows["engines"] = rows["engines"].astype(float).fillna(1.0)


# Runs of one workload measure slightly different mean lengths (sampled prompts, outputs that
# stop at an end token, vLLM's --random-range-ratio): mean lengths within 10% of the shortest of
# their cluster are one workload, labelled by the cluster's median
LENGTH_TOLERANCE = 0.10
LENGTHS = ("prefill_len", "decode_len")


def _clusters(values: np.ndarray) -> dict[float, float]:
    """Each value's cluster median: sorted values, a new cluster past the tolerance."""
    out: dict[float, float] = {}
    members: list[float] = []
    for v in [*sorted(set(values.tolist())), np.inf]:
        if members and not v <= members[0] * (1 + LENGTH_TOLERANCE):
            out.update(dict.fromkeys(members, round(float(np.median(members)), 1)))
            members = []
        members.append(v)
    return out


def workload_lengths(rows: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """The workload's (prefill, decode) lengths of each row — what labels its system: runs of
    one workload clustered (:data:`LENGTH_TOLERANCE`); with ``reference`` (labelled training
    rows) a prediction row takes the fitted workload of its configuration within the tolerance,
    its own lengths otherwise."""
    others = [c for c in SYSTEM_KEYS if c not in LENGTHS]
    key = [_label(t) for t in rows[others].itertuples(index=False)]
    out = rows[list(LENGTHS)].astype(float).copy()
    for col in LENGTHS:
        values = out[col].to_numpy()
        for g in set(key):
            at = np.flatnonzero(np.asarray(key, dtype=object) == g)
            if reference is None:
                snap = _clusters(values[at][~np.isnan(values[at])])
                out.iloc[at, out.columns.get_loc(col)] = [snap.get(v, v) for v in values[at]]
                continue
            fitted = reference.loc[reference["_workload"] == g, f"_{col}"].unique()
            if not len(fitted):
                continue
            for i in at:
                near = fitted[np.argmin(np.abs(np.log(fitted / values[i])))]
                if abs(values[i] / near - 1) <= LENGTH_TOLERANCE:
                    out.iat[i, out.columns.get_loc(col)] = near
    return out


def label_systems(rows: pd.DataFrame, reference: pd.DataFrame | None = None) -> None:
    """Add ``gpu_key``, ``system`` and ``draft_system`` (drafter, or method for n-gram) labels,
    ``series`` and ``base_series``; lengths enter the labels as workloads
    (:func:`workload_lengths`, against the fitted ``reference`` rows for predictions). Labels
    are built once per distinct configuration (a prediction table of 10^5 rates of a few
    configurations costs a few label builds). A row of unknown k has no series: an error."""
    if (unknown := pd.isna(rows["k"]).to_numpy()).any():
        raise DataError("unknown draft length (k; 0 without SD)", field="k",
                        record=rows.index[unknown.argmax()])  # fmt: skip
    cols = [*SYSTEM_KEYS, "drafter", "method", "k", "alpha"]
    group = rows[cols].groupby(cols, dropna=False, sort=False).ngroup().to_numpy()
    _, first = np.unique(group, return_index=True)
    uniq = rows.iloc[first][cols].copy()
    work = workload_lengths(uniq, reference)
    for col in LENGTHS:
        rows[f"_{col}"] = work[col].to_numpy()[group]  # uniq is in group order
    others = [c for c in SYSTEM_KEYS if c not in LENGTHS]
    rows["_workload"] = np.asarray([_label(t) for t in uniq[others].itertuples(index=False)],
                                   dtype=object)[group]  # fmt: skip
    uniq[list(LENGTHS)] = work[list(LENGTHS)].to_numpy()
    # the level of the GPU effect: the GPU type (the count is a covariate, ``gpus_slope``)
    uniq["gpu_key"] = uniq["gpu"].astype(str)
    uniq["system"] = [_label(t) for t in uniq[list(SYSTEM_KEYS)].itertuples(index=False)]
    uniq["draft_system"] = [s + "|" + (str(d) if isinstance(d, str) else str(m)) if k > 0 else ""
                            for s, d, m, k in zip(uniq["system"], uniq["drafter"], uniq["method"],
                                                  uniq["k"], strict=True)]  # fmt: skip
    # a series: one draft system at one draft length (and α when the sweep gives it)
    uniq["base_series"] = uniq["system"] + "|k0"
    uniq["series"] = [
        f"{d}|k{k:g}" + ("" if pd.isna(a) else f"|a{a:g}") if k > 0 else b
        for d, k, a, b in zip(
            uniq["draft_system"], uniq["k"], uniq["alpha"], uniq["base_series"], strict=True
        )
    ]
    for col in ("gpu_key", "system", "draft_system", "base_series", "series"):
        # object dtype: converting 10^5 labels to Arrow strings took 0.13 s of a predict
        labels = uniq[col].to_numpy(dtype=object)[group]
        rows[col] = pd.Series(labels, index=rows.index, dtype=object)


# Acceptance belongs to what is drafted and checked — the dataset, the target, the drafter (or
# method) and the engine's verification — not to the GPU, the lengths or the load
# (docs/serving.md §4): the runs of one acceptance group share the positional law's (θ, δ).
ACCEPTANCE_KEYS = ("dataset", "target", "drafter", "engine")


def acceptance_groups(rows: pd.DataFrame) -> np.ndarray:
    """The acceptance group of each row (labelled): ``dataset|target|drafter|engine`` for SD
    rows whose acceptance is not imposed by an ``alpha``; ``""`` for the others (k = 0, or a
    simulated α, whose i.i.d. acceptance is a setting, not something to learn)."""
    free = ((rows["k"].astype(float) > 0) & rows["alpha"].isna()).to_numpy()
    drafter = rows["drafter"].where(rows["drafter"].notna() & (rows["drafter"] != ""),
                                    rows["method"])  # fmt: skip
    keys = rows[list(ACCEPTANCE_KEYS)].assign(drafter=drafter)
    # one label per distinct key (10^5 prediction rows of a few configurations: a few labels)
    group = keys.groupby(list(keys), dropna=False, sort=False).ngroup().to_numpy()
    _, first = np.unique(group, return_index=True)
    labels = np.asarray([_label(tuple(t)) for t in keys.iloc[first].itertuples(index=False)],
                        dtype=object)  # fmt: skip
    return np.where(free, labels[group], "")


def opening_of(rows: pd.DataFrame, is_open, concurrency) -> np.ndarray:
    """:func:`bayes_sd.laws.opening_fraction` of a table's rows, from its ``n_requests``
    column (absent or empty: unknown, the steady state) — for the design and prediction rows."""
    n = (pd.to_numeric(rows["n_requests"], errors="coerce").to_numpy(dtype=float)
         if "n_requests" in rows else np.nan)  # fmt: skip
    return opening_fraction(is_open, np.asarray(concurrency, dtype=float), n)


@dataclass(frozen=True)
class Points:
    """The distinct load points of a design's runs: runs of one series at the same load (rate
    or concurrency, engines, lengths, tokens per cycle, opening wave) have one predicted TTFT,
    TPOT and E2E, so the graph computes the phases once per point and each run's likelihood
    takes its point's — a fleet that re-runs its benchmarks (InferenceX's 766 rows are 295
    points on several dates) pays per point, not per run. ``idx``: each run's point; ``first``:
    a run of each point, in point order; ``batch``: the point's measured requests in flight
    per engine, the mean over its runs (open loop ``λ L / n`` differs between replicates with
    their measured latency; closed loop ``N / n`` does not)."""

    idx: np.ndarray
    first: np.ndarray
    batch: np.ndarray

    @classmethod
    def each(cls, batch: np.ndarray) -> Points:
        """Every run its own point."""
        n = np.arange(len(batch))
        return cls(n, n, np.asarray(batch, dtype=float))

    @property
    def distinct(self) -> bool:
        """Whether every run is its own point (then no gather is needed)."""
        return len(self.first) == len(self.idx)


@dataclass(frozen=True)
class AcceptanceLaw:
    """Where the positional acceptance law (:mod:`bayes_sd.acceptance`) enters a design: its
    groups, the (group, k) combinations the runs need, and per run its combination (−1 outside
    the law) and whether it measured its acceptance length."""

    groups: list[str]
    combo_group: np.ndarray
    combo_k: np.ndarray
    run_combo: np.ndarray
    measured: np.ndarray  # measured an acceptance length (and no per-position rates)
    positions: pd.DataFrame  # measured per-position rates: run, group, position (0-based), rate

    @property
    def combos(self) -> list[str]:
        return [f"{self.groups[g]}|k{k:g}" for g, k in zip(self.combo_group, self.combo_k,
                                                            strict=True)]  # fmt: skip

    @property
    def k_max(self) -> int:
        return int(self.combo_k.max(initial=0))


def system_covariates(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per row of ``table`` (systems or prediction configurations): log target size over its
    reference, log GPUs per coefficient (``COEFS`` order: the prefill coefficients on one
    prefill worker's GPUs where prefill runs on its own workers, ``prefill_gpus``, the rest on
    ``num_gpus``), log total over active parameters (MoE), length covariates, expert counts."""
    active = table["target_active_params"].to_numpy(dtype=float)
    total = table["target_params"].to_numpy(dtype=float)
    return {
        "log_size": np.log(active / REF_TARGET_PARAMS),
        "log_gpus": log_gpus(table),
        "log_total_over_active": np.log(total / active),
        "lengths": length_covariates(table["prefill_len"], table["decode_len"]),
        "experts": table["target_experts"].to_numpy(dtype=float),
        "experts_per_token": table["target_experts_per_token"].to_numpy(dtype=float),
    }


def log_gpus(table: pd.DataFrame) -> np.ndarray:
    """(rows, coefficients) log GPU counts, the covariate of the GPU-count law: a prefill
    coefficient's is one prefill worker's GPUs (``prefill_gpus``, disaggregated serving) where
    given, every other one's the deployment's ``num_gpus``."""
    gpus = table["num_gpus"].to_numpy(dtype=float)
    prefill = gpus
    if "prefill_gpus" in table:
        prefill = table["prefill_gpus"].astype(float).fillna(pd.Series(gpus, index=table.index))
        prefill = prefill.to_numpy(dtype=float)
    return np.log(np.stack([prefill if c[2] == "p" else gpus for c in COEFS], axis=1))


def drafter_log_size(table: pd.DataFrame) -> np.ndarray:
    """Log drafter size over its reference (n-gram lookup: a negligible model)."""
    params = table["drafter_params"].astype(float).to_numpy()
    return np.log(np.where(np.isnan(params), NGRAM_PARAMS, params) / REF_DRAFTER_PARAMS)


@dataclass
class Design:
    """Numeric arrays for the model, derived from a sweep (rows = unsaturated runs)."""

    sweep: pd.DataFrame  # the validated input, saturated runs included
    rows: pd.DataFrame
    systems: list[str]
    draft_systems: list[str]
    gpus: list[str]
    sources: list[str]
    series: list[str]
    sys_table: pd.DataFrame
    draft_table: pd.DataFrame
    n_saturated: int
    left_out: dict  # runs not fitted, by reason (saturated ones in n_saturated)

    @classmethod
    def from_sweep(cls, sweep: pd.DataFrame) -> Design:
        sweep = validate_sweep(sweep)
        sat = sweep["saturated"].astype(bool).to_numpy()
        excluded = sweep["excluded"].fillna(False).astype(bool).to_numpy()
        unknown_k = sweep["k"].isna().to_numpy()
        has_mean = (
            sweep["latency_mean_s"].notna()
            | (sweep["ttft_mean_s"].notna() & sweep["tpot_mean_s"].notna())
        ).to_numpy()
        fit = ~sat & ~excluded & ~unknown_k & has_mean & (sweep["load_mode"] != "burst")
        rows = sweep[fit].reset_index(drop=True).copy()
        left_out = {
            "excluded (see excluded_reason)": int((~sat & excluded).sum()),
            "draft length unknown": int((~sat & ~excluded & unknown_k).sum()),
            "no mean latency (percentiles only)": int(
                (~sat & ~excluded & ~unknown_k & ~has_mean).sum()
            ),
        }
        if rows.empty:
            raise DataError(
                "no runs to fit: every run is saturated, excluded, of unknown draft length or "
                f"without a mean latency ({sum(left_out.values()) + int(sat.sum())} runs)"
            )
        fill_labels(rows)
        label_systems(rows)
        systems = sorted(rows["system"].unique())
        draft_systems = sorted(d for d in rows["draft_system"].unique() if d)
        sys_table = rows.groupby("system").first().loc[systems]
        draft_table = (
            rows[rows["draft_system"] != ""].groupby("draft_system").first().reindex(draft_systems)
        )
        return cls(
            sweep,
            rows,
            systems,
            draft_systems,
            sorted(rows["gpu_key"].unique()),
            sorted(rows["source"].unique()),
            sorted(rows["series"].unique()),
            sys_table,
            draft_table,
            int(sat.sum()),
            {k: v for k, v in left_out.items() if v},
        )

    # ------------------------------------------------------------------ per run

    @cached_property
    def k(self) -> np.ndarray:
        return self.rows["k"].to_numpy(dtype=float)

    @cached_property
    def acceptance(self) -> np.ndarray:
        """Tokens per cycle of each run: measured, from α, 1 at k = 0; NaN where latent."""
        return acceptance_of(self.rows)

    @cached_property
    def acceptance_law(self) -> AcceptanceLaw:
        """The runs under the positional acceptance law: SD runs without an imposed α."""
        group = acceptance_groups(self.rows)
        inside = group != ""
        groups = sorted(set(group[inside]))
        g = pd.Index(groups).get_indexer(group)
        combo = pd.DataFrame({"g": g, "k": self.k})[inside]
        uniq = combo.drop_duplicates().sort_values(["g", "k"]).reset_index(drop=True)
        run_combo = np.full(len(self.rows), -1)
        if len(uniq):
            where = pd.MultiIndex.from_frame(uniq)
            run_combo[inside] = where.get_indexer(pd.MultiIndex.from_frame(combo))
        cells = self.rows["acceptance_per_position"]
        pos = []
        for i in np.flatnonzero(inside & cells.notna().to_numpy()):
            rates = per_position_rates(cells.iat[i])
            pos += [] if rates is None else [(i, g[i], j, r) for j, r in enumerate(rates)]
        pos = pd.DataFrame(pos, columns=["run", "group", "position", "rate"])
        measured = inside & ~np.isnan(self.acceptance)
        measured[pos["run"].to_numpy(dtype=int)] = False  # its rates say more than their sum
        return AcceptanceLaw(groups, uniq["g"].to_numpy(dtype=int),
                             uniq["k"].to_numpy(dtype=float), run_combo, measured,
                             pos)  # fmt: skip

    @cached_property
    def is_open(self) -> np.ndarray:
        return (self.rows["load_mode"] == "rate").to_numpy()

    @cached_property
    def rate(self) -> np.ndarray:
        rate = self.rows["request_rate"].astype(float).fillna(0.0)
        return np.where(self.is_open, rate, 0.0)

    @cached_property
    def concurrency(self) -> np.ndarray:
        conc = self.rows["concurrency"].astype(float).fillna(1.0)
        return np.where(self.is_open, 0.0, conc)

    @cached_property
    def opening(self) -> np.ndarray:
        """Share of each closed-loop run's requests sent in its opening wave (0 where the run's
        request count is unknown, and open loop)."""
        return opening_of(self.rows, self.is_open, self.concurrency)

    def log_mean(self, metric: str) -> np.ndarray:
        """Log of the measured mean ``latency`` (E2E), ``ttft`` or ``tpot``; NaN where absent."""
        with np.errstate(divide="ignore"):
            return np.log(self.rows[f"{metric}_mean_s"].to_numpy(dtype=float))

    def tail_ratio(self, tail: str) -> np.ndarray | None:
        """Log ratio of a measured percentile (``ttft_p99`` …) to its metric's measured mean,
        NaN where either is missing; None when no run has both."""
        metric = tail.rsplit("_", 1)[0]
        column = f"{tail}_s"
        if column not in self.rows:
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.log(self.rows[column].to_numpy(dtype=float)) - self.log_mean(metric)
        ratio[~np.isfinite(ratio)] = np.nan
        return None if np.isnan(ratio).all() else ratio

    @cached_property
    def log_latency(self) -> np.ndarray:
        """Log mean E2E: measured, else mean TTFT + (D − 1) mean TPOT."""
        e2e = self.rows["latency_mean_s"].to_numpy(dtype=float)
        composed = self.rows["ttft_mean_s"].to_numpy(dtype=float) + (
            self.decode_len - 1.0
        ) * self.rows["tpot_mean_s"].to_numpy(dtype=float)
        return np.log(np.where(np.isnan(e2e), composed, e2e))  # fmt: skip

    @cached_property
    def engines(self) -> np.ndarray:
        return self.rows["engines"].to_numpy(dtype=float)

    @cached_property
    def batch(self) -> np.ndarray:
        """Measured requests in flight per engine: ``λ L / n`` open loop, ``N / n`` closed."""
        return requests_in_flight(self.is_open, self.rate, np.exp(self.log_latency),
                                  self.concurrency, self.engines)  # fmt: skip

    @cached_property
    def decode_len(self) -> np.ndarray:
        return self.rows["decode_len"].to_numpy(dtype=float)

    @cached_property
    def source_idx(self) -> np.ndarray:
        return pd.Index(self.sources).get_indexer(self.rows["source"])

    @cached_property
    def system_idx(self) -> np.ndarray:
        return pd.Index(self.systems).get_indexer(self.rows["system"])

    @cached_property
    def draft_idx(self) -> np.ndarray:
        """Draft system of each run (0 for baseline runs: their drafting costs nothing)."""
        idx = pd.Index(self.draft_systems or ["none"]).get_indexer(self.rows["draft_system"])
        return np.where(idx < 0, 0, idx)

    @cached_property
    def series_idx(self) -> np.ndarray:
        return pd.Index(self.series).get_indexer(self.rows["series"])

    @cached_property
    def sd_series(self) -> list[str]:
        """The series with drafts (k > 0): those that get a series shift (a baseline series is
        its system's, whose level-2 shift it already has)."""
        k = self.rows.groupby("series")["k"].first()
        return [s for s in self.series if k[s] > 0]

    @cached_property
    def series_first(self) -> np.ndarray:
        """A run of each series (its first), in series order."""
        return np.unique(self.series_idx, return_index=True)[1]

    @cached_property
    def series_most_loaded(self) -> np.ndarray:
        """The most loaded run of each series (the run that pins its C2), in series order."""
        ser = self.series_idx
        order = np.lexsort((self.batch, ser))
        return order[np.r_[np.flatnonzero(np.diff(ser[order])), len(ser) - 1]]

    @cached_property
    def points(self) -> Points:
        """The runs' distinct load points (:class:`Points`)."""
        rows = self.rows
        keys = pd.DataFrame({
            "series": self.series_idx, "open": self.is_open, "rate": self.rate,
            "conc": self.concurrency, "engines": self.engines, "k": self.k,
            "decode": self.decode_len, "prefill": rows["prefill_len"].to_numpy(dtype=float),
            "tokens": np.nan_to_num(self.acceptance, nan=-1.0),
            "combo": self.acceptance_law.run_combo, "opening": self.opening,
        })  # fmt: skip
        idx = keys.groupby(list(keys.columns), sort=False).ngroup().to_numpy()
        first = np.unique(idx, return_index=True)[1]
        batch = np.bincount(idx, self.batch) / np.bincount(idx)
        return Points(idx, first, batch)

    @cached_property
    def system_representative(self) -> np.ndarray:
        """Per system, in system order: its first baseline run, else its first run."""
        sys_idx = self.system_idx
        order = np.lexsort((np.arange(len(self.rows)), self.rows["k"].to_numpy() > 0, sys_idx))
        _, first = np.unique(sys_idx[order], return_index=True)
        return order[first]

    # ------------------------------------------------------------------ per system

    @cached_property
    def system_covariates(self) -> dict[str, np.ndarray]:
        return system_covariates(self.sys_table)

    @cached_property
    def system_gpu(self) -> np.ndarray:
        return pd.Index(self.gpus).get_indexer(self.sys_table["gpu_key"])

    def match_acceptance(self, rows: pd.DataFrame) -> None:
        """Prediction ``rows`` (labelled): a row giving ``alpha`` for a series the fit measured
        is that series, not a new one. Draft systems fitted under an imposed α (simulated
        sweeps): an SD row giving neither ``acceptance_length`` nor ``alpha`` takes the mean
        measured at its k (and the series fitted there, where one α was), or at another k the
        i.i.d. law with the α of the fitted runs (warned). Positional-law systems: predict."""
        from bayes_sd.acceptance import alpha_from_tokens_per_cycle, tokens_per_cycle

        imposed = self.rows["alpha"].notna().to_numpy()
        fitted = self.rows[["draft_system", "series"]].assign(k=self.k, e=self.acceptance)
        fitted = fitted[(self.k > 0) & imposed & ~np.isnan(self.acceptance)]
        law = set(self.rows.loc[~imposed & (self.k > 0), "draft_system"])
        fitted = fitted[~fitted["draft_system"].isin(law)]
        # a row's alpha for a series fitted without one names that series
        codes, names = pd.factorize(rows["series"])  # per distinct series, not per row
        plain = names.str.replace(r"\|a[^|]*$", "", regex=True)
        same = (~names.isin(self.series) & plain.isin(self.series))[codes]
        rows.loc[same, "series"] = plain[codes][same]
        need = (rows["k"] > 0).to_numpy() & np.isnan(acceptance_of(rows))
        need &= rows["draft_system"].isin(set(fitted["draft_system"])).to_numpy()
        if not need.any():
            return
        at_k = fitted.groupby(["draft_system", "k"])["e"].mean()
        series_at = fitted.groupby(["draft_system", "k"])["series"].agg(set)  # fitted there
        a = alpha_from_tokens_per_cycle(fitted["e"], fitted["k"])
        alpha = fitted.assign(a=a).groupby("draft_system")["a"].mean()
        extrapolated = []
        for i in np.flatnonzero(need):
            d, k = rows["draft_system"].iat[i], float(rows["k"].iat[i])
            if (d, k) in at_k.index:
                rows.loc[rows.index[i], "acceptance_length"] = at_k[(d, k)]
                if len(series_at[(d, k)]) == 1:
                    rows.loc[rows.index[i], "series"] = next(iter(series_at[(d, k)]))
            else:
                e = float(tokens_per_cycle(alpha[d], k))
                rows.loc[rows.index[i], "acceptance_length"] = e
                name = f"drafter {rows['drafter'].iat[i]} of {rows['target'].iat[i]}"
                extrapolated.append((name, k, alpha[d], e))  # readable: not the pipe-joined key
        if extrapolated:
            shown = sorted(set(extrapolated))[:3]
            warnings.warn(
                "acceptance not measured at "
                + "; ".join(f"k = {k:g} of {d} (i.i.d. law with α = {a:.2f} from its measured "
                            f"k: {e:.2f} tokens per step)" for d, k, a, e in shown)
                + ": an extrapolation without uncertainty; give acceptance_length or alpha to "
                "set it",
                UserWarning,
                stacklevel=4,
            )  # fmt: skip

    def levels(self, effect: str) -> list[str]:
        """The fitted levels of a categorical effect (``gpu``: GPU type and count)."""
        if effect == "gpu":
            return self.gpus
        return sorted(self.rows[effect].unique())

    @staticmethod
    def effect_column(effect: str) -> str:
        """The labelled rows' column of a categorical effect's level (GPU: ``gpu_key``)."""
        return "gpu_key" if effect == "gpu" else effect

    def effect_index(self, effect: str, table: pd.DataFrame) -> np.ndarray:
        """Index of each row of ``table`` (systems or draft systems) in ``levels(effect)``."""
        return pd.Index(self.levels(effect)).get_indexer(table[self.effect_column(effect)])

    @cached_property
    def covariate_centre(self) -> dict[str, np.ndarray]:
        """Mean covariates of the design: log size per coefficient (the targets' for the
        target's coefficients, the drafters' for drafting) and the three lengths."""
        from bayes_sd.coefs import DRAFT_COEFS

        cov = self.system_covariates
        d_size = self.draft_gpu_and_size[1] if self.draft_systems else np.zeros(1)
        log_size = np.array([float(np.mean(d_size)) if c in DRAFT_COEFS
                             else float(np.mean(cov["log_size"])) for c in COEFS])  # fmt: skip
        return {"log_size": log_size, "lengths": cov["lengths"].mean(axis=0),
                "log_gpus": cov["log_gpus"].mean(axis=0)}  # fmt: skip

    @cached_property
    def closed_loop(self) -> bool:
        return bool((~self.is_open).any())

    @cached_property
    def active_share(self) -> np.ndarray:
        """Per system: active over total parameters (1 for dense targets)."""
        t = self.sys_table
        return (t["target_active_params"] / t["target_params"]).to_numpy(dtype=float)

    @cached_property
    def draft_gpu_and_size(self) -> tuple[np.ndarray, np.ndarray]:
        """GPU index and log drafter size per draft system (one dummy without drafters)."""
        if not self.draft_systems:
            return np.zeros(1, dtype=int), np.zeros(1)
        gpus = pd.Index(self.gpus).get_indexer(self.draft_table["gpu_key"])
        return gpus, drafter_log_size(self.draft_table)

    @cached_property
    def has_moe(self) -> bool:
        return bool(np.any(self.system_covariates["experts"] > 1))

    @cached_property
    def runs_per_series(self) -> float:
        return len(self.rows) / max(len(self.series), 1)
