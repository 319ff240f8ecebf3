"""Validate-time checks through `maasctl validate` and `maasctl plan`, on real files: empty files,
a custom command without `{{port}}`, a context longer than the model was trained for (from a
real GGUF header), every file's problems before stopping, and the summary line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.gguf_factory import write_tiny_llama
from support.paths import ROOT

NODE = ROOT / "examples" / "nodes" / "cpu-01.yaml"

CUSTOM = """apiVersion: maas/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  source: huggingface
  repo_id: BAAI/bge-large-en-v1.5
  backend: custom
  image: ghcr.io/huggingface/text-embeddings-inference:cpu-1.8
  command: "{command}"
  allow_cpu_offload: true
"""


def maasctl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maas.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(cwd)},
    )


def test_warnings_alone_pass_and_are_summed_up(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    (tmp_path / "ok.yaml").write_text(CUSTOM.format(name="ok", command="--port {{ port }}"))
    (tmp_path / "noport.yaml").write_text(
        CUSTOM.format(name="noport", command="--model-id {{model_name}}")
    )
    result = maasctl("validate", ".", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "empty.yaml: warning: the file holds no document: nothing in it is deployed [empty-file]",
        "noport.yaml:9:12: warning: the command has no '{{port}}': the server will not listen "
        "on the port the agent probes and the gateway routes to [no-port]",
        "  hint: pass it with the server's own flag, e.g. '--port {{port}}'",
        "0 errors and 2 warnings in 2 files",
    ]


def test_every_files_errors_before_stopping(tmp_path: Path) -> None:
    (tmp_path / "a-broken.yaml").write_text("apiVersion: maas/v1\nkind: [\n")
    (tmp_path / "b-image.yaml").write_text(
        CUSTOM.format(name="b", command="--port {{port}}").replace(
            "ghcr.io/huggingface/text-embeddings-inference:cpu-1.8", "Team/tei:1"
        )
    )
    (tmp_path / "c-template.yaml").write_text(CUSTOM.format(name="c", command="--port {{port"))
    for command in (["validate", "."], ["plan", ".", "--node", str(NODE)]):
        result = maasctl(*command, cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.splitlines()
        assert [line.split(":")[0] for line in lines if ": error:" in line] == [
            "a-broken.yaml",
            "b-image.yaml",
            "c-template.yaml",
        ], result.stderr
        assert lines[-1] == "3 errors and 1 warning in 3 files", command  # c: no {{port}}


def test_context_beyond_the_trained_length_is_a_warning_with_both_numbers(
    tmp_path: Path,
) -> None:
    """In a config repository whose policy allows the model's folder; also with --node."""
    models = tmp_path / "models"
    models.mkdir()
    model = write_tiny_llama(models / "tiny.gguf")  # trained for 2048 tokens
    (tmp_path / "maas.yaml").write_text(
        f"apiVersion: maas/v1\nkind: Config\nspec:\n  policy: {{allowed_mount_roots: [{models}]}}\n"
    )
    (tmp_path / "nodes").mkdir()
    (tmp_path / "nodes" / "cpu-01.yaml").write_text(NODE.read_text())
    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "long.yaml").write_text(
        "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: long}\nspec:\n"
        f"  source: local_path\n  path: {model}\n  context_length: 8192\n"
        "  allow_cpu_offload: true\n"
    )
    warning = (
        "long.yaml:7:19: warning: context_length 8192 is longer than the 2048 tokens the model "
        "was trained for [context-length]"
    )
    result = maasctl("validate", ".", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"deployments/{warning}" in result.stderr
    assert result.stderr.splitlines()[-1] == "0 errors and 1 warning in 1 file"
    # With --node the default policy refuses the folder: the warning is kept beside the error.
    single = maasctl("validate", "deployments/long.yaml", "--node", str(NODE), cwd=tmp_path)
    assert single.returncode == 1
    assert warning in single.stderr and "[policy]" in single.stderr
