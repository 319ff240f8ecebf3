"""Waits that know failure, and honest counters, against the real engine and a real registry.

`apply --wait` stops with exit 1 and the reason as soon as a replica cannot get better by
waiting (an image the registry does not have; a crash loop past its first back-off), and waits
on through transient failures (a registry that does not answer). RESTARTS counts crashes only,
roll-outs apart, and both survive an agent restart.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from support.agent import AgentProcess, web_spec

pytestmark = pytest.mark.slow


def timed_apply(
    agent: AgentProcess, name: str, spec: str, timeout: float
) -> tuple[subprocess.CompletedProcess[str], float]:
    path = agent.dir / f"{name}.yaml"
    path.write_text(spec)
    started = time.monotonic()
    result = agent.ctl("apply", str(path), "-y", "--wait", "--timeout", str(timeout))
    return result, time.monotonic() - started


def failures(agent: AgentProcess, name: str) -> int:
    return sum(
        1
        for line in agent.log.read_text().splitlines()
        if '"event": "action failed"' in line and f'"deployment": "{name}"' in line
    )


def test_image_the_registry_lacks_stops_the_wait_and_is_not_retried(
    agent: AgentProcess, registry: str
) -> None:
    image = f"{registry}/nobody/none-such:1"
    result, took = timed_apply(agent, "ghost", web_spec("ghost", image), timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert took < 60
    assert "ghost replica 0:" in result.stderr and f"pull {image}" in result.stderr
    assert "permanent: not retried until applied again" in result.stderr
    assert "stopped waiting: this will not resolve by waiting" in result.stderr
    time.sleep(6)  # three resyncs: nothing is pulled again
    assert failures(agent, "ghost") == 1
    (ghost,) = agent.status()["deployments"]
    (replica,) = ghost["replica_states"]
    assert replica["permanent"] and replica["next_retry_at"] is None
    status = agent.ctl("status")
    assert "permanent: not retried until applied again" in status.stdout
    # Applying again is the retry (the image may have been pushed meanwhile).
    again, _ = timed_apply(agent, "ghost", web_spec("ghost", image), timeout=300)
    assert again.returncode == 1 and failures(agent, "ghost") == 2


def test_unreachable_registry_is_transient_the_wait_goes_on(agent: AgentProcess) -> None:
    image = "127.0.0.1:9/nobody/none-such:1"  # nothing listens on port 9: connection refused
    result, took = timed_apply(agent, "later", web_spec("later", image), timeout=15)
    assert result.returncode == 1
    assert "timed out after 15 s" in result.stderr and "stopped waiting" not in result.stderr
    assert took >= 15
    (later,) = agent.status()["deployments"]
    (replica,) = later["replica_states"]
    assert not replica["permanent"] and replica["attempts"] >= 2
    assert replica["next_retry_at"] is not None
    assert "attempt" in agent.ctl("status").stdout


def test_crash_loop_stops_the_wait_after_the_first_backoff(
    agent: AgentProcess, busybox: str
) -> None:
    spec = web_spec("crash", busybox, command="[/bin/sh, -c, 'exit 3']")
    result, took = timed_apply(agent, "crash", spec, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "crash replica 0: container exited with exit code 3" in result.stderr
    assert "attempt 3, crash loop" in result.stderr
    assert 10 <= took < 60  # the immediate restart, the 10 s back-off, the third crash


def test_restarts_count_crashes_rollouts_apart_and_both_survive_the_agent(
    agent: AgentProcess, busybox: str
) -> None:
    assert agent.apply("web", web_spec("web", busybox)).returncode == 0
    changed = web_spec("web", busybox, extra="  env: {MODE: fast}\n")
    assert agent.apply("web", changed).returncode == 0  # a roll-out, no restart
    subprocess.run(["docker", "kill", f"maas-{agent.node}-web-0"], check=True, capture_output=True)
    agent.wait_for(
        lambda: (
            agent.status()["deployments"][0]["ready_replicas"] == 1
            and agent.status()["deployments"][0]["replica_states"][0]["restarts"] == 1
        ),
        timeout=30,
        what="the crash counted and the replica back",
    )

    def counts() -> tuple[int, int]:
        (replica,) = agent.status()["deployments"][0]["replica_states"]
        return replica["restarts"], replica["rollouts"]

    assert counts() == (1, 1)
    text = agent.ctl("status").stdout.splitlines()
    header = text.index(next(line for line in text if line.startswith("DEPLOYMENT")))
    row = text[header + 1].split()
    assert row[:2] == ["web", "running"] and row[4:6] == ["1", "1"]  # RESTARTS, ROLLOUTS
    agent.kill()
    agent.start()
    agent.wait_for(lambda: agent.status()["deployments"][0]["ready_replicas"] == 1)
    assert counts() == (1, 1)
    assert (agent.dir / "state" / "counters.json").exists()
