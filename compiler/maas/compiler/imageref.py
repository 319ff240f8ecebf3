"""Container image references, checked against Docker's grammar before anything is pulled.

The grammar is distribution/reference's (github.com/distribution/reference, reference.go and
regexp.go, v0.6.0), which dockerd applies to every pull ("invalid reference format"):

    reference        := name [ ":" tag ] [ "@" digest ]
    name             := [domain '/'] remote-name
    domain           := host [':' port-number]
    host             := domain-name | IPv4address | \\[ IPv6address \\]
    domain-name      := domain-component ['.' domain-component]*
    domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
    port-number      := /[0-9]+/
    remote-name      := path-component ['/' path-component]*
    path-component   := alpha-numeric [separator alpha-numeric]*
    alpha-numeric    := /[a-z0-9]+/
    separator        := /[_.]|__|[-]+/
    tag              := /[\\w][\\w.-]{0,127}/
    digest           := algorithm ":" /[0-9a-fA-F]{32,}/
    algorithm        := /[A-Za-z][A-Za-z0-9]*/ [ /[-_+.]/ /[A-Za-z][A-Za-z0-9]*/ ]*

and a name is at most 255 characters. Which first component is a registry comes from
normalize.go's splitDockerDomain (as in dockerd 20.10): one with a '.' or ':', or `localhost`;
otherwise the whole name is a Docker Hub repository and must be lowercase. Go's regexp engine
runs in linear time; Python's backtracks, so the separator here is `[-]+` (the original `[-]*`
may be empty, which makes the repetition ambiguous) and domain components end with an optional
group: the language is the same.
"""

from __future__ import annotations

import re

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[_.]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"({_NAME})(?::{_TAG})?(?:@{_DIGEST})?", re.ASCII)
NAME_MAX = 255


def reference_problem(reference: str) -> str | None:
    """Why `reference` is not a valid image reference, or None when it is."""
    match = _REFERENCE.fullmatch(reference)
    if match is None:
        return _why(reference)
    name = match.group(1)
    if len(name) > NAME_MAX:
        return f"the repository name is longer than {NAME_MAX} characters"
    first = name.split("/", 1)[0]
    if ("/" not in name or not _looks_like_domain(first)) and name != name.lower():
        return "repository names must be lowercase"
    return None


def _why(reference: str) -> str:
    if not reference:
        return "it is empty"
    if any(c.isspace() for c in reference):
        return "it contains white space"
    name = reference.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    path = name.rsplit(":", 1)[0] if ":" in last else name
    components = path.split("/")
    remote = components[1:] if len(components) > 1 and _looks_like_domain(components[0]) else path
    if any(c.isupper() for c in "/".join(remote)):
        return "repository names must be lowercase"
    return "it does not follow Docker's grammar [domain[:port]/]name[:tag][@digest]"


def _looks_like_domain(component: str) -> bool:
    # Docker's rule for a first component being a registry: it has a '.' or ':' or is localhost.
    return "." in component or ":" in component or component == "localhost"
