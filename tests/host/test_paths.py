"""Host paths the agent hands to Docker or opens: resolved, admitted, regular files only."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from maas.compiler import MaasError
from maas.compiler.plan import Mount, PlanDeployment
from maas.compiler.policy import Policy
from maas.host.paths import admitted, read_regular, resolved_mounts
from maas.host.secrets import read_secret


def planned(name: str, *mounts: Mount) -> PlanDeployment:
    return PlanDeployment.model_validate(
        {
            "name": name,
            "backend": "custom",
            "backend_rule": "explicit",
            "image": "x",
            "command": [],
            "port": 1,
            "replicas": 1,
            "mounts": [m.model_dump() for m in mounts],
            "model": {"source": "local_path", "path": "/x", "download": False},
            "placement": {"mode": "cpu"},
            "estimate": {},
        }
    )


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    result: list[str] = []

    def read() -> None:
        try:
            read_regular(tmp_path / "pipe", 8)
        except MaasError as exc:
            result.append(exc.diagnostics[0].message)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout=5)
    assert result == [f"{tmp_path / 'pipe'} is not a regular file"]
    (tmp_path / "f").write_bytes(b"0123456789")
    assert read_regular(tmp_path / "f", 4) == b"0123"


def test_bind_sources_are_resolved_and_admitted(tmp_path: Path) -> None:
    models, outside, cache = tmp_path / "models", tmp_path / "outside", tmp_path / "cache"
    (models / "real").mkdir(parents=True)
    outside.mkdir()
    (models / "up").symlink_to(outside)
    (models / "inner").symlink_to(models / "real")
    policy = Policy(allowed_mount_roots=[str(models)])
    own = f"{cache}/deployments/a"
    store = f"{cache}/models/huggingface/o/n"
    mounts = resolved_mounts(
        planned(
            "a",
            Mount(source=store, target=store, read_only=True),
            Mount(source=own, target=own),
            Mount(source=str(models / "inner"), target="/m"),
        ),
        policy=policy,
        cache_dir=cache,
    )
    assert [m.source for m in mounts] == [store, own, str(models / "real")]  # folders created
    for source, read_only, why in (
        (models / "up", True, f"resolves to '{outside}', which is outside the allowed roots"),
        (models / "missing", True, "does not exist"),
        (Path(store), False, "mounted read-only"),
        (cache / "deployments" / "b", True, "another deployment's private folder"),
    ):
        (cache / "deployments" / "b").mkdir(parents=True, exist_ok=True)
        with pytest.raises(MaasError) as caught:
            resolved_mounts(
                planned("a", Mount(source=str(source), target="/m", read_only=read_only)),
                policy=policy,
                cache_dir=cache,
            )
        assert why in caught.value.diagnostics[0].message
        assert not caught.value.retryable
    (models / "loop").symlink_to(models / "loop")
    (cache / "models" / "file").write_text("")
    for source, why in (
        (models / "loop", "cannot be resolved"),
        (cache / "models" / "file" / "x", "cannot create"),
    ):
        with pytest.raises(MaasError, match=why):
            resolved_mounts(
                planned("a", Mount(source=str(source), target="/m")), policy=policy, cache_dir=cache
            )
    assert admitted(models / "inner", policy=policy, cache_dir=cache, deployment="a") == (
        models / "real"
    )
    assert admitted(models / "up", policy=policy, cache_dir=cache, deployment="a") is None


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"abc\0def", "holds a NUL byte"), (b"caf\xe9", "is not UTF-8 text")],
)
def test_secrets_no_environment_can_carry(tmp_path: Path, data: bytes, message: str) -> None:
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o700)
    (folder / "tok").write_bytes(data)
    os.chmod(folder / "tok", 0o600)
    with pytest.raises(MaasError) as caught:
        read_secret(folder, "tok")
    (diagnostic,) = caught.value.diagnostics
    assert f"secret 'tok' {message}" in diagnostic.message
    assert "def" not in diagnostic.render() and "caf" not in diagnostic.render()


def test_a_secret_that_is_no_regular_file_is_refused_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o700)
    os.mkfifo(folder / "pipe", 0o600)
    (folder / "dir").mkdir(mode=0o700)
    for name in ("pipe", "dir"):
        with pytest.raises(MaasError, match=f"secret '{name}' is not a regular file"):
            read_secret(folder, name)
