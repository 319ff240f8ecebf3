"""A local server laid out like the Hugging Face Hub and ModelScope, enough for their clients.

Hugging Face (huggingface_hub): `GET /api/models/{repo}/revision/{rev}` (the file list with
`blobId` and, for LFS files, `lfs.sha256`) and `/api/models/{repo}/tree/{rev}`,
`HEAD|GET /{repo}/resolve/{rev}/{file}` (the file, with the commit and ETag headers the client
checks). ModelScope (its SDK's legacy API, modelscope_hub/_legacy_api.py):
`GET /api/v1/models/{repo}/revisions`, `GET /api/v1/models/{repo}/repo/files?Revision=` (each
file's `Path`, `Size`, `Sha256`, `Revision` commit, `CommittedDate`) and
`GET /api/v1/models/{repo}/repo?Revision=&FilePath=` (the file). Both serve Range requests.

Files come from a folder per repository. `Faults` makes the server misbehave on purpose: cut the
connection after some bytes of a file, flip a byte of it, or answer a status instead, each a
given number of times; `requests` counts the body requests per file.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_FROM = 1024  # files at least this big are LFS files (sha256 published), as on the hub


@dataclass
class Faults:
    cut_after: dict[str, int] = field(default_factory=dict)  # file -> bytes sent, then closed
    corrupt_at: dict[str, int] = field(default_factory=dict)  # file -> offset of a flipped byte
    status: dict[str, int] = field(default_factory=dict)  # file -> status answered instead
    times: Counter[str] = field(default_factory=Counter)  # how many times each fault fires
    requests: Counter[str] = field(default_factory=Counter)  # GETs of a file's bytes
    ranges: list[tuple[str, str]] = field(default_factory=list)  # (file, Range header) per GET
    tokens: list[str] = field(default_factory=list)  # Authorization headers seen, any route
    paths: list[str] = field(default_factory=list)  # request paths of the GETs of file bytes
    sending: int = 0  # file bodies being sent now
    most_sending: int = 0  # the most file bodies sent at once
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, kind: dict[str, int], name: str) -> int | None:
        with self.lock:
            if name in kind and self.times[f"{name}:{id(kind)}"] > 0:
                self.times[f"{name}:{id(kind)}"] -= 1
                return kind[name]
            return None

    def arm(self, kind: dict[str, int], name: str, value: int, times: int = 1) -> None:
        with self.lock:
            kind[name] = value
            self.times[f"{name}:{id(kind)}"] = times


_HASHES: dict[tuple[str, float, int], tuple[str, str]] = {}


def hashes(path: Path) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file, remembered by path, mtime and size."""
    st = path.stat()
    key = (str(path), st.st_mtime, st.st_size)
    if key not in _HASHES:
        sha256 = hashlib.sha256()
        git = hashlib.sha1(b"blob %d\0" % st.st_size, usedforsecurity=False)
        with path.open("rb") as handle:
            while block := handle.read(1 << 22):
                sha256.update(block)
                git.update(block)
        _HASHES[key] = (sha256.hexdigest(), git.hexdigest())
    return _HASHES[key]


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = Path()
    chunk_delay_s = 0.0
    chunk = 1 << 20
    faults = Faults()

    def log_message(self, *args: object) -> None:
        return None

    def _parts(self) -> list[str]:
        return urlsplit(self.path).path.strip("/").split("/")

    def _query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def _send(self, status: int, length: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(length)}.items():
            self.send_header(key, value)
        self.end_headers()

    def _json(self, value: object) -> None:
        body = json.dumps(value).encode()
        self._send(200, len(body), {"Content-Type": "application/json"})
        self.wfile.write(body)

    def _not_found(self) -> None:
        self._send(404, 0, {"X-Error-Code": "RepoNotFound"})

    def do_HEAD(self) -> None:
        self._hf_file(body=False)

    def do_GET(self) -> None:
        if self.headers.get("Authorization"):
            with self.faults.lock:
                self.faults.tokens.append(self.headers["Authorization"])
        parts = self._parts()
        if parts[:3] == ["api", "v1", "models"]:
            return self._modelscope(parts[3:])
        if parts[:2] == ["api", "models"]:
            return self._listing(parts)
        return self._hf_file(body=True)

    def _files(self, folder: Path) -> list[tuple[str, Path]]:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        return [(p.relative_to(folder).as_posix(), p) for p in files]

    # Hugging Face -------------------------------------------------------------------------
    def _listing(self, parts: list[str]) -> None:
        kind = "tree" if "tree" in parts else "revision"
        end = parts.index(kind) if kind in parts else len(parts)  # no revision: the default
        folder = self.root / "/".join(parts[2:end])
        if not folder.is_dir():
            return self._not_found()
        entries = self._files(folder)
        if kind == "tree":
            return self._json(
                [
                    {"type": "file", "path": name, "size": p.stat().st_size, "oid": hashes(p)[1]}
                    for name, p in entries
                ]
            )
        siblings = []
        for name, p in entries:
            size = p.stat().st_size
            sha256, git = hashes(p)
            sibling: dict[str, object] = {"rfilename": name, "size": size, "blobId": git}
            if size >= LFS_FROM:
                sibling["lfs"] = {"size": size, "sha256": sha256, "pointerSize": 134}
            siblings.append(sibling)
        return self._json({"id": folder.name, "sha": COMMIT, "siblings": siblings})

    def _hf_file(self, *, body: bool) -> None:
        parts = self._parts()
        if "resolve" not in parts:
            return self._not_found()
        at = parts.index("resolve")
        path = self.root.joinpath(*parts[:at], *parts[at + 2 :])
        sha256 = hashes(path)[0] if path.is_file() else ""
        self._file(path, body=body, headers={"X-Repo-Commit": COMMIT, "ETag": f'"{sha256}"'})

    # ModelScope ---------------------------------------------------------------------------
    def _modelscope(self, parts: list[str]) -> None:
        if len(parts) < 3:
            return self._not_found()
        repo, rest = parts[:2], parts[2:]
        folder = self.root.joinpath(*repo)
        if not folder.is_dir():
            return self._ms_error(404, f"model {'/'.join(repo)} does not exist")
        if rest == ["revisions"]:
            branches = [{"Revision": "master", "CreatedAt": 1700000000}]
            return self._json({"Code": 200, "Data": {"RevisionMap": {"Branches": branches}}})
        if rest == ["repo", "files"]:
            entries = self._files(folder)
            files = [
                {
                    "Name": name.rsplit("/", 1)[-1],
                    "Path": name,
                    "Type": "blob",
                    "Size": p.stat().st_size,
                    "Sha256": hashes(p)[0],
                    "Revision": COMMIT,
                    "CommittedDate": 1700000000,
                }
                for name, p in entries
            ]
            return self._json({"Code": 200, "Success": True, "Data": {"Files": files}})
        if rest == ["repo"]:
            return self._file(folder / self._query().get("FilePath", ""), body=True, headers={})
        return self._not_found()

    def _ms_error(self, status: int, message: str) -> None:
        body = json.dumps({"Code": status, "Message": message, "Success": False}).encode()
        self._send(status, len(body), {"Content-Type": "application/json"})
        self.wfile.write(body)

    # bytes --------------------------------------------------------------------------------
    def _file(self, path: Path, *, body: bool, headers: dict[str, str]) -> None:
        if not path.is_file() or not path.resolve().is_relative_to(self.root.resolve()):
            return self._not_found()
        name = path.name
        if body:
            with self.faults.lock:
                self.faults.requests[name] += 1
                self.faults.ranges.append((name, self.headers.get("Range", "")))
                self.faults.paths.append(self.path)
            status = self.faults.take(self.faults.status, name)
            if status is not None:
                return self._send(status, 0, {})
        size = path.stat().st_size
        start, end, status = 0, size - 1, 200
        wanted = self.headers.get("Range", "")
        if body and wanted.startswith("bytes=") and size:
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start, end = int(first or 0), min(int(last or size - 1), size - 1)
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{size}"}
            status = 206
        self._send(status, end + 1 - start, {**headers, "Content-Type": "application/octet-stream"})
        if not body:
            return None
        with self.faults.lock:
            self.faults.sending += 1
            self.faults.most_sending = max(self.faults.most_sending, self.faults.sending)
        try:
            self._body(path, name, start, end)
        finally:
            with self.faults.lock:
                self.faults.sending -= 1
        return None

    def _body(self, path: Path, name: str, start: int, end: int) -> None:
        cut = self.faults.take(self.faults.cut_after, name)
        flip = self.faults.take(self.faults.corrupt_at, name)
        sent = 0
        with path.open("rb") as handle:
            handle.seek(start)
            position = start
            while position <= end:
                block = bytearray(handle.read(min(self.chunk, end + 1 - position)))
                if flip is not None and position <= flip < position + len(block):
                    block[flip - position] ^= 0xFF
                if cut is not None and sent + len(block) > cut:
                    self.wfile.write(block[: cut - sent])
                    self.wfile.flush()
                    self.close_connection = True
                    return None
                self.wfile.write(block)
                sent += len(block)
                position += len(block)
                if self.chunk_delay_s:
                    self.wfile.flush()
                    time.sleep(self.chunk_delay_s)
        return None


@contextmanager
def local_hub(
    root: Path, chunk_delay_s: float = 0.0, faults: Faults | None = None, chunk: int = 256 * 1024
) -> Iterator[str]:
    """Serve `root/ORG/NAME/FILE` as the hubs' ORG/NAME; yields the endpoint URL (for
    HF_ENDPOINT and MODELSCOPE_DOMAIN alike)."""
    handler = type(
        "Handler",
        (HubHandler,),
        {
            "root": root,
            "chunk_delay_s": chunk_delay_s,
            "faults": faults or Faults(),
            "chunk": chunk,
        },
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
