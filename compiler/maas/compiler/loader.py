"""YAML text -> plain documents that remember where every key and value came from.

ruamel.yaml's round-trip nodes carry line and column; we copy them into a position table keyed by
the path of each value (`("spec", "replicas")`) so that pydantic `loc` tuples and later semantic
checks can point at `file:line:col`. Values are converted to plain Python types, with alias
expansion bounded so that recursive anchors or "billion laughs" documents cannot exhaust memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from maas.compiler.diagnostics import Diagnostic, MaasError, Position

PathKey = tuple[str | int, ...]
MAX_NODES = 200_000
MAX_DEPTH = 64
MAX_BYTES = 8 * 1024 * 1024


@dataclass
class SourceDoc:
    """One YAML document of a file, as plain data plus positions (1-based line and column)."""

    file: str
    index: int
    data: Any
    values: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    keys: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list, repr=False)

    def at(self, path: PathKey, *, key: bool = False) -> Position:
        """Position of `path`, or of its nearest ancestor that has one."""
        probe = tuple(path)
        while True:
            table = self.keys if key and probe in self.keys else self.values
            if probe in table:
                line, col = table[probe]
                return Position(self.file, line, col)
            if not probe:
                return Position(self.file, 1, 1)
            probe = probe[:-1]

    def get(self, path: PathKey) -> Any:
        node = self.data
        for part in path:
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                node = node[part]
            else:
                return None
        return node


def load_text(text: str, file: str) -> list[SourceDoc]:
    """Parse every document of `text`; a syntax error raises `MaasError` with its position."""
    if len(text) > MAX_BYTES:
        raise MaasError.single(
            "too-large",
            f"file is larger than {MAX_BYTES // (1024 * 1024)} MiB",
            position=Position(file),
        )
    yaml = YAML(typ="rt", pure=True)
    try:
        raw_docs = list(yaml.load_all(text))
    except MarkedYAMLError as exc:
        raise MaasError([_syntax_diagnostic(exc, file)]) from None
    except (YAMLError, ValueError, TypeError, RecursionError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MaasError.single(
            "yaml", f"invalid YAML: {message}", position=Position(file)
        ) from None
    docs: list[SourceDoc] = []
    lines = text.splitlines()
    for index, raw in enumerate(raw_docs):
        if raw is None:
            continue
        doc = SourceDoc(file=file, index=index, data=None, lines=lines)
        counter = _Budget(file)
        doc.data = _plain(raw, (), doc, counter, frozenset())
        if isinstance(raw, CommentedMap | CommentedSeq):
            doc.values.setdefault((), (raw.lc.line + 1, raw.lc.col + 1))
        docs.append(doc)
    return docs


def _syntax_diagnostic(exc: MarkedYAMLError, file: str) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    position = Position(file, mark.line + 1, mark.column + 1) if mark else Position(file)
    problem = (exc.problem or exc.context or "invalid YAML").strip()
    hints: tuple[str, ...] = ()
    code = "yaml"
    if "duplicate key" in problem:
        code = "duplicate-key"
        first = exc.context_mark
        if first is not None:
            hints = (f"first defined at line {first.line + 1}",)
        problem = problem.split(" with value")[0]
    elif "'\\t'" in problem:
        code = "tab"
        hints = ("YAML indentation must use spaces, not tabs",)
    return Diagnostic(code, problem, position, hints=hints)


class _Budget:
    def __init__(self, file: str) -> None:
        self.file = file
        self.nodes = 0

    def spend(self, path: PathKey, doc: SourceDoc) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise MaasError.single(
                "yaml-too-large",
                f"document expands to more than {MAX_NODES} values (alias expansion?)",
                position=doc.at(path),
            )
        if len(path) > MAX_DEPTH:
            raise MaasError.single(
                "yaml-too-deep", f"nesting deeper than {MAX_DEPTH} levels", position=doc.at(path)
            )


def _plain(
    node: Any, path: PathKey, doc: SourceDoc, budget: _Budget, active: frozenset[int]
) -> Any:
    budget.spend(path, doc)
    if isinstance(node, CommentedMap | CommentedSeq):
        if id(node) in active:
            raise MaasError.single(
                "yaml-recursive", "recursive alias: a node contains itself", position=doc.at(path)
            )
        inner = active | {id(node)}
        if isinstance(node, CommentedMap):
            return _plain_map(node, path, doc, budget, inner)
        out_list = []
        for i, item in enumerate(node):
            pos = node.lc.item(i) if i in node.lc.data else None
            if pos is not None:
                doc.values.setdefault((*path, i), (pos[0] + 1, pos[1] + 1))
            out_list.append(_plain(item, (*path, i), doc, budget, inner))
        return out_list
    return _scalar(node)


def _plain_map(
    node: CommentedMap, path: PathKey, doc: SourceDoc, budget: _Budget, active: frozenset[int]
) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key, value in node.items():
        scalar_key = _scalar(key) if not isinstance(key, CommentedMap | CommentedSeq) else None
        plain_key: str | int = (
            scalar_key
            if isinstance(scalar_key, str | int) and not isinstance(scalar_key, bool)
            else str(key)
        )
        child: PathKey = (*path, plain_key)
        if key in node.lc.data:
            kl, kc, vl, vc = node.lc.data[key]
            doc.keys.setdefault(child, (kl + 1, kc + 1))
            doc.values.setdefault(child, (vl + 1, vc + 1))
        out[plain_key] = _plain(value, child, doc, budget, active)
    return out


def _scalar(value: Any) -> Any:
    # ruamel wraps scalars in subclasses (ScalarFloat, ScalarInt, LiteralScalarString...);
    # strict validation needs the plain types.
    if value is None or isinstance(value, bool):
        return value
    if type(value).__name__ == "ScalarBoolean":
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)
