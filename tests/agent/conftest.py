"""Fixtures for the Docker tests; the helpers live in tests_agent_support."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests_agent_support import AgentProcess, docker_available

from support.images import busybox_image


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/agent/" in str(item.fspath):
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def engine_ready() -> None:
    import os

    if not docker_available():
        if os.environ.get("CI"):
            pytest.fail("no Docker engine answers (scripts/setup.sh starts one)")
        pytest.skip("no Docker engine answers")


@pytest.fixture(scope="session")
def busybox(engine_ready: None) -> str:
    return busybox_image()


@pytest.fixture
def agent(tmp_path: Path, busybox: str) -> Iterator[AgentProcess]:
    process = AgentProcess(tmp_path)
    process.start()
    yield process
    process.cleanup()
