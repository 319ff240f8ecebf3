"""A local server laid out like the Hugging Face Hub, enough for huggingface_hub downloads.

Routes: `GET /api/models/{repo}/revision/{rev}` and `/api/models/{repo}/tree/{rev}` (the file
list), `HEAD|GET /{repo}/resolve/{rev}/{file}` (the file, with the commit and ETag headers the
client checks; Range requests for header reads). Files come from a folder per repository;
`chunk_delay_s` slows whole-file bodies down so progress can be watched.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = Path()
    chunk_delay_s = 0.0
    chunk = 256 * 1024

    def log_message(self, *args: object) -> None:
        return None

    def _parts(self) -> list[str]:
        return self.path.split("?", 1)[0].strip("/").split("/")

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()

    def _json(self, value: object) -> None:
        body = json.dumps(value).encode()
        self._send(200, body, {"Content-Type": "application/json"})
        self.wfile.write(body)

    def _not_found(self) -> None:
        self._send(404, b"", {"X-Error-Code": "RepoNotFound"})

    def do_HEAD(self) -> None:
        self._file(body=False)

    def do_GET(self) -> None:
        parts = self._parts()
        if parts[:2] == ["api", "models"]:
            return self._listing(parts)
        return self._file(body=True)

    def _listing(self, parts: list[str]) -> None:
        kind = "tree" if "tree" in parts else "revision"
        if kind not in parts:
            return self._not_found()
        folder = self.root / "/".join(parts[2 : parts.index(kind)])
        if not folder.is_dir():
            return self._not_found()
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        entries = [(p.relative_to(folder).as_posix(), p) for p in files]
        if kind == "tree":
            return self._json(
                [
                    {"type": "file", "path": name, "size": p.stat().st_size,
                     "oid": hashlib.sha1(p.read_bytes()).hexdigest()}
                    for name, p in entries
                ]
            )
        siblings = [{"rfilename": name, "size": p.stat().st_size} for name, p in entries]
        return self._json({"id": folder.name, "sha": COMMIT, "siblings": siblings})

    def _file(self, *, body: bool) -> None:
        parts = self._parts()
        if "resolve" not in parts:
            return self._not_found()
        at = parts.index("resolve")
        path = self.root.joinpath(*parts[:at], *parts[at + 2 :])
        if not path.is_file():
            return self._not_found()
        data = path.read_bytes()
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        wanted = self.headers.get("Range", "")
        if body and wanted.startswith("bytes="):
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start, end = int(first or 0), min(int(last or len(data) - 1), len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            self._send(206, data[start : end + 1], headers)
            self.wfile.write(data[start : end + 1])
            return None
        self._send(200, data, {**headers, "Content-Type": "application/octet-stream"})
        if body:
            for start in range(0, len(data), self.chunk):
                self.wfile.write(data[start : start + self.chunk])
                self.wfile.flush()
                time.sleep(self.chunk_delay_s)
        return None


@contextmanager
def local_hub(root: Path, chunk_delay_s: float = 0.0) -> Iterator[str]:
    """Serve `root/ORG/NAME/FILE` as the hub's ORG/NAME; yields the endpoint URL."""
    handler = type("Handler", (HubHandler,), {"root": root, "chunk_delay_s": chunk_delay_s})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
