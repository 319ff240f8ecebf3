"""Plain documents -> typed `Deployment` and `Node` models, with every problem positioned.

pydantic's error `loc` tuples are mapped back onto the YAML position table; unknown keys get a
"did you mean" hint from the model's own field names. All problems of all documents are collected
before anything is raised.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from maas.compiler.diagnostics import Diagnostic, did_you_mean
from maas.compiler.loader import PathKey, SourceDoc
from maas.compiler.models import API_VERSION, Deployment, Node

M = TypeVar("M", bound=BaseModel)
KINDS: dict[str, type[BaseModel]] = {"Deployment": Deployment, "Node": Node}


@dataclass(frozen=True)
class Loaded(Generic[M]):
    """A validated model together with the document it came from (for positions)."""

    model: M
    doc: SourceDoc


@dataclass
class Documents:
    deployments: list[Loaded[Deployment]]
    nodes: list[Loaded[Node]]
    diagnostics: list[Diagnostic]


def parse_documents(
    docs: Iterable[SourceDoc], kinds: Sequence[str] = ("Deployment", "Node")
) -> Documents:
    out = Documents([], [], [])
    for doc in docs:
        kind = _check_envelope(doc, kinds, out.diagnostics)
        if kind is None:
            continue
        model_cls = KINDS[kind]
        try:
            model = model_cls.model_validate(doc.data)
        except ValidationError as exc:
            out.diagnostics.extend(diagnostics_from_validation(exc, doc, model_cls))
            continue
        if isinstance(model, Deployment):
            out.deployments.append(Loaded(model, doc))
        elif isinstance(model, Node):
            out.nodes.append(Loaded(model, doc))
    return out


def _check_envelope(doc: SourceDoc, kinds: Sequence[str], sink: list[Diagnostic]) -> str | None:
    data = doc.data
    if not isinstance(data, dict):
        sink.append(
            Diagnostic(
                "document",
                "a document must be a mapping with apiVersion, kind, metadata and spec",
                doc.at(()),
            )
        )
        return None
    api = data.get("apiVersion")
    if api != API_VERSION:
        message = "missing apiVersion" if api is None else f"unsupported apiVersion '{api}'"
        sink.append(
            Diagnostic(
                "api-version",
                message,
                doc.at(("apiVersion",)),
                hints=(f"use 'apiVersion: {API_VERSION}'",),
            )
        )
        return None
    kind = data.get("kind")
    if not isinstance(kind, str | None):
        # A list or mapping is no kind at all (and not hashable for the lookups below).
        sink.append(Diagnostic("kind", "kind must be a string", doc.at(("kind",))))
        return None
    if kind not in kinds:
        expected = " or ".join(f"'{k}'" for k in kinds)
        if kind is None:
            message = f"missing kind (expected {expected})"
        elif kind in KINDS:
            message = f"a '{kind}' document is not expected here (expected {expected})"
        else:
            message = f"unknown kind '{kind}' (expected {expected})"
        hints = did_you_mean(str(kind), kinds) if kind not in KINDS else ()
        sink.append(Diagnostic("kind", message, doc.at(("kind",)), hints=hints))
        return None
    return str(kind)


def diagnostics_from_validation(
    exc: ValidationError, doc: SourceDoc, model_cls: type[BaseModel]
) -> list[Diagnostic]:
    found: dict[PathKey, Diagnostic] = {}
    union_arms: dict[PathKey, list[str]] = {}
    for err in exc.errors(include_url=False):
        loc, tag = _strip_union_tag(tuple(err["loc"]), doc)
        path = _data_path(doc, loc, keep_missing=err["type"] == "missing")
        if tag is not None:
            arms = union_arms.setdefault(path, [])
            if tag not in arms:
                arms.append(tag)
            continue
        found.setdefault(path, _diagnostic(err, path, doc, model_cls))
    for path, arms in union_arms.items():
        accepted = " or ".join(_ARM_TEXT.get(arm, arm) for arm in arms)
        found.setdefault(
            path,
            Diagnostic(
                "type",
                f"'{_dotted(path)}' has the wrong type: expected {accepted}, "
                f"got {_describe(doc.get(path))}",
                doc.at(path),
            ),
        )
    return list(found.values())


_ARM_TEXT = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "list[str]": "a list of strings",
    "SecretRef": "a secret reference {secret: NAME}",
}


def _strip_union_tag(loc: tuple[Any, ...], doc: SourceDoc) -> tuple[tuple[Any, ...], str | None]:
    """Split pydantic's union arm tag (e.g. 'str', 'SecretRef') out of a loc, if it has one."""
    node = doc.data
    for index, part in enumerate(loc):
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        ):
            node = node[part]
        elif isinstance(part, str) and (part in _ARM_TEXT or part[:1].isupper() or "[" in part):
            return loc[:index], part
        else:
            break
    return loc, None


def _data_path(doc: SourceDoc, loc: tuple[Any, ...], *, keep_missing: bool) -> PathKey:
    """The prefix of a pydantic loc that exists in the data (plus the key that is missing)."""
    path: list[str | int] = []
    node = doc.data
    for part in loc:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        ):
            node = node[part]
        else:
            if keep_missing and isinstance(node, dict) and isinstance(part, str):
                path.append(part)
            break
        path.append(part)
    return tuple(path)


def _unknown_field(path: PathKey, doc: SourceDoc, model_cls: type[BaseModel]) -> Diagnostic:
    field = str(path[-1])
    if len(path) == 1 and field in _fields_at(model_cls, ("spec",)):
        # Dedented out of spec: the commonest way to get here, worth saying so.
        return Diagnostic(
            "misplaced-field",
            f"field '{field}' belongs under 'spec:'",
            doc.at(path, key=True),
            hints=("indent it like the other fields of spec",),
        )
    return Diagnostic(
        "unknown-field",
        f"unknown field '{_dotted(path)}'",
        doc.at(path, key=True),
        hints=did_you_mean(field, _fields_at(model_cls, path[:-1])),
    )


def _diagnostic(err: Any, path: PathKey, doc: SourceDoc, model_cls: type[BaseModel]) -> Diagnostic:
    kind = err["type"]
    name = _dotted(path)
    if kind == "extra_forbidden":
        return _unknown_field(path, doc, model_cls)
    if kind == "missing":
        return Diagnostic(
            "missing-field", f"missing required field '{name}'", doc.at(path[:-1], key=True)
        )
    if kind == "literal_error":
        value = doc.get(path)
        expected = err.get("ctx", {}).get("expected", "")
        return Diagnostic(
            "enum",
            f"'{name}' must be one of {expected}, not {value!r}",
            doc.at(path),
            hints=did_you_mean(str(value), _literal_choices(expected)),
        )
    message = str(err["msg"])
    if message.startswith("Value error, "):
        return Diagnostic(
            "value", f"'{name}': {message.removeprefix('Value error, ')}", doc.at(path)
        )
    if kind.endswith("_type") or kind.endswith("_parsing") or kind == "model_type":
        value = doc.get(path)
        return Diagnostic(
            "type",
            f"'{name}': {message[0].lower()}{message[1:]}, got {_describe(value)}",
            doc.at(path),
        )
    return Diagnostic("value", f"'{name}': {message[0].lower()}{message[1:]}", doc.at(path))


def _dotted(path: PathKey) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


def _literal_choices(expected: str) -> list[str]:
    return [
        part.strip(" '") for part in expected.replace(" or ", ",").split(",") if part.strip(" '")
    ]


def _model_at(model_cls: type[BaseModel], path: PathKey) -> type[BaseModel] | None:
    current: type[BaseModel] | None = model_cls
    for part in path:
        if current is None or not isinstance(part, str) or part not in current.model_fields:
            return None
        annotation = current.model_fields[part].annotation
        current = _first_model(annotation)
    return current


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _fields_at(model_cls: type[BaseModel], path: PathKey) -> list[str]:
    model = _model_at(model_cls, tuple(p for p in path if isinstance(p, str)))
    return list(model.model_fields) if model else []
