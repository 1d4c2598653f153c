"""InferenceX benchmark rows (SemiAnalysis; a JSON array of dashboard rows) to sweep rows.

Each row is one closed-loop run (``conc`` requests kept in flight, ``--request-rate inf``) of one
configuration: ``hardware``, ``framework`` (the engine), ``precision``, ``spec_method``
(``mtp`` or ``none``), the prefill/decode parallel layout, nominal ``isl``/``osl`` and
``metrics`` in seconds (TTFT, TPOT, E2E: mean, median, p90, p99 where recorded; throughput per
GPU). Field meanings, provenance and caveats: ``data/inferencex/README.md``.

What the rows do not record is not guessed: the MTP draft length ``k`` comes from the derived
recipe table beside the file (``mtp_k_from_recipes_DERIVED.csv``) where it names one k for the
row, else it stays empty (the run is kept, not fitted); acceptance is not recorded. Single-node
runs sent ``10 × conc`` requests (``n_requests``: the opening wave is a tenth of the run).
Prompt and output lengths are about 0.9 × nominal (``--random-range-ratio 0.8``). Rows whose
throughput is on mixed GPU bases (the 2025-12 disaggregated rows of the old artifact schema) or
breaks Little's law (output tokens/s against concurrency × D / E2E outside [0.8, 1.25]) are kept
with ``excluded`` set and the reason.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from bayes_sd.errors import DataError
from bayes_sd.io._record import Record

__all__ = ["K_TABLE", "looks_like_inferencex", "parse_inferencex"]

# the single-node recipe scripts send 10 × conc prompts after 2 × conc warm-up requests
# (data/inferencex/README.md, caveat 1; the multi-node harness was not checked: left unknown)
PROMPTS_PER_CONC = 10
REQUIRED = ("hardware", "framework", "model", "precision", "spec_method", "isl", "osl", "conc",
            "metrics")  # fmt: skip
# GPU names shared with the step-cost table; others are kept as written (upper case)
HARDWARE = {"h100": "H100-SXM-80GB", "h200": "H200-SXM-141GB", "b200": "B200", "b300": "B300",
            "gb200": "GB200", "mi300x": "MI300X", "mi325x": "MI325X"}  # fmt: skip
MODELS = {"dsr1": "deepseek-ai/DeepSeek-R1-0528"}
MTP_DRAFTER = {"dsr1": "deepseek-r1-mtp"}
K_TABLE = "mtp_k_from_recipes_DERIVED.csv"
LENGTH_RATIO = 0.9  # random lengths uniform in [0.8, 1] × nominal
LITTLE_RANGE = (0.8, 1.25)
STAT_KEYS = {"mean": "mean", "p50": "median", "p90": "p90", "p99": "p99"}


def looks_like_inferencex(obj: Any) -> bool:
    return (
        isinstance(obj, list)
        and len(obj) > 0
        and isinstance(obj[0], dict)
        and {"hardware", "framework", "conc", "metrics"} <= set(obj[0])
    )


def read_k_table(path: Path) -> dict[tuple[str, int], dict[str, str]]:
    """The derived recipe table beside an InferenceX file: ``(file, row index) → row``."""
    from bayes_sd.io._safe import MAX_SIDECAR_BYTES, read_text

    table = path.parent / K_TABLE
    if not table.is_file():
        return {}
    text = read_text(table, max_bytes=4 * MAX_SIDECAR_BYTES)
    out = {}
    for i, row in enumerate(csv.DictReader(text.splitlines())):
        try:
            out[(row["file"], int(row["row_index"]))] = row
        except (KeyError, ValueError) as err:
            raise DataError(f"not a recipe k table row: {err}", file=str(table),
                            record=f"row {i + 1}", field="row_index") from err  # fmt: skip
    return out


def _k_of(row: dict, k_row: dict | None, file: str, record: str) -> tuple[float | None, str]:
    """The recipe's k where the derived table gives one for this very row."""
    if k_row is None:
        return None, "draft length not recorded (no recipe table beside the file)"
    for key in ("hardware", "framework", "precision", "conc", "date"):
        if key in k_row and str(row.get(key)) != k_row[key]:
            raise DataError(
                f"the recipe table's row does not match this row ({key} {k_row[key]!r} vs "
                f"{row.get(key)!r})",
                file=file,
                record=record,
                field=key,
            )
    value = k_row.get("k_recipe", "").strip()
    if not value:
        return None, "draft length not unique in the recipes (not guessed)"
    return float(value), ""


def _layout(rec: Record, multinode: bool, disagg: bool) -> tuple[str, float, int]:
    """(label, engines sharing the load, decode GPUs)."""

    def side(prefix: str) -> str:
        tp = int(rec.num(f"{prefix}_tp", required=True, low=1))
        ep = int(rec.num(f"{prefix}_ep", low=1) or 1)
        dpa = bool(rec.obj.get(f"{prefix}_dp_attention"))
        workers = int(rec.num(f"{prefix}_num_workers", low=0) or 0)
        text = f"tp{tp} ep{ep}" + (" dpa" if dpa else "")
        return text + (f" x{workers}" if workers else "")

    decode_tp = int(rec.num("decode_tp", required=True, low=1))
    workers = int(rec.num("decode_num_workers", low=0) or 0)
    dpa = bool(rec.obj.get("decode_dp_attention"))
    engines = max(workers, 1) * (decode_tp if dpa else 1)
    label = f"prefill {side('prefill')} / decode {side('decode')}" if disagg else side("decode")
    decode_gpus = int(rec.num("num_decode_gpu", required=True, low=1)) if multinode else decode_tp
    return label, float(engines), decode_gpus


def parse_inferencex(rows: list, file: str, k_table: dict) -> list[dict[str, Any]]:
    """Canonical rows of one InferenceX file (system columns included)."""
    name = Path(file).name
    out = []
    for i, obj in enumerate(rows):
        record = f"row {i}"
        if not isinstance(obj, dict):
            raise DataError(f"expected an object, got {type(obj).__name__}", file=file,
                            record=record)  # fmt: skip
        missing = [k for k in REQUIRED if k not in obj]
        if missing:
            raise DataError("missing InferenceX field", file=file, record=record,
                            field=missing[0])  # fmt: skip
        rec = Record(obj, file, record)
        metrics = obj["metrics"]
        if not isinstance(metrics, dict):
            raise rec.error("metrics", "expected an object of metrics")
        met = Record(metrics, file, record)
        model = str(obj["model"]).strip().lower()
        hardware = str(obj["hardware"]).strip().lower()
        multinode = bool(obj.get("is_multinode"))
        disagg = bool(obj.get("disagg"))
        layout, engines, decode_gpus = _layout(rec, multinode, disagg)
        if multinode:
            num_gpus = rec.num("num_prefill_gpu", required=True, low=0) + decode_gpus
        else:
            num_gpus = float(decode_gpus)
        sd = str(obj["spec_method"]).strip().lower()
        row: dict[str, Any] = {
            "file": file,
            "record": record,
            "source": "inferencex",
            "dataset": "random",
            "gpu": HARDWARE.get(hardware, hardware.upper()),
            "num_gpus": num_gpus,
            "target": MODELS.get(model, model),
            "engine": str(obj["framework"]).strip().lower(),
            "precision": str(obj["precision"]).strip().lower(),
            "layout": layout,
            "engines": engines,
            "disaggregated": disagg,
            # one prefill worker's GPUs (the 2025-12 single-node rows give the total there)
            "prefill_gpus": rec.num("prefill_tp", low=1) if disagg and multinode else None,
            "prefill_len": LENGTH_RATIO * rec.num("isl", required=True, low=1),
            "decode_len": LENGTH_RATIO * rec.num("osl", required=True, low=1),
            "load_mode": "concurrency",
            "concurrency": rec.num("conc", required=True, low=1),
            "date": None if obj.get("date") is None else str(obj["date"]),
            "latency_source": "summary",
        }
        reasons = []
        if sd in ("none", ""):
            row.update(method="none", k=0.0, acceptance_length=1.0, acceptance_source="k=0")
        else:
            row.update(method=sd, drafter=MTP_DRAFTER.get(model))
            k, why = _k_of(obj, k_table.get((name, i)) if k_table else None, file, record)
            row["k"] = k
            if why:
                reasons.append(why)
        for metric, key in (("latency", "e2el"), ("ttft", "ttft"), ("tpot", "tpot")):
            for stat, prefix in STAT_KEYS.items():
                value = met.num(f"{prefix}_{key}", low=0)
                row[f"{metric}_{stat}_s"] = value
        if not multinode:  # the single-node recipes send 10 x conc prompts after the warm-up
            row["n_requests"] = int(PROMPTS_PER_CONC * row["concurrency"])
        per_gpu = met.num("output_tput_per_gpu", low=0)
        row["output_throughput"] = None if per_gpu is None else per_gpu * decode_gpus
        if disagg and not multinode:
            reasons.append("throughput on mixed GPU bases (2025-12 artifact schema)")
        e2e = row["latency_mean_s"] or row["latency_p50_s"]
        if row["output_throughput"] and e2e:
            expected = row["concurrency"] * row["decode_len"] / e2e
            ratio = row["output_throughput"] / expected
            if not LITTLE_RANGE[0] <= ratio <= LITTLE_RANGE[1]:
                reasons.append(f"throughput {ratio:.2f}x of Little's law (concurrency × D / E2E)")
        if not math.isfinite(row["concurrency"]):
            raise rec.error("conc", "must be finite")
        row["excluded"] = bool(reasons)
        row["excluded_reason"] = "; ".join(reasons) or None
        out.append(row)
    return out
