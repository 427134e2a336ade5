"""A client that stops reading a stream closes every stage it was read through, at once, down to
the engine's own stream (which is what cancels the sequence): not when the garbage collector
gets to the stages."""

from __future__ import annotations

from contextlib import aclosing

import pytest
from quart import Quart

from mlxserve.api.http.sse import sse_response
from mlxserve.api.openai.formatting import ChatShape, stream_chunks
from mlxserve.pipeline.deadline import within_deadline
from mlxserve.pipeline.events import TextDelta

pytestmark = pytest.mark.anyio


def endless(closed: list[str], item):
    async def events():
        try:
            while True:
                yield item
        finally:
            closed.append("source")

    return events()


async def first_choice(events):
    async with aclosing(events):
        async for event in events:
            yield 0, event


async def test_closing_the_sse_body_closes_the_chain_beneath_it():
    closed: list[str] = []
    source = endless(closed, TextDelta("a"))
    timed = within_deadline(source, None, 0.0)
    chunks = stream_chunks(ChatShape("chatcmpl-1", "m"), first_choice(timed), 1, 1, False)
    async with Quart(__name__).app_context():
        response = await sse_response(chunks)
        body = response.response.__aiter__()
        for _ in range(3):
            assert (await anext(body)).startswith(b"data: ")
        await body.aclose()  # what the server does when the client has gone
    assert closed == ["source"]


async def test_a_deadline_stage_without_a_deadline_closes_its_source():
    closed: list[str] = []
    timed = within_deadline(endless(closed, 1), None, 0.0)
    assert await anext(timed) == 1
    await timed.aclose()
    assert closed == ["source"]
