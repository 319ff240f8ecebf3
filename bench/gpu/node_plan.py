"""On the GPU machine: two llama.cpp deployments planned together for one node, both running.

For each budget (24 and 48 GiB emulated: a torch ballast holds the rest of the GPU), the node
profile is read from the GPU as it is then (free memory after the ballast), the two deployments
are compiled into one Plan (`compile_plan`, the node shared out as a whole), and each is started
with llama-server using exactly the plan's argv (binary and `--fit off` added), one after the
other, both loaded at once. Each must become healthy and answer a completion; the log is searched
for out-of-memory errors. NVML's per-process readings (the probe's) are taken while both run.

Run after bench/gpu/build.sh (with llama-server built); results in $OUT/gpu-node-plan-raw.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

from gguf import GGMLQuantizationType as Q
from verify import metadata, model  # the same random-weight models and header reading

from maas.compiler import CompileOptions, compile_plan, load_sources
from maas.host.probe import read_nvml
from support.gguf_factory import LLAMA3_8B

BIN = Path("/tmp/llama.cpp/build/bin")
OUT = Path(os.environ.get("OUT", "/tmp/out"))
GIB = 1 << 30
# Two deployments: an 8B at Q8_0 (32k context) and an 8B at Q4_0 (64k context, offload allowed).
SPECS = {
    "chat-q8": (LLAMA3_8B, Q.Q8_0, 32768, False),
    "long-q4": (replace(LLAMA3_8B, name="llama-3-8b-long"), Q.Q4_0, 65536, True),
}


def log(text: str) -> None:
    with (OUT / "gpu-node-plan-raw.log").open("a") as f:
        f.write(text + "\n")


def node_text(name: str, total: int, free: int) -> str:
    return (
        "apiVersion: maas/v1\nkind: Node\nmetadata: {name: h200}\nspec:\n"
        "  cpu: {cores: 16, threads: 16}\n  memory: {total_bytes: 120000000000}\n  gpus:\n"
        f"    - {{index: 0, uuid: GPU-0, name: '{name}', memory_total_bytes: {total}, "
        f"memory_free_bytes: {free}}}\n"
    )


def spec_text(name: str, path: Path, ctx: int, offload: bool) -> str:
    return (
        f"apiVersion: maas/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n"
        f"  source: local_path\n  path: {path}\n  context_length: {ctx}\n"
        f"  allow_cpu_offload: {str(offload).lower()}\n"
    )


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 180) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(1)
    return False


def complete(port: int) -> bool:
    body = json.dumps({"prompt": "hello", "n_predict": 16, "temperature": 0}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/completion", body, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status == 200 and "content" in json.loads(r.read())
    except OSError:
        return False


def run_budget(budget_gib: float, paths: dict[str, Path]) -> dict[str, object]:
    import torch

    free, total = torch.cuda.mem_get_info()
    hold = torch.empty(int(free - budget_gib * GIB), dtype=torch.uint8, device="cuda")
    free_now, _ = torch.cuda.mem_get_info()
    sources = {"node.yaml": node_text(torch.cuda.get_device_name(0), total, free_now)}
    for name, (_, _, ctx, offload) in SPECS.items():
        sources[f"{name}.yaml"] = spec_text(name, paths[name], ctx, offload)
    documents = load_sources(sources)
    assert not documents.diagnostics, [d.render() for d in documents.diagnostics]
    models = {name: metadata(path) for name, path in paths.items()}
    plan = compile_plan(
        documents.deployments, documents.nodes[0].model, options=CompileOptions(), models=models
    )
    procs: list[tuple[str, int, subprocess.Popen[bytes], Path]] = []
    result: dict[str, object] = {
        "budget_gib": budget_gib,
        "free_bytes": free_now,
        "totals": [t.model_dump() for t in plan.totals],
        "deployments": [],
    }
    try:
        for d in plan.deployments:  # one after the other, both loaded at once
            argv = [str(BIN / "llama-server"), *d.command, "--fit", "off"]
            logfile = OUT.parent / f"server-{d.name}-{budget_gib:g}.log"
            with logfile.open("wb") as out:
                proc = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ}
                )
            healthy = wait_healthy(d.port, proc)
            procs.append((d.name, d.port, proc, logfile))
            log(f"$ {' '.join(argv)}\nhealthy: {healthy}")
            result["deployments"].append(  # type: ignore[attr-defined]
                {
                    "name": d.name,
                    "placement": d.placement.reason,
                    "argv": argv,
                    "estimate_vram_bytes": d.estimate.vram_bytes,
                    "healthy": healthy,
                }
            )
        free_both, _ = torch.cuda.mem_get_info()
        result["free_bytes_with_both"] = free_both
        result["nvml"] = read_nvml()
        for entry, (_, port, _, _) in zip(result["deployments"], procs, strict=True):  # type: ignore[call-overload]
            entry["completion"] = complete(port)
    finally:
        for name, _, proc, logfile in procs:
            proc.terminate()
            proc.wait(timeout=30)
            text = logfile.read_text(errors="replace")
            log(f"--- {name} ({budget_gib:g} GiB)\n{text[-4000:]}")
            for entry in result["deployments"]:  # type: ignore[attr-defined]
                if entry["name"] == name:
                    entry["oom"] = "out of memory" in text.lower()
                    entry["rc"] = proc.returncode
        del hold
        torch.cuda.empty_cache()
    return result


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    paths = {name: model(shape, q) for name, (shape, q, _, _) in SPECS.items()}
    runs = []
    for budget in (24.0, 48.0):
        runs.append(run_budget(budget, paths))
        print(json.dumps(runs[-1])[:2000], flush=True)
        (OUT / "gpu-node-plan-raw.json").write_text(json.dumps({"runs": runs}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
