"""Where the agent's socket is, for `maasctl` and `maas-gateway` alike.

The order, first match wins:
1. the command-line flag (`--socket`, `--agent-socket`) or the gateway's config file;
2. the environment variable MAAS_AGENT_SOCKET;
3. the local run directory that `bash scripts/run.sh` uses, when an agent socket exists there:
   $MAAS_RUN_DIR, else `.run/` of the current directory, else `.run/` of the checkout this
   program was installed from (an editable install);
4. the system socket /run/maas/agent.sock (the systemd service).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

SYSTEM_SOCKET = Path("/run/maas/agent.sock")
ENV_SOCKET = "MAAS_AGENT_SOCKET"
ENV_RUN_DIR = "MAAS_RUN_DIR"
RUN_DIR = ".run"
SOCKET_NAME = "agent.sock"

ORDER = (
    "the agent's socket is found in this order: --socket; $MAAS_AGENT_SOCKET; "
    "$MAAS_RUN_DIR/agent.sock, .run/agent.sock of the current directory or of this checkout "
    "(where `bash scripts/run.sh` puts it) when one exists; /run/maas/agent.sock"
)


def checkout_root() -> Path | None:
    """The source checkout this module runs from, when it is one (an editable install)."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "scripts" / "run.sh").is_file() else None


def local_candidates(env: Mapping[str, str], cwd: Path) -> list[Path]:
    """The run-directory sockets, in the order they are tried."""
    candidates = []
    if env.get(ENV_RUN_DIR):
        candidates.append(Path(env[ENV_RUN_DIR]) / SOCKET_NAME)
    candidates.append(cwd / RUN_DIR / SOCKET_NAME)
    root = checkout_root()
    if root is not None:
        candidates.append(root / RUN_DIR / SOCKET_NAME)
    return candidates


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False


def agent_socket(
    flag: str | Path | None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Path:
    """The socket to talk to, following the order in the module docstring."""
    if flag:
        return Path(flag)
    env = os.environ if env is None else env
    if env.get(ENV_SOCKET):
        return Path(env[ENV_SOCKET])
    for candidate in local_candidates(env, cwd or Path.cwd()):
        if _is_socket(candidate):
            return candidate
    return SYSTEM_SOCKET
