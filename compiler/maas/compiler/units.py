"""Units and the one default every placement shares: byte multiples, how a byte count is shown, and
the context length a deployment gets when its spec names none."""

from __future__ import annotations

MIB = 1 << 20
GIB = 1 << 30
# Both llama.cpp's and vLLM's own default is the model's full trained context, which for today's
# models (128k and more) would reserve a KV cache most deployments never use; 8192 is what we give
# unless the spec asks for more (or the model was trained on less).
DEFAULT_CONTEXT = 8192


def gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


def default_context(trained: int | None, wanted: int | None) -> int:
    """The context a deployment runs with: the spec's, else the trained one capped at 8192."""
    return wanted or min(trained or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
