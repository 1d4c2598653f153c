"""Domain errors of bayes_sd."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["DataError", "Problem", "advice", "interface"]

# the longest message, file name and record a Problem prints (an error never echoes a whole
# file, a huge number or an expanded YAML alias)
MAX_MESSAGE, MAX_WHERE = 400, 160
_INTERFACE: ContextVar[str] = ContextVar("bayes_sd_interface", default="python")


@contextmanager
def interface(name: str) -> Iterator[None]:
    """Within this block, advice in error messages speaks to ``name``'s user (``"cli"``: the
    ``bayes-sd`` flags; otherwise the Python API)."""
    token = _INTERFACE.set(name)
    try:
        yield
    finally:
        _INTERFACE.reset(token)


def advice(*, cli: str, python: str) -> str:
    """The advice for the interface in use (see :func:`interface`)."""
    return cli if _INTERFACE.get() == "cli" else python


def _printable(value: object, limit: int) -> str:
    """``value`` as text safe to print anywhere (lone surrogates and undecodable bytes escaped,
    control characters shown), at most ``limit`` characters."""
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    text = "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where it is (file, record, field) and what is wrong."""

    message: str
    file: str | None = None
    record: str | int | None = None
    field: str | None = None

    def __str__(self) -> str:
        return self.text()

    def text(self, with_file: bool = True) -> str:
        """The problem as one line; without its file where a header names it."""
        where = []
        if self.file and with_file:
            where.append(_printable(self.file, MAX_WHERE))
        if self.record is not None:
            where.append(f"record {_printable(self.record, MAX_WHERE)}")
        if self.field:
            where.append(f"field '{_printable(self.field, MAX_WHERE)}'")
        prefix = ": ".join(where)
        message = _printable(self.message, MAX_MESSAGE)
        return f"{prefix}: {message}" if prefix else message


class DataError(ValueError):
    """Bad input data. The message names the file, the record and the field.

    ``problems`` holds every problem found (validation reports them all at once, not just the
    first); ``file``, ``record`` and ``field`` are those of the first problem.
    """

    MAX_SHOWN = 20
    MAX_TEXT = 1000  # problems listed until the message reaches this length

    def __init__(
        self,
        message: str | None = None,
        *,
        file: str | None = None,
        record: str | int | None = None,
        field: str | None = None,
        problems: Sequence[Problem] | None = None,
    ) -> None:
        if problems is None:
            problems = [Problem(message or "invalid data", file, record, field)]
        self.problems = list(problems)
        first = self.problems[0]
        self.file, self.record, self.field = first.file, first.record, first.field
        if len(self.problems) == 1:
            super().__init__(str(first))
            return
        # one file: named once in the header (a long temporary path repeated per problem made
        # a 15-problem message 1,380 characters long)
        files = {p.file for p in self.problems}
        one_file = len(files) == 1 and first.file
        header = f"{len(self.problems)} problems"
        header += f" in {_printable(first.file, MAX_WHERE)}:" if one_file else ":"
        lines, size = [], len(header)
        for p in self.problems[: self.MAX_SHOWN]:
            line = p.text(with_file=not one_file)
            if lines and size + len(line) > self.MAX_TEXT:
                break
            lines.append(line)
            size += len(line) + 3
        if len(lines) < len(self.problems):
            lines.append(f"... and {len(self.problems) - len(lines)} more problems")
        super().__init__(header + "\n  " + "\n  ".join(lines))
