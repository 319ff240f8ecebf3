"""Loading the one Node profile that `plan` and `validate --node` compile against."""

from __future__ import annotations

from maas.cli.inputs import read_sources
from maas.compiler import MaasError, Node, load_sources
from maas.compiler.diagnostics import Diagnostic, Position, raise_if_errors


def load_node(path: str) -> Node:
    documents = load_sources(read_sources([path]), kinds=("Node",))
    raise_if_errors(documents.diagnostics)
    if len(documents.nodes) != 1:
        raise MaasError([Diagnostic(
            "node", f"expected exactly one Node document, found {len(documents.nodes)}",
            Position(path),
        )])
    return documents.nodes[0].model


def probe_node() -> Node:
    """This host's Node profile, from the agent's probe."""
    from maas.agent.probe import probe

    return probe()
