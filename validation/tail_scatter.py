"""How far a run's percentiles scatter around what its configuration and load predict, with the
run's own mean given: the floor under any held-out percentile error.

Run: ``.venv/bin/python validation/tail_scatter.py`` (seconds; no fit).

Data (real measurements): ``load_example("inferencex")``, the single-engine runs the model fits
(SGLang and TensorRT-LLM; Dynamo's prefill runs on other GPUs). For each percentile ``q`` of
TTFT, TPOT and E2E, ``log(q / mean)`` of each run is regressed by least squares on the
engine, the GPU type, the load ``log(1 + requests in flight per engine)`` (the tail law's
covariate, :mod:`bayes_sd.laws`) and the log prompt and output lengths — more than the tail law
of the model uses — and the median absolute relative residual ``|exp(residual) − 1|`` is
reported: in-sample, with the measured mean, so a held-out prediction that must also predict
the mean cannot expect to do better. Writes ``validation/results/tail_scatter.json`` and
``docs/validation/tail_scatter.md``.
"""

from __future__ import annotations

import sys

import _common
import numpy as np
import pandas as pd
from real_engines import fittable

import bayes_sd
from bayes_sd.report import markdown_table

COVARIATES = ("engine", "GPU type", "load", "prompt length", "output length")


def design_matrix(rows: pd.DataFrame) -> np.ndarray:
    """Intercept, engine and GPU indicators (first level dropped), load, log lengths."""
    cols = [np.ones(len(rows))]
    for key in ("engine", "gpu"):
        cols += [(rows[key] == v).to_numpy(float) for v in sorted(rows[key].unique())[1:]]
    cols.append(np.log1p((rows["concurrency"] / rows["engines"]).to_numpy(float)))
    cols += [np.log(rows[c].to_numpy(float) / 1024) for c in ("prefill_len", "decode_len")]
    return np.column_stack(cols)


def scatter(rows: pd.DataFrame) -> pd.DataFrame:
    x = design_matrix(rows)
    out = []
    for metric in ("ttft", "tpot", "latency"):
        for q in ("p50", "p90", "p99"):
            y = np.log(rows[f"{metric}_{q}_s"] / rows[f"{metric}_mean_s"]).to_numpy(float)
            ok = np.isfinite(y)
            beta, *_ = np.linalg.lstsq(x[ok], y[ok], rcond=None)
            res = y[ok] - x[ok] @ beta
            out.append({
                "percentile": f"{q} {'E2E' if metric == 'latency' else metric.upper()}",
                "runs": int(ok.sum()), "parameters": x.shape[1],
                "r2": float(1 - res.var() / y[ok].var()),
                "median_scatter": float(np.median(np.abs(np.expm1(res)))),
                "p90_scatter": float(np.quantile(np.abs(np.expm1(res)), 0.9)),
            })  # fmt: skip
    return pd.DataFrame(out)


def main(argv=None) -> None:
    p = _common.parser(__doc__, draws=0)
    args = _common.parse(p, argv, "tail_scatter")
    rows = fittable(bayes_sd.load_example("inferencex"))
    rows = rows[~rows["disaggregated"].astype(bool)]
    table = scatter(rows)
    _common.write_json(args.out, {"covariates": COVARIATES, "rows": table.to_dict("records")})
    show = table.assign(
        r2=table["r2"].round(2),
        median_scatter=(100 * table["median_scatter"]).round(1).astype(str) + "%",
        p90_scatter=(100 * table["p90_scatter"]).round(1).astype(str) + "%",
    )
    page = args.docs / "tail_scatter.md"
    _common.write_text(page, markdown_table(show))
    print(show.to_string(index=False))
    print(f"wrote {args.out} and {page}")


if __name__ == "__main__":
    main(sys.argv[1:])
