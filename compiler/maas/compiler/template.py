"""Command templates: split like a shell would (never run by one), then fill `{{placeholders}}`.

Substitution happens after splitting, so a value with spaces stays one argument and no value can
inject another. Problems are reported at the exact column of the placeholder. `{{ port }}` (spaces
inside, a Jinja habit) is the same placeholder as `{{port}}`; `{port}`, `${PORT}` and `$PORT` are
passed as they are (no shell runs the command), which is worth a warning when the name is one of
ours.
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
# `{name}` not inside `{{...}}`, `${name}` and `$name`: one alternative each, no nested quantifiers.
_LOOKALIKE = re.compile(
    r"(?<![{$])\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)"
)
MAX_COMMAND_CHARS = 128 * 1024


@dataclass(frozen=True)
class Template:
    """A command split into arguments, each remembering the YAML path it came from."""

    args: tuple[str, ...]
    paths: tuple[PathKey, ...]
    raw: str | None = None  # the string it was split from (checked whole, for exact columns)

    def has(self, placeholder: str) -> bool:
        return any(
            m.group(1).strip() == placeholder for arg in self.args for m in _TOKEN.finditer(arg)
        )


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
        # `{{ port }}` stays one argument: the spaces inside a placeholder are not separators.
        normal = _TOKEN.sub(lambda m: "{{" + m.group(1).strip() + "}}", command)
        try:
            args = shlex.split(normal, comments=False, posix=True)
        except ValueError as exc:
            return None, [
                Diagnostic(
                    "command",
                    f"cannot split command: {exc}",
                    doc.at(path),
                    hints=("quote arguments with matching ' or \"",),
                )
            ]
        return Template(tuple(args), tuple(path for _ in args), raw=command), []
    return Template(tuple(command), tuple((*path, i) for i in range(len(command)))), []


def check_template(template: Template, doc: SourceDoc) -> list[Diagnostic]:
    if template.raw is not None and template.paths:
        return _check_arg(template.raw, doc, template.paths[0])
    diagnostics: list[Diagnostic] = []
    for arg, path in zip(template.args, template.paths, strict=True):
        diagnostics.extend(_check_arg(arg, doc, path))
        if len(diagnostics) > MAX_PER_FILE:
            break  # no more are shown (diagnostics.bounded): not worth finding
    return diagnostics


def _check_arg(arg: str, doc: SourceDoc, path: PathKey) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    tokens = list(_TOKEN.finditer(arg))
    for match in tokens:
        name = match.group(1).strip()
        if name not in PLACEHOLDERS:
            found.append(
                Diagnostic(
                    "template",
                    f"unknown placeholder '{match.group(0)}'",
                    _nth(doc, path, arg, match.group(0), match.start()),
                    hints=_placeholder_hint(name),
                )
            )
    inside = [range(m.start(), m.end()) for m in tokens]
    for needle, message, hint in (
        ("{{", "unterminated '{{' in command", "close it with '}}'"),
        ("}}", "'}}' without a matching '{{'", "open it with '{{'"),
    ):
        stray = [i for i in _occurrences(arg, needle) if not any(i in r for r in inside)]
        if stray:
            where = _nth(doc, path, arg, needle, stray[0])
            found.append(Diagnostic("template", message, where, hints=(hint,)))
            break
    for match in _LOOKALIKE.finditer(_TOKEN.sub(lambda m: " " * len(m.group(0)), arg)):
        name = next(g for g in match.groups() if g is not None)
        if name.lower() in PLACEHOLDERS:
            text = match.group(0)
            found.append(
                Diagnostic(
                    "template-lookalike",
                    f"'{text}' is passed to the program as it is, not replaced",
                    _nth(doc, path, arg, text, match.start()),
                    "warning",
                    hints=(
                        f"did you mean '{{{{{name.lower()}}}}}'? commands are not run by a "
                        "shell, and only {{...}} placeholders are filled in",
                    ),
                )
            )
    return found


def _occurrences(text: str, needle: str) -> list[int]:
    """Start offsets of `needle` in `text`, overlapping ones skipped (`{{{` holds one `{{`)."""
    found, at = [], text.find(needle)
    while at >= 0:
        found.append(at)
        at = text.find(needle, at + len(needle))
    return found


def _nth(doc: SourceDoc, path: PathKey, arg: str, needle: str, offset: int) -> Position:
    """The position of the occurrence of `needle` that starts at `offset` in `arg`: the same
    occurrence counted in the source lines from the value's start (escapes and line folding in
    the YAML shift columns, not the order of occurrences)."""
    return locate(doc, path, needle, arg[:offset].count(needle))


def placeholders(template: Sequence[str]) -> set[str]:
    """The placeholder names the arguments use."""
    return {m.group(1).strip() for arg in template for m in _TOKEN.finditer(arg)}


def render(template: Sequence[str], values: Mapping[str, str]) -> list[str]:
    return [
        _TOKEN.sub(lambda m: values.get(m.group(1).strip(), m.group(0)), arg) for arg in template
    ]


def locate(doc: SourceDoc, path: PathKey, needle: str, skip: int = 0) -> Position:
    """The exact position of `needle` (after `skip` earlier ones) at or after the value at
    `path`, else the value's start."""
    start = doc.at(path)
    lines = doc.lines
    for number in range(start.line, min(start.line + 200, len(lines) + 1)):
        text = lines[number - 1]
        offset = text.find(needle, start.col - 1 if number == start.line else 0)
        while offset >= 0:
            if skip == 0:
                return Position(start.file, number, offset + 1)
            skip -= 1
            offset = text.find(needle, offset + len(needle))
    return start


def _placeholder_hint(name: str) -> tuple[str, ...]:
    close = did_you_mean(name, PLACEHOLDERS)
    if close:
        return (close[0].replace("'", "'{{", 1).replace("'?", "}}'?"),)
    return ("known placeholders: " + ", ".join("{{" + p + "}}" for p in PLACEHOLDERS),)
