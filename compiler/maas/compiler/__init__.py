"""maas.compiler: the pure core. Text and values in, a Plan or Diagnostics out; no I/O.

The facade is lazy (PEP 562): `from maas.compiler.diagnostics import MaasError` does not import
pydantic and the models, which keeps `maasctl --help` and the agent client fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maas.compiler.backends import CATALOGUE, Backend, resolve_backend
    from maas.compiler.checks import check_deployments
    from maas.compiler.compile import compile_plan
    from maas.compiler.diagnostics import Diagnostic, MaasError, Position
    from maas.compiler.documents import Documents, Loaded
    from maas.compiler.models import Deployment, Node
    from maas.compiler.plan import Plan, PlanDeployment, plan_to_json
    from maas.compiler.render import CompileOptions
    from maas.compiler.schema import json_schema, schema_text
    from maas.compiler.sources import load_sources
    from maas.compiler.status import (
        ContainerStatus,
        DeploymentStatus,
        NodeStatus,
        ProgressBar,
        ReplicaStatus,
        parse_status,
    )

_HOMES = {
    "CATALOGUE": "backends",
    "Backend": "backends",
    "resolve_backend": "backends",
    "check_deployments": "checks",
    "compile_plan": "compile",
    "Diagnostic": "diagnostics",
    "MaasError": "diagnostics",
    "Position": "diagnostics",
    "Documents": "documents",
    "Loaded": "documents",
    "Deployment": "models",
    "Node": "models",
    "Plan": "plan",
    "PlanDeployment": "plan",
    "plan_to_json": "plan",
    "CompileOptions": "render",
    "json_schema": "schema",
    "schema_text": "schema",
    "load_sources": "sources",
    "ContainerStatus": "status",
    "DeploymentStatus": "status",
    "NodeStatus": "status",
    "ProgressBar": "status",
    "ReplicaStatus": "status",
    "parse_status": "status",
}

__all__ = [
    "CATALOGUE",
    "Backend",
    "CompileOptions",
    "ContainerStatus",
    "Deployment",
    "DeploymentStatus",
    "Diagnostic",
    "Documents",
    "Loaded",
    "MaasError",
    "Node",
    "NodeStatus",
    "Plan",
    "PlanDeployment",
    "Position",
    "ProgressBar",
    "ReplicaStatus",
    "check_deployments",
    "compile_plan",
    "json_schema",
    "load_sources",
    "parse_status",
    "plan_to_json",
    "resolve_backend",
    "schema_text",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'maas.compiler' has no attribute '{name}'")
    return getattr(importlib.import_module(f"maas.compiler.{_HOMES[name]}"), name)
