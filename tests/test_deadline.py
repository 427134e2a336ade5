"""--request-timeout's timer (pipeline/deadline.py) on a real event loop: a request waiting on its
engine is stopped at the deadline, and one stuck writing to a client that stopped reading is
stopped a moment later; either way the engine's event stream is closed, which frees its slot."""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing

import pytest

from mlxserve.pipeline.deadline import WRITE_GRACE, within_deadline
from mlxserve.pipeline.errors import RequestError

LIMIT = 0.3


async def engine_events(closed: asyncio.Event, pause: float):
    """An engine that keeps producing until its stream is closed."""
    try:
        while True:
            yield "token"
            await asyncio.sleep(pause)
    finally:
        closed.set()


async def serve(pause: float, write) -> tuple[BaseException, float, bool]:
    closed, started = asyncio.Event(), time.monotonic()
    deadline = asyncio.get_running_loop().time() + LIMIT

    async def request():
        timed = within_deadline(engine_events(closed, pause), deadline, LIMIT)
        async with aclosing(timed) as events:
            async for _ in events:
                await write()

    try:
        await asyncio.wait_for(asyncio.ensure_future(request()), 10)
    except BaseException as ended:  # noqa: BLE001 - how the request ended is what is tested
        return ended, time.monotonic() - started, closed.is_set()
    raise AssertionError("the request outlived its deadline")


def test_a_request_waiting_on_its_engine_ends_at_the_deadline_with_a_504():
    ended, seconds, closed = asyncio.run(serve(pause=0.05, write=lambda: asyncio.sleep(0)))
    assert isinstance(ended, RequestError) and ended.status == 504
    assert LIMIT <= seconds < LIMIT + 0.2 and closed


def test_a_request_stuck_writing_to_a_client_that_stopped_reading_is_cut():
    async def stuck_write():
        await asyncio.Event().wait()  # the client's socket buffers are full: the write never ends

    ended, seconds, closed = asyncio.run(serve(pause=0.0, write=stuck_write))
    assert isinstance(ended, asyncio.CancelledError)
    assert LIMIT + WRITE_GRACE <= seconds < LIMIT + WRITE_GRACE + 0.5 and closed


@pytest.mark.parametrize("pause", [0.0, 0.05])
def test_a_slow_write_that_ends_after_the_deadline_gets_the_504(pause):
    # A write still going when the deadline passes, but done within the grace: the error event
    # is what the client then reads, not a cut connection.
    ended, seconds, closed = asyncio.run(serve(pause, write=lambda: asyncio.sleep(0.2)))
    assert isinstance(ended, RequestError) and ended.status == 504 and closed
    assert seconds < LIMIT + WRITE_GRACE
