"""Reading a config repository's files from a work tree or from a git revision (git CLI).

Returns `{relative path: text}` for the files of the repository convention, the input of
`maas.compiler.repo.compile_repo`. Git is run as a subprocess with an argv list, never a shell.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from maas.compiler import (
    CONFIG_FILE,
    MAX_BYTES,
    MAX_TOTAL_BYTES,
    Diagnostic,
    MaasError,
    Position,
    repo_files,
)

GIT_TIMEOUT_S = 120


def is_repository(path: Path) -> bool:
    """A folder that follows the convention (has deployments/ or maas.yaml)."""
    return path.is_dir() and ((path / CONFIG_FILE).is_file() or (path / "deployments").is_dir())


def read_worktree(root: Path) -> dict[str, str]:
    listing = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    sources: dict[str, str] = {}
    for rel in repo_files(listing):
        try:
            sources[rel] = (root / rel).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise MaasError.single("file", f"cannot read: {exc}", position=Position(rel)) from exc
    return sources


def git(root: Path, *args: str, input_bytes: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args],
            input=input_bytes,
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise MaasError.single(
            "git", "git is not installed", hints=("install it: apt-get install git",)
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise MaasError.single(
            "git", f"git {args[0]} timed out after {GIT_TIMEOUT_S} s", retryable=True
        ) from exc
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise MaasError.single(
            "git",
            f"git {' '.join(args[:2])}: {message[-1] if message else 'failed'}",
            position=Position(str(root)),
        )
    return done.stdout


def resolve(root: Path, revision: str) -> str:
    """The full commit id of `revision`; an error naming it when it is no commit here."""
    try:
        found = git(root, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    except MaasError:
        raise MaasError.single(
            "git",
            f"'{revision}' is not a commit of the repository at {root}",
            position=Position(str(root)),
            hints=("a branch, tag or commit id, e.g. origin/main or HEAD~1",),
        ) from None
    return found.decode().strip()


def read_revision(root: Path, revision: str) -> dict[str, str]:
    """The convention's files as they are at `revision` (nothing is checked out).

    Only regular files are read: a submodule (gitlink) or symbolic link at a spec's path is an
    error at that path. Sizes are checked from the tree before any blob is read, so that a
    huge file (a few hundred KB packed can be hundreds of MB) is refused without reading it.
    """
    commit = resolve(root, revision)
    listing = git(root, "ls-tree", "-r", "-z", "-l", "--full-tree", commit).decode()
    entries: dict[str, tuple[str, str, str]] = {}
    for line in listing.split("\0"):
        if line:
            meta, _, name = line.partition("\t")
            mode, kind, _, length = meta.split()[:4]
            entries[name] = (mode, kind, length)
    wanted = repo_files(list(entries))
    if not wanted:
        return {}
    problems = _unreadable(wanted, entries)
    if problems:
        raise MaasError(problems)
    request = "".join(f"{commit}:{name}\n" for name in wanted).encode()
    output = git(root, "cat-file", "--batch", input_bytes=request)
    sources: dict[str, str] = {}
    offset = 0
    for name in wanted:
        header_end = output.index(b"\n", offset)
        size = int(output[offset:header_end].split()[2])
        body = output[header_end + 1 : header_end + 1 + size]
        offset = header_end + 1 + size + 1
        try:
            sources[name] = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MaasError.single("encoding", "not UTF-8 text", position=Position(name)) from exc
    return sources


def _unreadable(wanted: list[str], entries: dict[str, tuple[str, str, str]]) -> list[Diagnostic]:
    """Why the listed files cannot be read as specs: not regular files, or too large."""
    problems: list[Diagnostic] = []
    total = 0
    for name in wanted:
        mode, kind, size = entries[name]
        if kind != "blob" or mode == "120000":
            what = {"commit": "a submodule (gitlink)", "blob": "a symbolic link"}.get(
                kind, f"a git {kind}"
            )
            problems.append(Diagnostic("file", f"{what}, not a regular file", Position(name)))
            continue
        total += int(size)
        if int(size) > MAX_BYTES:
            problems.append(
                Diagnostic(
                    "too-large",
                    f"file is {int(size) >> 20} MiB; the limit is {MAX_BYTES >> 20} MiB",
                    Position(name),
                )
            )
    if total > MAX_TOTAL_BYTES and not problems:
        problems.append(
            Diagnostic(
                "too-large",
                f"the repository's spec files are {total >> 20} MiB together; "
                f"the limit is {MAX_TOTAL_BYTES >> 20} MiB",
                Position(wanted[0]),
            )
        )
    return problems
