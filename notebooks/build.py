"""Write the example notebooks from the cell sources below and execute them in place.

    .venv/bin/python notebooks/build.py            # full budget (outputs committed)
    BAYES_SD_NB_DRAWS=100 BAYES_SD_NB_CHAINS=2 .venv/bin/python notebooks/build.py --out /tmp/nb

Every notebook reads its sampling budget from ``BAYES_SD_NB_DRAWS`` (draws and tuning steps
per chain) and ``BAYES_SD_NB_CHAINS``, so CI executes them quickly (100, 2) and the committed
outputs use the package's default budget (4 chains × 1,000 draws after 1,000 tuning steps:
at 2 × 500 the quickstart fit's R-hat ranged 1.011–1.07 between seeds).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).parent

SETUP = """\
%matplotlib inline
import os
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import bayes_sd
from bayes_sd import planning
DRAWS = int(os.environ.get("BAYES_SD_NB_DRAWS", "1000"))
CHAINS = int(os.environ.get("BAYES_SD_NB_CHAINS", "4"))
SAMPLER = {"draws": DRAWS, "tune": DRAWS, "chains": CHAINS, "progressbar": False}"""

NOTEBOOKS = {
    "01-quickstart-demo-sweep.ipynb": [
        (
            "md",
            "# Quickstart: fit the hierarchical model to (part of) the demo sweep\n\n"
            "The demo sweep is **SIMULATED** (`bayes_sd.simulate`, driven by measured step "
            "costs; see `data/demo/README.md`). Here: the dense targets on H100 at 1,024-token "
            "prompts and 256-token outputs, small enough to fit in a minute.",
        ),
        ("code", SETUP),
        (
            "code",
            'demo = bayes_sd.load_example("demo")\n'
            'part = demo[(demo.gpu == "H100-SXM-80GB") & (demo.target_experts == 1)\n'
            "            & (demo.prefill_len == 1024) & (demo.decode_len == 256)]\n"
            'print(len(part), "runs;", part.saturated.sum(), "flagged saturated")\n'
            'part.groupby(["target", "drafter", "k"], dropna=False).size().head(12)',
        ),
        (
            "code",
            "model = bayes_sd.LatencyModel(sampler_config=SAMPLER)\n"
            "idata = model.fit(part, random_seed=1)\n"
            "model.diagnostics",
        ),
        (
            "md",
            "Predict an unseen load and an unseen draft length for a seen drafter, with "
            "90% intervals (the measurement noise left out: this is the mean latency to plan "
            "with).",
        ),
        (
            "code",
            'new = pd.DataFrame({"gpu": "H100-SXM-80GB", "target": "llama-3.1-8b",\n'
            '                    "drafter": "eagle3-head-8b", "alpha": 0.8, "k": [2, 3, 6],\n'
            '                    "prefill_len": 1024, "decode_len": 256, "request_rate": 5.0})\n'
            "model.predict(new, random_seed=0).summary[\n"
            '    ["k", "latency_median", "latency_lo", "latency_hi", "speedup_median",\n'
            '     "p_speedup_gt_1"]]',
        ),
        (
            "code",
            "from bayes_sd.report import build_report\n"
            'report = build_report(model, title="Quickstart")\n'
            'report.tables["fit_quality"].head()',
        ),
    ],
    "02-real-vllm-sweep.ipynb": [
        (
            "md",
            "# The real vLLM sweep: where does SD stop paying?\n\n"
            "18 open-loop runs of Llama-3-70B on 4×H100 from the vLLM blog (2024-10-17), with "
            "and without SD (a 0.5 B draft model on ShareGPT, n-gram on CNN/DailyMail, k = 4). "
            "Real measurements, digitised from the published charts "
            "(`data/vllm-blog-2024/README.md`).",
        ),
        ("code", SETUP),
        (
            "code",
            'sweep = bayes_sd.load_example("vllm-blog-2024")\n'
            "model = bayes_sd.LatencyModel(sampler_config=SAMPLER)\n"
            "model.fit(sweep, random_seed=1)\n"
            "model.diagnostics",
        ),
        (
            "code",
            'cfg = {"gpu": "H100-SXM-80GB", "num_gpus": 4,\n'
            '       "target": "meta-llama/Meta-Llama-3-70B-Instruct", "dataset": "ShareGPT",\n'
            '       "prefill_len": 215, "decode_len": 198,\n'
            '       "drafter": "turboderp/Qwama-0.5B-Instruct", "method": "draft_model"}\n'
            "be = planning.break_even(model, cfg, k=4, rates=np.linspace(0.2, 14, 120))\n"
            "be.summary()",
        ),
        (
            "code",
            "a = be.along\n"
            "fig, ax = plt.subplots(figsize=(6, 3.5))\n"
            'ax.plot(a.rate, a.speedup_median, label="posterior median")\n'
            'ax.fill_between(a.rate, a.speedup_lo, a.speedup_hi, alpha=0.3, label="90%")\n'
            'share = sweep[sweep.dataset == "ShareGPT"].pivot_table(index="request_rate",\n'
            '    columns="k", values="latency_mean_s")\n'
            'ax.plot(share.index, share[0] / share[4], "o", label="measured")\n'
            'ax.axhline(1, color="k", lw=0.8); ax.set_xlabel("req/s"); ax.set_ylabel("speedup")\n'
            "ax.legend();",
        ),
        (
            "code",
            'a[["rate", "p_speedup_gt_1"]].iloc[::15]',
        ),
        (
            "md",
            "The posterior report opens with these decisions for every configuration the sweep "
            "measured: capacity under an SLO (here mean E2E ≤ 3 s with 95% credibility) and the "
            "term that binds, break-even, the best draft length by load, and the "
            "throughput–interactivity frontier (`bayes-sd report --slo 3s` from the shell).",
        ),
        (
            "code",
            "from IPython.display import Markdown\n\n"
            "from bayes_sd.report import build_report\n\n"
            'report = build_report(model, slo="3s", credibility=0.95)\n'
            'Markdown("\\n\\n".join(report.summary))',
        ),
        ("code", 'report.figures["frontier_1"]'),
    ],
    "03-capacity-planning.ipynb": [
        (
            "md",
            "# Capacity planning end to end\n\n"
            "On the real vLLM sweep: the highest rate under a latency SLO with credibility, "
            "the best draft length by load under different risk attitudes, a draft-length "
            "schedule by batch size, and which run to measure next.",
        ),
        ("code", SETUP),
        (
            "code",
            'sweep = bayes_sd.load_example("vllm-blog-2024")\n'
            "model = bayes_sd.LatencyModel(sampler_config=SAMPLER)\n"
            "model.fit(sweep, random_seed=2)\n"
            'cfg = {"gpu": "H100-SXM-80GB", "num_gpus": 4,\n'
            '       "target": "meta-llama/Meta-Llama-3-70B-Instruct", "dataset": "CNN/DailyMail",\n'
            '       "prefill_len": 1000, "decode_len": 100, "method": "ngram"}',
        ),
        (
            "code",
            "planning.sustainable_rate(model, cfg, slo_s=3.0, credibility=0.95, ks=(0, 2, 4))",
        ),
        (
            "code",
            "rates = np.linspace(0.5, 9, 18)\n"
            'mean = planning.best_k(model, cfg, ks=(0, 2, 4), rates=rates, objective="mean")\n'
            "tail = planning.best_k(model, cfg, ks=(0, 2, 4), rates=rates,\n"
            '                       objective="shortfall")\n'
            'pd.DataFrame({"rate": rates, "k_mean": mean.choice.k, "k_tail": tail.choice.k,\n'
            '              "p_best": mean.choice.p_best})',
        ),
        ("code", "mean.schedule()"),
        (
            "code",
            "planning.next_measurement(model, cfg, k=2, ks=(0, 2, 4),\n"
            "                          rates=[1, 2, 4, 6, 8]).head()",
        ),
    ],
    "04-moe.ipynb": [
        (
            "md",
            "# Mixture-of-experts targets\n\n"
            "MoE verification reads more experts as more tokens are in flight "
            "(expert coverage, docs/science.md). Fitted on the **SIMULATED** demo sweep's MoE "
            "targets (OLMoE-1B-7B, Qwen3-30B-A3B) with one dense target on H100.",
        ),
        ("code", SETUP + "\nfrom bayes_sd import latency"),
        (
            "code",
            "B = np.arange(1, 257)\n"
            "fig, ax = plt.subplots(figsize=(5, 3))\n"
            'for name, n, m in [("OLMoE-1B-7B", 64, 8), ("Qwen3-30B-A3B", 128, 8)]:\n'
            "    ax.plot(B, latency.expert_coverage(B, n, m), label=name)\n"
            'ax.set_xscale("log"); ax.set_xlabel("tokens in a pass"); '
            'ax.set_ylabel("share of experts read")\n'
            "ax.legend();",
        ),
        (
            "code",
            'demo = bayes_sd.load_example("demo")\n'
            'part = demo[(demo.gpu == "H100-SXM-80GB")\n'
            '            & demo.target.isin(["olmoe-1b-7b", "qwen3-30b-a3b", "llama-3.2-3b"])\n'
            "            & (demo.prefill_len == 1024) & (demo.decode_len == 256)]\n"
            "model = bayes_sd.LatencyModel(sampler_config=SAMPLER)\n"
            "model.fit(part, random_seed=3)\n"
            "model.diagnostics",
        ),
        (
            "code",
            'post = model.idata["posterior"].dataset\n'
            'post["moe_excess"].mean(("chain", "draw")).to_series()',
        ),
        (
            "code",
            'rows = pd.DataFrame({"gpu": "H100-SXM-80GB", "target": "qwen3-30b-a3b", "k": 0,\n'
            '                     "prefill_len": 1024, "decode_len": 256,\n'
            '                     "request_rate": [0.5, 2.0, 4.0]})\n'
            'model.predict(rows, random_seed=0).summary[["request_rate", "latency_median",\n'
            '                                           "latency_lo", "latency_hi"]]',
        ),
    ],
}


def build(name: str, cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for kind, src in cells:
        maker = nbformat.v4.new_markdown_cell if kind == "md" else nbformat.v4.new_code_cell
        nb.cells.append(maker(src))
    return nb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(HERE), help="folder for the executed notebooks")
    parser.add_argument("--only", default=None, help="one notebook name")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        if args.only and args.only != name:
            continue
        nb = build(name, cells)
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=1200, kernel_name="python3", resources={
            "metadata": {"path": str(HERE)}}).execute()  # fmt: skip
        nbformat.write(nb, out / name)
        print(f"{name}: executed in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.pop("MPLBACKEND", None)  # the kernel draws inline figures into the notebook
    sys.exit(main())
