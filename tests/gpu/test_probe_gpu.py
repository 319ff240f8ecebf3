"""On a real NVIDIA machine (the device machine only): the probe agrees with nvidia-smi."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from maas.host.probe import probe_with_warnings

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU"),
]


def smi() -> list[dict[str, str]]:
    fields = "index,uuid,name,memory.total,compute_cap"
    out = subprocess.run(
        ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [
        dict(zip(fields.split(","), (c.strip() for c in line.split(",")), strict=True))
        for line in out.strip().splitlines()
    ]


def test_probe_matches_nvidia_smi() -> None:
    node, warnings = probe_with_warnings()
    assert not warnings
    expected = smi()
    assert len(node.spec.gpus) == len(expected)
    for gpu, row in zip(node.spec.gpus, expected, strict=True):
        assert gpu.uuid == row["uuid"] and gpu.name == row["name"]
        assert gpu.memory_total_bytes == int(row["memory.total"]) * 1024 * 1024
        assert gpu.compute_capability == row["compute_cap"]
        assert gpu.memory_free_bytes is not None
        assert 0 < gpu.memory_free_bytes <= gpu.memory_total_bytes
        # An H100 SXM/PCIe has 2-3.4 TB/s of HBM bandwidth; the figure must be in that range.
        assert gpu.memory_bandwidth_bytes_per_s is not None
        assert 1.5e12 < gpu.memory_bandwidth_bytes_per_s < 5e12
