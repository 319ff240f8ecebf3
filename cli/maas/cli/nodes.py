"""Loading the one Node profile that `plan` and `validate --node` compile against."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from maas.cli.inputs import read_sources
from maas.compiler import (
    Diagnostic,
    Loaded,
    MaasError,
    Node,
    Position,
    load_sources,
    raise_if_errors,
)


def load_node(path: str) -> Node:
    documents = load_sources(read_sources([path]), kinds=("Node",))
    raise_if_errors(documents.diagnostics)
    if len(documents.nodes) != 1:
        raise MaasError(
            [
                Diagnostic(
                    "node",
                    f"expected exactly one Node document, found {len(documents.nodes)}",
                    Position(path),
                )
            ]
        )
    return documents.nodes[0].model


def single_node(nodes: Sequence[Loaded[Node]]) -> Node:
    """The one Node profile found among the inputs; several need `--node` to choose."""
    if len(nodes) > 1:
        names = ", ".join(n.model.metadata.name for n in nodes)
        raise MaasError(
            [
                Diagnostic(
                    "node",
                    f"found {len(nodes)} Node profiles ({names}); choose one with --node",
                    nodes[1].doc.at(("metadata", "name")),
                )
            ]
        )
    return nodes[0].model


def probe_node() -> Node:
    """This host's Node profile, from the agent's probe."""
    from maas.host.probe import probe

    return probe(agent_cache_dir())


def agent_cache_dir() -> Path:
    """The model cache of this host's agent, as its config file (if any) sets it: the file
    system whose size the disk check at validate time compares a model with."""
    from maas.agent.config import load_config

    return load_config(None, {}).cache_dir
