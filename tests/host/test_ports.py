"""The port-range check against the kernel's ephemeral ports (agent/maas/agent/hostports.py)."""

from __future__ import annotations

from pathlib import Path

from maas.agent.config import AgentConfig
from maas.host.ports import exposed, parse_ranges, port_range_warning
from support.paths import ROOT


def test_parse_ranges() -> None:
    assert parse_ranges("32768\t60999\n") == [(32768, 60999)]
    assert parse_ranges("40000-40999,50000\n") == [(40000, 40999), (50000, 50000)]
    assert parse_ranges("\n") == []


def test_exposed_parts_skip_reserved_ports_and_what_lies_outside() -> None:
    ephemeral = (32768, 60999)
    assert exposed((40000, 40999), ephemeral, []) == [(40000, 40999)]
    assert exposed((40000, 40999), ephemeral, [(40000, 40999)]) == []
    assert exposed((40000, 40999), ephemeral, [(40100, 40199), (40500, 40500)]) == [
        (40000, 40099),
        (40200, 40499),
        (40501, 40999),
    ]
    assert exposed((20000, 20999), ephemeral, []) == []
    assert exposed((32000, 33000), ephemeral, []) == [(32768, 33000)]


def proc(tmp_path: Path, reserved: str) -> Path:
    (tmp_path / "ip_local_port_range").write_text("32768\t60999\n")
    (tmp_path / "ip_local_reserved_ports").write_text(reserved + "\n")
    return tmp_path


def test_a_warning_names_the_ports_and_the_sysctl_that_reserves_them(tmp_path: Path) -> None:
    warning = port_range_warning((40000, 40999), proc(tmp_path, "40000-40499"))
    assert warning is not None and warning.severity == "warning"
    assert "at 40500-40999" in warning.message
    assert "sysctl -w net.ipv4.ip_local_reserved_ports=40500-40999" in warning.hints[0]
    assert port_range_warning((40000, 40999), proc(tmp_path, "40000-40999")) is None
    assert port_range_warning((40000, 40999), tmp_path / "missing") is None


def test_the_packaged_sysctl_reserves_the_default_port_range() -> None:
    root = ROOT
    text = (root / "packaging" / "sysctl" / "90-maas-ports.conf").read_text()
    (line,) = [x for x in text.splitlines() if x.startswith("net.")]
    reserved = parse_ranges(line.split("=", 1)[1])
    assert exposed(AgentConfig().port_range, (32768, 60999), reserved) == []
