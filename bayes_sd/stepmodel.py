"""A step-cost function ``t(model, gpu, B, q, ctx)`` interpolated from measured forward passes.

For each model and GPU the cost of a forward pass over ``B`` sequences of ``q`` new tokens with
``ctx`` cached tokens each is modelled as

    t = f(B·q) + c · B · ctx + e · B · q · ctx

* ``f`` is the cost as a function of the tokens in the pass, piecewise-linear in log tokens
  with a knot at every measured token count, made non-decreasing. It carries the weight reads,
  compute and — for MoE models — the growth of touched experts with routed tokens, straight from
  the measurements;
* ``c`` is the KV-cache read per cached token, ``e`` the attention of each new token over the
  cached ones.

All three are fitted jointly by non-negative least squares on relative error, on the median of
each measured shape.

Beyond the largest measured token count ``f`` continues linearly with the slope of its last
segment (the compute-bound regime); beyond the largest measured context the linear KV term
continues. Every evaluation reports which points were extrapolated. Prefill has its own token
curve where prefill passes were measured; models with none (the drafters) use their decode curve
at ``ctx = 0``, flagged as extrapolated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from bayes_sd.errors import DataError

__all__ = ["StepCostModel"]


@dataclass(frozen=True)
class _Curve:
    log_tokens: np.ndarray  # knots: measured token counts (log)
    base_ms: np.ndarray  # f at the knots, non-decreasing
    kv_ms: float  # c: ms per cached token read (summed over the batch)
    attn_ms: float  # e: ms per (new token × cached token) (attention of q tokens over ctx)

    def __call__(self, batch, q, ctx) -> tuple[np.ndarray, np.ndarray]:
        tokens = np.maximum(batch * q, 1.0)
        base = np.interp(np.log(tokens), self.log_tokens, self.base_ms)
        top_t = np.exp(self.log_tokens[-1])
        slope = 0.0
        if self.log_tokens.size > 1:
            prev_t = np.exp(self.log_tokens[-2])
            slope = max((self.base_ms[-1] - self.base_ms[-2]) / (top_t - prev_t), 0.0)
        above = tokens > top_t * (1 + 1e-9)
        base = np.where(above, self.base_ms[-1] + slope * (tokens - top_t), base)
        return base + self.kv_ms * batch * ctx + self.attn_ms * batch * q * ctx, above


@dataclass(frozen=True)
class _Grid:
    """Decode/verification cost: measured medians on a (batch × q) grid at a reference context,
    interpolated linearly in (log B, q), plus a linear context term ``(c + e q) B (ctx − ref)``."""

    log_batch: np.ndarray  # (nb,)
    qs: np.ndarray  # (nq,)
    table: np.ndarray  # (nq, nb) ms at ctx = ref, gaps filled by extrapolation in B
    measured: np.ndarray  # (nq, nb) bool
    ref_ctx: float
    kv_ms: float
    attn_ms: float

    def __call__(self, batch, q, ctx) -> tuple[np.ndarray, np.ndarray]:
        lb = np.log(np.maximum(batch, 1.0))
        rows = np.empty((self.qs.size, *np.shape(lb)))
        top = self.log_batch[-1]
        for j in range(self.qs.size):
            t = self.table[j]
            rows[j] = np.interp(lb, self.log_batch, t)
            if self.log_batch.size > 1:  # linear in B beyond the largest batch
                b1, b0 = np.exp(top), np.exp(self.log_batch[-2])
                slope = max((t[-1] - t[-2]) / (b1 - b0), 0.0)
                rows[j] = np.where(lb > top, t[-1] + slope * (np.exp(lb) - b1), rows[j])
        qi = np.clip(np.searchsorted(self.qs, q, side="right") - 1, 0, self.qs.size - 1)
        qn = np.minimum(qi + 1, self.qs.size - 1)
        span = np.where(qn > qi, self.qs[qn] - self.qs[qi], 1.0)
        w = np.clip(np.where(qn > qi, (q - self.qs[qi]) / span, 0.0), 0.0, None)
        lo = np.take_along_axis(rows, qi[None], axis=0)[0]
        hi = np.take_along_axis(rows, qn[None], axis=0)[0]
        base = lo + w * (hi - lo)
        if self.qs.size > 1:  # linear in q beyond the largest measured q
            last = rows[-1] - rows[-2]
            per_q = np.maximum(last / (self.qs[-1] - self.qs[-2]), 0.0)
            base = np.where(q > self.qs[-1], rows[-1] + per_q * (q - self.qs[-1]), base)
        # extrapolated: outside the measured B or q range, or in a cell that was not measured
        bi = np.clip(
            np.searchsorted(self.log_batch, lb, side="right") - 1, 0, self.log_batch.size - 1
        )
        bn = np.minimum(bi + 1, self.log_batch.size - 1)
        cell = (
            self.measured[qi, bi]
            & self.measured[qi, bn]
            & self.measured[qn, bi]
            & self.measured[qn, bn]
        )
        outside = (lb > top + 1e-9) | (q > self.qs[-1] + 1e-9) | (q < self.qs[0] - 1e-9)
        ctx_term = (self.kv_ms + self.attn_ms * q) * batch * (ctx - self.ref_ctx)
        return np.maximum(base + ctx_term, 1e-6), outside | ~cell


@dataclass
class StepCostModel:
    """Forward-pass cost per (model, GPU), built from a step-time table.

    Build it with :meth:`from_table` (e.g. on ``load_example("stepcost")``), then call
    :meth:`time_ms`. ``models`` holds each model's size and MoE shape.
    """

    curves: dict[tuple[str, str, str], _Curve | _Grid] = field(default_factory=dict)
    models: dict[str, dict] = field(default_factory=dict)
    max_ctx: dict[tuple[str, str], float] = field(default_factory=dict)

    @classmethod
    def from_table(cls, steps: pd.DataFrame) -> StepCostModel:
        med = (
            steps.groupby(["gpu", "model", "phase", "batch", "q", "ctx"], as_index=False)["time_ms"]
            .median()
            .astype({"batch": float, "q": float, "ctx": float})
        )
        out = cls()
        for _, row in steps.drop_duplicates("model").iterrows():
            out.models[row["model"]] = {
                "params": float(row["params_total"]),
                "active_params": float(row["params_active"]),
                "experts": int(row["experts"]),
                "experts_per_token": int(row["experts_per_token"]),
                "moe": bool(row["moe"]),
                "role": str(row["role"]),
                **{c: int(row[c]) for c in ("layers", "kv_heads", "head_dim") if c in row.index},
            }
        for (gpu, model), g in med.groupby(["gpu", "model"], sort=True):
            dec = g[g["phase"] == "decode"]
            if dec.empty:
                raise DataError(f"no decode passes measured for {model} on {gpu}")
            out.max_ctx[(gpu, model)] = float(dec["ctx"].max())
            out.curves[(gpu, model, "decode")] = _fit_grid(dec)
            pre = g[g["phase"] == "prefill"]
            if not pre.empty:
                out.curves[(gpu, model, "prefill")] = _fit_curve(pre)
        return out

    @property
    def gpus(self) -> list[str]:
        return sorted({g for g, _, _ in self.curves})

    def time_ms(
        self,
        model: str,
        gpu: str,
        batch,
        q,
        ctx,
        *,
        phase: str = "decode",
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(milliseconds, extrapolated)`` for passes of ``batch`` sequences × ``q`` new tokens
        over ``ctx`` cached tokens each (arrays broadcast)."""
        key = (gpu, model, phase)
        batch, q, ctx = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (batch, q, ctx)))
        if key in self.curves:
            curve, flagged = self.curves[key], np.zeros(batch.shape, dtype=bool)
        elif phase == "prefill" and (gpu, model, "decode") in self.curves:
            curve, flagged = self.curves[(gpu, model, "decode")], np.ones(batch.shape, dtype=bool)
        else:
            known = sorted({(g, m) for g, m, _ in self.curves})
            raise KeyError(f"no step costs for model {model!r} on {gpu!r}; measured: {known}")
        ms, above = curve(batch, q, ctx)
        beyond_ctx = ctx > self.max_ctx[(gpu, model)] * (1 + 1e-9)
        return ms, flagged | above | beyond_ctx

    def decode_linear(self, model: str, gpu: str, batch, q) -> tuple[np.ndarray, np.ndarray, float]:
        """Decode cost as ``t_ref(B, q) + slope(q) · (Σ ctx − B · ref_ctx)``, for simulators that
        advance many steps with a fixed batch: returns ``(t_ref ms, slope ms/token, ref_ctx)``."""
        grid = self.curves[(gpu, model, "decode")]
        batch, q = np.broadcast_arrays(np.asarray(batch, dtype=float), np.asarray(q, dtype=float))
        t_ref, _ = grid(batch, q, np.full(batch.shape, grid.ref_ctx))
        return t_ref, grid.kv_ms + grid.attn_ms * q, grid.ref_ctx

    def fit_report(self, steps: pd.DataFrame) -> pd.DataFrame:
        """Relative error of the model on the measured median shapes, per GPU, model, phase."""
        med = steps.groupby(["gpu", "model", "phase", "batch", "q", "ctx"], as_index=False)[
            "time_ms"
        ].median()
        rows = []
        for (gpu, model, phase), g in med.groupby(["gpu", "model", "phase"], sort=True):
            pred, _ = self.time_ms(model, gpu, g["batch"], g["q"], g["ctx"], phase=phase)
            rel = pred / g["time_ms"].to_numpy() - 1.0
            y = g["time_ms"].to_numpy()
            r2 = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
            rows.append(
                {
                    "gpu": gpu,
                    "model": model,
                    "phase": phase,
                    "shapes": len(g),
                    "median_abs_rel_error": float(np.median(np.abs(rel))),
                    "max_abs_rel_error": float(np.max(np.abs(rel))),
                    "r2": float(r2),
                }
            )
        return pd.DataFrame(rows)


def _fit_curve(shapes: pd.DataFrame) -> _Curve:
    """Least squares in relative error with non-negative parts: a piecewise-linear token curve
    (knots at the measured token counts) plus the KV-read and attention terms."""
    batch, q, ctx = (shapes[c].to_numpy(dtype=float) for c in ("batch", "q", "ctx"))
    y = shapes["time_ms"].to_numpy(dtype=float)
    knots = np.unique(np.log(batch * q))
    lt = np.log(batch * q)
    hat = np.zeros((len(y), knots.size))
    idx = np.clip(np.searchsorted(knots, lt, side="right") - 1, 0, knots.size - 1)
    nxt = np.minimum(idx + 1, knots.size - 1)
    span = np.where(nxt > idx, knots[nxt] - knots[idx], 1.0)
    w = np.where(nxt > idx, (lt - knots[idx]) / span, 0.0)
    hat[np.arange(len(y)), idx] += 1.0 - w
    hat[np.arange(len(y)), nxt] += w
    design = np.column_stack([hat, batch * ctx, batch * q * ctx])
    coef, _ = nnls(design / y[:, None], np.ones_like(y))
    base = np.maximum.accumulate(np.maximum(coef[: knots.size], 1e-6))
    return _Curve(knots, base, float(coef[-2]), float(coef[-1]))


def _fit_grid(dec: pd.DataFrame) -> _Grid:
    ref = float(dec["ctx"].value_counts().idxmax())  # the context most shapes were timed at
    at_ref = dec[dec["ctx"] == ref]
    pivot = at_ref.pivot_table(index="q", columns="batch", values="time_ms", aggfunc="median")
    table = pivot.to_numpy(dtype=float)
    measured = np.isfinite(table)
    batches = pivot.columns.to_numpy(dtype=float)
    for j in range(table.shape[0]):  # fill unmeasured large batches linearly in B
        ok = np.flatnonzero(measured[j])
        if ok.size == 0:
            raise DataError(f"no decode passes at ctx={ref:g} for q={pivot.index[j]}")
        last = ok[-1]
        slope = 0.0
        if ok.size > 1:
            prev = ok[-2]
            slope = (table[j, last] - table[j, prev]) / (batches[last] - batches[prev])
        for i in range(table.shape[1]):
            if not measured[j, i]:
                table[j, i] = table[j, last] + max(slope, 0.0) * (batches[i] - batches[last])
    # Context slope per q from shapes timed at several contexts, then linear in q.
    slopes, qs = [], []
    for qv, g in dec.groupby("q"):
        if g["ctx"].nunique() < 2:
            continue
        x = g["batch"] * g["ctx"]
        grp = g.groupby("batch")
        xd = x - grp["ctx"].transform("mean") * g["batch"]
        yd = g["time_ms"] - grp["time_ms"].transform("mean")
        if float(np.sum(xd**2)) > 0:
            slopes.append(float(np.sum(xd * yd) / np.sum(xd**2)))
            qs.append(float(qv))
    kv, attn = 0.0, 0.0
    if qs:  # slope(q) = c + e q with c, e >= 0
        (kv, attn), _ = nnls(np.column_stack([np.ones(len(qs)), qs]), np.array(slopes))
    return _Grid(
        np.log(batches),
        pivot.index.to_numpy(dtype=float),
        table,
        measured,
        ref,
        float(kv),
        float(attn),
    )
