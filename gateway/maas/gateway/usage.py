"""Token usage read from responses passing through the gateway, without buffering them.

OpenAI-compatible servers report `usage` at the end of a JSON response, and in the last data
event of a stream (OpenAI with `stream_options.include_usage`, llama.cpp, vLLM). The tap keeps the
first and the last few KiB of the body and, at the end, decodes the last `"usage": {...}` object
it finds. Pure: bytes in, numbers out.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass

WINDOW = 64 * 1024
_KEY = b'"usage"'
_decoder = json.JSONDecoder()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


class UsageTap:
    """Fed every chunk of a response body; `usage()` at the end."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self.head = bytearray()
        self.tail: deque[bytes] = deque()
        self.tail_size = 0

    def feed(self, chunk: bytes) -> None:
        if len(self.head) < self.window:
            self.head += chunk[: self.window - len(self.head)]
        self.tail.append(chunk)
        self.tail_size += len(chunk)
        while self.tail_size - len(self.tail[0]) >= self.window:
            self.tail_size -= len(self.tail.popleft())

    def usage(self) -> Usage | None:
        # The tail holds the last usage of a stream; the head covers servers that put `usage`
        # before a large `data` array.
        return find_usage(b"".join(self.tail)) or find_usage(bytes(self.head))


def find_usage(text: bytes) -> Usage | None:
    """The last well-formed, non-null `"usage": {...}` object in `text`."""
    end = len(text)
    while (at := text.rfind(_KEY, 0, end)) >= 0:
        end = at
        usage = _decode_at(text, at + len(_KEY))
        if usage is not None:
            return usage
    return None


def _decode_at(text: bytes, index: int) -> Usage | None:
    rest = text[index : index + 4096].lstrip()
    if not rest.startswith(b":"):
        return None
    try:
        value, _ = _decoder.raw_decode(rest[1:].lstrip().decode("utf-8", "replace"))
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    prompt = value.get("prompt_tokens", 0)
    completion = value.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)
