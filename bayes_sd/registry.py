"""Sizes of well-known models, so sweeps can name a model instead of typing its counts.

Parameter counts include embeddings and the LM head. The eight architectures of the embedded
step-cost table carry the exact counts of the shapes that were timed (``load_example("stepcost")``);
the others are the counts published on their model cards, rounded to three significant figures.
Add your own with :func:`register_model`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "ModelInfo",
    "fill_sizes",
    "known_models",
    "lookup_model",
    "normalize_model_name",
    "register_model",
]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    params: float
    active_params: float
    experts: int = 1
    experts_per_token: int = 1

    @property
    def moe(self) -> bool:
        return self.experts > 1


_MODELS: dict[str, ModelInfo] = {}
_ALIASES: dict[str, str] = {}


def normalize_model_name(name: str) -> str:
    """A lookup key: lower case, no organisation, no ``-instruct``/``-chat``/``-hf`` suffixes.

    ``"meta-llama/Llama-3.1-8B-Instruct"`` → ``"llama-3.1-8b"``.
    """
    key = str(name).strip().lower()
    key = key.rsplit("/", 1)[-1]
    key = re.sub(r"^meta-", "", key)
    key = key.replace("_", "-").replace(" ", "-")
    previous = None
    while key != previous:  # strip date and flavour suffixes in any order
        previous = key
        key = re.sub(r"-(\d{4})$", "", key)  # date suffixes such as -2507
        for suffix in ("-instruct", "-chat", "-hf", "-it", "-base", "-fp8", "-bf16"):
            key = key.removesuffix(suffix)
    return key


def register_model(
    name: str,
    params: float,
    active_params: float | None = None,
    experts: int = 1,
    experts_per_token: int = 1,
    aliases: tuple[str, ...] = (),
) -> ModelInfo:
    """Add (or replace) a model in the registry; returns its :class:`ModelInfo`."""
    active = params if active_params is None else active_params
    if not (params > 0 and 0 < active <= params):
        raise ValueError(f"{name}: need 0 < active_params <= params, got {active} and {params}")
    if not (1 <= experts_per_token <= experts):
        raise ValueError(f"{name}: need 1 <= experts_per_token <= experts")
    if (experts > 1) != (active < params):
        raise ValueError(f"{name}: an MoE model (experts > 1) has fewer active than total params")
    info = ModelInfo(
        normalize_model_name(name), float(params), float(active), experts, experts_per_token
    )
    _MODELS[info.name] = info
    for alias in aliases:
        _ALIASES[normalize_model_name(alias)] = info.name
    return info


def lookup_model(name: str) -> ModelInfo | None:
    """The registered :class:`ModelInfo` for ``name`` (any common spelling), or ``None``."""
    key = normalize_model_name(name)
    key = _ALIASES.get(key, key)
    return _MODELS.get(key)


def known_models() -> list[ModelInfo]:
    return sorted(_MODELS.values(), key=lambda m: m.name)


def fill_sizes(table) -> None:
    """Fill missing model-size columns of a table (in place) from the registry by name.

    ``target_params``, ``target_active_params``, ``target_experts``,
    ``target_experts_per_token`` from ``target`` and ``drafter_params`` from ``drafter``; cells
    already given are kept, unknown models stay missing (NaN).
    """
    import math

    import numpy as np
    import pandas as pd

    def fill(col: str, key: str, attr: str) -> None:
        if key not in table.columns:
            return
        if col in table.columns:
            try:
                current = table[col].astype(float)
            except (TypeError, ValueError) as err:
                from bayes_sd.errors import DataError

                raise DataError(f"{col} must be a number of parameters: {err}", field=col) from err
        else:
            current = pd.Series(np.nan, index=table.index, dtype=float)
        blank = current.isna()
        names = table[key]
        found = {}
        for name in pd.unique(names[blank]):  # one registry lookup per distinct name
            info = lookup_model(name) if isinstance(name, str) else None
            found[name] = float(getattr(info, attr)) if info else math.nan
        filled = names[blank].map(found).astype(float)
        table[col] = current.where(~blank, filled)

    for col, attr in (
        ("target_params", "params"),
        ("target_active_params", "active_params"),
        ("target_experts", "experts"),
        ("target_experts_per_token", "experts_per_token"),
    ):
        fill(col, "target", attr)
    fill("drafter_params", "drafter", "params")


# From the embedded step-cost table (exact counts of the timed shapes).
register_model("llama-68m", 68_026_368, aliases=("JackFram/llama-68m",))
register_model(
    "eagle3-head-8b",
    480_247_808,
    aliases=(
        "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B",
        "RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3",
    ),
)
register_model("llama-3.2-1b", 1_498_415_104)
register_model("llama-3.2-3b", 3_606_577_152)
register_model("llama-3.1-8b", 8_029_995_008, aliases=("llama-3-8b", "meta-llama-3-8b"))
register_model("qwen2.5-14b", 14_769_192_960)
register_model(
    "olmoe-1b-7b",
    6_919_028_736,
    1_281_884_160,
    64,
    8,
    aliases=("allenai/OLMoE-1B-7B-0924", "olmoe-1b-7b-0924"),
)
register_model("qwen3-30b-a3b", 30_531_911_680, 3_352_821_760, 128, 8)
# Published counts (model cards).
register_model(
    "llama-3-70b",
    70.6e9,
    aliases=("llama3-70b", "meta-llama-3-70b", "llama-3.1-70b", "llama-3.3-70b"),
)
register_model("llama-3.1-405b", 406e9)
register_model("qwen2.5-0.5b", 0.494e9)
register_model("qwen2.5-1.5b", 1.54e9)
register_model("qwen2.5-7b", 7.62e9)
register_model("qwen2.5-32b", 32.8e9)
register_model("qwen2.5-72b", 72.7e9)
register_model("qwen3-8b", 8.19e9)
register_model("qwen3-32b", 32.8e9)
register_model("qwen3-235b-a22b", 235e9, 22e9, 128, 8)
register_model("mistral-7b", 7.24e9, aliases=("mistral-7b-v0.1", "mistral-7b-v0.3"))
register_model("mixtral-8x7b", 46.7e9, 12.9e9, 8, 2, aliases=("mixtral-8x7b-v0.1",))
register_model("gpt-oss-20b", 20.9e9, 3.61e9, 32, 4)
register_model("gpt-oss-120b", 117e9, 5.13e9, 128, 4)
register_model("qwama-0.5b", 0.5e9, aliases=("turboderp/Qwama-0.5B-Instruct",))
register_model(
    "deepseek-r1", 671e9, 37e9, 256, 8, aliases=("dsr1", "deepseek-v3", "deepseek-r1-0528")
)
# DeepSeek's multi-token-prediction head as a drafter: one MoE block (of 61) and the shared
# embedding and LM head — about 1.5 B parameters of work per drafted token (its 14 B total are
# mostly experts a token does not touch); the drafter law scales with the work done.
register_model("deepseek-r1-mtp", 1.5e9, aliases=("deepseek-v3-mtp",))
