"""Pure request and response inspection: the `model` of JSON and multipart bodies, token usage,
hashed API keys, and the exposure rule of the configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maas.compiler.diagnostics import MaasError
from maas.gateway.config import GatewayConfig, check_exposure, is_loopback, load_config
from maas.gateway.keys import KeyRing, hash_key, new_key, parse_key_lines
from maas.gateway.requests import (
    BadRequest,
    FormModelScanner,
    model_of_json,
    multipart_boundary,
)
from maas.gateway.usage import Usage, UsageTap, find_usage

# --- model of a request --------------------------------------------------------------------


def test_model_of_json() -> None:
    assert model_of_json(b'{"model": "llama", "messages": []}') == "llama"
    with pytest.raises(BadRequest, match="not valid JSON"):
        model_of_json(b"{nope")
    with pytest.raises(BadRequest, match="JSON object"):
        model_of_json(b"[1]")
    with pytest.raises(BadRequest) as missing:
        model_of_json(b'{"messages": []}')
    assert missing.value.param == "model"
    with pytest.raises(BadRequest):
        model_of_json(b'{"model": 3}')


def form(boundary: str, fields: list[tuple[str, bytes, str | None]]) -> bytes:
    out = b""
    for name, value, filename in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def scan(body: bytes, boundary: str, step: int) -> tuple[str | None, int]:
    """The model found and how many bytes had to be read to find it."""
    scanner = FormModelScanner(boundary)
    for start in range(0, len(body), step):
        found = scanner.feed(body[start : start + step])
        if found is not None:
            return found, start + step
    return None, len(body)


@pytest.mark.parametrize("step", [1, 3, 7, 64, 100_000])
def test_the_model_field_is_found_before_the_upload_when_it_comes_first(step: int) -> None:
    audio = bytes(range(256)) * 400  # 100 KiB with every byte value, CRLFs included
    body = form("b0und", [("model", b"whisper", None), ("file", audio, "a.wav")])
    model, read = scan(body, "b0und", step)
    assert model == "whisper"
    assert read < 200 + step  # the upload itself was not needed to route the request


@pytest.mark.parametrize("step", [1, 13, 4096])
def test_the_model_field_after_the_upload_is_found_too(step: int) -> None:
    body = form("xyz", [("file", b"\r\n--xy" * 500, "a.wav"), ("model", b" tiny \r\n", None)])
    assert scan(body, "xyz", step)[0] == "tiny"


def test_multipart_without_model_or_malformed() -> None:
    assert scan(form("b", [("file", b"data", "a.wav")]), "b", 5)[0] is None
    with pytest.raises(BadRequest, match="model"):
        scan(form("b", [("model", b"", None)]), "b", 5)
    with pytest.raises(BadRequest, match="too long"):
        scan(form("b", [("model", b"m" * 1000, None)]), "b", 4096)
    with pytest.raises(BadRequest):
        FormModelScanner("b").feed(b"--b\r\nthis header has no colon\r\n\r\nx\r\n--b--\r\n")


def test_multipart_boundary() -> None:
    assert multipart_boundary('multipart/form-data; boundary="abc"') == "abc"
    with pytest.raises(BadRequest):
        multipart_boundary("application/json")
    with pytest.raises(BadRequest):
        multipart_boundary("multipart/form-data")


# --- usage ---------------------------------------------------------------------------------


def test_usage_of_a_json_response() -> None:
    body = json.dumps(
        {
            "choices": [{"text": '"usage": {"prompt_tokens": 99}'}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        }
    ).encode()
    assert find_usage(body) == Usage(5, 7)


def test_usage_of_an_embeddings_response_has_no_completion() -> None:
    body = b'{"object":"list","usage":{"prompt_tokens":4,"total_tokens":4},"data":[]}'
    assert find_usage(body) == Usage(4, 0)


def sse(*events: object) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def test_usage_of_a_stream_is_the_last_non_null_usage() -> None:
    chunk = {"choices": [{"delta": {"content": "hi"}}], "usage": None}
    final = {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3}}
    assert find_usage(sse(chunk, chunk, final)) == Usage(11, 3)
    assert find_usage(sse(chunk, chunk)) is None
    assert find_usage(b"") is None
    assert find_usage(b'"usage": {"prompt_tokens": 1, "compl') is None  # cut off


def test_the_tap_finds_usage_across_chunks_with_bounded_memory() -> None:
    token = {"choices": [{"delta": {"content": "x" * 50}}]}
    final = {"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": 2000}}
    stream = sse(*([token] * 2000), final)
    tap = UsageTap(window=4096)
    for start in range(0, len(stream), 97):
        tap.feed(stream[start : start + 97])
    assert tap.usage() == Usage(8, 2000)
    assert tap.tail_size < 4096 + 97 and len(tap.head) == 4096


def test_the_tap_finds_usage_at_the_start_of_a_large_body() -> None:
    body = b'{"usage": {"prompt_tokens": 3, "completion_tokens": 0}, "data": [' + b"0," * 100_000
    body += b"0]}"
    tap = UsageTap(window=1024)
    for start in range(0, len(body), 1000):
        tap.feed(body[start : start + 1000])
    assert tap.usage() == Usage(3, 0)


# --- keys ----------------------------------------------------------------------------------


def test_key_file_digests_comments_and_errors(tmp_path: Path) -> None:
    key = new_key()
    assert key.startswith("sk-maas-") and len(key) > 40
    text = f"# keys\n{hash_key(key)} alice\n\n{hash_key('b').upper()}  # bob\n"
    assert parse_key_lines(text, "keys") == ({hash_key(key), hash_key("b")}, [])
    digests, problems = parse_key_lines(
        f"{hash_key('a')}\nsk-maas-plaintext\nabc\n", "gateway.keys"
    )
    assert digests == {hash_key("a")}  # every line stands alone
    rendered = [d.render() for d in problems]
    assert len(rendered) == 2
    assert rendered[0].startswith("gateway.keys:2:1: error: a line must start with a SHA-256")


def test_keyring_checks_bearer_keys_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "gateway.keys"
    assert KeyRing(path).allows(None)  # no file: authentication is off
    path.write_text(hash_key("first") + "\n")
    ring = KeyRing(path)
    assert ring.required
    assert ring.allows("Bearer first")
    assert not ring.allows("Bearer second")
    assert not ring.allows("first")
    assert not ring.allows(None)
    path.write_text(hash_key("second") + "\n# rotated\n")
    assert ring.reload()
    assert ring.allows("Bearer second") and not ring.allows("Bearer first")
    assert not ring.reload()  # unchanged file: not read again
    path.unlink()
    ring.reload()
    assert not ring.allows("Bearer second") and not ring.allows(None)  # deleted: nobody


def test_an_empty_key_file_turns_authentication_on(tmp_path: Path) -> None:
    path = tmp_path / "gateway.keys"
    path.write_text("")
    ring = KeyRing(path)
    assert ring.required and not ring.allows("Bearer anything")


# --- configuration -------------------------------------------------------------------------


def test_exposure_rule() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("gateway.example")
    check_exposure(GatewayConfig(), keys_required=False)
    check_exposure(GatewayConfig(host="0.0.0.0"), keys_required=True)
    check_exposure(GatewayConfig(host="0.0.0.0", allow_unauthenticated_remote=True), False)
    with pytest.raises(MaasError) as refused:
        check_exposure(GatewayConfig(host="0.0.0.0"), keys_required=False)
    assert "--allow-unauthenticated-remote" in refused.value.diagnostics[0].render()


def test_config_file_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("port: 9000\nhost: 0.0.0.0\nmax_body_bytes: 1024\n")
    config = load_config(path, {"port": 9100, "host": None})
    assert (config.host, config.port, config.max_body_bytes) == ("0.0.0.0", 9100, 1024)
    path.write_text("port: 9000\nbogus: 1\n")
    with pytest.raises(MaasError) as bad:
        load_config(path, {})
    assert f"{path}:2:1" in bad.value.diagnostics[0].render()


def test_facade_is_sorted_and_importable() -> None:
    from maas import gateway

    names = gateway.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), not n[:1].isupper(), n))
    for name in names:
        assert hasattr(gateway, name), name
