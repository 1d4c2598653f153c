"""Percentile SLOs and the frontier on real measurements: the answer a user gets, next to what
was measured.

Run: ``.venv/bin/python validation/slo_planning.py [--draws 300] [--chains 2]`` (one fit of the
embedded InferenceX data, a few minutes on 2 cores).

Data, **real**: ``load_example("inferencex")`` (DeepSeek-R1 served by SGLang, TensorRT-LLM and
Dynamo on seven GPU types; SemiAnalysis InferenceX, data/inferencex/README.md). The question, as
a user asks it: "8×H200 with SGLang, 1k/1k tokens — how many requests in flight can I serve with
p99 TTFT ≤ 2 s and p99 TPOT ≤ 50 ms at 95% credibility, with MTP (k = 2) and without?", then
the throughput–interactivity frontier of SGLang (without and with MTP) against TensorRT-LLM on
the same GPUs. Beside the answer: the measured p99 TTFT and TPOT of that configuration's runs
(what a reader can check it against).

Writes ``validation/results/slo_planning.json``, ``docs/validation/slo_planning.md`` (tables)
and ``docs/validation/slo_frontier.png``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import _common
import numpy as np

import bayes_sd
from bayes_sd.capacity import slo_capacity
from bayes_sd.frontier import frontier
from bayes_sd.model import ConvergenceWarning, LatencyModel
from bayes_sd.report import markdown_table

SLO = "p99_ttft_ms<=2000,p99_tpot_ms<=50"
BASE = {
    "gpu": "H200-SXM-141GB",
    "num_gpus": 8,
    "target": "deepseek-ai/DeepSeek-R1-0528",
    "precision": "fp8",
    "layout": "tp8 ep1",
    "prefill_len": 921.6,
    "decode_len": 921.6,
}
SGLANG = {**BASE, "engine": "sglang", "drafter": "deepseek-r1-mtp", "method": "mtp"}
TRT = {**BASE, "engine": "trt"}


def main(argv=None) -> None:
    p = _common.parser(__doc__, draws=300, chains=2, model_config=True)
    p.add_argument(
        "--model",
        default=None,
        help="a saved fit to reuse (written there after fitting when missing)",
    )
    args = _common.parse(p, argv, "slo_planning")
    data = bayes_sd.load_example("inferencex")
    target = data.loc[data["gpu"] == BASE["gpu"], "target"].iloc[0]
    sglang, trt = {**SGLANG, "target": target}, {**TRT, "target": target}
    if args.model and Path(args.model).is_file():
        model, seconds = LatencyModel.load(args.model), float("nan")
    else:
        model = LatencyModel(model_config=_common.model_config(args),
                             sampler_config=_common.sampler_config(args))  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            seconds = _common.fit_timed(model, data, args, "inferencex (all runs)")
        if args.model:
            model.save(args.model)
    capacity = slo_capacity(model, sglang, SLO, ks=(0, 2), credibility=0.95, load="concurrency")
    print(capacity.to_string(index=False))
    keys = ["gpu", "engine", "layout", "prefill_len", "decode_len"]
    mask = np.logical_and.reduce([data[c].astype(str) == str(sglang[c]) for c in keys])
    measured = data.loc[mask, ["k", "concurrency", "ttft_p99_s", "tpot_p99_s"]].copy()
    measured["k"] = measured["k"].astype("Int64")
    measured = measured.sort_values(["k", "concurrency"])
    measured["meets SLO"] = (measured["ttft_p99_s"] <= 2.0) & (measured["tpot_p99_s"] <= 0.05)
    print(measured.to_string(index=False))
    configs = {"SGLang": {**sglang, "ks": (0, 2)}, "TensorRT-LLM": {**trt, "ks": (0,)}}
    result = frontier(model, configs, load="concurrency", levels=30)
    fig = result.figure()
    title = ("DeepSeek-R1 on 8×H200, 1k/1k: throughput–interactivity frontier\n"
             "(median, 90% credible band; fitted on InferenceX)")  # fmt: skip
    fig.axes[0].set_title(title, fontsize=10)
    png = args.docs / "slo_frontier.png"
    _common.atomic_write(png, lambda path: fig.savefig(path, dpi=150, bbox_inches="tight",
                                                       format="png"))  # fmt: skip
    table = result.table
    best = table.loc[table.groupby("interactivity")["p_frontier"].idxmax()]
    best = best.iloc[:: max(1, len(best) // 8)]
    page = "".join([
        f"SLO: `{SLO}`, credibility 0.95, load: requests in flight (closed loop).\n\n",
        markdown_table(capacity.round(3)),
        "\nMeasured runs of that configuration (p99 in seconds):\n\n",
        markdown_table(measured.round(4)),
        "\nFrontier: the most probable configuration at each interactivity level\n\n",
        markdown_table(best[["interactivity", "config", "p_frontier", "throughput_median",
                             "throughput_lo", "throughput_hi"]].round(3)),
    ])  # fmt: skip
    _common.write_text(args.docs / "slo_planning.md", page)
    _common.write_json(args.out, {
        "capacity": capacity.to_dict("records"), "measured": measured.astype(object).where(
            measured.notna(), None).to_dict("records"),
        "frontier": table.to_dict("records"), "fit_s": round(seconds, 1),
        "diagnostics": model.diagnostics, "settings": {"draws": args.draws, "chains": args.chains,
                                                       "seed": args.seed},
    })  # fmt: skip
    print(f"wrote {args.out}, {args.docs / 'slo_planning.md'} and {png}")


if __name__ == "__main__":
    main(sys.argv[1:])
