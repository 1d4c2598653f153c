"""Reading files without trusting them: size limits, no code execution, DataError on failure."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from bayes_sd.errors import DataError

# a detailed vLLM result of 10k prompts is tens of MB; parsed JSON takes ~10x its size
MAX_BYTES = 64 * 2**20
MAX_ROWS = 1_000_000  # rows of a tidy table (a fleet of 10^5 runs fits)
MAX_SIDECAR_BYTES = 2**20
MAX_FILES = 10_000


def read_text(path: Path, max_bytes: int = MAX_BYTES) -> str:
    try:
        size = path.stat().st_size
    except OSError as err:
        raise DataError(f"cannot read: {err.strerror or err}", file=str(path)) from err
    if size > max_bytes:
        raise DataError(
            f"file is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit "
            "(pass max_bytes=... to read larger files)",
            file=str(path),
        )
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as err:
        raise DataError(f"cannot read: {err.strerror or err}", file=str(path)) from err
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 text (byte {err.start})", file=str(path)) from err


def _reject_constant(name: str) -> float:
    # Python's json writes inf/nan as Infinity/NaN; vLLM relies on that for request_rate=inf.
    return {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}[name]


def parse_json_documents(text: str, file: str) -> list[tuple[str, Any]]:
    """One JSON document, or JSON lines (``--append-result``): ``[(record label, object)]``."""
    if not text.strip():
        raise DataError("the file is empty", file=file)
    try:
        return [("0", json.loads(text, parse_constant=_reject_constant))]
    except RecursionError as err:
        raise DataError("JSON nested too deeply", file=file) from err
    except json.JSONDecodeError as whole_err:
        if whole_err.msg != "Extra data":
            raise DataError(
                f"invalid JSON at line {whole_err.lineno}, column {whole_err.colno}: "
                f"{whole_err.msg} (truncated file?)",
                file=file,
            ) from whole_err
    docs = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            docs.append((f"line {lineno}", json.loads(line, parse_constant=_reject_constant)))
        except RecursionError as err:
            raise DataError("JSON nested too deeply", file=file, record=f"line {lineno}") from err
        except json.JSONDecodeError as err:
            raise DataError(
                f"invalid JSON line: {err.msg} at column {err.colno} (truncated file?)",
                file=file,
                record=f"line {lineno}",
            ) from err
    return docs


MAX_YAML_NODES = 2_000_000  # a large GuideLLM report holds a few hundred thousand


class _BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader (no Python objects, no code), with a bound on the nodes a
    document expands to: a 438-byte file of nested aliases ("billion laughs") stands for 10^9
    of them, which any later formatting or walk would materialise."""

    def compose_document(self):
        node = super().compose_document()
        sizes: dict[int, int] = {}

        def size(n) -> int:
            if id(n) not in sizes:
                if isinstance(n, yaml.MappingNode):
                    sizes[id(n)] = 1 + sum(size(k) + size(v) for k, v in n.value)
                elif isinstance(n, yaml.SequenceNode):
                    sizes[id(n)] = 1 + sum(size(v) for v in n.value)
                else:
                    sizes[id(n)] = 1
                if sizes[id(n)] > MAX_YAML_NODES:
                    raise yaml.YAMLError(
                        f"the document expands to over {MAX_YAML_NODES:,} nodes (nested aliases?)"
                    )
            return sizes[id(n)]

        if node is not None:
            size(node)
        return node


def load_yaml(text: str, file: str) -> Any:
    """The YAML document of ``text`` as plain data (the safe loader, bounded): any problem is a
    ``DataError`` naming ``file``."""
    try:
        return yaml.load(text, Loader=_BoundedSafeLoader)
    except RecursionError as err:
        raise DataError("YAML nested too deeply", file=file) from err
    except (ValueError, TypeError, OverflowError) as err:  # 2001-02-30, !!int abc, ...
        raise DataError(f"invalid YAML value: {err}", file=file) from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise DataError(f"invalid YAML{where}: {getattr(err, 'problem', err)}", file=file) from err
