"""Readers: every supported input to the validated canonical sweep table."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayes_sd.errors import DataError, advice
from bayes_sd.io._record import run_id
from bayes_sd.io._safe import (
    MAX_BYTES,
    MAX_FILES,
    MAX_ROWS,
    load_yaml,
    parse_json_documents,
    read_text,
)
from bayes_sd.io.guidellm import looks_like_guidellm, parse_guidellm
from bayes_sd.io.inferencex import K_TABLE, looks_like_inferencex, parse_inferencex, read_k_table
from bayes_sd.io.metadata import (
    NUMERIC,
    canonical_metadata,
    is_sidecar,
    merge,
    resolve_system,
    sidecars_for,
)
from bayes_sd.io.prometheus import counters_for
from bayes_sd.io.stepcost import read_step_costs
from bayes_sd.io.vllm import looks_like_vllm, parse_vllm
from bayes_sd.registry import fill_sizes
from bayes_sd.saturation import MAX_FAILED_SHARE, failed_share, flag_failures, flag_saturation
from bayes_sd.schema import SWEEP_COLUMNS, validate_sweep, warn_assumed

__all__ = ["read_step_costs", "read_sweep", "sweep_from_results"]

RESULT_SUFFIXES = (".json", ".jsonl", ".yaml", ".yml", ".csv", ".parquet", ".pq")
Source = str | os.PathLike | Iterable[str | os.PathLike]


def read_sweep(source: Source, /, *, max_bytes: int = MAX_BYTES, **metadata: Any) -> pd.DataFrame:
    """Read benchmark results into the validated canonical sweep table (one row per run).

    Parameters
    ----------
    source
        A file, a list of files, or a directory (read recursively, sorted by path). Formats are
        detected from content: ``vllm bench serve --save-result`` JSON (one object, or JSON lines
        from ``--append-result``; current and legacy field names), GuideLLM reports (JSON or
        YAML, report schema v1/v2 and the v0.4 layout), and tidy CSV/Parquet in the canonical
        schema, InferenceX benchmark rows (a JSON array of dashboard rows; see
        :mod:`bayes_sd.io.inferencex`), and ``vllm bench sweep serve`` output folders (the
        ``run=N.json`` files; their ``summary.json`` / ``summary.csv`` repeat them and are
        skipped, as are ``warmup.json`` runs; ``*.failure.json`` are counted and reported). In
        directories, ``*.pytorch.json`` companions and metadata sidecars are skipped.
    max_bytes
        Largest file that will be read (default 64 MiB); tidy tables are also limited
        to a million rows.
    **metadata
        What the files do not record, applied to every run: ``gpu``, ``num_gpus``, ``target``,
        ``k``, ``method``, ``drafter``, ``alpha``, ``source``, ``dataset``, model sizes, or a
        vLLM ``speculative_config``. Sidecar files (``bayes_sd.yaml`` in the folder,
        ``<name>.meta.yaml`` beside a file) may give the same keys. Conflicting values are an
        error.

    Raises
    ------
    DataError
        For anything wrong with the input; the message names the file, record and field.

    Examples
    --------
    >>> import bayes_sd
    >>> sweep = bayes_sd.read_sweep("results/", gpu="H100", k=0)  # doctest: +SKIP
    """
    user = canonical_metadata(metadata, "read_sweep(...) arguments", strict=True)
    paths, roots = _expand(source)
    frames: list[pd.DataFrame] = []
    rows: list[dict[str, Any]] = []  # result-file rows since the last tidy table
    assumed: Counter[str] = Counter()
    for path in paths:
        with _only_data_errors(path):
            if path.suffix.lower() in (".csv", ".parquet", ".pq"):
                _flush(rows, frames)
                frame, file_assumed = _read_tidy(path, user, max_bytes, roots.get(path))
                frames.append(frame)
            else:
                file_rows, file_assumed = _read_results(path, user, max_bytes, roots.get(path))
                rows.extend(file_rows)
        assumed.update(file_assumed)
    _flush(rows, frames)
    table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    where = str(paths[0]) if len(paths) == 1 else None
    table = validate_sweep(table, file=where)
    warn_assumed(dict(assumed))
    _warn_split_sources(table)
    _warn_failures(table)
    return table


def _warn_failures(table: pd.DataFrame) -> None:
    """Say which runs lost requests: kept when few did, excluded (with the reason) when many."""
    failed = pd.to_numeric(table["n_failed"], errors="coerce").fillna(0)
    if not (failed > 0).any():
        return
    first = table.loc[failed.idxmax()]
    dropped = int((failed_share(table) > MAX_FAILED_SHARE).sum())
    warnings.warn(
        f"{int((failed > 0).sum())} run(s) had failed requests (most: {int(first['n_failed'])} "
        f"in {first['file']} record {first['record']}); {dropped} with more than "
        f"{MAX_FAILED_SHARE:.0%} failed are "
        "excluded from fits, the others kept with the latencies of their completed requests",
        UserWarning,
        stacklevel=3,
    )


def _warn_split_sources(table: pd.DataFrame) -> None:
    """Warn when SD runs sit in a source of their own while another source holds the runs
    without SD of the same GPUs, target and engine: likely one system measured with and
    without SD, split in two (the SD runs then have no baseline to be compared with)."""
    keys = [c for c in ("gpu", "num_gpus", "target", "engine", "precision") if c in table]
    k = pd.to_numeric(table["k"], errors="coerce")
    system = pd.Series(["|".join(map(str, r)) for r in table[keys].itertuples(index=False)],
                       index=table.index)  # fmt: skip
    source = table["source"].astype(str)
    has_base = set(zip(system[k == 0], source[k == 0], strict=True))
    base_sources: dict[str, set[str]] = {}
    for sys_, src in has_base:
        base_sources.setdefault(sys_, set()).add(src)
    for sys_, src in sorted(set(zip(system[k > 0], source[k > 0], strict=True))):
        others = base_sources.get(sys_, set()) - {src}
        if (sys_, src) not in has_base and others:
            warnings.warn(
                f"source {src!r} holds SD runs without a baseline (k = 0), and source "
                f"{sorted(others)[0]!r} holds the baseline of the same GPUs and target: if they "
                "are one system measured with and without SD, give them one source ("
                + advice(cli="--meta source=NAME", python="read_sweep(..., source=NAME)")
                + " or 'source: NAME' in a bayes_sd.yaml sidecar)",
                UserWarning,
                stacklevel=3,
            )


# what malformed input can make Python's parsers and conversions raise: an integer of 5,000
# digits, a YAML date that does not exist, a key that is not a string, a nesting too deep
_MALFORMED = (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError,
              UnicodeError, AttributeError)  # fmt: skip


@contextmanager
def _only_data_errors(path: Path):
    """Whatever a file makes the readers raise leaves as a ``DataError`` naming the file."""
    try:
        yield
    except DataError as err:
        if all(p.file for p in err.problems):
            raise
        named = [replace(p, file=p.file or str(path)) for p in err.problems]
        raise DataError(problems=named) from err
    except MemoryError:
        raise DataError("too large to read into memory", file=str(path)) from None
    except _MALFORMED as err:
        raise DataError(f"cannot read ({type(err).__name__}: {err})", file=str(path)) from err


def _flush(rows: list[dict[str, Any]], frames: list[pd.DataFrame]) -> None:
    """Turn buffered result rows into one frame (per-file DataFrames dominate the cost)."""
    if rows:
        table = _ensure_columns(pd.DataFrame(rows))
        table["saturated"] = table["saturated"].astype("boolean").fillna(False)
        frames.append(flag_failures(flag_saturation(table)))
        rows.clear()


def _expand(source: Source) -> tuple[list[Path], dict[Path, Path]]:
    """The files to read, and for those found in a folder, that folder (sidecars above a file
    apply up to it)."""
    if isinstance(source, str | os.PathLike):
        if not str(source).strip():
            raise DataError("no path given (an empty string would read the current folder)")
        items = [Path(source)]
    else:
        try:
            items = [Path(s) for s in source]
        except TypeError as err:
            raise DataError(f"expected a path or a list of paths, got {source!r}") from err
    paths: list[Path] = []
    roots: dict[Path, Path] = {}
    for item in items:
        if item.is_dir():
            found = _sweep_files(
                sorted(
                    p
                    for p in _inside(item, item.rglob("*"))
                    if p.is_file()
                    and p.suffix.lower() in RESULT_SUFFIXES
                    and not p.name.endswith(".pytorch.json")
                    and p.name != K_TABLE
                    and not is_sidecar(p)
                    and not any(part.startswith(".") for part in p.relative_to(item).parts)
                )
            )
            if not found:
                raise DataError(
                    "no result files (.json, .jsonl, .yaml, .csv, .parquet) found", file=str(item)
                )
            paths.extend(found)
            roots.update(dict.fromkeys(found, item))
        elif item.is_file():
            paths.append(item)
        else:
            raise DataError("no such file or directory", file=str(item))
        if len(paths) > MAX_FILES:
            raise DataError(f"more than {MAX_FILES} files to read", file=str(item))
    if not paths:
        raise DataError("no files given")
    return paths, roots


def _inside(folder: Path, paths: Iterable[Path]) -> list[Path]:
    """``paths`` that stay inside ``folder``: a link pointing out of the folder given is not
    followed (its target is never read, so no message can show it), and said."""
    top = folder.resolve()
    inside, outside = [], 0
    for p in paths:
        linked = p.is_symlink() or p.parent.resolve() != p.parent.absolute()
        if linked and not p.resolve().is_relative_to(top):
            outside += 1
            continue
        inside.append(p)
    if outside:
        warnings.warn(f"{folder}: {outside} link(s) pointing outside the folder not followed",
                      UserWarning, stacklevel=4)  # fmt: skip
    return inside


def _sweep_files(paths: list[Path]) -> list[Path]:
    """The files of a folder that hold runs: a ``vllm bench sweep serve`` experiment writes
    each run to ``run=N.json`` and repeats them in ``summary.json`` (per combination) and
    ``summary.csv`` (per experiment); ``warmup.json`` is a warm-up run and ``*.failure.json``
    a failed one (counted in a warning)."""
    runs_in = {p.parent for p in paths if p.name.startswith("run=") and p.suffix == ".json"}
    combinations = runs_in | {p.parent for p in paths if p.name == "summary.json"}
    failures = [p for p in paths if p.name.endswith(".failure.json")]
    if failures:
        warnings.warn(
            f"{len(failures)} failed benchmark run(s) of a vllm bench sweep (e.g. "
            f"{failures[0]}): not measured, not read",
            UserWarning,
            stacklevel=4,
        )
    keep = []
    for p in paths:
        if p in failures or (p.name == "warmup.json" and p.parent in combinations):
            continue
        if p.name == "summary.json" and p.parent in runs_in:
            continue
        if p.name == "summary.csv" and any(p.parent in d.parents for d in combinations):
            continue
        keep.append(p)
    return keep


def _read_results(
    path: Path, user: dict, max_bytes: int, root: Path | None = None
) -> tuple[list[dict], list[str]]:
    """Rows of a vLLM result (JSON or JSON lines) or a GuideLLM report (JSON or YAML)."""
    file = str(path)
    text = read_text(path, max_bytes)
    if path.suffix.lower() in (".yaml", ".yml"):
        if not text.strip():
            raise DataError("the file is empty", file=file)
        docs = [("0", load_yaml(text, file))]
    else:
        docs = parse_json_documents(text, file)
    if len(docs) == 1 and looks_like_inferencex(docs[0][1]):
        return _inferencex_rows(path, docs[0][1], user, root), []
    if len(docs) == 1 and isinstance(docs[0][1], list):  # a list of results (summary.json)
        docs = [(f"item {i}", obj) for i, obj in enumerate(docs[0][1])]
    scraped = counters_for(path, max_bytes)  # a Prometheus scrape beside the result
    if scraped and len(docs) == 1 and looks_like_vllm(docs[0][1]):
        docs = [(docs[0][0], {**scraped, **docs[0][1]})]  # the result's own fields first
    layers, defaults = sidecars_for(path, root)
    layers = [("read_sweep(...) arguments", user), *layers]
    # one folder given = one system's results, whatever its sub-folders (baseline/, eagle3/)
    folder = (root if root is not None else path.parent).resolve()
    return _rows_from_documents(docs, file, layers, defaults, folder.name or path.stem)


def _rows_from_documents(
    docs: list[tuple[str, Any]],
    file: str,
    layers: list[tuple[str, dict]],
    defaults: list[tuple[str, dict]],
    default_source: str,
) -> tuple[list[dict], list[str]]:
    rows: list[dict[str, Any]] = []
    assumed: list[str] = []
    for record, obj in docs:
        if looks_like_guidellm(obj):
            fmt, parsed = "guidellm", parse_guidellm(obj, file)
        elif looks_like_vllm(obj):
            fmt, parsed = "vllm", [parse_vllm(obj, file, record if len(docs) > 1 else "0")]
        else:
            keys = ", ".join(list(obj)[:8]) if isinstance(obj, dict) else type(obj).__name__
            raise DataError(
                "not a vllm bench serve result (no request_throughput/completed/duration) nor "
                f"a GuideLLM report (no benchmarks list); found: {keys}",
                file=file,
                record=record if len(docs) > 1 else None,
            )
        for row, file_meta in parsed:
            meta = merge([*layers, (f"{file} (metadata keys)", file_meta)], defaults)
            system, why = resolve_system(meta, file, row["record"], fmt)
            assumed.extend(why)
            _fill_from_meta(row, meta)
            row.update(system)
            row.setdefault("source", meta.get("source") or default_source)
            keys = ("latency_mean_s", "n_requests", "duration_s", "request_rate", "concurrency")
            row["run_id"] = run_id(file, row["record"], *(row.get(k) for k in keys))
            rows.append(row)
    return rows, assumed


def _inferencex_rows(path: Path, rows: list, user: dict, root: Path | None) -> list[dict]:
    """InferenceX rows carry their system: metadata may add what they lack (source, sizes)
    but not contradict them."""
    file = str(path)
    out = []
    layers, defaults = sidecars_for(path, root)
    meta = merge([("read_sweep(...) arguments", user), *layers], defaults)
    for row in parse_inferencex(rows, file, read_k_table(path)):
        for key, value in meta.items():
            if key not in SWEEP_COLUMNS:
                continue
            if row.get(key) is not None and row[key] != value and key != "source":
                raise DataError(f"the file says {row[key]!r}, the metadata {value!r}",
                                file=file, record=row["record"], field=key)  # fmt: skip
            row[key] = value
        keys = ("latency_mean_s", "latency_p50_s", "concurrency", "date", "layout")
        row["run_id"] = run_id(file, row["record"], *(row.get(k) for k in keys))
        out.append(row)
    fill_sizes_rows(out)
    return out


def fill_sizes_rows(rows: list[dict]) -> None:
    """Model sizes from the registry for result rows that name their target and drafter."""
    from bayes_sd.registry import lookup_model

    for row in rows:
        info = lookup_model(row["target"])
        if info is None:
            raise DataError(
                f"model {row['target']!r} is not in the registry; "
                + advice(cli="give --meta target_params=N (and the MoE fields)",
                         python="bayes_sd.register_model it"),
                file=row["file"], record=row["record"], field="target",
            )  # fmt: skip
        row.setdefault("target_params", info.params)
        row.setdefault("target_active_params", info.active_params)
        row.setdefault("target_experts", info.experts)
        row.setdefault("target_experts_per_token", info.experts_per_token)
        drafter = lookup_model(row["drafter"]) if row.get("drafter") else None
        if drafter is not None:
            row.setdefault("drafter_params", drafter.params)


def sweep_from_results(results: list[tuple[str, dict]], **metadata: Any) -> pd.DataFrame:
    """The validated sweep table from result objects in memory (``[(name, object)]``).

    The same path as :func:`read_sweep` without files: each object is a ``vllm bench serve``
    result or a GuideLLM report, and ``name`` plays the file name in ids and messages.
    """
    user = canonical_metadata(metadata, "sweep_from_results(...) arguments", strict=True)
    rows: list[dict[str, Any]] = []
    frames: list[pd.DataFrame] = []
    for name, obj in results:
        file_rows, _ = _rows_from_documents([("0", obj)], name, [("arguments", user)], [], "memory")
        rows.extend(file_rows)
    _flush(rows, frames)
    table = validate_sweep(frames[0])
    _warn_split_sources(table)
    _warn_failures(table)
    return table


def _fill_from_meta(row: dict[str, Any], meta: dict[str, Any]) -> None:
    """Workload and acceptance from metadata where the file did not measure them."""
    for key in ("prefill_len", "decode_len"):
        if row.get(key) is None and key in meta:
            row[key] = meta[key]
    if row.get("acceptance_length") is None and "acceptance_length" in meta:
        row["acceptance_length"] = meta["acceptance_length"]
        row["acceptance_source"] = "metadata"
    for key in ("engine", "precision", "layout", "engines", "max_num_seqs"):
        if row.get(key) is None and key in meta:
            row[key] = meta[key]
    if meta.get("k") == 0:  # without SD every step commits one token
        row["acceptance_length"] = 1.0
        row["acceptance_source"] = "k=0"


def _ensure_columns(table: pd.DataFrame) -> pd.DataFrame:
    for name in SWEEP_COLUMNS:
        if name not in table.columns:
            table[name] = None
    return table


def _check_agrees(table: pd.DataFrame, key: str, value: Any, file: str) -> None:
    """A table's own value and the metadata's must agree (the metadata fills empty cells)."""
    if key == "source":  # a label: the table's own wins
        return
    given = table[key].notna()
    if key in NUMERIC:
        clash = given & (pd.to_numeric(table[key], errors="coerce") != float(value))
    else:
        clash = given & (table[key].astype(str).str.strip() != str(value))
    if clash.any():
        i = int(np.flatnonzero(clash.to_numpy())[0])
        said = f"the table says {str(table[key].iat[i])[:40]!r}, the metadata {str(value)[:40]!r}"
        raise DataError(said, file=file, record=f"row {i + 1}", field=key)


def _check_tidy_header(columns: list[str], n_rows: int | None, file: str) -> None:
    """Before reading a table's cells: it must hold a measured latency, and not more rows
    than a sweep reasonably has."""
    if n_rows is not None and n_rows > MAX_ROWS:
        raise DataError(f"the table has {n_rows:,} rows, over the {MAX_ROWS:,} limit", file=file)
    has = set(columns)
    if "latency_mean_s" not in has and not {"ttft_mean_s", "tpot_mean_s"} <= has:
        raise DataError("not a sweep table: no 'latency_mean_s' column (nor ttft_mean_s and "
                        "tpot_mean_s)", file=file, field="latency_mean_s")  # fmt: skip


def _read_tidy(
    path: Path, user: dict, max_bytes: int, root: Path | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """A table already in the canonical schema; missing system columns may come from metadata."""
    file = str(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise DataError(f"file is {size / 2**20:.1f} MiB, over the limit (max_bytes)", file=file)
    if size == 0:
        raise DataError("the file is empty", file=file)
    try:
        if path.suffix.lower() == ".csv":
            header = pd.read_csv(path, dtype=str, nrows=0).columns
            n_rows = None
        else:
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path).metadata
            header, n_rows = meta.schema.names, meta.num_rows
        _check_tidy_header(list(header), n_rows, file)
        if path.suffix.lower() == ".csv":
            table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""],
                                nrows=MAX_ROWS + 1)  # fmt: skip
        else:
            table = pd.read_parquet(path)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise DataError(f"cannot parse as a table: {err}", file=file) from err
    except Exception as err:  # pyarrow raises its own ArrowInvalid family
        if type(err).__module__.startswith("pyarrow"):
            raise DataError(f"cannot parse as Parquet: {err}", file=file) from err
        raise
    if table.empty:
        raise DataError("the table has no rows", file=file)
    if len(table) > MAX_ROWS:
        raise DataError(f"the table has over {MAX_ROWS:,} rows", file=file)
    layers, defaults = sidecars_for(path, root)
    meta = merge([("read_sweep(...) arguments", user), *layers], defaults)
    assumed: list[str] = []
    for key, value in meta.items():
        if key in SWEEP_COLUMNS:
            if key not in table.columns:
                table[key] = value
            else:
                _check_agrees(table, key, value, file)
                table[key] = table[key].where(table[key].notna(), value)
    if "num_gpus" not in table.columns:
        table["num_gpus"] = 1
        assumed.extend(["num_gpus=1"] * len(table))
    fill_sizes(table)
    if "source" not in table.columns:
        table["source"] = path.stem
    original_where = {c: table[c].copy() for c in ("file", "record") if c in table.columns}
    table["file"] = file
    table["record"] = [f"row {i + 1}" for i in range(len(table))]
    if "run_id" not in table.columns:
        lat = table["latency_mean_s"] if "latency_mean_s" in table else [None] * len(table)
        table["run_id"] = [run_id(file, r, v) for r, v in zip(table["record"], lat, strict=True)]
    if "saturated" not in table.columns:
        table["saturated"] = False
    checked = validate_sweep(table, file=file, allow_duplicates=True)
    checked = flag_failures(flag_saturation(checked))
    for col, values in original_where.items():  # keep the provenance the table carried
        checked[col] = values.astype("string").to_numpy()
    return checked, assumed
