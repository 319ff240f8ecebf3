"""Many files' text -> one set of typed documents, with problems of all files collected together."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from maas.compiler.diagnostics import Diagnostic, MaasError, Position
from maas.compiler.documents import Documents, parse_documents
from maas.compiler.loader import load_text


def load_sources(
    sources: Mapping[str, str], kinds: Sequence[str] = ("Deployment", "Node")
) -> Documents:
    """Parse and validate every document of every file; syntax errors do not stop other files."""
    result = Documents([], [], [])
    for file in sorted(sources):
        try:
            docs = load_text(sources[file], file)
        except MaasError as exc:
            result.diagnostics.extend(exc.diagnostics)
            continue
        if not docs:
            result.diagnostics.append(
                Diagnostic(
                    "empty-file",
                    "the file holds no document: nothing in it is deployed",
                    Position(file),
                    "warning",
                )
            )
            continue
        parsed = parse_documents(docs, kinds)
        result.deployments.extend(parsed.deployments)
        result.nodes.extend(parsed.nodes)
        result.diagnostics.extend(parsed.diagnostics)
    return result


def diagnostics_of(documents: Documents) -> list[Diagnostic]:
    return list(documents.diagnostics)
