"""Simulation-based calibration (SBC) of the latency model (Talts et al. 2018).

For each replication: draw the parameters from the prior, draw the measured log latencies of a
fixed design from the model's own likelihood, fit the model to them with NUTS and record the
rank of the true value among (thinned) posterior draws. If the sampler and the model code are
right, every parameter's ranks are uniform; a U shape means intervals that are too narrow, a
hump too wide, a slope a biased posterior.

The model is compiled once (nutpie) and refitted to each simulated data set with
``with_data``, so a replication costs one sampling run, not a compile.

Run it with ``validation/sbc.py`` (100+ replications, rank histograms, uniformity tests);
``docs/validation.md`` has the results.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from bayes_sd.model import POPULATION_PARAMS, LatencyModel
from bayes_sd.sampling import compile_nutpie, convergence_summary, sample_compiled

__all__ = ["SBCResult", "rank_of_truth", "simulation_based_calibration", "uniformity"]


def rank_of_truth(draws: np.ndarray, truth: float | np.ndarray) -> np.ndarray:
    """Number of posterior draws below the truth (ties split at random would be exact; draws are
    continuous so ties do not occur). ``draws`` is ``(n_draws, ...)``; the rank runs from 0 to
    ``n_draws``."""
    draws = np.asarray(draws, dtype=float)
    return (draws < np.asarray(truth, dtype=float)[None, ...]).sum(axis=0)


def uniformity(ranks: np.ndarray, n_draws: int, bins: int = 10) -> tuple[np.ndarray, float]:
    """Histogram of ranks in ``bins`` equal bins of ``0..n_draws`` and the chi-square p-value of
    uniformity. ``n_draws + 1`` must be divisible by ``bins`` for exactly equal bins."""
    ranks = np.asarray(ranks)
    if (n_draws + 1) % bins:
        raise ValueError(f"n_draws + 1 = {n_draws + 1} is not divisible by bins = {bins}")
    counts = np.bincount(ranks * bins // (n_draws + 1), minlength=bins)
    return counts, float(stats.chisquare(counts).pvalue)


@dataclass
class SBCResult:
    """Ranks of the truth per replication and parameter element, with fit diagnostics."""

    ranks: pd.DataFrame  # rows: replications; columns: parameter elements ("intercept[c1v]")
    n_draws: int  # thinned posterior draws per fit: ranks run 0..n_draws
    diagnostics: pd.DataFrame  # per replication: divergences, max R-hat, min ESS, seconds
    truth: pd.DataFrame  # the prior draws the data were simulated from
    extra: dict = field(default_factory=dict)

    def summary(self, bins: int = 10) -> pd.DataFrame:
        """Per parameter element: chi-square p-value of uniform ranks, mean normalised rank
        (0.5 if unbiased), and the share of ranks in the outer 10% (0.1 if intervals are right;
        more means the posterior is too narrow)."""
        rows = []
        for name in self.ranks.columns:
            r = self.ranks[name].to_numpy()
            counts, p = uniformity(r, self.n_draws, bins)
            u = r / self.n_draws
            rows.append(
                {
                    "parameter": name,
                    "p_uniform": p,
                    "mean_rank": float(u.mean()),
                    "outer_10pct": float(np.mean((u < 0.05) | (u > 0.95))),
                    "counts": counts.tolist(),
                }
            )
        return pd.DataFrame(rows).set_index("parameter")


def _elements(ds, names) -> dict[str, np.ndarray]:
    """Flatten the population parameters of a posterior/prior Dataset into named scalar series
    over ``(sample)``: ``intercept[c1v]``, ``sigma[simulated]``, ``nu``."""
    out = {}
    for name in names:
        if name not in ds:
            continue
        da = ds[name]
        extra = [d for d in da.dims if d not in ("chain", "draw", "sample")]
        flat = da if "sample" in da.dims else da.stack(sample=["chain", "draw"])
        if not extra:
            out[name] = flat.to_numpy()
            continue
        stacked = flat.stack(elem=extra).transpose("elem", "sample")
        labels = stacked["elem"].to_index()
        for i, lab in enumerate(labels):
            lab = lab if isinstance(lab, tuple) else (lab,)
            out[f"{name}[{','.join(map(str, lab))}]"] = stacked.to_numpy()[i]
    return out


def _ess_elements(ds) -> dict[str, float]:
    out = {}
    for name, da in ds.data_vars.items():
        if da.ndim == 0:
            out[name] = float(da)
            continue
        flat = da.stack(elem=list(da.dims))
        for lab, v in zip(flat["elem"].to_index(), flat.to_numpy(), strict=True):
            lab = lab if isinstance(lab, tuple) else (lab,)
            out[f"{name}[{','.join(map(str, lab))}]"] = float(v)
    return out


def simulation_based_calibration(
    design: pd.DataFrame,
    *,
    reps: int = 100,
    draws: int = 400,
    tune: int = 400,
    chains: int = 2,
    thin_to: int = 99,
    model_config: dict | None = None,
    params: tuple[str, ...] = POPULATION_PARAMS,
    seed: int = 0,
    oversample: int = 3,
    cores: int | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
    client=None,
    workers: int | None = None,
    compile_root=None,
) -> SBCResult:
    """Run SBC on the design of ``design`` (a sweep table: its configurations, rates and
    lengths; its latencies are replaced by simulated ones).

    ``thin_to`` posterior draws, evenly spaced over all chains, are kept per fit so that the
    ranks are computed from nearly independent draws. ``progress(done, reps, info)`` is called
    after each replication (the script prints a line). Parameters of the model's prior are
    ``model_config["priors"]``: the simulation and the fits use the same prior.

    Replications run one after another in this process, or on Dask workers when ``client`` (a
    ``distributed.Client`` or a scheduler address) or ``workers`` (a ``LocalCluster`` of that
    many processes) is given: each worker compiles the model once into its own compile
    directory (``compile_root``) and fits the replications it is handed. Replication ``i`` is
    sampled with seed ``seed * 100_003 + i + 1`` wherever it runs, so the ranks are the same.
    """
    if reps < 1:
        raise ValueError("reps must be at least 1")
    results: dict[int, tuple[dict, dict]] = {}
    with contextlib.ExitStack() as stack:
        dask = None
        if client is not None or workers is not None:
            from bayes_sd import fleet

            dask = stack.enter_context(
                fleet.dask_client(client, workers=workers or 2, compile_root=compile_root)
            )
            # every worker compiles while this process draws the prior and simulates
            warm = [dask.submit(_warm, design, model_config, workers=[w],
                                allow_other_workers=False, pure=False)
                    for w in dask.scheduler_info()["workers"]]  # fmt: skip
        model, datasets, truth, extra = _simulate(design, reps, model_config, params, seed,
                                                  oversample)  # fmt: skip
        total = chains * draws
        keep = np.linspace(0, total - 1, thin_to).round().astype(int)
        fit = {"draws": draws, "tune": tune, "chains": chains, "cores": cores, "keep": keep,
               "params": params}  # fmt: skip
        seeds = [seed * 100_003 + i + 1 for i in range(reps)]
        if dask is None:
            compiled = _compiled_for(design, model_config, model)
            for i in range(reps):
                results[i] = _replicate(compiled, datasets[i], truth.iloc[i], rep=i,
                                        seed=seeds[i], **fit)  # fmt: skip
                if progress is not None:
                    progress(i + 1, reps, results[i][1])
        else:
            fit["cores"] = fleet.worker_cores(dask, cores)
            tasks = {i: (datasets[i], truth.iloc[i], i, seeds[i]) for i in range(reps)}
            done = fleet.run_tasks(dask, _replicate_on_worker, tasks, label="SBC",
                                   progress=progress is None, design=design,
                                   model_config=model_config, fit=fit)  # fmt: skip
            for i, res, error in done:
                if error is not None:
                    raise RuntimeError(f"SBC replication {i} failed on a worker: {error}")
                results[i] = res
                if progress is not None:
                    progress(len(results), reps, res[1])
            del warm
    order = sorted(results)
    return SBCResult(
        ranks=pd.DataFrame([results[i][0] for i in order]),
        n_draws=thin_to,
        diagnostics=pd.DataFrame([results[i][1] for i in order]),
        truth=truth,
        extra=extra,
    )


def _simulate(design, reps, model_config, params, seed, oversample):
    """The model of ``design``, and ``reps`` data sets simulated from its prior with the truths
    they were drawn from."""
    import pymc as pm

    lm = LatencyModel(model_config=model_config)
    model = lm.build_model(design)
    # Prior draws that put a run at >= 95% utilisation (its mean latency >= 20 times its
    # series' lightest-load latency) are rejected: their simulated latencies run to 1e20 s, and
    # finite measured latencies rule such parameters out in the likelihood anyway.
    pool = pm.sample_prior_predictive(draws=reps * oversample, model=model, random_seed=seed)
    lat = pool["prior"].dataset["latency"].stack(sample=["chain", "draw"]).to_numpy()  # (point, s)
    series = lm.design.rows["series"].to_numpy()[lm.design.points.first]
    ratio = np.zeros(lat.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN/0 draws: rejected below
        for s in np.unique(series):
            block = lat[series == s]
            ratio = np.fmax(ratio, (block / block.min(axis=0)).max(axis=0))
        ratio[~np.isfinite(lat).all(axis=0)] = np.inf
    stable = np.flatnonzero(np.isfinite(ratio) & (ratio < 20.0))
    if stable.size < reps:
        raise ValueError(
            f"only {stable.size} of {reps * oversample} prior draws keep every run of the design "
            "below 95% utilisation; lower the design's rates or raise oversample"
        )
    chosen = stable[:reps]
    prior_ds = pool["prior"].dataset.stack(sample=["chain", "draw"]).isel(sample=chosen)
    # every observed metric (E2E, or TTFT and TPOT) is simulated, and goes back into its data
    # container at its runs (a metric measured for a subset of the runs has its own dims)
    simulated = pool["prior_predictive"].dataset.stack(sample=["chain", "draw"]).isel(sample=chosen)
    run_ids = pd.Index(lm.design.rows["run_id"].astype(str).to_numpy())
    datasets: list[dict[str, np.ndarray]] = [{} for _ in range(reps)]
    for rv in model.observed_RVs:
        if not rv.name.startswith("log_") or rv.name == "log_step_time":
            continue
        name = f"{rv.name}_obs"
        where = run_ids.get_indexer(
            list(map(str, model.coords[model.named_vars_to_dims[rv.name][0]]))
        )
        values = simulated[rv.name].transpose("sample", ...).to_numpy()
        for i in range(reps):
            full = np.array(model[name].get_value(), dtype=float, copy=True)
            full[where] = values[i]
            datasets[i][name] = full
    extra = {
        "runs": len(lm.design.rows),
        "systems": len(lm.design.systems),
        "centred": bool(lm.centred),  # what "auto" chose for this design
        "prior_draws": reps * oversample,
        "prior_draws_stable": int(stable.size),
    }
    return model, datasets, pd.DataFrame(_elements(prior_ds, params)), extra


def _replicate(compiled, data, truth: pd.Series, *, rep, seed, draws, tune, chains, cores, keep,
               params) -> tuple[dict, dict]:  # fmt: skip
    """Fit one simulated data set; the ranks of its truth and the fit's diagnostics."""
    import arviz as az

    start = time.perf_counter()
    idata = sample_compiled(compiled, data, draws=draws, tune=tune, chains=chains, cores=cores,
                            seed=seed)  # fmt: skip
    seconds = time.perf_counter() - start
    post = idata["posterior"].dataset
    el = _elements(post, params)
    ranks = {name: int(rank_of_truth(v[keep], truth[name])) for name, v in el.items()}
    names = [n for n in params if n in post]
    ess = pd.Series(_ess_elements(az.ess(post[names], method="bulk")))
    summary = convergence_summary(idata, names)
    y = data.get("log_latency_obs", next(iter(data.values())))
    info = {
        "rep": rep,
        "seed": seed,
        "seconds": seconds,
        "divergences": summary["divergences"],
        "max_rhat": summary["max_rhat"],
        "min_ess_bulk": float(ess.min()),
        "worst_ess": str(ess.idxmin()),
        "max_latency_s": float(np.nanmax(np.exp(y))),
        "worker_pid": os.getpid(),
    }
    return ranks, info


_COMPILED: dict[str, object] = {}  # per worker process: the model compiled for a design


def _compiled_for(design: pd.DataFrame, model_config, model=None):
    """The model of ``design`` compiled once per process (a Dask worker's, or this one's) and
    kept for the next replication or the next SBC run of the same design."""
    key = json.dumps([pd.util.hash_pandas_object(design).tolist(), list(design.columns),
                      model_config], sort_keys=True, default=repr)  # fmt: skip
    if key not in _COMPILED:
        _COMPILED.clear()
        if model is None:
            model = LatencyModel(model_config=model_config).build_model(design)
        _COMPILED[key] = compile_nutpie(model)
    return _COMPILED[key]


def _warm(design, model_config) -> None:
    _compiled_for(design, model_config)


def _replicate_on_worker(data, truth, rep, seed, *, design, model_config, fit):
    """One replication on a Dask worker."""
    return _replicate(_compiled_for(design, model_config), data, truth, rep=rep, seed=seed, **fit)
