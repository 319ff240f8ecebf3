"""Diagnostics and the one error type.

Every user-facing problem, from YAML syntax to a model that does not fit, is a `Diagnostic` with a
code and a position. `MaasError` carries one or more of them; only the CLI prints them and chooses
exit codes. Rendering follows gcc/ruff (`file:line:col: error: message [code]`) or GitHub Actions
annotations.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Self

Severity = Literal["error", "warning"]
# Problems kept per file: one hostile file (a megabyte of bad placeholders) must not turn into
# hundreds of thousands of diagnostics, seconds of work and a response of hundreds of megabytes.
MAX_PER_FILE = 100


@dataclass(frozen=True, order=True)
class Position:
    """A 1-based location in a file; `line == 0` means the whole file."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    """One user-facing problem."""

    code: str
    message: str
    position: Position | None = None
    severity: Severity = "error"
    hints: tuple[str, ...] = field(default=())

    def render(self) -> str:
        where = f"{self.position}: " if self.position else ""
        lines = [f"{where}{self.severity}: {self.message} [{self.code}]"]
        lines.extend(f"  hint: {hint}" for hint in self.hints)
        return "\n".join(lines)

    def render_github(self) -> str:
        kind = "error" if self.severity == "error" else "warning"
        props = []
        if self.position:
            props.append(f"file={self.position.file}")
            if self.position.line:
                props.append(f"line={self.position.line},col={self.position.col}")
        text = self.message + "".join(f" (hint: {h})" for h in self.hints)
        text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        head = f"::{kind} " + ",".join(props) if props else f"::{kind}"
        return f"{head}::{text} [{self.code}]"

    def as_dict(self) -> dict[str, object]:
        pos = self.position
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "file": pos.file if pos else None,
            "line": pos.line if pos else None,
            "col": pos.col if pos else None,
            "hints": list(self.hints),
        }


class MaasError(Exception):
    """The one exception type: positioned diagnostics plus whether retrying may help."""

    def __init__(self, diagnostics: Iterable[Diagnostic], *, retryable: bool = False) -> None:
        self.diagnostics: tuple[Diagnostic, ...] = tuple(bounded(diagnostics))
        if not self.diagnostics:
            raise ValueError("MaasError needs at least one diagnostic")
        self.retryable = retryable
        super().__init__("\n".join(d.render() for d in self.diagnostics))

    @classmethod
    def single(
        cls,
        code: str,
        message: str,
        *,
        position: Position | None = None,
        hints: Sequence[str] = (),
        retryable: bool = False,
    ) -> Self:
        return cls([Diagnostic(code, message, position, hints=tuple(hints))], retryable=retryable)


def bounded(diagnostics: Iterable[Diagnostic], limit: int = MAX_PER_FILE) -> list[Diagnostic]:
    """The first `limit` diagnostics of each file, and one more saying that the rest of that
    file's problems are not shown."""
    kept: list[Diagnostic] = []
    counts: dict[str, int] = {}
    for diagnostic in diagnostics:
        file = diagnostic.position.file if diagnostic.position else ""
        count = counts[file] = counts.get(file, 0) + 1
        if count <= limit:
            kept.append(diagnostic)
        elif count == limit + 1 and diagnostic.code != "too-many-problems":
            kept.append(
                Diagnostic(
                    "too-many-problems",
                    f"more than {limit} problems in this file; the rest are not shown",
                    Position(file) if file else None,
                    hints=("fix the ones shown first",),
                )
            )
    return kept


def errors_only(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diagnostics if d.severity == "error"]


def raise_if_errors(diagnostics: Sequence[Diagnostic]) -> None:
    """Raise all collected diagnostics (warnings included, for context) when any is an error."""
    if errors_only(diagnostics):
        raise MaasError(sorted(diagnostics, key=_sort_key))


def _sort_key(d: Diagnostic) -> tuple[str, int, int, str]:
    pos = d.position or Position("")
    return (pos.file, pos.line, pos.col, d.code)


def did_you_mean(word: str, choices: Iterable[str]) -> tuple[str, ...]:
    """A hint naming the closest valid choice, or nothing when none is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return (f"did you mean '{match[0]}'?",) if match else ()
