"""The backend catalogue, kept as data: images, argv templates, health paths and owned flags.

`resolve_backend` applies the seed's `backend: auto` rules and says which rule fired, so the
plan can explain itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from maas.compiler.models import DeploymentBody

BackendRule = Literal["explicit", "gguf", "speech", "default"]


@dataclass(frozen=True)
class Backend:
    name: str
    image_cuda: str | None
    image_cpu: str | None
    template: tuple[str, ...]
    health_paths: tuple[str, ...]
    # How the backend receives values the platform decides; None means "not supported".
    context_flag: str | None = None
    gpu_layers_flag: str | None = None
    tensor_parallel_flag: str | None = None
    threads_flag: str | None = None
    tensor_split_flag: str | None = None
    override_tensor_flag: str | None = None
    gpu_memory_utilization_flag: str | None = None
    cpu_offload_flag: str | None = None
    parallel_flag: str | None = None
    batch_flags: tuple[str, ...] = ()  # each gets placement.batch_size
    # Fixed arguments after the placement's: keep the backend from re-deciding the placement.
    pinned_args: tuple[str, ...] = ()
    owned_flags: frozenset[str] = field(default_factory=frozenset)

    def image_for(self, *, gpu: bool) -> str | None:
        return self.image_cuda if gpu else (self.image_cpu or self.image_cuda)


LLAMA_BOX = Backend(
    name="llama-box",
    image_cuda="ghcr.io/ggml-org/llama.cpp:server-cuda",
    image_cpu="ghcr.io/ggml-org/llama.cpp:server",
    template=(
        "--host",
        "0.0.0.0",
        "--port",
        "{{port}}",
        "--model",
        "{{model_path}}",
        "--alias",
        "{{model_name}}",
    ),
    health_paths=("/health",),
    context_flag="--ctx-size",
    gpu_layers_flag="--n-gpu-layers",
    threads_flag="--threads",
    tensor_split_flag="--tensor-split",
    override_tensor_flag="--override-tensor",
    parallel_flag="--parallel",
    batch_flags=("--batch-size", "--ubatch-size"),
    # llama-server's --fit (common/common.h: fit_params = true by default; common/common.cpp
    # calls common_fit_params before loading) would move layers and shrink the context to the
    # free memory it sees at start; the plan has decided both.
    pinned_args=("--fit", "off"),
    owned_flags=frozenset(
        {
            "--host",
            "--port",
            "-m",
            "--model",
            "-a",
            "--alias",
            "-c",
            "--ctx-size",
            "-ngl",
            "--n-gpu-layers",
            "--gpu-layers",
            "-t",
            "--threads",
            "-ts",
            "--tensor-split",
            "-ot",
            "--override-tensor",
            "-dev",
            "--device",
            "-np",
            "--parallel",
            "-fit",
            "--fit",
            "-fitt",
            "--fit-target",
            "-fitc",
            "--fit-ctx",
            "-kvu",
            "--kv-unified",
            "--swa-full",
            "-b",
            "--batch-size",
            "-ub",
            "--ubatch-size",
        }
    ),
)

# v0.12.0: a release with multi-node serving without Ray (ParallelConfig's nnodes, node_rank,
# master_addr, master_port in vllm/config/parallel.py; `vllm serve --headless` in
# vllm/entrypoints/cli/serve.py); the flags a group uses are checked against
# tests/fixtures/vllm-serve-flags.txt.
VLLM = Backend(
    name="vllm",
    image_cuda="vllm/vllm-openai:v0.12.0",
    image_cpu="public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.12.0",
    template=(
        "--model",
        "{{model_path}}",
        "--served-model-name",
        "{{model_name}}",
        "--host",
        "0.0.0.0",
        "--port",
        "{{port}}",
    ),
    health_paths=("/health", "/v1/models"),
    context_flag="--max-model-len",
    tensor_parallel_flag="--tensor-parallel-size",
    gpu_memory_utilization_flag="--gpu-memory-utilization",
    cpu_offload_flag="--cpu-offload-gb",
    owned_flags=frozenset(
        {
            "--model",
            "--served-model-name",
            "--host",
            "--port",
            "--max-model-len",
            "--tensor-parallel-size",
            "-tp",
            "--gpu-memory-utilization",
            "--cpu-offload-gb",
        }
    ),
)

VOX_BOX = Backend(
    name="vox-box",
    image_cuda="gpustack/vox-box:latest-cuda",
    image_cpu="gpustack/vox-box:latest",
    template=(
        "vox-box",
        "start",
        "--model",
        "{{model_path}}",
        "--host",
        "0.0.0.0",
        "--port",
        "{{port}}",
    ),
    health_paths=("/health",),
    owned_flags=frozenset({"--model", "--host", "--port", "--device"}),
)

CUSTOM = Backend(name="custom", image_cuda=None, image_cpu=None, template=(), health_paths=())

CATALOGUE: dict[str, Backend] = {b.name: b for b in (LLAMA_BOX, VLLM, VOX_BOX, CUSTOM)}

SPEECH_MODELS = re.compile(
    r"(^|/)(faster-(distil-)?whisper[-\w.]*|distil-whisper[-\w.]*|cosyvoice-300m[-\w.]*)$",
    re.IGNORECASE,
)


def is_gguf(spec: DeploymentBody) -> bool:
    candidates = [spec.file or "", spec.path or ""]
    return any(c.lower().endswith(".gguf") for c in candidates)


def resolve_backend(spec: DeploymentBody) -> tuple[Backend, BackendRule]:
    """The backend for a spec and the rule that chose it: explicit, gguf, speech or default."""
    if spec.backend != "auto":
        return CATALOGUE[spec.backend], "explicit"
    if is_gguf(spec):
        return LLAMA_BOX, "gguf"
    name = spec.repo_id or (spec.path or "").rstrip("/")
    if SPEECH_MODELS.search(name):
        return VOX_BOX, "speech"
    return VLLM, "default"


def flag_name(argument: str) -> str:
    """`--port=8080` -> `--port`; plain values are returned unchanged."""
    return argument.split("=", 1)[0] if argument.startswith("-") else argument
