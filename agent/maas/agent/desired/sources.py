"""Editing the stored spec sources: keying a submitted file, merging an apply, removing one
deployment's document."""

from __future__ import annotations

import hashlib
import io

from ruamel.yaml import YAML

from maas.compiler import MaasError, load_text


def source_key(name: str, text: str, user: str | None) -> str:
    """The name a submitted file is stored under: a file replaces only what was stored under
    the same key, so keys must not collide between unrelated applies.

    Standard input has no name: each text is its own key (a deployment it redefines still
    replaces its older document, by name, in `merge`). Files of other users than root are
    prefixed with the user, so that two users' `/tmp/x.yaml` are two files."""
    if name == "<stdin>":
        name = f"<stdin {hashlib.sha256(text.encode()).hexdigest()[:12]}>"
    return name if user is None else f"{user}:{name}"


def merge(stored: dict[str, str], submitted: dict[str, str]) -> dict[str, str]:
    """Submitted files replace stored files of the same name; deployments they define are taken
    out of other stored files, so moving a deployment between files is not a duplicate."""
    names = set()
    for file, text in submitted.items():
        for doc in load_text(text, file):
            name = _name(doc.data)
            if name is not None:
                names.add(name)
    merged = {f: t for f, t in stored.items() if f not in submitted}
    for name in names:
        merged = remove_deployment(merged, name)[0]
    merged.update(submitted)
    return merged


def remove_deployment(sources: dict[str, str], name: str) -> tuple[dict[str, str], bool]:
    """Sources without the document of deployment `name`, and whether it was found."""
    out: dict[str, str] = {}
    found = False
    for file, text in sources.items():
        try:
            docs = load_text(text, file)
        except MaasError:
            out[file] = text
            continue
        keep = [d.index for d in docs if not _is(d.data, name)]
        if len(keep) == len(docs):
            out[file] = text
            continue
        found = True
        if keep:
            out[file] = _only(text, keep)
    return out, found


def _name(data: object) -> str | None:
    """The name of a Deployment document; None for anything else, however malformed (the
    compile reports it)."""
    if not isinstance(data, dict) or data.get("kind") != "Deployment":
        return None
    metadata = data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else None


def _is(data: object, name: str) -> bool:
    return _name(data) == name


def _only(text: str, indices: list[int]) -> str:
    yaml = YAML(typ="rt")
    docs = list(yaml.load_all(text))
    stream = io.StringIO()
    yaml.dump_all([docs[i] for i in indices], stream)
    return stream.getvalue()
