"""What the gateway needs to know about a request before choosing a replica: its `model`.

JSON bodies are parsed whole (they are small and size-limited). A multipart upload (audio
transcription) is scanned as it arrives with `multipart`'s push parser: the scan stops at the end
of the `model` field, so when clients send fields before the file (as the OpenAI SDKs do), the
upload itself is streamed to the replica instead of being held. Pure: bytes in, values out.
"""

from __future__ import annotations

import json

from multipart import MultipartSegment, ParserError, PushMultipartParser, parse_options_header

from maas.gateway.errors import BadRequest

__all__ = ["BadRequest", "FormModelScanner", "model_of_json", "multipart_boundary"]

MAX_MODEL_NAME = 512


def model_of_json(body: bytes) -> str:
    try:
        document = json.loads(body)
    except RecursionError:
        # json.loads recurses per nesting level: a body of 100,000 '[' would end the task.
        raise BadRequest("The request body is nested too deeply.") from None
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(document, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = document.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("You must provide a model parameter.", "model")
    return model


def multipart_boundary(content_type: str) -> str:
    kind, options = parse_options_header(content_type)
    boundary = options.get("boundary")
    if kind != "multipart/form-data" or not boundary:
        raise BadRequest("The request must be multipart/form-data with a boundary.")
    return str(boundary)


class FormModelScanner:
    """Fed the raw chunks of a multipart/form-data body; `feed` returns the `model` field's value
    once that field is complete, else None."""

    def __init__(self, boundary: str) -> None:
        self.parser = PushMultipartParser(boundary, max_header_count=16)
        self.field: str | None = None
        self.value = bytearray()

    def feed(self, chunk: bytes) -> str | None:
        try:
            for event in self.parser.parse(chunk):
                found = self._event(event)
                if found is not None:
                    return found
        except ParserError as exc:
            raise BadRequest(f"The multipart body is malformed: {exc}") from None
        return None

    def _event(self, event: MultipartSegment | bytes | None) -> str | None:
        if isinstance(event, MultipartSegment):
            self.field = event.name
            self.value.clear()
        elif event is None:
            if self.field == "model":
                return self._model()
            self.field = None
        elif self.field == "model":
            self.value += event
            if len(self.value) > MAX_MODEL_NAME:
                raise BadRequest("The model field is too long.", "model")
        return None

    def _model(self) -> str:
        try:
            model = self.value.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise BadRequest("The model field is not UTF-8.", "model") from None
        if not model:
            raise BadRequest("You must provide a model parameter.", "model")
        return model
