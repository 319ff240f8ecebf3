"""Observed containers for the agent's pure tests: what Docker would report, the fields a
test does not care about left at plain values."""

from __future__ import annotations

import dataclasses
from typing import Any

from maas.agent.reconcile.observe import ObservedContainer


def observed_container(
    cid: str,
    deployment: str,
    replica: int = 0,
    spec_hash: str = "",
    state: str = "running",
    **fields: Any,
) -> ObservedContainer:
    plain = ObservedContainer(
        id=cid,
        name="",
        deployment=deployment,
        replica=replica,
        spec_hash=spec_hash,
        state=state,
        exit_code=0,
        started_at="",
        finished_at="",
        port=40000,
        error="",
    )
    return dataclasses.replace(plain, **fields)
