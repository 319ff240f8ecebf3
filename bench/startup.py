"""Benchmark: start-up time of `maasctl --help` and `maasctl validate ONEFILE` (goal < 0.3 s each).

Each command runs as a fresh process, N times, side by side with two references: the bare
interpreter (`python -c pass`, the floor no CLI can beat) and check-jsonschema validating the same
file against schemas/deployment.schema.json (a peer doing less). Medians and ratios are printed,
then the heaviest imports of each command from `python -X importtime`, to show what to make lazy.

    python bench/startup.py [--runs 15] [--top 8]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "deployment.schema.json"
EXAMPLE = ROOT / "examples" / "tei-embeddings-cpu.yaml"
GOAL_S = 0.3


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{argv} failed ({done.returncode}): {done.stderr[-500:]}")
    return elapsed


def heaviest_imports(argv: list[str], top: int) -> list[tuple[int, str]]:
    """(cumulative microseconds, module) of the top-level imports, heaviest first."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, check=False
    )
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        # Only imports at the first nesting level: their cost includes everything below them.
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("   "):
            rows.append((int(parts[1]), parts[2].strip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    maasctl = [sys.executable, "-m", "maas.cli.main"]
    commands = {
        "python -c pass (floor)": [sys.executable, "-c", "pass"],
        "maasctl --help": [*maasctl, "--help"],
        "maasctl validate ONEFILE": [*maasctl, "validate", str(EXAMPLE)],
    }
    peer = shutil.which("check-jsonschema")
    if peer:
        commands["check-jsonschema ONEFILE"] = [peer, "--schemafile", str(SCHEMA), str(EXAMPLE)]
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):  # interleaved, so that load on the machine hits all alike
        for name, argv in commands.items():
            samples[name].append(timed(argv))
    medians = {name: statistics.median(times) for name, times in samples.items()}
    print(f"start-up, median of {args.runs} runs each, interleaved")
    for name, median in medians.items():
        goal = ""
        if name.startswith("maasctl"):
            goal = f"  (goal < {GOAL_S} s: {'met' if median < GOAL_S else 'MISSED'})"
        print(f"  {name:<28} {median:6.3f} s{goal}")
    if peer:
        ratio = medians["maasctl validate ONEFILE"] / medians["check-jsonschema ONEFILE"]
        print(f"  validate ONEFILE ours/check-jsonschema: {ratio:.2f}x")
    for name in ("maasctl --help", "maasctl validate ONEFILE"):
        print(f"heaviest top-level imports of {name} (python -X importtime, cumulative):")
        for micros, module in heaviest_imports(commands[name][1:], args.top):
            print(f"  {micros / 1000:7.1f} ms  {module}")


if __name__ == "__main__":
    main()
