"""Convert the digitised vLLM blog sweep (raw.csv) to the canonical sweep table (sweep.csv).

Run from the repository root: ``python data/vllm-blog-2024/convert.py``. Deterministic: the
output is byte-identical on every run. See README.md beside this file for what is measured and
what is assumed.
"""

from pathlib import Path

import pandas as pd

from bayes_sd.schema import write_sweep

HERE = Path(__file__).parent
# Not published in the post: assumed workload means (see README.md), used for every run.
ASSUMED_LENGTHS = {
    "ShareGPT": (215.0, 198.0),  # typical of vLLM's ShareGPT sampling, Llama-3 tokenizer
    "CNN/DailyMail": (1000.0, 100.0),  # news article in, short summary out
}


def convert() -> pd.DataFrame:
    raw = pd.read_csv(HERE / "raw.csv")
    rows = []
    for i, r in raw.iterrows():
        k = int(r["num_speculative_tokens"])
        prefill, decode = ASSUMED_LENGTHS[r["dataset"]]
        rows.append(
            {
                "source": "vllm-blog-2024",
                "run_id": f"vllm-blog-2024-{i + 1:02d}",
                "file": "raw.csv",
                "record": f"row {i + 1}",
                "dataset": r["dataset"],
                "gpu": "H100-SXM-80GB",
                "num_gpus": int(r["tp"]),
                "target": "meta-llama/Meta-Llama-3-70B-Instruct",
                "target_params": 70.6e9,
                "target_active_params": 70.6e9,
                "target_experts": 1,
                "target_experts_per_token": 1,
                "drafter": r["model_draft"] if isinstance(r["model_draft"], str) else None,
                "drafter_params": 0.5e9 if isinstance(r["model_draft"], str) else None,
                "method": r["method"],
                "k": k,
                "acceptance_length": 1.0 if k == 0 else None,
                "acceptance_source": "k=0" if k == 0 else None,
                "prefill_len": prefill,
                "decode_len": decode,
                "load_mode": "rate",
                "arrivals": "poisson",
                "request_rate": float(r["request_rate_qps"]),
                "latency_mean_s": float(r["e2e_latency_s"]),
                "latency_source": "digitised from figure",
                "saturated": False,
                "reading_uncertainty_s": float(r["abs_uncertainty_s"]),
                "lengths_assumed": True,
            }
        )
    return pd.DataFrame(rows)


if __name__ == "__main__":
    write_sweep(convert(), HERE / "sweep.csv")
    print(f"wrote {HERE / 'sweep.csv'}")
