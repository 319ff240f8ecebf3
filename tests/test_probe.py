"""The probe's pure converter, fed readings recorded on the H100 machine and on a CPU-only VM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from maas.agent.probe import dns_label, read_host, to_node

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "probe"


def test_h100_readings_convert_to_a_gpu_node() -> None:
    readings = json.loads((FIXTURES / "h100-readings.json").read_text())
    node, warnings = to_node(readings)
    assert warnings == []
    (gpu,) = node.spec.gpus
    assert gpu.uuid == "GPU-14e72959-3d7b-267b-cdc5-86dbda8eec2d"
    assert gpu.name == "NVIDIA H100 80GB HBM3" and gpu.compute_capability == "9.0"
    assert gpu.memory_total_bytes == 81559 * 1024 * 1024  # nvidia-smi.csv, same machine
    assert gpu.memory_bandwidth_bytes_per_s == 5120 // 8 * 2619 * 10**6 * 2  # 3.35 TB/s
    assert node.spec.cpu.cores == 16 and node.spec.cpu.memory_bandwidth_bytes_per_s
    assert node.spec.driver_version == "580.159.04" and node.spec.cuda_version == "13.0"
    assert node.metadata.labels == {"os": "linux", "arch": "amd64", "hostname": "vm"}


def test_no_nvml_gives_cpu_only_profile_and_warning() -> None:
    readings = json.loads((FIXTURES / "h100-readings.json").read_text())
    readings["nvml"] = {"error": "NVML is not available (NVML Shared Library Not Found)"}
    node, warnings = to_node(readings)
    assert node.spec.gpus == []
    assert [w.code for w in warnings] == ["probe-gpu"] and warnings[0].severity == "warning"


def test_partial_nvml_fields_are_optional() -> None:
    readings = json.loads((FIXTURES / "h100-readings.json").read_text())
    readings["nvml"]["gpus"][0].update(bus_width_bits=None, memory_clock_max_mhz=None)
    (gpu,) = to_node(readings)[0].spec.gpus
    assert gpu.memory_bandwidth_bytes_per_s is None


def test_hostnames_become_dns_labels() -> None:
    assert dns_label("GPU_Box.example.com") == "gpu-box"
    assert dns_label("___") == "node"


def test_this_host_probes_without_crashing() -> None:
    node, _ = to_node(read_host())
    assert node.spec.cpu.threads >= 1 and node.spec.memory.total_bytes > 0


def test_maasctl_probe_output_validates(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "maas.cli.main", "probe"], capture_output=True, text=True, check=True
    ).stdout
    (tmp_path / "node.yaml").write_text(out)
    check = subprocess.run(
        [sys.executable, "-m", "maas.cli.main", "validate", str(tmp_path / "node.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
