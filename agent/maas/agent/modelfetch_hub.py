"""Remote model metadata from the Hugging Face Hub by HTTP range requests (huggingface_hub).

Lists the repo's files at one revision, then reads only what headers need: a growing prefix of each
GGUF file, `config.json` and `model.safetensors.index.json`, or the first bytes of a `.safetensors`
file. Network failures are retryable `MaasError`s.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from maas.compiler.diagnostics import MaasError
from maas.compiler.metadata import ModelMetadata


def _hub_error(repo: str, exc: Exception) -> MaasError:
    return MaasError.single(
        "model-metadata", f"cannot read '{repo}' from the hub: {exc}", retryable=True
    )


def read_remote(repo: str, revision: str | None, file: str | None) -> ModelMetadata:
    from huggingface_hub import HfApi

    try:
        info = HfApi().model_info(repo, revision=revision, files_metadata=True)
        sizes = {s.rfilename: s.size or 0 for s in info.siblings or []}
        sha = info.sha or revision or "main"
        if file is not None:
            return _remote_gguf(repo, sha, _matching(sizes, file, repo), sizes)
        return _remote_safetensors(repo, sha, sizes)
    except MaasError:
        raise
    except Exception as exc:  # the hub client's transport errors vary by version: all retryable
        raise _hub_error(repo, exc) from exc


def _matching(sizes: dict[str, int], pattern: str, repo: str) -> list[str]:
    from maas.agent.modelfetch import SPLIT

    matches = sorted(n for n in sizes if fnmatch.fnmatch(n, pattern))
    if not matches:
        raise MaasError.single("model-metadata", f"no file '{pattern}' in '{repo}'")
    first = matches[0]
    split = SPLIT.match(first)
    if split:
        prefix = f"{split['stem']}-"
        return sorted(n for n in sizes if n.startswith(prefix) and SPLIT.match(n))
    return [first]


def _range(repo: str, sha: str, name: str, size: int) -> bytes:
    from huggingface_hub import get_session, hf_hub_url

    url = hf_hub_url(repo, name, revision=sha)
    response = get_session().get(url, headers={"Range": f"bytes=0-{size - 1}"}, timeout=60)
    response.raise_for_status()
    return bytes(response.content[:size])


def _remote_gguf(repo: str, sha: str, names: Sequence[str], sizes: dict[str, int]) -> ModelMetadata:
    from maas.agent.modelfetch import read_gguf_files

    return read_gguf_files(names, lambda n, size: _range(repo, sha, n, size), sizes)


def _remote_safetensors(repo: str, sha: str, sizes: dict[str, int]) -> ModelMetadata:
    from maas.compiler.metadata.safetensors import (
        from_config,
        header_length,
        index_total_size,
        safetensors_weight_bytes,
    )

    if "config.json" not in sizes:
        raise MaasError.single("model-metadata", f"'{repo}' has no config.json")
    config = _range(repo, sha, "config.json", sizes["config.json"])
    index = "model.safetensors.index.json"
    if index in sizes:
        total = index_total_size(_range(repo, sha, index, sizes[index]), name=index)
    else:
        total = 0
        for name in sorted(n for n in sizes if n.endswith(".safetensors")):
            need = header_length(_range(repo, sha, name, 8), name=name)
            total += safetensors_weight_bytes(_range(repo, sha, name, need), name=name)
    return from_config(config, weight_bytes=total, name=f"{repo}/config.json")
