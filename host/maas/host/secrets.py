"""Node-local secrets for `env: {KEY: {secret: NAME}}`: one file per secret in a root-only folder.

Values are read at container creation only, never stored, logged or reported; errors name the
secret and the file, never a value. A value that is not UTF-8 text, or holds a NUL byte, cannot
be an environment value: it is refused here, before the runtime would echo it in an error.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from maas.compiler import MaasError, Position

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _check_private(path: Path, st: os.stat_result) -> None:
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise MaasError.single(
            "secret",
            f"{path} is accessible by group or others (mode {stat.filemode(st.st_mode)})",
            position=Position(str(path)),
            hints=(f"chmod go-rwx {path}",),
        )
    if st.st_uid not in (0, os.geteuid()):
        raise MaasError.single(
            "secret", f"{path} must be owned by root or the agent", position=Position(str(path))
        )


def read_secret(directory: Path, name: str) -> str:
    if not NAME.match(name):
        raise MaasError.single("secret", f"invalid secret name '{name}'")
    try:
        _check_private(directory, directory.stat())
        path = directory / name
        # Non-blocking: a FIFO in the secrets folder must not hang the pass (refused below).
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MaasError.single(
            "secret",
            f"secret '{name}' does not exist in {directory}",
            hints=(f"create {directory / name} (mode 0600)",),
        ) from None
    except OSError as exc:
        raise MaasError.single("secret", f"cannot read secret '{name}': {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise MaasError.single(
            "secret", f"secret '{name}' is not a regular file", position=Position(str(path))
        )
    with os.fdopen(fd, "rb") as handle:
        _check_private(path, st)
        data = handle.read(64 * 1024 + 1)
    if len(data) > 64 * 1024:
        raise MaasError.single("secret", f"secret '{name}' is larger than 64 KiB")
    try:
        value = data.decode("utf-8", errors="strict").rstrip("\n")
    except UnicodeDecodeError:
        raise MaasError.single(
            "secret",
            f"secret '{name}' is not UTF-8 text",
            position=Position(str(path)),
            hints=("an environment value is text; store binary secrets base64-encoded",),
        ) from None
    if "\0" in value:
        raise MaasError.single(
            "secret",
            f"secret '{name}' holds a NUL byte, which no environment variable can carry",
            position=Position(str(path)),
        )
    return value
