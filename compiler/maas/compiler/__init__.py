"""maas.compiler: the pure core. Text and values in, a Plan or Diagnostics out; no I/O."""

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

__all__ = [
    "CATALOGUE",
    "Backend",
    "CompileOptions",
    "Deployment",
    "Diagnostic",
    "Documents",
    "Loaded",
    "MaasError",
    "Node",
    "Plan",
    "PlanDeployment",
    "Position",
    "check_deployments",
    "compile_plan",
    "json_schema",
    "load_sources",
    "plan_to_json",
    "resolve_backend",
    "schema_text",
]
