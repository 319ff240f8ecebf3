"""A roll-back re-checks GPU memory: the previous version comes back only where it still fits
beside the other deployments (maas.agent.reconcile.rollback)."""

from __future__ import annotations

from typing import Any

from maas.agent.reconcile.rollback import rollback_short
from maas.compiler.plan import Plan, PlanDeployment

GIB = 1 << 30


def deployment(name: str, gpus: list[str], vram: list[int], replicas: int = 1) -> PlanDeployment:
    return PlanDeployment.model_validate(
        {
            "name": name,
            "backend": "custom",
            "backend_rule": "explicit",
            "image": "x",
            "command": [],
            "port": 1,
            "replicas": replicas,
            "model": {"source": "local_path", "path": "/x", "download": False},
            "placement": {"mode": "gpu", "gpus": gpus},
            "estimate": {"vram_bytes": vram},
        }
    )


def plan(by_deployment: dict[str, int], usable: int = 20 * GIB) -> Plan:
    total: dict[str, Any] = {
        "device": "gpu0",
        "uuid": "GPU-a",
        "name": "H200",
        "usable_bytes": usable,
        "allocated_bytes": sum(by_deployment.values()),
        "headroom_bytes": usable - sum(by_deployment.values()),
        "by_deployment": by_deployment,
    }
    return Plan.model_validate({"node": "n", "totals": [total]})


def test_the_previous_version_fits_where_the_failed_one_was() -> None:
    # The new version (4 GiB) failed; the old one needs 8 GiB, and 12 GiB are left beside "other".
    live = plan({"m": 4 * GIB, "other": 8 * GIB})
    assert rollback_short(live, deployment("m", ["GPU-a"], [8 * GIB])) is None


def test_the_previous_version_that_no_longer_fits_is_not_brought_back() -> None:
    # Since the old version ran, "other" was placed there: 20 - 14 = 6 GiB left, 2 x 4 GiB wanted.
    live = plan({"m": 2 * GIB, "other": 14 * GIB})
    short = rollback_short(live, deployment("m", ["GPU-a"], [4 * GIB], replicas=2))
    assert short == (
        "it needs 8.0 GiB on gpu0 and 6.0 GiB is left there beside the other deployments"
    )


def test_a_gpu_that_went_away_and_a_cpu_version() -> None:
    live = plan({"other": GIB})
    assert rollback_short(live, deployment("m", ["GPU-b"], [GIB])) == (
        "its GPU GPU-b is no longer on the node"
    )
    assert rollback_short(live, deployment("m", [], [])) is None
