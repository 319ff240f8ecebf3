"""maasctl as a user runs it: exit codes, output streams, help, and no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.paths import ROOT

GPU_NODE = str(ROOT / "examples" / "nodes" / "gpu-01.yaml")
CPU_NODE = str(ROOT / "examples" / "nodes" / "cpu-01.yaml")


def maasctl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maas.cli.main", *args],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_version_and_help() -> None:
    assert maasctl("--version").stdout.startswith("maasctl ")
    result = maasctl("--help")
    assert result.returncode == 0
    for command in ("validate", "plan", "schema"):
        assert command in result.stdout
        sub = maasctl(command, "--help")
        assert sub.returncode == 0 and "usage: maasctl " + command in sub.stdout


def test_validate_examples_ok() -> None:
    result = maasctl("validate", "examples")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_validate_reports_positions_and_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n"
        "  source: huggingface\n  repo_id: a/b\n  replicas: two\n"
    )
    result = maasctl("validate", str(bad))
    assert result.returncode == 1
    assert f"{bad}:7:13: error: 'spec.replicas'" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_github_format(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: maas/v1\nkind: Deploymnt\n")
    result = maasctl("validate", "--format", "github", str(bad))
    assert result.returncode == 1
    assert result.stderr.startswith(f"::error file={bad},line=2,col=7::unknown kind")


def test_validate_missing_file() -> None:
    result = maasctl("validate", "does/not/exist.yaml")
    assert result.returncode == 1
    assert "does/not/exist.yaml: error: no such file or directory [file]" in result.stderr


def test_validate_with_node_checks_fit() -> None:
    result = maasctl("validate", "examples/vllm-llama.yaml", "--node", CPU_NODE)
    assert result.returncode == 1
    assert "[no-gpu]" in result.stderr


def test_plan_json_contract() -> None:
    result = maasctl("plan", "examples/tei-embeddings-cpu.yaml", "--node", CPU_NODE, "-o", "json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["format_version"] == 1 and plan["node"] == "cpu-01"
    (deployment,) = plan["deployments"]
    assert deployment["backend"] == "custom" and deployment["backend_rule"] == "explicit"
    port = deployment["port"]
    assert deployment["command"] == [
        "--model-id",
        "BAAI/bge-large-en-v1.5",
        "--huggingface-hub-cache",
        "/var/lib/maas/cache/deployments/bge-large/huggingface",
        "--port",
        str(port),
    ]
    assert deployment["placement"]["mode"] == "cpu"
    for key in ("image", "env", "estimate", "diagnostics"):
        assert key in deployment


@pytest.mark.parametrize("output", ["text", "markdown"])
def test_plan_human_outputs(output: str) -> None:
    result = maasctl("plan", "examples", "--node", GPU_NODE, "-o", output)
    assert result.returncode == 0, result.stderr
    assert "qwen2-5-7b" in result.stdout and "whisper-large-v3" in result.stdout


def test_plan_stdin() -> None:
    spec = (ROOT / "examples" / "tei-embeddings-cpu.yaml").read_text()
    result = maasctl("plan", "-", "--node", CPU_NODE, stdin=spec)
    assert result.returncode == 0, result.stderr


def test_schema_command_matches_committed() -> None:
    result = maasctl("schema", "node")
    assert result.stdout == (ROOT / "schemas" / "node.schema.json").read_text()


def test_internal_error_exits_70_without_traceback(tmp_path: Path) -> None:
    code = (
        "import sys, maas.cli.main as m\n"
        "import maas.cli.commands.validate as v\n"
        "def boom(args): raise RuntimeError('kaput')\n"
        "v.run = boom\n"
        "sys.exit(m.main(['validate', 'examples']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 70
    assert "internal error" in result.stderr and "report" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_error_exits_2() -> None:
    assert maasctl("plan").returncode == 2
