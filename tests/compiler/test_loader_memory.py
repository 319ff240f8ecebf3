"""The loader in a long-running process: loading the same specs again and again (the agent does,
on every apply and delete) must not grow memory."""

from __future__ import annotations

import gc
import tracemalloc

from maas.compiler import load_sources

SPEC = (
    "apiVersion: maas/v1\nkind: Deployment\nmetadata: {{name: m{i}}}\nspec:\n"
    "  source: huggingface\n  repo_id: org/m{i}\n  backend: custom\n  image: x/y:1\n"
)
TEXT = "---\n".join(SPEC.format(i=i) for i in range(10))


def test_repeated_loads_do_not_grow_memory() -> None:
    for _ in range(20):
        load_sources({"a.yaml": TEXT})
    tracemalloc.start()
    try:
        gc.collect()  # ruamel builds a loader class per load: cyclic garbage, not a leak
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(300):  # 3,000 documents: ruamel's per-document record was ~100 B each
            load_sources({"a.yaml": TEXT})
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes kept after 300 loads"
