"""What a result file does not record: GPU, draft length, model sizes.

Metadata comes from up to four places, merged key by key: keys inside the file (``vllm bench
serve --metadata KEY=VALUE``), a sidecar ``bayes_sd.yaml`` (or ``.yml``/``.json``) in the
results folder, a sidecar ``<result stem>.meta.yaml`` beside one file, and keyword arguments of
:func:`bayes_sd.read_sweep`. A key given in two places with different values is an error that
names both: a sweep never silently takes one of two contradicting values.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from bayes_sd.errors import DataError, advice
from bayes_sd.io._safe import MAX_SIDECAR_BYTES, load_yaml, read_text
from bayes_sd.registry import lookup_model, normalize_model_name

SIDECAR_NAMES = ("bayes_sd.yaml", "bayes_sd.yml", "bayes_sd.json")
SIDECAR_SUFFIXES = (".meta.yaml", ".meta.yml", ".meta.json")

# canonical key -> accepted spellings (vLLM metadata habits, CLI flag names)
ALIASES: dict[str, tuple[str, ...]] = {
    "source": ("source", "sweep", "label_source"),
    "dataset": ("dataset", "dataset_name"),
    "gpu": ("gpu", "gpu_type", "hardware", "device"),
    "num_gpus": ("num_gpus", "tp", "tensor_parallel_size", "tensor-parallel-size", "gpus"),
    "target": ("target", "target_model", "model"),
    "target_params": ("target_params",),
    "target_active_params": ("target_active_params",),
    "target_experts": ("target_experts", "experts"),
    "target_experts_per_token": ("target_experts_per_token", "experts_per_token"),
    "drafter": ("drafter", "draft_model", "spec_model", "speculative_model"),
    "drafter_params": ("drafter_params",),
    "method": ("method", "spec_method", "speculative_method"),
    "k": ("k", "num_spec_tokens", "num_speculative_tokens", "draft_length"),
    "alpha": ("alpha",),
    "acceptance_length": ("acceptance_length",),
    "prefill_len": ("prefill_len", "input_len", "random_input_len"),
    "decode_len": ("decode_len", "output_len", "random_output_len"),
    "speculative_config": ("speculative_config", "speculative-config"),
    "engine": ("engine", "framework", "serving_engine"),
    "precision": ("precision", "weight_dtype", "quantization"),
    "layout": ("layout", "parallel_layout"),
    "engines": ("engines", "decode_engines", "data_parallel_size"),
    "disaggregated": ("disaggregated", "disagg", "pd_disaggregation"),
    "prefill_gpus": ("prefill_gpus", "prefill_worker_gpus"),
    "max_num_seqs": ("max_num_seqs", "max-num-seqs", "max_running_requests"),
}
_LOOKUP = {alias: key for key, aliases in ALIASES.items() for alias in aliases}
NUMERIC = {
    "num_gpus",
    "target_params",
    "target_active_params",
    "target_experts",
    "target_experts_per_token",
    "drafter_params",
    "k",
    "alpha",
    "acceptance_length",
    "prefill_len",
    "decode_len",
    "engines",
    "prefill_gpus",
    "max_num_seqs",
}
MODEL_KEYS = {"target", "drafter"}
NO_DRAFTER = {"", "none", "null", "[ngram]", "ngram"}


def canonical_metadata(raw: dict[str, Any], where: str, *, strict: bool) -> dict[str, Any]:
    """Map accepted spellings to canonical keys; parse numbers and ``speculative_config``.

    ``strict``: unknown keys are an error (sidecars, keyword arguments); inside result files
    unknown top-level keys are simply not metadata.
    """
    out: dict[str, Any] = {}
    unknown = []
    for key, value in raw.items():
        canon = _LOOKUP.get(str(key).strip().lower())
        if canon is None:
            unknown.append(str(key))
            continue
        if value is None:
            continue
        if canon == "speculative_config":
            for spec_key, spec_value in _speculative_config(value, where).items():
                if spec_key in out and out[spec_key] != spec_value:
                    raise DataError(
                        f"speculative_config says {spec_value!r}, the '{spec_key}' key "
                        f"{out[spec_key]!r}",
                        file=where,
                        field=spec_key,
                    )
                out[spec_key] = spec_value
            continue
        if canon in NUMERIC:
            value = _number(value, where, canon)
        elif isinstance(value, dict | list):
            raise DataError(
                f"expected a single value, got {type(value).__name__}", file=where, field=str(key)
            )
        else:
            value = str(value).strip()
        if canon in out and out[canon] != value:
            raise DataError(
                f"given twice with different values: {out[canon]!r} and {value!r}",
                file=where,
                field=str(key),
            )
        out[canon] = value
    if strict and unknown:
        known = ", ".join(sorted(ALIASES))
        raise DataError(
            f"unknown metadata key(s) {', '.join(sorted(unknown))}; known: {known}",
            file=where,
            field=unknown[0],
        )
    return out


def _number(value: Any, where: str, field: str) -> float:
    if isinstance(value, bool):
        raise DataError(f"expected a number, got {value!r}", file=where, field=field)
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError) as err:
        shown = str(value)[:40] if isinstance(value, str) else type(value).__name__
        raise DataError(f"expected a number, got {shown!r}", file=where, field=field) from err
    if not math.isfinite(x):
        raise DataError(f"expected a finite number, got {value!r}", file=where, field=field)
    return x


def _speculative_config(value: Any, where: str) -> dict[str, Any]:
    """vLLM ``--speculative-config`` (a dict or its JSON string) to method, k and drafter."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise DataError(
                f"speculative_config is not valid JSON: {err.msg}",
                file=where,
                field="speculative_config",
            ) from err
    if not isinstance(value, dict):
        raise DataError(
            "speculative_config must be a mapping", file=where, field="speculative_config"
        )
    out: dict[str, Any] = {}
    if "num_speculative_tokens" in value:
        out["k"] = _number(value["num_speculative_tokens"], where, "num_speculative_tokens")
    if value.get("method"):
        out["method"] = str(value["method"])
    if value.get("model"):
        out["drafter"] = str(value["model"])
        out.setdefault("method", "draft_model")
    return out


def merge(
    layers: list[tuple[str, dict[str, Any]]], defaults: list[tuple[str, dict[str, Any]]] = ()
) -> dict[str, Any]:
    """Merge metadata layers ``[(where, dict)]``; different values for one key are an error.
    ``defaults`` (the sidecars of folders above a file, nearest first) fill only the keys that
    no layer and no nearer default sets."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for where, layer in layers:
        for key, value in layer.items():
            if key in merged and not _same(key, merged[key], value):
                raise DataError(
                    f"conflicting values for '{key}': {merged[key]!r} from {origin[key]} and "
                    f"{value!r} from {where}; remove one of them",
                    file=where,
                    field=key,
                )
            merged.setdefault(key, value)
            origin.setdefault(key, where)
    for _, layer in defaults:
        for key, value in layer.items():
            merged.setdefault(key, value)
    return merged


def _same(key: str, a: Any, b: Any) -> bool:
    if key in MODEL_KEYS:
        return normalize_model_name(a) == normalize_model_name(b)
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return str(a).strip().lower() == str(b).strip().lower()


def read_sidecar(path: Path) -> dict[str, Any]:
    text = read_text(path, MAX_SIDECAR_BYTES)
    if path.suffix == ".json":
        try:
            data = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as err:
            raise DataError(
                f"invalid JSON: {err.msg} at line {err.lineno}", file=str(path)
            ) from err
    else:
        data = load_yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise DataError("a metadata sidecar must be a mapping of key: value", file=str(path))
    return canonical_metadata(data, str(path), strict=True)


def sidecars_for(path: Path, root: Path | None = None) -> tuple[list, list]:
    """The sidecar layers that apply to a result file, as ``(layers, defaults)`` for
    :func:`merge`: its own sidecar and its folder's (which must agree with each other and with
    the file), then, as defaults, those of the folders above it up to ``root`` (the folder
    given to ``read_sweep``), nearest first: a sidecar at the top of ``baseline/`` +
    ``eagle3/`` or of a ``vllm bench sweep`` experiment applies to every run below it, and a
    sub-folder's sidecar or the file's own metadata overrides it key by key."""
    layers = []
    stem = path.name.split(".")[0] if path.suffix else path.name
    for suffix in SIDECAR_SUFFIXES:
        own = path.with_name(path.name[: -len(path.suffix)] + suffix) if path.suffix else None
        for candidate in {own, path.with_name(stem + suffix)} - {None}:
            if candidate.is_file():
                layers.append((str(candidate), read_sidecar(candidate)))
    layers += [(str(c), read_sidecar(c)) for c in _folder_sidecars(path.parent)]
    if root is None or root not in path.parents:
        return layers, []
    above = [p for p in path.parents if p != path.parent and (p == root or root in p.parents)]
    return layers, [(str(c), read_sidecar(c)) for f in above for c in _folder_sidecars(f)]


def _folder_sidecars(folder: Path) -> list[Path]:
    return [folder / name for name in SIDECAR_NAMES if (folder / name).is_file()]


def is_sidecar(path: Path) -> bool:
    return path.name in SIDECAR_NAMES or path.name.endswith(SIDECAR_SUFFIXES)


def how_to(key: str, fmt: str | None = None) -> str:
    """How to supply metadata ``key`` a file of format ``fmt`` (``"vllm"``, ``"guidellm"``,
    ``"table"``, …) lacks, in the words of the interface in use (:func:`bayes_sd.errors.advice`)."""
    ways = [f"`vllm bench serve --metadata {key}=...` when benchmarking"] if fmt == "vllm" else []
    if fmt == "table":
        ways.append(f"a '{key}' column")
    ways.append(f"'{key}: ...' in a bayes_sd.yaml sidecar in the results folder (or in "
                "<file>.meta.yaml beside the file)")  # fmt: skip
    ways.append(advice(cli=f"--meta {key}=...", python=f"read_sweep(..., {key}=...)"))
    return "supply it with " + ", ".join(ways[:-1]) + " or " + ways[-1]


def resolve_system(
    meta: dict[str, Any], file: str, record: str, fmt: str | None = None
) -> tuple[dict, list[str]]:
    """Fill the system columns from metadata and the model registry.

    Returns ``(columns, assumed)``; ``assumed`` names the defaults that had to be assumed.
    """
    assumed: list[str] = []

    def need(key: str) -> Any:
        if key not in meta:
            raise DataError(
                f"missing '{key}'; " + how_to(key, fmt), file=file, record=record, field=key
            )
        return meta[key]

    cols: dict[str, Any] = {}
    gpu = str(need("gpu"))
    counted = re.fullmatch(r"(\d+)\s*[x×]\s*(.+)", gpu, flags=re.IGNORECASE)  # "4xH100"
    if counted:
        count, gpu = counted.group(1), counted.group(2).strip()
        if "num_gpus" in meta and float(meta["num_gpus"]) != float(count):
            raise DataError(
                f"gpu says {count} GPUs but num_gpus is {meta['num_gpus']:g}",
                file=file,
                record=record,
                field="num_gpus",
            )
        meta = {**meta, "num_gpus": float(count)}
    cols["gpu"] = gpu
    if "num_gpus" not in meta:
        assumed.append("num_gpus=1")
    cols["num_gpus"] = meta.get("num_gpus", 1)

    target = str(need("target"))
    cols["target"] = target
    info = lookup_model(target)
    for col, attr in (
        ("target_params", "params"),
        ("target_active_params", "active_params"),
        ("target_experts", "experts"),
        ("target_experts_per_token", "experts_per_token"),
    ):
        if col in meta:
            cols[col] = meta[col]
        elif info is not None:
            cols[col] = getattr(info, attr)
        elif col == "target_params":
            raise DataError(
                f"model {target!r} is not in the registry, so 'target_params' is needed; "
                + how_to("target_params", fmt)
                + advice(cli="", python=" (or bayes_sd.register_model it)"),
                file=file,
                record=record,
                field="target_params",
            )
    cols.setdefault("target_active_params", cols["target_params"])
    cols.setdefault("target_experts", 1)
    cols.setdefault("target_experts_per_token", 1)

    k = meta.get("k")
    method = meta.get("method")
    drafter = meta.get("drafter")
    if k is None and method is not None and str(method).lower() == "none":
        k = 0
    if k is None:
        raise DataError(
            "missing the draft length 'k' (0 for runs without SD), and the file has no SD "
            "counters to infer it from; " + how_to("k", fmt),
            file=file,
            record=record,
            field="k",
        )
    cols["k"] = k
    if k == 0:
        method, drafter = "none", None
    elif method is None:
        method = "draft_model" if drafter else None
        if method is None:
            raise DataError(
                "missing the SD 'method' (draft_model, eagle3, ngram, mtp, ...); "
                + how_to("method", fmt),
                file=file,
                record=record,
                field="method",
            )
    if drafter is not None and str(drafter).strip().lower() in NO_DRAFTER:
        drafter = None
    cols["method"] = method
    cols["drafter"] = drafter
    if "drafter_params" in meta:
        cols["drafter_params"] = meta["drafter_params"]
    elif drafter:
        dinfo = lookup_model(drafter)
        cols["drafter_params"] = dinfo.params if dinfo else None
    for key in ("source", "dataset", "alpha"):
        if key in meta:
            cols[key] = meta[key]
    return cols, assumed
