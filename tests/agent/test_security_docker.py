"""Attacks on the node's policy through the real agent and the real engine (issue 14, security):
symlinks out of the allowed roots and the cache, host paths opened before the policy, secrets the
runtime would echo."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from support.agent import AgentProcess, web_spec


def state_of(agent: AgentProcess, name: str) -> dict[str, object]:
    for d in agent.status()["deployments"]:
        if d["name"] == name:
            return dict(d)
    return {}


def running(agent: AgentProcess, name: str) -> bool:
    return state_of(agent, name).get("ready_replicas") == 1


def mounts_of(container: str) -> list[dict[str, object]]:
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{json .Mounts}}", container],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    value: list[dict[str, object]] = json.loads(out)
    return value


def test_symlinks_never_lead_a_bind_mount_out_of_the_allowed_roots(
    tmp_path: Path, busybox: str
) -> None:
    models = tmp_path / "models"
    outside = tmp_path / "outside"
    (models / "data").mkdir(parents=True)
    outside.mkdir()
    (outside / "shadow").write_text("host secret\n")
    (models / "etc").symlink_to(outside)  # planted under an allowed root by anyone
    agent = AgentProcess(tmp_path, {"policy": {"allowed_mount_roots": [str(models)]}})
    agent.start()
    try:
        volume = "  volumes: [{host_path: %s, container_path: /host, read_only: false}]\n"
        # The path text is under the root, so the compile admits it; the agent refuses it.
        assert (
            agent.apply(
                "thief", web_spec("thief", busybox, extra=volume % (models / "etc")), wait=False
            ).returncode
            == 0
        )
        assert agent.apply("good", web_spec("good", busybox)).returncode == 0
        agent.wait_for(lambda: state_of(agent, "thief").get("last_error"), what="refusal")
        error = str(state_of(agent, "thief")["last_error"])
        assert f"'{models / 'etc'}' resolves to '{outside}'" in error
        assert "allowed_mount_roots" in error
        assert [c["Names"] for c in agent.containers()] == [f"maas-{agent.node}-good-0"]
        time.sleep(5)  # a few resyncs: re-checked, neither retried at the engine nor logged again
        log = agent.log.read_text()
        assert log.count('"replica refused"') == 1
        assert log.count('"deployment": "thief"') == 2  # the one action, the one refusal
        assert state_of(agent, "thief")["state"] == "failed"
        # Fixed on the host: the next pass takes it, without a new apply.
        (models / "etc").unlink()
        (models / "etc").mkdir()
        agent.wait_for(lambda: running(agent, "thief"), timeout=60, what="fixed mount")
        (mount,) = [
            m for m in mounts_of(f"maas-{agent.node}-thief-0") if m["Destination"] == "/host"
        ]
        assert mount["Source"] == str(models / "etc")

        # A link that appears after planning is caught when the container is created again.
        agent.apply("late", web_spec("late", busybox, extra=volume % (models / "data")))
        (models / "data").rmdir()
        (models / "data").symlink_to(outside)
        subprocess.run(
            ["docker", "rm", "-f", f"maas-{agent.node}-late-0"], check=True, capture_output=True
        )
        agent.wait_for(
            lambda: "resolves to" in str(state_of(agent, "late").get("last_error")),
            timeout=60,
            what="late link refused",
        )
        assert f"maas-{agent.node}-late-0" not in {c["Names"] for c in agent.containers()}
    finally:
        agent.cleanup()


def test_deployments_share_no_writable_cache(tmp_path: Path, busybox: str) -> None:
    """The reproduction: one deployment plants `ln -s / <cache>/x`, a second mounts `<cache>/x`.
    Now each gets its model read-only and its own folder; another's folder is never mountable."""
    agent = AgentProcess(tmp_path)
    agent.start()
    cache = tmp_path / "cache"
    for path in ("deployments/other/data", "models/huggingface/org/other/weights"):
        (cache / path).parent.mkdir(parents=True)
        (cache / path).write_text("not yours\n")
    try:
        assert agent.apply("planter", web_spec("planter", busybox)).returncode == 0
        name = f"maas-{agent.node}-planter-0"
        own = cache / "deployments" / "planter"
        store = cache / "models" / "huggingface" / "org" / "planter"
        # A custom image that fetches its model itself (no {{model_path}}): no model mount.
        assert {(m["Source"], m["RW"]) for m in mounts_of(name)} == {(str(own), True)}

        def run(*command: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["docker", "exec", name, "/bin/busybox", *command],
                capture_output=True,
                text=True,
                check=False,
            )

        assert run("ln", "-s", "/", f"{own}/x").returncode == 0  # its own folder: writable
        assert run("touch", f"{store}/x").returncode != 0  # the model store: read-only
        for path in (own.parent / "other" / "data", store.parent / "other" / "weights"):
            assert run("cat", str(path)).returncode != 0  # another's files are not there
        for path, mode in ((own / "x", "false"), (own, "true"), (cache, "true")):
            spec = web_spec(
                "thief",
                busybox,
                extra=f"  volumes: [{{host_path: {path}, container_path: /host, "
                f"read_only: {mode}}}]\n",
            )
            refused = agent.apply("thief", spec, wait=False)
            assert refused.returncode == 1, refused.stdout
            assert "allowed_mount_roots" in refused.stderr
        assert (
            "another deployment's private folder"
            in agent.apply(
                "thief",
                web_spec(
                    "thief",
                    busybox,
                    extra=f"  volumes: [{{host_path: {own}/x, container_path: /host}}]\n",
                ),
                wait=False,
            ).stderr
        )
    finally:
        agent.cleanup()


def test_host_paths_are_checked_before_they_are_opened(tmp_path: Path, busybox: str) -> None:
    models = tmp_path / "models"
    models.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "exists.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    os.mkfifo(models / "pipe.gguf")
    (models / "link.gguf").symlink_to(outside / "exists.gguf")
    agent = AgentProcess(tmp_path, {"policy": {"allowed_mount_roots": [str(models)]}})
    agent.start()

    def local(name: str, path: Path) -> str:
        return (
            f"apiVersion: maas/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n"
            f"  source: local_path\n  path: {path}\n  image: {busybox}\n"
            "  allow_cpu_offload: true\n"
        )

    try:
        # Outside the roots: the same policy error whether the file exists or not.
        answers = []
        for path in (outside / "exists.gguf", outside / "missing.gguf"):
            result = agent.apply("probe", local("probe", path), wait=False)
            assert result.returncode == 1
            answers.append(result.stderr.replace(str(path), "PATH"))
        assert answers[0] == answers[1] and "outside the allowed roots" in answers[0]
        # A FIFO is refused at once, and blocks nothing after it.
        started = time.monotonic()
        fifo = agent.apply("pipe", local("pipe", models / "pipe.gguf"), wait=False)
        assert fifo.returncode == 1 and "is not a regular file" in fifo.stderr
        assert time.monotonic() - started < 20
        assert agent.apply("web", web_spec("web", busybox)).returncode == 0
        assert agent.ctl("delete", "web", "--wait").returncode == 0
        # A link out of the roots is not read, and its container is refused.
        linked = agent.apply("link", local("link", models / "link.gguf"), wait=False)
        assert linked.returncode == 0, linked.stderr
        agent.wait_for(
            lambda: "resolves to" in str(state_of(agent, "link").get("last_error")),
            what="link refused",
        )
        assert "not admitted by the policy" in agent.log.read_text()
        assert agent.containers() == []
    finally:
        agent.cleanup()


def test_secrets_that_no_environment_can_carry(tmp_path: Path, busybox: str) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    marker = "leakmarker7f3a"
    for name, data in (
        ("nul-token", b"abc\0" + marker.encode()),
        ("latin-token", b"caf\xe9" + marker.encode()),
        ("good-token", marker.encode() + b"-good"),
    ):
        (secrets / name).write_bytes(data)
        os.chmod(secrets / name, 0o600)
    agent = AgentProcess(tmp_path)
    agent.start()
    try:
        for name in ("nul", "latin"):
            spec = web_spec(name, busybox, extra=f"  env: {{TOKEN: {{secret: {name}-token}}}}\n")
            assert agent.apply(name, spec, wait=False).returncode == 0
        # The one engine path known to echo env values: runc quotes a NUL in the name with the
        # value ("K\x00=value"); the value is scrubbed from what the agent keeps and logs.
        echo = web_spec("echo", busybox, extra='  env: {"K\\0": {secret: good-token}}\n')
        assert agent.apply("echo", echo, wait=False).returncode == 0
        assert agent.apply("web", web_spec("web", busybox)).returncode == 0  # the loop lives on
        agent.wait_for(
            lambda: all(state_of(agent, n).get("last_error") for n in ("nul", "latin", "echo")),
            timeout=60,
            what="refusals",
        )
        assert "secret 'nul-token' holds a NUL byte" in str(state_of(agent, "nul")["last_error"])
        assert "secret 'latin-token' is not UTF-8 text" in str(
            state_of(agent, "latin")["last_error"]
        )
        assert "<secret>" in str(state_of(agent, "echo")["last_error"])
        time.sleep(3)
        assert running(agent, "web")
        places = [json.dumps(agent.status()), agent.log.read_text(), agent.ctl("status").stdout]
        places += [p.read_text() for p in (tmp_path / "state").rglob("*") if p.is_file()]
        for text in places:
            assert marker not in text
    finally:
        agent.cleanup()
