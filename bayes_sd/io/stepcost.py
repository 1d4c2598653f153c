"""Forward-pass timing tables (the format of the embedded ``stepcost`` example)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_sd.errors import DataError, Problem
from bayes_sd.io._safe import MAX_BYTES

__all__ = ["STEP_COLUMNS", "read_step_costs", "validate_step_costs"]

# column -> (kind, lower bound or None)
STEP_COLUMNS: dict[str, tuple[str, float | None]] = {
    "gpu": ("str", None),
    "model": ("str", None),
    "role": ("str", None),
    "moe": ("int", 0),
    "params_total": ("float", 1),
    "params_active": ("float", 1),
    "experts": ("int", 1),
    "experts_per_token": ("int", 1),
    "phase": ("str", None),
    "batch": ("int", 1),
    "q": ("int", 1),
    "ctx": ("int", 0),
    "time_ms": ("float", 0),
}
OPTIONAL = ("layers", "hidden", "heads", "kv_heads", "head_dim", "ffn", "vocab", "tokens", "replay")


def read_step_costs(source: str | os.PathLike, *, max_bytes: int = MAX_BYTES) -> pd.DataFrame:
    """Read and validate a forward-pass timing table (CSV or Parquet).

    One row per timed forward pass: ``gpu, model, role (target|drafter), moe, params_total,
    params_active, experts, experts_per_token, phase (decode|prefill), batch, q, ctx, time_ms``
    (plus optional shape columns). ``tokens`` defaults to ``batch · q``.
    """
    path = Path(source)
    if not path.is_file():
        raise DataError("no such file", file=str(path))
    if path.stat().st_size > max_bytes:
        raise DataError("file is over the size limit (max_bytes)", file=str(path))
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            table = pd.read_parquet(path)
        else:
            table = pd.read_csv(path)
    except pd.errors.EmptyDataError as err:
        raise DataError("the file is empty", file=str(path)) from err
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise DataError(f"cannot parse as a table: {err}", file=str(path)) from err
    return validate_step_costs(table, file=str(path))


def validate_step_costs(table: pd.DataFrame, *, file: str | None = None) -> pd.DataFrame:
    """Check types, ranges and consistency of a step-cost table; raise DataError on problems."""
    missing = [c for c in STEP_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)}", file=file, field=missing[0])
    if table.empty:
        raise DataError("the table has no rows", file=file)
    problems: list[Problem] = []
    out = table.copy().reset_index(drop=True)

    def bad(mask: np.ndarray, field: str, message: str) -> None:
        for i in np.flatnonzero(mask)[:5]:
            problems.append(Problem(message, file, f"row {i + 1}", field))
        if mask.sum() > 5:
            problems.append(Problem(f"... {mask.sum() - 5} more rows", file, None, field))

    for col, (kind, low) in STEP_COLUMNS.items():
        if kind == "str":
            blank = out[col].isna().to_numpy() | (out[col].astype(str).str.strip() == "")
            bad(blank, col, "required value is missing")
            out[col] = out[col].astype("string")
            continue
        values = pd.to_numeric(out[col], errors="coerce").to_numpy(dtype=float)
        bad(~np.isfinite(values), col, "expected a finite number")
        if low is not None:
            below = np.isfinite(values) & ((values <= low) if col == "time_ms" else (values < low))
            bad(below, col, f"must be {'>' if col == 'time_ms' else '>='} {low:g}")
        if kind == "int":
            bad(np.isfinite(values) & (values != np.round(values)), col, "must be whole")
        out[col] = values
    if not problems:
        bad(~out["role"].isin(["target", "drafter"]).to_numpy(), "role", "must be target/drafter")
        bad(~out["phase"].isin(["decode", "prefill"]).to_numpy(), "phase", "must be decode/prefill")
        bad(
            (out["params_active"] > out["params_total"]).to_numpy(),
            "params_active",
            "exceeds params_total",
        )
        bad(
            (out["experts_per_token"] > out["experts"]).to_numpy(),
            "experts_per_token",
            "exceeds experts",
        )
        if "tokens" in out.columns:
            tokens = pd.to_numeric(out["tokens"], errors="coerce").to_numpy(dtype=float)
            bad(tokens != out["batch"] * out["q"], "tokens", "must equal batch · q")
    if problems:
        raise DataError(problems=problems)
    for col, (kind, _) in STEP_COLUMNS.items():
        if kind == "int":
            out[col] = out[col].astype("int64")
    if "tokens" not in out.columns:
        out["tokens"] = out["batch"] * out["q"]
    return out
