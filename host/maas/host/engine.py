"""The Docker engine adapter: the only module that imports docker.

Every docker-py or connection error is wrapped in MaasError with the original chained, marked
retryable when trying again may help (engine down, timeouts) and permanent when it will not
(bad image reference, invalid parameters).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import docker
import docker.errors
import requests
from docker.models.containers import _create_container_args

from maas.compiler import MaasError

T = TypeVar("T")


class ImageMissing(MaasError):
    """The engine does not have the image (never pulled, or removed meanwhile): pull it again."""


def _wrap(what: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except docker.errors.ImageNotFound as exc:
        raise ImageMissing.single(
            "image", f"{what}: image not found: {exc.explanation}", retryable=True
        ) from exc
    except docker.errors.NotFound as exc:
        raise MaasError.single("engine", f"{what}: not found: {exc.explanation}") from exc
    except docker.errors.APIError as exc:
        retryable = exc.status_code is None or exc.status_code >= 500 or exc.status_code == 409
        raise MaasError.single(
            "engine", f"{what}: {exc.explanation or exc}", retryable=retryable
        ) from exc
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        raise MaasError.single(
            "engine",
            f"{what}: the Docker engine does not answer ({exc})",
            retryable=True,
            hints=("is dockerd running? check 'docker info'",),
        ) from exc


def _inspect_shape(summary: dict[str, Any]) -> dict[str, Any]:
    status = str(summary.get("Status", ""))
    match = re.search(r"\((-?\d+)\)", status) if status.startswith("Exited") else None
    return {
        "Id": summary.get("Id", ""),
        "Name": (summary.get("Names") or [""])[0],
        "Config": {"Labels": summary.get("Labels") or {}},
        "State": {
            "Status": summary.get("State", "unknown"),
            "ExitCode": int(match.group(1)) if match else 0,
        },
    }


class Engine:
    def __init__(self, base_url: str | None = None, timeout: int = 60) -> None:
        self._client = _wrap(
            "connect",
            lambda: docker.DockerClient(
                base_url=base_url or "unix:///var/run/docker.sock", timeout=timeout
            ),
        )

    def list_ours(self, labels: list[str]) -> list[dict[str, Any]]:
        """Every container (running or not) with all these `key=value` labels, in inspect shape.

        One list call instead of one inspect per container: the summary has the labels and the
        state, and its status text carries the exit code ("Exited (137) 5 seconds ago").
        """
        filters = {"label": labels}
        summaries = _wrap(
            "list containers", lambda: self._client.api.containers(all=True, filters=filters)
        )
        return [_inspect_shape(s) for s in summaries]

    def inspect(self, container_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _wrap(
            "inspect", lambda: self._client.api.inspect_container(container_id)
        )
        return result

    def has_image(self, image: str) -> bool:
        try:
            _wrap("inspect image", lambda: self._client.api.inspect_image(image))
        except MaasError:
            return False
        return True

    def pull(self, image: str, progress: Callable[[dict[str, Any]], None]) -> None:
        """Pull `image`, handing each of the engine's progress events (a dict with `id`,
        `status`, `progress`, `progressDetail`) to `progress`."""

        def run() -> None:
            for event in self._client.api.pull(image, stream=True, decode=True):
                if "error" in event:
                    raise docker.errors.APIError(event["error"])
                progress(event)

        _wrap(f"pull {image}", run)

    def create_and_start(self, spec: dict[str, Any]) -> str:
        def run() -> str:
            # docker-py's own translation of run()-style arguments, without the inspect that
            # containers.create() adds: one create and one start call per container.
            arguments = _create_container_args({**spec, "version": self._client.api._version})
            container_id = str(self._client.api.create_container(**arguments)["Id"])
            try:
                self._client.api.start(container_id)
            except docker.errors.APIError:
                self._client.api.remove_container(container_id, force=True)
                raise
            return container_id

        return _wrap(f"create {spec.get('name')}", run)

    def start(self, container_id: str) -> None:
        _wrap("start", lambda: self._client.api.start(container_id))

    def stop(self, container_id: str, *, timeout: int = 30) -> None:
        _wrap("stop", lambda: self._client.api.stop(container_id, timeout=timeout))

    def remove(self, container_id: str, *, stop_timeout: int = 30) -> None:
        """Stop (SIGTERM, then SIGKILL after `stop_timeout`) and remove; with 0, kill and remove
        in one call (an idle on-demand replica evicted while a request waits)."""

        def run() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                if stop_timeout > 0:
                    self._client.api.stop(container_id, timeout=stop_timeout)
                self._client.api.remove_container(container_id, force=True)

        _wrap("remove", run)

    def logs(self, container_id: str, *, tail: int | None, follow: bool) -> Iterator[bytes]:
        stream: Iterator[bytes] = _wrap(
            "logs",
            lambda: self._client.api.logs(
                container_id, stream=True, follow=follow, tail="all" if tail is None else tail
            ),
        )
        return stream

    def events(self, labels: list[str]) -> Iterator[dict[str, Any]]:
        """Container events of the containers with these labels (blocks; for a watcher thread)."""
        filters = {"type": "container", "label": labels}
        stream: Iterator[dict[str, Any]] = _wrap(
            "events", lambda: self._client.events(decode=True, filters=filters)
        )
        return stream
