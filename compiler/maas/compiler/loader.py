"""YAML text -> plain documents that remember where every key and value came from.

ruamel.yaml's round-trip nodes carry line and column; we copy them into a position table keyed by
the path of each value (`("spec", "replicas")`) so that pydantic `loc` tuples and later semantic
checks can point at `file:line:col`. Values are converted to plain Python types, with alias
expansion bounded so that recursive anchors or "billion laughs" documents cannot exhaust memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    Event,
    MappingStartEvent,
    NodeEvent,
)

from maas.compiler.diagnostics import Diagnostic, MaasError, Position

PathKey = tuple[str | int, ...]
Table = dict[PathKey, tuple[int, int]]
Record = tuple[Table, Table] | None  # (values, keys) position tables being filled
MAX_NODES = 20_000  # a large real spec has a few hundred values
MAX_DOCUMENTS = 1_000
MAX_DEPTH = 64
# A real spec file is a few kilobytes; parsing is about 5 s per MiB of hostile YAML.
MAX_BYTES = 1024 * 1024
MAX_TOTAL_BYTES = 8 * 1024 * 1024  # all files of one apply, one commit or one validate
# What ruamel raises on hostile input: YAMLError, and from its constructors plain Python errors
# (`!!int !!o` is an IndexError deep inside the int constructor).
_RUAMEL_ERRORS = (
    YAMLError,
    ValueError,
    TypeError,
    RecursionError,
    IndexError,
    KeyError,
    AttributeError,
)


class _Positions:
    """Line/column tables of one file, parsed lazily with ruamel's round-trip loader.

    The fast path loads data with the C-based safe loader, which keeps no positions; only a file
    that needs a position (it has a problem to report) pays for the slower round-trip parse.
    """

    def __init__(self, text: str, file: str) -> None:
        self.text = text
        self.file = file
        self._tables: dict[int, tuple[Table, Table]] | None = None

    def tables(self, index: int) -> tuple[Table, Table]:
        if self._tables is None:
            self._tables = {}
            try:
                _check_events(self.text, self.file, max_depth=None)
                raw_docs = list(YAML(typ="rt", pure=True).load_all(self.text))
            except (MaasError, *_RUAMEL_ERRORS):
                raw_docs = []
            for i, raw in enumerate(raw_docs):
                values: Table = {}
                keys: Table = {}
                if isinstance(raw, CommentedMap | CommentedSeq):
                    values[()] = (raw.lc.line + 1, raw.lc.col + 1)
                # Positions up to a problem are recorded; the fast path reports the problem.
                with contextlib.suppress(MaasError):
                    _plain(raw, (), _Budget(None), frozenset(), (values, keys))
                self._tables[i] = (values, keys)
        return self._tables.get(index, ({}, {}))


@dataclass
class SourceDoc:
    """One YAML document of a file, as plain data plus positions (1-based line and column)."""

    file: str
    index: int
    data: Any
    lines: list[str] = field(default_factory=list, repr=False)
    positions: _Positions | None = field(default=None, repr=False)

    def at(self, path: PathKey, *, key: bool = False) -> Position:
        """Position of `path`, or of its nearest ancestor that has one."""
        values, keys = self.positions.tables(self.index) if self.positions else ({}, {})
        probe = tuple(path)
        while True:
            table = keys if key and probe in keys else values
            if probe in table:
                line, col = table[probe]
                return Position(self.file, line, col)
            if not probe:
                return Position(self.file, 1, 1)
            probe = probe[:-1]

    def get(self, path: PathKey) -> Any:
        node = self.data
        for part in path:
            if isinstance(node, Mapping):
                if part not in node:
                    return None
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
    _refuse_deep_nesting(text, file)
    fast = _fast_yaml()
    try:
        raw_docs = _bounded(fast.load_all(text), file)
    except _RUAMEL_ERRORS:
        raw_docs = _round_trip(text, file)  # the precise, positioned error, or agreement
    finally:
        # ruamel keeps a DocInfo per document loaded on the instance: the agent, which reuses
        # it for every apply and delete, would grow by megabytes an hour.
        getattr(fast, "doc_infos", []).clear()
    positions = _Positions(text, file)
    lines = text.splitlines()
    docs: list[SourceDoc] = []
    for index, raw in enumerate(raw_docs):
        if raw is None:
            continue
        doc = SourceDoc(file=file, index=index, data=None, lines=lines, positions=positions)
        doc.data = _plain(raw, (), _Budget(doc), frozenset(), None)
        docs.append(doc)
    return docs


def _refuse_deep_nesting(text: str, file: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH before ruamel builds anything.

    Checked before parsing: ruamel's C composer recurses once per level and overflows the C stack
    (a crash no handler catches) at about 50,000 levels, which 100 KB of `[`, `- ` or `? ` reach,
    and its scanners take time quadratic in flow depth. A linear bound comes first: a block
    collection nests only at a greater column (or at the same column once, a sequence under a
    key), so depth <= 2 * (longest line + 1) + flow openers. Only a text over that bound is parsed
    into events, stopping at the first level too deep (quotes and comments need no guessing).
    """
    longest = max(map(len, text.splitlines()), default=0)
    if 2 * (longest + 1) + text.count("[") + text.count("{") > _SCAN_DEPTH_ABOVE:
        _check_events(text, file, max_depth=MAX_DEPTH)


_SCAN_DEPTH_ABOVE = 1000  # at this depth the C composer and the scanners are harmless


def _check_events(text: str, file: str, *, max_depth: int | None) -> None:
    """Refuse, from parser events, nesting over `max_depth` and collections used as keys.

    ruamel's round-trip constructor takes time exponential in the nesting of mapping keys
    (`? ? ? ? x`, `{{{a: 1}: 1}: 1}`: 16 levels, a minute), and no spec needs a non-scalar key.
    The C parser scans first (fast); where it stops at a syntax error the pure parser, the one
    the round-trip loader uses, may read further, so it scans again from the start.
    """
    if not _scan_events(YAML(typ="safe", pure=False), text, file, max_depth):
        _scan_events(YAML(typ="rt", pure=True), text, file, max_depth)


def _scan_events(parser: YAML, text: str, file: str, max_depth: int | None) -> bool:
    """False when the parser stopped at a syntax error (reported later, by the loaders)."""
    frames: list[list[bool]] = []  # per open collection: [expecting a key] for mappings
    collections: set[str] = set()  # anchors of collections, which aliases may use as keys
    try:
        for event in parser.parse(text):
            if isinstance(event, CollectionEndEvent):
                frames.pop()
                continue
            if not isinstance(event, NodeEvent):
                continue
            is_key = bool(frames and frames[-1] and frames[-1][0])
            if frames and frames[-1]:
                frames[-1][0] = not frames[-1][0]
            collection = isinstance(event, CollectionStartEvent)
            alias = isinstance(event, AliasEvent)
            if is_key and (collection or (alias and event.anchor in collections)):
                _refuse(event, file, "yaml-key", "a mapping key must be a scalar, not a collection")
            if event.anchor and not alias:
                # An anchor may be defined again; only its latest node counts.
                (collections.add if collection else collections.discard)(event.anchor)
            if collection:
                frames.append([True] if isinstance(event, MappingStartEvent) else [])
                if max_depth is not None and len(frames) > max_depth:
                    _refuse(event, file, "yaml-too-deep", f"nesting deeper than {max_depth} levels")
    except _RUAMEL_ERRORS:
        return False
    return True


def _refuse(event: Event, file: str, code: str, message: str) -> None:
    mark = event.start_mark
    raise MaasError.single(code, message, position=Position(file, mark.line + 1, mark.column + 1))


def _bounded(documents: Iterator[Any], file: str) -> list[Any]:
    found = []
    for document in documents:
        found.append(document)
        if len(found) > MAX_DOCUMENTS:
            raise MaasError.single(
                "yaml-too-large", f"more than {MAX_DOCUMENTS} documents", position=Position(file)
            )
    return found


def _fast_yaml() -> YAML:
    global _FAST  # noqa: PLW0603 - one loader per process; constructing it is costly
    if _FAST is None:
        _FAST = YAML(typ="safe", pure=False)
    return _FAST


_FAST: YAML | None = None


def _round_trip(text: str, file: str) -> list[Any]:
    _check_events(text, file, max_depth=None)
    try:
        return _bounded(YAML(typ="rt", pure=True).load_all(text), file)
    except MarkedYAMLError as exc:
        raise MaasError([_syntax_diagnostic(exc, file, text)]) from None
    except _RUAMEL_ERRORS as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MaasError.single(
            "yaml", f"invalid YAML: {message}", position=Position(file)
        ) from None


def _syntax_diagnostic(exc: MarkedYAMLError, file: str, text: str) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    position = Position(file, mark.line + 1, mark.column + 1) if mark else Position(file)
    problem = (exc.problem or exc.context or "invalid YAML").strip()
    hints: tuple[str, ...] = ()
    code = "yaml"
    if "duplicate key" in problem:
        code = "duplicate-key"
        problem = problem.split(" with value")[0]
        hints = _first_definition(exc, text, problem)
    elif "'\\t'" in problem:
        code = "tab"
        hints = ("YAML indentation must use spaces, not tabs",)
    return Diagnostic(code, problem, position, hints=hints)


def _first_definition(exc: MarkedYAMLError, text: str, problem: str) -> tuple[str, ...]:
    """Where the duplicated key first appears: ruamel marks only the mapping's start."""
    start, duplicate = exc.context_mark, exc.problem_mark
    if start is None or duplicate is None:
        return ()
    key = problem.removeprefix("found duplicate key").strip().strip('"')
    lines = text.splitlines()
    for number in range(start.line, min(duplicate.line, len(lines))):
        rest = lines[number][duplicate.column :]
        if rest.startswith(key) and rest[len(key) :].lstrip().startswith(":"):
            return (f"first defined at line {number + 1}",)
    return (f"in the mapping that starts at line {start.line + 1}",)


class _Budget:
    """Bounds on what one document may expand to; `doc` is None while recording positions."""

    def __init__(self, doc: SourceDoc | None) -> None:
        self.doc = doc
        self.nodes = 0

    def spend(self, path: PathKey) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            self.fail(
                "yaml-too-large",
                f"document expands to more than {MAX_NODES} values (alias expansion?)",
                path,
            )
        if len(path) > MAX_DEPTH:
            self.fail("yaml-too-deep", f"nesting deeper than {MAX_DEPTH} levels", path)

    def fail(self, code: str, message: str, path: PathKey) -> None:
        position = self.doc.at(path) if self.doc else None
        raise MaasError.single(code, message, position=position)


def _plain(
    node: Any, path: PathKey, budget: _Budget, active: frozenset[int], record: Record
) -> Any:
    """Plain Python data; with `record`, also the positions of round-trip nodes."""
    budget.spend(path)
    if not isinstance(node, dict | list):
        return _scalar(node)
    if id(node) in active:
        budget.fail("yaml-recursive", "recursive alias: a node contains itself", path)
    inner = active | {id(node)}
    if isinstance(node, dict):
        return _plain_map(node, path, budget, inner, record)
    out_list = []
    places = _line_cols(node) if record is not None else {}
    for i, item in enumerate(node):
        if record is not None and i in places:
            line, col = places[i][:2]
            record[0].setdefault((*path, i), (line + 1, col + 1))
        out_list.append(_plain(item, (*path, i), budget, inner, record))
    return out_list


def _plain_map(
    node: dict[Any, Any], path: PathKey, budget: _Budget, active: frozenset[int], record: Record
) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    places = _line_cols(node) if record is not None else {}
    for key, value in node.items():
        scalar_key = _scalar(key) if not isinstance(key, dict | list | tuple) else None
        plain_key: str | int = (
            scalar_key
            if isinstance(scalar_key, str | int) and not isinstance(scalar_key, bool)
            else str(key)
        )
        child: PathKey = (*path, plain_key)
        if record is not None and key in places:
            kl, kc, vl, vc = places[key]
            record[1].setdefault(child, (kl + 1, kc + 1))
            record[0].setdefault(child, (vl + 1, vc + 1))
        out[plain_key] = _plain(value, child, budget, active, record)
    return out


def _line_cols(node: Any) -> dict[Any, Any]:
    """ruamel's positions of a collection's items; none for one a merge key built (`<<: *a`)."""
    data = getattr(getattr(node, "lc", None), "data", None)
    return data if isinstance(data, dict) else {}


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
