"""Set-up shared by the on-demand proof (tests/gateway/test_ondemand_llama.py) and its
benchmark (bench/ondemand.py): tiny llama.cpp models in one group on a node whose host-memory
budget holds one of them, and the agent's API over its socket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

# Each tiny model needs about 20 MB of host memory at this context (the plan's estimate): the
# node's budget holds one of them, not two.
BUDGET = 30 << 20
NODE = """apiVersion: maas/v1
kind: Node
metadata: {{name: {name}}}
spec:
  cpu: {{cores: 2, threads: 2}}
  memory: {{total_bytes: 8589934592, available_bytes: {budget}}}
"""


def turns_spec(name: str, model: Path, image: str, idle_timeout_s: int) -> str:
    """A member of group `turns`: a local GGUF served by llama-server, on demand."""
    return (
        f"apiVersion: maas/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n"
        f"  source: local_path\n  path: {model}\n  image: {image}\n"
        "  context_length: 512\n  allow_cpu_offload: true\n"
        "  health: {startup_timeout_s: 120}\n"
        f"  on_demand: {{idle_timeout_s: {idle_timeout_s}, group: turns}}\n"
    )


async def agent_get(socket: Path, route: str) -> Any:
    connector = aiohttp.UnixConnector(path=str(socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"http://agent{route}") as response,
    ):
        return await response.json()
