"""GuideLLM benchmark reports (``benchmarks.json`` / ``.yaml``) to sweep rows, one per benchmark.

Report schema versions 1 (guidellm 0.5–0.6) and 2 (0.7+), and the v0.4 layout (``args`` instead
of ``config``, no ``metadata``). Names and traps are in docs/data-formats.md; note that GuideLLM's
``time_per_output_token_ms`` includes TTFT, while its ``inter_token_latency_ms`` is vLLM's TPOT.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bayes_sd.errors import DataError
from bayes_sd.io._record import Record, backlog_growth, growth
from bayes_sd.io.metadata import canonical_metadata

SUPPORTED_VERSIONS = (1, 2)


def looks_like_guidellm(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("benchmarks"), list)


def report_version(obj: dict, file: str) -> int | None:
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "version" in meta:
        version = meta["version"]
        if version not in SUPPORTED_VERSIONS:
            raise DataError(
                f"GuideLLM report schema version {version!r} is not supported "
                f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))})",
                file=file,
                field="metadata.version",
            )
        return int(version)
    benches = obj.get("benchmarks") or []
    if benches and isinstance(benches[0], dict) and "args" in benches[0]:
        raise DataError(
            "this is a GuideLLM v0.3 report (benchmarks carry 'args'); rerun with guidellm "
            ">= 0.4, or convert it to the canonical CSV (docs/data-formats.md)",
            file=file,
        )
    return None  # v0.4: config layout without metadata


def _stat(rec: Record, name: str, stat: str, *, scale: float = 1.0) -> float | None:
    """``metrics.<name>.successful.<stat>`` (a DistributionSummary field)."""
    if stat.startswith("p") and stat[1:].isdigit():
        path = f"metrics.{name}.successful.percentiles.{stat}"
    else:
        path = f"metrics.{name}.successful.{stat}"
    value = rec.num(path, low=0)
    return None if value is None else value * scale


def _file_model(obj: dict) -> str | None:
    for path in (("config", "model"), ("args", "model")):
        node: Any = obj
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str) and node:
            return node
    return None


def parse_guidellm(obj: dict, file: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """A report to ``[(measured columns, metadata found in the file)]``, one per benchmark."""
    version = report_version(obj, file)
    benches = obj["benchmarks"]
    if not benches:
        raise DataError("the report has no benchmarks", file=file, field="benchmarks")
    model = _file_model(obj)
    out = []
    for i, bench in enumerate(benches):
        rec = Record(bench, file, f"benchmark {i}")
        meta: dict[str, Any] = {}
        backend = rec.get("config.backend", None)
        if isinstance(backend, dict) and isinstance(backend.get("model"), str):
            meta["target"] = backend["model"]
        elif model:
            meta["target"] = model
        env = rec.get("config.environment", None)
        if isinstance(env, dict):
            meta.update(canonical_metadata(env, file, strict=False))
        row = _parse_benchmark(rec, version)
        out.append((row, meta))
    return out


def _parse_benchmark(rec: Record, version: int | None) -> dict[str, Any]:
    row: dict[str, Any] = {"file": rec.file, "record": rec.record}
    strategy = rec.get("config.strategy")
    if not isinstance(strategy, dict) or not isinstance(strategy.get("type_"), str):
        raise rec.error("config.strategy.type_", "missing the benchmark's strategy type")
    kind = strategy["type_"]
    if kind == "synchronous":
        row.update(load_mode="concurrency", concurrency=1.0)
    elif kind == "concurrent":
        row.update(
            load_mode="concurrency",
            concurrency=rec.num("config.strategy.streams", required=True, low=1),
        )
    elif kind == "throughput":
        cap = rec.num("config.strategy.max_concurrency", low=1)
        row.update(
            load_mode="concurrency" if cap else "burst",
            concurrency=cap,
            saturated=True,
            saturation_reason="throughput benchmark (as fast as possible)",
        )
    elif kind in ("constant", "poisson", "async"):
        rate = rec.num("config.strategy.rate", required=True, low=0)
        if rate <= 0:
            raise rec.error("config.strategy.rate", "must be > 0")
        row.update(
            load_mode="rate",
            request_rate=rate,
            concurrency=rec.num("config.strategy.max_concurrency", low=1),
            arrivals="constant" if kind == "constant" else "poisson",
            burstiness=None if kind == "constant" else 1.0,
        )
    else:
        raise rec.error(
            "config.strategy.type_",
            f"unsupported strategy {kind!r} (replay/trace runs have no single load point)",
        )

    # Counts
    totals = rec.get("metrics.request_totals", None)
    made = rec.get("scheduler_metrics.requests_made", None)
    counts = totals if isinstance(totals, dict) else made if isinstance(made, dict) else None
    if counts is None:
        raise rec.error("metrics.request_totals", "missing request counts")
    crec = Record(counts, rec.file, rec.record)
    successful = crec.num("successful", required=True, low=0)
    if successful == 0:
        raise rec.error("metrics.request_totals.successful", "no request completed")
    row["n_requests"] = successful
    row["n_failed"] = crec.num("errored", low=0)

    # Timing and rate
    start = rec.num("scheduler_metrics.measure_start_time")
    end = rec.num("scheduler_metrics.measure_end_time")
    if start is not None and end is not None and end > start:
        row["duration_s"] = end - start
        row["achieved_rate"] = successful / (end - start)
    else:
        row["duration_s"] = rec.num("duration", low=0)
        row["achieved_rate"] = _stat(rec, "requests_per_second", "mean")

    # Workload, latency (s), TTFT, TPOT (= GuideLLM's inter-token latency)
    row["prefill_len"] = _stat(rec, "prompt_token_count", "mean")
    row["decode_len"] = _stat(rec, "output_token_count", "mean")
    row["latency_mean_s"] = _stat(rec, "request_latency", "mean")
    if row["latency_mean_s"] is None:
        raise rec.error("metrics.request_latency.successful.mean", "missing mean request latency")
    row["latency_source"] = "summary"
    row["latency_p50_s"] = _stat(rec, "request_latency", "median")
    row["latency_p90_s"] = _stat(rec, "request_latency", "p90")
    row["latency_p99_s"] = _stat(rec, "request_latency", "p99")
    # GuideLLM's inter_token_latency_ms is vLLM's TPOT (its time_per_output_token_ms
    # includes the TTFT)
    for metric, name in (("ttft", "time_to_first_token_ms"), ("tpot", "inter_token_latency_ms")):
        for stat, key in (("mean", "mean"), ("p50", "median"), ("p90", "p90"), ("p99", "p99")):
            row[f"{metric}_{stat}_s"] = _stat(rec, name, key, scale=1e-3)
    tokens_per_iter = _stat(rec, "iter_tokens_per_iteration", "mean")
    if tokens_per_iter is not None and tokens_per_iter >= 1:
        row["acceptance_length"] = tokens_per_iter
        row["acceptance_source"] = "client_stream"
    row["latency_growth"], backlog = _request_growth(rec)
    if row["load_mode"] == "rate":
        row["backlog_growth"] = backlog
    return row


def _request_growth(rec: Record) -> tuple[float, float]:
    """Latency and backlog growth over the run from the (maybe sub-sampled) successful requests."""
    reqs = rec.get("requests.successful", None)
    if not isinstance(reqs, list):
        return math.nan, math.nan
    starts, lats = [], []
    for r in reqs:
        if not isinstance(r, dict):
            continue
        lat = r.get("request_latency")
        timings = (r.get("info") or {}).get("timings") if isinstance(r.get("info"), dict) else None
        t0 = r.get("request_start_time")
        if isinstance(timings, dict):
            t0 = timings.get("request_start", t0)
            if (
                lat is None
                and isinstance(timings.get("request_end"), int | float)
                and isinstance(t0, int | float)
            ):
                lat = timings["request_end"] - t0
        if isinstance(lat, int | float) and isinstance(t0, int | float) and lat > 0:
            starts.append(float(t0))
            lats.append(float(lat))
    if not lats:
        return math.nan, math.nan
    lats_a, starts_a = np.asarray(lats), np.asarray(starts)
    return growth(lats_a, starts_a), backlog_growth(starts_a, lats_a)
