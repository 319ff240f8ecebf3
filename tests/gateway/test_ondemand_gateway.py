"""The gateway's side of models on demand (issue 18), with the real agent and real containers:
a model that cannot get ready is answered 503 with Retry-After naming it and its state after the
start timeout; the queue per model is bounded; and the pure parts (admission, activity, the
route's on-demand fields) as tables."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
import uvloop

from maas.compiler.status import OnDemandStatus, WakeStatus
from maas.gateway import Gateway, GatewayConfig, KeyRing
from maas.gateway.routing import route_table_from_status
from maas.gateway.source import AgentRouteSource
from maas.gateway.wake import ActivityBook, Waker, admit, wants_wake
from support.agent import AgentProcess, web_spec
from support.gateway import asynctest, deployment, free_port, serving_gateway
from support.gateway import status as status_document

CHAT = {"max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.parametrize(("held", "limit", "ok"), [(0, 1, True), (1, 1, False), (63, 64, True)])
def test_admit(held: int, limit: int, ok: bool) -> None:
    assert admit(held, limit) is ok


def test_activity_book_reports_relative_idle_time() -> None:
    now = [100.0]
    book = ActivityBook(lambda: now[0])
    book.begin("a")
    now[0] = 103.0
    assert book.report({"a"}, {}) == {"a": {"in_flight": 1, "queued": 0, "idle_s": 3.0}}
    assert book.report({"a"}, {"a": 1})["a"]["queued"] == 1  # held for a wake, not relayed
    book.end("a")
    now[0] = 110.0
    assert book.report({"a"}, {}) == {"a": {"in_flight": 0, "queued": 0, "idle_s": 7.0}}
    assert book.report(set(), {}) == {}  # a removed deployment is forgotten once idle


def test_route_on_demand_fields() -> None:
    demand = OnDemandStatus(
        state="sleeping",
        reason="evicted for n (group g)",
        wake=WakeStatus(requested_at=1.0, started_at=2.0, ready_at=4.5),
    )
    sleeping = deployment("m", [], ready=False).model_copy(
        update={"state": "sleeping", "on_demand": demand}
    )
    status = status_document(sleeping, deployment("always", [], ready=False, state="starting"))
    table = route_table_from_status(status)
    sleeping, always = table.routes["m"], table.routes["always"]
    assert sleeping.on_demand and sleeping.reason == "evicted for n (group g)"
    assert sleeping.backend_load_s == 2.5
    assert wants_wake(sleeping) and not wants_wake(always)


@asynctest(timeout=240, runners=[uvloop.run])  # one real agent is enough
async def test_start_timeout_and_queue_bound(tmp_path: Path, busybox: str) -> None:
    agent = AgentProcess(tmp_path)
    agent.start()
    try:
        # Its container runs, but /never is not there: it never gets ready.
        extra = "  on_demand: {idle_timeout_s: 60}\n"
        text = web_spec("stuck", busybox, extra=extra).replace("path: /health", "path: /never")
        result = await asyncio.to_thread(agent.apply, "stuck", text)
        assert result.returncode == 0, result.stderr + agent.log.read_text()[-2000:]
        source = AgentRouteSource(agent.socket, upstream_host="127.0.0.1", interval_s=1.0)
        config = GatewayConfig(port=free_port(), wake_timeout_s=4, wake_queue=1)
        gw = Gateway(config, source, KeyRing(None))
        async with serving_gateway(gw) as url, aiohttp.ClientSession() as s:
            chat = url + "/v1/chat/completions"

            async def ask() -> tuple[int, str, dict[str, str], float]:
                start = time.monotonic()
                async with s.post(chat, json={"model": "stuck", **CHAT}) as r:
                    return r.status, await r.text(), dict(r.headers), time.monotonic() - start

            first, second = await asyncio.gather(ask(), ask())
            timed_out, refused = sorted([first, second], key=lambda a: a[3], reverse=True)
            # The second request finds the queue (one) full: refused at once.
            assert refused[0] == 503 and "model_queue_full" in refused[1]
            assert refused[3] < 2 and refused[2]["Retry-After"]
            # The first waited out the start timeout: 503, the model and its state named.
            assert timed_out[0] == 503, timed_out[1]
            assert "model_waking" in timed_out[1] and "`stuck`" in timed_out[1]
            assert "waking" in timed_out[1] and timed_out[2]["Retry-After"]
            assert 4 <= timed_out[3] < 10
        status = await asyncio.to_thread(agent.status)
        (stuck,) = status["deployments"]
        assert stuck["on_demand"]["state"] in ("waking", "awake")  # started, never ready
    finally:
        await asyncio.to_thread(agent.cleanup)


@asynctest(timeout=240, runners=[uvloop.run])  # one real agent is enough
async def test_activity_report_goes_before_the_wake(tmp_path: Path, busybox: str) -> None:
    """The agent evicts by the gateway's report: a wake sent right after a request ended must
    not find that request still in flight in the last periodic report (the wake would then
    wait for it until the next one)."""
    agent = AgentProcess(tmp_path)
    agent.start()
    try:
        extra = "  on_demand: {idle_timeout_s: 60, group: g}\n"
        text = web_spec("a", busybox, extra=extra) + "---\n" + web_spec("b", busybox, extra=extra)
        result = await asyncio.to_thread(agent.apply, "ab", text)
        assert result.returncode == 0, result.stderr + agent.log.read_text()[-2000:]
        source = AgentRouteSource(agent.socket, upstream_host="127.0.0.1", interval_s=1.0)
        waker = Waker(source, timeout_s=30, queue=4, retry_after_s=5, clock=time.monotonic)
        try:
            waker.activity.begin("a")
            await waker.report()  # a periodic report while a request for a is in flight
            waker.activity.end("a")
            await waker._start("b")  # the next request, for b, wakes it at once
            (a,) = [
                d
                for d in (await asyncio.to_thread(agent.status_now))["deployments"]
                if d["name"] == "a"
            ]
            assert a["on_demand"]["in_flight"] == 0, a["on_demand"]
        finally:
            await waker.close()
    finally:
        await asyncio.to_thread(agent.cleanup)
