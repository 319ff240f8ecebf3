"""API keys: a node-local file of SHA-256 digests, one per line, never the keys themselves.

Format: `<64 hex digits> [name]` per line; `#` starts a comment. The file's existence turns
authentication on: an existing but empty file lets nobody in, a missing file means no keys (and
then the gateway refuses to listen beyond localhost unless told to). Add a key with
`maas-gateway key new --name alice` (prints the key once, appends its digest), or by hand:
`printf %s "$KEY" | sha256sum | cut -d' ' -f1 >> /etc/maas/gateway.keys`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path

from maas.compiler import Diagnostic, MaasError, Position

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
KEY_PREFIX = "sk-maas-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def parse_key_lines(text: str, file: str) -> tuple[frozenset[str], list[Diagnostic]]:
    """The digests of the well-formed lines, and a diagnostic per malformed line."""
    digests: set[str] = set()
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        digest = content.split()[0].lower()
        if _DIGEST.match(digest):
            digests.add(digest)
        else:
            problems.append(
                Diagnostic(
                    "gateway-keys",
                    "a line must start with a SHA-256 digest (64 hex digits), not a key",
                    Position(file, number, 1),
                    hints=("`maas-gateway key hash < key.txt` prints the digest of a key",),
                )
            )
    return frozenset(digests), problems


class KeyRing:
    """The keys in force; reloaded when the file changes (checked by the caller's timer)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.digests: frozenset[str] = frozenset()
        self._stamp: tuple[int, int] | None = None
        self.required = path is not None and path.exists()
        self.reload()

    def reload(self) -> bool:
        """Read the file again when its mtime or size changed; True when the keys changed.

        Every line stands alone: the well-formed lines are the keys in force, a malformed one
        (or one that is not UTF-8) admits nobody and is reported by the MaasError raised after
        the keys were replaced. A key removed from a file that is broken elsewhere is revoked
        all the same; a file that cannot be read admits nobody, like a deleted one."""
        if self.path is None:
            return False
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            # Once on, authentication stays on: a deleted file admits nobody rather than everyone.
            changed = bool(self.digests)
            self.digests, self._stamp = frozenset(), None
            return changed
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return False
        self.required = True
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            self.digests, self._stamp = frozenset(), None
            raise MaasError.single(
                "gateway-keys",
                f"cannot read: {exc.strerror}; no key is accepted until it can",
                position=Position(str(self.path)),
            ) from exc
        # A byte that is not UTF-8 spoils its own line only (it is no hex digit).
        digests, problems = parse_key_lines(raw.decode("utf-8", "replace"), str(self.path))
        self.digests, self._stamp = digests, stamp
        if problems:
            raise MaasError(problems)
        return True

    def allows(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header carries a valid key (always, when keys are off)."""
        if not self.required:
            return True
        if not authorization or not authorization.startswith("Bearer "):
            return False
        digest = hash_key(authorization[7:].strip())
        # Comparing digests (not keys) in constant time leaks nothing usable about a key.
        return any(hmac.compare_digest(digest, known) for known in self.digests)
