"""Benchmark: `maasctl validate` of 1,000 deployment files vs check-jsonschema on the same files.

check-jsonschema only checks the JSON Schema; `maasctl validate` also checks semantics (templates,
owned flags, conflicts, duplicate names) and keeps positions for every message. Both run as
processes, side by side, several times; the median ratio is printed (goal: at most 1.0x).
Start-up time has its own benchmark, bench/startup.py.

    python bench/validate_many.py [--files 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "deployment.schema.json"


def spec(i: int) -> str:
    kind = i % 3
    body = {
        0: (
            "  source: huggingface\n  repo_id: org/model-{i}\n  backend: custom\n"
            "  image: example/tei:1\n"
            '  command: "--model-id org/model-{i} --huggingface-hub-cache {{{{hf_cache}}}} '
            '--port {{{{port}}}}"\n  allow_cpu_offload: true\n'
        ),
        1: (
            "  source: huggingface\n  repo_id: org/model-{i}-GGUF\n  file: model-q4_k_m.gguf\n"
            "  context_length: 8192\n  backend_parameters: [--flash-attn, 'on']\n"
        ),
        2: (
            "  source: local_path\n  path: /models/model-{i}\n  backend: vllm\n  replicas: 2\n"
            "  env: {{VLLM_LOGGING_LEVEL: INFO}}\n  worker_selector: {{arch: amd64}}\n"
        ),
    }[kind].format(i=i)
    return (
        f"# yaml-language-server: $schema={SCHEMA}\napiVersion: maas/v1\nkind: Deployment\n"
        f"metadata:\n  name: model-{i:04d}\n  labels: {{team: t{i % 5}}}\nspec:\n{body}"
    )


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(
            f"{argv[:3]} failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}"
        )
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    peer = shutil.which("check-jsonschema")
    if peer is None:
        sys.exit("check-jsonschema is not installed (pip install check-jsonschema)")
    if not SCHEMA.exists():
        sys.exit(f"{SCHEMA} is missing: maasctl schema deployment > {SCHEMA}")
    maasctl = [sys.executable, "-m", "maas.cli.main"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = []
        for i in range(args.files):
            path = folder / f"model-{i:04d}.yaml"
            path.write_text(spec(i))
            files.append(str(path))
        ours_cmd = [*maasctl, "validate", str(folder)]
        peer_cmd = [peer, "--schemafile", str(SCHEMA), *files]
        ours, theirs = [], []
        for _ in range(args.runs):
            ours.append(timed(ours_cmd))
            theirs.append(timed(peer_cmd))
    ratios = sorted(o / t for o, t in zip(ours, theirs, strict=True))
    print(f"{args.files} files, {args.runs} runs each, side by side")
    print(f"maasctl validate DIR:        median {statistics.median(ours):.3f} s")
    print(f"check-jsonschema --schemafile: median {statistics.median(theirs):.3f} s")
    print(
        f"ratio ours/theirs: median {statistics.median(ratios):.2f}x "
        f"(goal <= 1.0x: {'met' if statistics.median(ratios) <= 1.0 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
