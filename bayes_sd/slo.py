"""Service-level objectives as serving tools write them, parsed into one form.

An SLO is a list of :class:`Term` — a metric (``ttft``, ``tpot`` or ``latency``, the E2E), a
statistic over the requests of a run (``mean``, or a percentile ``p50`` … ``p99``) and a
threshold in seconds; a load meets it when every term holds. :func:`parse_slo` reads:

* vLLM's goodput form, ``"ttft:300 tpot:50"`` (``vllm bench serve --goodput``; milliseconds,
  keys ``ttft``, ``tpot``, ``e2el``): a per-request threshold, planned as the ``attainment``
  percentile (default p90: nine requests in ten meet it);
* the ``vllm bench sweep serve_sla`` form, ``"p99_e2el_ms<=500"``, several terms joined by
  commas (``<stat>_<metric>_<unit>`` with ``<=`` or ``<``; ``mean``, ``median`` or ``pNN``;
  ``ms`` or ``s``), or its JSON object ``{"p99_e2el_ms": "<=500"}``;
* a mapping (YAML or JSON text, or a dict): ``{ttft: {p99: 2s}, tpot: {p90: 40ms}}``, with
  AIPerf's ``{ttft: {p95: {le: 3000}}}`` (bare numbers are milliseconds, as in vLLM and AIPerf);
* a bare duration, ``"3s"`` or ``"800ms"`` (a bare number is seconds): mean E2E latency (the
  paper's SLO).

Percentiles between p50 and p99 are planned from the model's p50, p90 and p99 (interpolated on
the normal-quantile scale, :func:`statistic_draws`); ``itl`` is not modelled (with SD, tokens
arrive in bursts: use ``tpot``). A bad term is a ``ValueError`` that names it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from bayes_sd.errors import DataError

__all__ = ["METRICS", "Term", "fraction_within", "parse_slo", "statistic_draws"]

METRICS = {"ttft": "ttft", "tpot": "tpot", "e2el": "latency", "e2e": "latency",
           "latency": "latency"}  # fmt: skip
MODELLED = (50.0, 90.0, 99.0)  # percentiles the model predicts (bayes_sd.laws.TAIL_STATS)
_UNITS = {"ms": 1e-3, "s": 1.0, "us": 1e-6}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|us)?\s*$")
_SLA_KEY = re.compile(r"^(mean|median|p[0-9]+(?:\.[0-9]+)?)_([a-z0-9]+)_(ms|s)$")
_MAX_TERMS = 32


@dataclass(frozen=True)
class Term:
    """One objective: ``statistic`` of ``metric`` at most ``threshold_s`` seconds."""

    metric: str  # ttft, tpot or latency (E2E)
    statistic: str  # mean, or pNN (p50, p90, p95, p99, ...)
    threshold_s: float

    @property
    def label(self) -> str:
        """As people write it: ``p99 TTFT ≤ 2 s``."""
        name = {"ttft": "TTFT", "tpot": "TPOT", "latency": "E2E"}[self.metric]
        value = self.threshold_s
        shown = f"{value * 1e3:g} ms" if value < 1 else f"{value:g} s"
        return f"{self.statistic} {name} ≤ {shown}"

    @property
    def percentile(self) -> float | None:
        return None if self.statistic == "mean" else float(self.statistic[1:])


def parse_slo(spec: Any, *, attainment: float = 0.9) -> list[Term]:
    """The terms of an SLO given in any of the module's forms (text, dict or list of terms)."""
    if isinstance(spec, Term):
        return [spec]
    if isinstance(spec, (list, tuple)) and all(isinstance(t, Term) for t in spec):
        return _check(list(spec))
    if isinstance(spec, Mapping):
        return _check(_from_mapping(spec))
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return _check([Term("latency", "mean", _seconds(spec, 1.0, "the SLO"))])
    if not isinstance(spec, str):
        raise ValueError(f"an SLO is text or a mapping, not {type(spec).__name__}")
    text = spec.strip()
    if len(text) > 4096:
        raise ValueError("the SLO text is longer than 4,096 characters")
    if not text:
        raise ValueError("the SLO is empty")
    if text[0] in "{[" or "{" in text or "\n" in text:  # YAML / JSON
        return _check(_from_structured(text))
    m = _DURATION.match(text)
    if m:  # a bare duration: mean E2E; a bare number is seconds here (bayes-sd plan --slo 2)
        number, unit = m.groups()
        return _check([Term("latency", "mean", _seconds(float(number), _UNITS[unit or "s"],
                                                        "the SLO"))])  # fmt: skip
    if "<" in text:
        return _check([_sla_term(part) for part in _split(text, ",")])
    if ":" in text:
        return _check(_goodput(text, attainment))
    raise ValueError(
        f"cannot read the SLO {text!r}: write 'p99_ttft_ms<=2000,p99_tpot_ms<=50', "
        "'ttft:300 tpot:50' (ms), '{ttft: {p99: 2s}}' or a duration such as '3s'"
    )


def statistic_draws(draws: Mapping[str, np.ndarray], term: Term) -> np.ndarray:
    """Draws of ``term``'s statistic from prediction draws holding ``<metric>`` (its mean) and
    ``<metric>_p50``, ``_p90``, ``_p99``: a modelled percentile as it is; another between p50
    and p99 by linear interpolation of the log percentile in the normal quantile of its level."""
    if term.statistic == "mean":
        return np.asarray(draws[term.metric])
    p = term.percentile
    if p in MODELLED:
        return np.asarray(draws[f"{term.metric}_p{p:g}"])
    lo, hi = (50.0, 90.0) if p < 90 else (90.0, 99.0)
    z = NormalDist().inv_cdf
    t = (z(p / 100) - z(lo / 100)) / (z(hi / 100) - z(lo / 100))
    a = np.asarray(draws[f"{term.metric}_p{lo:g}"])
    b = np.asarray(draws[f"{term.metric}_p{hi:g}"])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.exp((1 - t) * np.log(a) + t * np.log(b))


def fraction_within(draws: Mapping[str, np.ndarray], metric: str, threshold_s: float) -> np.ndarray:
    """Per draw, the share of requests whose ``metric`` is at most ``threshold_s``: the inverse
    of :func:`statistic_draws`' interpolation — the normal quantile of the level is linear in
    the log percentile between p50, p90 and p99, and continues with the nearest segment's
    slope below p50 and above p99 (a log-normal-like tail)."""
    z = NormalDist().inv_cdf
    levels = np.array([z(p / 100) for p in MODELLED])
    logs = [np.log(np.asarray(draws[f"{metric}_p{p:g}"], dtype=float)) for p in MODELLED]
    x = np.log(threshold_s)
    with np.errstate(divide="ignore", invalid="ignore"):
        below = levels[0] + (x - logs[0]) * (levels[1] - levels[0]) / (logs[1] - logs[0])
        middle = levels[1] + (x - logs[1]) * (levels[2] - levels[1]) / (logs[2] - logs[1])
        zz = np.where(x <= logs[1], below, middle)
    from scipy.special import ndtr

    out = ndtr(zz)
    return np.where(np.isfinite(logs[2]), np.nan_to_num(out, nan=0.0), 0.0)


# ---------------------------------------------------------------- forms


def _split(text: str, sep: str) -> list[str]:
    parts = [p.strip() for p in text.split(sep)]
    if any(not p for p in parts):
        raise ValueError(f"the SLO {text!r} has an empty term")
    if len(parts) > _MAX_TERMS:
        raise ValueError(f"the SLO has {len(parts)} terms; at most {_MAX_TERMS}")
    return parts


def _sla_term(part: str, value: str | None = None) -> Term:
    """``p99_e2el_ms<=500`` (or the key ``p99_e2el_ms`` with the value ``<=500``)."""
    text = part if value is None else f"{part}{value}"
    m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(<=|<)\s*(.+?)\s*$", text)
    if not m:
        raise ValueError(f"SLO term {text!r}: write <stat>_<metric>_<unit><=<value>, e.g. "
                         "p99_ttft_ms<=2000")  # fmt: skip
    key, _, number = m.groups()
    km = _SLA_KEY.match(key.lower())
    if not km:
        raise ValueError(
            f"SLO term {text!r}: the key {key!r} is not <stat>_<metric>_<unit> (stat mean, median "
            "or pNN; metric ttft, tpot or e2el; unit ms or s)"
        )
    stat, metric, unit = km.groups()
    return Term(_metric(metric, text), _statistic(stat, text),
                _seconds(_number(number, text), _UNITS[unit], text))  # fmt: skip


def _goodput(text: str, attainment: float) -> list[Term]:
    if not 0.5 <= attainment <= 0.99:
        raise ValueError(f"attainment {attainment} is outside 0.5–0.99")
    stat = f"p{round(attainment * 100, 2):g}"
    terms = []
    for part in _split(text.replace(",", " ").replace("  ", " "), " "):
        name, sep, value = part.partition(":")
        if not sep:
            raise ValueError(f"SLO term {part!r}: the goodput form is metric:milliseconds")
        terms.append(Term(_metric(name.strip().lower(), part), stat,
                          _seconds(_number(value, part), 1e-3, part)))  # fmt: skip
    return terms


def _from_structured(text: str) -> list[Term]:
    from bayes_sd.io._safe import load_yaml  # YAML is a superset of JSON; bounded, safe

    try:
        data = load_yaml(text, "the SLO")
    except DataError as exc:
        raise ValueError(f"the SLO is not valid YAML/JSON: {str(exc)[:200]}") from None
    if isinstance(data, list):  # a list of SLA objects (vllm bench sweep --sla-params)
        if len(data) != 1:
            raise ValueError("give one SLA object, not a list of several")
        data = data[0]
    if not isinstance(data, Mapping):
        raise ValueError(f"the SLO mapping is a {type(data).__name__}, not a mapping")
    return _from_mapping(data)


def _from_mapping(data: Mapping) -> list[Term]:
    if len(data) > _MAX_TERMS:
        raise ValueError(f"the SLO has {len(data)} entries; at most {_MAX_TERMS}")
    if "sla" in data and len(data) == 1:  # AIPerf's top-level key
        data = data["sla"]
        if not isinstance(data, Mapping):
            raise ValueError("the SLO's 'sla' entry is not a mapping")
    terms = []
    for key, value in data.items():
        key = str(key)
        if "_" in key and not isinstance(value, Mapping):  # {"p99_e2el_ms": "<=500"}
            terms.append(_sla_term(key, str(value) if str(value)[:1] == "<" else f"<={value}"))
            continue
        metric = _metric(key.lower(), key)
        if not isinstance(value, Mapping):
            raise ValueError(f"SLO term {key!r}: give {{stat: threshold}}, e.g. {{p99: 2s}}")
        for stat, threshold in value.items():
            where = f"{key}.{stat}"
            if isinstance(threshold, Mapping):  # AIPerf: {le: 3000} (or lt)
                ops = {str(k).lower(): v for k, v in threshold.items()}
                if set(ops) - {"le", "lt"} or len(ops) != 1:
                    raise ValueError(f"SLO term {where!r}: only 'le' (or 'lt') bounds are "
                                     "objectives")  # fmt: skip
                threshold = next(iter(ops.values()))
            terms.append(Term(metric, _statistic(str(stat).lower(), where),
                              _duration(threshold, where)))  # fmt: skip
    return terms


# ---------------------------------------------------------------- pieces


def _metric(name: str, where: str) -> str:
    if name == "itl":
        raise ValueError(f"SLO term {where!r}: ITL is not modelled (with SD tokens arrive in "
                         "bursts); use tpot, the mean time per output token")  # fmt: skip
    if name not in METRICS:
        raise ValueError(f"SLO term {where!r}: unknown metric {name!r} (ttft, tpot or e2el)")
    return METRICS[name]


def _statistic(stat: str, where: str) -> str:
    if stat in ("mean", "avg"):
        return "mean"
    if stat == "median":
        return "p50"
    m = re.fullmatch(r"p([0-9]+(?:\.[0-9]+)?)", stat)
    if not m:
        raise ValueError(f"SLO term {where!r}: unknown statistic {stat!r} (mean, median, pNN)")
    p = float(m.group(1))
    if not MODELLED[0] <= p <= MODELLED[-1]:
        raise ValueError(f"SLO term {where!r}: p{p:g} is outside the modelled p50–p99")
    return f"p{p:g}"


def _number(text: str, where: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ValueError(f"SLO term {where!r}: {str(text)[:40]!r} is not a number") from None
    return value


def _duration(value: Any, where: str) -> float:
    """Seconds from ``2s``, ``40ms``, ``500us`` or a bare number of milliseconds."""
    if isinstance(value, bool):
        raise ValueError(f"SLO term {where!r}: {value!r} is not a duration")
    if isinstance(value, (int, float)):
        return _seconds(value, 1e-3, where)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"SLO term {where!r}: {str(value)[:40]!r} is not a duration (2s, 40ms)")
    number, unit = m.groups()
    return _seconds(float(number), _UNITS[unit or "ms"], where)


def _seconds(value: float, unit: float, where: str) -> float:
    value = float(value) * unit
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"SLO term {where!r}: the threshold must be a positive finite duration")
    return value


def _check(terms: list[Term]) -> list[Term]:
    if not terms:
        raise ValueError("the SLO has no terms")
    seen = {}
    for t in terms:  # the same objective twice: the stricter threshold holds
        key = (t.metric, t.statistic)
        seen[key] = t if key not in seen else min(seen[key], t, key=lambda x: x.threshold_s)
    return list(seen.values())


def to_json(terms: list[Term]) -> str:
    """The terms as a JSON list (for reports and CSV headers)."""
    return json.dumps([t.__dict__ for t in terms])
