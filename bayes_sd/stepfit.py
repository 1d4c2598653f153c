"""Bayesian step-level model: forward-pass time from measured step costs (model.md §4–§5).

A decode or verification pass of model ``m`` on GPU ``g`` over ``B`` sequences of ``q`` new
tokens, ``ctx`` cached tokens each, costs

    t = a · (1 + ρ · (φ(Bq) − φ(1)) / (1 − φ(1))) + b · B q + c · B · ctx
        + [q > 1] · (s + e · B q · ctx)

* ``a`` (ms) reads the weights once (plus launch overhead), ``b`` (ms per token) is the compute
  per token, ``c`` (ms per cached token) the KV-cache read of a one-token decode;
* a multi-token (verification) pass runs a different attention kernel: a premium ``s`` and an
  attention cost ``e`` per (new token × cached token) — measured: without them, q = 2 passes at
  B = 256 were under-predicted by 40% and q = 1 passes over-predicted by 30–60%;
* MoE models read more experts as more tokens are routed: ``φ(T) = 1 − (1 − m/M)^T`` is the
  expected fraction touched, and ``ρ`` the extra cost of reading them all, centred on the bytes
  ratio ``(N_total − N_active) / N_active`` with a log-scale excess per model (dense: ``ρ = 0``).

The coefficients are partially pooled across models and GPUs:

    log a = μ_a + β_a log(N_active / 1 B) + γ_a[g, dense|MoE] + δ_a[m] + ε_a[m, g]
    log b = μ_b + β_b log(N_active / 1 B) + γ_b[g, dense|MoE] + δ_b[m] + ε_b[m, g]
    log c = μ_c + β_c log(KV bytes per token / 128 KiB) + γ_c[g, dense|MoE] + δ_c[m] + ε_c[m, g]
    log s = (as a, on N_active),   log e = (as c, on attention width layers × heads × head_dim)

with the first GPU (alphabetically; H100 in the embedded data) as reference, so ``γ`` *is* the
effect of each other GPU against it, for dense and MoE models apart; ``δ`` sums to zero over
models and ``ε`` over models and GPUs (no ridges against ``μ`` and ``γ``). The likelihood is
Student-t on the log of the median time of each measured shape. Drafters measured at q = 1 only
leave their ``s`` and ``e`` to the population laws.

Use it to turn step costs and an acceptance length into a closed-loop speedup by batch size:
:meth:`StepLevelModel.closed_loop_speedup`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayes_sd import persist
from bayes_sd.errors import DataError
from bayes_sd.priors import STEP_PRIORS, make_likelihood, resolve_priors
from bayes_sd.sampling import check_sampler_config, convergence_summary, sample, warn_if_unreliable

__all__ = ["StepLevelModel", "decode_shapes"]

TERMS = ("a", "b", "c", "s", "e")
KV_REF_BYTES = 131072.0  # Llama-3.1-8B: 2 (K, V) × 32 layers × 8 KV heads × 128 × 2 bytes
ATTN_REF_WIDTH = 131072.0  # Llama-3.1-8B: 32 layers × 32 heads × 128
PARAMS = ("mu", "beta", "gpu_effect", "model_sd", "pair_sd", "moe_excess", "sigma", "nu")
# nutpie with its own mass-matrix adaptation ("diag"), measured on the 1,184 stepcost shapes
# (4 x 500): the same ESS per second as "draw_diag" (3.2 vs 3.5), half the wall time
DEFAULT_SAMPLER = {"draws": 1000, "tune": 1000, "chains": 4, "target_accept": 0.9,
                   "nuts_sampler": "nutpie", "progressbar": True}  # fmt: skip
_NEED = (
    "gpu", "model", "moe", "params_total", "params_active", "layers", "heads", "kv_heads",
    "head_dim",
    "experts", "experts_per_token", "phase", "batch", "q", "ctx", "time_ms",
)  # fmt: skip


def decode_shapes(steps: pd.DataFrame) -> pd.DataFrame:
    """Median time of each measured decode/verification shape ``(gpu, model, batch, q, ctx)``,
    with the model's covariates."""
    missing = [c for c in _NEED if c not in steps.columns]
    if missing:
        raise DataError(
            f"the step table lacks column(s) {', '.join(missing)} (read it with "
            "bayes_sd.io.read_step_costs or load_example('stepcost'))",
            field=missing[0],
        )
    dec = steps[steps["phase"] == "decode"]
    if dec.empty:
        raise DataError("the step table has no decode passes (phase == 'decode')", field="phase")
    model_cols = ["moe", "params_total", "params_active", "layers", "heads", "kv_heads",
                  "head_dim", "experts", "experts_per_token"]  # fmt: skip
    keys = ["gpu", "model", "batch", "q", "ctx"]
    shapes = dec.groupby(keys, as_index=False).agg(
        time_ms=("time_ms", "median"), replays=("time_ms", "size")
    )
    info = dec.groupby("model")[model_cols].first()
    shapes = shapes.join(info, on="model")
    bad = shapes[~(shapes["time_ms"] > 0)]
    if len(bad):
        r = bad.iloc[0]
        raise DataError(
            f"non-positive median time for {r['model']} on {r['gpu']} (B={r['batch']}, "
            f"q={r['q']}, ctx={r['ctx']})",
            field="time_ms",
        )
    return shapes.reset_index(drop=True)


def _kv_bytes(shapes: pd.DataFrame) -> np.ndarray:
    return 2.0 * shapes["layers"] * shapes["kv_heads"] * shapes["head_dim"] * 2.0


class StepLevelModel:
    """Hierarchical Bayesian model of forward-pass time (see the module docstring).

    Examples
    --------
    >>> import bayes_sd
    >>> from bayes_sd.stepfit import StepLevelModel
    >>> steps = StepLevelModel()
    >>> steps.fit(bayes_sd.load_example("stepcost"), random_seed=1)     # doctest: +SKIP
    >>> steps.closed_loop_speedup("llama-3.1-8b", "eagle3-head-8b", "H100-SXM-80GB",
    ...                           k=3, acceptance_length=2.8)            # doctest: +SKIP
    """

    def __init__(self, sampler_config: dict | None = None, priors: dict | None = None):
        self.sampler_config = check_sampler_config(sampler_config, DEFAULT_SAMPLER)
        self.priors = resolve_priors(priors, STEP_PRIORS)
        self.steps: pd.DataFrame | None = None
        self.shapes: pd.DataFrame | None = None
        self.models: list[str] = []
        self.gpus: list[str] = []
        self.idata = None
        self.diagnostics: dict[str, Any] | None = None

    # ------------------------------------------------------------------ model

    def build_model(self, steps: pd.DataFrame):
        import pymc as pm
        import pytensor.tensor as pt

        shapes = decode_shapes(steps)
        self.steps = steps
        self.shapes = shapes
        self.models = sorted(shapes["model"].unique())
        self.gpus = sorted(shapes["gpu"].unique())
        info = shapes.groupby("model").first().loc[self.models]
        moe_models = [m for m in self.models if info.loc[m, "experts"] > 1]
        m_idx = pd.Index(self.models).get_indexer(shapes["model"])
        g_idx = pd.Index(self.gpus).get_indexer(shapes["gpu"])
        is_moe = (info["experts"] > 1).to_numpy()
        size = np.log(info["params_active"].to_numpy(float) / 1e9)
        kv = np.log(_kv_bytes(info).to_numpy(float) / KV_REF_BYTES)
        width = np.log(
            (info["layers"] * info["heads"] * info["head_dim"]).to_numpy(float) / ATTN_REF_WIDTH
        )
        covariate = np.stack([size, size, kv, size, width], axis=1)  # (model, term)
        coords = {
            "term": list(TERMS),
            "model": self.models,
            "gpu": self.gpus,
            "other_gpu": self.gpus[1:] or ["none"],
            "kind": ["dense", "moe"],
            "moe_model": moe_models or ["none"],
            "shape": np.arange(len(shapes)),
        }
        batch = shapes["batch"].to_numpy(float)
        q = shapes["q"].to_numpy(float)
        ctx = shapes["ctx"].to_numpy(float)
        tokens = batch * q
        with pm.Model(coords=coords) as model:
            # priors at 1 B active parameters on the reference GPU (ms): a ~ 2 ms (weights and
            # launches), b ~ 5 µs per token, c ~ 40 ns per cached token of 128 KiB, a
            # multi-token premium s ~ 0.5 ms, e ~ 10 ns per (new × cached token) at 8B's width
            nt = len(TERMS)
            prior = lambda name: self.priors[name].create_variable(name)  # noqa: E731
            mu = prior("mu")
            beta = prior("beta")
            if len(self.gpus) > 1:
                gpu_eff = prior("gpu_effect")
                gpu_full = pt.concatenate([pt.zeros((1, 2, nt)), gpu_eff], axis=0)
            else:
                gpu_full = pt.zeros((1, 2, nt))
            model_sd = prior("model_sd")
            z_model = pm.ZeroSumNormal("model_z", sigma=1.0, dims=("term", "model"))
            delta = (model_sd[:, None] * z_model).T  # (model, term)
            pair_sd = prior("pair_sd")
            eps = pm.ZeroSumNormal(
                "pair_shift", sigma=pair_sd, dims=("term", "model", "gpu"), n_zerosum_axes=2
            ).dimshuffle(1, 2, 0)  # (model, gpu, term)
            log_coef = (
                mu[None, None, :]
                + beta[None, None, :] * covariate[:, None, :]
                + gpu_full[:, is_moe.astype(int), :].dimshuffle(1, 0, 2)
                + delta[:, None, :]
                + eps
            )  # (model, gpu, term)
            coef = pm.Deterministic("coef_ms", pt.exp(log_coef), dims=("model", "gpu", "term"))
            a, b, c, s_, e = (coef[m_idx, g_idx, j] for j in range(nt))
            if moe_models:
                excess = prior("moe_excess")
                ratio = (info["params_total"] - info["params_active"]) / info["params_active"]
                rho_full = pt.zeros(len(self.models))
                where = pd.Index(self.models).get_indexer(moe_models)
                rho_full = pt.set_subtensor(
                    rho_full[where], np.log(ratio.loc[moe_models].to_numpy(float)) + excess
                )
                rho = pt.where(is_moe[m_idx], pt.exp(rho_full[m_idx]), 0.0)
                share = (shapes["experts_per_token"] / shapes["experts"]).to_numpy(float)
                phi = 1.0 - (1.0 - share) ** tokens
                phi1 = share
                grow = np.where(share < 1, (phi - phi1) / np.maximum(1.0 - phi1, 1e-12), 0.0)
                a = a * (1.0 + rho * grow)
            multi = (q > 1).astype(float)
            mean = a + b * tokens + c * batch * ctx + multi * (s_ + e * tokens * ctx)
            make_likelihood(
                self.priors["likelihood"],
                "log_time",
                mu=pt.log(mean),
                sigma=prior("sigma"),
                observed=np.log(shapes["time_ms"].to_numpy(float)),
                dims="shape",
                nu=lambda: prior("nu"),
            )
        self.model = model
        return model

    def fit(self, steps: pd.DataFrame, random_seed: int | None = None, **sampler_kwargs):
        """Sample the posterior (nutpie); returns the ``xarray.DataTree``. Diagnostics in
        ``.diagnostics``; a :class:`bayes_sd.ConvergenceWarning` when they are bad."""
        cfg = check_sampler_config({**self.sampler_config, **sampler_kwargs}, DEFAULT_SAMPLER)
        model = self.build_model(steps)
        self.idata = sample(model, cfg, random_seed=random_seed)
        self.diagnostics = convergence_summary(self.idata, PARAMS)
        self.diagnostics["shapes"] = len(self.shapes)
        warn_if_unreliable(self.diagnostics, stacklevel=3)
        return self.idata

    # ------------------------------------------------------------------ persistence

    @property
    def config(self) -> dict[str, Any]:
        return {"priors": {k: persist.prior_spec(v) for k, v in sorted(self.priors.items())}}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the posterior, priors, diagnostics and the step table (NetCDF, atomic);
        ``StepLevelModel.load(path)`` gives identical predictions."""
        if self.idata is None or self.steps is None:
            raise RuntimeError("fit the step-level model before saving it")
        attrs = {
            "model_config": self.config,
            "config_hash": persist.config_hash(self.config),
            "structure": persist.structure_hash(self.model, self.config),
            "sampler_config": self.sampler_config,
            "diagnostics": self.diagnostics or {},
        }
        return persist.save_tree(path, self.idata, kind="StepLevelModel",
                                 tables={"steps": self.steps}, attrs=attrs)  # fmt: skip

    @classmethod
    def load(cls, path: str | os.PathLike) -> StepLevelModel:
        """Load a model written by :meth:`save`; another structure is a DataError."""
        file = str(path)
        tree, attrs, tables = persist.load_tree(
            path, kind="StepLevelModel", tables={"steps": None},
            json_keys=("model_config", "sampler_config", "diagnostics"),
        )  # fmt: skip
        persist.require(attrs, ("model_config", "structure", "sampler_config"), file)
        if "steps" not in tables:
            raise DataError("damaged model file: no step table", file=file,
                            field="bayes_sd_steps")  # fmt: skip
        try:
            config = attrs["model_config"]
            model = cls(sampler_config=attrs["sampler_config"], priors=config.get("priors"))
        except (ValueError, TypeError, AttributeError) as err:
            raise DataError(f"damaged configuration: {err}", file=file,
                            field="bayes_sd_model_config") from err  # fmt: skip
        model.build_model(tables["steps"])
        if persist.structure_hash(model.model, model.config) != attrs["structure"]:
            raise DataError("the file was written by a step model of a different structure",
                            file=file, field="bayes_sd_structure")  # fmt: skip
        model.idata = tree
        model.diagnostics = attrs.get("diagnostics") or {}
        return model

    # ------------------------------------------------------------------ prediction

    def _draws(self, max_draws: int) -> dict[str, np.ndarray]:
        if self.idata is None:
            raise RuntimeError("fit the step-level model before predicting")
        post = self.idata["posterior"].dataset
        n = post.sizes["chain"] * post.sizes["draw"]
        stride = max(1, int(np.ceil(n / max_draws)))
        post = post.isel(draw=slice(None, None, stride))
        flat = lambda v: post[v].values.reshape(-1, *post[v].shape[2:])  # noqa: E731
        out = {"coef": flat("coef_ms"), "sigma": flat("sigma"), "nu": flat("nu")}
        if "moe_excess" in post:
            out["moe_excess"] = flat("moe_excess")
        return out

    def step_time_ms(
        self,
        model: str,
        gpu: str,
        batch,
        q,
        ctx,
        *,
        max_draws: int = 1000,
        noise: bool = False,
        random_seed: int | None = None,
    ):
        """Posterior draws ``(draw, point)`` of the mean time (ms) of a pass of a fitted
        ``model`` on a fitted ``gpu`` at the given batch sizes, new tokens and contexts.

        ``noise=True`` multiplies each draw by the fitted Student-t scatter on log time: the
        predictive of one measured shape, which carries what the laws do not explain."""
        if model not in self.models:
            raise ValueError(f"unknown model {model!r}; fitted: {', '.join(self.models)}")
        if gpu not in self.gpus:
            raise ValueError(f"unknown GPU {gpu!r}; fitted: {', '.join(self.gpus)}")
        batch, q, ctx = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (batch, q, ctx))
        batch, q, ctx = np.broadcast_arrays(batch, q, ctx)
        d = self._draws(max_draws)
        m, g = self.models.index(model), self.gpus.index(gpu)
        a, b, c, s, e = (d["coef"][:, m, g, j][:, None] for j in range(len(TERMS)))
        info = self.shapes[self.shapes["model"] == model].iloc[0]
        tokens = batch * q
        if info["experts"] > 1:
            share = info["experts_per_token"] / info["experts"]
            ratio = (info["params_total"] - info["params_active"]) / info["params_active"]
            moe_models = list(self.idata["posterior"].dataset["moe_model"].values)
            rho = ratio * np.exp(d["moe_excess"][:, moe_models.index(model)])[:, None]
            grow = ((1 - (1 - share) ** tokens) - share) / (1 - share)
            a = a * (1 + rho * grow[None, :])
        multi = (q > 1).astype(float)[None, :]
        mean = (
            a + b * tokens[None, :] + c * (batch * ctx)[None, :]
            + multi * (s + e * (tokens * ctx)[None, :])
        )  # fmt: skip
        if not noise:
            return mean
        rng = np.random.default_rng(random_seed)
        t = rng.standard_t(d["nu"][:, None], size=mean.shape)
        return mean * np.exp(d["sigma"][:, None] * t)

    def fit_quality(self) -> pd.DataFrame:
        """Per model and GPU: R² of time and of log time with the posterior median prediction,
        median and max absolute relative error, and the number of shapes."""
        rows = []
        for (model, gpu), g in self.shapes.groupby(["model", "gpu"], sort=True):
            pred = np.median(
                self.step_time_ms(model, gpu, g["batch"], g["q"], g["ctx"], max_draws=400), axis=0
            )
            y = g["time_ms"].to_numpy(float)
            rel = np.abs(pred / y - 1)
            rows.append(
                {
                    "model": model,
                    "gpu": gpu,
                    "moe": bool(g["experts"].iloc[0] > 1),
                    "shapes": len(g),
                    "r2": _r2(y, pred),
                    "r2_log": _r2(np.log(y), np.log(pred)),
                    "median_rel_error": float(np.median(rel)),
                    "max_rel_error": float(np.max(rel)),
                }
            )
        return pd.DataFrame(rows)

    def gpu_effects(self, interval: float = 0.9) -> pd.DataFrame:
        """Ratio of each coefficient on each other GPU to the reference GPU, dense and MoE:
        posterior median and interval of ``exp(γ)``."""
        post = self.idata["posterior"].dataset
        if "gpu_effect" not in post:
            raise ValueError("one GPU only: no GPU effect was fitted")
        lo, hi = (1 - interval) / 2, 1 - (1 - interval) / 2
        rows = []
        ratio = np.exp(post["gpu_effect"].stack(s=["chain", "draw"]))
        for gpu in ratio["other_gpu"].values:
            for kind in ("dense", "moe"):
                for term in TERMS:
                    v = ratio.sel(other_gpu=gpu, kind=kind, term=term).values
                    rows.append(
                        {
                            "gpu": gpu,
                            "against": self.gpus[0],
                            "kind": kind,
                            "term": term,
                            "ratio_median": float(np.median(v)),
                            "ratio_lo": float(np.quantile(v, lo)),
                            "ratio_hi": float(np.quantile(v, hi)),
                        }
                    )
        return pd.DataFrame(rows)

    def closed_loop_speedup(
        self,
        target: str,
        drafter: str,
        gpu: str,
        *,
        k: int,
        acceptance_length: float,
        batches=(1, 2, 4, 8, 16, 32, 64, 128),
        ctx: float = 1024.0,
        interval: float = 0.9,
        max_draws: int = 1000,
        noise: bool = False,
        random_seed: int | None = 0,
    ) -> pd.DataFrame:
        """Speedup of SD at a fixed batch size (closed loop: B sequences decoding together).

        Per generated token, without SD one target pass ``t_T(B, 1, ctx)``; with SD ``k``
        drafting passes ``t_D(B, 1, ctx)`` and one verification pass ``t_T(B, k + 1, ctx)``,
        which yield ``acceptance_length`` tokens on average (``E = (1 − α^(k+1)) / (1 − α)``
        for a per-token acceptance rate ``α``). Speedup = ``t_T(B,1) / ((k t_D + t_V) / E)``,
        per posterior draw; rejection sampling and scheduling overheads are not included.
        ``noise=True`` gives each of the three passes the fitted scatter of a measured shape
        (wider intervals that carry the step model's misfit).
        """
        if k < 1:
            raise ValueError("k must be a positive draft length")
        if not 1.0 <= acceptance_length <= k + 1:
            raise ValueError(f"acceptance_length must lie in [1, k + 1] = [1, {k + 1}]")
        b = np.asarray(batches, dtype=float)
        rng = np.random.default_rng(random_seed)
        kw = {"max_draws": max_draws, "noise": noise}
        base = self.step_time_ms(target, gpu, b, 1, ctx, random_seed=rng, **kw)
        draft = self.step_time_ms(drafter, gpu, b, 1, ctx, random_seed=rng, **kw)
        verify = self.step_time_ms(target, gpu, b, k + 1, ctx, random_seed=rng, **kw)
        spd = base / ((k * draft + verify) / acceptance_length)
        lo, hi = (1 - interval) / 2, 1 - (1 - interval) / 2
        return pd.DataFrame(
            {
                "batch": b.astype(int),
                "k": k,
                "acceptance_length": acceptance_length,
                "speedup_median": np.median(spd, axis=0),
                "speedup_lo": np.quantile(spd, lo, axis=0),
                "speedup_hi": np.quantile(spd, hi, axis=0),
                "p_speedup_gt_1": np.mean(spd > 1, axis=0),
            }
        )


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1 - np.sum((y - pred) ** 2) / np.sum((y - np.mean(y)) ** 2))
