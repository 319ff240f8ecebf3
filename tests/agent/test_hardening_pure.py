"""Issue 14 without Docker: the supervisor, bounds on input and diagnostics, apply keys, ports of
scaled-to-zero deployments, a repository revision with a gitlink or a huge file (real git)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest
import structlog

from maas.agent.desired.sources import merge, source_key
from maas.compiler import MaasError, load_sources
from maas.compiler.diagnostics import MAX_PER_FILE, Diagnostic, Position
from maas.compiler.loader import MAX_BYTES
from maas.compiler.ports import allocate_ports
from maas.host import supervise
from maas.host.gitrepo import read_revision
from maas.host.supervise import Supervisor

log = structlog.get_logger("test")


def test_a_failed_pass_is_recorded_and_the_task_goes_on() -> None:
    supervisor = Supervisor(log)
    for _ in range(3):
        with supervisor.guard("work"):
            b"\xff".decode()
    state = supervisor.tasks["work"]
    assert state.failures == 3 and state.last_error is not None
    assert state.last_error.startswith("UnicodeDecodeError") and "test_hardening_pure.py" in (
        state.last_error
    )
    with pytest.raises(KeyboardInterrupt), supervisor.guard("work"):
        raise KeyboardInterrupt  # never swallowed


def test_an_ended_task_is_started_again_and_the_watchdog_waits_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervise, "RESTART_DELAY_S", 0.05)

    async def scenario() -> tuple[int, bool, bool]:
        supervisor = Supervisor(log)
        stopping = asyncio.Event()
        runs = 0
        healthy_while_down = True

        async def body() -> None:
            nonlocal runs, healthy_while_down
            runs += 1
            if runs == 1:
                raise RuntimeError("first run dies")
            if runs == 2:
                return  # ends without raising
            await stopping.wait()

        async def watch() -> None:
            nonlocal healthy_while_down
            while not stopping.is_set():
                state = supervisor.tasks.get("t")
                if state is not None and not state.alive and supervisor.healthy():
                    healthy_while_down = False
                await asyncio.sleep(0.01)

        task = supervisor.spawn("t", body, stopping=stopping)
        watcher = asyncio.create_task(watch())
        for _ in range(200):
            if runs >= 3:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        healthy = supervisor.healthy()
        stopping.set()
        await asyncio.gather(task, watcher)
        return supervisor.tasks["t"].restarts, healthy, healthy_while_down

    restarts, healthy, healthy_while_down = asyncio.run(scenario())
    assert restarts == 2 and healthy and healthy_while_down


def test_a_pass_stuck_longer_than_its_limit_withholds_the_watchdog() -> None:
    now = [100.0]
    supervisor = Supervisor(log, clock=lambda: now[0])
    state = supervisor.register("slow", stall_s=5)
    state.alive = state.supervised = True
    with supervisor.guard("slow"):
        now[0] += 4
        assert supervisor.healthy()
        now[0] += 2
        assert not supervisor.healthy()
    assert supervisor.healthy()


def test_diagnostics_are_bounded_per_file() -> None:
    many = [Diagnostic("x", f"problem {i}", Position("a.yaml", i + 1, 1)) for i in range(5000)]
    error = MaasError([*many, Diagnostic("x", "other", Position("b.yaml", 1, 1))])
    codes = [d.code for d in error.diagnostics]
    assert len(codes) == MAX_PER_FILE + 2 and codes.count("too-many-problems") == 1


def test_a_spec_of_placeholders_is_answered_quickly_and_briefly() -> None:
    """Reproduction: 7.9 MB of unknown placeholders gave 775,500 errors in 47 s."""
    arg = '"' + "{{x}}" * 40 + '"'
    text = (
        "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n"
        "  source: huggingface\n  repo_id: org/a\n  backend: custom\n  image: busybox\n"
        f"  command: [{', '.join([arg] * 3000)}]\n"
    )
    documents = load_sources({"a.yaml": text})
    assert len(documents.diagnostics) <= MAX_PER_FILE + 1
    too_large = load_sources({"big.yaml": "#" * (MAX_BYTES + 1)}).diagnostics
    assert [d.code for d in too_large] == ["too-large"]


def test_apply_keys_keep_stdin_texts_and_users_apart() -> None:
    a = "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: a}\nspec: {source: x}\n"
    b = a.replace("name: a", "name: b")
    stored = merge({}, {source_key("<stdin>", a, None): a})
    stored = merge(stored, {source_key("<stdin>", b, None): b})
    assert len(stored) == 2  # the second stdin apply kept the first one's deployment
    a2 = a.replace("source: x", "source: y")
    stored = merge(stored, {source_key("<stdin>", a2, None): a2})
    assert sorted(stored.values()) == sorted([a2, b])  # `a` redefined: its old text is gone
    assert source_key("/tmp/x.yaml", a, None) == "/tmp/x.yaml"
    assert source_key("/tmp/x.yaml", a, "alice") == "alice:/tmp/x.yaml"


def test_scaled_to_zero_deployments_do_not_exhaust_the_port_range() -> None:
    """Reproduction: ten `replicas: 0` deployments took the ports of a two-port range."""
    wanted = {f"idle{i}": 0 for i in range(10)} | {"web": 2}
    ports = allocate_ports(wanted, (40000, 40001))
    assert sorted(ports["web"]) == [40000, 40001]
    assert all(len(ports[f"idle{i}"]) == 1 for i in range(10))
    previous = {"idle0": [40000]}
    assert sorted(allocate_ports(wanted, (40000, 40001), previous)["web"]) == [40000, 40001]


def _git(cwd: Path, *args: str, stdin: bytes | None = None) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        input=stdin,
    ).stdout.decode()


def test_a_revision_with_a_gitlink_or_a_huge_file_is_refused_at_that_path(tmp_path: Path) -> None:
    """Reproduction: a gitlink at deployments/x.yaml raised from the batch reader; a 303 MB
    comment-only file (300 KB packed) was read whole into the agent's memory."""
    _git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "ok.yaml").write_text("# nothing\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-q", "-m", "ok")
    elsewhere = "1234567" * 5 + "89abc"  # a submodule's commit, not in this repository
    _git(tmp_path, "update-index", "--add", "--cacheinfo", f"160000,{elsewhere},deployments/x.yaml")
    _git(tmp_path, "commit", "-q", "-m", "gitlink")
    with pytest.raises(MaasError) as gitlink:
        read_revision(tmp_path, "HEAD")
    assert gitlink.value.diagnostics[0].render() == (
        "deployments/x.yaml: error: a submodule (gitlink), not a regular file [file]"
    )
    _git(tmp_path, "rm", "-q", "--cached", "deployments/x.yaml")
    blob = _git(tmp_path, "hash-object", "-w", "--stdin", stdin=b"#" * (MAX_BYTES + 1)).strip()
    _git(tmp_path, "update-index", "--add", "--cacheinfo", f"100644,{blob},deployments/big.yaml")
    _git(tmp_path, "commit", "-q", "-m", "big")
    with pytest.raises(MaasError) as big:
        read_revision(tmp_path, "HEAD")
    assert [d.code for d in big.value.diagnostics] == ["too-large"]
    assert read_revision(tmp_path, "HEAD~2") == {"deployments/ok.yaml": "# nothing\n"}


def test_structlog_renders_tracebacks() -> None:
    from maas.agent.daemon import configure_logging

    configure_logging()
    try:
        processors: list[Any] = structlog.get_config()["processors"]
        assert structlog.processors.format_exc_info in processors
    finally:
        structlog.reset_defaults()
