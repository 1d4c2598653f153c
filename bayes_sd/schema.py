"""The canonical sweep table: one row per benchmark run, validated.

Every reader returns this table (``validate_sweep`` output). Columns are listed in
``SWEEP_COLUMNS`` with their type, whether a value is required, and their meaning; the same list
is the data-format reference in ``docs/data-formats.md``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayes_sd.errors import DataError, Problem

__all__ = [
    "CONFIG_KEYS",
    "LOAD_MODES",
    "SWEEP_COLUMNS",
    "Column",
    "per_position_rates",
    "validate_sweep",
    "write_sweep",
]

LOAD_MODES = ("rate", "concurrency", "burst")
# Columns that identify one served system and workload: a series of runs over load.
CONFIG_KEYS = (
    "source",
    "dataset",
    "gpu",
    "num_gpus",
    "target",
    "drafter",
    "method",
    "k",
    "alpha",
    "prefill_len",
    "decode_len",
    "engine",
    "precision",
    "layout",
    "engines",
    "disaggregated",
)


@dataclass(frozen=True)
class Column:
    kind: str  # "str", "int", "float" or "bool"
    required: bool
    doc: str
    _: KW_ONLY
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: value must be > low (not >=)


SWEEP_COLUMNS: dict[str, Column] = {
    # Provenance
    "source": Column("str", True, "Label of the sweep the run belongs to (noise is per source)."),
    "run_id": Column("str", True, "Unique id of the run (stable hash of file and record)."),
    "file": Column("str", False, "File the run was read from."),
    "record": Column("str", False, "Record within the file (JSON line, benchmark index, row)."),
    "dataset": Column("str", False, "Prompt dataset (ShareGPT, random, ...)."),
    # System
    "gpu": Column("str", True, "GPU type, e.g. H100-SXM-80GB."),
    "num_gpus": Column("int", True, "GPUs serving the target (tensor parallel size).", low=1),
    "target": Column("str", True, "Target model name."),
    "target_params": Column("float", True, "Target parameters (total).", low=0, low_open=True),
    "target_active_params": Column(
        "float",
        True,
        "Target parameters active per token (= total if dense).",
        low=0,
        low_open=True,
    ),
    "target_experts": Column("int", True, "Experts per MoE layer (1 if dense).", low=1),
    "target_experts_per_token": Column(
        "int", True, "Experts routed per token (1 if dense).", low=1
    ),
    "drafter": Column("str", False, "Draft model or head (empty for k = 0 and n-gram)."),
    "drafter_params": Column("float", False, "Drafter parameters.", low=0, low_open=True),
    "method": Column("str", True, "SD method (vLLM names: draft_model, eagle3, ngram, ...); none."),
    "k": Column(
        "int",
        False,
        "Draft length (num_speculative_tokens); 0 = no SD; empty for an SD run whose k is not "
        "known (kept, not fitted).",
        low=0,
    ),
    # Engine
    "engine": Column("str", False, "Serving engine: vllm, sglang, trt (TensorRT-LLM), dynamo-..."),
    "precision": Column("str", False, "Weight precision: bf16, fp8, fp4."),
    "layout": Column("str", False, "Parallel layout (tensor/expert/data parallel, workers)."),
    "engines": Column(
        "float",
        False,
        "Engines sharing the load (decode workers × attention data-parallel ranks; 1 if "
        "empty): each runs concurrency / engines requests.",
        low=1,
    ),
    "disaggregated": Column(
        "bool",
        False,
        "Prefill runs on its own workers (prefill/decode disaggregation, e.g. NVIDIA Dynamo); "
        "empty = no. Recorded, not yet used by the model (docs/validation.md, section 5).",
    ),
    "prefill_gpus": Column(
        "float",
        False,
        "GPUs of one prefill worker where prefill runs on its own workers (disaggregated); "
        "the prefill coefficients scale with it; empty = num_gpus.",
        low=1,
    ),
    "max_num_seqs": Column("float", False, "Engine's cap on running requests, if known.", low=1),
    # Acceptance
    "alpha": Column(
        "float", False, "Per-token acceptance probability (imposed/assumed).", low=0, high=1
    ),
    "acceptance_length": Column(
        "float", False, "Measured mean tokens per cycle, bonus token included (1 for k = 0).", low=1
    ),
    "acceptance_source": Column(
        "str", False, "Where acceptance_length came from: server, client_stream, metadata."
    ),
    "acceptance_per_position": Column(
        "str",
        False,
        "vLLM's per-position acceptance rates (accepted at draft position i over "
        "drafts, unconditional; k numbers separated by spaces, non-increasing).",
    ),
    # Workload
    "prefill_len": Column("float", True, "Mean prompt tokens per request.", low=0, low_open=True),
    "decode_len": Column("float", True, "Mean output tokens per request.", low=0, low_open=True),
    # Load
    "load_mode": Column("str", True, "rate (open loop), concurrency (closed loop) or burst."),
    "arrivals": Column("str", False, "Open-loop arrival process: poisson, gamma or constant."),
    "burstiness": Column(
        "float", False, "Arrival burstiness (1 = Poisson; gamma shape).", low=0, low_open=True
    ),
    "request_rate": Column(
        "float", False, "Offered request rate (req/s), open loop.", low=0, low_open=True
    ),
    "concurrency": Column("float", False, "Fixed concurrency (closed loop) or cap.", low=1),
    "achieved_rate": Column("float", False, "Completed requests per second.", low=0),
    "n_requests": Column(
        "int",
        False,
        "Completed requests (unknown for digitised data); in a "
        "closed loop it sizes the opening wave.",
        low=1,
    ),
    "n_failed": Column("int", False, "Failed requests.", low=0),
    "duration_s": Column("float", False, "Benchmark wall time (s).", low=0, low_open=True),
    # Latency (seconds)
    "latency_mean_s": Column(
        "float",
        False,
        "Mean end-to-end latency (s); a run needs it or mean TTFT and TPOT to be fitted.",
        low=0,
        low_open=True,
    ),
    "latency_p50_s": Column("float", False, "Median latency (s).", low=0, low_open=True),
    "latency_p90_s": Column("float", False, "90th percentile latency (s).", low=0, low_open=True),
    "latency_p99_s": Column("float", False, "99th percentile latency (s).", low=0, low_open=True),
    "latency_source": Column(
        "str", False, "How latency was obtained: summary, latencies, ttft+itl, ttft+tpot."
    ),
    "latency_growth": Column(
        "float",
        False,
        "Mean latency of the last quarter of requests over the first.",
        low=0,
        low_open=True,
    ),
    "backlog_growth": Column(
        "float",
        False,
        "Share of arrivals that piled up in the system over the run (≈ 1 − achieved/offered).",
    ),
    "ttft_mean_s": Column("float", False, "Mean time to first token (s).", low=0),
    "ttft_p50_s": Column("float", False, "Median time to first token (s).", low=0),
    "ttft_p90_s": Column("float", False, "90th percentile time to first token (s).", low=0),
    "ttft_p99_s": Column("float", False, "99th percentile time to first token (s).", low=0),
    "tpot_mean_s": Column(
        "float",
        False,
        "Mean time per output token after the first (s): (E2E − TTFT)/(D − 1).",
        low=0,
    ),
    "tpot_p50_s": Column("float", False, "Median time per output token (s).", low=0),
    "tpot_p90_s": Column("float", False, "90th percentile time per output token (s).", low=0),
    "tpot_p99_s": Column("float", False, "99th percentile time per output token (s).", low=0),
    "output_throughput": Column(
        "float", False, "Output tokens per second over the run, whole deployment.", low=0
    ),
    "date": Column("str", False, "Date of the run (as recorded)."),
    "saturated": Column("bool", True, "Run is past saturation; left out of model fits."),
    "saturation_reason": Column("str", False, "Why the run was flagged saturated."),
    "excluded": Column(
        "bool", False, "Run kept in the table but not fitted (see excluded_reason); empty = no."
    ),
    "excluded_reason": Column("str", False, "Why the run is not fitted."),
}
# times of requests: nothing served takes under 10 µs or over 11 days (1e-12 s or 1e12 s are
# unit errors)
for _name, _col in list(SWEEP_COLUMNS.items()):
    if _name.split("_")[0] in ("latency", "ttft", "tpot") and _name.endswith("_s"):
        SWEEP_COLUMNS[_name] = dataclasses.replace(_col, low=1e-5, low_open=False, high=1e6)
# the latency statistics of a run, per metric (E2E, TTFT, TPOT) and statistic
METRICS = ("latency", "ttft", "tpot")
STATISTICS = ("mean", "p50", "p90", "p99")

_TOL = 1e-6


def acceptance_of(rows: pd.DataFrame) -> np.ndarray:
    """Expected tokens per cycle of each run: measured ``acceptance_length``, else from
    ``alpha`` (i.i.d.), 1 without SD, NaN where the rows carry neither."""
    from bayes_sd.acceptance import tokens_per_cycle

    k = rows["k"].to_numpy(dtype=float)
    e = rows["acceptance_length"].astype(float).to_numpy().copy()
    alpha = rows["alpha"].astype(float).to_numpy()
    use = np.isnan(e) & ~np.isnan(alpha) & (k > 0)
    e[use] = tokens_per_cycle(alpha[use], k[use])
    e[k == 0] = 1.0
    return e


def columns_markdown() -> str:
    """The canonical columns as a Markdown table (docs/data-formats.md embeds it)."""
    rows = ["| column | type | required | meaning |", "|---|---|---|---|"]
    for name, c in SWEEP_COLUMNS.items():
        bounds = []
        if c.low is not None:
            bounds.append(f"{'>' if c.low_open else '≥'} {c.low:g}")
        if c.high is not None:
            bounds.append(f"≤ {c.high:g}")
        kind = f"{c.kind} ({', '.join(bounds)})" if bounds else c.kind
        rows.append(f"| `{name}` | {kind} | {'yes' if c.required else ''} | {c.doc} |")
    return "\n".join(rows) + "\n"


def _blank(value) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def _where(table: pd.DataFrame, i: int, file: str | None) -> tuple[str | None, str]:
    row = table.iloc[i]
    row_file = row.get("file") if "file" in table.columns else None
    row_record = row.get("record") if "record" in table.columns else None
    f = row_file if not _blank(row_file) else file
    r = row_record if not _blank(row_record) else f"row {i + 1}"
    return (None if _blank(f) else str(f)), str(r)


def _coerce(
    table: pd.DataFrame, name: str, col: Column, problems: list[Problem], file: str | None
) -> pd.Series:
    """Column as the canonical dtype; values that do not convert become problems."""
    raw = table[name]
    if col.kind == "str":
        text = raw.astype("string").str.strip()
        return text.mask(text == "")
    if col.kind == "bool":
        if raw.dtype == bool:
            return raw.astype("boolean")
        words = raw.astype("string").str.strip().str.lower()
        out = pd.Series(pd.NA, index=table.index, dtype="boolean")
        out[words.isin(["true", "1", "yes", "1.0"]).fillna(False).to_numpy()] = True
        out[words.isin(["false", "0", "no", "0.0"]).fillna(False).to_numpy()] = False
        for i in np.flatnonzero((out.isna() & words.notna() & (words != "")).to_numpy()):
            f, r = _where(table, int(i), file)
            problems.append(Problem(f"expected true/false, got {raw.iloc[i]!r}", f, r, name))
        return out
    if raw.dtype.kind in "iuf":
        return raw.astype(float)
    if raw.dtype.kind == "b":
        values = pd.Series(np.nan, index=table.index)
        failed = np.ones(len(raw), dtype=bool)
    else:
        values = pd.to_numeric(raw.astype(object), errors="coerce").astype(float)
        failed = (values.isna() & raw.notna()).to_numpy()
    for i in np.flatnonzero(failed):
        v = raw.iloc[i]
        if _blank(v):
            continue
        try:  # "NaN" and "inf" convert (and are judged later); "abc" and True do not
            if isinstance(v, bool | np.bool_):
                raise TypeError
            values.iloc[i] = float(v)
        except (TypeError, ValueError, OverflowError):
            f, r = _where(table, int(i), file)
            problems.append(Problem(f"expected a number, got {v!r}", f, r, name))
    return values


def _check_range(
    table: pd.DataFrame,
    name: str,
    col: Column,
    values: pd.Series,
    problems: list[Problem],
    file: str | None,
) -> None:
    x = values.to_numpy(dtype=float, na_value=np.nan)
    known = ~np.isnan(x)
    allowed_inf = name == "request_rate"
    checks = [
        (known & np.isinf(x) & ~(allowed_inf & (x == np.inf)), "must be finite, got {x}"),
    ]
    finite = known & np.isfinite(x)
    if col.kind == "int":
        checks.append((finite & (x != np.round(x)), "must be a whole number, got {x}"))
        checks.append((finite & (np.abs(x) > 2.0**53), "is too large to be a count: {x:g}"))
    if col.low is not None:
        below = (x <= col.low) if col.low_open else (x < col.low)
        op = ">" if col.low_open else ">="
        checks.append((known & below, f"must be {op} {col.low:g}, got {{x:g}}"))
    if col.high is not None:
        checks.append((known & (x > col.high), f"must be <= {col.high:g}, got {{x:g}}"))
    for mask, template in checks:
        for i in np.flatnonzero(mask):
            f, r = _where(table, int(i), file)
            problems.append(Problem(template.format(x=x[i]), f, r, name))


def validate_sweep(
    table: pd.DataFrame, *, file: str | os.PathLike | None = None, allow_duplicates: bool = False
) -> pd.DataFrame:
    """Check a sweep table and return it in canonical form (column order and dtypes).

    Checks types, ranges and consistency (k = 0 ⇔ method ``none``; acceptance length within
    ``[1, k + 1]``; the load knob that the load mode needs; percentiles in order; active
    parameters ≤ total; routed experts ≤ experts; duplicated runs). All problems are collected
    and raised together as one :class:`~bayes_sd.DataError` naming file, record and field.
    Optional columns that are absent are added empty; unknown extra columns are kept at the end.
    """
    file = None if file is None else str(file)
    if not isinstance(table, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame, got {type(table).__name__}", file=file)
    table = table.reset_index(drop=True)
    problems: list[Problem] = []
    missing = [n for n, c in SWEEP_COLUMNS.items() if c.required and n not in table.columns]
    if missing:
        raise DataError(
            f"missing required column(s) {', '.join(missing)}; see docs/data-formats.md",
            file=file,
            field=missing[0],
        )
    if table.empty:
        raise DataError("the sweep has no runs", file=file)
    out = pd.DataFrame(index=table.index)
    for name, col in SWEEP_COLUMNS.items():
        if name not in table.columns:
            table[name] = None
        values = _coerce(table, name, col, problems, file)
        if col.kind in ("int", "float"):
            _check_range(table, name, col, values, problems, file)
        if col.required:
            for i in np.flatnonzero(values.isna().to_numpy()):
                f, r = _where(table, int(i), file)
                problems.append(Problem("required value is missing", f, r, name))
        out[name] = values
    _check_measured(table, out, problems, file)
    if problems:
        raise DataError(problems=problems)
    _check_consistency(out, problems, file, allow_duplicates)
    if problems:
        raise DataError(problems=problems)
    for name, col in SWEEP_COLUMNS.items():
        if col.kind == "int":
            out[name] = out[name].astype("Int64")
    extras = [c for c in table.columns if c not in SWEEP_COLUMNS]
    for c in extras:
        out[c] = table[c]
    return out


def _check_measured(
    table: pd.DataFrame, out: pd.DataFrame, problems: list[Problem], file: str | None
) -> None:
    """Every run measures a latency: the mean E2E, or mean TTFT and TPOT, or a percentile."""
    stats = [f"{m}_{s}_s" for m in METRICS for s in STATISTICS]
    have = out[stats].notna()
    ok = have["latency_mean_s"] | (have["ttft_mean_s"] & have["tpot_mean_s"])
    ok |= have[[c for c in stats if "_p" in c]].any(axis=1)
    for i in np.flatnonzero(~ok.to_numpy()):
        f, r = _where(table, int(i), file)
        problems.append(
            Problem("required value is missing (or mean TTFT and TPOT)", f, r, "latency_mean_s")
        )


def per_position_rates(text: Any) -> np.ndarray | None:
    """The rates of an ``acceptance_per_position`` cell (None when empty or not numbers)."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        return np.array([float(v) for v in text.replace(",", " ").split()[:65]])
    except ValueError:
        return None


def _bad_positions(text: Any, k: float) -> str | None:
    """What is wrong with a per-position cell, or None."""
    if pd.isna(text) or not str(text).strip():
        return None
    rates = per_position_rates(str(text))
    if rates is None or not np.isfinite(rates).all():
        return "per-position rates must be numbers separated by spaces"
    if ((rates < 0) | (rates > 1)).any():
        return "per-position rates are probabilities: each must lie in [0, 1]"
    if (np.diff(rates) > 1e-9).any():
        return "a draft position is accepted only after the one before it: rates cannot rise"
    if np.isfinite(k) and len(rates) != k:
        return f"{len(rates)} per-position rates for k = {k:g}"
    return None


def _check_consistency(
    t: pd.DataFrame, problems: list[Problem], file: str | None, allow_duplicates: bool
) -> None:
    def add(i: int, field: str, message: str) -> None:
        f, r = _where(t, i, file)
        problems.append(Problem(message, f, r, field))

    for i, row in enumerate(t.itertuples(index=False)):
        method = str(row.method).lower()
        if pd.isna(row.k):  # an SD run of unknown draft length: kept, not fitted
            if method == "none":
                add(i, "k", "a run without SD (method 'none') has k = 0")
            k = math.inf
        else:
            k = int(row.k)
            if (k == 0) != (method == "none"):
                add(i, "method", f"method {row.method!r} does not fit k = {k} (k = 0 ⇔ 'none')")
        al = row.acceptance_length
        if not pd.isna(al) and not (1 - _TOL <= al <= k + 1 + _TOL):
            add(i, "acceptance_length", f"must lie in [1, k + 1] = [1, {k + 1}], got {al:g}")
        bad = _bad_positions(row.acceptance_per_position, k)
        if bad:
            add(i, "acceptance_per_position", bad)
        means = [getattr(row, f"{m}_mean_s") for m in ("latency", "ttft", "tpot")]
        if not pd.isna(means[0]) and not pd.isna(means[1]) and means[1] > means[0] * 1.01:
            add(i, "ttft_mean_s", f"mean TTFT {means[1]:g} s exceeds the mean E2E {means[0]:g} s")
        if row.load_mode not in LOAD_MODES:
            add(i, "load_mode", f"must be one of {', '.join(LOAD_MODES)}, got {row.load_mode!r}")
        elif row.load_mode == "rate" and (
            pd.isna(row.request_rate) or not np.isfinite(row.request_rate)
        ):
            add(i, "request_rate", "an open-loop (rate) run needs a finite request_rate")
        elif row.load_mode == "concurrency" and pd.isna(row.concurrency):
            add(i, "concurrency", "a closed-loop (concurrency) run needs concurrency")
        if row.target_active_params > row.target_params * (1 + _TOL):
            add(i, "target_active_params", "active parameters exceed total parameters")
        if row.target_experts_per_token > row.target_experts:
            add(i, "target_experts_per_token", "more experts per token than experts")
        if (row.target_experts > 1) != (row.target_active_params < row.target_params * (1 - _TOL)):
            add(
                i,
                "target_experts",
                "an MoE target (experts > 1) must have fewer active than total parameters, "
                "and a dense one equal counts",
            )
        for q in ("p50", "p90", "p99"):  # every request's TTFT is within its E2E
            ttft_q, e2e_q = getattr(row, f"ttft_{q}_s"), getattr(row, f"latency_{q}_s")
            if not pd.isna(ttft_q) and not pd.isna(e2e_q) and ttft_q > e2e_q * 1.01:
                add(i, f"ttft_{q}_s", f"{q} TTFT {ttft_q:g} s exceeds the {q} E2E {e2e_q:g} s")
        duration = row.duration_s
        if not pd.isna(duration) and not pd.isna(means[0]) and duration < means[0] * 0.99:
            add(i, "duration_s", f"the run lasted {duration:g} s, less than its mean request "
                                 f"({means[0]:g} s)")  # fmt: skip
        for metric in ("latency", "ttft", "tpot"):
            pct = [getattr(row, f"{metric}_{q}_s") for q in ("p50", "p90", "p99")]
            known = [p for p in pct if not pd.isna(p)]
            if any(b < a * (1 - _TOL) for a, b in itertools.pairwise(known)):
                add(i, f"{metric}_p90_s", f"percentiles out of order: p50, p90, p99 = {pct}")
    if not allow_duplicates:
        key = [
            *CONFIG_KEYS,
            "load_mode",
            "request_rate",
            "concurrency",
            "n_requests",
            "latency_mean_s",
            "latency_p50_s",
            "ttft_p50_s",
            "tpot_p50_s",
            "duration_s",
            "date",
        ]
        dup = t.duplicated(subset=key, keep=False).to_numpy()
        if dup.any():
            groups: dict[tuple, list[int]] = {}
            for i in np.flatnonzero(dup):
                groups.setdefault(tuple(t.loc[i, key].astype(str)), []).append(int(i))
            for rows in groups.values():
                first = _where(t, rows[0], file)
                for i in rows[1:]:
                    add(
                        i,
                        "run_id",
                        f"duplicate of {first[0] or ''} {first[1]}: the same run was read twice "
                        "(same system, load and measured latency)",
                    )


# --------------------------------------------------------------------------------------------
# Writing


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write through a temporary file in the same folder, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes 0600 files; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        Path(tmp).chmod(0o666 & ~umask)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_sweep(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Validate ``table`` and write it atomically as CSV (``.csv``) or Parquet (``.parquet``).

    ``read_sweep`` on the written file gives the same table back.
    """
    path = Path(path)
    table = validate_sweep(table)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return atomic_write(path, lambda p: table.to_csv(p, index=False))
    if suffix in (".parquet", ".pq"):
        return atomic_write(path, lambda p: table.to_parquet(p, index=False))
    raise ValueError(f"{path}: write_sweep writes .csv or .parquet, not {suffix or 'no suffix'!r}")


def warn_assumed(assumed: dict[str, int]) -> None:
    """One warning listing the defaults a reader had to assume."""
    if assumed:
        parts = ", ".join(f"{k} for {n} run(s)" for k, n in assumed.items())
        warnings.warn(f"bayes_sd assumed defaults: {parts}", UserWarning, stacklevel=3)
