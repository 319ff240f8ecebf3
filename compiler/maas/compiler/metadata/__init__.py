"""Model metadata readers: GGUF and safetensors headers -> `ModelMetadata`, from bytes only.

`ModelMetadata` is light (pydantic only); the GGUF parser imports the `gguf` package's constants,
so import `maas.compiler.metadata.gguf` only where GGUF bytes are parsed.
"""

from maas.compiler.metadata.model import LayerBytes, ModelMetadata

__all__ = ["LayerBytes", "ModelMetadata"]
