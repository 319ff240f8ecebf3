"""The model hubs as one interface: a repository's file list at a revision (sizes, published
hashes, the commit the revision resolves to), a file's URL, and reads of a file's first bytes.

Hugging Face through huggingface_hub (`HfApi.model_info(files_metadata=True)`: the commit is the
info's `sha`; an LFS file publishes its sha256, any other file its git blob id), ModelScope
through its SDK (`modelscope_hub.api.HubApi`, the client behind `modelscope`: the listing
`GET /api/v1/models/{id}/repo/files` gives each file's `Sha256`, `Size` and the commit that
last changed it, `Revision`; its `get_download_url` is
`/api/v1/models/{id}/repo?Revision=&FilePath=`).
ModelScope publishes no commit for a branch, so a branch is pinned to the newest commit among its
files' (by `CommittedDate`): the tree at that commit holds exactly the files listed.
Network failures are retryable `MaasError`s; a repository or revision the hub does not have is not.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from maas.compiler import MaasError, ModelMetadata

HF_ENDPOINT_ENV = "HF_ENDPOINT"
# The variables the ModelScope SDK reads (modelscope_hub/config.py; the second is deprecated).
MODELSCOPE_ENDPOINT_ENV = ("MODELSCOPE_ENDPOINT", "MODELSCOPE_DOMAIN")

# A split GGUF's shards (llama.cpp's gguf-split naming): `<stem>-00001-of-00003.gguf`.
SPLIT = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    sha256: str | None = None  # LFS files (HF), every file (ModelScope)
    git_sha1: str | None = None  # HF non-LFS files: the git blob id


@dataclass
class Listing:
    repo: str
    commit: str
    files: dict[str, RemoteFile] = field(default_factory=dict)

    def select(self, pattern: str | None) -> list[RemoteFile]:
        """The files a spec's `file` glob takes (a split GGUF's siblings too); all without."""
        if pattern is None:
            return [self.files[n] for n in sorted(self.files)]
        return [self.files[n] for n in matching(sorted(self.files), pattern, self.repo)]


class Hub(Protocol):
    source: str

    def listing(self, repo: str, revision: str | None) -> Listing: ...

    def url(self, repo: str, commit: str, name: str) -> str: ...

    def headers(self) -> dict[str, str]: ...


def first_line(exc: BaseException) -> str:
    """A client's error, its first line: the hub clients append paragraphs of advice."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def permanent(repo: str, what: str, hint: str | None = None) -> MaasError:
    return MaasError.single(
        "download", f"cannot fetch '{repo}': {what}", retryable=False, hints=(hint,) if hint else ()
    )


def transient(repo: str, exc: Exception) -> MaasError:
    return MaasError.single(
        "download", f"cannot reach the hub for '{repo}': {first_line(exc)}", retryable=True
    )


class HuggingFace:
    source = "huggingface"

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.endpoint = os.environ.get(HF_ENDPOINT_ENV, "https://huggingface.co").rstrip("/")

    def listing(self, repo: str, revision: str | None) -> Listing:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import (
            GatedRepoError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        try:
            info = HfApi(endpoint=self.endpoint, token=self.token or False).model_info(
                repo, revision=revision, files_metadata=True
            )
        except GatedRepoError as exc:  # before its base class
            raise permanent(
                repo,
                f"access denied ({first_line(exc)})",
                "accept the licence and give the agent a token",
            ) from exc
        except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise permanent(repo, f"not on the hub ({first_line(exc)})") from exc
        except Exception as exc:  # the client's transport errors vary by version: retryable
            raise transient(repo, exc) from exc
        files = {}
        for s in info.siblings or []:
            lfs = s.lfs
            files[s.rfilename] = RemoteFile(
                s.rfilename,
                int(s.size or 0),
                sha256=lfs.sha256 if lfs else None,
                git_sha1=None if lfs else s.blob_id,
            )
        return Listing(repo, info.sha or revision or "main", files)

    def url(self, repo: str, commit: str, name: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(repo, name, revision=commit, endpoint=self.endpoint)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


class ModelScope:
    source = "modelscope"

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        domain = next(
            (os.environ[n] for n in MODELSCOPE_ENDPOINT_ENV if os.environ.get(n)),
            "https://www.modelscope.cn",
        )
        self.endpoint = (domain if "://" in domain else f"https://{domain}").rstrip("/")

    def _api(self) -> Any:
        from modelscope_hub.api import HubApi

        return HubApi(endpoint=self.endpoint, token=self.token)

    def listing(self, repo: str, revision: str | None) -> Listing:
        from modelscope_hub.errors import (
            AuthenticationError,
            NotExistError,
            PermissionDeniedError,
        )

        try:
            raw = self._api().legacy.list_repo_files(
                repo_id=repo, repo_type="model", revision=revision or "master", recursive=True
            )
        except NotExistError as exc:
            raise permanent(repo, f"not on ModelScope ({first_line(exc)})") from exc
        except (PermissionDeniedError, AuthenticationError) as exc:
            raise permanent(
                repo, f"access denied ({first_line(exc)})", "give the agent a ModelScope token"
            ) from exc
        except Exception as exc:
            raise transient(repo, exc) from exc
        entries = [e for e in raw if (e.get("Type") or "blob") != "tree"]
        if not entries:
            raise permanent(repo, f"no files at revision '{revision or 'master'}'")
        newest = max(entries, key=lambda e: str(e.get("CommittedDate") or ""))
        commit = str(newest.get("Revision") or revision or "master")
        files = {
            str(e["Path"]): RemoteFile(str(e["Path"]), int(e.get("Size") or 0), e.get("Sha256"))
            for e in entries
        }
        return Listing(repo, commit, files)

    def url(self, repo: str, commit: str, name: str) -> str:
        return str(self._api().legacy.get_download_url(repo, "model", name, revision=commit))

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def hub_for(source: str, token: str | None = None) -> Hub:
    if source == "huggingface":
        return HuggingFace(token)
    if source == "modelscope":
        return ModelScope(token)
    raise ValueError(source)


def matching(names: Sequence[str], pattern: str, repo: str) -> list[str]:
    """The first file the glob matches, with all its split siblings (`-00001-of-00003.gguf`)."""
    matches = sorted(n for n in names if fnmatch.fnmatch(n, pattern))
    if not matches:
        raise permanent(repo, f"no file matches '{pattern}'")
    first = matches[0]
    split = SPLIT.match(first)
    if split:
        prefix = f"{split['stem']}-"
        return sorted(n for n in names if n.startswith(prefix) and SPLIT.match(n))
    return [first]


def read_remote(
    source: str, repo: str, revision: str | None, file: str | None, token: str | None = None
) -> ModelMetadata:
    """Header metadata by range requests, with `commit` set to what the revision resolved to."""
    hub = hub_for(source, token)
    listing = hub.listing(repo, revision)
    sizes = {n: f.size for n, f in listing.files.items()}
    try:
        if file is not None:
            from maas.host.models.metadata import read_gguf_files

            names = matching(sorted(sizes), file, repo)
            meta = read_gguf_files(names, lambda n, size: _range(hub, listing, n, size), sizes)
        else:
            meta = _remote_safetensors(hub, listing, sizes)
    except MaasError:
        raise
    except Exception as exc:
        raise transient(repo, exc) from exc
    size = sum(f.size for f in listing.select(file))
    return meta.model_copy(update={"commit": listing.commit, "download_bytes": size})


def _range(hub: Hub, listing: Listing, name: str, size: int) -> bytes:
    import requests

    response = requests.get(
        hub.url(listing.repo, listing.commit, name),
        headers={**hub.headers(), "Range": f"bytes=0-{size - 1}"},
        timeout=60,
    )
    response.raise_for_status()
    return bytes(response.content[:size])


def _remote_safetensors(hub: Hub, listing: Listing, sizes: dict[str, int]) -> ModelMetadata:
    from maas.compiler import from_config, header_length, index_total_size, safetensors_weight_bytes

    repo = listing.repo
    if "config.json" not in sizes:
        raise MaasError.single("model-metadata", f"'{repo}' has no config.json")
    config = _range(hub, listing, "config.json", sizes["config.json"])
    index = "model.safetensors.index.json"
    if index in sizes:
        total = index_total_size(_range(hub, listing, index, sizes[index]), name=index)
    else:
        total = 0
        for name in sorted(n for n in sizes if n.endswith(".safetensors")):
            need = header_length(_range(hub, listing, name, 8), name=name)
            total += safetensors_weight_bytes(_range(hub, listing, name, need), name=name)
    return from_config(config, weight_bytes=total, name=f"{repo}/config.json")
