"""Model metadata at the edge: read GGUF/safetensors headers of local, cached or remote models.

Bytes come from local files, from files in the Hugging Face cache layout
(`models--ORG--NAME/snapshots/REV/`), from the agent's own model cache (one folder per revision),
or, online, from HTTP range requests to Hugging Face or ModelScope (maas.host.models.hub: a
prefix that grows while the header needs more; never the whole file). A hub model's metadata
carries the commit its revision resolved to, which the compiler pins in the plan. Local files
are opened only as regular files, never waited on (`read_regular`), and the agent reads a
local_path model only when its policy admits the path it resolves to. The pure
parsers in maas.compiler.metadata turn bytes into `ModelMetadata`, which is
cached as JSON per repo revision. `offline=True` never touches the network: without a cached or
local copy the estimate is unknown and the plan still compiles.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from maas.compiler import (
    DEFAULT_REVISION,
    Deployment,
    DeploymentBody,
    Diagnostic,
    Loaded,
    MaasError,
    ModelMetadata,
)
from maas.host.models.hub import SPLIT, read_remote
from maas.host.paths import read_regular

FIRST_READ = 1 << 20
# The cached metadata's layout: raised when ModelMetadata learns to read more from a header
# (2: the attention and expert fields of issue 13), so that an entry written by an earlier
# version, which lacks them, is read again from the hub instead of planning without them.
CACHE_FORMAT = 2
ReadRange = Callable[[str, int], bytes]  # (file name, byte count) -> prefix of that file
Admit = Callable[[str, Path], Path | None]  # (deployment, local path) -> the real path to read


@dataclass
class FetchResult:
    models: dict[str, ModelMetadata] = field(default_factory=dict)
    warnings: list[Diagnostic] = field(default_factory=list)


def default_metadata_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "maas" / "metadata"


def default_hf_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return Path(home) / "hub"


def fetch_models(
    deployments: Sequence[Loaded[Deployment]],
    *,
    offline: bool,
    metadata_cache: Path | None = None,
    hf_cache: Path | None = None,
    model_cache: Path | None = None,
    admit: Admit | None = None,
    token: Callable[[str], str | None] | None = None,
) -> FetchResult:
    """Metadata per deployment name for llama-box/vLLM deployments; problems become warnings.

    With `admit` (the agent's policy), a local_path model it does not admit is never opened: the
    compile's policy check reports it, or the container's creation refuses it.
    """
    from maas.compiler import resolve_backend

    result = FetchResult()
    for loaded in deployments:
        spec, name = loaded.model.spec, loaded.model.metadata.name
        if resolve_backend(spec)[0].name not in ("llama-box", "vllm"):
            continue
        local = None
        if admit is not None and spec.source == "local_path" and spec.path:
            # The path it resolves to now is the one read: a link swapped later changes nothing.
            local = admit(name, Path(spec.path))
            if local is None:
                result.warnings.append(
                    _unknown(name, "the model path is not admitted by the policy")
                )
                continue
        offline = offline or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        fetcher = _Fetcher(
            offline,
            metadata_cache or default_metadata_cache(),
            hf_cache or default_hf_cache(),
            model_cache,
            token,
        )
        try:
            meta = fetcher.fetch(spec, local)
        except MaasError as exc:
            if not exc.retryable:
                raise _at_path(exc, loaded) from None
            meta, fetcher.why = None, exc.diagnostics[0].message
        except OSError as exc:
            # A local model that is missing or unreadable is the spec's fault (spec.path), not a
            # bug: it is reported where the path is written.
            raise MaasError(
                [
                    Diagnostic(
                        "model-missing" if isinstance(exc, FileNotFoundError) else "model-read",
                        f"cannot read the model: {exc.strerror or exc}"
                        + (f": {exc.filename}" if exc.filename else ""),
                        loaded.doc.at(("spec", "path")),
                        hints=("check spec.path; the agent reads it on this host",),
                    )
                ]
            ) from None
        if meta is None:
            result.warnings.append(_unknown(name, fetcher.why or "no model metadata"))
        else:
            result.models[name] = meta
    from maas.compiler import check_models

    result.warnings.extend(check_models(deployments, result.models))
    return result


def _at_path(exc: MaasError, loaded: Loaded[Deployment]) -> MaasError:
    """A model file's own error, placed at the spec line that names the model when it has no
    position of its own."""
    field = ("spec", "path") if loaded.model.spec.source == "local_path" else ("spec", "repo_id")
    return MaasError(
        [
            d if d.position is not None else replace(d, position=loaded.doc.at(field))
            for d in exc.diagnostics
        ]
    )


def _unknown(name: str, why: str) -> Diagnostic:
    return Diagnostic("estimate-unknown", f"'{name}': estimate unknown: {why}", severity="warning")


class _Fetcher:
    def __init__(
        self,
        offline: bool,
        cache: Path,
        hf_cache: Path,
        model_cache: Path | None,
        token: Callable[[str], str | None] | None = None,
    ) -> None:
        self.offline, self.cache, self.hf_cache, self.model_cache = (
            offline,
            cache,
            hf_cache,
            model_cache,
        )
        self.token = token or (lambda source: None)
        self.why = ""

    def fetch(self, spec: DeploymentBody, local: Path | None = None) -> ModelMetadata | None:
        if spec.source == "local_path":
            assert spec.path is not None
            return read_local(local or Path(spec.path))
        assert spec.repo_id is not None
        copy = self._local_copy(spec)
        if copy is not None:
            return read_local(copy[0]).model_copy(update={"commit": copy[1]})
        # Keyed by source, repository and revision: an offline plan keeps the pinned commit.
        key = (
            self.cache
            / f"v{CACHE_FORMAT}"
            / ("" if spec.source == "huggingface" else spec.source)
            / spec.repo_id
            / (spec.revision or DEFAULT_REVISION[spec.source])
            / f"{spec.file or '_'}.json"
        )
        try:
            return ModelMetadata.model_validate_json(key.read_bytes())
        except FileNotFoundError:
            pass
        except (OSError, ValueError):  # torn or foreign: read again, then replaced
            key.unlink(missing_ok=True)
        if self.offline:
            self.why = f"offline and not in the metadata cache ({self.cache})"
            return None
        meta = read_remote(
            spec.source, spec.repo_id, spec.revision, spec.file, self.token(spec.source)
        )
        key.parent.mkdir(parents=True, exist_ok=True)
        tmp = key.with_suffix(".tmp")
        tmp.write_text(meta.model_dump_json())
        tmp.replace(key)
        return meta

    def _local_copy(self, spec: DeploymentBody) -> tuple[Path, str | None] | None:
        """A copy on this host: a Hugging Face cache snapshot, or a revision folder of the
        agent's model cache named by the spec's revision (a commit); with the commit it is."""
        assert spec.repo_id is not None
        candidates: list[tuple[Path, str | None]] = []
        if spec.source == "huggingface":
            org, _, name = spec.repo_id.partition("/")
            repo = self.hf_cache / f"models--{org}--{name}"
            if (repo / "snapshots").is_dir():
                ref = repo / "refs" / (spec.revision or "main")
                rev = ref.read_text().strip() if ref.is_file() else (spec.revision or "")
                if rev:
                    candidates.append((repo / "snapshots" / rev, rev))
        if self.model_cache is not None and spec.revision:
            folder = self.model_cache / "models" / spec.source / spec.repo_id / spec.revision
            candidates.append((folder, _manifest_commit(folder)))
        for folder, commit in candidates:
            if not folder.is_dir():
                continue
            if spec.file is None:
                if (folder / "config.json").is_file():
                    return folder, commit
                continue
            matches = sorted(p for p in folder.iterdir() if fnmatch.fnmatch(p.name, spec.file))
            if matches:
                return matches[0], commit
        return None


def _manifest_commit(folder: Path) -> str | None:
    from maas.host.models.download import MANIFEST

    try:
        return str(json.loads((folder / MANIFEST).read_text())["commit"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_local(path: Path) -> ModelMetadata:
    """Metadata of a local GGUF file (its split siblings too) or safetensors model folder."""
    if path.is_dir():
        return _read_safetensors_dir(path)
    shards = split_siblings(path)
    return read_gguf_files(
        [p.name for p in shards],
        lambda n, size: _prefix(path.parent / n, size),
        {p.name: p.stat().st_size for p in shards},
    )


def split_siblings(path: Path) -> list[Path]:
    match = SPLIT.match(path.name)
    if not match:
        return [path]
    count = int(match["count"])
    return [
        path.with_name(f"{match['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)
    ]


def _prefix(path: Path, size: int) -> bytes:
    return read_regular(path, size)


def read_gguf_files(names: Sequence[str], read: ReadRange, sizes: dict[str, int]) -> ModelMetadata:
    """Parse each file's header from growing prefixes, then merge the shards into one model."""
    from maas.compiler import GgufHeader, from_gguf, parse_gguf

    headers = []
    for name in names:
        size = min(FIRST_READ, sizes[name])
        while True:
            result = parse_gguf(read(name, size), name=name, complete=False, file_size=sizes[name])
            if isinstance(result, GgufHeader):
                headers.append(result)
                break
            size = result.size
    return from_gguf(headers, names=list(names))


def _read_safetensors_dir(folder: Path) -> ModelMetadata:
    from maas.compiler import from_config, header_length, index_total_size, safetensors_weight_bytes

    config = folder / "config.json"
    if not config.is_file():
        raise MaasError.single("model-metadata", f"{folder} has no config.json")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        total = index_total_size(read_regular(index), name=str(index))
    else:
        total = 0
        for file in sorted(folder.glob("*.safetensors")):
            need = header_length(_prefix(file, 8), name=str(file))
            total += safetensors_weight_bytes(_prefix(file, need), name=str(file))
    return from_config(read_regular(config), weight_bytes=total, name=str(config))


__all__ = ["FetchResult", "default_metadata_cache", "fetch_models", "read_gguf_files", "read_local"]


def fetch_repo_models(sources: Mapping[str, str], *, offline: bool) -> dict[str, ModelMetadata]:
    return dict(fetch_repo_metadata(sources, offline=offline).models)


def fetch_repo_metadata(sources: Mapping[str, str], *, offline: bool) -> FetchResult:
    """Model metadata for the deployments of a config repository's sources (best effort: a
    source that does not parse is left to `compile_repo` to report)."""
    from maas.compiler import load_sources

    documents = load_sources(
        {k: v for k, v in sources.items() if k.startswith("deployments/")}, kinds=("Deployment",)
    )
    return fetch_models(documents.deployments, offline=offline)
