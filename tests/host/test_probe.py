"""The probe's pure converter, fed readings recorded on the H100 machine and on a CPU-only VM.

tests/fixtures/probe/ holds, from one session on the H100 device machine: `maasctl probe --readings
--measure-bandwidth` (h100-readings.json), `maasctl probe -o json` run just after it
(h100-node.json) and nvidia-smi's view of the same GPU (nvidia-smi.csv).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from maas.host import probe
from maas.host.probe import dns_label, read_host, to_node
from support import paths

FIXTURES = paths.FIXTURES / "probe"


def test_h100_readings_convert_to_a_gpu_node() -> None:
    readings = json.loads((FIXTURES / "h100-readings.json").read_text())
    node, warnings = to_node(readings)
    assert warnings == []
    (gpu,) = node.spec.gpus
    assert gpu.uuid == "GPU-a54f288a-b8da-10b4-ff15-3264624765d5"
    assert gpu.name == "NVIDIA H100 80GB HBM3" and gpu.compute_capability == "9.0"
    assert gpu.memory_total_bytes == 81559 * 1024 * 1024  # nvidia-smi.csv, same machine
    assert gpu.memory_bandwidth_bytes_per_s == 5120 // 8 * 2619 * 10**6 * 2  # 3.35 TB/s
    assert node.spec.cpu.cores == 16 and node.spec.cpu.memory_bandwidth_bytes_per_s
    assert node.spec.driver_version == "580.159.04" and node.spec.cuda_version == "13.0"
    assert node.metadata.labels == {"os": "linux", "arch": "amd64", "hostname": "vm"}


def test_h100_readings_give_what_maasctl_probe_printed_there() -> None:
    readings = json.loads((FIXTURES / "h100-readings.json").read_text())
    printed = json.loads((FIXTURES / "h100-node.json").read_text())
    converted = to_node(readings)[0].model_dump(mode="json", exclude_none=True)
    # Free memory moves between two runs, and the CPU bandwidth is measured only on request.
    for document in (printed, converted):
        document["spec"]["memory"].pop("available_bytes")
        document["spec"]["cpu"].pop("memory_bandwidth_bytes_per_s", None)
        for numa in document["spec"]["cpu"]["numa_nodes"]:
            numa.pop("memory_bytes")
    assert converted == printed


def test_nvidia_smi_agrees_with_recorded_readings() -> None:
    readings = json.loads((FIXTURES / "h100-readings.json").read_text())
    header, row = (FIXTURES / "nvidia-smi.csv").read_text().strip().splitlines()
    smi = dict(zip(header.split(", "), row.split(", "), strict=True))
    (gpu,) = to_node(readings)[0].spec.gpus
    assert gpu.uuid == smi["uuid"] and gpu.name == smi["name"]
    assert gpu.memory_total_bytes == int(smi["memory.total [MiB]"].split()[0]) * 1024 * 1024
    assert gpu.memory_clock_max_mhz == int(smi["clocks.max.memory [MHz]"].split()[0])


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


def test_the_model_caches_disk_goes_into_the_profile(tmp_path: Path) -> None:
    readings = read_host(tmp_path / "not" / "made" / "yet")
    usage = shutil.disk_usage(tmp_path)
    assert readings["disk"]["total"] == usage.total
    node, _ = to_node(readings)
    assert node.spec.disk is not None and node.spec.disk.total_bytes == usage.total
    assert node.spec.disk.free_bytes == readings["disk"]["free"]
    assert to_node(read_host())[0].spec.disk is None  # no cache named: not known


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


def test_gpu_numa_node_comes_from_the_pci_slot(tmp_path: Path, monkeypatch: Any) -> None:
    # sysfs spells the bus id with a 4-digit domain in lower case; NVML with 8 in upper case
    slot = tmp_path / "0000:c1:00.0"
    slot.mkdir()
    (slot / "numa_node").write_text("1\n")
    other = tmp_path / "0000:41:00.0"
    other.mkdir()
    (other / "numa_node").write_text("-1\n")
    monkeypatch.setattr(probe, "SYS_PCI", tmp_path)
    assert probe.read_pci_numa_node("00000000:C1:00.0") == 1
    assert probe.read_pci_numa_node("00000000:41:00.0") is None  # no affinity
    assert probe.read_pci_numa_node("00000000:99:00.0") is None  # no such slot
    readings = json.loads((FIXTURES / "h100-readings.json").read_text())
    readings["nvml"]["gpus"][0].update(pci_bus_id="00000000:C1:00.0", numa_node=1)
    (gpu,) = to_node(readings)[0].spec.gpus
    assert gpu.pci_bus_id == "00000000:C1:00.0" and gpu.numa_node == 1


def test_recorded_h200_slot_has_no_numa_affinity(tmp_path: Path, monkeypatch: Any) -> None:
    # Recorded on the H200 device machine (a VM): nvidia-smi's bus id and every PCI device's
    # sysfs numa_node; a single-node VM reports -1, so the GPU gets no NUMA node.
    for line in (FIXTURES / "h200-pci-numa.txt").read_text().splitlines():
        path, value = line.split()
        slot = tmp_path / Path(path).parent.name
        slot.mkdir()
        (slot / "numa_node").write_text(value + "\n")
    monkeypatch.setattr(probe, "SYS_PCI", tmp_path)
    _, row = (FIXTURES / "h200-nvidia-smi.csv").read_text().strip().splitlines()
    bus_id = row.split(", ")[0]
    assert bus_id == "00000000:00:06.0" and (tmp_path / "0000:00:06.0").is_dir()
    assert probe.read_pci_numa_node(bus_id) is None
