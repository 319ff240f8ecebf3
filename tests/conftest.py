"""Shared pytest options and fixtures.

A test needs Docker when it asks for a real engine: `engine_ready` or any fixture built on it
(`busybox`, `agent`, the registries). Those tests are marked `docker` here, from their fixtures,
wherever they live.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.agent import AgentProcess, docker_available
from support.images import busybox_image
from support.registry import local_registry


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens",
        action="store_true",
        default=False,
        help="rewrite golden files from the current output instead of comparing",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "engine_ready" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.docker)


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-goldens"))


@pytest.fixture(scope="session")
def engine_ready() -> None:
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


@pytest.fixture(scope="module")
def registry(engine_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real local registry (Distribution's `docker-registry`) for this module's tests."""
    with local_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address
