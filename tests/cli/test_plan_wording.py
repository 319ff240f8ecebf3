"""Wording a person reads: a revision that is no commit is named, a placement change with the
same mode and layers says what changed, and a CPU-only node is not said to lack room."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from maas.compiler import MaasError, compile_plan, load_sources
from maas.compiler.plandiff import _reasons
from maas.host.gitrepo import resolve
from support.paths import ROOT


def test_an_unknown_revision_is_named(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    with pytest.raises(MaasError) as caught:
        resolve(tmp_path, "nosuchrev")
    assert "'nosuchrev' is not a commit" in str(caught.value)


def test_same_mode_and_layers_name_the_field_that_changed() -> None:
    node = (ROOT / "examples/nodes/gpu-01.yaml").read_text()
    spec = (
        "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n"
        "  source: huggingface\n  repo_id: a/b\n  backend: custom\n  image: i/j:1\n"
        '  command: "--port {{port}}"\n'
    )
    plans = [
        compile_plan(
            load_sources({"n.yaml": node, "x.yaml": spec + extra}).deployments,
            load_sources({"n.yaml": node}).nodes[0].model,
        )
        for extra in ("", "  gpus: none\n")
    ]
    (reason,) = [r for r in _reasons(plans[0].deployments[0], plans[1].deployments[0])
                 if r.startswith("placement")]  # fmt: skip
    assert reason.startswith("placement changed: gpu -> cpu")
    wider = (
        plans[0]
        .deployments[0]
        .model_copy(
            update={
                "placement": plans[0].deployments[0].placement.model_copy(update={"threads": 8})
            }
        )
    )
    (reason,) = [r for r in _reasons(plans[0].deployments[0], wider) if r.startswith("placement")]
    assert reason == "placement changed: threads None -> 8"


def test_agent_help_names_every_option() -> None:
    from maas.agent.daemon import build_parser

    assert [a.dest for a in build_parser()._actions if not a.help] == []
