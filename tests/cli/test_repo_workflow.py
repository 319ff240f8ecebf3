"""Config repositories in real git repos: fleet assignment, plan diffs between revisions, init."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from maas.compiler import MaasError
from maas.compiler.repo import compile_repo
from maas.host.gitrepo import read_revision, read_worktree
from support import paths
from support.golden import check_golden
from support.paths import ROOT

GOLDEN = paths.GOLDEN / "repo"


def node(name: str, *, gpus: int = 1, arch: str = "amd64") -> str:
    gpu_lines = "".join(
        f"    - {{index: {i}, uuid: GPU-{name}-{i}, name: NVIDIA L40S, "
        f"memory_total_bytes: 48305799168}}\n"
        for i in range(gpus)
    )
    return (
        f"apiVersion: maas/v1\nkind: Node\nmetadata:\n  name: {name}\n"
        f"  labels: {{arch: {arch}}}\nspec:\n  cpu: {{cores: 32, threads: 64}}\n"
        f"  memory: {{total_bytes: 274877906944}}\n" + (f"  gpus:\n{gpu_lines}" if gpus else "")
    )


def deployment(
    name: str,
    *,
    image: str = "example/server:1",
    replicas: int = 1,
    extra: str = "",
    args: str = "",
) -> str:
    return (
        f"apiVersion: maas/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n"
        f"  source: huggingface\n  repo_id: org/{name}\n  backend: custom\n"
        f"  image: {image}\n  command: [--port, '{{{{port}}}}'{args}]\n  replicas: {replicas}\n"
        f"{extra}"
    )


class Repo:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        return subprocess.run(
            [
                "git",
                "-C",
                str(self.root),
                "-c",
                "user.email=ci@example.com",
                "-c",
                "user.name=CI",
                *args,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    def write(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def remove(self, rel: str) -> None:
        (self.root / rel).unlink()

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")


def maasctl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maas.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    r = Repo(tmp_path / "config")
    r.write("nodes/gpu-01.yaml", node("gpu-01"))
    r.write("nodes/gpu-02.yaml", node("gpu-02"))
    r.write("nodes/arm-01.yaml", node("arm-01", gpus=0, arch="arm64"))
    r.write("deployments/chat.yaml", deployment("chat", replicas=2))
    r.write("deployments/embed.yaml", deployment("embed"))
    r.write("deployments/rerank.yaml", deployment("rerank"))
    r.write("deployments/old.yaml", deployment("old"))
    r.commit("base")
    return r


def _change_everything(repo: Repo) -> None:
    repo.write("deployments/chat.yaml", deployment("chat", image="example/server:2", replicas=2))
    repo.write("deployments/embed.yaml", deployment("embed", extra="  health: {path: /ready}\n"))
    repo.write("deployments/rerank.yaml", deployment("rerank", args=", --max-batch, '32'"))
    repo.write(
        "deployments/tts.yaml",
        deployment("tts", extra="  worker_selector: {arch: arm64}\n  allow_cpu_offload: true\n"),
    )
    repo.remove("deployments/old.yaml")
    repo.commit("head")


@pytest.mark.parametrize("output", ["text", "markdown", "json"])
def test_plan_between_revisions_golden(repo: Repo, output: str, update_goldens: bool) -> None:
    _change_everything(repo)
    result = maasctl("plan", ".", "--base", "HEAD~1", "--head", "HEAD", "-o", output, cwd=repo.root)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for rev in (repo.git("rev-parse", "HEAD~1"), repo.git("rev-parse", "HEAD")):
        text = text.replace(rev, "<rev>").replace(rev[:12], "<rev>")
    suffix = {"text": "txt", "markdown": "md", "json": "json"}[output]
    check_golden(GOLDEN / f"plan-diff.{suffix}", text, update_goldens)


def test_summary_and_detailed_exitcode(repo: Repo) -> None:
    unchanged = maasctl("plan", ".", "--base", "HEAD", "--detailed-exitcode", cwd=repo.root)
    assert unchanged.returncode == 0 and "No changes." in unchanged.stdout
    _change_everything(repo)
    changed = maasctl("plan", ".", "--base", "HEAD~1", "--detailed-exitcode", cwd=repo.root)
    assert changed.returncode == 2
    assert changed.stdout.rstrip().endswith(
        "Plan: 1 to create, 3 to recreate, 1 to change in place, 1 to remove."
    )


def test_assignment_spreads_and_respects_selectors(repo: Repo) -> None:
    fleet = compile_repo(read_worktree(repo.root))
    assert sorted(fleet.assignment["chat"]) == ["gpu-01", "gpu-02"]
    assert all(n.startswith("gpu-") for names in fleet.assignment.values() for n in names)
    assert set(fleet.plans) == {"gpu-01", "gpu-02", "arm-01"}


def test_unrelated_changes_move_nothing(repo: Repo) -> None:
    base = compile_repo(read_revision(repo.root, "HEAD"))
    repo.write("nodes/gpu-00.yaml", node("gpu-00", gpus=2))
    repo.write("deployments/aaa-new.yaml", deployment("aaa-new"))
    repo.commit("unrelated")
    head = compile_repo(read_revision(repo.root, "HEAD"), previous=base)
    for name, nodes in base.assignment.items():
        assert head.assignment[name] == nodes, name
    for name, (node_name, planned) in base.located().items():
        assert head.located()[name][1].ports == planned.ports
        assert head.located()[name][0] == node_name


def test_unschedulable_names_each_node(repo: Repo) -> None:
    repo.write(
        "deployments/ppc.yaml", deployment("ppc", extra="  worker_selector: {arch: ppc64le}\n")
    )
    with pytest.raises(MaasError) as caught:
        compile_repo(read_worktree(repo.root))
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "unschedulable"
    assert diagnostic.position is not None and diagnostic.position.line == 4
    assert "gpu-01: labels do not match arch=ppc64le" in diagnostic.hints


def test_validate_repo_github_annotations(repo: Repo) -> None:
    repo.write("deployments/bad.yaml", deployment("bad").replace("replicas: 1", "replicas: x"))
    result = maasctl("validate", "--format", "github", ".", cwd=repo.root)
    assert result.returncode == 1
    assert "::error file=deployments/bad.yaml,line=11,col=13::" in result.stderr


def test_bad_revision_is_a_clear_error(repo: Repo) -> None:
    result = maasctl("plan", ".", "--base", "no-such-rev", cwd=repo.root)
    assert result.returncode == 1 and "error:" in result.stderr and "[git]" in result.stderr


def test_init_scaffolds_a_valid_repository(tmp_path: Path) -> None:
    target = tmp_path / "new"
    assert maasctl("init", str(target), cwd=tmp_path).returncode == 0
    (target / "nodes" / "gpu-01.yaml").write_text(
        (ROOT / "examples" / "nodes" / "gpu-01.yaml").read_text()
    )
    result = maasctl("validate", str(target), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    again = maasctl("init", str(target), cwd=tmp_path)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
    plan = maasctl("plan", str(target), "-o", "json", cwd=tmp_path)
    assert json.loads(plan.stdout)["summary"]["create"] == 1


def _yaml(path: Path) -> object:
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(path.read_text())


def test_init_scaffold_works_on_the_day_it_is_made(tmp_path: Path) -> None:
    """git init done; $schema resolves to a file in the repository, which validates the example
    offline; the hook and the workflow install from a git URL pinned to a commit that exists and
    carries the hook, and pip resolves the workflow's requirement."""
    target = tmp_path / "fleet"
    result = maasctl("init", str(target), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (target / ".git").is_dir()
    subprocess.run(["git", "-C", str(target), "status"], capture_output=True, check=True)
    example = target / "deployments" / "qwen2-5-0-5b.yaml"
    reference = example.read_text().splitlines()[0].split("$schema=", 1)[1]
    schema = (example.parent / reference).resolve()
    assert schema == target / "schemas" / "deployment.schema.json"
    assert schema.read_text() == maasctl("schema", "deployment", cwd=tmp_path).stdout
    checked = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--schemafile",
            str(schema),
            str(example),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (hook,) = _yaml(target / ".pre-commit-config.yaml")["repos"]  # type: ignore[index]
    assert hook["hooks"] == [{"id": "maasctl-validate"}]
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", hook["repo"], str(clone)], check=True)
    hooks = subprocess.run(
        ["git", "-C", str(clone), "show", f"{hook['rev']}:.pre-commit-hooks.yaml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "id: maasctl-validate" in hooks
    workflow = (target / ".github" / "workflows" / "maas-plan.yaml").read_text()
    requirement = f"maas-base @ git+{hook['repo']}@{hook['rev']}"
    assert f'pip install "{requirement}"' in workflow and "pip install maas-base\n" not in workflow
    assert "${{ github.base_ref }}" in workflow
    downloaded = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "-d",
            str(tmp_path / "dl"),
            requirement,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert downloaded.returncode == 0, downloaded.stderr[-2000:]


def test_init_with_a_version_or_a_named_repository(tmp_path: Path) -> None:
    versioned = maasctl("init", str(tmp_path / "v"), "--version", "0.1.0", cwd=tmp_path)
    assert versioned.returncode == 0, versioned.stderr
    (local,) = _yaml(tmp_path / "v" / ".pre-commit-config.yaml")["repos"]  # type: ignore[index]
    assert local["repo"] == "local"
    assert local["hooks"][0]["additional_dependencies"] == ["maas-base==0.1.0"]
    named = maasctl(
        "init",
        str(tmp_path / "g"),
        "--git-url",
        "https://git.example/ops/maas-base.git",
        "--rev",
        "v0.1.0",
        cwd=tmp_path,
    )
    assert named.returncode == 0 and "warning" not in named.stdout
    workflow = (tmp_path / "g" / ".github" / "workflows" / "maas-plan.yaml").read_text()
    assert 'pip install "maas-base @ git+https://git.example/ops/maas-base.git@v0.1.0"' in workflow
