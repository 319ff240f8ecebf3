"""Model downloads from both hubs, against a local server laid out like each hub's file API
(tests/support/hubserver.py): revisions pinned in the plan, the `file` glob, tokens, offline mode,
a cut connection, an agent restart mid-file, a corrupted byte, transient and permanent statuses,
a full disk (a real tmpfs), and the cache's collector."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from maas.agent.reconcile.prepare import download_model, needs_download, node_tokens
from maas.compiler import CompileOptions, MaasError, compile_plan, load_sources
from maas.compiler.plan import Plan, PlanDeployment
from maas.compiler.policy import Policy
from maas.host.models.cache import ModelCache
from maas.host.models.download import MANIFEST, partial_of
from maas.host.models.metadata import fetch_models
from maas.host.progress import Progress
from support.gguf_factory import write_tiny_llama
from support.hubserver import COMMIT, Faults, local_hub
from support.paths import ROOT

NODE = (
    load_sources({"cpu.yaml": (ROOT / "examples" / "nodes" / "cpu-01.yaml").read_text()})
    .nodes[0]
    .model
)
SOURCES = ("huggingface", "modelscope")
SIZE = 24_000_000  # weights.bin: more than the sockets hold, so a download takes many reads


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Faults]]:
    root = tmp_path / "hub"
    repo = root / "org" / "tiny-GGUF"
    repo.mkdir(parents=True)
    write_tiny_llama(repo / "tiny-q4.gguf")
    (repo / "weights.bin").write_bytes(os.urandom(SIZE))
    (repo / "README.md").write_text("a tiny model\n")  # not LFS: verified by its git blob id
    faults = Faults()
    with local_hub(root, faults=faults) as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", endpoint)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield repo, faults


def planned(tmp_path: Path, source: str, file: str | None = "tiny-q4*.gguf") -> PlanDeployment:
    """The plan entry of a deployment, with metadata read from the hub at the edge: llama.cpp
    for a GGUF file, else a custom backend that names `{{model_path}}` (the agent downloads)."""
    body = f"  source: {source}\n  repo_id: org/tiny-GGUF\n  allow_cpu_offload: true\n"
    body += f"  file: '{file}'\n" if file else ""
    if not (file or "").startswith("tiny-q4"):
        body += "  backend: custom\n  image: x/y\n  command: '--model {{model_path}}'\n"
    text = f"apiVersion: maas/v1\nkind: Deployment\nmetadata: {{name: m}}\nspec:\n{body}"
    documents = load_sources({"d.yaml": text})
    assert not documents.diagnostics
    fetched = fetch_models(
        documents.deployments,
        offline=False,
        metadata_cache=tmp_path / "meta",
        hf_cache=tmp_path / "hf",
    )
    options = CompileOptions(cache_dir=str(tmp_path / "cache"), policy=Policy())
    plan = compile_plan(documents.deployments, NODE, options=options, models=fetched.models)
    return plan.deployments[0]


def fetch(d: PlanDeployment, **kwargs: object) -> Progress:
    bar = Progress("download")
    download_model(d, lambda text: None, bar, **kwargs)  # type: ignore[arg-type]
    return bar


@pytest.mark.parametrize("source", SOURCES)
def test_both_hubs_download_the_pinned_revision_verified(
    tmp_path: Path, hub: tuple[Path, Faults], source: str
) -> None:
    repo, faults = hub
    d = planned(tmp_path, source)
    # The commit was resolved where the metadata was read, and the plan names it.
    assert d.model.commit == COMMIT
    folder = tmp_path / "cache" / "models" / source / "org" / "tiny-GGUF" / COMMIT
    assert d.model.folder == str(folder)
    assert d.model.path == str(folder / "tiny-q4.gguf")  # the glob resolved to the file
    assert [(m.source, m.read_only) for m in d.mounts] == [(str(folder), True)]
    assert needs_download(d)
    header_reads = faults.requests["tiny-q4.gguf"]  # the metadata, read while planning
    bar = fetch(d)
    assert not needs_download(d)
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST, "tiny-q4.gguf"]  # glob only
    assert (folder / "tiny-q4.gguf").read_bytes() == (repo / "tiny-q4.gguf").read_bytes()
    size = (repo / "tiny-q4.gguf").stat().st_size
    assert (bar.done, bar.total, bar.note) == (size, size, "1/1 files")
    assert json.loads((folder / MANIFEST).read_text())["commit"] == COMMIT
    assert not partial_of(folder).exists()
    # The bytes come from the pinned commit, never from a branch that may have moved.
    assert faults.paths and all(COMMIT in path for path in faults.paths)
    fetch(d)  # present: nothing is asked again
    assert faults.requests["tiny-q4.gguf"] == header_reads + 1


@pytest.mark.parametrize("source", SOURCES)
def test_a_whole_repository_with_a_small_file_verified_by_its_own_hash(
    tmp_path: Path, hub: tuple[Path, Faults], source: str
) -> None:
    d = planned(tmp_path, source, file=None)
    folder = Path(d.model.folder or "")
    faults = hub[1]
    faults.arm(faults.corrupt_at, "README.md", 0)
    fetch(d)
    assert (folder / "README.md").read_text() == "a tiny model\n"
    assert faults.requests["README.md"] == 2  # the corrupted copy was caught and fetched again
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [MANIFEST, "README.md", "tiny-q4.gguf", "weights.bin"]
    )


def test_shards_download_side_by_side_and_one_that_fails_stops_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "hub"
    repo = root / "org" / "tiny-GGUF"
    repo.mkdir(parents=True)
    write_tiny_llama(repo / "tiny-q4.gguf")
    for index in range(1, 4):
        (repo / f"shard-{index:05d}-of-00003.bin").write_bytes(os.urandom(1_000_000))
    faults = Faults()
    with local_hub(root, chunk_delay_s=0.005, faults=faults) as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        d = planned(tmp_path, "huggingface", file=None)  # the whole repository
        faults.arm(faults.corrupt_at, "shard-00003-of-00003.bin", 10, times=2)
        with pytest.raises(MaasError, match="fails verification twice"):
            fetch(d)
        folder = Path(d.model.folder or "")
        assert not folder.exists()  # nothing half-verified is ever in place
        bar = fetch(d)  # the next try resumes what the others had when they stopped
        # All four files at once. The server's count can read one more: a body the client has
        # read whole is still counted until the server's handler returns, while a retry of it
        # (the corrupted shard) has begun.
        assert faults.most_sending >= 4
    shards = sorted(p.name for p in folder.iterdir() if p.name.startswith("shard-"))
    total = sum(p.stat().st_size for p in repo.iterdir())
    assert len(shards) == 3 and bar.done == bar.total == total and bar.note == "4/4 files"
    for name in shards:
        assert (folder / name).read_bytes() == (repo / name).read_bytes()
    # The largest file (about 0.7 s at this pace) was stopped mid-way, and resumed.
    resumed = [r for n, r in faults.ranges if n == "tiny-q4.gguf"][1]
    assert resumed != "bytes=0-"


@pytest.mark.parametrize("source", SOURCES)
def test_a_cut_connection_resumes_where_the_bytes_end(
    tmp_path: Path, hub: tuple[Path, Faults], source: str
) -> None:
    repo, faults = hub
    d = planned(tmp_path, source, file="weights.bin")
    faults.arm(faults.cut_after, "weights.bin", 700_000)
    fetch(d)
    assert (Path(d.model.path)).read_bytes() == (repo / "weights.bin").read_bytes()
    assert [r for n, r in faults.ranges if n == "weights.bin"] == ["bytes=0-", "bytes=700000-"]


def test_an_agent_restart_mid_file_resumes_and_counts_what_it_has(
    tmp_path: Path, hub: tuple[Path, Faults]
) -> None:
    repo, faults = hub
    d = planned(tmp_path, "modelscope", file="weights.bin")
    # What a killed agent leaves: the first bytes in the partial folder.
    part = partial_of(Path(d.model.folder or "")) / "weights.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes((repo / "weights.bin").read_bytes()[:1_234_567])
    bar = fetch(d)
    assert Path(d.model.path).read_bytes() == (repo / "weights.bin").read_bytes()
    assert [r for n, r in faults.ranges if n == "weights.bin"] == ["bytes=1234567-"]
    assert bar.done == bar.total == SIZE


def test_a_file_corrupted_twice_is_a_permanent_error_and_nothing_is_kept(
    tmp_path: Path, hub: tuple[Path, Faults]
) -> None:
    faults = hub[1]
    d = planned(tmp_path, "huggingface", file="weights.bin")
    faults.arm(faults.corrupt_at, "weights.bin", 1_999_999, times=2)
    with pytest.raises(MaasError) as caught:
        fetch(d)
    assert not caught.value.retryable
    assert "fails verification twice" in caught.value.diagnostics[0].message
    assert not Path(d.model.folder or "").exists()
    assert not list(partial_of(Path(d.model.folder or "")).rglob("*.part"))
    fetch(d)  # the hub serves good bytes again: the next try succeeds
    assert not needs_download(d)


def test_transient_statuses_back_off_and_permanent_ones_are_not_retried(
    tmp_path: Path, hub: tuple[Path, Faults], monkeypatch: pytest.MonkeyPatch
) -> None:
    faults = hub[1]
    slept: list[float] = []
    monkeypatch.setattr("maas.host.models.download.time.sleep", slept.append)
    d = planned(tmp_path, "huggingface", file="weights.bin")
    faults.arm(faults.status, "weights.bin", 503, times=3)
    fetch(d)
    assert slept == [0.5, 1.0, 2.0] and faults.requests["weights.bin"] == 4
    slept.clear()
    gone = planned(tmp_path, "modelscope", file="tiny-q4*.gguf")
    faults.arm(faults.status, "tiny-q4.gguf", 404, times=100)
    before = faults.requests["tiny-q4.gguf"]  # the header, read while planning
    with pytest.raises(MaasError) as caught:
        fetch(gone)
    assert not caught.value.retryable and "404" in caught.value.diagnostics[0].message
    assert faults.requests["tiny-q4.gguf"] == before + 1 and slept == []


@pytest.mark.parametrize("source", SOURCES)
def test_a_repository_the_hub_does_not_have_is_permanent(
    tmp_path: Path, hub: tuple[Path, Faults], source: str
) -> None:
    d = planned(tmp_path, source)
    d = d.model_copy(update={"model": d.model.model_copy(update={"repo_id": "org/missing"})})
    with pytest.raises(MaasError) as caught:
        fetch(d)
    assert not caught.value.retryable
    assert "org/missing" in caught.value.diagnostics[0].message


@pytest.mark.parametrize("source", SOURCES)
def test_tokens_come_from_the_node_secrets(
    tmp_path: Path, hub: tuple[Path, Faults], source: str
) -> None:
    faults = hub[1]
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    name = {"huggingface": "huggingface-token", "modelscope": "modelscope-token"}[source]
    (secrets / name).write_text("tok-123\n")
    (secrets / name).chmod(0o600)
    d = planned(tmp_path, source)
    fetch(d, token=node_tokens(secrets))
    assert "Bearer tok-123" in faults.tokens
    assert node_tokens(tmp_path / "none")(source) is None  # no secret: anonymous


def test_offline_asks_no_hub(tmp_path: Path, hub: tuple[Path, Faults]) -> None:
    d = planned(tmp_path, "huggingface")
    requests = sum(hub[1].requests.values())
    with pytest.raises(MaasError) as caught:
        fetch(d, offline=True)
    assert not caught.value.retryable and "offline" in caught.value.diagnostics[0].message
    assert sum(hub[1].requests.values()) == requests


@contextlib.contextmanager
def mounted_tmpfs(size: str) -> Iterator[Path]:
    """A real file system of `size` (root mounts it; it is unmounted after)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = Path("/tmp") / f"maas-tmpfs-{uuid.uuid4().hex[:8]}"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)
        where.rmdir()


@pytest.fixture
def tmpfs() -> Iterator[Path]:
    with mounted_tmpfs("32m") as where:
        yield where


def test_a_full_disk_is_found_before_the_first_byte_and_when_it_fills(
    tmp_path: Path, hub: tuple[Path, Faults], tmpfs: Path
) -> None:
    repo, faults = hub
    d = planned(tmp_path, "huggingface", file="weights.bin")
    d = _in_cache(d, tmp_path / "cache", tmpfs)
    ballast = tmpfs / "ballast"
    ballast.write_bytes(b"\0" * 16_000_000)  # about 16 MB left: 24 MB cannot fit
    with pytest.raises(MaasError) as caught:
        fetch(d)
    assert not caught.value.retryable
    assert "not enough disk space" in caught.value.diagnostics[0].message
    assert faults.requests["weights.bin"] == 0  # found before any byte was fetched
    ballast.unlink()

    class FillsUp(Progress):
        """The disk fills from elsewhere once the download has begun."""

        def __setattr__(self, key: str, value: object) -> None:
            super().__setattr__(key, value)
            if key == "done" and isinstance(value, float) and value > 0 and not ballast.exists():
                with ballast.open("wb", buffering=0) as out, contextlib.suppress(OSError):
                    while True:  # to the brim
                        out.write(b"\0" * 65536)

    bar = FillsUp("download")
    with pytest.raises(MaasError) as caught:
        download_model(d, lambda text: None, bar)
    assert not caught.value.retryable and "disk filled" in caught.value.diagnostics[0].message
    part = partial_of(Path(d.model.folder or "")) / "weights.bin.part"
    kept = part.stat().st_size
    assert 0 < kept < SIZE  # what was written is kept for the next try
    ballast.unlink()
    fetch(d)
    assert Path(d.model.path).read_bytes() == (repo / "weights.bin").read_bytes()
    assert [r for n, r in faults.ranges if n == "weights.bin"][-1] == f"bytes={kept}-"


def _in_cache(d: PlanDeployment, old: Path, new: Path) -> PlanDeployment:
    model = d.model.model_copy(
        update={
            "folder": (d.model.folder or "").replace(str(old), str(new)),
            "path": d.model.path.replace(str(old), str(new)),
        }
    )
    return d.model_copy(update={"model": model})


def test_the_collector_removes_idle_revisions_and_never_one_in_use(
    tmp_path: Path, hub: tuple[Path, Faults]
) -> None:
    used = planned(tmp_path, "huggingface")
    idle = planned(tmp_path, "modelscope")
    fetch(used)
    fetch(idle)
    cache = ModelCache(tmp_path / "cache", tmp_path / "state", max_idle_s=3600)
    both = Plan(node="n", deployments=[used, idle.model_copy(update={"name": "m2"})])
    only_used = Plan(node="n", deployments=[used])
    assert cache.pass_done(both, now=1000.0) == []
    usage = cache.usage(only_used)
    assert [(m["source"], m["repo"]) for m in usage] == [
        ("huggingface", "org/tiny-GGUF"),
        ("modelscope", "org/tiny-GGUF"),
    ]
    assert usage[0]["revisions"][0]["used_by"] == ["m"]
    assert usage[1]["revisions"][0]["used_by"] == []
    assert usage[0]["bytes"] == Path(used.model.path).stat().st_size + len(
        (Path(used.model.folder or "") / MANIFEST).read_bytes()
    )
    # Within the idle time nothing goes; after it, only the revision no plan references.
    assert cache.pass_done(only_used, now=1000.0 + 1800) == []
    removed = cache.pass_done(only_used, now=1000.0 + 3600 * 24)
    assert removed == [Path(idle.model.folder or "")]
    assert not Path(idle.model.folder or "").exists()
    assert Path(used.model.path).is_file()
    # In use for ever, however old its last recorded use: never removed.
    stale = ModelCache(tmp_path / "cache", tmp_path / "state", max_idle_s=0)
    assert stale.pass_done(only_used, now=1e12) == []
    assert Path(used.model.path).is_file()
    assert needs_download(idle)  # gone: a plan that wants it again downloads it again


def test_validate_says_where_a_model_cannot_fit_the_nodes_disk(
    tmp_path: Path, hub: tuple[Path, Faults]
) -> None:
    spec = tmp_path / "d.yaml"
    spec.write_text(
        "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: m}\nspec:\n"
        "  source: modelscope\n  repo_id: org/tiny-GGUF\n  file: tiny-q4.gguf\n"
        "  allow_cpu_offload: true\n"
    )
    node = (ROOT / "examples" / "nodes" / "cpu-01.yaml").read_text()
    small = tmp_path / "small.yaml"
    small.write_text(node.replace("spec:\n", "spec:\n  disk: {total_bytes: 1000000}\n", 1))
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "maasctl"), "validate", str(spec), "--node", str(small)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert done.returncode != 0, done.stdout + done.stderr
    assert (
        f"{spec}:6:12: error: the model is 11.0 MiB; the model cache file system of node "
        "'cpu-01' holds 1000000 bytes in all [disk]"
    ) in done.stdout + done.stderr
    large = tmp_path / "large.yaml"
    large.write_text(node.replace("spec:\n", "spec:\n  disk: {total_bytes: 100000000000}\n", 1))
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "maasctl"), "validate", str(spec), "--node", str(large)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_probed_profile_knows_its_disk_and_validate_checks_against_it(
    tmp_path: Path, hub: tuple[Path, Faults]
) -> None:
    spec = tmp_path / "d.yaml"
    spec.write_text(
        "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: m}\nspec:\n"
        "  source: modelscope\n  repo_id: org/tiny-GGUF\n  file: tiny-q4.gguf\n"
        "  allow_cpu_offload: true\n"
    )
    maasctl = str(ROOT / ".venv" / "bin" / "maasctl")
    env = {**os.environ, "HOME": str(tmp_path)}
    with mounted_tmpfs("4m") as small:
        # The cache folder does not exist yet: its file system is the one it will be made on.
        probed = subprocess.run(
            [maasctl, "probe", "--cache-dir", str(small / "cache"), "-o", "yaml"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        node = tmp_path / "probed.yaml"
        node.write_text(probed)
        (small / "filler").write_bytes(b"x" * (1 << 20))
        again = subprocess.run(
            [maasctl, "probe", "--cache-dir", str(small), "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    disk = json.loads(again)["spec"]["disk"]
    assert disk["total_bytes"] == 4 << 20
    assert disk["free_bytes"] == (3 << 20)
    name = json.loads(again)["metadata"]["name"]
    done = subprocess.run(
        [maasctl, "validate", str(spec), "--node", str(node)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert done.returncode != 0, done.stdout + done.stderr
    assert (
        f"{spec}:6:12: error: the model is 11.0 MiB; the model cache file system of node "
        f"'{name}' holds {4 << 20} bytes in all [disk]"
    ) in done.stdout + done.stderr


def test_deployments_of_one_revision_share_its_folder_and_add_their_files(
    tmp_path: Path, hub: tuple[Path, Faults]
) -> None:
    repo, _ = hub
    q4 = planned(tmp_path, "modelscope")
    fetch(q4)
    first = Path(q4.model.path)
    inode = first.stat().st_ino
    other = planned(tmp_path, "modelscope", file="weights.bin")
    other = other.model_copy(
        update={
            "model": other.model.model_copy(
                update={
                    "folder": q4.model.folder,
                    "path": str(Path(q4.model.folder or "") / "weights.bin"),
                }
            )
        }
    )
    assert needs_download(other) and not needs_download(q4)
    bar = fetch(other)
    assert bar.total == SIZE  # only what the folder lacked
    assert Path(other.model.path).read_bytes() == (repo / "weights.bin").read_bytes()
    assert first.stat().st_ino == inode  # the file in use was left as it was
    assert not needs_download(other) and not needs_download(q4)
    assert not partial_of(first.parent).exists()
