"""The node agent against the real Docker engine: the scenarios of the agent issue."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

from support.agent import AgentProcess, web_spec


def ids(agent: AgentProcess) -> dict[str, str]:
    return {c["Names"]: c["ID"] for c in agent.containers()}


def ready(agent: AgentProcess, name: str, replicas: int) -> bool:
    for d in agent.status()["deployments"]:
        if d["name"] == name:
            return bool(d["ready_replicas"] == replicas)
    return False


def test_converge_reapply_change_and_delete(agent: AgentProcess, busybox: str) -> None:
    result = agent.apply("web", web_spec("web", busybox, replicas=2))
    assert result.returncode == 0, result.stderr + result.stdout
    assert len(agent.containers()) == 2
    status = agent.status()
    (web,) = status["deployments"]
    assert web["state"] == "running" and web["ready_replicas"] == 2
    port = web["containers"][0]["port"]
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status == 200
    before = ids(agent)
    again = agent.apply("web", web_spec("web", busybox, replicas=2))
    assert "No changes." in again.stdout
    assert ids(agent) == before  # a re-apply is a no-op: the same containers
    agent.apply("other", web_spec("other", busybox))
    changed = agent.apply(
        "web", web_spec("web", busybox, replicas=2, extra="  env: {MODE: fast}\n")
    )
    assert changed.returncode == 0, changed.stderr
    after = ids(agent)
    assert after[f"maas-{agent.node}-other-0"] == ids(agent)[f"maas-{agent.node}-other-0"]
    assert not set(before.values()) & set(after.values())  # both web replicas recreated
    assert agent.ctl("delete", "web", "--wait").returncode == 0
    assert [c["Names"] for c in agent.containers()] == [f"maas-{agent.node}-other-0"]


def test_agents_of_one_node_name_are_kept_apart_by_label_namespace(
    tmp_path: Path, busybox: str
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = AgentProcess(tmp_path / "a", {"label_namespace": "team-a"})
    b = AgentProcess(tmp_path / "b", {"label_namespace": "team-b"}, node=a.node)
    try:
        a.start()
        b.start()
        for agent in (a, b):
            assert agent.apply("web", web_spec("web", busybox)).returncode == 0
        assert [c["Names"] for c in a.containers()] == [f"team-a-{a.node}-web-0"]
        assert [c["Names"] for c in b.containers()] == [f"team-b-{a.node}-web-0"]
        kept = a.containers()[0]["ID"]
        assert b.ctl("delete", "web", "--wait").returncode == 0
        b.wait_for(lambda: not b.containers(), what="b's container removed")
        assert [c["ID"] for c in a.containers()] == [kept]
        assert a.status()["deployments"][0]["state"] == "running"
    finally:
        for agent in (a, b):
            agent.cleanup()


def test_orphans_removed_foreign_untouched(agent: AgentProcess, busybox: str) -> None:
    foreign = f"foreign-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["docker", "run", "-d", "--name", foreign, busybox, "sleep", "300"],
        check=True,
        capture_output=True,
    )
    orphan = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--label",
            "maas.managed=true",
            "--label",
            f"maas.node={agent.node}",
            "--label",
            "maas.deployment=ghost",
            "--label",
            "maas.replica=0",
            "--label",
            "maas.spec-hash=v1:old",
            busybox,
            "sleep",
            "300",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        agent.apply("web", web_spec("web", busybox))
        agent.wait_for(
            lambda: orphan[:12] not in {c["ID"] for c in agent.containers()}, what="orphan removal"
        )
        state = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Running}}", foreign],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert state == "true"
    finally:
        subprocess.run(["docker", "rm", "-f", foreign, orphan], capture_output=True, check=False)


def test_killed_container_comes_back(agent: AgentProcess, busybox: str) -> None:
    agent.apply("web", web_spec("web", busybox))
    name = f"maas-{agent.node}-web-0"
    subprocess.run(["docker", "kill", name], check=True, capture_output=True)
    agent.wait_for(
        lambda: ready(agent, "web", 1) and any(c["State"] == "running" for c in agent.containers()),
        timeout=20,
        what="restart",
    )
    (web,) = agent.status()["deployments"]
    assert web["containers"][0]["restarts"] == 1


def test_agent_killed_and_restarted_adopts(agent: AgentProcess, busybox: str) -> None:
    agent.apply("web", web_spec("web", busybox, replicas=3))
    before = ids(agent)
    agent.kill(signal.SIGKILL)
    assert ids(agent) == before  # containers outlive the agent
    agent.start()
    agent.wait_for(lambda: ready(agent, "web", 3), what="adoption")
    assert ids(agent) == before  # adopted, not duplicated or recreated


def test_failing_backend_reports_and_backs_off(agent: AgentProcess, busybox: str) -> None:
    agent.apply("crash", web_spec("crash", busybox, command="[/bin/sh, -c, 'exit 3']"), wait=False)

    def failed() -> bool:
        (d,) = agent.status()["deployments"]
        return bool(d["state"] == "failed" and d["last_error"])

    agent.wait_for(failed, what="failed state")
    (crash,) = agent.status()["deployments"]
    assert "exit code 3" in crash["last_error"]
    restarts_then = crash["containers"][0]["restarts"]
    agent.wait_for(
        lambda: agent.status()["deployments"][0]["containers"][0]["restarts"] > restarts_then,
        timeout=20,
        what="a retry",
    )
    # Back-off: 10 s after the second failure, so not a tight loop.
    starts = sum(
        1
        for line in agent.log.read_text().splitlines()
        if '"kind": "start"' in line and '"deployment": "crash"' in line
    )
    assert starts <= 3


def test_unpullable_image_reports_and_backs_off(agent: AgentProcess) -> None:
    agent.apply("nopull", web_spec("nopull", "registry.invalid/none/such:1"), wait=False)

    def failed() -> bool:
        (d,) = agent.status()["deployments"]
        return bool(d["state"] == "failed" and d["last_error"])

    agent.wait_for(failed, timeout=60, what="pull failure")
    (nopull,) = agent.status()["deployments"]
    assert "pull registry.invalid/none/such:1" in nopull["last_error"]
    time.sleep(6)  # three resyncs: a tight loop would pull again on each
    failures = sum(
        1
        for line in agent.log.read_text().splitlines()
        if '"event": "action failed"' in line and '"deployment": "nopull"' in line
    )
    assert failures <= 2  # at once, then 10 s of back-off
    assert agent.containers() == []


def test_corrupt_state_refuses_and_deletes_nothing(tmp_path: Path, busybox: str) -> None:
    agent = AgentProcess(tmp_path)
    agent.start()
    try:
        agent.apply("web", web_spec("web", busybox))
        before = ids(agent)
        agent.kill(signal.SIGKILL)
        state = tmp_path / "state" / "desired.json"
        state.write_bytes(state.read_bytes()[:100])  # truncated
        agent.start()
        agent.wait_for(lambda: agent.status()["errors"], what="refusal")
        status = agent.status()
        assert status["errors"][0]["code"] == "store-corrupt"
        assert ids(agent) == before
        refused = agent.apply("more", web_spec("more", busybox), wait=False)
        assert refused.returncode == 1 and "store-corrupt" in refused.stderr
    finally:
        agent.cleanup()


def test_secrets_never_leak(tmp_path: Path, busybox: str) -> None:
    secret_value = f"hf_{uuid.uuid4().hex}"
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "hf-token").write_text(secret_value + "\n")
    os.chmod(secrets / "hf-token", 0o600)
    agent = AgentProcess(tmp_path)
    agent.start()
    try:
        result = agent.apply(
            "web", web_spec("web", busybox, extra="  env: {HF_TOKEN: {secret: hf-token}}\n")
        )
        assert result.returncode == 0, result.stderr
        name = f"maas-{agent.node}-web-0"
        env = subprocess.run(
            ["docker", "exec", name, "/bin/sh", "-c", "echo $HF_TOKEN"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert env == secret_value  # the backend gets it...
        labels = subprocess.run(
            ["docker", "inspect", "-f", "{{json .Config.Labels}}", name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        places = [
            agent.status().__repr__(),
            agent.log.read_text(),
            labels,
            result.stdout,
            agent.ctl("status").stdout,
        ]
        places += [p.read_text() for p in (tmp_path / "state").rglob("*") if p.is_file()]
        for text in places:
            assert secret_value not in text  # ...and nobody else
        os.chmod(secrets / "hf-token", 0o644)
        bad = agent.apply(
            "web2",
            web_spec("web2", busybox, extra="  env: {HF_TOKEN: {secret: hf-token}}\n"),
            wait=False,
        )
        assert bad.returncode == 0
        agent.wait_for(
            lambda: any(
                d["last_error"] and "accessible by group" in d["last_error"]
                for d in agent.status()["deployments"]
            ),
            what="mode check",
        )
    finally:
        agent.cleanup()


def test_model_download_failure_is_reported_and_starts_nothing(
    tmp_path: Path, busybox: str
) -> None:
    """A built-in backend's model is fetched into the cache before its container starts; a hub
    that does not answer leaves the deployment failed with the reason, and no container."""
    agent = AgentProcess(tmp_path)
    agent.start(env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2"})
    try:
        spec = (
            "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: hub}\nspec:\n"
            "  source: huggingface\n  repo_id: org/tiny-GGUF\n  file: tiny.Q8_0.gguf\n"
            f"  image: {busybox}\n  allow_cpu_offload: true\n"
        )
        assert agent.apply("hub", spec, wait=False).returncode == 0

        def failed() -> bool:
            (d,) = agent.status()["deployments"]
            return bool(d["state"] == "failed" and d["last_error"])

        agent.wait_for(failed, timeout=60, what="download failure")
        (hub,) = agent.status()["deployments"]
        assert hub["backend"] == "llama-box"
        assert "cannot reach the hub for 'org/tiny-GGUF'" in hub["last_error"]
        assert agent.containers() == []
        assert not list((tmp_path / "cache").rglob("*.gguf"))
    finally:
        agent.cleanup()
