"""The planning commands of ``bayes-sd``: ``plan`` (capacity under an SLO, break-even, best k,
next measurement) and ``frontier`` (throughput against interactivity with credible bands).
Registered by :func:`bayes_sd.cli.build_parser`; errors follow its exit codes."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from bayes_sd.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

EXIT_OK = 0


def _helpers():
    from bayes_sd import cli

    return cli


def _config_from_args(items: list[str]) -> dict:
    cfg: dict = {}
    for key, value in _helpers()._parse_meta(items).items():
        if key not in CONFIG_KEYS:
            raise DataError(
                f"--config {key}: unknown key; known: {', '.join(sorted(CONFIG_KEYS))} (the "
                "load and k come from --load and --ks)"
            )
        try:
            cfg[key] = float(value) if key in _NUMERIC_CONFIG else value
        except ValueError:
            raise DataError(f"--config {key} expects a number, got {value!r}") from None
    need = [k for k in ("gpu", "target", "prefill_len", "decode_len") if k not in cfg]
    if need:
        raise DataError(f"--config needs {', '.join(need)} (KEY=VALUE)")
    return cfg


_NUMERIC_CONFIG = {"prefill_len", "decode_len", "num_gpus", "alpha", "acceptance_length",
                   "engines", "target_params", "target_active_params", "target_experts",
                   "target_experts_per_token", "drafter_params", "max_num_seqs"}  # fmt: skip
# a configuration without its load and draft length (bayes_sd.predict.prediction_rows)
CONFIG_KEYS = _NUMERIC_CONFIG | {"gpu", "target", "drafter", "method", "dataset", "source",
                                 "engine", "precision", "layout"}  # fmt: skip


def _check_config(model, cfg: dict, ks: list[int]) -> str:
    """Impossible values (``num_gpus=0``) fail here, in one line, before any computing; a
    configuration the model was not fitted on gives a note (``predict.unfitted_note``)."""
    from bayes_sd.predict import unfitted_note

    note = unfitted_note(model.design, {**cfg, "k": float(max(ks))})
    return f"Note: {note}.\n\n" if note else ""


def _ks(text: str) -> list[int]:
    ks = _helpers()._parse_ints(text, "--ks")
    if not ks or any(k < 0 or k > 64 for k in ks):
        raise DataError(f"--ks expects draft lengths from 0 to 64, got {text!r}")
    return ks


def _capacity_lines(capacity: pd.DataFrame) -> str:
    """One sentence per (k, load): the answer, its credibility and the binding term."""
    lines = []
    for r in capacity.itertuples(index=False):
        sd = "without SD" if r.k == 0 else f"SD k={r.k}"
        unit = "req/s" if r.load == "rate" else "requests in flight"
        if not r.meets:
            lines.append(f"* {sd}: no {r.load} searched meets the SLO with this credibility "
                         f"(binding: {r.binding})")  # fmt: skip
            continue
        lines.append(
            f"* {sd}: up to {r.capacity:.3g} {unit} (P = {r.credibility_achieved:.3f} on fresh "
            f"draws; a point estimate would say {r.capacity_median:.3g}); binding: {r.binding}"
        )
    return "\n".join(lines) + "\n"


def next_k(best, sd_ks: list[int]) -> int | None:
    """The SD draft length whose break-even the next measurement should pin: the one
    ``best_k`` chooses at most rates (the one a user would run), else the shortest asked."""
    chosen = best.choice["k"].dropna()
    chosen = chosen[chosen > 0]
    if len(chosen):
        return int(chosen.mode().iloc[0])
    return sd_ks[0] if sd_ks else None


def cmd_plan(args: argparse.Namespace) -> int:
    """Answer the capacity-planning questions for one configuration, with credibility."""
    import pandas as pd

    from bayes_sd.slo import parse_slo

    # the arguments first (fast errors), then the model (PyMC's import takes seconds)
    cfg = _config_from_args(args.config)
    ks = _ks(args.ks)
    sd_ks = [k for k in ks if k > 0]
    if sd_ks and "drafter" not in cfg and "method" not in cfg:
        raise DataError("draft lengths > 0 need --config drafter=NAME (or method=ngram)")
    terms = parse_slo(args.slo)
    if not 0 < args.credibility < 1:
        raise DataError(f"--credibility must be between 0 and 1, got {args.credibility:g}")
    if args.goodput_at:
        _helpers()._parse_floats(args.goodput_at, "--goodput-at")
    if args.schedule_json and Path(args.schedule_json).is_dir():
        raise DataError("--schedule-json names a folder; give a file such as schedule.json",
                        file=args.schedule_json)  # fmt: skip
    model = _helpers()._load_model(args.model)
    note = _check_config(model, cfg, ks)
    from bayes_sd import planning
    from bayes_sd.capacity import slo_capacity
    from bayes_sd.schema import atomic_write

    print("bayes-sd plan: computing over posterior draws ...", file=sys.stderr)
    loads = ["rate", "concurrency"] if args.load == "both" else [args.load]
    capacity = pd.concat(
        [slo_capacity(model, cfg, terms, ks=ks, credibility=args.credibility, load=load)
         for load in loads], ignore_index=True,
    )  # fmt: skip
    breaks = pd.DataFrame([planning.break_even(model, cfg, k=k).summary() for k in sd_ks])
    best = planning.best_k(model, cfg, ks=ks, objective=args.objective)
    k_next = next_k(best, sd_ks)
    nxt = planning.next_measurement(model, cfg, k=k_next, ks=ks) if sd_ks else None
    slo_text = " and ".join(t.label for t in terms)
    text = [
        f"# Capacity plan: {cfg['target']} on {cfg['gpu']}\n\n",
        f"SLO: {slo_text}, with credibility {args.credibility:g}.\n\n",
        note,
        "## Highest load meeting the SLO, per draft length\n\n",
        _capacity_lines(capacity),
        "\n",
        _table(capacity),
    ]
    good = None
    if args.goodput_at:
        from bayes_sd.capacity import goodput

        at = _helpers()._parse_floats(args.goodput_at, "--goodput-at")
        load = "concurrency" if args.load == "concurrency" else "rate"
        good = goodput(model, cfg, terms, at, ks=ks, load=load)
        text += [
            f"\n## Goodput at the given {load}s (req/s meeting every threshold per request; "
            "bounds: how TTFT and TPOT of one request go together is not modelled)\n\n",
            _table(good.round(4)),
        ]
    if not breaks.empty:
        text += [
            "\n## Break-even rate (SD stops paying), 90% interval\n\n",
            _table(breaks),
        ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        schedule = best.schedule()
    text += [
        f"\n## Best draft length by running batch size per engine (objective: "
        f"{args.objective}; ranges include both ends; p_best: the lowest P(k is best) in the "
        "range)\n\n",
        _table(schedule),
        *(f"\nNote: {w.message}\n" for w in caught),
    ]
    if nxt is not None:
        text += [
            f"\n## What to measure next (to pin the break-even of k={k_next})\n\n",
            _table(nxt.head(5)),
        ]
    report = "".join(text)
    print(report)
    if args.out:
        out = Path(args.out)
        atomic_write(out / "plan.md", lambda p: p.write_text(report, encoding="utf-8"))
        atomic_write(out / "capacity.csv", lambda p: capacity.to_csv(p, index=False))
        if good is not None:
            atomic_write(out / "goodput.csv", lambda p: good.to_csv(p, index=False))
        atomic_write(out / "best_k.csv", lambda p: best.table.to_csv(p, index=False))
        if not breaks.empty:
            atomic_write(out / "break_even.csv", lambda p: breaks.to_csv(p, index=False))
        print(f"wrote {out / 'plan.md'}", file=sys.stderr)
    if args.schedule_json:
        import json
        import re

        # one [from, to, k] range per line, as a person would write the config
        value = re.sub(r"\[\s+(\d+),\s+(\d+),\s+(\d+)\s+\]", r"[\1, \2, \3]",
                       json.dumps(best.to_vllm(), indent=2)) + "\n"  # fmt: skip
        atomic_write(Path(args.schedule_json), lambda p: p.write_text(value, encoding="utf-8"))
        print(f"wrote {args.schedule_json} (merge into vLLM's --speculative-config)",
              file=sys.stderr)  # fmt: skip
    return EXIT_OK


def _table(df: pd.DataFrame) -> str:
    from bayes_sd.report import markdown_table

    return markdown_table(df)


def cmd_frontier(args: argparse.Namespace) -> int:
    """The throughput–interactivity frontier of one configuration, SD off and each k, and of
    its variants (``--compare gpu=B200,H200``)."""
    from bayes_sd.frontier import frontier

    base = _config_from_args(args.config)
    ks = _ks(args.ks)
    if any(k > 0 for k in ks) and "drafter" not in base and "method" not in base:
        raise DataError("draft lengths > 0 need --config drafter=NAME (or method=ngram)")
    if not 0 < args.interval < 1:
        raise DataError(f"--interval must be between 0 and 1, got {args.interval:g}")
    model = _helpers()._load_model(args.model)
    print(_check_config(model, base, ks), end="", file=sys.stderr)
    configs = {"": base}
    for item in args.compare:
        key, sep, values = item.partition("=")
        if not sep or not values.strip():
            raise DataError(f"--compare expects KEY=V1,V2, got {item!r}")
        configs = {
            f"{name} · {v}".strip(" ·"): {**cfg, key.strip(): v.strip()}
            for name, cfg in configs.items()
            for v in values.split(",")
        }
    if list(configs) == [""]:
        configs = {str(base["target"]).rsplit("/", 1)[-1]: base}
    print("bayes-sd frontier: computing over posterior draws ...", file=sys.stderr)
    result = frontier(model, configs, ks=ks, load=args.load, interval=args.interval)
    paths = result.to_files(args.out)
    best = result.table.loc[result.table.groupby("interactivity")["p_frontier"].idxmax()]
    step = max(1, len(best) // 8)
    print(_table(best.iloc[::step][["interactivity", "config", "p_frontier", "throughput_median",
                                     "throughput_lo", "throughput_hi"]].round(3)))  # fmt: skip
    print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return EXIT_OK


def _model_and_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model file from bayes-sd fit")
    parser.add_argument(
        "--config", action="append", default=[], metavar="KEY=VALUE",
        help="the configuration without its load: gpu, target, prefill_len, decode_len, "
        "drafter, alpha, max_num_seqs (ends the best-k schedule), ... (repeat the flag)",
    )  # fmt: skip


def add_commands(add) -> None:
    """Register ``plan`` and ``frontier`` with the parser's ``add``."""
    plan = add(
        "plan",
        help="capacity planning: capacity under an SLO, goodput, break-even, best k",
        description="Answers for one configuration, computed over posterior draws: the highest "
        "rate (or concurrency) meeting every SLO term with the given credibility per draft "
        "length and the term that binds, the break-even rate of each k as an interval, the best "
        "k by batch size, and the run to measure next.",
    )
    _model_and_config(plan)
    plan.add_argument(
        "--slo",
        default="2s",
        help="the SLO: 'p99_ttft_ms<=2000,p99_tpot_ms<=50' (vllm bench sweep form), "
        "'ttft:300 tpot:50' (vLLM goodput, ms, planned as p90), '{ttft: {p99: 2s}}' (YAML/JSON) "
        "or a duration such as 2s (mean E2E) (default: %(default)s)",
    )
    plan.add_argument(
        "--credibility", type=float, default=0.95,
        help="probability every SLO term holds at the answer (default: %(default)s)",
    )  # fmt: skip
    plan.add_argument(
        "--load", choices=["rate", "concurrency", "both"], default="rate",
        help="the load to plan: open-loop request rate, closed-loop concurrency, or both "
        "(default: %(default)s)",
    )  # fmt: skip
    plan.add_argument(
        "--goodput-at", default=None, metavar="L1,L2",
        help="also give the goodput (requests/s meeting every SLO threshold) at these loads "
        "(rates, or concurrencies with --load concurrency)",
    )  # fmt: skip
    plan.add_argument("--ks", default="0,1,2,3,4,5",
                      help="draft lengths (0 = no SD) (default: %(default)s)")  # fmt: skip
    plan.add_argument("--objective", choices=["mean", "quantile", "shortfall"], default="mean",
                      help="best-k objective (default: %(default)s)")  # fmt: skip
    plan.add_argument("--out", default=None, help="folder for plan.md and CSV tables")
    plan.add_argument(
        "--schedule-json", default=None, metavar="FILE",
        help="write the best-k schedule as vLLM speculative-config fields "
        "(num_speculative_tokens, num_speculative_tokens_per_batch_size)",
    )  # fmt: skip
    plan.set_defaults(func=cmd_plan)

    front = add(
        "frontier",
        help="throughput per GPU against interactivity, with bands and P(on the frontier)",
        description="For one configuration at each draft length (and its variants with "
        "--compare), output tokens/s per GPU against tokens/s per user over a load sweep, "
        "with credible bands, and the probability each is on the frontier at each "
        "interactivity level. Writes frontier.csv, frontier_curves.csv, frontier.json and "
        "frontier.png.",
    )
    _model_and_config(front)
    front.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="variants to compare, e.g. gpu=B200,H200 (repeat for a product)",
    )
    front.add_argument("--ks", default="0", help="draft lengths (0 = no SD) (default: 0)")
    front.add_argument(
        "--load",
        choices=["concurrency", "rate"],
        default="concurrency",
        help="the load swept (default: %(default)s)",
    )
    front.add_argument(
        "--interval", type=float, default=0.9, help="credible band (default: %(default)s)"
    )
    front.add_argument("--out", required=True, help="output folder")
    front.set_defaults(func=cmd_frontier)
