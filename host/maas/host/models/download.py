"""Downloading one pinned model revision into its cache folder, so that it survives.

Files go into `<folder>.partial/` as `<name>.part` and are appended to with `Range` requests, so a
dropped connection or an agent restart resumes where the bytes end. Each file is hashed while it
streams (a resumed one first re-hashes what it has) and checked against what the hub publishes:
its size, and its sha256 (LFS and ModelScope files) or git blob id (other Hugging Face files). The
folder is renamed into place only when every file is whole and verified, so a revision folder
exists complete or not at all. Free space is checked against the bytes still missing before any
byte is fetched. Transient failures (connection, timeout, 5xx, 429, a short body) back off and
resume; permanent ones (401/403/404, a hash that is wrong twice, a full disk) raise at once.

Up to `PARALLEL_FILES` files download at once (huggingface_hub's `snapshot_download` fetches 8,
its `max_workers`): a model split into shards (a 404 GB GGUF comes as 9) is not held to one
connection, nor to one core's sha256 (about 1.2 GiB/s on an idle Xeon core: the bound of one
verified stream on a fast link, bench/results/download-2026-12-02.md).

Neither hub client offers this whole contract: huggingface_hub verifies no hash after a download,
and the ModelScope SDK retries every error, a 404 included (modelscope/hub/file_download.py,
`http_get_model_file`: "no matter what happen, we will retry"); so the bytes are fetched here,
from the URLs and with the hashes that the clients give (maas.host.models.hub).
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import http.client
import json
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maas.compiler import MaasError
from maas.host.models.hub import Hub, RemoteFile
from maas.host.progress import Progress

MANIFEST = ".maas-revision.json"
CHUNK = 1 << 20  # one read: progress moves at least this often
HASH_BATCH = 8 << 20  # one hash update, in a thread, while the next batch is read
PERMANENT_STATUS = (401, 403, 404, 410)
ATTEMPTS = 6
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 30.0
PARALLEL_FILES = 4


class _Corrupt(Exception):
    pass


class _Transient(Exception):
    pass


class _Abandoned(Exception):
    """Another file of the revision failed: this one stops where it is."""


def partial_of(folder: Path) -> Path:
    return folder.with_name(folder.name + ".partial")


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def holds(folder: Path, pattern: str | None) -> bool:
    """Whether the revision folder holds what a spec's `file` takes (all of it without one)."""
    manifest = read_manifest(folder)
    if manifest is None:
        return False
    if pattern is None:
        return bool(manifest.get("whole"))
    return any(fnmatch.fnmatch(name, pattern) for name in manifest.get("files", {}))


def download_revision(
    hub: Hub,
    repo: str,
    commit: str,
    files: Sequence[RemoteFile],
    folder: Path,
    *,
    whole: bool = False,
    progress: Progress | None = None,
    sleep: Callable[[float], None] | None = None,
    attempts: int = ATTEMPTS,
) -> None:
    """Make `folder` hold `files` of `repo` at `commit`, verified (`whole`: all the repository's
    files); what it holds already is kept, and deployments that use it see only files appear."""
    manifest = read_manifest(folder)
    had: dict[str, int] = dict(manifest.get("files", {})) if manifest else {}
    missing = [f for f in files if f.name not in had]
    if manifest is not None and not missing and (manifest.get("whole") or not whole):
        return
    progress = progress or Progress("download")
    partial = partial_of(folder)
    partial.mkdir(parents=True, exist_ok=True)
    total = sum(f.size for f in missing)
    have = sum(_on_disk(partial, f) for f in missing)
    check_space(partial, total - have, repo)
    progress.total, progress.done = float(total) or None, float(have)
    fetch = _Fetch(hub, repo, commit, partial, progress, sleep or time.sleep, attempts)
    fetch.files(missing)
    listed = {**had, **{f.name: f.size for f in missing}}
    record = {
        "source": hub.source,
        "repo": repo,
        "commit": commit,
        "bytes": sum(listed.values()),
        "files": listed,
        "whole": whole or bool(manifest and manifest.get("whole")),
        "downloaded_at": time.time(),
    }
    (partial / MANIFEST).write_text(json.dumps(record, indent=1))
    if manifest is None:
        if folder.exists():  # an incomplete folder of an earlier layout: replaced whole
            shutil.rmtree(folder)
        partial.rename(folder)  # the revision appears whole, at once
        return
    # Files another deployment of this revision did not take: moved in one by one, each whole,
    # then the manifest that lists them (a crash in between leaves a file it does not list).
    for remote in missing:
        (folder / remote.name).parent.mkdir(parents=True, exist_ok=True)
        (partial / remote.name).replace(folder / remote.name)
    (partial / MANIFEST).replace(folder / MANIFEST)
    shutil.rmtree(partial, ignore_errors=True)


def check_space(where: Path, need: int, repo: str) -> None:
    free = shutil.disk_usage(where).free
    if need > free:
        raise MaasError.single(
            "download",
            f"not enough disk space for '{repo}': {need} bytes still to download, "
            f"{free} free in {where}",
            retryable=False,
            hints=("free space on the cache's file system, or lower the cache's idle time",),
        )


def _on_disk(partial: Path, remote: RemoteFile) -> int:
    for path in (partial / remote.name, partial / f"{remote.name}.part"):
        if path.is_file():
            return min(path.stat().st_size, remote.size)
    return 0


def _session() -> Any:
    import requests

    return requests.Session()


class _Behind:
    """A hash that runs beside the download: one batch hashes in a thread (hashlib lets go of
    the GIL for large updates) while the next one is read, so verifying costs no throughput
    where a second core is free. Batches go in order; `hexdigest` waits for the last."""

    _pool = ThreadPoolExecutor(max_workers=PARALLEL_FILES, thread_name_prefix="hash")

    def __init__(self, hasher: Any) -> None:
        self.hasher = hasher
        self.pending: Future[None] | None = None

    def update(self, data: bytes | memoryview) -> None:
        self.wait()
        self.pending = self._pool.submit(self.hasher.update, data)

    def wait(self) -> None:
        if self.pending is not None:
            self.pending.result()
            self.pending = None

    def hexdigest(self) -> str:
        self.wait()
        return str(self.hasher.hexdigest())


def _hasher(remote: RemoteFile) -> _Behind | None:
    if remote.sha256:
        return _Behind(hashlib.sha256())
    if remote.git_sha1:
        # git's blob id: sha1 over "blob <size>\0" and the content (git-scm.com, Git Objects).
        h = hashlib.sha1(usedforsecurity=False)
        h.update(b"blob %d\0" % remote.size)
        return _Behind(h)
    return None


def _expected(remote: RemoteFile) -> str | None:
    return (remote.sha256 or remote.git_sha1 or "").lower() or None


@dataclass
class _Fetch:
    hub: Hub
    repo: str
    commit: str
    partial: Path
    progress: Progress
    sleep: Callable[[float], None]
    attempts: int
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _local: threading.local = field(default_factory=threading.local)
    _abandon: threading.Event = field(default_factory=threading.Event)
    _finished: int = 0

    def files(self, remote: Sequence[RemoteFile]) -> None:
        """Fetch `remote`, the largest first, up to PARALLEL_FILES at once. The first failure
        is raised once the other files stop: those running at their next read (their bytes
        stay on disk for the next try to resume), the others before they begin."""
        self.progress.note = f"0/{len(remote)} files"
        largest = sorted(remote, key=lambda f: -f.size)
        with ThreadPoolExecutor(min(PARALLEL_FILES, len(remote) or 1), "download") as pool:
            futures = [pool.submit(self.file, f, len(remote)) for f in largest]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            error = next((e for e in (f.exception() for f in done) if e is not None), None)
            if error is not None:
                self._abandon.set()
                for future in futures:
                    future.cancel()
                raise error

    def _advance(self, count: int) -> None:
        with self._lock:  # several files move one figure
            self.progress.done += count

    @property
    def session(self) -> Any:
        """One session per thread: requests does not promise a shared one is safe."""
        if not hasattr(self._local, "session"):
            self._local.session = _session()
        return self._local.session

    def file(self, remote: RemoteFile, count: int = 1) -> None:
        self._file(remote)
        with self._lock:
            self._finished += 1
            self.progress.note = f"{self._finished}/{count} files"

    def _file(self, remote: RemoteFile) -> None:
        dest = self.partial / remote.name
        if dest.is_file() and dest.stat().st_size == remote.size:
            return  # verified before it got its name
        part = dest.with_name(dest.name + ".part")
        part.parent.mkdir(parents=True, exist_ok=True)
        url = self.hub.url(self.repo, self.commit, remote.name)
        hasher = _rehash(part, remote)
        corrupt_once, delay, last = False, FIRST_DELAY_S, ""
        for _ in range(self.attempts):
            if self._abandon.is_set():
                raise _Abandoned
            before = part.stat().st_size if part.exists() else 0
            try:
                hasher = self._stream(url, part, remote, hasher)
                _verify(part, remote, hasher)
                part.replace(dest)
                return
            except _Corrupt as exc:
                self._advance(-(part.stat().st_size if part.exists() else 0))
                part.unlink(missing_ok=True)
                hasher = _hasher(remote)
                if corrupt_once:
                    raise MaasError.single(
                        "download",
                        f"'{self.repo}' file '{remote.name}' fails verification twice: {exc}",
                        retryable=False,
                    ) from None
                corrupt_once, last = True, str(exc)
                continue  # fetched again from the start, at once
            except _Transient as exc:
                last = str(exc)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise MaasError.single(
                        "download",
                        f"the disk filled while downloading '{self.repo}' file '{remote.name}'",
                        retryable=False,
                        hints=("free space; the download resumes where it stopped",),
                    ) from None
                raise
            if (part.stat().st_size if part.exists() else 0) > before:
                delay = FIRST_DELAY_S  # it moved forward: a new fault, not the same one again
            self.progress.note = f"retrying in {delay:g}s: {last}"[:200]
            self.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
        raise MaasError.single(
            "download",
            f"cannot download '{self.repo}' file '{remote.name}' "
            f"after {self.attempts} attempts: {last}",
            retryable=True,
            hints=("the next try resumes from the bytes already on disk",),
        )

    def _stream(self, url: str, part: Path, remote: RemoteFile, hasher: Any) -> Any:
        import requests

        start = part.stat().st_size if part.exists() else 0
        if start > remote.size:
            raise _Corrupt(f"{start} bytes on disk, the hub says {remote.size}")
        if start == remote.size:
            return hasher
        try:
            response = self.session.get(
                url,
                headers={
                    **self.hub.headers(),
                    "Range": f"bytes={start}-",
                    "Accept-Encoding": "identity",  # the bytes the hub hashed, as they are
                },
                stream=True,
                timeout=(30, 120),
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Transient(str(exc)) from None
        with response:
            return self._body(response, start, part, remote, hasher)

    def _body(self, response: Any, start: int, part: Path, remote: RemoteFile, hasher: Any) -> Any:
        if response.status_code in PERMANENT_STATUS:
            raise MaasError.single(
                "download",
                f"cannot download '{remote.name}': the hub answers {response.status_code}",
                retryable=False,
                hints=("check repo_id, file and revision, and the agent's token",)
                if response.status_code != 404
                else (),
            )
        if response.status_code == 200 and start:
            # The server ignored the range: the body starts at byte 0.
            part.unlink()
            self._advance(-start)
            start, hasher = 0, _hasher(remote)
        elif response.status_code not in (200, 206):
            raise _Transient(f"the hub answers {response.status_code}")
        self._copy(response, part, hasher)
        got = part.stat().st_size
        if got < remote.size:
            raise _Transient(f"connection closed at byte {got} of {remote.size}")
        return hasher

    def _copy(self, response: Any, part: Path, hasher: Any) -> None:
        """Append the body to `part` and hash what reached it, whatever ends the body."""
        import requests
        import urllib3

        read = _reader(response)
        buffers = (bytearray(HASH_BATCH), bytearray(HASH_BATCH))
        turn, filled = 0, 0
        view = memoryview(buffers[0])
        try:
            with part.open("ab") as out:
                while True:
                    try:
                        got = read(view[filled : filled + CHUNK])
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Transient(f"connection lost: {exc}") from None
                    if not got:
                        break
                    if self._abandon.is_set():
                        raise _Abandoned
                    out.write(view[filled : filled + got])
                    self._advance(got)
                    filled += got
                    if filled == HASH_BATCH:
                        if hasher is not None:
                            # Hashed in a thread while the other buffer fills; `update` waits
                            # for the previous batch, so the buffer written next is free.
                            hasher.update(view)
                        turn, filled = 1 - turn, 0
                        view = memoryview(buffers[turn])
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.HTTPError,
        ) as exc:
            raise _Transient(f"connection lost: {exc}") from None
        finally:
            if hasher is not None:
                if filled:  # what reached the file is hashed, always
                    hasher.update(view[:filled])
                hasher.wait()  # the buffers are not touched after this


def _reader(response: Any) -> Callable[[memoryview], int]:
    """`readinto` of the response's body: bytes land in our buffers with no copy in between.
    requests' iter_content and urllib3's read1 allocate a fresh bytes object per read, and
    batching those for the hash copies them again (bench/results/download-2026-12-02.md has
    what that cost). http.client's response underneath urllib3's does
    this (its Content-Length and chunked framing included); urllib3 keeps it as `_fp`, and where
    that is not one (another urllib3), its own `read1` is used."""
    fp = getattr(response.raw, "_fp", None)
    if isinstance(fp, http.client.HTTPResponse):
        return fp.readinto

    def read1(view: memoryview) -> int:
        block = response.raw.read1(len(view), decode_content=False)
        view[: len(block)] = block
        return len(block)

    return read1


def _rehash(part: Path, remote: RemoteFile) -> Any:
    hasher = _hasher(remote)
    if hasher is not None and part.is_file():
        with part.open("rb") as handle:
            while block := handle.read(CHUNK):
                hasher.update(block)
    return hasher


def _verify(part: Path, remote: RemoteFile, hasher: Any) -> None:
    size = part.stat().st_size
    if size != remote.size:
        raise _Corrupt(f"{size} bytes, the hub says {remote.size}")
    expected = _expected(remote)
    if expected is not None and hasher is not None and hasher.hexdigest() != expected:
        raise _Corrupt(f"hash {hasher.hexdigest()}, the hub publishes {expected}")
