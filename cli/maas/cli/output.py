"""Printing for people and scripts: diagnostics, tables, JSON; colour only on a TTY, no NO_COLOR."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from maas.cli import exitcodes


def use_color(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def print_diagnostics(
    diagnostics: Iterable[Any], fmt: str = "text", stream: TextIO = sys.stderr
) -> None:
    from maas.compiler import bounded

    color = use_color(stream) and fmt == "text"
    for diagnostic in bounded(diagnostics):
        if fmt == "github":
            print(diagnostic.render_github(), file=stream)
            continue
        text = diagnostic.render()
        if color:
            word = f"{diagnostic.severity}:"
            code = "\033[1;31m" if diagnostic.severity == "error" else "\033[1;33m"
            text = text.replace(word, f"{code}{word}\033[0m", 1)
        print(text, file=stream)


def summary_line(diagnostics: Sequence[Any]) -> str | None:
    """`2 errors and 1 warning in 3 files`, or None when there is nothing to sum up."""
    if not diagnostics:
        return None
    errors = sum(1 for d in diagnostics if d.severity == "error")
    warnings = len(diagnostics) - errors
    files = {d.position.file for d in diagnostics if d.position is not None}
    parts = [_count(errors, "error")] + ([_count(warnings, "warning")] if warnings else [])
    where = f" in {_count(len(files), 'file')}" if files else ""
    return " and ".join(parts) + where


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def report_error(exc: BaseException) -> int:
    """MaasError -> its diagnostics and exit 1; anything else is our bug -> a short note and 70."""
    from maas.compiler import MaasError

    if isinstance(exc, MaasError):
        print_diagnostics(exc.diagnostics)
        if any(d.position is not None and d.position.line for d in exc.diagnostics):
            print(summary_line(exc.diagnostics), file=sys.stderr)  # problems of files
        from maas.cli.client import NoAgent

        return exitcodes.UNAVAILABLE if isinstance(exc, NoAgent) else exitcodes.FAILED
    print(
        f"maasctl: internal error: {type(exc).__name__}: {exc}\n"
        "This is a bug in MaaS-Base. Please report it with the command you ran "
        "(set MAAS_DEBUG=1 for the traceback).",
        file=sys.stderr,
    )
    if os.environ.get("MAAS_DEBUG"):
        import traceback

        traceback.print_exception(exc)
    return exitcodes.INTERNAL


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An aligned plain-text table."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
