"""Coverage-guided fuzzing with atheris (libFuzzer) of the targets in fuzz_targets.py.

Long runs happen here, by hand; CI replays what they found (tests/fuzz/corpus/) and runs the
hypothesis properties. Any exception other than MaasError, a timeout or running over the memory
limit is a crash: libFuzzer stops and writes the input as crash-*/timeout-*/oom-*.

    pip install atheris
    mkdir -p /tmp/fuzz-yaml
    python tests/fuzz/atheris_fuzz.py yaml -runs=100000 -timeout=10 -rss_limit_mb=2048 \\
        -dict=tests/fuzz/yaml.dict /tmp/fuzz-yaml tests/fuzz/corpus/yaml

Targets: yaml, template, gguf, safetensors, apply (an apply as the agent merges, reads
models for and compiles it), json (a gateway request body) (the first argument).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["maas", "ruamel", "fuzz_targets"]):
    import fuzz_targets


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in fuzz_targets.TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(fuzz_targets.TARGETS)}}} [libFuzzer args]")
    target = fuzz_targets.TARGETS[sys.argv.pop(1)]
    fuzz_targets.example_nodes()  # warm the caches, so that the first inputs are not slow
    fuzz_targets.example_deployments()
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
