"""The llama.cpp engine's HTTP client: response parsing at every split, and real sockets that
answer with errors, cut streams and slow pieces (the real llama.cpp server is exercised by
test_llamacpp_model.py)."""

from __future__ import annotations

import asyncio
import json

import pytest

from mlxserve.engine.llamacpp import client
from mlxserve.engine.llamacpp.client import ResponseParser

pytestmark = pytest.mark.anyio

EVENTS = [{"content": " Paris", "tokens": [9079], "stop": False}, {"content": "", "stop": True}]


def chunked(*payloads: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in payloads) + b"0\r\n\r\n"


def event_line(event: dict) -> bytes:
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def event_stream_response() -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    lines = [event_line(e) for e in EVENTS]
    # One event split across two chunks, one chunk holding an event and a half.
    first, second = lines
    return head + chunked(first[:10], first[10:] + second[:5], second[5:], b"data: [DONE]\n\n")


def cut_in_second_event() -> bytes:
    data = event_stream_response()
    return data[: data.index(b'"stop": true')]


def feed_in_pieces(parser: ResponseParser, data: bytes, size: int) -> list[dict]:
    events = []
    for start in range(0, len(data), size):
        events += parser.feed(data[start : start + size])
    return events


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
def test_events_survive_any_split(size):
    parser = ResponseParser(events=True)
    assert feed_in_pieces(parser, event_stream_response(), size) == EVENTS
    assert parser.status == 200 and parser.finished and not parser.incomplete


def test_events_arriving_one_chunk_at_a_time():
    """The usual arrival: the head, then each token's chunk on its own."""
    head, _, body = event_stream_response().partition(b"\r\n\r\n")
    parser = ResponseParser(events=True)
    assert parser.feed(head + b"\r\n\r\n") == []
    pieces = [b"%x\r\n%s\r\n" % (len(e), e) for e in map(event_line, EVENTS)]
    assert [parser.feed(piece) for piece in pieces] == [[event] for event in EVENTS]
    assert parser.feed(b"0\r\n\r\n") == [] and parser.finished


def test_error_event_is_tagged():
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = chunked(b'error: {"code": 500, "message": "boom"}\n\n')
    assert ResponseParser(events=True).feed(head + body) == [
        {"error": {"code": 500, "message": "boom"}}
    ]


@pytest.mark.parametrize("size", [1, 5, 1000])
def test_content_length_body_ends_at_its_length(size):
    body = json.dumps({"tokens": [2, 818]}).encode()
    data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    parser = ResponseParser(events=False)
    assert feed_in_pieces(parser, data, size) == []
    assert parser.finished and json.loads(parser.body) == {"tokens": [2, 818]}


def test_a_cut_stream_is_incomplete():
    parser = ResponseParser(events=True)
    events = parser.feed(cut_in_second_event())
    assert events == EVENTS[:1] and parser.incomplete


def test_close_delimited_events_end_with_the_connection():
    parser = ResponseParser(events=True)
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\ndata: {}\n\n") == [{}]
    assert not parser.finished and not parser.incomplete
    parser.feed(b"data: {")
    assert parser.incomplete


def test_garbled_chunk_size_raises():
    with pytest.raises(ValueError):
        ResponseParser(events=True).feed(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        )


async def serve_bytes(pieces: list[bytes], close: bool = True):
    """A server that reads one request, then writes `pieces` 10 ms apart; its `sent` event is
    set once every piece has left it."""

    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        server.sent.set()
        if close:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    server.sent = asyncio.Event()
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/completion"


async def collect(url: str) -> list[dict]:
    return [event async for event in client.post_event_stream(url, {"prompt": [2]})]


async def test_stream_from_slow_pieces():
    data = event_stream_response()
    server, url = await serve_bytes([data[i : i + 9] for i in range(0, len(data), 9)])
    async with server:
        assert await collect(url) == EVENTS


async def test_a_consumer_that_falls_behind_gets_every_event():
    """More events than the buffer holds arrive before reading starts: the socket pauses,
    then resumes as the reader catches up."""
    events = [{"content": f" w{i}", "stop": False} for i in range(3 * client.MAX_PENDING_EVENTS)]
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    server, url = await serve_bytes([head + chunked(*map(event_line, events))])
    async with server:
        stream = client.post_event_stream(url, {"prompt": [2]})
        first = await anext(stream)
        await asyncio.wait_for(server.sent.wait(), 10)  # all of it arrives while none is read
        rest = [event async for event in stream]
    assert [first, *rest] == events


async def test_cut_stream_raises_connection_error():
    server, url = await serve_bytes([cut_in_second_event()])
    async with server:
        with pytest.raises(ConnectionError):
            await collect(url)


async def test_error_status_keeps_the_body():
    body = b'{"error": {"code": 400, "message": "bad prompt"}}'
    answer = b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    server, url = await serve_bytes([answer], close=False)
    async with server:
        with pytest.raises(client.HTTPStatusError) as raised:
            await collect(url)
        with pytest.raises(client.HTTPStatusError):
            await client.request_json("POST", url, {})
    assert raised.value.status == 400 and raised.value.body == body


async def test_json_request_and_refused_connection():
    body = b'{"tokens": [2, 818]}'
    server, url = await serve_bytes([b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n", body])
    async with server:
        assert await client.request_json("POST", url, {"content": "x"}) == {"tokens": [2, 818]}
    with pytest.raises(ConnectionError):
        await client.request_json("GET", url)


async def test_a_request_cancelled_as_its_connection_opens_is_cancelled(monkeypatch):
    """The client leaves just as the connection to the child opens (both in one turn of the
    event loop): the cancellation must reach the request, which then closes its connection
    without reading the reply, and not be lost, which would relay the whole reply to nobody
    while holding a slot."""
    data = event_stream_response()
    server, url = await serve_bytes([data[i : i + 9] for i in range(0, len(data), 9)])
    loop = asyncio.get_running_loop()
    connect = loop.create_connection

    async def connect_then_leave(*args, **kwargs):
        opened = await connect(*args, **kwargs)
        relay.cancel()  # the client's disconnect, handled in the same turn
        return opened

    monkeypatch.setattr(loop, "create_connection", connect_then_leave)
    async with server:
        relay = asyncio.create_task(collect(url))
        with pytest.raises(asyncio.CancelledError):
            await relay
        assert not server.sent.is_set()  # the reply was not read to its end
