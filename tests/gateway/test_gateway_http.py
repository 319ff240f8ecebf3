"""The gateway over real HTTP against real local replicas (aiohttp servers on real ports)."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from maas.gateway.keys import hash_key
from support.gateway import (
    Replica,
    asynctest,
    deployment,
    free_port,
    gateway,
    metric,
    metrics_text,
    port_of,
    serving,
    status,
)

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@asynctest()
async def test_chat_routes_by_name_and_alias_without_forwarding_the_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(hash_key("secret") + "\n")
    replica = Replica("r0")
    async with serving(replica.app()) as up:
        doc = status(deployment("m", [port_of(up)], aliases=("gpt-4o",)))
        async with gateway(doc, keys) as (url, _), aiohttp.ClientSession() as s:
            auth = {"Authorization": "Bearer secret"}
            for model in ("m", "gpt-4o"):
                body = {**CHAT, "model": model}
                async with s.post(url + "/v1/chat/completions", json=body, headers=auth) as r:
                    assert r.status == 200
                    answer = await r.json()
            assert answer["choices"][0]["message"]["content"] == "from r0"
            assert [seen["path"] for seen in replica.seen] == ["/v1/chat/completions"] * 2
            assert "Authorization" not in replica.seen[0]["headers"]
            assert replica.seen[0]["headers"]["X-Forwarded-For"] == "127.0.0.1"
            async with s.get(url + "/metrics", headers=auth) as r:
                text = await r.text()
            assert (
                metric(
                    text,
                    "maas_gateway_requests_total",
                    model="m",
                    route="chat/completions",
                    code="200",
                )
                == 2
            )
            assert metric(text, "maas_gateway_tokens_total", model="m", kind="prompt") == 10
            assert metric(text, "maas_gateway_tokens_total", model="m", kind="completion") == 6


@asynctest()
async def test_keys_are_required_when_the_key_file_exists(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(hash_key("secret") + "\n")
    replica = Replica("r0")
    async with serving(replica.app()) as up:
        doc = status(deployment("m", [port_of(up)]))
        async with gateway(doc, keys) as (url, _), aiohttp.ClientSession() as s:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "secret"}):
                async with s.post(url + "/v1/chat/completions", json=CHAT, headers=headers) as r:
                    assert r.status == 401
                    error = (await r.json())["error"]
                    assert error["code"] == "invalid_api_key"
            async with s.get(url + "/v1/models") as r:
                assert r.status == 401
            async with s.get(url + "/health") as r:
                assert r.status == 200
            assert replica.seen == []


@asynctest()
async def test_streams_pass_through_chunk_by_chunk_with_usage() -> None:
    replica = Replica("r0")
    async with serving(replica.app()) as up:
        doc = status(deployment("m", [port_of(up)]))
        async with gateway(doc) as (url, _), aiohttp.ClientSession() as s:
            body = {**CHAT, "stream": True, "hold": True, "chunks": 4}
            async with s.post(url + "/v1/chat/completions", json=body) as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "text/event-stream"
                # The replica now waits for the gate: the first chunk must already be here.
                first = await asyncio.wait_for(r.content.readuntil(b"\n\n"), timeout=5)
                assert b'"t0"' in first
                replica.gate.set()
                rest = await r.content.read()
            assert rest.count(b"data: ") == 5 and rest.endswith(b"data: [DONE]\n\n")
            text = await metrics_text(s, url)
            assert metric(text, "maas_gateway_tokens_total", model="m", kind="completion") == 4


@asynctest()
async def test_client_disconnect_cancels_the_upstream_request() -> None:
    replica = Replica("r0")
    async with serving(replica.app()) as up:
        doc = status(deployment("m", [port_of(up)]))
        async with gateway(doc) as (url, _):
            async with aiohttp.ClientSession() as s:
                body = {**CHAT, "stream": True, "forever": True}
                async with s.post(url + "/v1/chat/completions", json=body) as r:
                    await r.content.readuntil(b"\n\n")
                    await r.content.readuntil(b"\n\n")
                # The connection is closed here, mid-stream.
            await asyncio.wait_for(replica.cancelled.wait(), timeout=5)
            async with aiohttp.ClientSession() as s:
                text = await metrics_text(s, url)
            assert metric(text, "maas_gateway_outstanding_requests", model="m") == 0
            assert (
                metric(
                    text,
                    "maas_gateway_errors_total",
                    model="m",
                    route="chat/completions",
                    reason="client_disconnected",
                )
                == 1
            )


@asynctest()
async def test_models_unknown_model_and_no_ready_replica() -> None:
    replica = Replica("r0")
    async with serving(replica.app()) as up:
        doc = status(
            deployment("m", [port_of(up)], aliases=("alias",)),
            deployment("cold", [port_of(up)], ready=False, state="downloading"),
        )
        async with gateway(doc, retry_after_s=7) as (url, _), aiohttp.ClientSession() as s:
            async with s.get(url + "/v1/models") as r:
                models = await r.json()
            listed = {m["id"]: (m["root"], m["state"], m["ready_replicas"]) for m in models["data"]}
            assert models["object"] == "list"
            assert listed == {
                "m": ("m", "running", 1),
                "alias": ("m", "running", 1),
                "cold": ("cold", "downloading", 0),
            }
            async with s.post(url + "/v1/chat/completions", json={**CHAT, "model": "gpt-9"}) as r:
                assert r.status == 404
                error = (await r.json())["error"]
            assert error["code"] == "model_not_found" and error["param"] == "model"
            assert error["type"] == "invalid_request_error" and "gpt-9" in error["message"]
            async with s.post(url + "/v1/embeddings", json={"model": "cold", "input": "x"}) as r:
                assert r.status == 503
                assert r.headers["Retry-After"] == "7"
                assert (await r.json())["error"]["code"] == "model_not_ready"
            assert replica.seen == []


@asynctest()
async def test_bad_requests_and_body_limits() -> None:
    replica = Replica("r0")
    async with serving(replica.app()) as up:
        doc = status(deployment("m", [port_of(up)]))
        async with gateway(doc, max_body_bytes=1000, max_upload_bytes=5000) as (url, _):
            async with aiohttp.ClientSession() as s:
                big = {**CHAT, "messages": [{"role": "user", "content": "x" * 2000}]}
                async with s.post(url + "/v1/chat/completions", json=big) as r:
                    assert r.status == 413
                    assert (await r.json())["error"]["code"] == "request_too_large"

                async def chunked() -> Any:
                    yield b'{"model": "m", "input": "'
                    for _ in range(20):
                        yield b"y" * 100
                    yield b'"}'

                async with s.post(url + "/v1/embeddings", data=chunked()) as r:
                    assert r.status == 413
                async with s.post(url + "/v1/chat/completions", data=b"{not json") as r:
                    assert r.status == 400
                async with s.post(url + "/v1/chat/completions", json={"messages": []}) as r:
                    assert r.status == 400
                    assert (await r.json())["error"]["param"] == "model"
                async with s.get(url + "/v1/chat/completions") as r:
                    assert r.status == 405
                    assert "error" in await r.json()
            assert replica.seen == []


def upload_form(model_first: bool, audio: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    if model_first:
        form.add_field("model", "whisper")
    form.add_field("file", io.BytesIO(audio), filename="a.wav", content_type="audio/wav")
    if not model_first:
        form.add_field("model", "whisper")
    form.add_field("language", "en")
    return form


@asynctest()
async def test_transcription_uploads_are_routed_by_their_model_field() -> None:
    replica = Replica("r0")
    audio = bytes(range(256)) * 4096  # 1 MiB
    async with serving(replica.app()) as up:
        doc = status(deployment("whisper", [port_of(up)]))
        limit = 2 * 1024 * 1024
        async with gateway(doc, max_upload_bytes=limit) as (url, _), aiohttp.ClientSession() as s:
            for model_first in (True, False):
                form = upload_form(model_first, audio)
                async with s.post(url + "/v1/audio/transcriptions", data=form) as r:
                    assert r.status == 200, await r.text()
                    answer = await r.json()
                assert answer["sha256"] == hashlib.sha256(audio).hexdigest()
                assert answer["model"] == "whisper"
            big = upload_form(True, audio * 3)
            async with s.post(url + "/v1/audio/transcriptions", data=big) as r:
                assert r.status == 413
            form = aiohttp.FormData()
            form.add_field("file", b"abc", filename="a.wav")
            async with s.post(url + "/v1/audio/transcriptions", data=form) as r:
                assert r.status == 400
        assert len(replica.seen) == 2


@asynctest()
async def test_least_outstanding_replica_takes_the_next_request() -> None:
    busy, idle = Replica("busy"), Replica("idle")
    async with serving(busy.app()) as up0, serving(idle.app()) as up1:
        doc = status(deployment("m", [port_of(up0), port_of(up1)]))
        async with gateway(doc) as (url, gw), aiohttp.ClientSession() as s:
            gw.balancer._turn = -1  # the first pick goes to replica 0
            held = {**CHAT, "stream": True, "hold": True}
            async with s.post(url + "/v1/chat/completions", json=held) as stream:
                await stream.content.readuntil(b"\n\n")
                for _ in range(3):
                    async with s.post(url + "/v1/chat/completions", json=CHAT) as r:
                        assert (await r.json())["replica"] == "idle"
                busy.gate.set()
                await stream.read()
            assert len(busy.seen) == 1 and len(idle.seen) == 3


@asynctest()
async def test_an_unreachable_replica_is_skipped_and_ejected() -> None:
    replica = Replica("alive")
    dead = free_port()
    async with serving(replica.app()) as up:
        doc = status(deployment("m", [dead, port_of(up)]))
        async with gateway(doc, eject_s=60) as (url, gw), aiohttp.ClientSession() as s:
            gw.balancer._turn = -1  # the first pick goes to the dead replica
            for _ in range(4):
                async with s.post(url + "/v1/chat/completions", json=CHAT) as r:
                    assert (await r.json())["replica"] == "alive"
            text = await metrics_text(s, url)
        assert (
            metric(
                text,
                "maas_gateway_errors_total",
                model="m",
                route="chat/completions",
                reason="upstream_unreachable",
            )
            == 1
        )  # tried once, then skipped
    assert len(replica.seen) == 4


@asynctest()
async def test_a_replica_failing_mid_stream_is_ejected() -> None:
    replica = Replica("r0")
    async with serving(replica.app()) as up:
        doc = status(deployment("m", [port_of(up)]))
        async with gateway(doc, eject_s=60) as (url, _), aiohttp.ClientSession() as s:
            body = {**CHAT, "stream": True, "break": True}
            async with s.post(url + "/v1/chat/completions", json=body) as r:
                assert r.status == 200
                with pytest.raises(aiohttp.ClientPayloadError):  # cut off, not ended
                    await r.read()
            async with s.post(url + "/v1/chat/completions", json=CHAT) as r:
                assert r.status == 503
                assert 50 <= int(r.headers["Retry-After"]) <= 60


@asynctest()
async def test_no_replica_answering_at_all() -> None:
    doc = status(deployment("m", [free_port()]), deployment("two", [free_port(), free_port()]))
    async with gateway(doc, eject_s=30, max_attempts=1) as (url, _), aiohttp.ClientSession() as s:
        # Its only replica refused the connection: ejected, so the model has none ready now.
        async with s.post(url + "/v1/chat/completions", json=CHAT) as r:
            assert r.status == 503
            assert 29 <= int(r.headers["Retry-After"]) <= 30
        # One attempt per request: a 502 while another replica is left, then 503 (all ejected).
        two = {**CHAT, "model": "two"}
        for expected in (502, 503):
            async with s.post(url + "/v1/chat/completions", json=two) as r:
                assert r.status == expected
                if expected == 502:
                    assert (await r.json())["error"]["code"] == "upstream_unreachable"


@asynctest()
async def test_generic_proxy_for_any_method_path_and_query() -> None:
    replica = Replica("r0")
    async with serving(replica.app()) as up:
        doc = status(
            deployment("tts", [port_of(up)], generic_proxy=True),
            deployment("closed", [port_of(up)]),
        )
        async with gateway(doc) as (url, _), aiohttp.ClientSession() as s:
            payload = b"\x00\x01" * 50_000
            async with s.put(url + "/proxy/tts/api/v2/voices?x=1&y=%20", data=payload) as r:
                answer = await r.json()
            assert answer == {
                "method": "PUT",
                "path": "/api/v2/voices?x=1&y=%20",
                "size": len(payload),
                "sha256": hashlib.sha256(payload).hexdigest(),
            }
            async with s.delete(url + "/proxy/tts") as r:
                assert (await r.json())["path"] == "/"
            async with s.get(url + "/proxy/closed/anything") as r:
                assert r.status == 404
            async with s.get(url + "/proxy/missing/anything") as r:
                assert r.status == 404


@asynctest()
async def test_expect_continue_is_answered_by_the_gateway() -> None:
    replica = Replica("r0")
    async with serving(replica.app()) as up:
        doc = status(deployment("m", [port_of(up)]))
        async with (
            gateway(doc) as (url, _),
            aiohttp.ClientSession() as s,
            s.post(url + "/v1/chat/completions", json=CHAT, expect100=True) as r,
        ):
            assert r.status == 200
    assert "Expect" not in replica.seen[0]["headers"]


@asynctest()
async def test_an_upload_with_the_model_first_is_streamed_not_held() -> None:
    replica = Replica("r0")
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    audio = b"\x01\x02" * 100_000

    async def upload() -> Any:
        yield head + audio[:1000]
        # Only a gateway that streams lets the replica see the request before the upload ends.
        await asyncio.wait_for(replica.upload_arrived.wait(), timeout=10)
        yield audio[1000:]
        yield f"\r\n--{boundary}--\r\n".encode()

    async with serving(replica.app()) as up:
        doc = status(deployment("whisper", [port_of(up)]))
        async with gateway(doc) as (url, _), aiohttp.ClientSession() as s:
            headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
            async with s.post(
                url + "/v1/audio/transcriptions", data=upload(), headers=headers
            ) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["sha256"] == hashlib.sha256(audio).hexdigest()
