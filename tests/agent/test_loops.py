"""Issue 14 with the real agent, the real engine and real git: loops that must never die
silently, state that must never be lost, applies that must not remove each other's work."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_pull_mode import git, push, running

from maas.gateway.source import AgentRouteSource
from support.agent import NODE_PROFILE, AgentProcess, web_spec
from support.gguf_factory import TINY, write_header_only


def ids(agent: AgentProcess) -> dict[str, str]:
    return {c["Names"]: c["ID"] for c in agent.containers()}


def errors(agent: AgentProcess) -> list[str]:
    return [e["code"] for e in agent.status()["errors"]]


def state_of(agent: AgentProcess, name: str) -> dict[str, Any]:
    return next(d for d in agent.status()["deployments"] if d["name"] == name)


# A llama-box deployment (the metadata of its local GGUF is read) served by busybox: the extra
# flags the platform appends become the shell's unused positional arguments.
def local_spec(name: str, model: Path, image: str) -> str:
    return (
        f"apiVersion: maas/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n"
        f"  source: local_path\n  path: {model}\n  backend: llama-box\n  image: {image}\n"
        '  command: [/bin/sh, -c, "exec /bin/busybox httpd -f -p {{port}} -h /www", sh]\n'
        "  health: {path: /health}\n  allow_cpu_offload: true\n"
    )


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    write_header_only(models / "tiny.gguf", TINY)
    return models


def test_reconcile_survives_a_local_model_missing_at_restart(
    tmp_path: Path, busybox: str, model_dir: Path
) -> None:
    """Reproduction: the first pass raised FileNotFoundError; the loop ended, status froze and
    applies answered 200 while nothing happened."""
    home = tmp_path / "agent"
    home.mkdir()
    agent = AgentProcess(home, {"policy": {"allowed_mount_roots": [str(model_dir)]}})
    agent.start()
    try:
        model = model_dir / "tiny.gguf"
        result = agent.apply("llm", local_spec("llm", model, busybox))
        assert result.returncode == 0, result.stderr + agent.log.read_text()[-3000:]
        before = ids(agent)
        agent.kill(signal.SIGTERM)
        model.rename(model_dir / "away.gguf")
        agent.start()
        agent.wait_for(lambda: "model-missing" in errors(agent), what="the missing model")
        status = agent.status()
        (problem,) = status["errors"]
        assert problem["file"].endswith("llm.yaml") and problem["line"] == 6  # spec.path
        assert (
            status["tasks"]["reconcile"]["alive"] and not status["tasks"]["reconcile"]["failures"]
        )
        refused = agent.apply("web", web_spec("web", busybox), wait=False)
        assert refused.returncode == 1 and "[model-missing]" in refused.stderr  # not 200
        assert "internal error" not in refused.stderr
        time.sleep(3)  # passes go on, and keep the container of the last good plan
        assert ids(agent) == before
        (model_dir / "away.gguf").rename(model)
        agent.wait_for(lambda: not errors(agent), what="recovery")
        assert agent.apply("web", web_spec("web", busybox)).returncode == 0
    finally:
        agent.cleanup()


def test_a_secret_that_is_not_utf8_fails_its_replica_only(tmp_path: Path, busybox: str) -> None:
    """Reproduction: the UnicodeDecodeError ended the reconcile loop; nothing converged again."""
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "bad").write_bytes(b"\xff\xfesecret\n")
    os.chmod(secrets / "bad", 0o600)
    agent = AgentProcess(tmp_path)
    agent.start()
    try:
        extra = "  env: {TOKEN: {secret: bad}}\n"
        assert agent.apply("bad", web_spec("bad", busybox, extra=extra), wait=False).returncode == 0
        agent.wait_for(lambda: state_of(agent, "bad")["last_error"], what="the replica's error")
        good = agent.apply("good", web_spec("good", busybox))
        assert good.returncode == 0, good.stderr + agent.log.read_text()[-3000:]
        status = agent.status()
        bad = state_of(agent, "bad")
        assert bad["state"] == "failed"
        assert "\\xff" not in bad["last_error"] and "\udcff" not in bad["last_error"]
        assert status["tasks"]["reconcile"]["alive"]
    finally:
        agent.cleanup()


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    bare = tmp_path / "config.git"
    git(tmp_path, "init", "--bare", "-q", "-b", "main", str(bare))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    git(work, "checkout", "-q", "-b", "main")
    yield bare, work


def test_pull_mode_survives_bad_commits_restarts_and_an_unreachable_repository(
    tmp_path: Path, busybox: str, repo: tuple[Path, Path]
) -> None:
    """Reproduction: a gitlink at deployments/x.yaml or `kind: []` ended the pull loop (later
    good commits never applied, status showed the old commit and no error), a missing local
    model stalled it, an unreachable repository was not reported, and applied_commit was null
    after a restart."""
    bare, work = repo
    home = tmp_path / "agent"
    home.mkdir()
    agent = AgentProcess(home, {"source": {"url": str(bare), "interval_s": 0.5}})
    low, high = json.loads(agent.config.read_text())["port_range"]
    push(
        work,
        {
            "maas.yaml": "apiVersion: maas/v1\nkind: Config\n"
            f"spec: {{port_range: [{low}, {high}]}}\n",
            f"nodes/{agent.node}.yaml": NODE_PROFILE.format(name=agent.node),
            "deployments/web.yaml": web_spec("web", busybox),
        },
        "first",
    )
    agent.start()

    def source() -> dict[str, Any]:
        return dict(agent.status()["source"])

    def refused(commit: str, code: str) -> None:
        agent.wait_for(lambda: source()["refused_commit"] == commit, timeout=60, what=code)
        assert code in source()["error"][0], source()

    try:
        agent.wait_for(lambda: running(agent) == {"web"}, timeout=60, what="first commit")
        # A submodule's commit lives in another repository: not in this one.
        elsewhere = "1234567" * 5 + "89abc"
        git(work, "update-index", "--add", "--cacheinfo", f"160000,{elsewhere},deployments/x.yaml")
        git(work, "commit", "-q", "-m", "a gitlink")
        git(work, "push", "-q", "origin", "main")
        refused(git(work, "rev-parse", "HEAD"), "submodule")
        git(work, "rm", "-q", "--cached", "deployments/x.yaml")
        refused(
            push(work, {"deployments/k.yaml": "apiVersion: maas/v1\nkind: []\n"}, "k"), "[kind]"
        )
        (work / "deployments" / "k.yaml").unlink()
        missing = local_spec("llm", tmp_path / "no" / "such.gguf", busybox)
        refused(push(work, {"deployments/llm.yaml": missing}, "llm"), "[model-missing]")
        (work / "deployments" / "llm.yaml").unlink()
        good = push(work, {"deployments/two.yaml": web_spec("two", busybox)}, "two")
        agent.wait_for(lambda: running(agent) == {"web", "two"}, timeout=60, what="good commit")
        assert source()["applied_commit"] == good
        assert agent.status()["tasks"]["pull"]["alive"]

        agent.kill(signal.SIGTERM)
        agent.start()
        assert source()["applied_commit"] == good  # kept across the restart

        bare.rename(tmp_path / "moved.git")
        agent.wait_for(lambda: source()["fetch_error"], timeout=30, what="fetch error")
        assert "cannot fetch" in agent.ctl("status").stdout
        (tmp_path / "moved.git").rename(bare)
        agent.wait_for(lambda: not source()["fetch_error"], timeout=30, what="fetch again")

        local = agent.apply("local", web_spec("local", busybox), wait=False)
        assert local.returncode == 1 and "[pull-mode]" in local.stderr and "--force" in local.stderr
        forced = agent.ctl("apply", str(agent.dir / "local.yaml"), "-y", "--force")
        assert forced.returncode == 0, forced.stderr
    finally:
        agent.cleanup()


def test_corrupt_or_missing_desired_state_keeps_containers_status_and_routes(
    tmp_path: Path, busybox: str
) -> None:
    """Reproduction: after a corrupt desired.json the containers were kept but status listed
    nothing, so the gateway answered 404 for every running model; a missing desired.json with
    our containers present removed them all."""
    agent = AgentProcess(tmp_path)
    agent.start()
    try:
        assert agent.apply("web", web_spec("web", busybox)).returncode == 0
        before = ids(agent)
        routes = AgentRouteSource(agent.socket, upstream_host="127.0.0.1", interval_s=60)

        async def table_after(change: Any) -> Any:
            await routes.start()
            try:
                change()
                assert await routes.refresh()
                return routes.table
            finally:
                await routes.close()

        state = tmp_path / "state" / "desired.json"

        def corrupt() -> None:
            agent.kill(signal.SIGKILL)
            state.write_bytes(state.read_bytes()[:100])
            agent.start()
            agent.wait_for(lambda: "store-corrupt" in errors(agent), what="refusal")

        routes.table = asyncio.run(table_after(lambda: None))
        assert routes.table.resolve("web") is not None and routes.table.resolve("web").ready
        table = asyncio.run(table_after(corrupt))
        assert table.resolve("web") is not None and table.resolve("web").ready  # still routed
        status = agent.status()
        assert status["desired"] == "refused" and status["removing"] == []
        assert [(c["deployment"], c["replica"]) for c in status["kept"]] == [("web", 0)]
        assert "keeping every container" in agent.ctl("status").stdout
        assert ids(agent) == before

        agent.kill(signal.SIGTERM)
        state.unlink()
        agent.start()
        agent.wait_for(lambda: "store-missing" in errors(agent), what="refusal")
        time.sleep(5)  # a few passes
        assert ids(agent) == before
        assert agent.apply("web", web_spec("web", busybox)).returncode == 0
        assert ids(agent) == before  # adopted, not recreated
        assert not errors(agent)
    finally:
        agent.cleanup()


def test_applies_from_stdin_and_from_other_users_do_not_remove_each_other(busybox: str) -> None:
    """Reproduction: every `maasctl apply -` was stored as <stdin>, and the same absolute path
    applied by two users was one file: the second apply deleted the first one's deployments."""
    shared = Path(tempfile.mkdtemp(prefix="maas-apply-"))
    try:
        os.chmod(shared, 0o755)
        agent = AgentProcess(shared, {"socket": str(shared / "agent.sock")})
        agent.start()
        try:
            os.chmod(agent.socket, 0o666)
            for name in ("a", "b"):
                done = subprocess.run(
                    [sys.executable, "-m", "maas.cli.main", "apply", "-", "-y"],
                    input=web_spec(name, busybox),
                    capture_output=True,
                    text=True,
                    env={**os.environ, "MAAS_AGENT_SOCKET": str(agent.socket)},
                    check=False,
                )
                assert done.returncode == 0, done.stderr
            spec = shared / "spec.yaml"
            spec.write_text(web_spec("c", busybox))
            os.chmod(spec, 0o644)
            assert agent.ctl("apply", str(spec), "-y").returncode == 0
            spec.write_text(web_spec("d", busybox))
            # As another user, through the system's Python (the project's environment lies under
            # /root): the request `maasctl apply` sends, from the stdlib.
            as_nobody = subprocess.run(
                ["/usr/bin/python3", "-c", NOBODY_APPLY, str(agent.socket), str(spec)],
                capture_output=True,
                text=True,
                preexec_fn=_become_nobody,
                check=False,
            )
            assert as_nobody.returncode == 0, as_nobody.stdout + as_nobody.stderr
            # status lists a deployment once a pass has taken the new desired state
            agent.wait_for(
                lambda: {d["name"] for d in agent.status()["deployments"]} == {"a", "b", "c", "d"},
                what="all four deployments",
            )
            stored = json.loads((shared / "state" / "desired.json").read_text())["sources"]
            assert str(spec) in stored and f"nobody:{spec}" in stored
        finally:
            agent.cleanup()
    finally:
        shutil.rmtree(shared, ignore_errors=True)


NOBODY_APPLY = """
import http.client, json, socket, sys
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sys.argv[1])
path = sys.argv[2]
connection = Unix("agent")
body = json.dumps({"sources": {path: open(path).read()}})
connection.request("POST", "/v1/apply", body, {"Content-Type": "application/json"})
response = connection.getresponse()
print(response.status, response.read()[:2000])
sys.exit(response.status != 200)
"""


def _become_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def test_the_agent_socket_is_bounded_in_time_and_never_deletes_a_file(
    tmp_path: Path, busybox: str
) -> None:
    """Reproduction: a regular file where the socket goes was deleted; a client that sent half
    its headers, or half its body, held its connection forever; deeply nested JSON got no
    answer."""
    taken = tmp_path / "taken"
    taken.mkdir()
    blocker = AgentProcess(taken, {"socket": str(taken / "agent.sock")})
    (taken / "agent.sock").write_text("someone's file\n")
    done = subprocess.run(
        [sys.executable, "-m", "maas.agent.daemon", "--config", str(blocker.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and "is not a socket" in done.stderr
    assert (taken / "agent.sock").read_text() == "someone's file\n"

    agent = AgentProcess(tmp_path, {"request_timeout_s": 2})
    agent.start()
    try:
        half_headers = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        half_headers.connect(str(agent.socket))
        half_headers.sendall(b"GET /v1/status HTTP/1.1\r\nHost: agent\r\n")
        half_body = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        half_body.connect(str(agent.socket))
        half_body.sendall(
            b"POST /v1/apply HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"sources"'
        )
        started = time.monotonic()
        for client in (half_headers, half_body):
            client.settimeout(15)
        assert half_headers.recv(4096) == b""  # closed
        assert half_body.recv(4096).startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < 10
        half_headers.close()
        half_body.close()
        deep = b"[" * 100_000  # reproduction: the connection dropped with no answer
        nested = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        nested.connect(str(agent.socket))
        nested.sendall(
            b"POST /v1/apply HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%b" % (len(deep), deep)
        )
        nested.settimeout(15)
        assert nested.recv(4096).startswith(b"HTTP/1.1 400")
        nested.close()
        assert agent.status()["tasks"]["reconcile"]["alive"]
    finally:
        agent.cleanup()
