"""`maasctl init DIR`: scaffold a config repository (deployments/, nodes/, maas.yaml, CI, hooks).

The scaffold works on the day it is made: `git init` is run, the JSON Schemas are written into
the repository (editors resolve `$schema` offline), and the workflow and pre-commit hook install
MaaS-Base from where the user really gets it: a git URL pinned to a commit (`--git-url`, `--rev`;
by default this checkout's `origin` and commit) or a version of the package (`--version`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from maas.cli import exitcodes

README = """# Model deployments

Deployment specs live in `deployments/`, node profiles (from `maasctl probe -o yaml`) in `nodes/`,
fleet settings in `maas.yaml`. Every pull request is validated and its plan posted as a comment.

    maasctl validate .                      # what the pre-commit hook and CI run
    maasctl plan . --base origin/main       # what this branch changes, per node
"""

EXAMPLE = """# yaml-language-server: $schema=../schemas/deployment.schema.json
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

PRE_COMMIT_GIT = """repos:
  - repo: {url}
    rev: {rev}
    hooks:
      - id: maasctl-validate
"""

PRE_COMMIT_VERSION = """repos:
  - repo: local
    hooks:
      - id: maasctl-validate
        name: maasctl validate
        entry: maasctl validate .
        language: python
        additional_dependencies: ["{requirement}"]
        pass_filenames: false
        files: ^(deployments/|nodes/|maas\\.yaml$)
"""

WORKFLOW = """name: maas plan
on:
  pull_request:
    paths: ["deployments/**", "nodes/**", "maas.yaml"]
jobs:
  plan:
    runs-on: ubuntu-latest
    permissions: {{contents: read, pull-requests: write}}
    steps:
      - uses: actions/checkout@v4
        with: {{fetch-depth: 0}}
      - uses: actions/setup-python@v5
        with: {{python-version: "3.11"}}
      - run: pip install "{requirement}"
      - run: maasctl validate --format github .
      - run: maasctl plan . --base origin/${{{{ github.base_ref }}}} -o markdown > plan.md
      - uses: marocchino/sticky-pull-request-comment@v2
        with: {{path: plan.md}}
"""


@dataclass(frozen=True)
class Install:
    """Where the scaffold's CI and hook get MaaS-Base."""

    requirement: str  # for pip
    pre_commit: str  # the .pre-commit-config.yaml
    note: str = ""


def install_from(git_url: str | None, rev: str | None, version: str | None) -> Install:
    from maas.compiler import MaasError
    from maas.host.discovery import checkout_root

    if version:
        requirement = f"maas-base=={version}"
        return Install(requirement, PRE_COMMIT_VERSION.format(requirement=requirement))
    root = checkout_root()
    note = ""
    if git_url is None:
        if root is None:
            raise MaasError.single(
                "init",
                "cannot tell where MaaS-Base comes from for the CI workflow and the hook",
                hints=("pass --git-url URL [--rev COMMIT], or --version VERSION",),
            )
        git_url = _git(root, "remote", "get-url", "origin")
        local = root if git_url is None else _local_path(root, git_url)
        if local is not None:  # no origin, or one that is a folder: pip needs a file:// URL
            git_url = local.as_uri()
            note = (
                f"the workflow and hook install MaaS-Base from {git_url}, which only this machine "
                "reaches; pass --git-url with your team's repository"
            )
    if rev is None:
        rev = _git(root, "rev-parse", "HEAD") if root is not None else None
        if rev is None:
            raise MaasError.single(
                "init", f"no commit to pin {git_url} to", hints=("pass --rev COMMIT_OR_TAG",)
            )
    requirement = f"maas-base @ git+{git_url}@{rev}"
    return Install(requirement, PRE_COMMIT_GIT.format(url=git_url, rev=rev), note)


def _local_path(root: Path, url: str) -> Path | None:
    """The folder a remote names when it is a path (git takes `/srv/maas` or `../maas` as a
    remote; pip only takes URLs), else None."""
    if "://" in url:
        return None
    path = (root / url).resolve()
    return path if path.is_dir() else None


def _git(root: Path, *args: str) -> str | None:
    from maas.compiler import MaasError
    from maas.host.gitrepo import git

    try:
        return git(root, *args).decode(errors="replace").strip() or None
    except MaasError:
        return None


def files(install: Install) -> dict[str, str]:
    from maas.compiler import schema_text

    return {
        "README.md": README,
        "maas.yaml": CONFIG,
        "deployments/qwen2-5-0-5b.yaml": EXAMPLE,
        "nodes/.gitkeep": "",
        "schemas/deployment.schema.json": schema_text("deployment"),
        "schemas/node.schema.json": schema_text("node"),
        ".pre-commit-config.yaml": install.pre_commit,
        ".github/workflows/maas-plan.yaml": WORKFLOW.format(requirement=install.requirement),
    }


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "init",
        help="scaffold a config repository",
        description="Create a config repository: README, maas.yaml, an example deployment, "
        "nodes/, the JSON Schemas, a pre-commit hook running 'maasctl validate' and a GitHub "
        "Actions workflow that validates and posts the plan on pull requests, then run "
        "'git init'. Existing files are never overwritten. The hook and the workflow install "
        "MaaS-Base from --git-url at --rev (default: this checkout's origin and commit) or, "
        "with --version, the package of that version from your package index.",
    )
    parser.add_argument("directory", metavar="DIR")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--git-url", metavar="URL", help="the git repository to install from")
    source.add_argument("--version", metavar="VERSION", help="install maas-base==VERSION")
    parser.add_argument("--rev", metavar="REV", help="the commit or tag --git-url is pinned to")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from maas.compiler import MaasError, Position

    root = Path(args.directory)
    install = install_from(args.git_url, args.rev, args.version)
    scaffold = files(install)
    existing = [name for name in scaffold if (root / name).exists()]
    if existing:
        raise MaasError.single(
            "init", f"refusing to overwrite {', '.join(existing)}", position=Position(str(root))
        )
    for name, content in scaffold.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    if not (root / ".git").exists():
        from maas.host.gitrepo import git

        git(root, "init", "-q")
    print(f"created config repository in {root}: {', '.join(sorted(scaffold))}")
    print(f"CI and the pre-commit hook install: {install.requirement}")
    if install.note:
        print(f"warning: {install.note}")
    print(f"next: cd {root} && git add -A && git commit -m 'Config repository'")
    return exitcodes.OK
