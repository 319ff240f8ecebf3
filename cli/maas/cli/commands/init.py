"""`maasctl init DIR`: scaffold a config repository (deployments/, nodes/, maas.yaml, CI, hooks)."""

from __future__ import annotations

import argparse
from pathlib import Path

from maas.cli import exitcodes

README = """# Model deployments

Deployment specs live in `deployments/`, node profiles (from `maasctl probe -o yaml`) in `nodes/`,
fleet settings in `maas.yaml`. Every pull request is validated and its plan posted as a comment.

    maasctl validate .                      # what the pre-commit hook and CI run
    maasctl plan . --base origin/main       # what this branch changes, per node
"""

EXAMPLE = """# yaml-language-server: $schema=https://raw.githubusercontent.com/maas-base/maas-base/main/schemas/deployment.schema.json
apiVersion: maas/v1
kind: Deployment
metadata:
  name: qwen2-5-0-5b
spec:
  source: huggingface
  repo_id: Qwen/Qwen2.5-0.5B-Instruct-GGUF
  file: qwen2.5-0.5b-instruct-q4_k_m.gguf
  context_length: 4096
  allow_cpu_offload: true
"""

CONFIG = """apiVersion: maas/v1
kind: Config
spec:
  strategy: spread        # spread | binpack
  port_range: [40000, 40999]
"""

PRE_COMMIT = """repos:
  - repo: https://github.com/maas-base/maas-base
    rev: v0.1.0
    hooks:
      - id: maasctl-validate
"""

WORKFLOW = """name: maas plan
on:
  pull_request:
    paths: ["deployments/**", "nodes/**", "maas.yaml"]
jobs:
  plan:
    runs-on: ubuntu-latest
    permissions: {contents: read, pull-requests: write}
    steps:
      - uses: actions/checkout@v4
        with: {fetch-depth: 0}
      - uses: actions/setup-python@v5
        with: {python-version: "3.11"}
      - run: pip install maas-base
      - run: maasctl validate --format github .
      - run: maasctl plan . --base origin/${{ github.base_ref }} -o markdown > plan.md
      - uses: marocchino/sticky-pull-request-comment@v2
        with: {path: plan.md}
"""

FILES = {
    "README.md": README,
    "maas.yaml": CONFIG,
    "deployments/qwen2-5-0-5b.yaml": EXAMPLE,
    "nodes/.gitkeep": "",
    ".pre-commit-config.yaml": PRE_COMMIT,
    ".github/workflows/maas-plan.yaml": WORKFLOW,
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "init",
        help="scaffold a config repository",
        description="Create a config repository: README, maas.yaml, an example deployment, "
        "nodes/, a pre-commit hook running 'maasctl validate' and a GitHub Actions workflow that "
        "validates and posts the plan on pull requests. Existing files are never overwritten.",
    )
    parser.add_argument("directory", metavar="DIR")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from maas.compiler import MaasError, Position

    root = Path(args.directory)
    existing = [name for name in FILES if (root / name).exists()]
    if existing:
        raise MaasError.single(
            "init", f"refusing to overwrite {', '.join(existing)}", position=Position(str(root))
        )
    for name, content in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    print(f"created config repository in {root}: {', '.join(sorted(FILES))}")
    return exitcodes.OK
