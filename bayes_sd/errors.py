"""Domain errors of bayes_sd."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DataError", "Problem"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where it is (file, record, field) and what is wrong."""

    message: str
    file: str | None = None
    record: str | int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.record is not None:
            where.append(f"record {self.record}")
        if self.field:
            where.append(f"field '{self.field}'")
        prefix = ": ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class DataError(ValueError):
    """Bad input data. The message names the file, the record and the field.

    ``problems`` holds every problem found (validation reports them all at once, not just the
    first); ``file``, ``record`` and ``field`` are those of the first problem.
    """

    MAX_SHOWN = 20

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
        lines = [str(p) for p in self.problems[: self.MAX_SHOWN]]
        if len(self.problems) > self.MAX_SHOWN:
            lines.append(f"... and {len(self.problems) - self.MAX_SHOWN} more problems")
        text = (
            lines[0]
            if len(lines) == 1
            else f"{len(self.problems)} problems:\n  " + "\n  ".join(lines)
        )
        super().__init__(text)
