"""JSON Schemas of the three document kinds, generated from the pydantic models."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from maas.compiler.models import Deployment, Node
from maas.compiler.plan import Plan

SCHEMAS: dict[str, type[BaseModel]] = {"deployment": Deployment, "node": Node, "plan": Plan}


def json_schema(kind: str) -> dict[str, Any]:
    model = SCHEMAS[kind]
    schema = model.model_json_schema(mode="validation" if kind != "plan" else "serialization")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    return schema


def schema_text(kind: str) -> str:
    return json.dumps(json_schema(kind), indent=2, sort_keys=True) + "\n"
