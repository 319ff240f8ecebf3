"""The hardware probe: this host's Node profile (the only psutil and pynvml import site).

Reading is split from converting: `read_host()` gathers raw readings (psutil, /sys NUMA topology,
NVML) into a plain JSON-able dict, and `to_node()` turns readings into a `Node` purely, so the
conversion is tested in CI with readings recorded on a real GPU machine. No GPU, no driver or no
NVML library gives a CPU-only profile plus a warning, never a crash.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
from collections.abc import Collection
from pathlib import Path
from typing import Any

from maas.compiler import Diagnostic, Node
from maas.host.gpuroom import ForeignProcess, split_processes

SYS_NODES = Path("/sys/devices/system/node")
SYS_PCI = Path("/sys/bus/pci/devices")
ARCH_NAMES = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}
# Raw readings: plain JSON-able values, so a real host's readings can be recorded as a fixture.
Readings = dict[str, Any]


def probe_with_warnings(cache_dir: Path | None = None) -> tuple[Node, list[Diagnostic]]:
    return to_node(read_host(cache_dir))


def probe(cache_dir: Path | None = None) -> Node:
    return probe_with_warnings(cache_dir)[0]


def probe_live(own_containers: Collection[str]) -> tuple[Node, list[ForeignProcess]]:
    """This host's Node profile as the agent plans on it: each GPU's free memory plus what the
    agent's own containers hold there, and the processes holding the rest (gpuroom)."""
    readings = read_host()
    gpus = (readings.get("nvml") or {}).get("gpus", [])
    pids = {int(p["pid"]) for g in gpus for p in (g.get("processes") or [])}
    own = {pid for pid in pids if _in_containers(pid, own_containers)}
    names = {pid: _process_name(pid) for pid in pids - own}
    ours, foreign = split_processes(gpus, own, names)
    for gpu in gpus:
        gpu["memory_free"] = min(gpu["memory_total"], gpu["memory_free"] + ours.get(gpu["uuid"], 0))
    return to_node(readings)[0], foreign


def _in_containers(pid: int, containers: Collection[str]) -> bool:
    """Whether the (host) PID runs in one of the containers: Docker names the container's full
    ID in the process's cgroup path (`docker-<id>.scope` or `/docker/<id>`). NVML gives host PIDs,
    so this needs the agent in the host's PID namespace, as its systemd unit runs it."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False
    return any(cid in text for cid in containers if len(cid) >= 12)


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() or "?"
    except OSError:
        return "?"


def read_host(cache_dir: Path | None = None) -> Readings:
    """The host's readings; with `cache_dir`, also its model cache's file system (`disk`)."""
    import psutil

    memory = psutil.virtual_memory()
    return {
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
        "system": platform.system().lower(),
        "cpu_cores": psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        "cpu_threads": psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        "cpu_model": _cpu_model(),
        "memory_total": memory.total,
        "memory_available": memory.available,
        "numa": _read_numa(),
        "nvml": read_nvml(),
        **({"disk": read_disk(cache_dir)} if cache_dir is not None else {}),
    }


def read_disk(path: Path) -> dict[str, Any]:
    """Total and free bytes of the file system that holds `path`, or will: the nearest folder
    above it that exists (the agent creates its cache at the first download)."""
    at = path.absolute()
    while not at.exists() and at != at.parent:
        at = at.parent
    usage = shutil.disk_usage(at)
    return {"path": str(path), "total": usage.total, "free": usage.free}


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _read_numa() -> list[dict[str, Any]]:
    nodes = []
    for path in sorted(SYS_NODES.glob("node[0-9]*"), key=lambda p: int(p.name[4:])):
        try:
            cpus = (path / "cpulist").read_text().strip()
            meminfo = (path / "meminfo").read_text()
        except OSError:
            continue
        match = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
        nodes.append(
            {
                "id": int(path.name[4:]),
                "cpus": cpus,
                "memory_bytes": int(match.group(1)) * 1024 if match else None,
            }
        )
    return nodes


def read_nvml() -> dict[str, Any]:
    """NVML readings, or {"error": why} when there is no usable NVIDIA driver."""
    try:
        import pynvml
    except ImportError:
        return {"error": "the NVML bindings (nvidia-ml-py) are not installed"}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return {"error": f"NVML is not available ({exc}); no NVIDIA driver on this host?"}
    try:
        return {
            "driver_version": _text(pynvml.nvmlSystemGetDriverVersion()),
            "cuda_version": _cuda_version(pynvml.nvmlSystemGetCudaDriverVersion_v2()),
            "gpus": [_read_gpu(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())],
        }
    except pynvml.NVMLError as exc:
        return {"error": f"NVML query failed: {exc}"}
    finally:
        pynvml.nvmlShutdown()


def _read_gpu(pynvml: Any, index: int) -> dict[str, Any]:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
    return {
        "index": index,
        "uuid": _text(pynvml.nvmlDeviceGetUUID(handle)),
        "name": _text(pynvml.nvmlDeviceGetName(handle)),
        "memory_total": int(memory.total),
        "memory_free": int(memory.free),
        "compute_capability": f"{major}.{minor}",
        "bus_width_bits": _optional(pynvml, pynvml.nvmlDeviceGetMemoryBusWidth, handle),
        "memory_clock_max_mhz": _optional(
            pynvml, pynvml.nvmlDeviceGetMaxClockInfo, handle, pynvml.NVML_CLOCK_MEM
        ),
        "processes": _processes(pynvml, handle),
        **_pci(pynvml, handle),
    }


def _processes(pynvml: Any, handle: Any) -> list[dict[str, int | None]] | None:
    """The compute processes holding memory on the GPU (host PIDs; bytes, None where the driver
    does not say), or None when NVML cannot list them."""
    try:
        found = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except pynvml.NVMLError:
        return None
    return [
        {"pid": int(p.pid), "used_bytes": _used(p.usedGpuMemory)}
        for p in sorted(found, key=lambda p: p.pid)
    ]


def _used(value: object) -> int | None:
    # NVML reports NVML_VALUE_NOT_AVAILABLE (all bits set) where it cannot attribute memory
    return value if isinstance(value, int) and 0 <= value < (1 << 63) else None


def _pci(pynvml: Any, handle: Any) -> dict[str, Any]:
    """The GPU's PCI bus id (NVML) and the NUMA node the kernel says its slot hangs off."""
    try:
        bus_id = _text(pynvml.nvmlDeviceGetPciInfo(handle).busId)
    except pynvml.NVMLError:
        return {}
    return {"pci_bus_id": bus_id, "numa_node": read_pci_numa_node(bus_id)}


def read_pci_numa_node(bus_id: str) -> int | None:
    """sysfs numa_node of a PCI device; NVML writes an 8-digit domain ("00000000:41:00.0"),
    sysfs a 4-digit one in lower case. -1 (no affinity, e.g. one socket or a VM) is None."""
    domain, _, rest = bus_id.lower().partition(":")
    try:
        value = int((SYS_PCI / f"{domain[-4:]}:{rest}" / "numa_node").read_text().strip())
    except (OSError, ValueError):
        return None
    return value if value >= 0 else None


def _optional(pynvml: Any, call: Any, *args: Any) -> int | None:
    try:
        return int(call(*args))
    except pynvml.NVMLError:
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _cuda_version(value: int) -> str:
    return f"{value // 1000}.{value % 1000 // 10}"


def to_node(readings: Readings) -> tuple[Node, list[Diagnostic]]:
    """Readings -> the Node document of the host, plus warnings (pure)."""
    nvml = readings.get("nvml") or {}
    warnings: list[Diagnostic] = []
    if "error" in nvml:
        warnings.append(
            Diagnostic(
                "probe-gpu",
                f"no GPUs detected: {nvml['error']}",
                severity="warning",
                hints=("the profile is CPU-only",),
            )
        )
    name = dns_label(str(readings["hostname"]))
    machine = str(readings["machine"])
    labels = {
        "os": str(readings.get("system", "linux")),
        "arch": ARCH_NAMES.get(machine, machine.lower()),
        "hostname": name,
    }
    document = {
        "apiVersion": "maas/v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": _spec(readings, nvml),
    }
    return Node.model_validate(document), warnings


def _spec(readings: Readings, nvml: dict[str, Any]) -> dict[str, Any]:
    cpu: dict[str, Any] = {
        "cores": readings["cpu_cores"],
        "threads": readings["cpu_threads"],
        "numa_nodes": [
            {k: v for k, v in n.items() if v is not None} for n in readings.get("numa", [])
        ],
    }
    if readings.get("cpu_model"):
        cpu["model"] = readings["cpu_model"]
    if readings.get("cpu_bandwidth"):
        cpu["memory_bandwidth_bytes_per_s"] = readings["cpu_bandwidth"]
    spec: dict[str, Any] = {
        "cpu": cpu,
        "memory": {
            "total_bytes": readings["memory_total"],
            "available_bytes": readings["memory_available"],
        },
        "gpus": [_gpu(g) for g in nvml.get("gpus", [])],
    }
    for key in ("driver_version", "cuda_version"):
        if nvml.get(key):
            spec[key] = nvml[key]
    disk = readings.get("disk")
    if disk and disk.get("total"):
        spec["disk"] = {"total_bytes": disk["total"], "free_bytes": disk["free"]}
    return spec


def _gpu(g: dict[str, Any]) -> dict[str, Any]:
    out = {
        "index": g["index"],
        "uuid": g["uuid"],
        "name": g["name"],
        "vendor": "nvidia",
        "memory_total_bytes": g["memory_total"],
        "memory_free_bytes": g["memory_free"],
        "compute_capability": g["compute_capability"],
    }
    if g.get("pci_bus_id"):
        out["pci_bus_id"] = g["pci_bus_id"]
    if g.get("numa_node") is not None:
        out["numa_node"] = g["numa_node"]
    width, clock = g.get("bus_width_bits"), g.get("memory_clock_max_mhz")
    if width and clock:
        out["memory_bus_width_bits"] = width
        out["memory_clock_max_mhz"] = clock
        # DDR: two transfers per clock; bytes per transfer = bus width / 8.
        out["memory_bandwidth_bytes_per_s"] = width // 8 * clock * 1_000_000 * 2
    return out


def dns_label(name: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower().split(".")[0]).strip("-")[:63].strip("-")
    return label or "node"


def measure_memory_bandwidth(size_bytes: int = 256 << 20, repeats: int = 5) -> int:
    """CPU memory bandwidth in bytes/s from the best of a few large array copies (read + write)."""
    import time

    import numpy as np

    source = np.ones(size_bytes // 8, dtype=np.float64)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return int(2 * source.nbytes / best)
