"""Writes the first model of the README: a tiny GGUF, a locally built llama-server image, and
the Deployment spec that ties them together (called by scripts/first-model.sh).

The recipes are the tests' own (tests/support), so the README and the test suite build and share
the same image.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.gguf_factory import write_tiny_llama
from support.images import llama_server_image

SPEC = """\
# The README's first model: llama.cpp serving a tiny random-weights GGUF on the CPU.
apiVersion: maas/v1
kind: Deployment
metadata:
  name: tiny-llama
spec:
  source: local_path
  path: {model}
  backend: llama-box
  image: {image}
  context_length: 512
  allow_cpu_offload: true
  health: {{startup_timeout_s: 300}}
"""


def main(run_dir: Path) -> int:
    print("first-model: building the llama-server image (once, about 30 s)", file=sys.stderr)
    image = llama_server_image()
    model = run_dir / "models" / "tiny-llama.gguf"
    if not model.exists():
        write_tiny_llama(model)
    spec = run_dir / "first-model.yaml"
    spec.write_text(SPEC.format(model=model, image=image))
    print(f"first-model: image {image}, model {model}", file=sys.stderr)
    print(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
