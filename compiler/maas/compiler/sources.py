"""Many files' text -> one set of typed documents, with problems of all files collected together."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from maas.compiler.diagnostics import Diagnostic, MaasError, Position, bounded
from maas.compiler.documents import Documents, parse_documents
from maas.compiler.loader import MAX_TOTAL_BYTES, load_text


def load_sources(
    sources: Mapping[str, str], kinds: Sequence[str] = ("Deployment", "Node")
) -> Documents:
    """Parse and validate every document of every file; syntax errors do not stop other files."""
    result = Documents([], [], [])
    total = 0
    for file in sorted(sources):
        total += len(sources[file])
        if total > MAX_TOTAL_BYTES:
            result.diagnostics.append(
                Diagnostic(
                    "too-large",
                    f"the files together are larger than {MAX_TOTAL_BYTES >> 20} MiB; "
                    "this file and the ones after it are not read",
                    Position(file),
                    hints=("apply or validate them in smaller sets",),
                )
            )
            break
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
    result.diagnostics = bounded(result.diagnostics)
    return result
