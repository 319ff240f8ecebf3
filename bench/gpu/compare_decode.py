"""Predicted (two-bandwidth model) versus measured (`llama-bench`) decode tok/s on the H100.

Reads bench/results/gpu-decode-raw.json (verify.py decode: llama-bench -p 0 -n 64 of a Llama-3-8B
Q4_0 with random weights, and the CPU bandwidth of a copy on all 16 cores) and predicts each point
with the constants in maas.compiler.placement.common. Usage: python bench/gpu/compare_decode.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from maas.compiler.placement.common import CPU_EFFICIENCY, FIXED_S_PER_LAYER, GPU_EFFICIENCY
from maas.compiler.placement.llama_memory import decode_tokens_per_s

ROOT = Path(__file__).resolve().parents[2]
H100_BANDWIDTH = 5120 // 8 * 2619 * 2_000_000


def main() -> int:
    raw = json.loads((ROOT / "bench/results/gpu-decode-raw.json").read_text())
    cpu = raw["cpu_bandwidth"] * CPU_EFFICIENCY
    gpu = H100_BANDWIDTH * GPU_EFFICIENCY["hbm"]
    print(
        f"CPU copy bandwidth {raw['cpu_bandwidth'] / 1e9:.1f} GB/s x {CPU_EFFICIENCY} = "
        f"{cpu / 1e9:.1f} GB/s; GPU {H100_BANDWIDTH / 1e12:.2f} TB/s x {GPU_EFFICIENCY['hbm']} = "
        f"{gpu / 1e12:.2f} TB/s\n"
    )
    print(
        "| -ngl (of 33) | GPU bytes/token | CPU bytes/token | measured tok/s | predicted | error |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    worst = 0.0
    for row in raw["decode"]:
        predicted = decode_tokens_per_s(
            row["gpu_bytes"],
            row["cpu_bytes"],
            gpu_bandwidth=gpu,
            cpu_bandwidth=cpu,
            fixed_s=FIXED_S_PER_LAYER * 32,  # Llama-3-8B: 32 layers
        )
        assert predicted is not None
        error = (predicted - row["measured"]) / row["measured"] * 100
        worst = max(worst, abs(error))
        print(
            f"| {row['ngl']} | {row['gpu_bytes'] / 1e9:.2f} GB | {row['cpu_bytes'] / 1e9:.2f} GB |"
            f" {row['measured']:.1f} | {predicted:.1f} | {error:+.1f}% |"
        )
    print(f"\nworst error {worst:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
