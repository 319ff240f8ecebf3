"""maas.compiler: the pure core. Text and values in, a Plan or Diagnostics out; no I/O.

The facade is the only door for the other packages (an import-linter contract): they import
names from `maas.compiler`, never its modules, so the inside can move freely. It is lazy (PEP 562):
a name's module is imported on first use, so `from maas.compiler import MaasError` does not import
pydantic and the models, which keeps `maasctl --help` and the agent client fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maas.compiler.allocation import PROCESS_CONTEXT_BYTES
    from maas.compiler.backends import CATALOGUE, Backend, resolve_backend
    from maas.compiler.checks import check_deployments, check_models
    from maas.compiler.compile import compile_plan
    from maas.compiler.diagnostics import (
        Diagnostic,
        MaasError,
        Position,
        bounded,
        errors_only,
        raise_if_errors,
    )
    from maas.compiler.documents import Documents, Loaded, diagnostics_from_validation
    from maas.compiler.fleet import replicas_per_node
    from maas.compiler.groups import Share, wire
    from maas.compiler.loader import MAX_BYTES, MAX_TOTAL_BYTES, load_text
    from maas.compiler.metadata import ModelMetadata
    from maas.compiler.metadata.gguf import GgufHeader, parse_gguf
    from maas.compiler.metadata.model import from_gguf
    from maas.compiler.metadata.safetensors import (
        from_config,
        header_length,
        index_total_size,
        safetensors_weight_bytes,
    )
    from maas.compiler.models import Deployment, DeploymentBody, Node, SecretRef
    from maas.compiler.plan import (
        DeviceTotal,
        Group,
        Mount,
        Placement,
        Plan,
        PlanDeployment,
        plan_to_json,
    )
    from maas.compiler.plandiff import Change, PlanDiff, diff_fleets
    from maas.compiler.policy import Policy, model_store, mount_denial, narrow, work_dir
    from maas.compiler.render import DEFAULT_REVISION, CompileOptions
    from maas.compiler.repo import CONFIG_FILE, FleetPlan, compile_repo, load_settings, repo_files
    from maas.compiler.schema import json_schema, schema_text
    from maas.compiler.sources import load_sources
    from maas.compiler.status import (
        PHASES,
        ActionStatus,
        CachedModel,
        ContainerStatus,
        DeploymentStatus,
        DiagnosticStatus,
        ForeignGpuProcess,
        GroupMemberStatus,
        GroupStatus,
        KeptContainer,
        NodeStatus,
        OnDemandStatus,
        PassStatus,
        Phase,
        Preparing,
        ProgressBar,
        RemovalError,
        ReplicaStatus,
        RollBack,
        SourceStatus,
        TaskStatus,
        parse_status,
    )
    from maas.compiler.units import GIB, MIB

_HOMES = {
    "ActionStatus": "status",
    "Backend": "backends",
    "CATALOGUE": "backends",
    "CONFIG_FILE": "repo",
    "CachedModel": "status",
    "Change": "plandiff",
    "CompileOptions": "render",
    "ContainerStatus": "status",
    "DEFAULT_REVISION": "render",
    "Deployment": "models",
    "DeploymentBody": "models",
    "DeploymentStatus": "status",
    "DeviceTotal": "plan",
    "Diagnostic": "diagnostics",
    "DiagnosticStatus": "status",
    "Documents": "documents",
    "FleetPlan": "repo",
    "ForeignGpuProcess": "status",
    "GIB": "units",
    "GgufHeader": "metadata.gguf",
    "Group": "plan",
    "GroupMemberStatus": "status",
    "GroupStatus": "status",
    "KeptContainer": "status",
    "Loaded": "documents",
    "MAX_BYTES": "loader",
    "MAX_TOTAL_BYTES": "loader",
    "MIB": "units",
    "MaasError": "diagnostics",
    "ModelMetadata": "metadata",
    "Mount": "plan",
    "Node": "models",
    "NodeStatus": "status",
    "OnDemandStatus": "status",
    "PHASES": "status",
    "PROCESS_CONTEXT_BYTES": "allocation",
    "PassStatus": "status",
    "Phase": "status",
    "Placement": "plan",
    "Plan": "plan",
    "PlanDeployment": "plan",
    "PlanDiff": "plandiff",
    "Policy": "policy",
    "Position": "diagnostics",
    "Preparing": "status",
    "ProgressBar": "status",
    "RemovalError": "status",
    "ReplicaStatus": "status",
    "RollBack": "status",
    "SecretRef": "models",
    "Share": "groups",
    "SourceStatus": "status",
    "TaskStatus": "status",
    "bounded": "diagnostics",
    "check_deployments": "checks",
    "check_models": "checks",
    "compile_plan": "compile",
    "compile_repo": "repo",
    "diagnostics_from_validation": "documents",
    "diff_fleets": "plandiff",
    "errors_only": "diagnostics",
    "from_config": "metadata.safetensors",
    "from_gguf": "metadata.model",
    "header_length": "metadata.safetensors",
    "index_total_size": "metadata.safetensors",
    "json_schema": "schema",
    "load_settings": "repo",
    "load_sources": "sources",
    "load_text": "loader",
    "model_store": "policy",
    "mount_denial": "policy",
    "narrow": "policy",
    "parse_gguf": "metadata.gguf",
    "parse_status": "status",
    "plan_to_json": "plan",
    "raise_if_errors": "diagnostics",
    "replicas_per_node": "fleet",
    "repo_files": "repo",
    "resolve_backend": "backends",
    "safetensors_weight_bytes": "metadata.safetensors",
    "schema_text": "schema",
    "wire": "groups",
    "work_dir": "policy",
}

__all__ = [
    "CATALOGUE",
    "CONFIG_FILE",
    "DEFAULT_REVISION",
    "GIB",
    "MAX_BYTES",
    "MAX_TOTAL_BYTES",
    "MIB",
    "PHASES",
    "PROCESS_CONTEXT_BYTES",
    "ActionStatus",
    "Backend",
    "CachedModel",
    "Change",
    "CompileOptions",
    "ContainerStatus",
    "Deployment",
    "DeploymentBody",
    "DeploymentStatus",
    "DeviceTotal",
    "Diagnostic",
    "DiagnosticStatus",
    "Documents",
    "FleetPlan",
    "ForeignGpuProcess",
    "GgufHeader",
    "Group",
    "GroupMemberStatus",
    "GroupStatus",
    "KeptContainer",
    "Loaded",
    "MaasError",
    "ModelMetadata",
    "Mount",
    "Node",
    "NodeStatus",
    "OnDemandStatus",
    "PassStatus",
    "Phase",
    "Placement",
    "Plan",
    "PlanDeployment",
    "PlanDiff",
    "Policy",
    "Position",
    "Preparing",
    "ProgressBar",
    "RemovalError",
    "ReplicaStatus",
    "RollBack",
    "SecretRef",
    "Share",
    "SourceStatus",
    "TaskStatus",
    "bounded",
    "check_deployments",
    "check_models",
    "compile_plan",
    "compile_repo",
    "diagnostics_from_validation",
    "diff_fleets",
    "errors_only",
    "from_config",
    "from_gguf",
    "header_length",
    "index_total_size",
    "json_schema",
    "load_settings",
    "load_sources",
    "load_text",
    "model_store",
    "mount_denial",
    "narrow",
    "parse_gguf",
    "parse_status",
    "plan_to_json",
    "raise_if_errors",
    "replicas_per_node",
    "repo_files",
    "resolve_backend",
    "safetensors_weight_bytes",
    "schema_text",
    "wire",
    "work_dir",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'maas.compiler' has no attribute '{name}'")
    return getattr(importlib.import_module(f"maas.compiler.{_HOMES[name]}"), name)
