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
    """Ports for each deployment name (`wanted` maps name -> replica count).

    Deployments with replicas are served first; one with `replicas: 0` runs nothing, so it takes
    a port only from what they left (one, for its `{{port}}`), and when none is left it is
    given its starting port without holding it: scaled-to-zero deployments never exhaust the
    range for running ones.
    """
    low, high = port_range
    size = high - low + 1
    taken: set[int] = set(reserved)
    result: dict[str, list[int]] = {}
    running = sorted(n for n in wanted if wanted[n] > 0)
    idle = sorted(n for n in wanted if wanted[n] <= 0)
    for group in (running, idle):
        for name in group:
            kept = [
                p for p in (previous or {}).get(name, ()) if low <= p <= high and p not in taken
            ]
            result[name] = kept[: max(1, wanted[name])]
            taken.update(result[name])
        for name in group:
            need = max(1, wanted[name]) - len(result[name])
            start = zlib.crc32(name.encode()) % size
            for step in range(size if need > 0 else 0):
                port = low + (start + step) % size
                if port not in taken:
                    result[name].append(port)
                    taken.add(port)
                    need -= 1
                    if need == 0:
                        break
            if need and wanted[name] <= 0:
                result[name] = [low + start]  # nothing listens on it: shared, not held
            elif need:
                raise MaasError.single(
                    "ports",
                    f"port range {low}-{high} is exhausted while allocating '{name}'",
                    hints=("widen the node's port range",),
                )
    return result
