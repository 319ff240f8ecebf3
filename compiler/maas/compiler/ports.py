"""Host port allocation: deterministic from the deployment name, stable across re-plans.

Ports a previous Plan gave a deployment are kept while still free, so an unrelated change never
moves a running deployment; new deployments start at a hash of their name and probe upward.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

from maas.compiler.diagnostics import MaasError


def allocate_ports(
    wanted: Mapping[str, int],
    port_range: tuple[int, int],
    previous: Mapping[str, Sequence[int]] | None = None,
    reserved: frozenset[int] = frozenset(),
) -> dict[str, list[int]]:
    """Ports for each deployment name (`wanted` maps name -> replica count, at least one port)."""
    low, high = port_range
    size = high - low + 1
    taken: set[int] = set(reserved)
    result: dict[str, list[int]] = {}
    for name in sorted(wanted):
        kept = [p for p in (previous or {}).get(name, ()) if low <= p <= high and p not in taken]
        kept = kept[: max(1, wanted[name])]
        result[name] = kept
        taken.update(kept)
    for name in sorted(wanted):
        need = max(1, wanted[name]) - len(result[name])
        if need <= 0:
            continue
        start = zlib.crc32(name.encode()) % size
        for step in range(size):
            port = low + (start + step) % size
            if port not in taken:
                result[name].append(port)
                taken.add(port)
                need -= 1
                if need == 0:
                    break
        if need:
            raise MaasError.single(
                "ports",
                f"port range {low}-{high} is exhausted while allocating '{name}'",
                hints=("widen the node's port range",),
            )
    return result
