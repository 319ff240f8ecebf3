"""Command templates: split like a shell would (never run by one), then fill `{{placeholders}}`.

Substitution happens after splitting, so a value with spaces stays one argument and no value can
inject another. Problems are reported at the exact column of the placeholder.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from maas.compiler.diagnostics import MAX_PER_FILE, Diagnostic, Position, did_you_mean
from maas.compiler.loader import PathKey, SourceDoc

PLACEHOLDERS = ("port", "model_path", "model_name", "hf_cache", "gpu_ids", "gpu_count")
# No nested or adjacent quantifiers: `\s*([^{}]*?)\s*` took cubic time on "{{" and many spaces
# (a 2 KB spec kept the compiler busy for 9 s); names are stripped in code instead.
_TOKEN = re.compile(r"\{\{([^{}]*)\}\}")
MAX_COMMAND_CHARS = 128 * 1024


@dataclass(frozen=True)
class Template:
    """A command split into arguments, each remembering the YAML path it came from."""

    args: tuple[str, ...]
    paths: tuple[PathKey, ...]


def split_command(
    command: str | Sequence[str], doc: SourceDoc, path: PathKey
) -> tuple[Template | None, list[Diagnostic]]:
    if isinstance(command, str):
        if len(command) > MAX_COMMAND_CHARS:
            # shlex takes quadratic time on long words; no kernel passes such an argv anyway.
            return None, [
                Diagnostic(
                    "command",
                    f"command is longer than {MAX_COMMAND_CHARS} characters",
                    doc.at(path),
                    hints=("the kernel limits one argument to 128 KiB (MAX_ARG_STRLEN)",),
                )
            ]
        try:
            args = shlex.split(command, comments=False, posix=True)
        except ValueError as exc:
            return None, [
                Diagnostic(
                    "command",
                    f"cannot split command: {exc}",
                    doc.at(path),
                    hints=("quote arguments with matching ' or \"",),
                )
            ]
        return Template(tuple(args), tuple(path for _ in args)), []
    return Template(tuple(command), tuple((*path, i) for i in range(len(command)))), []


def check_template(template: Template, doc: SourceDoc) -> list[Diagnostic]:
    diagnostics: list[Diagnostic] = []
    for arg, path in zip(template.args, template.paths, strict=True):
        diagnostics.extend(_check_arg(arg, doc, path))
        if len(diagnostics) > MAX_PER_FILE:
            break  # no more are shown (diagnostics.bounded): not worth finding
    return diagnostics


def _check_arg(arg: str, doc: SourceDoc, path: PathKey) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    for match in _TOKEN.finditer(arg):
        name = match.group(1).strip()
        if name not in PLACEHOLDERS:
            found.append(
                Diagnostic(
                    "template",
                    f"unknown placeholder '{match.group(0)}'",
                    locate(doc, path, match.group(0)),
                    hints=_placeholder_hint(name),
                )
            )
    rest = _TOKEN.sub("", arg)
    if "{{" in rest:
        fragment = arg[arg.rfind("{{") :]
        found.append(
            Diagnostic(
                "template",
                "unterminated '{{' in command",
                locate(doc, path, fragment),
                hints=("close it with '}}'",),
            )
        )
    elif "}}" in rest:
        found.append(
            Diagnostic("template", "'}}' without a matching '{{'", locate(doc, path, "}}"))
        )
    return found


def render(template: Sequence[str], values: Mapping[str, str]) -> list[str]:
    return [
        _TOKEN.sub(lambda m: values.get(m.group(1).strip(), m.group(0)), arg) for arg in template
    ]


def locate(doc: SourceDoc, path: PathKey, needle: str) -> Position:
    """The exact position of `needle` at or after the value at `path`, else the value's start."""
    start = doc.at(path)
    lines = doc.lines
    for number in range(start.line, min(start.line + 200, len(lines) + 1)):
        text = lines[number - 1]
        offset = text.find(needle, start.col - 1 if number == start.line else 0)
        if offset >= 0:
            return Position(start.file, number, offset + 1)
    return start


def _placeholder_hint(name: str) -> tuple[str, ...]:
    close = did_you_mean(name, PLACEHOLDERS)
    if close:
        return (close[0].replace("'", "'{{", 1).replace("'?", "}}'?"),)
    return ("known placeholders: " + ", ".join("{{" + p + "}}" for p in PLACEHOLDERS),)
