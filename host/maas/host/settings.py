"""A process's settings: its YAML file (when it exists, or when named) merged with the
command-line flags that override it. An error names the file's line, or the flag it came from."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from maas.compiler import Diagnostic, MaasError, Position, diagnostics_from_validation, load_text

Settings = TypeVar("Settings", bound=BaseModel)


def load_settings(
    model: type[Settings], path: Path | None, default: Path, overrides: Mapping[str, Any]
) -> Settings:
    """`path` (or `default`, when it exists) merged with the non-None `overrides`."""
    flags = {k: v for k, v in overrides.items() if v is not None}
    try:
        alone = model.model_validate(flags)  # first, so a bad flag is not blamed on the file
    except ValidationError as exc:
        raise MaasError(_flag_diagnostics(exc)) from None
    file = path or default
    if path is None and not file.exists():
        return alone
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise MaasError.single(
            "config", f"cannot read: {exc.strerror}", position=Position(str(file))
        ) from exc
    docs = load_text(text, str(file))
    if not docs:
        return alone
    doc = docs[0]
    if not isinstance(doc.data, dict):
        raise MaasError.single("config", "the configuration must be a mapping", position=doc.at(()))
    try:
        return model.model_validate({**doc.data, **flags})
    except ValidationError as exc:
        raise MaasError(diagnostics_from_validation(exc, doc, model)) from None


def _flag_diagnostics(exc: ValidationError) -> list[Diagnostic]:
    diagnostics = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        diagnostics.append(Diagnostic("config", f"'{where}' (from the command line): {message}"))
    return diagnostics
