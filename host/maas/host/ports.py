"""Whether the agent's port range is safe from the kernel's ephemeral ports.

Linux gives outgoing connections local ports from `net.ipv4.ip_local_port_range` (32768-60999 by
default). A replica port in that range can be held by any outgoing connection when its container
is created, and the create fails with "address already in use", again on every retry for as long
as that connection lives. Ports listed in `net.ipv4.ip_local_reserved_ports` are never handed
out, which is the fix when the range must stay where it is.
"""

from __future__ import annotations

from pathlib import Path

from maas.compiler import Diagnostic

PROC = Path("/proc/sys/net/ipv4")
SYSCTL_FILE = "packaging/sysctl/90-maas-ports.conf"
Range = tuple[int, int]


def parse_ranges(text: str) -> list[Range]:
    """`ip_local_reserved_ports` ("1000-1010,2000") or `ip_local_port_range` ("32768\t60999")."""
    text = text.strip()
    if not text:
        return []
    if "," not in text and "-" not in text and len(text.split()) == 2:
        low, high = text.split()
        return [(int(low), int(high))]
    ranges = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        ranges.append((int(low), int(high or low)))
    return ranges


def exposed(ports: Range, ephemeral: Range, reserved: list[Range]) -> list[Range]:
    """The parts of `ports` the kernel may hand to outgoing connections."""
    low, high = max(ports[0], ephemeral[0]), min(ports[1], ephemeral[1])
    if low > high:
        return []
    parts: list[Range] = []
    start = low
    for r_low, r_high in sorted(reserved):
        if r_high < start or r_low > high:
            continue
        if r_low > start:
            parts.append((start, r_low - 1))
        start = max(start, r_high + 1)
    if start <= high:
        parts.append((start, high))
    return parts


def port_range_warning(ports: Range, proc: Path = PROC) -> Diagnostic | None:
    """A warning when `ports` overlaps the kernel's unreserved ephemeral ports (None when it
    does not, or when the kernel's settings cannot be read, e.g. not on Linux)."""
    try:
        (ephemeral,) = parse_ranges((proc / "ip_local_port_range").read_text())
        reserved = parse_ranges((proc / "ip_local_reserved_ports").read_text())
    except (OSError, ValueError):
        return None
    parts = exposed(ports, ephemeral, reserved)
    if not parts:
        return None
    text = ",".join(f"{low}-{high}" if low != high else str(low) for low, high in parts)
    return Diagnostic(
        "port-range",
        f"port_range {ports[0]}-{ports[1]} overlaps the kernel's ephemeral ports "
        f"({ephemeral[0]}-{ephemeral[1]}) at {text}: an outgoing connection can hold a "
        "replica's port and make its container fail to start",
        severity="warning",
        hints=(
            f"reserve them: sysctl -w net.ipv4.ip_local_reserved_ports={text} "
            f"(for good: {SYSCTL_FILE} in /etc/sysctl.d/)",
            f"or choose a port_range below {ephemeral[0]}",
        ),
    )
