"""Reading spec and node files from paths given on the command line (the CLI's file I/O edge)."""

from __future__ import annotations

from pathlib import Path

from maas.compiler import MAX_BYTES, Diagnostic, MaasError, Position

YAML_SUFFIXES = (".yaml", ".yml")


def collect_files(paths: list[str]) -> list[Path]:
    """Files named, plus `*.yaml`/`*.yml` under directories (recursively, skipping hidden ones)."""
    found: list[Path] = []
    missing: list[Diagnostic] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.suffix in YAML_SUFFIXES
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.is_file() or raw == "-":
            found.append(path)
        else:
            missing.append(Diagnostic("file", "no such file or directory", Position(raw)))
    if missing:
        raise MaasError(missing)
    return found


def read_sources(paths: list[str]) -> dict[str, str]:
    sources: dict[str, str] = {}
    problems: list[Diagnostic] = []
    for path in collect_files(paths):
        name = str(path)
        large = False
        try:
            if name == "-":
                import sys

                name = "<stdin>"
                text = sys.stdin.read(MAX_BYTES + 1)
            else:
                # Size first: a huge file is refused without being read.
                large = path.stat().st_size > MAX_BYTES
                text = "" if large else path.read_text(encoding="utf-8")
            if large or len(text) > MAX_BYTES:
                problems.append(
                    Diagnostic(
                        "too-large",
                        f"file is larger than {MAX_BYTES >> 20} MiB",
                        Position(name),
                        hints=("a spec file is a few kilobytes; is this the right file?",),
                    )
                )
                continue
            sources[name] = text
        except UnicodeDecodeError as exc:
            problems.append(Diagnostic("encoding", f"not UTF-8 text: {exc.reason}", Position(name)))
        except OSError as exc:
            problems.append(Diagnostic("file", exc.strerror or str(exc), Position(name)))
    if problems:
        raise MaasError(problems)
    return sources
