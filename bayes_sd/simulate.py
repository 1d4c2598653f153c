"""A discrete-event simulator of a continuous-batching LLM server running speculative decoding.

The engine follows vLLM's loop at iteration level:

* requests arrive (open loop: Poisson or constant arrivals at a rate; closed loop: ``N`` clients
  that send a new request as soon as one completes) and wait in a FIFO queue;
* at each step boundary waiting requests are admitted while the batch has room (``max_batch``)
  and the KV cache can hold their prompt and output (``kv_capacity`` tokens, reserved at
  admission, so there is no preemption); admitted prompts are prefilled together in one pass,
  which produces their first token and stalls the running batch (no chunked prefill);
* every running request then advances one draft–verify cycle per step: ``k`` drafter passes of
  one token and one target pass of ``k + 1`` tokens over the whole batch, on contexts that grow
  as tokens are committed; each request accepts a prefix of its drafts (i.i.d. ``α`` or
  per-position conditional probabilities) plus the bonus token.

Pass times come from :class:`~bayes_sd.stepmodel.StepCostModel` (measured H100/H200 step costs),
so MoE targets are priced by their measured cost, which already grows with routed tokens.
Between events (an arrival that can be admitted, a completion) the batch is constant, so the
engine advances many cycles at once in closed form — the cost of a pass is linear in the summed
context — which keeps a run of a few hundred requests to tens of milliseconds.

Results: per-request latency, TTFT and TPOT; a run summary; ``vllm bench serve`` result JSON with
the SD counters (:meth:`SimResult.to_vllm_json`) and the canonical row read back through the real
reader (:meth:`SimResult.to_row`). Runs are seeded and deterministic. Everything it produces is
**simulated**.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayes_sd.acceptance import tokens_per_cycle_positional
from bayes_sd.schema import atomic_write
from bayes_sd.stepmodel import StepCostModel

__all__ = [
    "SimConfig",
    "SimResult",
    "kv_capacity_tokens",
    "measured_capacity",
    "saturation_estimate",
    "simulate",
]


@dataclass(frozen=True)
class SimConfig:
    """One served system and workload.

    ``prompt_len`` / ``output_len``: a fixed token count, or ``("uniform", low, high)`` /
    ``("lognormal", mean, sigma)`` to draw per request. ``acceptance``: conditional per-position
    acceptance probabilities (length ``k``), used instead of ``alpha`` when given.
    """

    target: str
    gpu: str
    k: int = 0
    drafter: str | None = None
    alpha: float | None = None
    acceptance: tuple[float, ...] | None = None
    prompt_len: int | tuple = 1024
    output_len: int | tuple = 256
    max_batch: int = 256
    kv_capacity: int | None = None  # tokens; None: from GPU memory and the model's shape
    method: str | None = None

    def __post_init__(self) -> None:
        if self.k < 0:
            raise ValueError("k must be >= 0")
        if self.k > 0:
            if self.drafter is None:
                raise ValueError("SD (k > 0) needs a drafter")
            if self.acceptance is None and self.alpha is None:
                raise ValueError("SD needs alpha or per-position acceptance")
            if self.acceptance is not None and len(self.acceptance) != self.k:
                raise ValueError("acceptance needs one probability per draft position")
            probs = self.acceptance if self.acceptance is not None else (self.alpha,)
            if any(not 0 <= p <= 1 for p in probs):
                raise ValueError("acceptance probabilities must lie in [0, 1]")
        if self.max_batch < 1:
            raise ValueError("max_batch must be >= 1")


@dataclass
class SimResult:
    config: SimConfig
    load_mode: str
    rate: float | None
    concurrency: int | None
    arrivals: str
    seed: int
    requests: pd.DataFrame  # per request: arrival_s, prompt, output, ttft_s, latency_s, tpot_s
    duration_s: float
    counters: dict[str, Any]
    engine_steps: int
    extrapolated: bool
    mean_in_system: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def latency_mean_s(self) -> float:
        return float(self.requests["latency_s"].mean())

    def summary(self) -> dict[str, float]:
        """The run in numbers: latency, TTFT and TPOT statistics (s), throughput, acceptance."""
        r = self.requests
        lat = r["latency_s"].to_numpy()
        out = {
            "requests": float(len(r)),
            "latency_mean_s": float(lat.mean()),
            "latency_p50_s": float(np.percentile(lat, 50)),
            "latency_p90_s": float(np.percentile(lat, 90)),
            "latency_p99_s": float(np.percentile(lat, 99)),
            "ttft_mean_s": float(r["ttft_s"].mean()),
            "tpot_mean_s": float(r["tpot_s"].mean()),
            "queue_mean_s": float(r["queue_s"].mean()),
            "throughput_rps": len(r) / self.duration_s,
            "mean_in_system": self.mean_in_system,
            "engine_steps": float(self.engine_steps),
        }
        if self.config.k:
            out["acceptance_length"] = 1.0 + self.counters["accepted_tokens"] / max(
                self.counters["num_drafts"], 1
            )
        return out

    def to_vllm_json(self) -> dict[str, Any]:
        """The run as a ``vllm bench serve --save-result`` object (simulated values)."""
        r = self.requests
        n = len(r)
        tpot = r["tpot_s"].dropna()

        def stats(values, name):
            v = np.asarray(values, dtype=float) * 1e3
            return {f"mean_{name}_ms": float(v.mean()), f"median_{name}_ms": float(np.median(v)),
                    f"std_{name}_ms": float(v.std()), f"p90_{name}_ms": float(np.percentile(v, 90)),
                    f"p99_{name}_ms": float(np.percentile(v, 99))}  # fmt: skip

        cfg = self.config
        obj: dict[str, Any] = {
            "date": "simulated",
            "endpoint_type": "bayes_sd.simulate",
            "backend": "bayes_sd.simulate",
            "label": "simulated",
            "model_id": cfg.target,
            "tokenizer_id": cfg.target,
            "num_prompts": n,
            "gpu": cfg.gpu,
            "tp": "1",
            "num_spec_tokens": str(cfg.k),
            "spec_method": (cfg.method or "draft_model") if cfg.k else "none",
            **({"draft_model": cfg.drafter} if cfg.k else {}),
            # no "alpha": vLLM records what was accepted (the spec_decode_* counters below), not
            # the simulator's acceptance parameter; with it, the reader would impose α and the
            # fit would skip the acceptance law that real results go through
            "request_rate": self.rate if self.load_mode == "rate" else "inf",
            "burstiness": 1.0,
            "max_concurrency": self.concurrency,
            "duration": self.duration_s,
            "completed": n,
            "failed": 0,
            "total_input_tokens": int(r["prompt"].sum()),
            "total_output_tokens": int(r["output"].sum()),
            "request_throughput": n / self.duration_s,
            "request_goodput": None,
            "output_throughput": float(r["output"].sum()) / self.duration_s,
            "total_token_throughput": float(r["prompt"].sum() + r["output"].sum())
            / self.duration_s,
            "latencies": r["latency_s"].round(9).tolist(),
            "start_times": r["arrival_s"].round(9).tolist(),
            "max_concurrent_requests": int(self.counters["max_batch_seen"]),
            **stats(r["ttft_s"], "ttft"),
            **(stats(tpot, "tpot") if len(tpot) else {}),
            **stats(r["latency_s"], "e2el"),
        }
        if cfg.k:
            drafts = self.counters["num_drafts"]
            accepted = self.counters["accepted_tokens"]
            obj.update(
                spec_decode_acceptance_rate=100.0 * accepted / max(drafts * cfg.k, 1),
                spec_decode_acceptance_length=1.0 + accepted / max(drafts, 1),
                spec_decode_num_drafts=drafts,
                spec_decode_draft_tokens=drafts * cfg.k,
                spec_decode_accepted_tokens=accepted,
                spec_decode_per_position_acceptance_rates=[
                    c / max(drafts, 1) for c in self.counters["accepted_per_position"]
                ],
            )
        else:
            obj.update(spec_decode_num_drafts=0, spec_decode_draft_tokens=0,
                       spec_decode_accepted_tokens=0)  # fmt: skip
        return obj

    def write_vllm_json(self, path: str | Path) -> Path:
        text = json.dumps(self.to_vllm_json())
        return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))

    def to_row(self, name: str = "simulated.json", **metadata) -> dict:
        """The canonical sweep row, produced by the real vLLM reader from :meth:`to_vllm_json`."""
        from bayes_sd.io import sweep_from_results

        meta = {"num_gpus": 1, **self.meta, **metadata}
        return sweep_from_results([(name, self.to_vllm_json())], **meta).iloc[0].to_dict()


# --------------------------------------------------------------------------------------------


def _gpu_memory_gb(gpu: str) -> float:
    match = re.search(r"(\d+)\s*GB", gpu, flags=re.IGNORECASE)
    return float(match.group(1)) if match else 80.0


def kv_capacity_tokens(steps: StepCostModel, target: str, gpu: str, drafter: str | None = None,
                       utilisation: float = 0.9) -> int:  # fmt: skip
    """KV-cache tokens that fit: GPU memory × utilisation − bf16 weights, over KV bytes/token."""
    info = steps.models[target]
    weights = 2.0 * info["params"] + (2.0 * steps.models[drafter]["params"] if drafter else 0.0)
    per_token = 2 * 2 * info.get("layers", 32) * info.get("kv_heads", 8) * info.get("head_dim", 128)
    if drafter:
        d = steps.models[drafter]
        per_token += 2 * 2 * d.get("layers", 1) * d.get("kv_heads", 8) * d.get("head_dim", 64)
    free = _gpu_memory_gb(gpu) * 1e9 * utilisation - weights
    return max(int(free / per_token), 1)


def _lengths(spec, n: int, rng: np.random.Generator) -> np.ndarray:
    if isinstance(spec, int | np.integer):
        return np.full(n, int(spec))
    kind, a, b = spec
    if kind == "uniform":
        return rng.integers(int(a), int(b) + 1, size=n)
    if kind == "lognormal":
        mu = math.log(a) - 0.5 * b**2
        return np.maximum(np.rint(rng.lognormal(mu, b, size=n)), 1).astype(int)
    raise ValueError(f"unknown length distribution {kind!r}")


def _accepted(cfg: SimConfig, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Accepted draft tokens per (request, cycle): the length of the accepted prefix."""
    if cfg.k == 0:
        return np.zeros(shape, dtype=np.int16)
    probs = np.asarray(cfg.acceptance if cfg.acceptance is not None else [cfg.alpha] * cfg.k)
    u = rng.random((*shape, cfg.k))
    ok = u < probs
    return np.cumprod(ok, axis=-1).sum(axis=-1).astype(np.int16)


def saturation_estimate(cfg: SimConfig, steps: StepCostModel) -> float:
    """Rough sustainable rate (req/s) with a full batch: for choosing sweep rates."""
    p = _lengths(cfg.prompt_len, 1, np.random.default_rng(0))[0]
    d = _lengths(cfg.output_len, 1, np.random.default_rng(0))[0]
    cap = cfg.kv_capacity or kv_capacity_tokens(steps, cfg.target, cfg.gpu, cfg.drafter)
    batch = max(min(cfg.max_batch, cap // (p + d)), 1)
    tokens = 1.0
    if cfg.k:
        probs = cfg.acceptance if cfg.acceptance is not None else [cfg.alpha] * cfg.k
        tokens = float(tokens_per_cycle_positional(probs))
    ctx = p + d / 2
    cycle, _ = steps.time_ms(cfg.target, cfg.gpu, batch, cfg.k + 1, ctx)
    if cfg.k:
        draft, _ = steps.time_ms(cfg.drafter, cfg.gpu, batch, 1, ctx)
        cycle = cycle + cfg.k * draft
    prefill, _ = steps.time_ms(cfg.target, cfg.gpu, 1, p, 0, phase="prefill")
    per_request_ms = (d - 1) / tokens * float(cycle) / batch + float(prefill)
    return 1e3 / per_request_ms


def measured_capacity(cfg: SimConfig, steps: StepCostModel, *, seed: int = 0) -> float:
    """Sustainable request rate of the simulated server (req/s): the steady-state throughput of
    a closed-loop run with the batch kept full (middle half of the run, away from start-up and
    drain). More faithful than :func:`saturation_estimate`, at the cost of one simulation."""
    p = int(np.max(_lengths(cfg.prompt_len, 64, np.random.default_rng(seed))))
    d = int(np.max(_lengths(cfg.output_len, 64, np.random.default_rng(seed))))
    cap = cfg.kv_capacity or kv_capacity_tokens(steps, cfg.target, cfg.gpu, cfg.drafter)
    full = max(min(cfg.max_batch, cap // (p + d)), 1)
    run = simulate(cfg, steps, concurrency=full, n_requests=max(4 * full, 200), seed=seed)
    finish = np.sort(run.requests["finish_s"].to_numpy())
    lo, hi = np.quantile(finish, [0.25, 0.75])
    done = np.count_nonzero((finish > lo) & (finish <= hi))
    return float(done / (hi - lo)) if hi > lo else float(len(finish) / run.duration_s)


def simulate(
    cfg: SimConfig,
    steps: StepCostModel,
    *,
    rate: float | None = None,
    concurrency: int | None = None,
    n_requests: int = 400,
    arrivals: str = "poisson",
    seed: int = 0,
    meta: dict[str, Any] | None = None,
    max_cycles_per_event: int = 512,
) -> SimResult:
    """Simulate one benchmark run: open loop at ``rate`` or closed loop at ``concurrency``.

    ``max_cycles_per_event`` bounds how many decode cycles are advanced at once between events;
    1 steps cycle by cycle (the slow reference the benchmark compares against; same results).
    """
    if (rate is None) == (concurrency is None):
        raise ValueError("give exactly one of rate (open loop) or concurrency (closed loop)")
    if rate is not None and not rate > 0:
        raise ValueError("rate must be > 0")
    if concurrency is not None and concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    if arrivals not in ("poisson", "constant"):
        raise ValueError("arrivals must be 'poisson' or 'constant'")
    if n_requests < 1:
        raise ValueError("n_requests must be >= 1")
    rng = np.random.default_rng(seed)
    n, k = n_requests, cfg.k
    prompt = _lengths(cfg.prompt_len, n, rng)
    output = np.maximum(_lengths(cfg.output_len, n, rng), 1)
    cap = cfg.kv_capacity or kv_capacity_tokens(steps, cfg.target, cfg.gpu, cfg.drafter)
    if int((prompt + output).max()) > cap:
        raise ValueError(f"a request needs more KV tokens than the capacity ({cap})")

    # Tokens committed per cycle, drawn up front: cycles needed ≤ output − 1.
    max_cycles = int(output.max())
    acc = _accepted(cfg, (n, max_cycles), rng)
    cum = np.cumsum(acc.astype(np.int32) + 1, axis=1)  # tokens after j+1 cycles
    need = output - 1  # the first token comes from prefill
    cycles_needed = np.where(need > 0, np.argmax(cum >= need[:, None], axis=1) + 1, 0)

    if rate is not None:
        gaps = rng.exponential(1.0 / rate, n) if arrivals == "poisson" else np.full(n, 1.0 / rate)
        arrival = np.cumsum(gaps) - gaps[0]  # first request at t = 0
    else:
        arrival = np.full(n, np.inf)
        arrival[: min(concurrency, n)] = 0.0

    # Per-batch-size pass costs at the reference context, linear in the summed context.
    sizes = np.arange(cfg.max_batch + 1, dtype=float)
    sizes[0] = 1.0
    v_ref, v_slope, v_ctx = steps.decode_linear(cfg.target, cfg.gpu, sizes, k + 1)
    if k:
        d_ref, d_slope, d_ctx = steps.decode_linear(cfg.drafter, cfg.gpu, sizes, 1)
    _, ext_v = steps.time_ms(cfg.target, cfg.gpu, sizes, k + 1, v_ctx)
    extrapolated = False

    admitted = np.full(n, np.nan)
    first = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    done_cycles = np.zeros(n, dtype=np.int64)
    running = np.zeros(0, dtype=np.int64)
    next_idx = 0  # next request to arrive (arrival order = index order)
    waiting: list[int] = []
    t = 0.0
    kv_used = 0
    engine_steps = 0
    area = 0.0  # ∫ requests in system dt
    in_system = 0
    completed = 0
    max_batch_seen = 0
    drafts = 0
    accepted_total = 0
    per_pos = np.zeros(max(k, 1), dtype=np.int64)

    def advance(to: float) -> None:
        nonlocal t, area
        area += in_system * (to - t)
        t = to

    while completed < n:
        while next_idx < n and arrival[next_idx] <= t:  # arrivals join the queue
            waiting.append(next_idx)
            next_idx += 1
            in_system += 1
        # admit
        new = []
        while waiting and len(running) + len(new) < cfg.max_batch:
            i = waiting[0]
            if kv_used + prompt[i] + output[i] > cap:
                break
            waiting.pop(0)
            new.append(i)
            kv_used += int(prompt[i] + output[i])
        if new:
            new_arr = np.array(new)
            admitted[new_arr] = t
            mean_p = float(prompt[new_arr].mean())
            ms, ext = steps.time_ms(cfg.target, cfg.gpu, len(new), mean_p, 0.0, phase="prefill")
            if k:
                dms, dext = steps.time_ms(cfg.drafter, cfg.gpu, len(new), mean_p, 0.0,
                                          phase="prefill")  # fmt: skip
                ms, ext = ms + dms, ext | dext
            extrapolated |= bool(ext)
            advance(t + float(ms) / 1e3)
            engine_steps += 1
            first[new_arr] = t
            single = new_arr[cycles_needed[new_arr] == 0]  # one-token outputs end at prefill
            finish[single] = t
            completed += len(single)
            in_system -= len(single)
            kv_used -= int((prompt[single] + output[single]).sum())
            running = np.concatenate([running, new_arr[cycles_needed[new_arr] > 0]])
            max_batch_seen = max(max_batch_seen, len(running))
            continue  # new arrivals may have come during the prefill
        if len(running) == 0:
            if next_idx >= n or not np.isfinite(arrival[next_idx]):
                break
            advance(max(t, float(arrival[next_idx])))
            continue
        # decode: advance m cycles with this batch
        b = len(running)
        remaining = cycles_needed[running] - done_cycles[running]
        m = int(min(remaining.min(), max_cycles_per_event))
        room = b < cfg.max_batch and (waiting or next_idx < n)
        cols = done_cycles[running][:, None] + np.arange(m)[None, :]  # cycle index per request
        prev = np.where(cols > 0, cum[running[:, None], np.maximum(cols - 1, 0)], 0)
        ctx_sum = (prompt[running] + 1)[:, None] + prev  # context at the start of each cycle
        ctx_sum = ctx_sum.sum(axis=0).astype(float)
        cycle_ms = v_ref[b] + v_slope[b] * (ctx_sum - b * v_ctx)
        if k:
            # k drafter passes; the context grows by one draft token per pass (≈ +k/2 on average)
            cycle_ms = cycle_ms + k * (d_ref[b] + d_slope[b] * (ctx_sum + b * k / 2 - b * d_ctx))
        ends = t + np.cumsum(cycle_ms) / 1e3
        if room and next_idx < n and arrival[next_idx] < ends[-1]:
            m = int(np.searchsorted(ends, arrival[next_idx], side="left")) + 1
            m = min(m, len(ends))
        extrapolated |= bool(ext_v[b])
        engine_steps += m
        if k:
            block = acc[running[:, None], cols[:, :m]]
            drafts += b * m
            accepted_total += int(block.sum())
            per_pos += np.bincount(block.ravel(), minlength=k + 1)[::-1].cumsum()[::-1][1:]
        advance(float(ends[m - 1]))
        done_cycles[running] += m
        finished = running[done_cycles[running] >= cycles_needed[running]]
        if finished.size:
            finish[finished] = t
            completed += finished.size
            in_system -= finished.size
            kv_used -= int((prompt[finished] + output[finished]).sum())
            running = running[done_cycles[running] < cycles_needed[running]]
            if concurrency is not None:  # closed loop: each client sends its next request
                start = int(np.sum(np.isfinite(arrival)))  # requests issued so far
                for j in range(start, min(start + finished.size, n)):
                    arrival[j] = t

    latency = finish - arrival
    ttft = first - arrival
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(output > 1, (finish - first) / (output - 1), np.nan)
    requests = pd.DataFrame({"arrival_s": arrival, "prompt": prompt, "output": output,
                             "ttft_s": ttft, "latency_s": latency, "tpot_s": tpot,
                             "queue_s": admitted - arrival, "finish_s": finish})  # fmt: skip
    duration = float(np.nanmax(finish) - arrival[0])
    counters = {"num_drafts": int(drafts), "accepted_tokens": int(accepted_total),
                "accepted_per_position": per_pos[:k].tolist() if k else [],
                "max_batch_seen": int(max_batch_seen)}  # fmt: skip
    meta_all = {"source": "simulated", **(meta or {})}
    if cfg.k:
        meta_all.setdefault("method", cfg.method or "draft_model")
    return SimResult(cfg, "rate" if rate is not None else "concurrency", rate, concurrency,
                     arrivals if rate is not None else "closed", seed, requests, duration,
                     counters, engine_steps, extrapolated, area / max(t - arrival[0], 1e-12),
                     meta_all)  # fmt: skip
