"""``vllm bench serve --save-result`` JSON (and legacy ``benchmark_serving.py``) to sweep rows.

Field names and their meaning are in docs/data-formats.md (from vLLM's ``vllm/benchmarks/
serve.py`` and the v0.8-era ``benchmarks/benchmark_serving.py``).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from bayes_sd.io._record import Record, backlog_growth, growth
from bayes_sd.io.metadata import canonical_metadata


def looks_like_vllm(obj: Any) -> bool:
    return isinstance(obj, dict) and (
        "request_throughput" in obj or ("completed" in obj and "duration" in obj)
    )


def _e2e_from_arrays(rec: Record) -> tuple[np.ndarray | None, str | None, np.ndarray | None]:
    """Per-request latencies of successful requests, how they were obtained, and start order."""
    out_lens = rec.array("output_lens")
    starts = rec.array("start_times")
    lat = rec.array("latencies")
    for name, values in (("latencies", lat), ("ttfts", rec.array("ttfts"))):
        if values is not None and (values < 0).any():  # a failed request records 0
            raise rec.error(name, f"{int((values < 0).sum())} negative time(s)")
    if lat is not None and lat.size:
        ok = lat > 0
        if out_lens is not None and out_lens.size == lat.size:
            ok &= out_lens > 0
        order = starts[ok] if starts is not None and starts.size == lat.size else None
        return lat[ok], "latencies", order
    ttfts = rec.array("ttfts")
    itls = rec.array("itls", nested=True)
    if ttfts is not None and itls is not None and len(itls) == ttfts.size and ttfts.size:
        total = ttfts + np.array([float(np.sum(x)) for x in itls])
        ok = ttfts > 0
        if out_lens is not None and out_lens.size == ttfts.size:
            ok &= out_lens > 0
        return total[ok], "ttft+itl", None
    return None, None, None


def parse_vllm(obj: dict, file: str, record: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """One result object to ``(measured columns, metadata found in the file)``."""
    rec = Record(obj, file, record)
    meta = canonical_metadata(obj, file, strict=False)
    if rec.has("model_id"):
        meta.setdefault("target", str(obj["model_id"]))
    row: dict[str, Any] = {"file": file, "record": record}

    # Load
    rate = rec.num("request_rate", allow_inf=True, low=0)
    max_conc = rec.num("max_concurrency", low=1)
    if rate is None and max_conc is None:
        raise rec.error("request_rate", "neither request_rate nor max_concurrency is recorded")
    if rate is not None and math.isfinite(rate):
        if rate <= 0:
            raise rec.error("request_rate", "must be > 0")
        row.update(load_mode="rate", request_rate=rate, concurrency=max_conc)
    elif max_conc is not None:
        row.update(load_mode="concurrency", request_rate=None, concurrency=max_conc)
    else:
        row.update(load_mode="burst", request_rate=None, concurrency=None)
    row["burstiness"] = rec.num("burstiness", low=0)
    if row["load_mode"] == "rate":
        row["arrivals"] = "poisson" if row["burstiness"] in (None, 1.0) else "gamma"
    if rec.has("ramp_up_strategy"):
        raise rec.error(
            "ramp_up_strategy",
            "ramp-up runs change the rate during the run and "
            "cannot be summarised by one load point; rerun without --ramp-up",
        )

    # Counts and throughput
    completed = rec.num("completed", required=True, low=0)
    if completed == 0:
        raise rec.error("completed", "no request completed")
    failed = rec.num("failed", low=0)
    if failed is None and rec.has("num_prompts"):  # legacy files have no "failed"
        failed = max(rec.num("num_prompts", low=0) - completed, 0.0)
    row.update(n_requests=completed, n_failed=failed)
    row["duration_s"] = rec.num("duration", low=0)
    row["achieved_rate"] = rec.num("request_throughput", low=0)
    if row["achieved_rate"] is None and row["duration_s"]:
        row["achieved_rate"] = completed / row["duration_s"]
    elif row["duration_s"] and not 0.5 < row["achieved_rate"] * row["duration_s"] / completed < 2:
        raise rec.error("request_throughput",
                        f"{row['achieved_rate']:.4g} req/s, but {completed:g} requests completed "
                        f"in {row['duration_s']:.4g} s: the file is inconsistent")  # fmt: skip
    total_in = rec.num("total_input_tokens", low=0)
    total_out = rec.num("total_output_tokens", low=0)
    if total_in is not None:
        row["prefill_len"] = total_in / completed
    if total_out is not None:
        row["decode_len"] = total_out / completed

    # Latency: summary fields, else per-request arrays, else TTFT + TPOT
    ms = 1e-3
    mean_e2el = rec.num("mean_e2el_ms", low=0)
    lat, how, order = _e2e_from_arrays(rec)
    if mean_e2el is not None:
        row["latency_mean_s"] = mean_e2el * ms
        row["latency_source"] = "summary"
    elif lat is not None and lat.size:
        row["latency_mean_s"] = float(lat.mean())
        row["latency_source"] = how
    for q, col in ((50, "latency_p50_s"), (90, "latency_p90_s"), (99, "latency_p99_s")):
        key = "median_e2el_ms" if q == 50 else f"p{q}_e2el_ms"
        value = rec.num(key, low=0)
        if value is not None:
            row[col] = value * ms
        elif lat is not None and lat.size:
            row[col] = float(np.percentile(lat, q))
    if lat is not None and lat.size:
        row["latency_growth"] = growth(lat, order)
        if order is None and row["load_mode"] == "rate":  # request order at the offered rate
            order = np.arange(lat.size) / row["request_rate"]
        if order is not None and row["load_mode"] == "rate":
            row["backlog_growth"] = backlog_growth(order, lat)
    ttft = rec.num("mean_ttft_ms", low=0)
    tpot = rec.num("mean_tpot_ms", low=0)
    for metric in ("ttft", "tpot"):
        for stat, key in (("mean", "mean"), ("p50", "median"), ("p90", "p90"), ("p99", "p99")):
            value = rec.num(f"{key}_{metric}_ms", low=0)
            row[f"{metric}_{stat}_s"] = None if value is None else value * ms
    row["output_throughput"] = rec.num("output_throughput", low=0)
    if isinstance(obj.get("date"), str):
        row["date"] = obj["date"]
    if "latency_mean_s" not in row:
        if ttft is not None and tpot is not None and "decode_len" in row:
            row["latency_mean_s"] = (ttft + tpot * max(row["decode_len"] - 1, 0)) * ms
            row["latency_source"] = "ttft+tpot"
            warnings.warn(
                f"{file}: {record}: no end-to-end latency recorded; using mean TTFT + mean TPOT "
                "× (output tokens − 1), exact only for fixed output lengths. Rerun with "
                "--percentile-metrics ttft,tpot,itl,e2el for the measured value.",
                UserWarning,
                stacklevel=2,
            )
        else:
            raise rec.error(
                "mean_e2el_ms",
                "no end-to-end latency in this result: rerun `vllm bench serve` with "
                "--percentile-metrics ttft,tpot,itl,e2el (or keep the latencies array)",
            )

    # Speculative decoding counters (present when the server exposes vllm:spec_decode_*)
    drafts = rec.num("spec_decode_num_drafts", low=0)
    draft_tokens = rec.num("spec_decode_draft_tokens", low=0)
    accepted = rec.num("spec_decode_accepted_tokens", low=0)
    length = rec.num("spec_decode_acceptance_length", low=1)
    per_pos = rec.array("spec_decode_per_position_acceptance_rates")
    if per_pos is not None and ((per_pos < 0) | (per_pos > 1)).any():
        raise rec.error("spec_decode_per_position_acceptance_rates",
                        "acceptance rates are probabilities: each must lie in [0, 1]")  # fmt: skip
    if per_pos is not None and (np.diff(per_pos) > 1e-9).any():
        raise rec.error("spec_decode_per_position_acceptance_rates",
                        "a draft position is accepted only after the one before it: the rates "
                        "cannot rise with the position")  # fmt: skip
    if drafts and accepted is not None and draft_tokens is not None and accepted > draft_tokens:
        raise rec.error("spec_decode_accepted_tokens", "more tokens accepted than drafted")
    if drafts is not None and drafts == 0:
        meta.setdefault("k", 0.0)  # counters exposed but nothing drafted: SD was off
    elif drafts:
        if draft_tokens is not None:
            k_seen = draft_tokens / drafts
            if abs(k_seen - round(k_seen)) < 1e-6:
                if "k" in meta and meta["k"] != round(k_seen):
                    raise rec.error(
                        "spec_decode_draft_tokens",
                        f"the SD counters show k = {round(k_seen)} drafted tokens per draft, "
                        f"but the metadata says k = {meta['k']:g}",
                    )
                meta["k"] = float(round(k_seen))
        if length is None and accepted is not None:
            length = 1.0 + accepted / drafts
    if length is None and per_pos is not None and per_pos.size:
        length = 1.0 + float(per_pos.sum())  # unconditional per-position rates
        meta.setdefault("k", float(per_pos.size))
    if length is not None:
        row["acceptance_length"] = length
        row["acceptance_source"] = "server"
    if per_pos is not None and per_pos.size:
        row["acceptance_per_position"] = " ".join(f"{r:.6g}" for r in per_pos)
    return row, meta
