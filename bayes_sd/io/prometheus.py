"""vLLM's speculative-decoding counters from a Prometheus scrape beside a result file.

A server's ``/metrics`` holds cumulative counters: ``vllm:spec_decode_num_drafts``,
``…_num_draft_tokens``, ``…_num_accepted_tokens`` and, per draft position (label
``position``, 0-based), ``vllm:spec_decode_num_accepted_tokens_per_pos``. Scrape it after a run
into ``<result>.prom`` beside ``<result>.json`` (and, if the server served anything before the
run, before it into ``<result>.before.prom``: the difference is the run's)::

    curl -s localhost:8000/metrics > run1.before.prom
    vllm bench serve ... --save-result --result-filename run1.json
    curl -s localhost:8000/metrics > run1.prom

:func:`counters_for` turns the scrape into the fields ``vllm bench serve`` writes when it sees
them itself (``spec_decode_num_drafts``, ``spec_decode_draft_tokens``,
``spec_decode_accepted_tokens``, ``spec_decode_per_position_acceptance_rates``), so one reader
(:mod:`bayes_sd.io.vllm`) checks and uses them. Parsed with ``prometheus_client``'s text parser;
samples of one counter are summed over their other labels (engines, model names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bayes_sd.errors import DataError
from bayes_sd.io._safe import read_text

__all__ = ["counters_for", "scrape_paths"]

PREFIX = "vllm:spec_decode_"
# counter (without _total) → the field of a vllm bench serve result
TOTALS = {
    "num_drafts": "spec_decode_num_drafts",
    "num_draft_tokens": "spec_decode_draft_tokens",
    "num_accepted_tokens": "spec_decode_accepted_tokens",
}
PER_POSITION = "num_accepted_tokens_per_pos"
MAX_POSITIONS = 64


def scrape_paths(result: Path) -> tuple[Path, Path]:
    """The scrape after and before the run that belong to ``result`` (``run1.json`` →
    ``run1.prom``, ``run1.before.prom``)."""
    return result.with_suffix(".prom"), result.with_suffix(".before.prom")


def _counts(path: Path, max_bytes: int) -> dict[str, Any]:
    """Totals and per-position counts of the spec-decode counters of one scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    text = read_text(path, max_bytes)
    totals: dict[str, float] = {}
    per_pos: dict[int, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name = sample.name.removesuffix("_total")
                if not name.startswith(PREFIX) or sample.name.endswith("_created"):
                    continue
                name = name[len(PREFIX) :]
                if name in TOTALS:
                    totals[name] = totals.get(name, 0.0) + float(sample.value)
                elif name == PER_POSITION:
                    pos = int(sample.labels.get("position", ""))
                    if not 0 <= pos < MAX_POSITIONS:
                        raise ValueError(f"position {pos} outside 0–{MAX_POSITIONS - 1}")
                    per_pos[pos] = per_pos.get(pos, 0.0) + float(sample.value)
    except (ValueError, TypeError, IndexError, KeyError) as err:
        raise DataError(f"not a Prometheus text scrape: {err}", file=str(path)) from None
    return {"totals": totals, "per_pos": per_pos}


def counters_for(result: Path, max_bytes: int) -> dict[str, Any] | None:
    """The run's spec-decode fields from the scrapes beside ``result`` (None without one)."""
    after_path, before_path = scrape_paths(result)
    if not after_path.is_file():
        return None
    after = _counts(after_path, max_bytes)
    before = _counts(before_path, max_bytes) if before_path.is_file() else None
    file = str(after_path)
    if "num_drafts" not in after["totals"]:
        raise DataError(f"no {PREFIX}num_drafts counter: is SD on and are metrics enabled?",
                        file=file, field=f"{PREFIX}num_drafts")  # fmt: skip
    out: dict[str, Any] = {}
    for name, field in TOTALS.items():
        if name in after["totals"]:
            value = after["totals"][name] - (before["totals"].get(name, 0.0) if before else 0.0)
            if value < 0:
                raise DataError("a counter fell between the scrapes (the server restarted?)",
                                file=file, field=f"{PREFIX}{name}")  # fmt: skip
            out[field] = value
    drafts = out["spec_decode_num_drafts"]
    if after["per_pos"] and drafts > 0:
        positions = range(max(after["per_pos"]) + 1)
        base = before["per_pos"] if before else {}
        accepted = [after["per_pos"].get(i, 0.0) - base.get(i, 0.0) for i in positions]
        if min(accepted) < 0:
            raise DataError("a counter fell between the scrapes (the server restarted?)",
                            file=file, field=f"{PREFIX}{PER_POSITION}")  # fmt: skip
        out["spec_decode_per_position_acceptance_rates"] = [a / drafts for a in accepted]
    return out
